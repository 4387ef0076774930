"""Student runs side by side in forked workers (kd_tutorial.parallel): the same models as one after another, each
run's status, errors raised where they can be read, and when the pipeline uses them."""
import contextlib
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from kd_tutorial import parallel, pipeline
from kd_tutorial.errors import UserError

linux_only = pytest.mark.skipif(not parallel.can_fork(), reason="forked workers run on Linux only")


def _where(_index):
    return os.getpid(), torch.get_num_threads()


@linux_only
def test_jobs_run_in_other_processes_of_one_thread_and_come_back_in_order():
    finished, threads = [], torch.get_num_threads()
    torch.set_num_threads(2)  # as a parent on 2 cores (pytest-xdist gives this process one)
    try:
        results = parallel.run_forked(lambda i: (i * i, *_where(i)), 5, workers=2, on_done=finished.append)
    finally:
        torch.set_num_threads(threads)
    assert [r[0] for r in results] == [0, 1, 4, 9, 16]
    assert sorted(finished) == [0, 1, 2, 3, 4]
    pids = {r[1] for r in results}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert {r[2] for r in results} == {1}  # one thread each: more hangs GNU OpenMP in a forked child


def _fails(index):
    if index == 1:
        raise ValueError("job 1 broke")
    return index


@linux_only
def test_a_failing_job_raises_its_own_error_here_and_leaves_no_worker_behind():
    import multiprocessing
    before = set(multiprocessing.active_children())
    with pytest.raises(ValueError, match="job 1 broke"):
        parallel.run_forked(_fails, 4, workers=2)
    assert set(multiprocessing.active_children()) == before  # the workers are gone, not left running


class _TwoArgumentError(Exception):
    """Pickles, but cannot be rebuilt: unpickling calls __init__ with one argument."""

    def __init__(self, what, code):
        super().__init__(f"{what} ({code})")


def _fails_oddly(i):
    if i == 1:
        raise _TwoArgumentError("job 1 broke oddly", 7)
    return i


@linux_only
def test_an_error_that_cannot_travel_back_keeps_its_text_instead_of_reading_as_a_dead_worker():
    with pytest.raises(RuntimeError, match=r"_TwoArgumentError: job 1 broke oddly \(7\)") as err:
        parallel.run_forked(_fails_oddly, 4, workers=2)
    assert not isinstance(err.value, parallel.WorkerDiedError)


@linux_only
def test_a_worker_that_dies_is_named_with_the_fix_and_the_rest_are_stopped():
    import multiprocessing
    import signal
    before = set(multiprocessing.active_children())

    def job(index):
        if index == 0:
            os.kill(os.getpid(), signal.SIGKILL)  # as the system's out-of-memory killer would
        return index
    with pytest.raises(parallel.WorkerDiedError, match="lack of memory.*--workers 1.*--resume"):
        parallel.run_forked(job, 4, workers=2)
    assert set(multiprocessing.active_children()) == before


@linux_only
def test_run_forked_refuses_to_nest():
    with pytest.raises(RuntimeError, match="already running"):
        parallel.run_forked(lambda i: parallel.run_forked(_where, 1, workers=1), 1, workers=1)


@linux_only
@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_pool_that_cannot_start_leaves_run_forked_usable_and_the_environment_as_it_was(monkeypatch, failure):
    """No /dev/shm for the pool's semaphores, or Ctrl-C as it starts: the next call must not read 'already running'
    (in a Jupyter kernel, until a restart), nor TOKENIZERS_PARALLELISM stay set."""
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)

    def cannot_start(*args, **kwargs):
        raise failure
    with monkeypatch.context() as patched:
        patched.setattr(parallel, "ProcessPoolExecutor", cannot_start)
        with pytest.raises(type(failure)):
            parallel.run_forked(_where, 2, workers=2)
    assert "TOKENIZERS_PARALLELISM" not in os.environ
    assert [r[1] for r in parallel.run_forked(_where, 2, workers=2)] == [1, 1]


