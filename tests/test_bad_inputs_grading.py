"""Bad input to ``kd-tutorial grade`` and ``kd-tutorial make-exercises`` gets exit status 2 and one line that names
the fix, before anything is graded or written; a learner's notebook, the solutions and unrelated files beside a
report are never overwritten or deleted.

The commands run in-process through :func:`kd_tutorial.cli.main` (an uncaught exception would fail the test, so
status 2 with one line means no traceback); grading itself is replaced by a stand-in that fails the test if the
input was not refused first, or returns an empty class for the runs that must go through. Where grading must run,
a stand-in kernel (``fake_kernel``) passes every check at once: the reports survive any text (a file name that is not
UTF-8), a failed write leaves the earlier reports as they were, and Ctrl-C keeps the notebooks graded before it.
"""
import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from kd_tutorial import cli, store
from kd_tutorial.grading import authoring, execute, grader
from kd_tutorial.grading.registry import SETS
from test_bad_inputs import socket_file

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("02_soft_targets_temperature.ipynb", "03_kd_losses.ipynb", "05_distillation.ipynb")
FIXTURES = ROOT / "tests" / "fixtures" / "grading"


def one_line(capsys, *argv) -> str:
    """Run ``kd-tutorial argv`` in-process; assert status 2 and exactly one line on stderr; return it."""
    status = cli.main(list(argv))
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def snapshot(*folders: Path) -> dict:
    """Every file under ``folders`` and its bytes: what must be left unchanged."""
    return {p: p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def solutions(tmp_path) -> Path:
    """A solutions folder of three of the course's solution notebooks."""
    folder = tmp_path / "solutions"
    folder.mkdir()
    for name in NAMES:
        shutil.copy(ROOT / "solutions" / name, folder / name)
    return folder


def make(*more) -> int:
    """``kd-tutorial make-exercises`` in-process; its exit status."""
    return cli.main(["make-exercises", *map(str, more)])


def edit(path: Path, line: str = "answer = 42  # the learner's work") -> None:
    """Add ``line`` to the first solution cell of the notebook at ``path``, as a learner saving from Jupyter."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    cell = next(c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("solution"))
    cell["source"] = "".join(cell["source"]) + "\n" + line
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")


# ----------------------------------------------------------------------------- make-exercises


def test_ctrl_c_in_make_exercises_is_one_line_and_leaves_each_notebook_whole(solutions, tmp_path, capsys,
                                                                            monkeypatch):
    """Before: a traceback, and a plain write_text that a Ctrl-C could cut short left half a notebook, which the
    next run took for a learner's edit. The interrupt here comes as the second notebook replaces the old one."""
    out = tmp_path / "exercises"
    assert make("--solutions", solutions, "--exercises", out) == 0
    for name in NAMES:
        edit(solutions / name, "answer = 43")
    before, real, calls = snapshot(out), os.replace, []

    def interrupted(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(src, dst)
    monkeypatch.setattr(os, "replace", interrupted)
    capsys.readouterr()
    assert make("--solutions", solutions, "--exercises", out) == 130
    assert capsys.readouterr().err == ("kd-tutorial make-exercises: interrupted; each notebook is whole, as it was "
                                       "or as written: run it again to finish\n")
    after = snapshot(out)
    assert sorted(after) == sorted(before)  # no temporary file left behind
    assert after[out / NAMES[1]] == before[out / NAMES[1]] and after[out / NAMES[0]] != before[out / NAMES[0]]
    monkeypatch.setattr(os, "replace", real)
    assert make("--solutions", solutions, "--exercises", out) == 0  # no --force: nothing was taken for an edit


def test_make_exercises_keeps_notebooks_it_did_not_generate(solutions, tmp_path, capsys):
    """Defect 1: every notebook without a solution of its name was deleted, e.g. a learner's alice_02.ipynb."""
    out = tmp_path / "exercises"
    assert make("--solutions", solutions, "--exercises", out) == 0
    shutil.copy(out / NAMES[0], out / "alice_02.ipynb")
    (out / "notes.ipynb").write_text("{}")
    kept = snapshot(out)
    capsys.readouterr()
    assert make("--solutions", solutions, "--exercises", out) == 0
    assert snapshot(out) == kept
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"kept alice_02.ipynb, notes.ipynb in {out}: no solution has that name, and make-exercises did not write it "
        "as it stands (or an older version wrote it, with no record), so it was not removed")
    # --check says what fixes it: running make-exercises again would keep them, so only moving them away does
    assert make("--solutions", solutions, "--exercises", out, "--check") == 1
    assert capsys.readouterr().out.strip() == (
        f"{out} holds alice_02.ipynb, notes.ipynb, which no solution generates and make-exercises did not write as "
        f"it stands: move them out of {out}.")


def test_make_exercises_removes_only_its_own_unchanged_notebooks_whose_solution_is_gone(solutions, tmp_path):
    """A generated notebook whose solution was removed goes, unless it was edited since it was written."""
    out = tmp_path / "exercises"
    assert make("--solutions", solutions, "--exercises", out) == 0
    edit(out / NAMES[2])
    edited = (out / NAMES[2]).read_bytes()
    (solutions / NAMES[1]).unlink()
    (solutions / NAMES[2]).unlink()
    assert make("--solutions", solutions, "--exercises", out) == 0
    assert not (out / NAMES[1]).exists()  # written by make-exercises, unchanged: removed
    assert (out / NAMES[2]).read_bytes() == edited  # a learner's work: kept


@pytest.mark.parametrize("where", ["same", "inside", "holds"])
def test_make_exercises_into_the_solutions_folder_is_refused(solutions, tmp_path, capsys, where):
    """Defect 2: --solutions X --exercises X overwrote the solutions with stubs."""
    exercises = {"same": solutions, "inside": solutions / "ex", "holds": tmp_path}[where]
    before = snapshot(tmp_path)
    line = one_line(capsys, "make-exercises", "--solutions", str(solutions), "--exercises", str(exercises))
    how = {"same": "is", "inside": "is inside", "holds": "holds"}[where]
    assert line == (f"kd-tutorial make-exercises: --exercises {exercises} {how} the solutions folder {solutions}: "
                    f"give --exercises a folder of its own, e.g. --exercises {tmp_path / 'exercises'}")
    assert snapshot(tmp_path) == before and not (solutions / "ex").exists()


def test_make_exercises_refuses_to_overwrite_an_edited_exercise(solutions, tmp_path, capsys):
    """Defect 3: a rerun overwrote a learner's edited exercise silently; now nothing is written without --force."""
    out = tmp_path / "exercises"
    assert make("--solutions", solutions, "--exercises", out) == 0
    edit(out / NAMES[1])
    edit(solutions / NAMES[0], "# the author changed this solution")  # would be rewritten, were it not refused
    before = snapshot(out)
    line = one_line(capsys, "make-exercises", "--solutions", str(solutions), "--exercises", str(out))
    assert line == (f"kd-tutorial make-exercises: {NAMES[1]} in {out} changed since make-exercises wrote it (a "
                    f"learner's work?): move it out of {out} to keep it, or pass --force to overwrite it")
    assert snapshot(out) == before
    assert make("--solutions", solutions, "--exercises", out, "--force") == 0
    assert "the learner's work" not in (out / NAMES[1]).read_text()
    assert make("--solutions", solutions, "--exercises", out, "--check") == 0


def test_make_exercises_follows_the_solutions_when_nobody_edited_the_exercises(solutions, tmp_path, capsys):
    """Outputs and metadata a learner's Jupyter adds are not edits; a changed solution is regenerated."""
    out = tmp_path / "exercises"
    assert make("--solutions", solutions, "--exercises", out) == 0
    nb = json.loads((out / NAMES[0]).read_text())
    nb["metadata"]["widgets"] = {}
    (out / NAMES[0]).write_text(json.dumps(nb))
    edit(solutions / NAMES[1], "# the author changed this solution")
    assert make("--solutions", solutions, "--exercises", out) == 0
    assert make("--solutions", solutions, "--exercises", out, "--check") == 0


def test_exercises_written_by_an_older_version_without_a_record(solutions, tmp_path, capsys):
    """No record (the committed exercises/): regenerated when their cells are what make-exercises writes, refused
    when they differ."""
    out = tmp_path / "exercises"
    out.mkdir()
    for name in NAMES:
        shutil.copy(ROOT / "exercises" / name, out / name)
    assert make("--solutions", solutions, "--exercises", out) == 0
    assert (out / authoring.RECORD).exists()
    (out / authoring.RECORD).unlink()
    edit(out / NAMES[0])
    before = snapshot(out)
    line = one_line(capsys, "make-exercises", "--solutions", str(solutions), "--exercises", str(out))
    assert line.startswith(f"kd-tutorial make-exercises: {NAMES[0]} in {out} changed since make-exercises wrote it")
    assert snapshot(out) == before


def test_a_solution_that_is_not_a_notebook(solutions, tmp_path, capsys):
    """Defect 7: an nbformat NotJSONError traceback."""
    (solutions / "04_teacher.ipynb").write_text("not a notebook")
    line = one_line(capsys, "make-exercises", "--solutions", str(solutions), "--exercises", str(tmp_path / "out"))
    assert line == (f"kd-tutorial make-exercises: {solutions / '04_teacher.ipynb'} is not a valid notebook "
                    f"(NotJSONError): save it again from Jupyter, or move it out of {solutions}")
    assert not (tmp_path / "out").exists()


def test_a_solution_with_unbalanced_markers_names_its_file(solutions, tmp_path, capsys):
    nb = json.loads((solutions / NAMES[0]).read_text())
    cell = next(c for c in nb["cells"] if "### END SOLUTION" in "".join(c["source"]))
    cell["source"] = "".join(cell["source"]).replace("### END SOLUTION", "")
    (solutions / NAMES[0]).write_text(json.dumps(nb))
    line = one_line(capsys, "make-exercises", "--solutions", str(solutions), "--exercises", str(tmp_path / "out"))
    assert line == (f"kd-tutorial make-exercises: {solutions / NAMES[0]}, cell {nb['cells'].index(cell)}: "
                    "'### BEGIN SOLUTION' without '### END SOLUTION': pair each '### BEGIN SOLUTION' with one "
                    "'### END SOLUTION' below it")


def test_exercises_that_name_a_file(solutions, tmp_path, capsys):
    """Defect 7: FileExistsError."""
    (tmp_path / "exercises.txt").write_text("keep me")
    line = one_line(capsys, "make-exercises", "--solutions", str(solutions), "--exercises",
                    str(tmp_path / "exercises.txt"))
    assert line == (f"kd-tutorial make-exercises: --exercises {tmp_path / 'exercises.txt'} is a file: give "
                    "--exercises a folder (by default exercises/ beside the solutions folder)")
    assert (tmp_path / "exercises.txt").read_text() == "keep me"


def test_check_with_an_exercise_that_is_not_utf8_says_it_is_stale(solutions, tmp_path, capsys):
    """Review 2, defect 3: --check gave a UnicodeDecodeError traceback for an exercise holding b'\\xff\\xfe garbage'."""
    out = tmp_path / "exercises"
    assert make("--solutions", solutions, "--exercises", out) == 0
    (out / NAMES[0]).write_bytes(b"\xff\xfe garbage")
    capsys.readouterr()
    assert make("--solutions", solutions, "--exercises", out, "--check") == 1
    assert capsys.readouterr().out.strip() == (
        f"{out} is stale: {NAMES[0]}. Run `kd-tutorial make-exercises --solutions {solutions} --exercises {out}`. It "
        f"would refuse {NAMES[0]}, changed since make-exercises wrote it (a learner's work?): move it out of {out} "
        "first, or add --force (what changed is lost).")


def test_check_names_the_folders_it_was_given_and_what_plain_regenerating_would_fix(solutions, tmp_path, capsys):
    """--check on another folder said "Run `kd-tutorial make-exercises`", which rebuilds the default exercises/."""
    out = tmp_path / "exercises"
    assert make("--solutions", solutions, "--exercises", out) == 0
    (out / NAMES[0]).unlink()
    capsys.readouterr()
    assert make("--solutions", solutions, "--exercises", out, "--check") == 1
    said = capsys.readouterr().out.strip()
    assert said == f"{out} is stale: {NAMES[0]}. Run `kd-tutorial make-exercises --solutions {solutions} " \
                   f"--exercises {out}`."
    assert make("--solutions", solutions, "--exercises", out) == 0 and make("--solutions", solutions, "--exercises",
                                                                             out, "--check") == 0


def test_no_solution_notebooks_names_the_flag(tmp_path, capsys):
    """Before: a --solutions that does not exist (or is a file) was told "no solution notebooks in" it, as an empty
    folder is: the line now says what is wrong with the path."""
    fix = "give --solutions the folder of the solution notebooks (*.ipynb), e.g. the course's solutions/"
    line = one_line(capsys, "make-exercises", "--solutions", str(tmp_path / "missing"))
    assert line == f"kd-tutorial make-exercises: --solutions {tmp_path / 'missing'} does not exist: {fix}"
    (tmp_path / "a.ipynb").write_text("{}")
    line = one_line(capsys, "make-exercises", "--solutions", str(tmp_path / "a.ipynb"))
    assert line == f"kd-tutorial make-exercises: --solutions {tmp_path / 'a.ipynb'} is a file, not a folder: {fix}"
    (tmp_path / "empty").mkdir()
    line = one_line(capsys, "make-exercises", "--solutions", str(tmp_path / "empty"))
    assert line == f"kd-tutorial make-exercises: no solution notebooks in {tmp_path / 'empty'}: {fix}"
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"  # a review: "10 exercise notebook(s) written",
    line = one_line(capsys, "make-exercises", "--solutions", str(notebooks),  # each a copy of its course notebook
                    "--exercises", str(tmp_path / "ex"))
    assert line == (f"kd-tutorial make-exercises: no notebook in {notebooks} marks a solution ('### BEGIN SOLUTION' "
                    f"... '### END SOLUTION'), so the exercises would be copies of them: {fix}")
    assert not (tmp_path / "ex").exists()


# ----------------------------------------------------------------------------- grade


@pytest.fixture
def no_grading(monkeypatch):
    """Grading must not start: the input is refused first."""
    monkeypatch.setattr(grader, "grade_paths", lambda *a, **k: pytest.fail("graded before the input was refused"))


@pytest.fixture
def empty_class(monkeypatch):
    """Grading that returns no rows at once: the runs that must get through."""
    monkeypatch.setattr(grader, "grade_paths", lambda *a, **k: ([], []))


@pytest.fixture
def fake_kernel(monkeypatch):
    """Grading without a kernel: every check of a notebook passes at once, with the learner's ``flags``; the call
    numbered ``interrupt_at`` raises KeyboardInterrupt, as Ctrl-C in a running kernel does."""
    state = SimpleNamespace(calls=0, interrupt_at=None, flags=[])

    def run_submission(nb, set_id, **limits):
        state.calls += 1
        if state.calls == state.interrupt_at:
            raise KeyboardInterrupt
        return execute.Run(results={q: ("passed", "ok") for q in SETS[set_id][1]}, flags=list(state.flags))
    monkeypatch.setattr(execute, "run_submission", run_submission)
    return state


def a_class(folder: Path, *names: str) -> Path:
    """``folder`` holding a learner's copy of notebook 02 at each of ``names`` (subfolders made as needed)."""
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / "untouched.ipynb", folder / name)
    return folder


