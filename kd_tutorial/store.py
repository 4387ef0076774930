"""Where things live on disk, and writing them safely: the artifact root, file locks, atomic writes.

A leaf module: it imports nothing of the package but the error base class. Everything is written to a
temporary name (ending in ``.tmp``) and renamed into place, so an interrupted run
never leaves a half-written file behind; a file lock lets two processes ask for the
same artifact at once (one builds it, the other waits, and says for whom). A full
disk or a read-only folder is one :class:`StorageError` that says what to do, and
leaves what was there before untouched.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from .errors import (DISK_FULL, error_chain, held_open_fix, not_utf8, NOT_UTF8_FIX, set_env_command, stray_quotes,
                     stray_space, UserError)

HOME_ENV = "KD_TUTORIAL_HOME"
LOCK_TIMEOUT_ENV = "KD_TUTORIAL_LOCK_TIMEOUT"  # seconds to wait for another process's lock (default an hour)
STALE_AFTER_S = 3600  # leftovers of an interrupted write older than this are removed when the folder is locked
MARK = "kd-"  # in the name of every temporary file and folder the package writes, so cleanup never takes another's
_LEFTOVER = re.compile(rf"^\..+\.{MARK}(?:[^.]+\.tmp|old)$")
# a file that one process writes for its whole life holding the folder's lock, named by that process, its host and
# its PID namespace where known (layer_cache's ``.NAME.kd-pid-PID@HOST_nsN.tmp``; before them ``.NAME.kd-pid-PID.tmp``;
# mkstemp's random part never holds a "-")
_BY_PROCESS = re.compile(rf"^\..+\.{MARK}pid-(\d+)(?:@([A-Za-z0-9-]+)(?:_ns(\d+))?)?\.tmp$")
_DISK_ERRORS = {errno.ENOSPC: "no space left on the disk", errno.EDQUOT: "disk quota exceeded",
                errno.EACCES: "permission denied", errno.EROFS: "read-only file system",
                errno.EPERM: "operation not permitted",
                errno.ENOTDIR: "a part of the path is a file, not a folder",
                errno.ENOENT: "a folder on the way cannot be created",
                errno.EFBIG: "the file is larger than a limit on this system allows",
                errno.EISDIR: "a folder stands where the file goes"}
_HELD: set[tuple[int, int, str]] = set()  # (process, thread, lock file) of every lock this process holds


class ArtifactError(UserError, RuntimeError):
    """A cached artifact cannot be read or written; the message says what to do."""


class StorageError(ArtifactError):
    """A write failed for a reason of the disk (full, read-only, not ours); nothing was overwritten."""


def home() -> Path:
    """The artifact root: ``$KD_TUTORIAL_HOME``, else ``$XDG_CACHE_HOME/kd-tutorial``, else ``~/.cache/kd-tutorial``.

    A relative ``$KD_TUTORIAL_HOME`` is refused: notebooks run in ``notebooks/`` and the command line wherever it is
    typed, so each would find another cache, and retrain what the other trained."""
    if os.environ.get(HOME_ENV):
        value = os.environ[HOME_ENV]
        meant = stray_quotes(value)
        if meant:
            raise ArtifactError(f"{HOME_ENV}={value} holds the quote marks typed around the path (cmd's set keeps "
                                f"them, and a backslash before a closing quote escapes it): set it to the path alone, "
                                f"e.g. {set_env_command(HOME_ENV, meant)}")
        shown, meant = not_utf8(value), stray_space(value)
        if shown or meant:
            said = (f"{shown} {NOT_UTF8_FIX}" if shown else f"{value!r} starts or ends with a space, and names no "
                    f"folder: set it to the path alone, e.g. {set_env_command(HOME_ENV, meant)}")
            raise ArtifactError(f"{HOME_ENV}={said}")
        path = Path(value).expanduser()
        if not path.is_absolute():
            raise ArtifactError(f"{HOME_ENV}={value} is a relative path, which notebooks (run in notebooks/) and the "
                                f"command line would each read from another folder: give an absolute one, e.g. "
                                f"{set_env_command(HOME_ENV, value, 'PWD')}")
        return path
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    cache = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # the XDG spec: ignore a relative one
    return cache / "kd-tutorial"


def copy_home_fix(root: Path) -> str | None:
    """The fix for an artifact cache ``root`` that holds artifacts and refuses writes (a workshop's prefetched copy
    on a read-only share, or one copied with read-only modes): copy it and make the copy writable, which keeps the
    teachers trained in it, where pointing ``$KD_TUTORIAL_HOME`` at another folder would train them again. None for
    any other folder (an empty one, a full disk): another folder will do."""
    try:
        holds = Path(root).is_dir() and any(Path(root).iterdir()) and not os.access(root, os.W_OK | os.X_OK)
    except OSError:
        return None
    target = "~/kd-tutorial-cache"  # its contents copied ("root/."): into a folder already there, cp -r root nests it
    return (f"copy it where you can write, which keeps the teachers trained in it: mkdir -p {target} && cp -r "
            f"{shlex.quote(os.path.join(str(root), '.'))} {target} && chmod -R u+w {target} && export "
            f"{HOME_ENV}={target}") if holds else None


LOW_ROOM_MB = 512  # below this much free space a folder cannot hold files: a teacher's checkpoint would not fit


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` could not hold files, judged without creating anything: None when it (or the nearest
    existing folder above it, where it would be created) is a folder this process can write, on a disk with
    :data:`LOW_ROOM_MB` free."""
    path = Path(folder).expanduser().absolute()
    while not path.exists() and path != path.parent:
        if path.is_symlink():
            return f"{path} is a broken link"
        path = path.parent
    if not path.is_dir():
        return f"{path} is a file, not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    free_mb = shutil.disk_usage(path).free / 2**20
    return f"only {free_mb:.0f} MB free on the disk of {path}" if free_mb < LOW_ROOM_MB else None


