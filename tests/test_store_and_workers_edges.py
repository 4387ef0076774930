"""Edges of writing safely (kd_tutorial.store) and of runs side by side (kd_tutorial.parallel) that the main tests
leave open: a write replaces the file rather than writing into it, a lock is held and given back as it says, and the
workers are as many as the jobs need, hand back results in job order and stop at once, leaving the caller's own
processes alone."""
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kd_tutorial import parallel, store

linux_only = pytest.mark.skipif(not parallel.can_fork(), reason="forked workers run on Linux only")
posix_only = pytest.mark.skipif(os.name != "posix", reason="flock, hard links and fork are POSIX")


def _another_process_can_take(lock_file: Path) -> bool:
    """Whether a separate process gets the lock on ``lock_file`` at once (it lets go again straight after)."""
    code = ("import sys; from filelock import FileLock, Timeout\n"
            "try:\n    FileLock(sys.argv[1]).acquire(timeout=0)\nexcept Timeout:\n    sys.exit(3)\n")
    done = subprocess.run([sys.executable, "-c", code, str(lock_file)], capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 3), done.stderr
    return done.returncode == 0


# store


@posix_only
def test_an_atomic_write_replaces_the_file_and_never_writes_into_the_one_in_place(tmp_path):
    """A reader that has the old file (open, or a hard link to it) keeps reading the old text whole."""
    path, alias = tmp_path / "results.json", tmp_path / "reader-view.json"
    store.atomic_write_text(path, "old\n")
    os.link(path, alias)
    store.atomic_write_json(path, {"new": 1})
    assert alias.read_text() == "old\n" and path.read_text() == '{\n  "new": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reader-view.json", "results.json"]


class _Saved(torch.nn.Linear):
    """A model whose save_pretrained writes one file holding ``text``."""

    def __init__(self, text: str):
        super().__init__(1, 1)
        self.text = text

    def save_pretrained(self, folder):
        (Path(folder) / "config.json").write_text(self.text)


@posix_only
def test_a_model_saved_over_another_leaves_only_the_new_folder_with_the_usual_permissions(tmp_path):
    target = tmp_path / "teacher"
    mask = os.umask(0o022)
    try:
        store.atomic_save_pretrained(_Saved("first"), target)
        store.atomic_save_pretrained(_Saved("second"), target)
    finally:
        os.umask(mask)
    assert [p.name for p in tmp_path.iterdir()] == ["teacher"]  # no .teacher.kd-old, no temporary folder
    assert (target / "config.json").read_text() == "second"
    assert target.stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700: others on the machine may read the cache


def test_cleanup_never_takes_a_users_file_whose_name_only_begins_like_a_leftover(tmp_path):
    old = time.time() - 2 * store.STALE_AFTER_S
    kept = [tmp_path / ".plan.kd-old.txt", tmp_path / ".notes.kd-draft.tmp.bak"]
    for path in kept:
        path.write_text("keep")
        os.utime(path, (old, old))
    with store.locked(tmp_path):
        pass
    assert all(p.exists() for p in kept)


@posix_only
def test_the_lock_is_free_for_another_process_once_a_block_ends_even_a_failed_one(tmp_path):
    with store.locked(tmp_path):
        assert not _another_process_can_take(tmp_path / ".lock")
    assert _another_process_can_take(tmp_path / ".lock")
    with pytest.raises(ValueError), store.locked(tmp_path):
        raise ValueError("refused")
    assert _another_process_can_take(tmp_path / ".lock")


@posix_only
def test_a_second_block_in_the_same_thread_takes_the_lock_again(tmp_path):
    """A finished block must not leave this thread marked as holding the lock: the next would go straight in."""
    with store.locked(tmp_path):
        pass
    with store.locked(tmp_path):
        assert not _another_process_can_take(tmp_path / ".lock")


