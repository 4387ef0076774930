"""Writing safely: locks that say who holds them, leftovers cleaned up, a full disk answered in one line."""
import errno
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from kd_tutorial import store
from kd_tutorial.errors import UserError


def test_a_held_lock_names_its_holder_and_times_out_with_the_fix(tmp_path, capsys):
    held, release = threading.Event(), threading.Event()

    def holder():
        with store.locked(tmp_path):
            held.set()
            release.wait(10)
    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    try:
        with pytest.raises(store.ArtifactError) as err:
            with store.locked(tmp_path, timeout=2.5):
                pass
    finally:
        release.set()
        thread.join()
    message = str(err.value)
    assert f"process {os.getpid()} on" in message and "delete" in message and str(tmp_path / ".lock") in message
    assert f"in use by process {os.getpid()}" in capsys.readouterr().err  # said while waiting, not only at the end
    with store.locked(tmp_path, timeout=1):  # released: free again, and the owner note is gone
        assert (tmp_path / ".lock.owner").read_text().startswith(f"process {os.getpid()}")
    assert not (tmp_path / ".lock.owner").exists()


def test_a_failed_block_leaves_no_folder_it_made_holding_only_the_lock(tmp_path):
    """leave_none: a refusal inside the lock of a new --out left that folder (and its parents) with a .lock alone."""
    new = tmp_path / "a" / "b"
    with pytest.raises(KeyboardInterrupt), store.locked(new, leave_none=True):
        raise KeyboardInterrupt
    assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError), store.locked(new, leave_none=True):  # it wrote something: all stays
        (new / "results.json").write_text("{}")
        raise ValueError
    assert sorted(p.name for p in new.iterdir()) == [".lock", "results.json"]
    (new / "results.json").unlink()
    with pytest.raises(ValueError), store.locked(new, leave_none=True):  # not made by this call: it stays
        raise ValueError
    assert new.is_dir()
    with store.locked(tmp_path / "c", leave_none=True):  # a block that went through keeps its folder
        pass
    assert (tmp_path / "c").is_dir()