class _ParentDiesFirst:
    """Stands in for ctypes in a worker: kills the worker's parent just before PR_SET_PDEATHSIG is set (the race
    the worker must survive), then sets it; reports each worker's PID on ``fd``."""

    def __init__(self, parent: int, fd: int):
        self.parent, self.fd = parent, fd

    def CDLL(self, name):  # noqa: N802 - ctypes' name
        return self

    def prctl(self, *args):
        import ctypes
        import time
        os.write(self.fd, f"worker {os.getpid()}\n".encode())
        if os.getppid() == self.parent:
            time.sleep(0.5)  # the parent has queued the jobs by then
            os.kill(self.parent, 9)
        while os.getppid() == self.parent:
            time.sleep(0.01)
        return ctypes.CDLL(None).prctl(*args)


def _read_until_closed(fd: int, seconds: float) -> str:
    """What the pipe ``fd`` carries until every writer closed it, or ``seconds`` passed."""
    import select
    import time
    text, end = b"", time.monotonic() + seconds
    while time.monotonic() < end and select.select([fd], [], [], max(0.0, end - time.monotonic()))[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            return text.decode()
        text += chunk
    return text.decode() + "(still open)"


@linux_only
def test_a_worker_whose_parent_died_before_it_asked_to_die_with_it_runs_no_job():
    """An orphan would run queued jobs (holding their folders' locks) and then wait forever for more."""
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:  # a process that starts workers and dies as they start
        try:
            os.close(read)
            parallel.ctypes = _ParentDiesFirst(os.getpid(), write)
            parallel.run_forked(lambda i: os.write(write, f"ran job {i}\n".encode()), 2, workers=2)
        finally:
            os._exit(0)
    os.close(write)
    try:
        text = _read_until_closed(read, 30)
    finally:
        os.close(read)
        os.waitpid(middle, 0)
        for line in text.splitlines():  # leave no orphan behind when this fails
            if line.startswith("worker "):
                with contextlib.suppress(OSError):
                    os.kill(int(line.split()[1]), 9)
    assert "worker" in text and "ran job" not in text and "(still open)" not in text, text


def _mark_started(folder: Path, i: int) -> None:
    """Job ``i`` has started: its PID in ``started-<i>``, written whole before the name appears (a rename), so that
    :func:`_ctrl_c_once_started` never reads it half-written."""
    part = folder / f".started-{i}"
    part.write_text(str(os.getpid()))
    part.replace(folder / f"started-{i}")


def _ctrl_c_once_started(folder: Path, jobs: int, terminal: bool = False, sig: str = "SIGINT", parent: bool = True,
                         pressed: Path | None = None) -> threading.Thread:
    """Press Ctrl-C (or send ``sig``) once ``jobs`` have started (each wrote its PID in ``started-<i>``): in this
    process alone, as a Jupyter kernel gets it, or (``terminal``) in the workers too, as a terminal sends it to the
    whole group (and ``timeout`` a SIGTERM), or (not ``parent``) in the workers alone. Then touch ``pressed``."""
    import signal

    def press():
        deadline = time.monotonic() + 60
        while len(list(folder.glob("started-*"))) < jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        for started in folder.glob("started-*") if terminal else ():
            os.kill(int(started.read_text()), getattr(signal, sig))
        if parent:
            os.kill(os.getpid(), getattr(signal, sig))
        if pressed is not None:
            pressed.touch()
    thread = threading.Thread(target=press, daemon=True)
    thread.start()
    return thread


def _grace_waits(monkeypatch) -> list:
    """Record the waits of run_forked that return (the main loop's wait is cut short by Ctrl-C; the grace period's
    returns): ``(timeout, what the finished jobs raised, how many were still running)`` for each."""
    waits, real = [], parallel.wait

    def wait(fs, *args, **kwargs):
        done, not_done = real(fs, *args, **kwargs)
        waits.append((kwargs.get("timeout", args[0] if args else None),
                      sorted(type(f.exception()).__name__ for f in done), len(not_done)))
        return done, not_done
    monkeypatch.setattr(parallel, "wait", wait)
    return waits


@linux_only
@pytest.mark.parametrize("terminal", [False, True])
def test_ctrl_c_lets_the_running_jobs_save_their_last_step_and_starts_no_other(tmp_path, terminal, monkeypatch):
    """Runs one after another save their last completed step on Ctrl-C; workers were killed at once, each losing up
    to checkpoint_every_s (300 s) of training. From a terminal a worker gets Ctrl-C twice: the second must not cut
    its save short. The parent waits for the saves to end, within the grace period, not for the period to run out."""
    import multiprocessing
    before = set(multiprocessing.active_children())
    waits = _grace_waits(monkeypatch)
    pressed = tmp_path.parent / f"{tmp_path.name}-pressed"

    def job(i):
        try:
            _mark_started(tmp_path, i)  # inside the try: the signal may come as soon as the file is there
            time.sleep(60)
        except KeyboardInterrupt:
            _wait_for(pressed, 30)  # the parent's own Ctrl-C is sent before a save ends (it may come after one)
            time.sleep(0.5)  # a checkpoint being written
            (tmp_path / f"saved-{i}").touch()
            raise
    press = _ctrl_c_once_started(tmp_path, 2, terminal, pressed=pressed)
    with pytest.raises(KeyboardInterrupt):
        parallel.run_forked(job, 4, workers=2)
    press.join()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved-0", "saved-1", "started-0", "started-1"]
    # one grace wait, of STOP_GRACE_S, that ended with every job it waited on stopped by the Ctrl-C (a job queued to
    # a worker before the Ctrl-C, and so past cancelling, is waited on too: it stops at once without starting)
    [(timeout, raised, running)] = waits
    assert timeout == parallel.STOP_GRACE_S and running == 0 and len(raised) >= 2
    assert set(raised) == {"KeyboardInterrupt"}
    assert set(multiprocessing.active_children()) == before


@linux_only
@pytest.mark.parametrize("sig,to", [("SIGTERM", "parent"), ("SIGTERM", "group"), ("SIGINT", "group"),
                                    ("SIGTERM", "workers")])
def test_the_stopping_line_names_the_signal_that_came_and_the_runs_save(tmp_path, capsys, sig, to):
    """SIGTERM to `kd-tutorial distill` (kill, docker stop; `timeout` sends it to the workers too) printed "Ctrl-C
    again to stop them now", which no one pressed and which a script or scheduler cannot do: the line now names the
    signal that came, SIGTERM or Ctrl-C, and the running jobs still save their last step. A worker's SIGTERM comes
    back as Terminated: the parent may read a job's exception before its own signal (a loaded CI machine did), or
    get none (the workers alone were signalled), and then named Ctrl-C."""
    from kd_tutorial.cli import sigterm_as_ctrl_c
    from kd_tutorial.errors import Terminated
    pressed = tmp_path.parent / f"{tmp_path.name}-pressed"

    def job(i):
        try:
            _mark_started(tmp_path, i)  # inside the try: the signal may come as soon as the file is there
            time.sleep(60)
        except KeyboardInterrupt:
            _wait_for(pressed, 30)  # a save takes a while: every signal sent, this process's included, before it ends
            (tmp_path / f"saved-{i}").touch()
            raise
    press = _ctrl_c_once_started(tmp_path, 2, to != "parent", sig, parent=to != "workers", pressed=pressed)
    with pytest.raises(KeyboardInterrupt) as stop, sigterm_as_ctrl_c([]):
        parallel.run_forked(job, 2, workers=2)
    press.join()
    assert sorted(p.name for p in tmp_path.glob("saved-*")) == ["saved-0", "saved-1"]
    assert isinstance(stop.value, Terminated) == (sig == "SIGTERM")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("stopping")]
    by, on = ("SIGTERM", " on SIGTERM") if sig == "SIGTERM" else ("Ctrl-C", "")
    assert lines == [f"stopping{on}: the runs in progress save their last completed step, or keep the run finished "
                     f"before where they train one again (up to {parallel.STOP_GRACE_S:.0f} s; {by} again to stop "
                     "them now)"]


