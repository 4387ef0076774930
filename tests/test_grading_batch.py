"""The instructor's batch grader on a class: re-grading a few notebooks keeps the rest of the gradebook, SIGTERM and
SIGHUP stop it as Ctrl-C does, a learner's ``!pip install`` is not run, folders from a zip are read right, the CSV
opens in Excel, learner IDs are as short as they can be, and slow cells leave the checks their time.

Most tests grade with a stand-in kernel (``fake_kernel``: every check passes at once, or fails for the files named in
``failing``); the ones marked "real kernel" run notebooks, a few seconds each.
"""
import codecs
import contextlib
import csv
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from kd_tutorial.grading import execute, grader
from kd_tutorial.grading.registry import SETS
from test_bad_inputs_grading import a_class

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "grading"
ROOT = Path(__file__).resolve().parents[1]
NB = "02_soft_targets_temperature.ipynb"


@pytest.fixture
def fake_kernel(monkeypatch):
    """Grading without a kernel: each notebook's checks pass at once (fail for a file whose name is in ``failing``);
    ``during`` (if set) is called with the call's number, as a running kernel would be interrupted."""
    state = SimpleNamespace(calls=0, failing=set(), during=None)

    def run_submission(nb, set_id, **limits):
        state.calls += 1
        if state.during:
            state.during(state.calls)
        status = "failed" if any(name in str(nb.get("metadata", {}).get("path")) for name in state.failing) else \
            "passed"
        return execute.Run(results={q: (status, "ok") for q in SETS[set_id][1]})
    real_load = grader.load

    def load(path):  # the stand-in kernel learns which file it grades from the notebook
        nb, problem = real_load(path)
        if nb is not None:
            nb.metadata["path"] = str(path)
        return nb, problem
    monkeypatch.setattr(execute, "run_submission", run_submission)
    monkeypatch.setattr(grader, "load", load)
    return state


def csv_rows(out: Path) -> list[dict]:
    """The rows of the CSV report ``out``, as a spreadsheet reads them (UTF-8 with its byte-order mark)."""
    with out.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def grade(*argv) -> int:
    """``kd-tutorial grade argv`` in-process; its exit status."""
    return grader.main([str(a) for a in argv])


# ----------------------------------------------------------------------------- 1. re-grading keeps the class


def test_regrading_a_few_notebooks_keeps_the_rest_of_the_class(tmp_path, capsys, fake_kernel, monkeypatch):
    """Defect 1: grading late/frank_02... after the class replaced grades.csv with frank's rows alone."""
    names = [f"{n}_{NB}" for n in ("alice", "bob", "carol", "dave", "erin")]
    a_class(tmp_path / "class", *names)
    a_class(tmp_path / "late", f"frank_{NB}")
    out = tmp_path / "grades.csv"
    assert grade(tmp_path / "class", "--out", out) == 0
    class_rows = csv_rows(out)
    capsys.readouterr()
    assert grade(tmp_path / "late" / f"frank_{NB}", "--out", out) == 0
    said = capsys.readouterr().out
    assert f"\nkept 10 earlier row(s) in {out}, of 5 notebook(s) this run did not grade (give --out a new name for " \
           "a report of this run only)\n" in said
    assert csv_rows(out) == class_rows + csv_rows(out)[10:] and len(csv_rows(out)) == 12
    assert [r["learner"] for r in csv_rows(out)[10:]] == [f"frank_{NB[:-6]}"] * 2
    # bob again, named relative to another folder: his rows are replaced where they were, not added twice
    monkeypatch.chdir(tmp_path / "late")
    fake_kernel.failing = {f"bob_{NB}"}
    assert grade(f"../class/bob_{NB}", "--out", out) == 0
    rows = csv_rows(out)
    assert [(r["learner"], r["status"]) for r in rows[2:4]] == [(f"bob_{NB[:-6]}", "failed")] * 2
    assert [r for i, r in enumerate(rows) if i not in (2, 3)] == [r for i, r in enumerate(class_rows) if i not in (
        2, 3)] + rows[10:] and len(rows) == 12
    report = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert [s["learner"] for s in report["submissions"]] == [n[:-6] for n in names] + [f"frank_{NB[:-6]}"]
    assert report["submissions"][1]["passed"] == 0 and len(report["rows"]) == 12
    assert "kept 10 earlier row(s)" in capsys.readouterr().out  # 5 notebooks kept, bob's 2 rows replaced
    (tmp_path / "marks.csv").write_text("name,score\nalice,3\n")  # a file that is not a report: still refused
    assert grade(tmp_path / "class", "--out", tmp_path / "marks.csv") == 2
    assert "is a file but not a report of kd-tutorial grade" in capsys.readouterr().err
    assert (tmp_path / "marks.csv").read_text() == "name,score\nalice,3\n"