def test_a_run_waiting_on_a_new_folder_that_a_refused_run_removed_makes_it_again_and_goes_on(tmp_path):
    """The waiting run's lock file went with the folder: it stopped with "a folder on the way cannot be created"."""
    out, inside, outcome = tmp_path / "new", threading.Event(), []

    def refused():
        with pytest.raises(ValueError), store.locked(out, leave_none=True):
            inside.set()
            time.sleep(1.5)  # the other run is waiting by now
            raise ValueError("refused")

    def waiting():
        inside.wait()
        try:
            with store.locked(out, leave_none=True):
                (out / "results.json").write_text("{}")
            outcome.append("done")
        except Exception as err:  # noqa: BLE001 (the failure is the finding)
            outcome.append(repr(err))
    threads = [threading.Thread(target=refused), threading.Thread(target=waiting)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcome == ["done"] and (out / "results.json").exists()


def test_locking_cleans_old_leftovers_of_interrupted_writes_only(tmp_path):
    old = time.time() - 2 * store.STALE_AFTER_S
    leftovers = [tmp_path / ".model.kd-ab12cd34.tmp", tmp_path / ".teacher.kd-old",
                 tmp_path / ".logits-train.pt.kd-x1.tmp"]
    leftovers[0].mkdir()
    (leftovers[0] / "config.json").write_text("{}")
    leftovers[1].mkdir()
    leftovers[2].write_bytes(b"half")
    for path in leftovers:
        os.utime(path, (old, old))
    fresh = tmp_path / ".history.json.kd-new1.tmp"  # another process may be writing it right now
    fresh.write_text("{}")
    # not the package's: a user's files in a folder it locks (search --out), however old
    kept = [tmp_path / "logits-train.pt", tmp_path / ".lock.owner.txt", tmp_path / ".bashrc.old",
            tmp_path / ".notes.tmp"]
    for path in kept:
        path.write_text("keep")
        os.utime(path, (old, old))
    with store.locked(tmp_path):
        pass
    assert not any(p.exists() for p in leftovers)
    assert fresh.exists() and all(p.exists() for p in kept)


def test_every_temporary_name_the_package_writes_is_one_cleanup_recognises(tmp_path):
    from kd_tutorial import layer_cache
    assert store._LEFTOVER.match(layer_cache._partial(tmp_path / "hidden-3.npy").name)
    assert not store._LEFTOVER.match(".bashrc.old") and not store._LEFTOVER.match(".notes.tmp")


def _dead_pid() -> int:
    """The PID of a process that has just ended."""
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.skipif(os.name != "posix", reason="process IDs are asked after on POSIX only")
def test_a_killed_layer_passs_file_is_removed_at_once_and_only_that(tmp_path, monkeypatch):
    """A layer pass killed mid-write leaves a file of its full reserved size: a rerun within the hour must not be
    told the layers do not fit. Only a file named by a process that is gone goes at once."""
    import signal
    import subprocess
    import sys
    code = ("import sys, time, torch; from pathlib import Path; from kd_tutorial.layer_cache import LayerWriter\n"
            "w = LayerWriter({('hidden', 2): Path(sys.argv[1]) / 'hidden-2-train.npy'}, rows=50, length=64, width=32)\n"
            "w.write(('hidden', 2), torch.arange(8), torch.randn(8, 10, 32))\n"
            "print('ready', flush=True); time.sleep(60)")
    writer = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "ready\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    killed = tmp_path / f".hidden-2-train.npy.kd-pid-{writer.pid}.tmp"
    assert killed.exists() and killed.stat().st_size > 50 * 64 * 32 * 2  # its reserved size, left behind
    gone, other_user = _dead_pid(), _dead_pid()
    live = tmp_path / f".hidden-4-train.npy.kd-pid-{os.getpid()}.tmp"  # a writer that runs: kept
    random = tmp_path / f".logits-train.pt.kd-{gone}.tmp"  # mkstemp's name (random letters, digits here): kept
    for path in (live, random):
        path.write_bytes(b"x")
    with store.locked(tmp_path):
        pass
    assert not killed.exists() and live.exists() and random.exists()
    (tmp_path / f".values-4-train.npy.kd-pid-{other_user}.tmp").write_bytes(b"x")
    real_kill = os.kill

    def kill(pid, sig):  # PID reused by another user's process: not the writer of this user's file
        if pid == other_user:
            raise PermissionError(1, "Operation not permitted")
        return real_kill(pid, sig)
    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)  # another user's files: kept
    with store.locked(tmp_path):
        pass
    assert (tmp_path / f".values-4-train.npy.kd-pid-{other_user}.tmp").exists()
    monkeypatch.undo()
    monkeypatch.setattr(os, "kill", kill)
    with store.locked(tmp_path):
        pass
    assert not (tmp_path / f".values-4-train.npy.kd-pid-{other_user}.tmp").exists() and live.exists()


def test_a_full_disk_is_one_error_that_says_what_to_do_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    store.atomic_torch_save({"step": 1}, target)

    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(store.StorageError, match=r"no space left on the disk; free some space or point "
                                                 r"KD_TUTORIAL_HOME .* untouched"):
        store.atomic_torch_save({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_a_model_that_safetensors_cannot_write_for_a_full_disk_is_the_same_one_line(tmp_path, monkeypatch):
    """safetensors reports a full disk as its own SafetensorError, not an OSError: saving the teacher or a student
    on a full disk ended in its traceback."""
    class SafetensorError(Exception):  # safetensors' error type: not an OSError
        pass

    class Model(torch.nn.Linear):
        def save_pretrained(self, folder):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    target = tmp_path / "teacher"
    target.mkdir()
    (target / "config.json").write_text("{}")
    with pytest.raises(store.StorageError, match="no space left on the disk; free some space"):
        store.atomic_save_pretrained(Model(2, 2), target)
    assert [p.name for p in tmp_path.iterdir()] == ["teacher"] and (target / "config.json").read_text() == "{}"
    with pytest.raises(SafetensorError):  # one that names no system error stays what it is
        with store.disk_errors(target):
            raise SafetensorError("header too large")


def test_a_cache_folder_that_cannot_take_its_lock_is_one_line(tmp_path, monkeypatch):
    """A read-only copy of the cache (a share, a prefetched folder) failed in FileLock with a traceback, even when
    everything was cached."""
    import filelock

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".lock"))
    monkeypatch.setattr(filelock.FileLock, "acquire", read_only)
    with pytest.raises(store.StorageError, match=r"cannot write .*: read-only file system; point KD_TUTORIAL_HOME"):
        with store.locked(tmp_path):
            pass