@linux_only
def test_ctrl_c_while_the_jobs_are_handed_out_lets_the_running_ones_save(tmp_path, monkeypatch):
    """The jobs were handed to the pool in one expression: a Ctrl-C before the last was handed out (two running
    already) left nothing to wait on, and the running jobs were killed without saving their last step."""
    from concurrent.futures import ProcessPoolExecutor

    class Pool(ProcessPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            if args == (2,):  # the third job: the first two run
                for started in ("started-0", "started-1"):
                    _wait_for(tmp_path / started, 30)
                raise KeyboardInterrupt
            return super().submit(fn, *args, **kwargs)
    monkeypatch.setattr(parallel, "ProcessPoolExecutor", Pool)

    def job(i):
        try:
            _mark_started(tmp_path, i)  # inside the try: the signal may come as soon as the file is there
            time.sleep(60)
        except KeyboardInterrupt:
            time.sleep(0.5)  # a checkpoint being written: a worker killed at once saves nothing
            (tmp_path / f"saved-{i}").touch()
            raise
    with pytest.raises(KeyboardInterrupt):
        parallel.run_forked(job, 4, workers=2)
    assert sorted(p.name for p in tmp_path.glob("saved-*")) == ["saved-0", "saved-1"]


def test_a_job_that_would_start_after_the_signal_names_it(monkeypatch):
    """A worker signalled between two jobs starts no other: the next raises at once, Terminated after a SIGTERM (it
    raised a plain KeyboardInterrupt, and the parent said Ctrl-C), KeyboardInterrupt after a Ctrl-C."""
    import signal

    from kd_tutorial.errors import Terminated
    monkeypatch.setattr(parallel, "_JOB", lambda i: i)
    for signum, raised in ((signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)):
        monkeypatch.setattr(parallel, "_STOPPING", signum)
        with pytest.raises(KeyboardInterrupt) as stop:
            parallel._call(0)
        assert type(stop.value) is raised
    monkeypatch.setattr(parallel, "_STOPPING", False)
    assert parallel._call(3) == 3


@linux_only
def test_a_save_that_fails_after_ctrl_c_is_reported_not_swallowed(tmp_path, capsys):
    """The KeyboardInterrupt raised in the parent hid a worker's failed save (a full disk): the user was told the
    runs save their last step, and nothing said that one could not."""
    def job(i):
        try:
            _mark_started(tmp_path, i)  # inside the try: the signal may come as soon as the file is there
            time.sleep(60)
        except KeyboardInterrupt:
            raise OSError(28, "No space left on device") from None
    press = _ctrl_c_once_started(tmp_path, 2)
    with pytest.raises(KeyboardInterrupt):
        parallel.run_forked(job, 2, workers=2)
    press.join()
    err = capsys.readouterr().err
    assert err.count("stopping: a run could not save its last step: OSError: [Errno 28] No space left on") == 2


@linux_only
def test_a_job_that_will_not_stop_on_ctrl_c_is_killed_after_the_grace_period(tmp_path, monkeypatch):
    """Guards against a worker that ignores Ctrl-C keeping the parent waiting (longer than STOP_GRACE_S, or for ever):
    the grace wait reads the constant when it runs, times out with both jobs running, and the workers are killed."""
    import multiprocessing
    import signal
    before = set(multiprocessing.active_children())
    monkeypatch.setattr(parallel, "STOP_GRACE_S", 1.0)
    waits, stopped, real_stop = _grace_waits(monkeypatch), [], parallel._stop
    monkeypatch.setattr(parallel, "_stop", lambda pool, workers: (stopped.extend(workers), real_stop(pool, workers)))

    def stubborn(i):
        _mark_started(tmp_path, i)
        while True:
            try:
                time.sleep(60)
            except KeyboardInterrupt:
                pass
    press = _ctrl_c_once_started(tmp_path, 2)
    with pytest.raises(KeyboardInterrupt):
        parallel.run_forked(stubborn, 2, workers=2)
    press.join()
    assert waits == [(1.0, [], 2)]  # the patched grace period, run out with both jobs still running
    assert len(stopped) == 2 and [w.exitcode for w in stopped] == [-signal.SIGKILL] * 2
    assert set(multiprocessing.active_children()) == before


def test_workers_below_one_are_refused():
    with pytest.raises(ValueError, match="workers=0"):
        parallel.run_forked(_where, 2, workers=0)


def test_default_workers_one_per_core_on_a_small_cpu_and_one_elsewhere(monkeypatch):
    monkeypatch.setattr(parallel, "can_fork", lambda: True)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 64)
    for cores, workers in ((2, 2), (4, 4), (1, 1), (8, 1), (16, 1)):
        monkeypatch.setattr(torch, "get_num_threads", lambda: cores)  # 1: e.g. OMP_NUM_THREADS=1, as under xdist
        assert parallel.default_workers("cpu") == workers, cores  # 8 cores: measured neither way
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert parallel.default_workers("cuda") == parallel.default_workers("mps") == 1
    monkeypatch.setattr(parallel, "usable_cores", lambda: 3)  # PyTorch's 4 threads on a process pinned to 3 cores
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert parallel.default_workers("cpu") == 3  # never more than check_workers takes
    monkeypatch.setattr(parallel, "can_fork", lambda: False)
    assert parallel.default_workers("cpu") == 1