def test_a_relative_path_graded_from_elsewhere_is_the_same_notebook(tmp_path, capsys, fake_kernel, monkeypatch):
    """The report kept paths as typed: `class/bob_02...` graded again from another folder as `../course/class/...`
    was a new notebook (bob twice, his stale rows kept); now the report holds each notebook's resolved path."""
    course = tmp_path / "course"
    a_class(course / "class", f"alice_{NB}", f"bob_{NB}")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(course)
    assert grade("class", "--out", "grades.csv") == 0
    monkeypatch.chdir(tmp_path / "elsewhere")
    fake_kernel.failing = {f"bob_{NB}"}
    assert grade(f"../course/class/bob_{NB}", "--out", "../course/grades.csv") == 0
    rows = csv_rows(course / "grades.csv")
    assert [(r["learner"], r["status"]) for r in rows] == [(f"alice_{NB[:-6]}", "passed")] * 2 + [
        (f"bob_{NB[:-6]}", "failed")] * 2
    assert {r["file"] for r in rows} == {str(course / "class" / f"{n}_{NB}") for n in ("alice", "bob")}


def test_another_folders_notebook_of_the_same_name_is_another_learner(tmp_path, capsys, fake_kernel):
    """late/frank_02 graded after class/frank_02 was given the same learner ID (two franks, one name)."""
    a_class(tmp_path / "class", f"frank_{NB}")
    a_class(tmp_path / "late", f"frank_{NB}")
    out = tmp_path / "grades.csv"
    assert grade(tmp_path / "class", "--out", out) == 0
    assert grade(tmp_path / "late", "--out", out) == 0
    assert [r["learner"] for r in csv_rows(out)] == [f"frank_{NB[:-6]}"] * 2 + [f"late/frank_{NB[:-6]}"] * 2


def test_a_learner_graded_late_into_a_class_named_by_folder_is_named_by_folder_too(tmp_path, capsys, fake_kernel):
    """alice/02 and bob/02 graded together, then carol's notebook alone: carol's row said only `02_...`, and a
    second late learner would have been told apart by yet another scheme."""
    room = a_class(tmp_path / "room", f"alice/{NB}", f"bob/{NB}", f"carol/{NB}", f"dave/{NB}")
    out = tmp_path / "room.csv"
    assert grade(room / "alice", room / "bob", "--out", out) == 0
    assert grade(room / "carol" / NB, "--out", out) == 0
    assert grade(room / "dave" / NB, "--out", out) == 0
    assert [r["learner"] for r in csv_rows(out)][::2] == [f"{who}/{NB[:-6]}" for who in ("alice", "bob", "carol",
                                                                                       "dave")]


def test_an_edit_made_to_the_csv_is_kept(tmp_path, capsys, fake_kernel):
    """The merge read the JSON, so a mark an instructor corrected in grades.csv came back as it was."""
    folder = a_class(tmp_path / "class", f"alice_{NB}", f"bob_{NB}")
    out = tmp_path / "grades.csv"
    fake_kernel.failing = {f"alice_{NB}"}
    assert grade(folder / f"alice_{NB}", "--out", out) == 0
    text = out.read_text(encoding="utf-8-sig")
    text = text.replace(",failed,", ",passed (by hand),", 1).replace(f"alice_{NB[:-6]},", "Alice Smith,")
    out.write_text("\ufeff" + text, encoding="utf-8", newline="")
    assert grade(folder / f"bob_{NB}", "--out", out) == 0
    assert [r["status"] for r in csv_rows(out)] == ["passed (by hand)", "failed", "passed", "passed"]
    assert [r["learner"] for r in csv_rows(out)][:2] == ["Alice Smith"] * 2  # a renamed learner stays renamed


def test_rows_another_grading_wrote_while_this_one_ran_are_kept(tmp_path, capsys, fake_kernel):
    """Two instructors grading into one --out: the report was read at the start and written at the end, so the run
    that finished last dropped the rows the other had written meanwhile. It is read again just before writing."""
    folder = a_class(tmp_path / "class", f"alice_{NB}", f"bob_{NB}", f"carol_{NB}")
    out = tmp_path / "grades.csv"
    assert grade(folder / f"alice_{NB}", "--out", out) == 0
    fake_kernel.during = lambda call: call == 2 and grade(folder / f"bob_{NB}", "--out", out)  # another grading
    assert grade(folder / f"carol_{NB}", "--out", out) == 0
    assert [r["learner"] for r in csv_rows(out)] == [f"{who}_{NB[:-6]}" for who in ("alice", "bob", "carol")
                                                     for _ in range(2)]


