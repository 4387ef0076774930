"""Independent CPU jobs side by side, in forked worker processes of one thread each.

Why: a small model's training step keeps two cores only partly busy. Some of its work runs in one thread
whatever ``torch.set_num_threads`` says (a dropout mask is drawn one element at a time on CPUs whose vendor is not
Intel), and small matrix products gain little from a second thread. With two student runs side by side, one thread
each, the ``tiny`` profile's students took 1.6 to 1.7 times less time on 2 cores, and a training step of the ``cpu``
profile's students 1.2 to 1.4 times less, 1.16 to 1.17 with an online teacher (docs/tuning.md, "Two runs at a time").

Why fork, and why one thread: a forked child starts at once with the parent's models and data (no import, no
copy until written). But GNU OpenMP, which PyTorch's CPU kernels use on Linux, hangs in a forked child that asks
for more than one thread once the parent has used its own. So each child runs one thread, and this runs only
where ``fork`` is safe to use: Linux. Elsewhere, and on a GPU, jobs run one after another
(:func:`default_workers`). Measured on 2 cores only, so by default this runs side by side only where one worker per
core needs at most :data:`MAX_AUTO_WORKERS` of them: a machine with more cores keeps its runs one after another, each
using every core, unless asked (``--workers``).

A leaf module: it knows nothing of students or recipes; :func:`kd_tutorial.pipeline.distill_students` uses it.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from .errors import Terminated, UserError

MAX_AUTO_WORKERS = 4  # each worker holds its own student, optimizer state and activations


class WorkerDiedError(UserError, RuntimeError):
    """A worker process ended without finishing its job (killed by the system, often for lack of memory)."""


class SideBySideError(UserError, ValueError):
    """Jobs asked to run side by side where they cannot: on a GPU, or where fork is not safe."""


def can_fork() -> bool:
    """True where forked workers are safe here: Linux (macOS and Windows start workers by re-importing)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def default_workers(device: str) -> int:
    """How many jobs to run at once: one per core PyTorch may use, on a CPU where :func:`can_fork` and when that is
    2 to :data:`MAX_AUTO_WORKERS` cores; otherwise 1."""
    import torch
    cores = min(torch.get_num_threads(), usable_cores())  # never more than check_workers takes
    if device != "cpu" or not can_fork() or not 2 <= cores <= MAX_AUTO_WORKERS:
        return 1
    return cores


@contextlib.contextmanager
def worker_threads(workers: int):
    """Where runs go side by side (``workers`` > 1), compute in the block as a worker does: one thread (the caller's
    count comes back after). Two threads sum in another order, and over a run's steps that moves its numbers: a run
    left to train alone (``--resume`` after Ctrl-C, one run missing) must give what it gives beside another.
    With one worker the block runs as it is."""
    import torch
    before = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it, else every core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_workers(workers: int, device: str, *, setting: str, fix: str) -> None:
    """Raise :class:`SideBySideError` (one line: ``setting``, why, then ``fix``) when ``workers`` > 1 cannot run
    here: on a GPU (its runs share one device), where :func:`can_fork` is false, or above the cores this process
    may use (each worker computes in one thread: more only slow every run, and each holds a run's memory). One
    worker runs anywhere."""
    if workers > 1 and (device != "cpu" or not can_fork()):
        where = f"on {device}" if device != "cpu" else f"on {sys.platform} (no safe fork)"
        raise SideBySideError(f"{setting}: runs train side by side only on a CPU under Linux, not {where}; {fix}")
    if workers > 1 and workers > (cores := usable_cores()):
        given = "--workers N" if setting.startswith("--") else "workers=N"
        raise SideBySideError(f"{setting}: this process may use {cores} CPU core(s) and each worker computes in one "
                              "thread, so more workers than cores slow every run, and each holds a run's memory; "
                              + (f"give {given} with N <= {cores}" if cores > 1 else fix))


_JOB = None  # the job function, handed to the forked children by inheritance (it need not be picklable)
# on Ctrl-C or SIGTERM, how long the workers get to save their runs' last completed step (the parent waits only as
# long as the saves take): two full-profile distil-6L checkpoints (1.07 GB each) written side by side took up to
# 20.0 s on a busy 2-core machine (docs/tuning/stop-save-times.json), so 20 s cut them short there
STOP_GRACE_S = 60.0
_RUNNING = False  # in a worker: a job is running (Ctrl-C interrupts it)
_STOPPING = False  # in a worker: the signal once Ctrl-C came (no other job starts; another does not cut the save short)
POLL_S = 1.0  # while jobs run, how often the parent reads their steps (:func:`report_step`) for ``on_progress``
_STEPS = None  # (done, total) per job, in memory shared with the forked children (a RawArray, made before the fork)
_INDEX = None  # in a worker: the index of the job it runs (its slot in _STEPS)