def cache_problem(root: Path) -> tuple[str, str | None] | None:
    """Why the artifact cache ``root`` cannot be used, and its fix where one keeps its teachers: :func:`folder_problem`
    of ``root`` (fix :func:`copy_home_fix`), else a profile's folder or a teacher's inside it that this process
    cannot write (a copy made with read-only modes, its top folder alone made writable), fixed by ``chmod -R u+w``.
    None when it can be used. Judged without creating anything."""
    problem = folder_problem(root)
    if problem:
        return problem, copy_home_fix(root)
    try:
        inner = [p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")]
        inner += [q for p in inner for q in p.iterdir() if q.is_dir() and not q.name.startswith(".")]
    except OSError:
        return None
    stuck = next((p for p in inner if not os.access(p, os.W_OK | os.X_OK)), None)
    if stuck is None:
        return None
    return f"{stuck} is not writable", chmod_home_fix(root)


def chmod_home_fix(root: Path) -> str:
    """The fix for an artifact cache whose modes refuse writes (a workshop's copy made read-only): make it writable,
    which keeps the teachers trained in it, where pointing ``$KD_TUTORIAL_HOME`` elsewhere trains them again."""
    return ("make the artifact cache writable, which keeps the teachers trained in it: chmod -R u+w "
            f"{shlex.quote(str(root))}")


@contextlib.contextmanager
def locked(directory: Path, timeout: float | None = None, *, instead: str | None = None, name: str = ".lock",
           what: str | None = None, leave_none: bool = False):
    """Hold ``directory/<name>`` (a cross-process file lock, ``.lock`` unless named) for the duration of the block.

    When another process holds it, say which one and wait, at most ``timeout`` seconds
    (``$KD_TUTORIAL_LOCK_TIMEOUT``, default an hour); then an :class:`ArtifactError`
    names the holder and how to clear a lock whose process is gone. ``instead``: what the user may do rather than
    wait (``"give another --out"``), and ``what``: what is locked (default ``directory``), both said in either.
    The lock is the system's (``flock``): a process that dies, even by SIGKILL, releases it, and the lock file it
    leaves blocks nobody. Once held, the leftovers of interrupted writes in ``directory`` are cleaned up
    (:func:`clean_stale`).
    A thread that already holds the lock (a nested call) goes straight in; other threads and
    processes, forked ones included, wait as any other holder's would. ``leave_none``: a block that fails (a refusal,
    Ctrl-C) in a folder this call created, and wrote nothing there, leaves no folder holding only the lock file.
    """
    directory = Path(directory)
    made = [p for p in (directory, *directory.parents) if not p.exists()] if leave_none else []  # deepest first
    with disk_errors(directory):
        directory.mkdir(parents=True, exist_ok=True)
    mine = (os.getpid(), threading.get_ident(), str(directory.resolve() / name))
    if mine in _HELD:  # held by this very thread already (a nested call): waiting on ourselves would never end
        yield
        return
    lock, owner = FileLock(str(directory / name)), directory / f"{name}.owner"
    timeout = lock_timeout() if timeout is None else timeout
    try:
        with disk_errors(directory):  # a read-only copy of the cache cannot take its lock
            _acquire(lock, directory, min(2.0, timeout))
    except Timeout:
        print(f"waiting for {what or directory}: in use by {_holder(owner)}"
              + (f"; going on when it ends (or press Ctrl-C and {instead})" if instead else ""),
              file=sys.stderr, flush=True)
        try:
            _acquire(lock, directory, max(0.0, timeout - 2.0))
        except Timeout:
            raise ArtifactError(f"{what or directory} has been in use by {_holder(owner)} for over {timeout:.0f} s: "
                                f"let it finish, {instead + ', ' if instead else ''}or if that process no longer runs, "
                                f"delete {directory / name}") from None
    _HELD.add(mine)
    try:
        with contextlib.suppress(OSError):
            owner.write_text(f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}")
        clean_stale(directory)
        yield
        made = []  # the block went through: what it made stays
    except BaseException:
        made = _unmade(made, name) if made else []
        raise
    finally:
        _HELD.discard(mine)
        with contextlib.suppress(OSError):
            owner.unlink()
        lock.release()
        for folder in made:  # those a failed block left holding only the lock file
            with contextlib.suppress(OSError):
                folder.rmdir()


def _acquire(lock: FileLock, directory: Path, timeout: float) -> None:
    """``lock.acquire``, in a folder that the holder may remove meanwhile: a run refused in a new folder it made
    leaves none (``locked(leave_none=True)``), and a run that waited there makes it again and goes on."""
    for attempt in range(3):
        try:
            lock.acquire(timeout=timeout)
            return
        except FileNotFoundError:
            if attempt == 2:
                raise
            directory.mkdir(parents=True, exist_ok=True)


def _unmade(made: list[Path], name: str) -> list[Path]:
    """The folders ``locked`` made, to remove once it lets go, where the deepest holds nothing but the lock file
    (whose removal they wait on); none otherwise."""
    with contextlib.suppress(OSError):
        if {p.name for p in made[0].iterdir()} <= {name, f"{name}.owner"}:
            (made[0] / name).unlink()
            return made
    return []


def _holder(owner: Path) -> str:
    """Who holds a lock, as its holder wrote it (``process PID on HOST since HH:MM:SS``)."""
    try:
        return owner.read_text().strip() or "another process"
    except OSError:
        return "another process"


def clean_stale(directory: Path, older_than_s: float = STALE_AFTER_S) -> list[str]:
    """Remove what interrupted atomic writes left in ``directory`` (``.NAME.kd-*.tmp``, ``.NAME.kd-old``) when older
    than ``older_than_s``, or at once when its writer's process is gone (:func:`_writer_gone`); return their names.
    Only the package's own names: a user's ``.bashrc.old`` or ``.notes.tmp`` in a folder it locks (``search
    --out``) is never touched. Call it holding the folder's lock."""
    removed, now = [], time.time()
    for entry in Path(directory).iterdir():
        try:
            if not _LEFTOVER.match(entry.name):
                continue
            stat = entry.lstat()
            if now - stat.st_mtime < older_than_s and not _writer_gone(entry.name, stat):
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            removed.append(entry.name)
        except OSError:  # gone already, or not ours to remove: leave it
            continue
    return removed


def _writer_gone(name: str, stat: os.stat_result) -> bool:
    """Whether ``name`` is this user's ``.NAME.kd-pid-PID@HOST_nsN.tmp`` (a teacher layer pass's file, its disk
    space reserved in full), written on this host in this PID namespace, and process PID no longer runs, or runs as
    another user (the PID reused: not its writer). A PID is asked after only where it was written: the folder's lock
    does not exclude a writer on a share without working locks, nor one in another container, whose PID means
    another process here or none. Such a file, and one whose PID runs as this user (its writer, or a reuse), is left
    to the hour rule. An older ``.NAME.kd-pid-PID.tmp`` (no host) is judged by its PID alone, as before. POSIX only."""
    found = _BY_PROCESS.match(name)
    if found is None or os.name != "posix" or stat.st_uid != os.getuid() or int(found.group(1)) <= 0:
        return False
    if found.group(2) is not None and found.group(2, 3) != _process_space():  # written elsewhere
        return False
    try:
        os.kill(int(found.group(1)), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:
        return True  # a process of another user
    except (OSError, OverflowError, ValueError):  # a number no PID can be: not a name this package wrote
        return False
    return False


def writer_tag() -> str:
    """This process as a temporary file's name holds it, ``pid-PID@HOST_nsN`` (``_nsN`` only where /proc gives the PID
    namespace): :func:`clean_stale` asks after that PID only from the same host and namespace."""
    host, namespace = _process_space()
    return f"pid-{os.getpid()}@{host}" + (f"_ns{namespace}" if namespace else "")


def _process_space() -> tuple[str, str | None]:
    """This process's host (letters, digits and "-") and PID namespace (None where /proc does not give it): a PID
    in a temporary file's name is this process's to ask after only under this pair."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:63] or "-"
    try:
        ns = re.search(r"\d+", os.readlink("/proc/self/ns/pid"))
    except (OSError, AttributeError):  # no /proc (macOS), or no readlink
        ns = None
    return host, ns.group() if ns else None


def lock_timeout() -> float:
    """Seconds to wait for another process's lock: ``$KD_TUTORIAL_LOCK_TIMEOUT``, default an hour."""
    text = os.environ.get(LOCK_TIMEOUT_ENV, "3600")
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not (seconds >= 0 and seconds != float("inf")):
        raise ArtifactError(f"{LOCK_TIMEOUT_ENV}={text!r} is not a number of seconds: give one >= 0 (e.g. "
                            f"{LOCK_TIMEOUT_ENV}=3600), or unset it for an hour")
    return seconds


def _home_mode_fix(path: Path, err: OSError) -> str:
    """The first words of the fix for a write refused by its folder's modes inside the artifact cache
    (:func:`chmod_home_fix`); "" otherwise."""
    if err.errno not in (errno.EACCES, errno.EPERM) or sys.platform == "win32":
        return ""
    try:
        root = home().absolute()
        inside = Path(path).absolute().is_relative_to(root)
    except (ArtifactError, OSError, ValueError):
        return ""
    return f"{chmod_home_fix(root)}, or " if inside else ""


@contextlib.contextmanager
def disk_errors(path: Path):
    """Turn a full disk, a quota or a read-only folder into one :class:`StorageError` that says what to do."""
    try:
        yield
    except Exception as err:
        err = _as_os_error(err)
        if err is None or err.errno not in _DISK_ERRORS:
            raise
        free = "free some space or " if err.errno in DISK_FULL else held_open_fix(err) or _home_mode_fix(path, err)
        raise StorageError(f"cannot write {path}: {_DISK_ERRORS[err.errno]}; {free}point {HOME_ENV} (artifacts) or "
                           "--out (results) to a writable folder on a disk with room; what was there before is "
                           "untouched") from err


def _as_os_error(err: Exception) -> OSError | None:
    """``err`` as an OSError: itself, or one rebuilt from a library's own error that reports the system's
    (safetensors writes a full disk as ``SafetensorError: ... (os error 28)``); None for any other error."""
    if isinstance(err, OSError):
        return err
    found = re.search(r"\(os error (\d+)\)", str(err))
    return OSError(int(found.group(1)), str(err)) if found else None


def move_aside(folder: Path, paths, label: str) -> Path:
    """Move ``paths`` (files or folders inside ``folder``) into a new ``folder/<label>-<date-time>-*`` and return
    it: set aside, never deleted. A disk error is the :class:`StorageError` that names the fix."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with disk_errors(Path(folder)):
        aside = Path(tempfile.mkdtemp(prefix=f"{label}-{stamp}-", dir=folder))
        for path in paths:
            Path(path).rename(aside / Path(path).name)
    return aside


def atomic_write_text(path: Path, text: str, newline: str | None = None) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace`` (never half-written); ``newline`` as
    :func:`open` takes it ("" writes the line endings ``text`` holds, untranslated). Through a symbolic link, the
    file it names is written and the link stays a link."""
    path = Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)  # a loop: the link is replaced
    _write_replacing(path, lambda f: f.write(text), "w", encoding="utf-8", newline=newline)


def atomic_write_json(path: Path, obj) -> None:
    """:func:`atomic_write_text` of ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename into place. Ctrl-C or SIGTERM in the write is a
    KeyboardInterrupt still (the file is removed, what was in place stands), not torch's "unexpected pos"."""
    def save(f) -> None:
        try:
            torch.save(obj, f)
        except RuntimeError as err:  # torch's zip writer reports a failed write ("unexpected pos ...") as its
            stop = next((e for e in error_chain(err) if isinstance(e, KeyboardInterrupt)), None)
            if stop is not None:  # a signal in write(): the run's Ctrl-C save, not a traceback, must follow
                raise stop from None
            cause = _os_error_in(err)  # own RuntimeError, the OSError that says why only in its context
            if cause is None:
                raise
            raise cause from err
    _write_replacing(Path(path), save)


def atomic_savefig(fig, path: Path, dpi: int = 120) -> None:
    """``fig.savefig`` as a PNG to a temporary file, then rename into place: a full disk never leaves a cut PNG
    under the plot's name, and is one :class:`StorageError` that names the fix."""
    _write_replacing(Path(path), lambda f: fig.savefig(f, dpi=dpi, format="png"))


def _write_replacing(path: Path, write, mode: str = "wb", **open_kw) -> None:
    """``write(f)`` into a temporary file beside ``path`` (opened with ``mode`` and ``open_kw``), then rename it
    into place with the user's usual permissions; a failure removes the temporary file, and a full disk or a
    read-only folder is one :class:`StorageError` (:func:`disk_errors`)."""
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{MARK}", suffix=".tmp")
        try:
            with os.fdopen(fd, mode, **open_kw) as f:
                write(f)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; keep the user's usual permissions
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def _os_error_in(err: BaseException) -> OSError | None:
    """The first OSError in ``err``'s chain of causes and contexts, if any."""
    return next((e for e in error_chain(err) if isinstance(e, OSError)), None)


def refuse_unfolded(model, directory) -> None:
    """Raise a ValueError naming the fix if ``model`` holds a module marked ``must_fold_before_saving``
    (``models.SummedWordEmbedding``): its weights would be stored under names that a plain BERT silently
    replaces with random ones when loading."""
    if any(getattr(module, "must_fold_before_saving", False) for module in model.modules()):
        raise ValueError(f"not saving {directory}: the model still has the teacher's word vectors beside its own; "
                         "fold them first with kd_tutorial.models.fold_word_embeddings(model)")


def atomic_save_pretrained(model, directory: Path, tokenizer=None) -> None:
    """``model.save_pretrained`` (and ``tokenizer.save_pretrained``, when given) into a temporary folder, then swap
    it into ``directory``.

    A model that must be folded first is refused (:func:`refuse_unfolded`).
    """
    directory = Path(directory)
    refuse_unfolded(model, directory)
    with disk_errors(directory):
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.{MARK}", suffix=".tmp"))
        try:
            model.save_pretrained(tmp)
            if tokenizer is not None:  # a folder that from_pretrained, pipeline() or --teacher loads whole
                tokenizer.save_pretrained(tmp)
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
            if directory.exists():
                old = directory.with_name(f".{directory.name}.{MARK}old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(directory, old)
                os.replace(tmp, directory)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _umask() -> int:
    """The process's umask (read by setting and restoring it: there is no other way)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