def test_two_gradings_writing_one_report_at_once_take_turns_and_keep_each_others_rows(tmp_path, capsys, fake_kernel,
                                                                                      monkeypatch):
    """The report was read again just before it was written, with no lock: a grading that had read it, while
    another read and wrote it, then wrote its own and dropped the other's rows, both saying "Graded". They now
    hold a lock on the report (store.locked) from reading it again to writing it: the other one waits its turn."""
    from kd_tutorial import store
    folder = a_class(tmp_path / "class", f"alice_{NB}", f"bob_{NB}")
    out = tmp_path / "grades.csv"
    reached, statuses, real_locked, real_merge = threading.Event(), [], store.locked, grader.merge_reports

    def other_grading():  # another thread waits for the lock as another process would
        try:
            statuses.append(grade(folder / f"bob_{NB}", "--out", out))
        finally:
            reached.set()
    other = threading.Thread(target=other_grading)

    def locked(*args, **kwargs):  # the other grading asks for the report: it waits there, or goes on without a lock
        if threading.current_thread() is other:
            reached.set()
        return real_locked(*args, **kwargs)

    def merge(*args, **kwargs):  # alice's grading has read the report again: bob's runs up to the report now
        if threading.current_thread() is threading.main_thread() and not other.ident:
            other.start()
            assert reached.wait(10)
        return real_merge(*args, **kwargs)
    monkeypatch.setattr(store, "locked", locked)
    monkeypatch.setattr(grader, "merge_reports", merge)
    try:
        assert grade(folder / f"alice_{NB}", "--out", out) == 0
    finally:
        other.join(10)
    assert statuses == [0]
    assert [r["learner"] for r in csv_rows(out)] == [f"{who}_{NB[:-6]}" for who in ("alice", "bob") for _ in range(2)]
    assert [s["learner"] for s in json.loads(out.with_suffix(".json").read_text())["submissions"]] == [
        f"alice_{NB[:-6]}", f"bob_{NB[:-6]}"]
    capsys.readouterr()  # the lock stays beside the report, empty, and is no learner's file to grade or name
    assert (tmp_path / ".grades.csv.kd-lock").stat().st_size == 0 and len(grader.submissions_of([str(tmp_path)])) == 2
    assert "kd-lock" not in capsys.readouterr().out


def test_the_merge_reads_the_csv_when_the_json_is_gone(tmp_path, capsys, fake_kernel):
    """Without its JSON, the CSV (byte-order mark, formula-safe cells) is the gradebook that is kept."""
    folder = a_class(tmp_path / "class", f"=alice_{NB}", f"bob_{NB}")
    out = tmp_path / "grades.csv"
    assert grade(folder / f"=alice_{NB}", "--out", out) == 0
    before = csv_rows(out)
    assert before[0]["learner"] == f"'=alice_{NB[:-6]}"
    out.with_suffix(".json").unlink()
    assert grade(folder / f"bob_{NB}", "--out", out) == 0
    assert csv_rows(out)[:2] == before and [r["learner"] for r in csv_rows(out)[2:]] == [f"bob_{NB[:-6]}"] * 2
    report = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert report["rows"][0]["learner"] == f"=alice_{NB[:-6]}" and report["rows"][0]["seconds"] == 0.0
    assert report["submissions"][0] | {"file": "x"} == {
        "learner": f"=alice_{NB[:-6]}", "file": "x", "notebook": NB[:-6], "flags": "", "notes": "", "seconds": 0.0,
        "exercise_set": "ex02", "kernel_python": None, "passed": 2, "total": 2}
    assert "kept 2 earlier row(s)" in capsys.readouterr().out


def test_a_notebook_graded_again_keeps_its_learner_id(tmp_path, capsys, fake_kernel):
    """class/bob/02.ipynb is bob/02 beside alice/02; graded again alone it would be plain 02."""
    folder = a_class(tmp_path / "class", "alice/02.ipynb", "bob/02.ipynb")
    out = tmp_path / "grades.csv"
    assert grade(folder, "--out", out) == 0
    fake_kernel.failing = {"bob"}
    assert grade(folder / "bob" / "02.ipynb", "--out", out) == 0
    assert [(r["learner"], r["status"]) for r in csv_rows(out)] == [("alice/02", "passed")] * 2 + [
        ("bob/02", "failed")] * 2
    assert "\nbob/02  " in capsys.readouterr().out  # in the summary too