def learners(out: Path) -> tuple[list[str], list[str]]:
    """The learners of the CSV report ``out`` (one per row) and of the JSON beside it (one per submission)."""
    with out.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["learner"] for r in rows], [s["learner"] for s in json.loads(out.with_suffix(".json").read_text())[
        "submissions"]]


NOTEBOOK = str(FIXTURES / "correct.ipynb")


@pytest.mark.parametrize("where", ["under a file", "a folder", "proc"])
def test_an_out_that_cannot_be_written_is_refused_before_grading(tmp_path, capsys, no_grading, where):
    """Defect 4: every notebook was graded, then write_reports failed with a traceback."""
    (tmp_path / "notes.txt").write_text("a file")
    out, expected = {
        "under a file": (tmp_path / "notes.txt" / "g.csv", f"cannot write --out {tmp_path / 'notes.txt' / 'g.csv'} "
                         f"({tmp_path / 'notes.txt'}: it is a file): give --out a file in a folder you can write"),
        "a folder": (tmp_path, f"--out {tmp_path} is a folder: give a file name in it, e.g. --out "
                     f"{tmp_path / 'grades.csv'}"),
        "proc": (Path("/proc/x/g.csv"), "cannot write --out /proc/x/g.csv (/proc/x: no such file or directory): give "
                 "--out a file in a folder you can write")}[where]
    if where == "proc" and not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    before = snapshot(tmp_path)
    assert one_line(capsys, "grade", NOTEBOOK, "--out", str(out)) == f"kd-tutorial grade: {expected}"
    assert snapshot(tmp_path) == before


