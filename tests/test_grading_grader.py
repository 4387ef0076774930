"""The workshop grader on bad submissions (fixtures), its reports and its exit status."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from kd_tutorial.grading import grader

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "grading"
_spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)
EXPECTED = make_fixtures.EXPECTED
NOTEBOOK_TIMEOUT, CELL_TIMEOUT = 90, 8


def test_fixtures_are_up_to_date():
    for learner, text in make_fixtures.build().items():
        text = text if text.endswith("\n") else text + "\n"
        assert (FIXTURES / f"{learner}.ipynb").read_text(encoding="utf-8") == text, learner


@pytest.mark.parametrize("learner", sorted(EXPECTED))
def test_grader_survives_each_submission(learner):
    paths = [FIXTURES / f"{learner}.ipynb"]
    if learner == "not_a_notebook":  # its exercise set is guessed from the rest of the class
        paths.append(FIXTURES / "untouched.ipynb")
    # the two infinite loops each run out the cell limit: 4 s is plenty for its other cells (ex02's checks take
    # well under 1 s; the import-time test below runs them under a limit of 1 s)
    cell_timeout = 4 if learner == "infinite_loop" else CELL_TIMEOUT
    rows, subs = grader.grade_paths(paths, timeout=NOTEBOOK_TIMEOUT, cell_timeout=cell_timeout, progress=None)
    expected, fragment = EXPECTED[learner]
    got = {r["exercise"].split(".")[-1]: r["status"] for r in rows if r["learner"] == learner}
    assert got == expected, [r for r in rows if r["learner"] == learner]
    sub = next(s for s in subs if s["learner"] == learner)
    if fragment:
        assert fragment in sub["flags"] + sub["notes"], sub
    if sub["kernel_python"]:  # the grader's own interpreter, whatever kernelspec the file names
        assert os.path.realpath(sub["kernel_python"]) == os.path.realpath(sys.executable)
    assert "notebook time limit" not in sub["notes"], sub  # the cell limit stopped the loops, not the last resort


def test_the_cell_limit_times_the_learners_code_not_the_imports(tmp_path, monkeypatch):
    """A cold import (here 6 s, over the 3 s cell limit) is paid in the grader's setup cell, which has only the
    notebook limit, so the learner's import cell is quick; an infinite loop in a learner's cell still times out. (A 1 s
    limit left a busy machine too little room: any of the other cells stalling past it would have timed out first.)"""
    import nbformat
    from nbformat.v4 import new_code_cell

    from kd_tutorial.grading import execute
    (tmp_path / "kd_slow_import.py").write_text("import time\ntime.sleep(6)\nREADY = True\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    monkeypatch.setattr(execute, "PRELOAD", (*execute.PRELOAD, "kd_slow_import"))
    nb = nbformat.read(FIXTURES / "untouched.ipynb", as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells[first].source += "\nimport kd_slow_import"
    nb.cells.insert(first + 1, new_code_cell("while True:\n    pass"))
    run = execute.run_submission(nb, "ex02", timeout=NOTEBOOK_TIMEOUT, cell_timeout=3)
    # the notes number the notebook's cells from 1 (the import cell is cell first + 1, the loop the next one) and
    # quote the cell's first line, which a learner finds where JupyterLab numbers nothing
    assert run.notes[:1] == [f"cell {first + 2} (`while True:`) timed out after 3 s and was interrupted"], run.notes
    assert run.results == {"q1": ("not attempted", run.results["q1"][1]), "q2": ("not attempted", run.results["q2"][1])}


def test_fake_pass_is_not_parsed_from_output():
    rows, _ = grader.grade_paths([FIXTURES / "fake_pass.ipynb"], timeout=NOTEBOOK_TIMEOUT,
                                 cell_timeout=CELL_TIMEOUT, progress=None)
    q1 = next(r for r in rows if r["exercise"] == "ex02.q1")
    assert q1["status"] == "failed" and "multiplied the logits by T" in q1["message"]


def test_cli_writes_csv_and_json_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "report" / "grades.csv"
    files = [str(FIXTURES / "correct.ipynb"), str(FIXTURES / "not_a_notebook.ipynb")]
    assert grader.main([*files, "--out", str(out), "--timeout", "90", "--cell-timeout", "8"]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8-sig", newline="")))
    assert [(r["learner"], r["exercise"], r["status"]) for r in rows] == [
        ("correct", "ex02.q1", "passed"), ("correct", "ex02.q2", "passed"),
        ("not_a_notebook", "ex02.q1", "error"), ("not_a_notebook", "ex02.q2", "error")]
    data = json.loads(out.with_suffix(".json").read_text())
    assert len(data["rows"]) == 4 and {s["learner"] for s in data["submissions"]} == {"correct", "not_a_notebook"}
    printed = capsys.readouterr().out
    assert "correct" in printed and "2/2" in printed and "Graded 2 notebook(s)" in printed


def test_usage_errors_exit_2_with_one_line(tmp_path, capsys):
    assert grader.main([str(tmp_path / "nope.ipynb"), "--out", str(tmp_path / "g.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kd-tutorial grade: no such file") and "\n" not in err
    assert grader.main([str(tmp_path)]) == 2  # a folder without notebooks
    assert not (tmp_path / "g.csv").exists()
    with pytest.raises(SystemExit) as info:
        grader.main([])
    assert info.value.code == 2


def test_odd_metadata_and_a_grader_failure_cost_one_row_not_the_batch(tmp_path, monkeypatch):
    """A notebook whose metadata named its exercise set as a list stopped the whole batch with a TypeError, and no
    report was written; any failure of the grader on one file now becomes that file's error row."""
    odd = {"metadata": {"kd_tutorial": {"exercise_set": ["ex02"]}}, "cells": []}
    assert grader.detect_set(odd, tmp_path / "alice.ipynb") is None  # not a set's name: the other clues decide
    real, calls = grader.grade_one, []

    def fails_once(path, nb, problem, *args):
        calls.append(problem)
        if len(calls) == 1:
            raise TypeError("unhashable type: 'list'")
        return real(path, nb, problem, *args)
    monkeypatch.setattr(grader, "grade_one", fails_once)
    rows, subs = grader.grade_paths([FIXTURES / "untouched.ipynb"], timeout=NOTEBOOK_TIMEOUT,
                                    cell_timeout=CELL_TIMEOUT, progress=None)
    assert calls[1] == "the grader failed on it (TypeError: unhashable type: 'list')"
    assert rows and all(r["status"] == "error" for r in rows) and "the grader failed on it" in subs[0]["notes"]