# ----------------------------------------------------------------------------- 2. SIGTERM and SIGHUP


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_the_run_as_ctrl_c_does(tmp_path, capsys, fake_kernel, name):
    """Defect 2: `docker stop` or a dropped SSH session killed the run with no report; the previous handler is back
    after grading."""
    sig = getattr(signal, name)
    folder = a_class(tmp_path / "class", f"a_{NB}", f"b_{NB}", f"c_{NB}")
    seen = []

    def mine(signum, frame):
        seen.append(signum)

    def during(call):
        if call == 2:
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler raises before this ends
    fake_kernel.during = during
    previous = signal.signal(sig, mine)
    try:
        assert grade(folder, "--out", tmp_path / "grades.csv") == 130
        assert signal.getsignal(sig) is mine
    finally:
        signal.signal(sig, previous)
    assert [r["learner"] for r in csv_rows(tmp_path / "grades.csv")] == [f"a_{NB[:-6]}"] * 2 and seen == []
    assert "interrupted after 1 of 3 notebooks" in capsys.readouterr().err


def test_a_signal_ignored_when_grading_starts_stays_ignored():
    """`nohup kd-tutorial grade ... &`: SIGHUP is ignored, and a closed terminal stopped the run all the same."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with grader.signals_interrupt():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN  # taken over, as before
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_sigterm_shuts_the_kernel_down_and_removes_the_temporary_folders(tmp_path):
    """Real kernel, in a subprocess: SIGTERM while a learner's cell runs; the report holds the notebook finished
    before (one that is not JSON: no kernel, quick), and no /tmp/kd-grade-* folder or kernel is left."""
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / f"a_{NB}").write_text("not json")
    started = tmp_path / "started"
    nb = nbformat.read(FIXTURES / "untouched.ipynb", as_version=4)
    nb.cells.append(new_code_cell(f"import os, time\nopen({str(started)!r}, 'w').write(str(os.getpid()))\n"
                                  "time.sleep(60)"))
    nbformat.write(nb, folder / f"b_{NB}")
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from kd_tutorial.grading import grader; "
                             "sys.exit(grader.main(sys.argv[1:]))", str(folder), "--out", str(tmp_path / "g.csv")],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            if started.exists() and started.read_text():
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted after 1 of 2 notebooks" in err
    assert [r["learner"] for r in csv_rows(tmp_path / "g.csv")] == [f"a_{NB[:-6]}"] * 2
    assert list((tmp_path / "tmp").glob("kd-grade-*")) == []
    kernel = int(started.read_text())
    for _ in range(100):
        try:
            os.kill(kernel, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the kernel (pid {kernel}) outlived the grader")


# ----------------------------------------------------------------------------- 2b. a full temporary folder


def _checks_that_never_report(monkeypatch):
    """run_submission without a kernel: the checks run and report nothing, as when the disk refuses their lines."""
    class Client:
        max_output_bytes, truncated = 0, False

        def setup_kernel(self, **kw):
            return contextlib.nullcontext()
    monkeypatch.setattr(execute, "_make_client", lambda *a, **k: Client())
    monkeypatch.setattr(execute, "_run_cells", lambda *a, **k: None)


def _refuse(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("refused", ["results", "folders", "nothing"])
def test_checks_that_cannot_write_their_results_stop_the_grading_instead_of_failing_the_learner(monkeypatch,
                                                                                                   refused):
    """A full /tmp (tmpfs: its folders are made, their files refused) marked every check "did not report a result",
    an error in the learner's grades, and graded on. The grader now writes there itself to tell the two apart."""
    _checks_that_never_report(monkeypatch)
    if refused != "nothing":
        monkeypatch.setattr(execute.tempfile, "TemporaryFile" if refused == "results" else "mkdtemp", _refuse)
    nb = nbformat.read(FIXTURES / "correct.ipynb", as_version=4)
    if refused == "nothing":  # a disk with room: a check that did not report is the learner's error, as before
        run = execute.run_submission(nb, "ex02", timeout=30, cell_timeout=5)
        assert run.results["q1"] == ("error", "q1: the check did not report a result")
        return
    try:
        run = execute.run_submission(nb, "ex02", timeout=30, cell_timeout=5)
    except Exception as exc:  # noqa: BLE001 - its type is checked below
        said = exc
    else:
        pytest.fail(f"graded on as if the learner's checks had failed: {run.results}")
    assert type(said).__name__ == "ResultsRefused"
    assert str(said) == (f"the checks cannot write their results in {tempfile.gettempdir()} (no space left on its "
                         "disk): free some space there or set TMPDIR to a folder on a disk with room, then run it "
                         "again")


@pytest.mark.parametrize("at", [1, 2])
def test_a_full_temporary_folder_stops_the_batch_in_one_line_keeping_the_grades_before(tmp_path, capsys, fake_kernel,
                                                                                       at):
    """No row for the notebook being graded or the ones after it (they were not checked); the ones before are
    written; the run ends with status 2 and one line naming the fix."""
    folder = a_class(tmp_path / "class", f"a_{NB}", f"b_{NB}", f"c_{NB}")
    def during(call):
        if call == at:
            raise execute._refused(OSError(errno.ENOSPC, "No space left on device"))
    fake_kernel.during = during
    assert grade(folder, "--out", tmp_path / "grades.csv") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"stopped before grading {'ab'[at - 1]}_{NB[:-6]} ({at} of 3)" in err
    assert "set TMPDIR to a folder on a disk with room" in err and fake_kernel.calls == at
    if at == 1:
        assert "(nothing was written)" in err and not (tmp_path / "grades.csv").exists()
    else:
        assert [r["learner"] for r in csv_rows(tmp_path / "grades.csv")] == [f"a_{NB[:-6]}"] * 2