def _worker_setup(parent: int) -> None:
    """In each worker: one thread; die with the parent (``parent``: its PID, taken before the fork), at once if
    it is gone already; Ctrl-C interrupts the running job once (:func:`_on_interrupt`); a progress-bar lock of its
    own (the inherited one may be held by a killed sibling)."""
    global _RUNNING, _STOPPING
    _RUNNING = _STOPPING = False
    signal.signal(signal.SIGINT, _on_interrupt)
    import torch
    from tqdm import tqdm
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: killed when the parent dies, even by SIGKILL
    if os.getppid() != parent:  # it died before the line above: nothing would stop this orphan running jobs
        os._exit(1)
    torch.set_num_threads(1)
    tqdm.set_lock(threading.RLock())


def _on_interrupt(signum, frame) -> None:
    """A worker's Ctrl-C (from the terminal, or passed on by the parent): a KeyboardInterrupt in the running job,
    which saves its last completed step as a run one after another does; only the first (the terminal's and the
    parent's both come), and no job starts after it. A SIGTERM handed on as Ctrl-C
    (:func:`kd_tutorial.cli.sigterm_as_ctrl_c`, inherited) raises :class:`Terminated`, so that the parent, which
    may read the job's exception before its own signal, names the signal that came."""
    global _STOPPING
    if _STOPPING:
        return
    _STOPPING = signum  # the signal, for the jobs that would start after it (_call)
    if _RUNNING:
        raise _interruption(signum)


