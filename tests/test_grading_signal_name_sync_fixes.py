"""Three defects of the batch grader and of ex06.q1, each with the test that failed before its fix:

1. a first SIGTERM (or SIGHUP) that landed while the reports were being written was dropped: the run ended with
   status 0; now the write ends whole, then the run stops as interrupted (status 130), and `nohup`'s SIGHUP stays
   ignored;
2. a kept notebook whose file name is not UTF-8 was listed as "no longer there";
3. ex06.q1 passed an exact value measured with sync() only at the top of the timing loop (the last call's work
   never waited for).

The grader's tests use the stand-in kernel of test_grading_batch (no notebook is run).
"""
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from kd_tutorial import store
from kd_tutorial.grading import grader, registry
from kd_tutorial.grading.core import FAILED, PASSED
import test_grading_batch
from test_bad_inputs_grading import FIXTURES as NB_FIXTURES, a_class
from test_grading_batch import NB, csv_rows

EXERCISES = {ex.key: ex for ex in registry.all_exercises()}
fake_kernel = test_grading_batch.fake_kernel  # the stand-in kernel (a fixture)


# ----------------------------------------------------------------------------- 1. a signal during the write


def _signal_mid_write(monkeypatch, sig) -> list:
    """Send ``sig`` to this process once the first of the two report files is written, before the second; the
    returned list holds the files written."""
    written, real = [], store.atomic_write_text

    def write(path, text, **kw):
        real(path, text, **kw)
        written.append(path)
        if len(written) == 1:
            os.kill(os.getpid(), sig)
            time.sleep(0.01)  # a handler that raises would do it here, with the JSON not written yet
    monkeypatch.setattr(store, "atomic_write_text", write)
    return written


@pytest.mark.usefixtures("fake_kernel")
@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_a_signal_while_the_reports_are_written_stops_the_run_after_the_write(tmp_path, capsys, monkeypatch, name):
    """Defect 1: the signal was ignored there (status 0). Now both reports are whole, then status 130 and the
    interrupted message; the previous handler is back after, never called."""
    sig, seen = getattr(signal, name), []
    folder = a_class(tmp_path / "class", f"a_{NB}", f"b_{NB}", f"c_{NB}")
    written = _signal_mid_write(monkeypatch, sig)
    previous = signal.signal(sig, lambda signum, frame: seen.append(signum))
    try:
        status = grader.main([str(folder), "--out", str(tmp_path / "grades.csv")])
        assert signal.getsignal(sig) is not signal.SIG_IGN and seen == []
    finally:
        signal.signal(sig, previous)
    assert len(written) == 2
    err = capsys.readouterr().err
    assert status == 130, err
    assert "kd-tutorial grade: interrupted after 3 of 3 notebooks: the reports (" in err
    assert [r["learner"] for r in csv_rows(tmp_path / "grades.csv")] == [f"{x}_{NB[:-6]}" for x in "aabbcc"]
    assert len(json.loads((tmp_path / "grades.json").read_text(encoding="utf-8"))["submissions"]) == 3


@pytest.mark.usefixtures("fake_kernel")
def test_a_sighup_ignored_before_grading_stays_ignored_during_the_write(tmp_path, capsys, monkeypatch):
    """`nohup kd-tutorial grade ...`: a closed terminal during the write changes nothing (status 0)."""
    folder = a_class(tmp_path / "class", f"a_{NB}")
    _signal_mid_write(monkeypatch, signal.SIGHUP)
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert grader.main([str(folder), "--out", str(tmp_path / "grades.csv")]) == 0
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)
    assert "interrupted" not in capsys.readouterr().err