# ----------------------------------------------------------------------------- 3. installs are not run


def test_lines_that_install_packages_become_pass():
    """Defect 3: a learner's `!pip install` ran on the grading machine, for every later learner too."""
    source = ("import math\n!pip install -q transformers\nif True:\n    %pip install a \\\n        b\n    y = 1\n"
              "!ls -la\n%timeit 1\n!!uv pip install z\n !conda install -y c\n!sudo apt-get install -y w\n"
              "!python3 -m pip install v\n%mamba install m\n!pipeline --help\nx = '!pip install'")
    out, found = execute.without_installs(source)
    assert found and out.split("\n") == [
        "import math", "pass  # !pip install -q transformers : not run by the grader", "if True:",
        "    pass  # %pip install a b : not run by the grader", "", "    y = 1", "!ls -la", "%timeit 1",
        "pass  # !!uv pip install z : not run by the grader", " pass  # !conda install -y c : not run by the grader",
        "pass  # !sudo apt-get install -y w : not run by the grader",
        "pass  # !python3 -m pip install v : not run by the grader",
        "pass  # %mamba install m : not run by the grader", "!pipeline --help", "x = '!pip install'"]
    assert execute.without_installs("!ls\n%time x = 1") == ("!ls\n%time x = 1", False)
    # IPython's automagic runs a bare `pip install` as %pip (notebook 00 shows that form); `pip = 3` is code
    out, found = execute.without_installs("pip install -q x\n  conda install y\npip = 3\npip3.11 uninstall z\n"
                                          "uv pip install w")
    assert found and out.split("\n") == ["pass  # pip install -q x : not run by the grader",
                                         "  pass  # conda install y : not run by the grader", "pip = 3",
                                         "pass  # pip3.11 uninstall z : not run by the grader",
                                         "pass  # uv pip install w : not run by the grader"]


def test_installs_in_a_shell_cell_become_the_shells_no_op():
    """A %%bash cell's lines are shell commands: `python -m pip install` there has no `!`, and `pass` is no command."""
    source = ("%%bash\necho start\npython3 -m pip install -q x\n/usr/bin/python -m pip install y\n"
              "sudo apt-get install -y z\n  pip install \\\n    w\nls pip")
    out, found = execute.without_installs(source)
    assert found and out.split("\n") == [
        "%%bash", "echo start", ":  # python3 -m pip install -q x : not run by the grader",
        ":  # /usr/bin/python -m pip install y : not run by the grader",
        ":  # sudo apt-get install -y z : not run by the grader", "  :  # pip install w : not run by the grader", "",
        "ls pip"]
    assert execute.without_installs("%%script bash\npip3 install q")[0] == \
        "%%script bash\n:  # pip3 install q : not run by the grader"
    python_cell = "%%capture\npython -m pip install v"  # a Python cell: that line is a SyntaxError, not an install
    assert execute.without_installs(python_cell) == (python_cell, False)


def test_a_learners_pip_install_is_not_run_and_is_noted(tmp_path, monkeypatch):
    """Real kernel: a `pip` on the PATH that leaves a mark is never called; other shell lines still run."""
    bin_dir, pip_ran, echo_ran = tmp_path / "bin", tmp_path / "pip-ran", tmp_path / "echo-ran"
    bin_dir.mkdir()
    (bin_dir / "pip").write_text(f"#!/bin/sh\ntouch {pip_ran}\n")
    (bin_dir / "pip").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    nb = nbformat.read(FIXTURES / "correct.ipynb", as_version=4)
    nb.cells.insert(0, new_code_cell("!pip install kd-not-a-package\n"))
    nb.cells.insert(1, new_code_cell(f"if True:\n    %pip install other\n!echo hi > {echo_ran}"))
    run = execute.run_submission(nb, "ex02", timeout=90, cell_timeout=8)
    assert run.results == {"q1": ("passed", run.results["q1"][1]), "q2": ("passed", run.results["q2"][1])}
    assert not pip_ran.exists() and echo_ran.read_text().strip() == "hi"
    assert run.notes == ["installs skipped (the grader does not run them): cells 1, 2"]