def test_workers_where_jobs_cannot_go_side_by_side_are_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(parallel, "can_fork", lambda: True)  # as on Linux
    for workers, device in ((1, "cuda:0"), (1, "cpu"), (2, "cpu")):
        parallel.check_workers(workers, device, setting="w", fix="f")  # one runs anywhere; two on a Linux CPU
    with pytest.raises(parallel.SideBySideError, match=r"^--workers 2: runs train side by side only on a CPU under "
                                                       r"Linux, not on cuda:0; leave --workers out$"):
        parallel.check_workers(2, "cuda:0", setting="--workers 2", fix="leave --workers out")
    monkeypatch.setattr(parallel, "can_fork", lambda: False)
    with pytest.raises(UserError, match=r"workers=3: .* not on \w+ \(no safe fork\); give workers=1$"):
        parallel.check_workers(3, "cpu", setting="workers=3", fix="give workers=1")


def test_forked_workers_are_offered_on_linux_only(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert not parallel.can_fork()
    with pytest.raises(RuntimeError, match="Linux"):
        parallel.run_forked(_where, 2, workers=2)


@pytest.fixture(scope="module")
def small(cut_tiny):
    """The tiny profile, cut to seconds: a briefly trained teacher and short student runs, in a private cache."""
    with cut_tiny(n_transfer=300) as built:
        yield built


def _spy_on_workers(monkeypatch) -> list:
    """Record each call of run_forked by the pipeline: (jobs, workers)."""
    calls, real = [], pipeline.run_forked

    def spy(job, n_jobs, workers, **kw):
        calls.append((n_jobs, workers))
        return real(job, n_jobs, workers, **kw)
    monkeypatch.setattr(pipeline, "run_forked", spy)
    return calls


@linux_only
def test_runs_side_by_side_give_exactly_the_models_of_runs_one_after_another(small, monkeypatch):
    profile, teacher, prep, logits = small
    kw = dict(runs=("baseline", "kd+transfer"), seeds=(0, 1), progress=False)
    calls = _spy_on_workers(monkeypatch)
    side = pipeline.distill_students(profile, teacher, prep, logits, workers=2, **kw)
    assert calls == [(4, 2)]  # trained in the workers, not here
    assert {item["status"] for item in side.values()} == {"trained"} and len(side) == 4
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' arithmetic: one thread
    try:
        alone = pipeline.distill_students(profile, teacher, prep, logits, workers=1, **kw)
    finally:
        torch.set_num_threads(threads)
    assert list(side) == list(alone)
    for name, item in side.items():
        assert item["history"].to_dict()["steps"] == alone[name]["history"].to_dict()["steps"], name
        for (p, a), b in zip(item["model"].named_parameters(), alone[name]["model"].parameters()):
            assert torch.equal(a, b), (name, p)
    again = pipeline.distill_students(profile, teacher, prep, logits, workers=2, resume=True, **kw)
    assert {item["status"] for item in again.values()} == {"cached"}
    assert calls == [(4, 2)]  # nothing left to train: no worker started


@linux_only
def test_one_run_left_to_train_trains_here_and_two_go_to_the_workers(small, monkeypatch):
    profile, teacher, prep, logits = small
    kw = dict(runs=("baseline", "kd+transfer", "pseudo-label"), seeds=(3,), progress=False)
    first = pipeline.distill_students(profile, teacher, prep, logits, workers=1, **kw)
    calls = _spy_on_workers(monkeypatch)
    for left in (["baseline"], ["baseline", "pseudo-label"]):
        for name in left:
            (Path(first[f"compact-1L-H32 {name}"]["path"]) / "history.json").unlink()  # as if interrupted
        again = pipeline.distill_students(profile, teacher, prep, logits, workers=2, resume=True, **kw)
        assert {n.split()[-1] for n, item in again.items() if item["status"] == "trained"} == set(left)
    assert calls == [(2, 2)]  # one run left: trained here (one thread, as a worker: the next test); two: side by side


@linux_only
def test_a_run_left_alone_gives_the_model_it_gets_beside_another(small):
    """With workers=2 a run's numbers must not depend on how many runs were left to train: the one run that
    --resume retrains (interrupted last, or its folder deleted) computes as a worker does, in one thread; with two
    threads its sums came in another order and, on the tiny profile, moved distil-2L's pseudo-label 1.5 points."""
    profile, teacher, prep, logits = small
    kw = dict(runs=("baseline", "kd+transfer"), seeds=(0, 1), progress=False, workers=2)  # the test above's runs
    name, threads = "compact-1L-H32 kd+transfer s1", torch.get_num_threads()
    torch.set_num_threads(2)  # a parent on 2 cores (the suite gives this process one)
    try:
        side = pipeline.distill_students(profile, teacher, prep, logits, resume=True, **kw)  # cached, or trained
        (Path(side[name]["path"]) / "history.json").unlink()  # as if interrupted: the only run left
        alone = pipeline.distill_students(profile, teacher, prep, logits, resume=True, **kw)
        assert torch.get_num_threads() == 2  # the caller's threads, given back
    finally:
        torch.set_num_threads(threads)
    assert alone[name]["status"] == "trained"
    assert alone[name]["history"].to_dict()["steps"] == side[name]["history"].to_dict()["steps"]
    for (p, a), b in zip(side[name]["model"].named_parameters(), alone[name]["model"].parameters()):
        assert torch.equal(a, b), p


@linux_only
def test_a_failing_run_in_a_worker_stops_the_pipeline_with_its_error(small, monkeypatch):
    profile, teacher, prep, logits = small
    parent = os.getpid()

    def broken(*args, **kwargs):
        raise RuntimeError(f"the loss went NaN in a worker: {os.getpid() != parent}")
    monkeypatch.setattr(pipeline, "train", broken)  # inherited by the forked workers
    with pytest.raises(RuntimeError, match="NaN in a worker: True"):
        pipeline.distill_students(profile, teacher, prep, logits, workers=2, runs=("baseline", "kd+transfer"),
                                  seeds=(5,), progress=False)


def test_runs_side_by_side_on_a_gpu_are_refused_before_any_work(small, monkeypatch, tmp_path):
    profile, teacher, prep, logits = small
    with pytest.raises(ValueError, match="workers=2: runs train side by side only on a CPU under Linux, not on "
                                         "cuda; give workers=1"):
        pipeline.distill_students(profile, teacher, prep, logits, workers=2, device="cuda", progress=False)
    monkeypatch.setattr(pipeline, "ensure_teacher", lambda *a, **k: pytest.fail("the teacher was prepared"))
    with pytest.raises(parallel.SideBySideError, match="not on cuda:0; give workers=1$"):
        pipeline.run_distill(profile, workers=2, device="cuda:0", out=tmp_path, progress=False)


@linux_only
def test_jobs_run_side_by_side_from_a_jupyter_kernel(tmp_path):
    """Notebooks 05 to 07 train their runs through run_forked from inside a kernel: the workers fork from it, and
    what they print reaches the notebook."""
    import nbformat.v4
    from nbclient import NotebookClient

    from kd_tutorial.grading.execute import kernel_manager_class
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os, torch\n"
        "from kd_tutorial import parallel\n"
        "torch.set_num_threads(2)\n"
        "(torch.randn(300, 300) @ torch.randn(300, 300)).sum()  # the kernel's own threads have run\n"
        "kernel = os.getpid()\n"
        "def job(i):\n"
        "    print(f'job {i}:', 'a worker' if os.getpid() != kernel else 'the kernel', flush=True)\n"
        "    return i * i, torch.get_num_threads()\n"
        "print(parallel.run_forked(job, 4, workers=2))")])
    client = NotebookClient(nb, timeout=120, kernel_name="kd-tutorial-grader", shutdown_kernel="immediate",
                            kernel_manager_class=kernel_manager_class(), resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.output_type == "stream")
    assert "[(0, 1), (1, 1), (4, 1), (9, 1)]" in text, text  # in order, one thread each
    assert text.count("a worker") == 4 and "the kernel" not in text, text  # the two workers' lines may interleave