def test_signals_deferred_records_a_signal_and_gives_the_handlers_back():
    """The block's signals are recorded, not acted on; the handlers before it come back."""
    seen = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with grader.signals_deferred() as received:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
        assert received == [signal.SIGTERM] and seen == []
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.usefixtures("fake_kernel")
@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_between_the_grading_and_the_write_stops_the_run_after_the_write(tmp_path, capsys, monkeypatch,
                                                                                   name):
    """The grading gave its handlers back before the write held the signals: a SIGTERM or SIGHUP then killed the run
    with no report (here it reached the previous handler: status 0), Ctrl-C lost the graded notebooks. Now it is
    held as during the write: both reports, then status 130."""
    sig, seen, real = getattr(signal, name), [], grader.grade_paths

    def grade_then_signal(*args, **kw):
        graded = real(*args, **kw)
        os.kill(os.getpid(), sig)
        time.sleep(0.01)  # the handler runs here
        return graded
    monkeypatch.setattr(grader, "grade_paths", grade_then_signal)
    folder = a_class(tmp_path / "class", f"a_{NB}", f"b_{NB}", f"c_{NB}")
    mine = signal.default_int_handler if name == "SIGINT" else lambda signum, frame: seen.append(signum)
    previous = signal.signal(sig, mine)
    try:
        status = grader.main([str(folder), "--out", str(tmp_path / "grades.csv")])
        assert signal.getsignal(sig) is mine
    finally:
        signal.signal(sig, previous)
    err = capsys.readouterr().err
    assert (status, seen) == (130, []), err
    assert "kd-tutorial grade: interrupted after 3 of 3 notebooks: the reports (" in err
    assert [r["learner"] for r in csv_rows(tmp_path / "grades.csv")] == [f"{x}_{NB[:-6]}" for x in "aabbcc"]
    assert len(json.loads((tmp_path / "grades.json").read_text(encoding="utf-8"))["submissions"]) == 3


@pytest.mark.parametrize("when", ["grading", "loading"])
def test_ctrl_c_still_stops_the_grading_at_once(tmp_path, capsys, fake_kernel, monkeypatch, when):
    """The write's hold now starts before the grading: Ctrl-C in it (or in the notebooks' loading) must still stop
    it at once, with the report of the notebooks finished before, not wait for the whole class (held, it would
    grade all three: the counts below say where it stopped)."""
    def ctrl_c():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises before this ends
    fake_kernel.during = lambda call: call == 2 and ctrl_c()
    if when == "loading":
        load = grader.load
        monkeypatch.setattr(grader, "load", lambda path: ctrl_c() if "b_" in path.name else load(path))
    folder = a_class(tmp_path / "class", f"a_{NB}", f"b_{NB}", f"c_{NB}")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        status = grader.main([str(folder), "--out", str(tmp_path / "grades.csv")])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err
    assert status == 130, err
    if when == "loading":
        assert "kd-tutorial grade: interrupted before" in err and not (tmp_path / "grades.csv").exists()
    else:
        assert "interrupted after 1 of 3 notebooks" in err
        assert [r["learner"] for r in csv_rows(tmp_path / "grades.csv")] == [f"a_{NB[:-6]}"] * 2


# ----------------------------------------------------------------------------- 2. a name that is not UTF-8