def test_an_install_chained_after_another_command_or_run_as_a_subprocess_is_not_run(tmp_path, monkeypatch):
    """Real kernel: `!cd . && pip install ...` and `subprocess.check_call([sys.executable, "-m", "pip", ...])` ran
    pip (only lines that start with an install were skipped); now the kernel refuses them, with a note."""
    bin_dir, pip_ran = tmp_path / "bin", tmp_path / "pip-ran"
    bin_dir.mkdir()
    (bin_dir / "pip").write_text(f"#!/bin/sh\necho \"$@\" >> {pip_ran}\n")  # what pip was asked to do
    (bin_dir / "pip").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    nb = nbformat.read(FIXTURES / "correct.ipynb", as_version=4)
    nb.cells.insert(0, new_code_cell("!cd . && pip install kd-not-a-package"))
    nb.cells.insert(1, new_code_cell("import subprocess, sys\n"
                                     "subprocess.check_call([sys.executable, '-m', 'pip', 'install', 'kd-not-x'])"))
    nb.cells.insert(2, new_code_cell("import subprocess, sys\n"  # pip that installs nothing runs
                                     "subprocess.check_call([sys.executable, '-m', 'pip', '--version'])\n"
                                     "!nvidia-smi -L; pip --version"))
    run = execute.run_submission(nb, "ex02", timeout=90, cell_timeout=8)
    assert run.results == {"q1": ("passed", run.results["q1"][1]), "q2": ("passed", run.results["q2"][1])}, run.notes
    assert pip_ran.read_text() == "--version\n" and not run.flags  # only the pip that installs nothing ran
    assert run.notes[0] == "installs skipped (the grader does not run them): cell 1", run.notes
    assert len(run.notes) == 2 and run.notes[1].startswith("an install was not run (the grader runs none): ")


def test_colabs_restart_after_an_install_is_not_run_and_is_noted():
    """Real kernel: the line Colab learners add after `!pip install` to restart the runtime killed the grader's
    kernel, and every exercise scored "error" ("the kernel died while running cell 1")."""
    nb = nbformat.read(FIXTURES / "correct.ipynb", as_version=4)
    nb.cells.insert(0, new_code_cell("!pip install kd-not-a-package\nimport os\nos.kill(os.getpid(), 9)"))
    nb.cells.insert(1, new_code_cell("if False:\n    os._exit(0)\nkill = 'os.kill(os.getpid(), 9)'"))
    run = execute.run_submission(nb, "ex02", timeout=90, cell_timeout=8)
    assert run.results == {"q1": ("passed", run.results["q1"][1]), "q2": ("passed", run.results["q2"][1])}, run.notes
    assert run.notes == ["installs skipped (the grader does not run them): cell 1",
                         "kernel restarts skipped (the grader does not run them): cells 1, 2"]
    assert execute.without_installs("import os; os.kill(os.getpid(), 9)", execute.RESTART_LINE) == \
        ("pass  # import os; os.kill(os.getpid(), 9) : not run by the grader", True)
    assert execute.without_installs("os.kill(child, 9)", execute.RESTART_LINE) == ("os.kill(child, 9)", False)
    split = "os.kill(os.getpid(),\n        9)"  # its second line would not parse alone: left as it is
    assert execute.without_installs(split, execute.RESTART_LINE) == (split, False)
    freeze = "!python train.py && python -m pip freeze > requirements.txt"  # chained, but installs nothing
    assert execute.without_installs(freeze) == (freeze, False)


def test_functions_the_checks_use_are_put_back_before_them_and_flagged():
    """Real kernel: wrong answers (zeros) and one line that makes `torch.allclose` or `all` agree with anything:
    both exercises passed. The grader now puts the libraries back before the checks and flags the notebook."""
    nb = nbformat.read(FIXTURES / "untouched.ipynb", as_version=4)
    for cell in nb.cells:
        for name in ("softmax_with_temperature", "entropy"):
            if cell.source.startswith(f"def {name}("):
                cell.source = f"def {name}(x, *args):\n    return torch.zeros_like(x)"
    nb.cells.insert(3, new_code_cell("import builtins\ntorch.allclose = lambda *a, **k: True\n"
                                     "builtins.all = lambda items: True\n"
                                     "torch.Tensor.softmax = lambda self, dim: self"))
    run = execute.run_submission(nb, "ex02", timeout=90, cell_timeout=8)
    assert {q: status for q, (status, _) in run.results.items()} == {"q1": "failed", "q2": "failed"}, run.results
    assert run.flags == ["replaced functions the checks use (put back before the checks): builtins.all, "
                         "torch.allclose, torch.Tensor.softmax"], run.flags