@linux_only
def test_a_forked_child_waits_for_its_parents_lock_rather_than_going_straight_in(tmp_path):
    with store.locked(tmp_path):
        child = os.fork()
        if child == 0:  # the child: exit 0 when refused after waiting, 1 when let in
            code = 1
            try:
                with store.locked(tmp_path, timeout=0.5):
                    pass
            except store.ArtifactError:
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_lock_timeout_of_zero_seconds_is_taken(monkeypatch, tmp_path):
    """The message asks for a number >= 0: zero (do not wait) is one."""
    monkeypatch.setenv(store.LOCK_TIMEOUT_ENV, "0")
    assert store.lock_timeout() == 0
    with store.locked(tmp_path / "run"):
        pass


# workers


def _square(index):
    return index * index


def test_worker_threads_sets_one_thread_only_side_by_side_and_gives_the_count_back():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with parallel.worker_threads(1):
            assert torch.get_num_threads() == 2  # one worker: the block runs as it is
        with parallel.worker_threads(2):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_workers_on_any_device_but_the_cpu_are_refused(monkeypatch):
    monkeypatch.setattr(parallel, "can_fork", lambda: True)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 8)
    for device in ("mps", "xpu", "cuda:1"):
        with pytest.raises(parallel.SideBySideError, match=f"not on {device}; f$"):
            parallel.check_workers(2, device, setting="w", fix="f")


def test_usable_cores_are_those_the_process_may_run_on_not_all_the_machines(monkeypatch):
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this system")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert parallel.usable_cores() == 1


@linux_only
def test_no_more_workers_start_than_there_are_jobs_and_no_jobs_give_no_results(monkeypatch):
    from concurrent.futures import ProcessPoolExecutor
    sizes = []

    class Pool(ProcessPoolExecutor):
        def __init__(self, max_workers, **kwargs):
            sizes.append(max_workers)
            super().__init__(max_workers, **kwargs)
    monkeypatch.setattr(parallel, "ProcessPoolExecutor", Pool)
    assert parallel.run_forked(_square, 2, workers=4) == [0, 1]
    assert sizes == [2]
    assert parallel.run_forked(_square, 0, workers=2) == []


@linux_only
def test_results_come_back_in_job_order_when_a_later_job_finishes_first(tmp_path):
    seen = tmp_path / "parent-saw-1"

    def job(index):
        if index == 0:  # finishes only once the parent has collected job 1
            for _ in range(3000):
                if seen.exists():
                    break
                time.sleep(0.01)
        return f"job {index}"
    finished = []

    def on_done(index):
        finished.append(index)
        if index == 1:
            seen.touch()
    assert parallel.run_forked(job, 2, workers=2, on_done=on_done) == ["job 0", "job 1"]
    assert finished == [1, 0]


@linux_only
def test_a_failing_job_stops_the_others_at_once_rather_than_letting_them_finish(tmp_path):
    def job(index):
        if index == 1:
            for _ in range(3000):
                if (tmp_path / "started-0").exists():
                    break
                time.sleep(0.01)
            raise ValueError("job 1 broke")
        (tmp_path / "started-0").touch()
        time.sleep(20)  # a long run: killed long before this ends
        (tmp_path / "finished-0").touch()
    with pytest.raises(ValueError, match="job 1 broke"):
        parallel.run_forked(job, 2, workers=2)
    assert (tmp_path / "started-0").exists() and not (tmp_path / "finished-0").exists()


@linux_only
def test_a_failing_job_leaves_the_callers_own_child_processes_running():
    context = multiprocessing.get_context("fork")
    told, tell = context.Pipe(duplex=False)
    own = context.Process(target=told.poll, args=(60,), daemon=True)  # ends by itself (exit code 0) once told
    own.start()
    try:
        with pytest.raises(ValueError, match="job 1 broke"):
            parallel.run_forked(_one_breaks, 2, workers=2)
    finally:
        tell.send("end")
        own.join(60)
    assert own.exitcode == 0  # not killed (-9) with the workers


def _one_breaks(index):
    if index == 1:
        raise ValueError("job 1 broke")
    return index
