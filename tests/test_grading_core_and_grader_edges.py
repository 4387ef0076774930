"""Edges of the check framework (``q.check()``, ``q.hint()``, ``q.solution()``, :meth:`Exercise.grade`), of the
kernel-side half of the grader (:mod:`kd_tutorial.grading.runner`) and of the batch grader
(:mod:`kd_tutorial.grading.grader`: reading notebooks, the reports, refusing bad input in one line) that a mutation
audit found no test for: each test here fails on a small change of the code that the other tests let through.

Everything runs in-process on tiny inputs (no kernel, no network), but the install guard, in a process of its own;
grading itself is a stand-in where it is needed.
"""
from __future__ import annotations

import json
import sys

import pytest

from kd_tutorial.grading.core import ERROR, FAILED, NOT_ATTEMPTED, PASSED, Exercise, Wrong


def _double_checker(call):
    if call(2) != 4:
        raise Wrong("double it")


def _exercise(hints=("Doubling adds a number to itself.", "Use + or *.", "x + x"),
              solution="def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"):
    return Exercise("ex00.q1", "Double", "double", _double_checker, hints=hints, solution=solution)


# ----------------------------------------------------------------------------- core: Exercise


def test_four_hint_tiers_are_refused_like_two():
    """The three tiers are concept, API, near-solution: a fourth would never be shown in order."""
    with pytest.raises(ValueError, match="hints must be 3 tiers"):
        _exercise(hints=("a", "b", "c", "d"))


def test_a_function_of_the_package_top_level_is_not_the_learners():
    """``kd_tutorial``'s own module (not only its submodules) is the package's code, not the learner's."""
    def double(x):
        return 2 * x
    double.__module__ = "kd_tutorial"
    result = _exercise().grade(double)
    assert result.status == FAILED
    assert result.message == "q1: `double` is imported from kd_tutorial: write your own"


def test_a_function_that_calls_another_exercises_stub_is_told_to_finish_that_one_first():
    """A notebook function (a cell's code, file name ``<...>``) still holding the stub, called by the learner's
    answer: a wrong answer that names it, not a crash of the learner's code."""
    namespace: dict = {}
    exec(compile("def helper(x):\n    raise NotImplementedError()\n", "<ipython-input-3>", "exec"), namespace)

    def double(x):
        return namespace["helper"](x)
    result = _exercise().grade(double)
    assert result.status == FAILED
    assert result.message == ("q1: `double` calls `helper`, which is still a stub (raise NotImplementedError()): "
                              "finish that exercise first")


def test_the_stub_left_in_place_says_what_to_replace():
    """The learner's fix is named: replace the stub's `raise NotImplementedError()` in that function."""
    def double(x):
        raise NotImplementedError()
    result = _exercise().grade(double)
    assert result.status == NOT_ATTEMPTED
    assert result.message == "q1: not attempted yet (replace `raise NotImplementedError()` in `double` with your code)"


def test_the_solution_shows_neither_marker_of_the_solution(capsys):
    _exercise().solution()
    out = capsys.readouterr().out
    assert out == "Solution (q1):\ndef double(x):\n    return 2 * x\n"


def test_a_tensor_holding_nan_that_the_function_leaves_alone_is_not_changed_in_place():
    """nan != nan: an input with a nan (a masked score) that the learner's function only reads still passes."""
    import torch

    def checker(call):
        x = torch.tensor([float("nan"), 1.0])
        if not torch.equal(call(x)[1:], torch.tensor([2.0])):
            raise Wrong("double it")
    ex = Exercise("ex00.q1", "Double", "double", checker, hints=("a", "b", "c"), solution="")
    assert ex.grade(lambda x: x * 2).status == PASSED

    def in_place(x):
        x *= 2
        return x
    result = ex.grade(in_place)
    assert result.status == FAILED and "changed its argument `x` in place" in result.message


def test_an_int_too_large_for_a_float_is_described_as_a_number():
    """It said "a int": _num's '.4g' format overflowed, and describe's fallback named the type without its article."""
    from kd_tutorial.grading.core import describe
    assert describe(10 ** 400) == "the number 1e+400" and describe(-15 * 10 ** 399) == "the number -1.5e+400"
    assert describe(10 ** 400 - 1) == "the number 1e+400"  # rounded as "{:.4g}" rounds, not cut to 9.999e+399
    assert describe(123456 * 10 ** 300) == "the number 1.235e+305" and describe(10 ** 5000) == "the number 1e+5000"
    assert describe(10 ** 15) == "the number 1e+15"  # the same form as a number within float's range


# ----------------------------------------------------------------------------- runner: the kernel's side