def test_exit_in_a_learners_cell_stops_that_cell_not_the_kernel():
    """IPython's exit() stopped the kernel a moment after its cell: the checks that still ran depended on the
    machine's load, and a later check was blamed ("the kernel died while running the check of q2")."""
    import nbformat
    from nbformat.v4 import new_code_cell

    from kd_tutorial.grading import execute
    nb = nbformat.read(FIXTURES / "correct.ipynb", as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells.insert(first + 1, new_code_cell("exit()\nraise AssertionError('the rest of this cell ran')"))
    run = execute.run_submission(nb, "ex02", timeout=NOTEBOOK_TIMEOUT, cell_timeout=CELL_TIMEOUT)
    assert {label: status for label, (status, _) in run.results.items()} == {"q1": "passed", "q2": "passed"}, run
    assert not any("died" in note for note in run.notes), run.notes
    from kd_tutorial.grading.runner import keep_kernel
    namespace = {}
    keep_kernel(namespace)  # quit() is the same function as exit()
    assert namespace["quit"] is namespace["exit"]
    with pytest.raises(SystemExit, match="exit\\(\\) stops a notebook's kernel"):
        namespace["quit"]()


def test_the_course_notebook_handed_in_for_the_exercises_is_named_not_graded(tmp_path, monkeypatch):
    """notebooks/02_... and exercises/02_... share a file name: a learner who handed in the course notebook got
    "q1: not defined: not attempted yet" and "q2: passed" for the lesson's own entropy(), nothing saying which
    notebook it was; it is now named in every row, and not run (a lesson may train for minutes)."""
    import shutil

    from kd_tutorial.grading import execute
    from kd_tutorial.grading.registry import SETS
    root, name = Path(__file__).resolve().parents[1], "02_soft_targets_temperature.ipynb"
    shutil.copy(root / "notebooks" / name, tmp_path / f"alice_{name}")
    monkeypatch.setattr(execute, "run_submission", lambda *a, **k: pytest.fail("the course notebook was run"))
    rows, subs = grader.grade_paths([tmp_path / f"alice_{name}"], timeout=NOTEBOOK_TIMEOUT,
                                    cell_timeout=CELL_TIMEOUT, progress=None)
    assert [(r["exercise"], r["status"]) for r in rows] == [("ex02.q1", "error"), ("ex02.q2", "error")]
    assert all(r["message"].startswith(f"{r['exercise'][-2:]}: this is the course notebook notebooks/{name}, not "
                                       f"the exercises") and f"exercises/{name}" in r["message"]
               and len(r["message"]) < 300 for r in rows)
    assert subs[0]["passed"] == 0 and "this is the course notebook" in subs[0]["notes"]
    for stem, _ in SETS.values():  # every course notebook is told apart from its exercises and solutions
        nbs = {folder: json.loads((root / folder / f"{stem}.ipynb").read_text(encoding="utf-8"))
               for folder in ("notebooks", "exercises", "solutions")}  # (grader.load validates: seconds for 27)
        assert grader.course_notebook(nbs["notebooks"], grader.detect_set(None, Path(f"{stem}.ipynb"))), stem
        for folder in ("exercises", "solutions"):
            assert not grader.course_notebook(nbs[folder], grader.detect_set(nbs[folder], Path(f"{stem}.ipynb"))), \
                (folder, stem)


def test_a_learner_saving_a_notebook_is_not_flagged_as_reading_one(tmp_path):
    """A learner's cell that saved a backup (nbformat.write(nb, 'my_backup.ipynb')) was flagged "tried to read
    solution/notebook files": the instructor read it as cheating. The write is still blocked (another learner's
    notebook may be next in the batch), and the flag now says it was a write; a read is flagged as before."""
    import subprocess

    from kd_tutorial.grading import execute
    results, mine, other = tmp_path / "results.jsonl", tmp_path / "my_backup.ipynb", tmp_path / "bob.ipynb"
    other.write_text("{}")
    script = ("import sys\nfrom kd_tutorial.grading import runner\n"
              "runner.install_guard(sys.argv[1], 'guard', [])\n"
              "for path, mode in ((sys.argv[2], 'w'), (sys.argv[3], 'r')):\n"
              "    try:\n        open(path, mode)\n    except PermissionError as exc:\n        print(exc)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(grader.__file__).parents[2])}
    said = subprocess.run([sys.executable, "-c", script, str(results), str(mine), str(other)], capture_output=True,
                          text=True, timeout=60, env=env)
    assert said.stdout.splitlines() == [f"kd-tutorial grader: writing {mine} is not allowed while grading",
                                        f"kd-tutorial grader: reading {other} is not allowed while grading"], said
    assert not mine.exists()
    run = execute.Run()
    execute._read_results(str(results), "guard", "checks", "ex02", run)
    assert run.flags == [f"tried to write a notebook or solution file (blocked): {mine}",
                         f"tried to read solution/notebook files (blocked): {other}"]


def test_a_function_checked_under_another_name_is_graded_with_a_note(tmp_path):
    """A learner who wrote `def my_softmax(...)` and changed the check cell to `q1.check(my_softmax)` saw the check
    pass in the notebook, and the grader said "`softmax_with_temperature` is not defined: not attempted yet" (or
    "not attempted", the stub left in its cell). It now grades the function the learner's check cell names, and a
    note says to rename it."""
    import torch

    from kd_tutorial.grading import execute, runner

    def my_softmax(logits, temperature=1.0):
        return torch.softmax(logits / temperature, dim=-1)

    def wrong(logits, temperature=1.0):
        return torch.softmax(logits * temperature, dim=-1)
    results = tmp_path / "results.jsonl"
    namespace = {"In": ["", "import torch", "def my_softmax(logits, temperature=1.0): ...", "q1.check(my_softmax)",
                        "q2.check(entropy)"], "my_softmax": my_softmax, "wrong": wrong}
    for label in ("q1", "q2"):
        runner.grade_into("ex02", label, namespace, str(results), "checks")
    run = execute.Run()
    execute._read_results(str(results), "guard", "checks", "ex02", run)
    assert run.results["q1"][0] == "passed" and run.results["q2"][0] == "not attempted", run.results
    assert run.notes == ["q1: graded `my_softmax`, the function its check cell names; the exercise asks for "
                         "`softmax_with_temperature`: rename it"]
    def softmax_with_temperature(logits, temperature=1.0):
        raise NotImplementedError()
    results.unlink()  # the stub left in its cell, and the learner's own function checked in a new one: the same
    runner.grade_into("ex02", "q1", {**namespace, "softmax_with_temperature": softmax_with_temperature}, str(results),
                      "checks")
    run = execute.Run()
    execute._read_results(str(results), "guard", "checks", "ex02", run)
    assert run.results["q1"][0] == "passed" and run.notes[0].startswith("q1: graded `my_softmax`"), run
    assert runner.checked_instead("q1", "softmax_with_temperature", {**namespace, "In": ["q1.check(wrong)"]}) == "wrong"
    assert runner.checked_instead("q1", "softmax_with_temperature", {**namespace, "In": ["q1.check(nothing)"]}) is None
    assert runner.checked_instead("q1", "softmax_with_temperature", {**namespace, "In": ["ex.q1.check(wrong)"]}) is None
    commented = {**namespace, "In": ["q1.check(wrong)", "# q1.check(draft)\nq1.check(softmax_with_temperature)"],
                 "draft": namespace["wrong"]}  # a check commented out ran nothing: the last one that ran counts
    assert runner.checked_instead("q1", "softmax_with_temperature", commented) == "wrong"


def test_a_notebook_named_for_one_assignment_holding_another_says_so(tmp_path, monkeypatch):
    """kim_02_soft_targets_temperature.ipynb held kim's notebook 03: it was graded as 03 without a word, so the
    gradebook of assignment 02 missed kim with no reason given. It is still graded as what it holds, with a note."""
    import shutil

    from kd_tutorial.grading import execute
    from kd_tutorial.grading.registry import SETS
    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "exercises" / "03_kd_losses.ipynb", tmp_path / "kim_02_soft_targets_temperature.ipynb")
    shutil.copy(root / "exercises" / "03_kd_losses.ipynb", tmp_path / "lee_03_kd_losses.ipynb")
    monkeypatch.setattr(execute, "run_submission", lambda nb, set_id, **k: execute.Run(
        results={q: ("passed", "ok") for q in SETS[set_id][1]}))
    rows, subs = grader.grade_paths([tmp_path / "kim_02_soft_targets_temperature.ipynb",
                                     tmp_path / "lee_03_kd_losses.ipynb"], timeout=NOTEBOOK_TIMEOUT,
                                    cell_timeout=CELL_TIMEOUT, progress=None)
    assert {r["notebook"] for r in rows} == {"03_kd_losses"} and len(rows) == 8
    assert [s["notes"] for s in subs] == ["its name or folder says 02_soft_targets_temperature, but it holds the "
                                          "exercises of 03_kd_losses: graded as those", ""]
