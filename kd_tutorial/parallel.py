"""Independent CPU jobs side by side, in forked worker processes of one thread each.

Why: a small model's training step keeps two cores only partly busy. Some of its work runs in one thread
whatever ``torch.set_num_threads`` says (a dropout mask is drawn one element at a time on CPUs whose vendor is not
Intel), and small matrix products gain little from a second thread. With two student runs side by side, one thread
each, the ``tiny`` profile's students took 1.4 to 1.7 times less time on 2 cores, and a training step of the ``cpu``
profile's students 1.3 to 1.5 times less (docs/tuning.md, "Two runs at a time").

Why fork, and why one thread: a forked child starts at once with the parent's models and data (no import, no
copy until written). But GNU OpenMP, which PyTorch's CPU kernels use on Linux, hangs in a forked child that asks
for more than one thread once the parent has used its own. So each child runs one thread, and this runs only
where ``fork`` is safe to use: Linux. Elsewhere, and on a GPU, jobs run one after another
(:func:`default_workers`).

A leaf module: it knows nothing of students or recipes; :func:`kd_tutorial.pipeline.distill_students` uses it.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

MAX_AUTO_WORKERS = 4  # each worker holds its own student, optimizer state and activations


def can_fork() -> bool:
    """True where forked workers are safe here: Linux (macOS and Windows start workers by re-importing)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def default_workers(device: str, jobs: int) -> int:
    """How many jobs to run at once: one per core PyTorch may use, at most :data:`MAX_AUTO_WORKERS` and
    ``jobs``, on a CPU where :func:`can_fork`; otherwise 1."""
    import torch
    if device != "cpu" or not can_fork():
        return 1
    return max(1, min(torch.get_num_threads(), MAX_AUTO_WORKERS, jobs))


_JOB = None  # the job function, handed to the forked children by inheritance (it need not be picklable)


def _one_thread() -> None:
    import torch
    torch.set_num_threads(1)


def _call(index: int):
    return _JOB(index)


def run_forked(job, n_jobs: int, workers: int, on_done=None) -> list:
    """``[job(0), ..., job(n_jobs - 1)]``, computed ``workers`` at a time in forked processes of one thread each.

    ``job`` may be any callable (a closure over models and data is fine: the children inherit it). Its results
    must pickle. ``on_done(index)`` is called in this process as each job finishes. An exception in a job, or an
    interruption (Ctrl-C), stops every child at once and is raised here.
    """
    global _JOB
    if workers < 1:
        raise ValueError(f"workers={workers}: give a whole number >= 1")
    if not can_fork():
        raise RuntimeError("forked workers need Linux: run the jobs one after another (workers=1)")
    _JOB, results = job, [None] * n_jobs
    quiet = "TOKENIZERS_PARALLELISM" not in os.environ  # the tokenizers library warns in each child otherwise
    if quiet:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    others = set(multiprocessing.active_children())  # the caller's own children, left alone
    pool = ProcessPoolExecutor(min(workers, n_jobs) or 1, mp_context=multiprocessing.get_context("fork"),
                               initializer=_one_thread)
    try:
        pending = {pool.submit(_call, i): i for i in range(n_jobs)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                results[index] = future.result()  # a job's exception is raised here
                if on_done is not None:
                    on_done(index)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        for child in set(multiprocessing.active_children()) - others:  # the workers: their writes are atomic
            child.kill()
            child.join(timeout=10)
        raise
    finally:
        _JOB = None
        if quiet:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
    pool.shutdown()
    return results