def _grade_into(tmp_path, set_id: str, label: str, namespace: dict) -> dict:
    """:func:`runner.grade_into` in-process; the result line it wrote."""
    from kd_tutorial.grading import runner
    results = tmp_path / "results.jsonl"
    results.unlink(missing_ok=True)
    runner.grade_into(set_id, label, namespace, str(results), "n")
    return [r for r in map(json.loads, results.read_text().splitlines()) if r["kind"] == "result"][-1]


def test_a_wrong_answer_is_graded_as_it_is_though_the_check_cell_names_another_function(tmp_path, monkeypatch):
    """The check cell's function is graded in its place only where the exercise's own is missing or the stub: a
    wrong answer of the exercise's name stays wrong (a learner's draft named in an old check cell passes nothing)."""
    import types

    import torch

    from kd_tutorial.grading import runner
    monkeypatch.setattr(runner, "_shell", lambda: types.SimpleNamespace(kd_failed_cells=[]))

    def softmax_with_temperature(logits, temperature=1.0):
        return torch.softmax(logits * temperature, dim=-1)

    def draft(logits, temperature=1.0):
        return torch.softmax(logits / temperature, dim=-1)
    namespace = {"softmax_with_temperature": softmax_with_temperature, "draft": draft, "In": ["q1.check(draft)"]}
    assert _grade_into(tmp_path, "ex02", "q1", namespace)["status"] == FAILED


def test_the_latest_failed_cell_that_defines_the_function_is_quoted(tmp_path, monkeypatch):
    """A learner who ran the cell again after a first error: its latest error is the one to fix."""
    import types

    from kd_tutorial.grading import ex03, runner
    name = ex03.q1.name
    cells = [(f"def {name}(a, b):\n    return (a", SyntaxError("'(' was never closed")),
             (f"def {name}(a, b):\n    return a +", SyntaxError("invalid syntax"))]
    monkeypatch.setattr(runner, "_shell", lambda: types.SimpleNamespace(kd_failed_cells=cells))
    result = _grade_into(tmp_path, "ex03", "q1", {})
    assert result["status"] == ERROR
    assert f"raised SyntaxError: invalid syntax, so `{name}` was never defined" in result["message"]


def test_a_report_message_is_cut_to_a_thousand_characters(tmp_path, monkeypatch):
    """A learner's function that raises the checks' own ``Wrong`` passes its message through as the check's: a long
    one is cut, so one notebook cannot swell the reports."""
    import types

    from kd_tutorial.grading import runner
    monkeypatch.setattr(runner, "_shell", lambda: types.SimpleNamespace(kd_failed_cells=[]))

    def softmax_with_temperature(logits, temperature=1.0):
        raise Wrong("x" * 5000)
    result = _grade_into(tmp_path, "ex02", "q1", {"softmax_with_temperature": softmax_with_temperature})
    assert result["status"] == FAILED and result["message"] == "q1: " + "x" * 996


def test_a_failed_cell_that_only_mentions_the_def_in_a_comment_is_not_its_definition(tmp_path, monkeypatch):
    """Only a cell whose line starts with ``def name(`` defined it: a failed cell that names it in a comment leaves
    the exercise not attempted, not an error blamed on that cell."""
    import types

    from kd_tutorial.grading import ex03, runner
    name = ex03.q1.name
    cells = [(f"# TODO: def {name}(a, b) goes below\nraise ValueError('data missing')", ValueError("data missing"))]
    monkeypatch.setattr(runner, "_shell", lambda: types.SimpleNamespace(kd_failed_cells=cells))
    assert _grade_into(tmp_path, "ex03", "q1", {})["status"] == NOT_ATTEMPTED


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in pip and conda are shell scripts")
def test_the_guard_blocks_a_notebook_opened_for_update_and_commands_that_uninstall_or_read_solutions(tmp_path):
    """In a process of its own (the audit hook cannot be removed): ``open(nb, "r+")`` is a write (flagged so, not
    as reading solutions); ``pip uninstall`` and ``conda remove`` change the machine as an install does; a command
    naming the solutions is refused; other commands run."""
    import os
    import subprocess
    from pathlib import Path

    from kd_tutorial.grading import execute, grader
    results, notebook, ran = tmp_path / "results.jsonl", tmp_path / "bob.ipynb", tmp_path / "ran"
    notebook.write_text("{}")
    bin_dir = tmp_path / "bin"  # a pip and a conda that only leave a mark: a guard that let one through changes
    bin_dir.mkdir()  # nothing on this machine
    for tool in ("pip", "conda"):
        (bin_dir / tool).write_text(f"#!/bin/sh\necho {tool} >> {ran}\n")
        (bin_dir / tool).chmod(0o755)
    script = ("import subprocess, sys\nfrom kd_tutorial.grading import runner\n"
              "runner.install_guard(sys.argv[1], 'guard', [])\n"
              "try:\n    open(sys.argv[2], 'r+')\nexcept PermissionError as exc:\n    print(exc)\n"
              "for cmd in (['pip', 'uninstall', '-y', 'kd-not-a-package'], ['conda', 'remove', 'kd-not-a-package'], "
              "['pip', '-q', '--no-cache-dir', 'install', 'kd-not-a-package'], "
              "['cat', 'solutions/03.py'], ['true']):\n"
              "    try:\n        subprocess.run(cmd)\n        print('ran', cmd[0])\n"
              "    except PermissionError as exc:\n        print(exc)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(grader.__file__).parents[2]),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    said = subprocess.run([sys.executable, "-c", script, str(results), str(notebook)], capture_output=True,
                          text=True, timeout=60, env=env, cwd=tmp_path)
    assert said.stdout.splitlines() == [
        f"kd-tutorial grader: writing {notebook} is not allowed while grading",
        "kd-tutorial grader: installing packages is not allowed while grading",
        "kd-tutorial grader: installing packages is not allowed while grading",
        "kd-tutorial grader: installing packages is not allowed while grading",  # options before install too
        "kd-tutorial grader: this command is not allowed while grading",
        "ran true"], said
    assert notebook.read_text() == "{}" and not ran.exists()
    run = execute.Run()
    execute._read_results(str(results), "guard", "checks", "ex02", run)
    assert run.flags[0] == f"tried to write a notebook or solution file (blocked): {notebook}"
    assert len(run.flags) == 2 and "solutions/03.py" in run.flags[1]
    assert [n.split(":")[0] for n in run.notes] == ["an install was not run (the grader runs none)"] * 3