def test_other_os_errors_are_not_disguised(tmp_path, monkeypatch):
    def broken(obj, f, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError) as err:
        store.atomic_torch_save({}, tmp_path / "x.pt")
    assert not isinstance(err.value, store.StorageError)


def test_written_files_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    mask = os.umask(0o022)
    try:
        store.atomic_write_json(tmp_path / "results.json", {"a": 1})
        store.atomic_torch_save({"a": 1}, tmp_path / "x.pt")
    finally:
        os.umask(mask)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "x.pt").stat().st_mode & 0o777 == 0o644


def test_a_home_that_is_a_file_is_one_error_naming_the_variable(tmp_path):
    """Before: the notebooks' first cached write raised NotADirectoryError (the CLI checked, the API did not)."""
    home = tmp_path / "home-is-a-file"
    home.write_text("not a folder")
    with pytest.raises(store.StorageError, match=r"a part of the path is a file, not a folder; point "
                                                 r"KD_TUTORIAL_HOME \(artifacts\)"):
        with store.locked(home / "tiny" / "abc"):
            pass
    assert home.read_text() == "not a folder"


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf"])
def test_a_lock_timeout_that_is_not_seconds_is_one_error(monkeypatch, tmp_path, value):
    monkeypatch.setenv(store.LOCK_TIMEOUT_ENV, value)
    with pytest.raises(store.ArtifactError, match=rf"KD_TUTORIAL_LOCK_TIMEOUT='{value}' is not a number of seconds"):
        with store.locked(tmp_path / "run"):
            pass


def test_a_torch_file_that_cannot_be_written_whole_is_a_storage_error_and_keeps_the_old_file(tmp_path):
    """torch.save's own writer raised a RuntimeError ('unexpected pos ...') on a full disk, which no check turned
    into the StorageError that names the fix. A file-size limit stands in for the full disk, in a child process."""
    import subprocess
    import sys
    script = (
        "import resource, signal, sys, torch\n"
        "from kd_tutorial import store\n"
        "path = sys.argv[1]\n"
        "store.atomic_torch_save(torch.zeros(4), path)\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    store.atomic_torch_save(torch.zeros(100_000), path)\n"
        "except store.StorageError as err:\n"
        "    print('StorageError:', err)\n"
    )
    path = tmp_path / "logits.pt"
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("StorageError: cannot write") and "untouched" in proc.stdout, proc.stdout
    import torch
    assert torch.equal(torch.load(path), torch.zeros(4))
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_thread_that_holds_a_lock_can_take_it_again_while_other_threads_still_wait(tmp_path):
    with store.locked(tmp_path, timeout=1):
        with store.locked(tmp_path, timeout=1):  # nested: waited out the timeout and failed before
            (tmp_path / "inner").write_text("x")
        refused = []

        def other():
            try:
                with store.locked(tmp_path, timeout=0.5):
                    pass
            except store.ArtifactError:
                refused.append(True)
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert refused == [True]  # the outer hold still excludes other threads after the inner one ended
    with store.locked(tmp_path, timeout=1):  # and it was released at the end
        pass


def test_a_pid_no_process_can_have_in_a_file_name_does_not_break_the_lock(tmp_path):
    """os.kill raised OverflowError for a PID past the C int, and every lock on the folder failed with it."""
    odd = tmp_path / f".hidden-2-train.npy.kd-pid-{2**70}.tmp"
    odd.write_bytes(b"x")
    with store.locked(tmp_path):
        pass
    assert odd.exists()  # not a name this package writes: left to the hour rule