def test_half_an_emoji_in_a_cell_does_not_fail_the_whole_notebook():
    """Real kernel: a lone surrogate (an emoji cut in two, "\\ud83d" in the file) in a comment made every exercise
    "error" (UnicodeEncodeError sending the cell to the kernel)."""
    nb = nbformat.read(FIXTURES / "correct.ipynb", as_version=4)
    nb.cells.insert(0, new_code_cell("# great \ud83d\nhalf = '\ud83d'"))
    run = execute.run_submission(nb, "ex02", timeout=90, cell_timeout=8)
    assert run.results == {"q1": ("passed", run.results["q1"][1]), "q2": ("passed", run.results["q2"][1])}, run.notes


def test_what_torch_itself_wraps_when_training_starts_is_no_learners_patch():
    """Real kernel: the first optimizer step imports torch._dynamo, which wraps torch.manual_seed: every learner of
    exercises 03 (its q3 check steps an optimizer) was flagged for replacing a function the checks use."""
    nb = nbformat.read(ROOT / "solutions" / "03_kd_losses.ipynb", as_version=4)
    nb.cells.append(new_code_cell("import torch._dynamo\nimport torch.optim\n"
                                  "torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1).step()"))
    run = execute.run_submission(nb, "ex03", timeout=120, cell_timeout=20)
    assert {q: status for q, (status, _) in run.results.items()} == dict.fromkeys(SETS["ex03"][1], "passed")
    assert run.flags == [], run.flags


# ----------------------------------------------------------------------------- 4. folders from a zip


def test_folders_are_searched_for_notebooks_in_any_case_without_a_macs_clutter(tmp_path, capsys):
    """Defect 4: Alice.IPYNB was missed; __MACOSX/ and ._alice.ipynb were graded as learners (with an ERROR each);
    a README or a notebook saved as .txt was skipped without a word."""
    folder = a_class(tmp_path / "zip", "Alice.IPYNB", "bob.ipynb", "__MACOSX/._bob.ipynb", "__MACOSX/x/c.ipynb",
                     "._bob.ipynb", "sub/._c.ipynb", "sub/carol.ipynb", ".ipynb_checkpoints/bob-checkpoint.ipynb")
    for name in ("README.md", "sub/dave.ipynb.txt", ".DS_Store"):
        (folder / name).write_text("x")
    assert grader.submissions_of([str(folder)]) == [folder / "Alice.IPYNB", folder / "bob.ipynb",
                                                    folder / "sub" / "carol.ipynb"]
    assert capsys.readouterr().out == "skipped 2 files that are not notebooks: README.md, dave.ipynb.txt\n"
    for i in range(6):
        (folder / f"data{i}.csv").write_text("x")
    grader.submissions_of([str(folder)])
    assert capsys.readouterr().out == ("skipped 8 files that are not notebooks: README.md, data0.csv, data1.csv, "
                                       "data2.csv, data3.csv and 3 more\n")


# ----------------------------------------------------------------------------- 5. a CSV for spreadsheets


def test_the_csv_starts_with_a_byte_order_mark_and_its_line_ends_are_written_as_they_are(tmp_path, monkeypatch):
    """Defect 5: Excel showed René as RenÃ©, and Windows wrote \\r\\r\\n (a blank line between rows)."""
    from kd_tutorial import store
    calls, real = [], store.atomic_write_text

    def spy(path, text, newline=None):
        calls.append(newline)
        real(path, text, newline)
    monkeypatch.setattr(store, "atomic_write_text", spy)
    out = tmp_path / "grades.csv"
    row = dict.fromkeys(grader.COLUMNS, "") | {"learner": "René", "seconds": 1.0}
    grader.write_reports([row], [], out, 1.0)
    data = out.read_bytes()
    assert data.startswith(codecs.BOM_UTF8 + b"learner,file,") and data.count(codecs.BOM_UTF8) == 1
    assert "\r\nRené,".encode() in data and data.endswith(b"\r\n") and b"\r\r\n" not in data
    assert calls == ["", ""]  # the CSV and the JSON: line endings as written, on Windows too
    assert grader.is_report(out) and csv_rows(out)[0]["learner"] == "René"
    assert json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))["rows"][0]["learner"] == "René"


# ----------------------------------------------------------------------------- 6. learner IDs


def test_only_the_learners_whose_names_repeat_get_a_longer_id(tmp_path):
    """Defect 6: one repeated stem lengthened every learner's ID (late/dave_02 became late/dave_02)."""
    paths = [tmp_path / "class" / "alice" / "02.ipynb", tmp_path / "class" / "bob" / "02.ipynb",
             tmp_path / "late" / "dave_02.ipynb", tmp_path / "erin.ipynb"]
    assert list(grader.learner_names(paths).values()) == ["alice/02", "bob/02", "dave_02", "erin"]
    same_folder = [tmp_path / "x.ipynb", tmp_path / "x.IPYNB"]
    assert list(grader.learner_names(same_folder).values()) == ["x.ipynb", "x.IPYNB"]