# ----------------------------------------------------------------------------- grader: reading, reports, refusals


def test_a_notebook_whose_cells_are_not_a_list_gets_a_reason(tmp_path):
    from kd_tutorial.grading import grader
    path = tmp_path / "a_02.ipynb"
    path.write_text('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": {}}')
    assert grader.load(path) == (None, "it has no list of cells")


def test_a_learners_copy_that_names_its_exercise_set_is_graded_though_its_cells_carry_course_ids():
    """A learner's copy of exercises/02 says so in its metadata: graded, even where its cells kept the course
    notebook's ids (copied over from notebooks/02)."""
    from kd_tutorial.grading import grader
    cells = [{"cell_type": "code", "id": f"02-n{i:02d}", "source": "x = 1", "metadata": {}, "outputs": []}
             for i in range(3)]
    nb = {"metadata": {"kd_tutorial": {"exercise_set": "ex02"}}, "cells": cells}
    assert not grader.course_notebook(nb, "ex02")
    assert grader.course_notebook({"metadata": {}, "cells": cells}, "ex02")


def test_a_submissions_score_counts_only_the_passed_exercises(tmp_path, monkeypatch):
    from kd_tutorial.grading import execute, grader
    nb = {"metadata": {"kd_tutorial": {"exercise_set": "ex03"}}, "cells": []}
    monkeypatch.setattr(execute, "run_submission", lambda nb, set_id, **limits: execute.Run(results={
        "q1": (PASSED, "ok"), "q2": (NOT_ATTEMPTED, "-"), "q3": (ERROR, "boom"), "q4": ("timeout", "slow")}))
    rows, submission = grader.grade_one(tmp_path / "a_03.ipynb", nb, None, "a_03", "ex03", None, {})
    assert (submission["passed"], submission["total"]) == (1, 4)
    assert [r["status"] for r in rows] == [PASSED, NOT_ATTEMPTED, ERROR, "timeout"]


def test_a_csv_cell_that_starts_with_a_quote_but_is_no_formula_is_read_back_as_it_is(tmp_path):
    """Only the quote the report put before ``=``, ``+``, ``-``, ``@`` is taken off: ``'tis`` stays ``'tis``."""
    from kd_tutorial.grading import grader
    out = tmp_path / "grades.csv"
    row = dict.fromkeys(grader.COLUMNS, "") | {"learner": "'tis", "file": str(tmp_path / "a.ipynb"),
                                               "exercise": "ex02.q1", "status": PASSED, "message": "=1+2"}
    grader.write_reports([row], [], out, 1.0)
    out.with_suffix(".json").unlink()  # the CSV alone: the gradebook as an instructor keeps it
    rows, _ = grader.read_report(out)
    assert (rows[0]["learner"], rows[0]["message"]) == ("'tis", "=1+2")