@pytest.mark.usefixtures("fake_kernel")
def test_a_kept_notebook_whose_name_is_not_utf8_is_still_there(tmp_path, capsys):
    """Defect 2: the report holds the name escaped (caf\\xe9_02...), which is no file: it was "no longer there".
    Once the file is gone, it is said so, under the escaped name."""
    folder = a_class(tmp_path / "class", f"bob_{NB}")
    odd = Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9_" + NB.encode()))
    shutil.copy(NB_FIXTURES / "untouched.ipynb", odd)
    out = tmp_path / "grades.csv"
    assert grader.main([str(folder), "--out", str(out)]) == 0
    capsys.readouterr()
    assert grader.main([str(folder / f"bob_{NB}"), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "kept 2 earlier row(s)" in said and "no longer there" not in said, said
    odd.unlink()
    assert grader.main([str(folder / f"bob_{NB}"), "--out", str(out)]) == 0
    assert f"(1 of them no longer there: caf\\xe9_{NB})" in capsys.readouterr().out


def test_still_there_reads_escaped_bytes_back(tmp_path):
    """A report's name with an escaped byte finds the file; a name that no file has, or a lone surrogate, does not."""
    (Path(os.fsdecode(os.fsencode(tmp_path) + b"/x\xff\x80.ipynb"))).write_text("{}")
    assert grader.still_there(grader.file_key(os.fsdecode(os.fsencode(tmp_path) + b"/x\xff\x80.ipynb")))
    assert not grader.still_there(str(tmp_path / "x\\xfe\\x80.ipynb"))
    assert not grader.still_there(str(tmp_path / "x\ud800.ipynb"))


# ----------------------------------------------------------------------------- 3. ex06.q1: sync after the loop


def latency_synced_at_the_top_only(model, batch, sync=lambda: None, warmup=3, repeats=10):
    """Each sync() waits for the call before it: the last call is never waited for, and repeats - 1 calls are."""
    for _ in range(warmup):
        model(**batch)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        sync()
        model(**batch)
    return (time.perf_counter() - start) / (repeats - 1)


def latency_synced_at_the_top_of_one_more_call(model, batch, sync=lambda: None, warmup=3, repeats=10):
    """repeats + 1 calls, the clock read with the last one still queued: the `repeats` waited for, divided right."""
    for _ in range(warmup):
        model(**batch)
    sync()
    start = time.perf_counter()
    for _ in range(repeats + 1):
        sync()
        model(**batch)
    return (time.perf_counter() - start) / repeats


def latency_synced_at_the_top_divided_by_repeats(model, batch, sync=lambda: None, warmup=3, repeats=10):
    """repeats - 1 calls waited for, divided by repeats: a value 10% short."""
    for _ in range(warmup):
        model(**batch)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        sync()
        model(**batch)
    return (time.perf_counter() - start) / repeats


@pytest.mark.parametrize("fn", [latency_synced_at_the_top_only, latency_synced_at_the_top_of_one_more_call,
                                latency_synced_at_the_top_divided_by_repeats])
def test_ex06_q1_refuses_a_clock_stopped_before_the_last_call_is_waited_for(fn):
    """Defect 3: the first one passed (its value is exact on the fakes); each now names the fix."""
    result = EXERCISES["ex06.q1"].grade(fn)
    assert result.status == FAILED, result
    assert "your last sync() came before the last model call" in result.message
    assert "Call sync() after the timing loop, before reading the clock" in result.message


def latency_synced_at_the_top_and_after(model, batch, sync=lambda: None, warmup=3, repeats=10):
    """Syncs at the top of the loop are harmless with one after it, as are clock readings in the loop."""
    for _ in range(warmup):
        model(**batch)
    sync()
    start, marks = time.perf_counter(), []
    for _ in range(repeats):
        sync()
        model(**batch)
        marks.append(time.perf_counter())
    sync()
    return (time.perf_counter() - start) / repeats


def latency_synced_at_the_top_of_one_more_iteration(model, batch, sync=lambda: None, warmup=3, repeats=10):
    """The sync at the top of iteration `repeats` (no call in it) waits for the last call: right."""
    for _ in range(warmup):
        model(**batch)
    for i in range(repeats + 1):
        sync()
        if i == 0:
            start = time.perf_counter()
        if i < repeats:
            model(**batch)
    return (time.perf_counter() - start) / repeats


def latency_then_one_more_call_and_a_log_time(model, batch, sync=lambda: None, warmup=3, repeats=10):
    """Measured right, then an untimed call and a clock read for a log line: the measurement was synced (a review
    found this refused by the first version of the check, which looked only at the last clock reading)."""
    for _ in range(warmup):
        model(**batch)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        model(**batch)
    sync()
    latency = (time.perf_counter() - start) / repeats
    model(**batch)
    print(f"logged at {time.time():.0f}")
    return latency


def _reference():
    """The reference solution of ex06.q1, defined from its source."""
    import torch
    ns = {"time": time, "torch": torch}
    exec(EXERCISES["ex06.q1"].solution_code, ns)
    return ns["measure_latency"]


@pytest.mark.parametrize("fn", [latency_synced_at_the_top_and_after, latency_synced_at_the_top_of_one_more_iteration,
                                latency_then_one_more_call_and_a_log_time, _reference()],
                         ids=["sync at the top and after", "one more iteration", "a call and a clock after",
                              "reference"])
def test_ex06_q1_a_sync_after_the_last_call_still_passes(fn):
    """A sync at the top of the loop too, or one that waits for the last call at the top of one more iteration, and
    the reference solution: all pass."""
    result = EXERCISES["ex06.q1"].grade(fn)
    assert result.status == PASSED, result