def _wait_for(path: Path, seconds: float = 3.0) -> bool:
    """In a job: wait (up to ``seconds``) for the parent to create ``path``; whether it did."""
    for _ in range(round(seconds * 100)):
        if path.exists():
            return True
        time.sleep(0.01)
    return False


@linux_only
def test_the_parent_sees_each_running_jobs_steps_before_it_finishes(tmp_path, monkeypatch):
    """Side by side, a run's own bar is off: the parent polls the steps each job reports (report_step) while it
    waits, so its bar moves between two finished runs. A job reporting none (a run from the cache) is left out."""
    monkeypatch.setattr(parallel, "POLL_S", 0.02)
    seen = []

    def on_progress(steps):
        seen.append(steps)
        for index, (done, _total) in steps.items():
            if done == index + 1:
                (tmp_path / str(index)).touch()  # job index may finish: its step was seen here

    def job(index):
        if index == 2:
            return "cached"  # no steps
        parallel.report_step(index + 1, 5)
        seen_here = _wait_for(tmp_path / str(index), 30)
        parallel.report_step(5, 5)
        return seen_here

    assert parallel.run_forked(job, 3, workers=2, on_progress=on_progress) == [True, True, "cached"]
    assert {i for steps in seen for i in steps} == {0, 1}
    assert all(total == 5 for steps in seen for _done, total in steps.values())
    assert seen[-1] == {}  # all finished: no steps left to show
    parallel.report_step(1, 5)  # here, outside a worker: nothing to report to, and no error