def test_text_that_a_spreadsheet_reads_as_a_formula_is_quoted_in_the_csv_only(tmp_path):
    """``-`` and ``@`` start a formula in Excel as ``=`` and ``+`` do: the CSV cell gets a quote, the JSON keeps the
    text, and the merge reads the CSV cell back as it was."""
    import csv

    from kd_tutorial.grading import grader
    out = tmp_path / "grades.csv"
    rows = [dict.fromkeys(grader.COLUMNS, "") | {"learner": learner, "file": str(tmp_path / f"{i}.ipynb"),
                                                 "exercise": "ex02.q1", "status": PASSED}
            for i, learner in enumerate(("-1+2", "@SUM(A1)"))]
    grader.write_reports(rows, [], out, 1.0)
    with out.open(encoding="utf-8-sig", newline="") as fh:
        assert [r["learner"] for r in csv.DictReader(fh)] == ["'-1+2", "'@SUM(A1)"]
    assert [r["learner"] for r in json.loads(out.with_suffix(".json").read_text())["rows"]] == ["-1+2", "@SUM(A1)"]
    out.with_suffix(".json").unlink()
    assert [r["learner"] for r in grader.read_report(out)[0]] == ["-1+2", "@SUM(A1)"]


def test_the_summary_cuts_a_long_first_word_mid_word_not_after_a_short_one():
    """A cut at the only space, far before the limit, would drop most of what fits: the text is cut mid-word."""
    from kd_tutorial.grading import grader
    assert grader._cut("ab " + "y" * 30, 10) == "ab yyyyyy…"


def test_the_summary_details_leave_out_the_exercises_not_attempted():
    from kd_tutorial.grading import grader
    sub = {"learner": "alice", "file": "a.ipynb", "notebook": "02", "flags": "", "notes": "", "passed": 0, "total": 2}
    rows = [{"learner": "alice", "file": "a.ipynb", "exercise": f"ex02.{q}", "status": status, "message": message}
            for q, status, message in (("q1", NOT_ATTEMPTED, "q1: not attempted yet"), ("q2", FAILED, "q2: no"))]
    text = grader.summary(rows, [sub])
    assert "  alice ex02.q2 failed: q2: no" in text and "not attempted yet" not in text


def test_an_interrupted_run_writes_into_an_empty_file_at_out(tmp_path, capsys, monkeypatch):
    """An empty file at --out holds no earlier report: the notebooks graded before Ctrl-C go there, not beside it."""
    import shutil
    from pathlib import Path

    from kd_tutorial.grading import execute, grader
    from kd_tutorial.grading.registry import SETS
    fixture = Path(__file__).resolve().parent / "fixtures" / "grading" / "untouched.ipynb"
    for name in ("a_02.ipynb", "b_02.ipynb"):
        shutil.copy(fixture, tmp_path / name)
    calls = []

    def run_submission(nb, set_id, **limits):
        calls.append(set_id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return execute.Run(results={q: (PASSED, "ok") for q in SETS[set_id][1]})
    monkeypatch.setattr(execute, "run_submission", run_submission)
    out = tmp_path / "out" / "grades.csv"
    out.parent.mkdir()
    out.touch()
    assert grader.main([str(tmp_path / "a_02.ipynb"), str(tmp_path / "b_02.ipynb"), "--out", str(out)]) == 130
    assert sorted(p.name for p in out.parent.iterdir()) == [".grades.csv.kd-lock", "grades.csv", "grades.json"]
    assert [s["learner"] for s in json.loads(out.with_suffix(".json").read_text())["submissions"]] == ["a_02"]
    assert "interrupted after 1 of 2 notebooks" in capsys.readouterr().err


def test_ctrl_c_before_the_grading_starts_is_one_line_and_status_130(tmp_path, capsys, monkeypatch):
    from kd_tutorial.grading import grader

    def interrupted(raw):
        raise KeyboardInterrupt
    monkeypatch.setattr(grader, "submissions_of", interrupted)
    out = tmp_path / "grades.csv"
    assert grader.main([str(tmp_path), "--out", str(out)]) == 130
    assert capsys.readouterr().err == (f"kd-tutorial grade: interrupted before the reports were written: {out} and its "
                                       "JSON are as they were; run it again to grade the notebooks\n")
    assert not out.exists()


def test_an_unknown_exercise_set_in_the_metadata_is_passed_over_for_the_notebooks_imports(tmp_path):
    """A hand-edited (or future) ``exercise_set`` the grader does not know is no exercise set: the notebook's imports
    say which it is, and the grading goes on."""
    from kd_tutorial.grading import grader
    nb = {"metadata": {"kd_tutorial": {"exercise_set": "ex99"}},
          "cells": [{"cell_type": "code", "source": "from kd_tutorial.grading.ex03 import q1"}]}
    assert grader.detect_set(nb, tmp_path / "alice.ipynb") == "ex03"