def test_the_artifact_home_is_absolute_or_refused(tmp_path, monkeypatch):
    """A relative KD_TUTORIAL_HOME is refused (notebooks and the command line would read other folders); a relative
    XDG_CACHE_HOME is ignored, as the XDG spec says, for the same reason."""
    monkeypatch.delenv("KD_TUTORIAL_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert store.home() == tmp_path / "kd-tutorial"
    monkeypatch.setenv("XDG_CACHE_HOME", "cache")
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    assert store.home() == tmp_path / "me" / ".cache" / "kd-tutorial"
    monkeypatch.setenv("KD_TUTORIAL_HOME", "~/kd")
    assert store.home() == tmp_path / "me" / "kd"  # ~ is absolute once expanded
    monkeypatch.setenv("KD_TUTORIAL_HOME", "kd")
    with pytest.raises(store.ArtifactError, match=r'^KD_TUTORIAL_HOME=kd is a relative path, .* e\.g\. export '
                                                  r'KD_TUTORIAL_HOME="\$PWD/kd"$'):
        store.home()


def test_an_atomic_write_through_a_link_writes_the_file_it_names_and_a_link_loop_is_replaced(tmp_path):
    """A link stays a link and its file gets the text (as `report --readme` and `--summary` need); a link that
    points at itself has no file to name, so it is replaced, as before links were followed (no RuntimeError)."""
    (tmp_path / "real.json").write_text("old")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    store.atomic_write_text(tmp_path / "link.json", "new")
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "real.json").read_text() == "new"
    (tmp_path / "loop.json").symlink_to(tmp_path / "loop.json")
    store.atomic_write_text(tmp_path / "loop.json", "text")
    assert not (tmp_path / "loop.json").is_symlink() and (tmp_path / "loop.json").read_text() == "text"


def test_a_read_only_artifact_cache_that_holds_teachers_is_copied_not_left_behind(tmp_path, monkeypatch):
    """A workshop's prefetched KD_TUTORIAL_HOME on a read-only share: distill and env said to point KD_TUTORIAL_HOME
    at another folder, where every laptop trained the teacher again. (Root writes anywhere: the refusals are faked.)"""
    import tempfile

    from kd_tutorial import cli
    root = tmp_path / "shared kd"
    (root / "cpu" / "abc").mkdir(parents=True)
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(root))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == root else real_access(path, mode))

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    copy = (f"copy it where you can write, which keeps the teachers trained in it: mkdir -p ~/kd-tutorial-cache && "
            f"cp -r '{root}/.' ~/kd-tutorial-cache && chmod -R u+w ~/kd-tutorial-cache && "
            "export KD_TUTORIAL_HOME=~/kd-tutorial-cache")
    with pytest.raises(UserError) as err:
        cli.check_writable_home()
    assert str(err.value) == f"KD_TUTORIAL_HOME={root} is not a writable folder (read-only file system): {copy}"
    assert store.copy_home_fix(root) == copy
    from kd_tutorial import env, profiles
    monkeypatch.setattr(env, "hub_reachable", lambda: None)
    assert env.format_report(env.environment_report(profiles.get_profile("tiny"))).count(
        f"artifact cache:   unusable: {root} is not writable: {copy}") == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False)
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(empty))
    with pytest.raises(UserError, match=r"\(read-only file system\): point KD_TUTORIAL_HOME to a folder you can write, "
                                        r'e.g. export KD_TUTORIAL_HOME="\$HOME/kd-tutorial-cache"$'):
        cli.check_writable_home()  # nothing in it to keep
    monkeypatch.setattr(os, "access", real_access)  # a full disk, say: it can be written, and another folder will do
    assert store.copy_home_fix(root) is None


@pytest.mark.skipif(shutil.which("bash") is None or os.name != "posix", reason="runs the fix's shell command")
def test_the_copy_of_a_read_only_cache_lands_where_the_fix_points_even_into_a_folder_already_there(tmp_path,
                                                                                                   monkeypatch):
    """The fix said ``cp -r ROOT ~/kd-tutorial-cache``: where that folder was already there (made earlier, or by an
    earlier try), cp put the cache in ~/kd-tutorial-cache/<root's name>, and every teacher was trained again."""
    root = tmp_path / "shared kd"
    (root / "cpu" / "abc").mkdir(parents=True)
    (root / "cpu" / "abc" / "teacher.bin").write_text("weights")
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False)
    fix = store.copy_home_fix(root)
    home = tmp_path / "home"
    (home / "kd-tutorial-cache").mkdir(parents=True)  # already there
    command = fix.split(": ", 1)[1] + ' && printf %s "$KD_TUTORIAL_HOME"'
    done = subprocess.run(["bash", "-c", command], env={**os.environ, "HOME": str(home)}, capture_output=True,
                          text=True, check=True)
    assert (Path(done.stdout) / "cpu" / "abc" / "teacher.bin").read_text() == "weights"