def test_the_student_runs_bar_moves_with_the_running_runs_steps_and_never_back():
    """Between two finished runs the bar moves by the running runs' share of their steps (so its time left does
    too), a run that just ended does not pull it back before it is counted, and it ends on the number of runs."""
    import io

    from kd_tutorial.bars import progress_bar
    bar = progress_bar(total=2, desc="student runs", unit="run", file=io.StringIO(),
                       bar_format=pipeline.RUNS_BAR_FORMAT)
    on_done, on_progress = pipeline._runs_bar_callbacks(bar)
    on_progress({0: (3, 7), 1: (2, 7)})
    assert bar.n == pytest.approx(5 / 7) and "0.714/2 runs" in str(bar) and str(bar).endswith("steps 3/7, 2/7]")
    on_progress({1: (4, 7)})  # run 0 has ended; on_done counts it next
    assert bar.n == pytest.approx(5 / 7)
    on_done(0)
    assert bar.n == pytest.approx(1 + 4 / 7)
    on_progress({})
    on_done(1)
    assert bar.n == 2 and "| 2/2 runs [" in str(bar)
    bar.close()


@linux_only
def test_the_student_runs_bar_shows_the_steps_of_the_runs_training(tmp_path, monkeypatch):
    """The pipeline's 'student runs' bar counts finished runs and, between them, shows the running runs' steps."""
    import io

    from tqdm import tqdm
    monkeypatch.setattr(parallel, "POLL_S", 0.02)
    postfixes = []

    class Bar(tqdm):
        def set_postfix_str(self, s="", refresh=True):
            postfixes.append(s)
            if "3/7" in s:
                (tmp_path / "seen").touch()
            super().set_postfix_str(s, refresh)

    bars = []
    monkeypatch.setattr(pipeline, "progress_bar", lambda **kw: bars.append(Bar(file=io.StringIO(), **kw)) or bars[-1])

    def run(job, resume):
        parallel.report_step(3, 7)
        return {"status": "trained" if _wait_for(tmp_path / "seen", 30) else "not seen"}

    jobs = [{"name": f"run {i}", "online_teacher": False} for i in range(3)]
    status = pipeline._train_side_by_side(jobs, run, False, 2, True)
    assert status == {f"run {i}": "trained" for i in range(3)}
    assert bars[0].n == 3 and bars[0].total == 3
    assert "steps 3/7, 3/7" in postfixes or "steps 3/7" in postfixes
    assert postfixes[-1] == ""  # the closing line shows no steps of runs that are over