def test_an_out_named_json_is_refused(tmp_path, capsys, no_grading):
    """Defect 5: the CSV went to X.json, then the JSON over it."""
    line = one_line(capsys, "grade", NOTEBOOK, "--out", str(tmp_path / "g.json"))
    assert line == (f"kd-tutorial grade: --out {tmp_path / 'g.json'} would put the CSV report where the JSON report "
                    f"goes: give a .csv name, e.g. --out {tmp_path / 'g.csv'} (the JSON report is written beside it)")
    assert list(tmp_path.iterdir()) == []


def test_an_unrelated_json_beside_out_is_never_overwritten(tmp_path, capsys, no_grading):
    (tmp_path / "results.json").write_text('{"run": {}, "models": []}')
    line = one_line(capsys, "grade", NOTEBOOK, "--out", str(tmp_path / "results.csv"))
    assert line == (f"kd-tutorial grade: --out {tmp_path / 'results.csv'} would overwrite {tmp_path / 'results.json'}, "
                    f"which is not a report of kd-tutorial grade: give --out another name, or move "
                    f"{tmp_path / 'results.json'} away")
    assert (tmp_path / "results.json").read_text() == '{"run": {}, "models": []}'
    assert not (tmp_path / "results.csv").exists()


@pytest.mark.parametrize("which", ["the csv", "the json beside it"])
def test_an_out_that_is_not_a_regular_file_is_refused_and_kept(tmp_path, capsys, no_grading, which):
    """Before: a device (--out /dev/null, run as root) counted as an empty report and was replaced by one; a pipe
    hung the grader."""
    target = tmp_path / ("g.csv" if which == "the csv" else "g.json")
    with socket_file(target):
        line = one_line(capsys, "grade", NOTEBOOK, "--out", str(tmp_path / "g.csv"))
        assert line == (f"kd-tutorial grade: --out {tmp_path / 'g.csv'} would write {target}, which is not a regular "
                        "file (a device or a pipe): give --out a file path")
        assert target.is_socket()