def test_error_chain_walks_causes_then_contexts_once_each_even_in_a_cycle():
    """The one walk every 'is this a full disk / a cut download / SQLite refusing' check uses: the error, then
    what it was raised from (``from``), else what it was raised during, each error once, ending on a cycle."""
    from kd_tutorial.errors import error_chain
    inner, middle, outer = OSError(28, "full"), KeyError("k"), RuntimeError("wrapped")
    middle.__context__ = inner
    outer.__cause__, outer.__context__ = middle, ValueError("not followed: a cause comes first")
    inner.__context__ = outer  # a cycle
    assert list(error_chain(outer)) == [outer, middle, inner]
    assert list(error_chain(None)) == []


def test_an_atomic_writes_temporary_file_bears_the_name_clean_stale_removes(tmp_path, monkeypatch):
    """A write killed mid-way leaves its temporary file: only a name with the package's mark is ever cleaned."""
    import tempfile
    names, real = [], tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        names.append(name)
        return fd, name
    monkeypatch.setattr(store.tempfile, "mkstemp", spy)
    store.atomic_write_text(tmp_path / "notes.json", "{}")
    leftover = Path(names[0])
    leftover.write_text("half")  # what a killed write leaves, an hour and more ago
    os.utime(leftover, (time.time() - 2 * store.STALE_AFTER_S,) * 2)
    assert store.clean_stale(tmp_path) == [leftover.name] and (tmp_path / "notes.json").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="chmod modes")
def test_a_refused_write_inside_the_cache_names_chmod_which_keeps_its_teachers(tmp_path, monkeypatch):
    """A workshop's cache copied read-only, its top folder alone made writable: `kd-tutorial env` passed, and distill
    (and a notebook's first training cell) said only "point KD_TUTORIAL_HOME ... to a writable folder", which trains
    the teacher again. Inside the cache the fix now names `chmod -R u+w` on it; outside it, as before."""
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "cache"))
    inside = tmp_path / "cache" / "tiny" / "abc"
    with pytest.raises(store.StorageError) as caught:
        with store.disk_errors(inside):
            raise PermissionError(errno.EACCES, "Permission denied", str(inside / ".lock"))
    assert str(caught.value) == (f"cannot write {inside}: permission denied; make the artifact cache writable, which "
                                 f"keeps the teachers trained in it: chmod -R u+w {tmp_path / 'cache'}, or point "
                                 "KD_TUTORIAL_HOME (artifacts) or --out (results) to a writable folder on a disk with "
                                 "room; what was there before is untouched")
    outside = tmp_path / "run"
    with pytest.raises(store.StorageError) as caught:
        with store.disk_errors(outside):
            raise PermissionError(errno.EACCES, "Permission denied", str(outside))
    assert "chmod" not in str(caught.value) and "permission denied; point KD_TUTORIAL_HOME" in str(caught.value)


def test_a_cache_whose_inner_folders_are_read_only_is_unusable_with_chmod_as_its_fix(tmp_path, monkeypatch, capsys):
    """A workshop's cache copied read-only, its top folder alone made writable again: `kd-tutorial env` and
    env.setup() called it usable, and distill stopped at the teacher's folder. Both now name it, with chmod."""
    from kd_tutorial import env
    root = tmp_path / "cache"
    stuck = root / "tiny" / "abc"
    (stuck / "teacher").mkdir(parents=True)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == stuck else real_access(p, mode, **kw))
    assert store.cache_problem(root) == (f"{stuck} is not writable", "make the artifact cache writable, which keeps "
                                         f"the teachers trained in it: chmod -R u+w {root}")
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(root))
    assert env.environment_report()["artifact_home_problem"] == f"{stuck} is not writable"
    env.setup("tiny")
    said = capsys.readouterr().out
    assert f"artifact cache unusable: {stuck} is not writable: make the artifact cache writable" in said
    monkeypatch.setattr(os, "access", real_access)
    assert store.cache_problem(root) is None