def _interruption(signum: int) -> KeyboardInterrupt:
    """What a job stopped by ``signum`` raises: :class:`Terminated` for a SIGTERM, else a KeyboardInterrupt."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _call(index: int):
    """One job in a child. An exception that would not survive the trip back (one that pickles but cannot be
    rebuilt breaks the whole pool, which then reads as a dead worker) comes back as a RuntimeError with its text.
    After Ctrl-C no job starts: each raises KeyboardInterrupt at once."""
    global _RUNNING, _INDEX
    _RUNNING, _INDEX = True, index
    try:
        if _STOPPING:
            raise _interruption(_STOPPING)
        return _JOB(index)
    except Exception as exc:  # noqa: BLE001 - re-raised, as itself whenever it can travel
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # noqa: BLE001 - any failure to round-trip
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
        raise
    finally:
        _RUNNING, _INDEX = False, None


def report_step(done: int, total: int) -> None:
    """In a job that :func:`run_forked` runs: it has done ``done`` of its ``total`` steps (the parent's
    ``on_progress`` shows them). Anywhere else (a job run one after another, say) it does nothing."""
    if _STEPS is not None and _INDEX is not None:
        _STEPS[2 * _INDEX], _STEPS[2 * _INDEX + 1] = done, total


def _collect(pending: dict, results: list, on_done, on_progress) -> None:
    """Wait for the ``pending`` futures (future: job index), filling ``results``: every :data:`POLL_S` seconds and as
    jobs finish, ``on_progress`` with the steps of the jobs still running that have reported any
    (:func:`report_step`), ``{index: (done, total)}`` (``{}`` at the end), then ``on_done(index)`` for each job
    finished."""
    while pending:
        done, _ = wait(pending, timeout=POLL_S if on_progress is not None else None, return_when=FIRST_COMPLETED)
        finished = []
        for future in done:
            finished.append(pending.pop(future))
            results[finished[-1]] = future.result()  # a job's exception is raised here
        if on_progress is not None:
            steps = {i: (_STEPS[2 * i], _STEPS[2 * i + 1]) for i in sorted(pending.values())}
            on_progress({i: step for i, step in steps.items() if step[1] > 0})
        for index in finished if on_done is not None else ():
            on_done(index)


def run_forked(job, n_jobs: int, workers: int, on_done=None, on_progress=None) -> list:
    """``[job(0), ..., job(n_jobs - 1)]``, computed ``workers`` at a time in forked processes of one thread each.

    ``job`` may be any callable (a closure over models and data is fine: the children inherit it). Its results
    must pickle. ``on_done(index)`` is called in this process as each job finishes, and ``on_progress`` every
    :data:`POLL_S` seconds with the steps the running jobs report (:func:`_collect`, :func:`report_step`). An
    exception in a job stops every worker at once and is raised here; Ctrl-C too, once the jobs running have had
    :data:`STOP_GRACE_S` seconds to save (each gets a KeyboardInterrupt); a worker that dies raises
    :class:`WorkerDiedError`.
    """
    global _JOB, _STEPS
    if workers < 1:
        raise ValueError(f"workers={workers}: give a whole number >= 1")
    if not can_fork():
        raise RuntimeError("forked workers need Linux: run the jobs one after another (workers=1)")
    if _JOB is not None:
        raise RuntimeError("run_forked is already running: a job may not start workers of its own")
    quiet = "TOKENIZERS_PARALLELISM" not in os.environ  # the tokenizers library warns in each child otherwise
    others = set(multiprocessing.active_children())  # the caller's own children, left alone
    pool, workers_started, results, pending = None, set(), [None] * n_jobs, {}
    try:  # all the setup inside: a pool that cannot start (no /dev/shm) or a Ctrl-C here must undo it too
        _JOB, _STEPS = job, multiprocessing.get_context("fork").RawArray("q", 2 * n_jobs)
        if quiet:
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        pool = ProcessPoolExecutor(min(workers, n_jobs) or 1, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_worker_setup, initargs=(os.getpid(),))
        for i in range(n_jobs):  # one at a time: a Ctrl-C among the submits leaves those made to wait on (all but
            pending[pool.submit(_call, i)] = i  # one landing between a submit and this assignment: a bytecode's width)
        workers_started = set(multiprocessing.active_children()) - others  # all forked at the first submit
        _collect(pending, results, on_done, on_progress)
        pool.shutdown()
    except BrokenProcessPool:
        _stop(pool, workers_started or set(multiprocessing.active_children()) - others)
        raise WorkerDiedError("a worker process died before its run finished (killed by the system, often for lack "
                              "of memory): run again with --workers 1 and --resume (in Python: workers=1, resume=True) "
                              "to keep the finished runs") from None
    except BaseException as err:
        if pool is not None:
            started = workers_started or set(multiprocessing.active_children()) - others
            if isinstance(err, KeyboardInterrupt):
                _interrupt(pool, started, pending, "SIGTERM" if isinstance(err, Terminated) else "Ctrl-C")
            else:
                _stop(pool, started)
        raise
    finally:
        _JOB = _STEPS = None
        if quiet:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
    return results


def _interrupt(pool: ProcessPoolExecutor, workers: set, pending: dict, by: str = "Ctrl-C") -> None:
    """Ctrl-C or SIGTERM (``by``): cancel the jobs not started, pass Ctrl-C on to the workers, and give the jobs
    they run up to :data:`STOP_GRACE_S` seconds to save their last completed step; then stop them (the same signal
    again: at once)."""
    for future in pending:
        future.cancel()
    print(f"stopping{' on SIGTERM' if by == 'SIGTERM' else ''}: the runs in progress save their last completed step, "
          "or keep the run finished before where they train one again "
          f"(up to {STOP_GRACE_S:.0f} s; {by} again to stop them now)", file=sys.stderr, flush=True)
    try:
        for worker in workers:
            with contextlib.suppress(OSError):
                os.kill(worker.pid, signal.SIGINT)
        done, _ = wait([f for f in pending if not f.cancelled()], timeout=STOP_GRACE_S)
        for future in done:  # a save that failed (a full disk, say) must not vanish behind the KeyboardInterrupt
            error = future.exception()
            if error is not None and not isinstance(error, KeyboardInterrupt):
                print(f"stopping: a run could not save its last step: {type(error).__name__}: {error}",
                      file=sys.stderr, flush=True)
    finally:
        _stop(pool, workers)


def _stop(pool: ProcessPoolExecutor, workers: set) -> None:
    """Kill the workers now and wait for the pool to reap them (their writes are atomic: nothing is left
    half-written); jobs not started are cancelled."""
    for worker in workers:
        worker.kill()
    pool.shutdown(wait=True, cancel_futures=True)  # its own thread reaps them: joining here too races with it