def test_a_json_nested_too_deep_beside_out_is_refused_and_kept(tmp_path, capsys, no_grading):
    """Before: a RecursionError traceback (json's parser recurses into each array)."""
    deep = "[" * 100_000
    (tmp_path / "g.json").write_text(deep)
    line = one_line(capsys, "grade", NOTEBOOK, "--out", str(tmp_path / "g.csv"))
    assert line.startswith(f"kd-tutorial grade: --out {tmp_path / 'g.csv'} would overwrite {tmp_path / 'g.json'}")
    assert (tmp_path / "g.json").read_text() == deep


def test_an_out_that_is_a_notebook_is_never_overwritten(tmp_path, capsys, no_grading):
    shutil.copy(FIXTURES / "untouched.ipynb", tmp_path / "bob.ipynb")
    before = snapshot(tmp_path)
    line = one_line(capsys, "grade", NOTEBOOK, "--out", str(tmp_path / "bob.ipynb"))
    assert line == (f"kd-tutorial grade: --out {tmp_path / 'bob.ipynb'} is a file but not a report of kd-tutorial "
                    f"grade: give --out a new .csv name, or move {tmp_path / 'bob.ipynb'} away")
    assert snapshot(tmp_path) == before


def test_a_bad_lock_timeout_is_refused_before_grading(tmp_path, capsys, no_grading, monkeypatch):
    """`search` refused KD_TUTORIAL_LOCK_TIMEOUT=soon; `grade` took the lock's refusal for a read-only folder and
    wrote the report without its lock, so two gradings into one --out could drop each other's rows."""
    monkeypatch.setenv("KD_TUTORIAL_LOCK_TIMEOUT", "soon")
    before = snapshot(tmp_path)
    line = one_line(capsys, "grade", NOTEBOOK, "--out", str(tmp_path / "grades.csv"))
    assert line.endswith("KD_TUTORIAL_LOCK_TIMEOUT='soon' is not a number of seconds: give one >= 0 (e.g. "
                         "KD_TUTORIAL_LOCK_TIMEOUT=3600), or unset it for an hour"), line
    assert snapshot(tmp_path) == before