def test_a_notebook_named_twice_is_graded_once(tmp_path, monkeypatch):
    folder = a_class(tmp_path / "class", f"alice_{NB}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link.ipynb").symlink_to(folder / f"alice_{NB}")
    found, missing = grader.find_submissions([f"class/alice_{NB}", str(folder / f"alice_{NB}"), str(folder),
                                              "link.ipynb"])
    assert found == [Path(f"class/alice_{NB}")] and missing == []


# ----------------------------------------------------------------------------- 7. time kept for the checks


def test_slow_cells_leave_the_checks_their_time(tmp_path):
    """Real kernel. Defect 7: slow learner cells used up the notebook limit, so no check ran (all 'timeout'); now
    the cells that would eat the checks' time are skipped, with a note, and the checks run."""
    nb = nbformat.read(FIXTURES / "correct.ipynb", as_version=4)
    first = len(nb.cells)
    nb.cells += [new_code_cell("import time\ntime.sleep(3)") for _ in range(8)]
    run = execute.run_submission(nb, "ex02", timeout=24, cell_timeout=4)  # 2 checks: 6 s kept for them
    assert run.results == {"q1": ("passed", run.results["q1"][1]), "q2": ("passed", run.results["q2"][1])}, run.notes
    note = next(n for n in run.notes if "nearly reached" in n)
    skipped = [int(n) for n in note.split(" not run")[0].split("cells ")[1].split(", ")]
    assert note.startswith("notebook time limit (24 s) nearly reached: cells ") and note.endswith(
        " not run, to leave time for the checks") and skipped[-1] == first + 8 and len(note) < 300


def test_a_function_left_undefined_by_the_time_limit_is_a_timeout_not_unattempted(tmp_path):
    """Real kernel: slow cells before the answers, so the cells that define them are skipped: the report said
    "not attempted" (a stub never touched), of a finished notebook."""
    nb = nbformat.read(FIXTURES / "correct.ipynb", as_version=4)
    setup = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "import" in c.source)
    for _ in range(3):
        nb.cells.insert(setup + 1, new_code_cell("import time\ntime.sleep(4)"))
    run = execute.run_submission(nb, "ex02", timeout=16, cell_timeout=5)
    assert {q: status for q, (status, _) in run.results.items()} == {"q1": "timeout", "q2": "timeout"}, run.notes
    assert "not checked: the notebook time limit (16 s) left some of its cells unrun" in run.results["q1"][1]


@pytest.mark.parametrize("edit", [
    lambda d: d["submissions"][0].update(learner=5),
    lambda d: d["submissions"][0].update(learner=["a"]),
    lambda d: d["rows"][0].update(learner=5),
    lambda d: d.update(rows=[1]),
    lambda d: d.update(rows={"a": 1}),
    lambda d: d.update(submissions="x"),
])
def test_an_earlier_json_report_edited_by_hand_is_left_for_its_csv(tmp_path, edit):
    """A learner edited to 5 or ["a"] in grades.json stopped a grading with a traceback after every notebook had
    run, and lost the batch; a 'rows' that is no list, before grading. The CSV (the gradebook) is read instead."""
    from kd_tutorial.grading.grader import json_path_of, read_report, write_reports
    row = {"learner": "alice", "file": "alice.ipynb", "notebook": "02", "exercise": "ex02.q1", "title": "t",
           "status": "passed", "message": "", "flags": "", "notes": "", "seconds": 1.0}
    sub = {"learner": "alice", "file": "alice.ipynb", "notebook": "02", "flags": "", "notes": "", "seconds": 1.0,
           "exercise_set": "ex02", "kernel_python": None, "passed": 1, "total": 1}
    out = tmp_path / "grades.csv"
    write_reports([row], [sub], out, 1.0)
    data = json.loads(json_path_of(out).read_text(encoding="utf-8-sig"))
    edit(data)
    json_path_of(out).write_text(json.dumps(data), encoding="utf-8")
    rows, submissions = read_report(out)
    assert [(r["learner"], r["file"], r["exercise"]) for r in rows] == [("alice", "alice.ipynb", "ex02.q1")]
    assert [(s["learner"], s["file"]) for s in submissions] == [("alice", "alice.ipynb")]


def test_a_report_written_through_a_link_updates_the_file_it_names_and_keeps_the_link(tmp_path):
    """`grade --out link.csv` replaced the link with a new file, leaving the gradebook it pointed to stale."""
    from kd_tutorial.grading.grader import replace_together
    book = tmp_path / "shared" / "grades.csv"
    book.parent.mkdir()
    book.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(book)
    replace_together({link: "new\n", tmp_path / "link.json": "{}\n"})
    assert link.is_symlink() and book.read_text() == "new\n" and (tmp_path / "link.json").read_text() == "{}\n"