def test_earlier_reports_are_overwritten(tmp_path, capsys, empty_class):
    out = tmp_path / "grades.csv"
    assert cli.main(["grade", NOTEBOOK, "--out", str(out)]) == 0
    assert cli.main(["grade", NOTEBOOK, "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8-sig").strip() == ",".join(grader.COLUMNS)
    assert json.loads(out.with_suffix(".json").read_text())["rows"] == []


@pytest.mark.parametrize("flag", ["--timeout", "--cell-timeout"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1"])
def test_a_time_limit_that_is_not_a_finite_positive_number(tmp_path, capsys, no_grading, flag, value):
    """Defect 6: nan and inf passed the check, then every learner got ERROR."""
    shown, default = f"{float(value):g}", {"--timeout": 300, "--cell-timeout": 60}[flag]
    line = one_line(capsys, "grade", NOTEBOOK, f"{flag}={value}", "--out", str(tmp_path / "g.csv"))
    assert line == (f"kd-tutorial grade: {flag} {shown} is not a time limit: give a finite number of seconds "
                    f"above 0, e.g. {flag} {default}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, expected", [
    (["grade"], "the following arguments are required: SUBMISSIONS (see kd-tutorial grade --help)"),
    (["grade", NOTEBOOK, "--timeout", "abc"], "argument --timeout: invalid float value: 'abc' (see kd-tutorial "
                                              "grade --help)"),
    (["make-exercises", "--bogus"], "unrecognized arguments: --bogus (see kd-tutorial make-exercises --help)"),
])
def test_argument_errors_are_one_line(capsys, argv, expected):
    """Defect 8: argparse's multi-line usage."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err == f"kd-tutorial: error: {expected}\n"


def test_no_notebooks_found_names_what_to_give(tmp_path, capsys, no_grading):
    """Defect 9: the message named no fix."""
    line = one_line(capsys, "grade", str(tmp_path))
    assert line == (f"kd-tutorial grade: no notebooks (*.ipynb) found in {tmp_path}: give the learners' .ipynb "
                    "files, or a folder that holds them (its subfolders are searched too)")
    line = one_line(capsys, "grade", str(tmp_path / "nope.ipynb"))
    assert line == (f"kd-tutorial grade: no such file or folder: {tmp_path / 'nope.ipynb'}: give the learners' "
                    ".ipynb files, or folders that hold them")


def test_a_file_whose_exercise_set_is_unknown_says_what_to_give(tmp_path):
    """Defect 9: 'cannot tell which exercise notebook this is' named no fix (and, for a non-JSON file, hid why)."""
    (tmp_path / "mystery.ipynb").write_text("not json")
    rows, subs = grader.grade_paths([tmp_path / "mystery.ipynb"], timeout=10, cell_timeout=5, progress=None)
    fix = ("cannot tell which exercise notebook this is: give the learner's copy of a notebook of exercises/, or put "
           "its name in the file name (e.g. alice_02_soft_targets_temperature.ipynb)")
    assert subs[0]["notes"].startswith("not a valid notebook (NotJSONError") and subs[0]["notes"].endswith(f"; {fix}")
    assert rows[0]["status"] == "error" and rows[0]["message"] == subs[0]["notes"]
    (tmp_path / "mystery.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                                        "nbformat_minor": 5}))
    _, subs = grader.grade_paths([tmp_path / "mystery.ipynb"], timeout=10, cell_timeout=5, progress=None)
    assert subs[0]["notes"] == fix


def test_a_class_of_which_no_file_is_a_valid_notebook_exits_1_with_its_reports_written(tmp_path, capsys,
                                                                                       fake_kernel):
    """Before: it exited 0 with `Totals: error 2`, as if the class had been graded. Now it exits 1, one line on
    stderr, with the reports written still; one broken notebook among graded ones still exits 0."""
    folder, out = tmp_path / "class", tmp_path / "grades.csv"
    folder.mkdir()
    for name in ("alice_02.ipynb", "bob_02.ipynb"):
        (folder / name).write_text("<html>not a notebook</html>")
    assert cli.main(["grade", str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("kd-tutorial grade: none of the 2 file(s) is a valid notebook, so nothing was graded (the reports "
                   "say why for each): give the learners' .ipynb files as Jupyter saved them")
    assert learners(out) == (["alice_02", "bob_02"], ["alice_02", "bob_02"])  # one error row each
    a_class(folder, "carol_02.ipynb")
    assert cli.main(["grade", str(folder), "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""


def test_text_that_is_not_utf8_is_escaped_in_the_reports_and_the_summary(tmp_path, capsys, fake_kernel):
    """Review 2, defect 1: a file name of bytes (ren\\xe9_02...), or a learner's flag naming one, crashed write_reports
    with UnicodeEncodeError after all grading, leaving grades.csv truncated beside an old grades.json."""
    rene = os.fsdecode(b"ren\xe9_02_soft_targets_temperature.ipynb")
    folder = a_class(tmp_path / "class", "alice_02.ipynb", rene)
    peek = os.fsdecode(b"/tmp/peek\xe9.ipynb")  # what a cell's open(b'/tmp/peek\xe9.ipynb') puts in the flags
    fake_kernel.flags = [f"opened {peek}"]
    out = tmp_path / "grades.csv"
    assert cli.main(["grade", str(folder), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    escaped = "ren\\xe9_02_soft_targets_temperature"
    assert f"[2/2] {escaped} ({folder / escaped}.ipynb)" in said and f"\n{escaped}  02_soft" in said
    assert learners(out) == (["alice_02"] * 2 + [escaped] * 2, ["alice_02", escaped])
    report = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert {s["flags"] for s in report["submissions"]} == {"opened /tmp/peek\\xe9.ipynb"}


@pytest.mark.parametrize("failure", ["JSON", "disk"])
def test_a_failed_write_leaves_the_earlier_reports_as_they_were(tmp_path, monkeypatch, failure):
    """Review 2, defect 1: the CSV was rewritten in place, then the JSON failed: a half-written or mismatched pair."""
    out = tmp_path / "grades.csv"
    grader.write_reports([], [], out, 1.0)
    before = snapshot(tmp_path)
    rows, submissions = [dict.fromkeys(grader.COLUMNS, "x")], [{"learner": "x"}]
    if failure == "JSON":
        submissions[0]["seconds"] = object()  # anything that fails once the CSV text is made
    else:
        def full(path, text, newline=None):
            if ".json" in path.name:
                raise store.StorageError(f"cannot write {path}: no space left on the disk")
            real(path, text, newline=newline)
        real = store.atomic_write_text
        monkeypatch.setattr(store, "atomic_write_text", full)
    with pytest.raises((TypeError, store.StorageError)):
        grader.write_reports(rows, submissions, out, 2.0)
    assert snapshot(tmp_path) == before  # no temporary file left either


@pytest.mark.parametrize("at", [3, 1])
def test_ctrl_c_keeps_the_notebooks_graded_before_it(tmp_path, capsys, fake_kernel, at):
    """Review 2, defect 2: Ctrl-C printed a KeyboardInterrupt traceback and lost every notebook already graded."""
    folder = a_class(tmp_path / "class", "a_02.ipynb", "b_02.ipynb", "c_02.ipynb", "d_02.ipynb")
    out = tmp_path / "out" / "grades.csv"
    grader.write_reports([], [], out, 1.0)  # an earlier report
    before = snapshot(out.parent)
    fake_kernel.interrupt_at = at
    try:
        status = cli.main(["grade", str(folder), "--out", str(out)])
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt came out of kd-tutorial grade (a traceback)")
    err = capsys.readouterr().err.strip()
    assert status == 130 and fake_kernel.calls == at
    if at == 1:  # nothing graded: the earlier reports stay
        assert err == ("kd-tutorial grade: interrupted before any of the 4 notebooks was graded: nothing was written; "
                       "run it again to grade them")
        assert snapshot(out.parent) == before
        return
    # the earlier report (a whole class's, say) is not replaced by two notebooks: they go beside it
    partial = out.with_name("grades-interrupted.csv")
    assert err == (f"kd-tutorial grade: interrupted after 2 of 4 notebooks: the reports ({partial}, "
                   f"{partial.with_suffix('.json')}) hold those 2; run it again to grade all 4")
    assert learners(partial) == (["a_02"] * 2 + ["b_02"] * 2, ["a_02", "b_02"])
    assert {k: v for k, v in snapshot(out.parent).items() if "interrupted" not in str(k)} == before
    out.unlink()
    out.with_suffix(".json").unlink()
    fake_kernel.calls = 0
    assert cli.main(["grade", str(folder), "--out", str(out)]) == 130  # no earlier report: --out itself
    assert learners(out) == (["a_02"] * 2 + ["b_02"] * 2, ["a_02", "b_02"])


def test_learners_in_folders_of_their_own_are_told_apart(tmp_path, fake_kernel):
    """Review 2, defect 4: class/alice/02_....ipynb and class/bob/02_....ipynb were both learner 02_...: their path
    below the common folder names them when stems repeat; the stem does otherwise."""
    stem = "02_soft_targets_temperature"
    folder = a_class(tmp_path / "class", f"alice/{stem}.ipynb", f"bob/{stem}.ipynb", "carol_02.ipynb")
    paths = grader.submissions_of([str(folder)])
    rows, subs = grader.grade_paths(paths, timeout=10, cell_timeout=5, progress=None)
    assert [s["learner"] for s in subs] == [f"alice/{stem}", f"bob/{stem}", "carol_02"]
    assert [r["learner"] for r in rows] == [f"alice/{stem}"] * 2 + [f"bob/{stem}"] * 2 + ["carol_02"] * 2
    assert [line.split()[0] for line in grader.summary(rows, subs).splitlines()[1:4]] == [s["learner"] for s in subs]
    _, subs = grader.grade_paths(paths[1:], timeout=10, cell_timeout=5, progress=None)
    assert [s["learner"] for s in subs] == [stem, "carol_02"]


@pytest.mark.parametrize("value", ["-5", "0"])
def test_a_max_output_below_one_character_is_refused(tmp_path, capsys, no_grading, value):
    """Review 2, defect 5: --max-output -5 was accepted, then a learner who printed nothing was noted as having
    "printed more than -5 characters of output (truncated)"."""
    line = one_line(capsys, "grade", NOTEBOOK, "--max-output", value, "--out", str(tmp_path / "g.csv"))
    assert line == (f"kd-tutorial grade: --max-output {value} is not an amount of output: give a number of characters "
                    "of 1 or more, e.g. --max-output 1000000")
    assert list(tmp_path.iterdir()) == []


def test_earlier_reports_named_among_the_submissions_are_skipped_not_graded(tmp_path, capsys, fake_kernel):
    """`grade out/*` names the grades.csv and grades.json an earlier run wrote there; they were graded as learners
    with an ERROR each. A file that is not a report stays a learner (a notebook saved under another name, say)."""
    folder = a_class(tmp_path / "out", "a_02.ipynb")
    out = folder / "grades.csv"
    grader.write_reports([], [], out, 1.0)
    (folder / "b_02.ipynb.txt").write_text("not json")
    paths = grader.submissions_of([str(p) for p in sorted(folder.iterdir())])
    assert sorted(p.name for p in paths) == ["a_02.ipynb", "b_02.ipynb.txt"]
    assert capsys.readouterr().out.strip() == (f"skipped 2 earlier grading report(s), not notebooks: {out}, "
                                               f"{out.with_suffix('.json')}")


# --------------------------------------------------------------------------- an instructor's review (stop 52)

def test_a_disk_that_refuses_the_reports_after_grading_keeps_them_elsewhere(tmp_path, capsys, fake_kernel,
                                                                           monkeypatch):
    """Defect 1: a disk that filled up while a class was graded threw every grade away, with a message about
    KD_TUTORIAL_HOME and a hidden temporary file."""
    import errno
    folder = a_class(tmp_path / "class", "a_02.ipynb", "b_02.ipynb")
    out = tmp_path / "full" / "grades.csv"
    out.parent.mkdir()
    real = grader.replace_together

    def full(texts):
        if any(path.parent == out.parent for path in texts):
            raise store.StorageError("cannot write .grades.csv.tmp") from OSError(errno.ENOSPC, "No space left on "
                                                                                   "device")
        return real(texts)
    monkeypatch.setattr(grader, "replace_together", full)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # the folder set aside, not in the real /tmp
    (tmp_path / "tmp").mkdir()
    assert cli.main(["grade", str(folder), "--out", str(out)]) == 2
    said = capsys.readouterr()
    line = said.err.strip()
    aside = Path(line.split("the reports are in ")[1].split(" and ")[0])
    assert line == (f"kd-tutorial grade: cannot write {out} (no space left on device): the reports are in {aside} and "
                    f"{aside.with_suffix('.json')} instead; copy them to {out} once it can be written (what was "
                    "there is untouched)")
    assert learners(aside) == (["a_02"] * 2 + ["b_02"] * 2, ["a_02", "b_02"]) and "a_02" in said.out  # the summary
    assert aside.parent.parent == tmp_path / "tmp"
    assert list(out.parent.iterdir()) == [out.parent / ".grades.csv.kd-lock"]  # no report: only the empty lock
    assert (out.parent / ".grades.csv.kd-lock").stat().st_size == 0


def test_a_report_saved_again_by_excel_in_its_own_encoding_is_refused_before_grading(tmp_path, capsys, no_grading):
    """Defect 2: a report re-saved as cp1252 was read with replacement characters: zoë's row became zo\ufffd, a
    second row of hers was added, and the summary said her notebook was gone."""
    out = tmp_path / "grades.csv"
    grader.write_reports([{"learner": "zoë_02", "file": str(tmp_path / "zoë_02.ipynb"), "exercise": "ex02.q1"}], [],
                         out, 1.0)
    out.write_bytes(out.read_text(encoding="utf-8-sig").encode("cp1252"))
    before = snapshot(tmp_path)
    assert one_line(capsys, "grade", NOTEBOOK, "--out", str(out)) == (
        f"kd-tutorial grade: the earlier report {out} is not UTF-8 (saved by Excel as \"CSV (Comma delimited)\"?): "
        "save it again as \"CSV UTF-8\", or give --out a new .csv name")
    assert snapshot(tmp_path) == before


def test_a_learner_graded_alone_first_is_named_by_folder_once_the_class_is_graded(tmp_path, fake_kernel):
    """Defect 3: grading alice's notebook alone first (a trial run) kept her bare, ambiguous ID for good."""
    stem = "02_soft_targets_temperature"
    folder = a_class(tmp_path / "class", f"alice/{stem}.ipynb", f"bob/{stem}.ipynb")
    out = tmp_path / "grades.csv"
    assert cli.main(["grade", str(folder / "alice" / f"{stem}.ipynb"), "--out", str(out)]) == 0
    assert learners(out)[1] == [stem]
    assert cli.main(["grade", str(folder), "--out", str(out)]) == 0
    assert learners(out)[1] == [f"alice/{stem}", f"bob/{stem}"]


def test_a_second_interrupted_run_adds_to_the_first_ones_partial_report(tmp_path, capsys, fake_kernel):
    """Defect 4: the second Ctrl-C run's partial report replaced the first one's: b_02's grades were lost."""
    folder = a_class(tmp_path / "class", "a_02.ipynb", "b_02.ipynb", "c_02.ipynb")
    out = tmp_path / "grades.csv"
    grader.write_reports([], [], out, 1.0)  # the class's report
    fake_kernel.interrupt_at = 3
    assert cli.main(["grade", str(folder), "--out", str(out)]) == 130
    fake_kernel.calls, fake_kernel.interrupt_at = 0, 2
    assert cli.main(["grade", str(folder), "--out", str(out)]) == 130
    assert learners(out.with_name("grades-interrupted.csv"))[1] == ["a_02", "b_02"]


def test_a_subfolder_that_cannot_be_read_is_named(tmp_path, capsys, monkeypatch):
    """Defect 5: a learner's folder without read permission was passed by in silence, and the learner was missing.
    (Run as root, permissions are not enforced: the refusal is made by os.scandir here.)"""
    folder = a_class(tmp_path / "class", "alice/a_02.ipynb", "bob/b_02.ipynb")
    real = os.scandir

    def scandir(path="."):
        if Path(path) == folder / "bob":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)
    assert [p.name for p in grader.submissions_of([str(folder)])] == ["a_02.ipynb"]
    assert capsys.readouterr().out.strip() == (f"cannot read {folder / 'bob'} (permission denied): its notebooks are "
                                               "not graded; fix its permissions and grade it again")


def test_a_gradebook_with_an_added_column_and_blank_rows_is_merged_keeping_the_column(tmp_path, fake_kernel):
    """Defect 6: a comment column made the gradebook "not a report of kd-tutorial grade", and the blank rows a
    spreadsheet leaves became a phantom submission."""
    folder = a_class(tmp_path / "class", "a_02.ipynb", "b_02.ipynb")
    out = tmp_path / "grades.csv"
    assert cli.main(["grade", str(folder), "--out", str(out)]) == 0
    with out.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with out.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=grader.COLUMNS + ["comment"])
        writer.writeheader()
        writer.writerows([{**r, "comment": f"seen {r['learner']} {r['exercise']}"} for r in rows])
        fh.write("," * len(grader.COLUMNS) + "\r\n")
    assert cli.main(["grade", str(folder / "a_02.ipynb"), "--out", str(out)]) == 0
    with out.open(encoding="utf-8-sig", newline="") as fh:
        again = list(csv.DictReader(fh))
    assert [(r["learner"], r["comment"]) for r in again] == [(r["learner"], f"seen {r['learner']} {r['exercise']}")
                                                              for r in rows]
    assert [s["learner"] for s in json.loads(out.with_suffix(".json").read_text())["submissions"]] == ["a_02", "b_02"]


@pytest.mark.parametrize("content, says", [
    (b"", "the file is empty: download the learner's notebook again"),
    (b"<!DOCTYPE html><html>Sign in to Google Drive</html>",
     "it is a web page (HTML), not a notebook: download the learner's notebook again (File > Download)"),
    (b'{"cells": [{"cell_type": "code", "sour',
     "NotJSONError: it is not JSON, perhaps cut short: download the learner's notebook again, or re-save it in "
     "Jupyter"),
    (b'{"cells": [{"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": []}], "metadata": {}}',
     "it has no nbformat version, so Jupyter did not save it: open it and save it again in Jupyter"),
    (b'{"cells": [{"cell_type": "markdown"}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}',
     "; open it and save it again in Jupyter")])
def test_a_notebook_a_download_spoiled_gets_a_reason_that_names_the_fix(tmp_path, content, says):
    """Defect 7: an empty file, a web page and a cut-short file were all "Notebook does not appear to be JSON"; one
    without an nbformat key was read as version 2, its code cells emptied (or an UnboundLocalError)."""
    (tmp_path / "a_02.ipynb").write_bytes(content)
    nb, reason = grader.load(tmp_path / "a_02.ipynb")
    assert nb is None and (reason == says or reason.endswith(says) and says.startswith(";"))


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_a_notebook_saved_with_a_byte_order_mark_or_in_utf16_is_read(tmp_path, encoding):
    """A Windows editor's save: the learner was told to "open it and save it again in Jupyter", which cannot open it
    either; json reads both, and so does the grader now."""
    text = (FIXTURES / "untouched.ipynb").read_text(encoding="utf-8")
    (tmp_path / "a_02.ipynb").write_bytes(text.replace("YOUR CODE HERE", "YOUR CODE HERE é").encode(encoding))
    nb, reason = grader.load(tmp_path / "a_02.ipynb")
    assert reason is None and any("YOUR CODE HERE é" in c.source for c in nb.cells)
