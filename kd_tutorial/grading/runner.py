"""Kernel-side half of the grader: code that the grader injects into a submission's kernel.

* :func:`install_guard` runs *before* the learner's cells. It adds an audit
  hook (which cannot be removed) that refuses to open notebook files and
  anything under the solutions folders, and records such attempts, and calls
  to ``q.solution()``, as flags.
* :func:`cap_output` runs before them too: a learner's cell that prints or displays more than the grader's
  ``--max-output`` by itself is stopped there, by :class:`OutputLimitExceeded` raised from its own write or display.
* :func:`grade_into` runs *after* the learner's cells, once per exercise,
  with freshly imported checks; it appends one JSON line (tagged with a nonce
  that the learner's code never saw) to a results file chosen by the grader.

Nothing here is parsed from printed output.
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading
import time


def _write(path: str, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def keep_kernel(namespace: dict) -> None:
    """Make ``exit()`` and ``quit()`` in a learner's cell raise SystemExit, as ``sys.exit()`` does: that cell stops,
    the kernel stays, and the later cells and the checks run. IPython's own ``exit`` stopped the kernel a moment
    after the cell, so which checks still ran depended on the machine's load, and a later check got the blame."""
    def exit(*args, **kwargs):  # noqa: A001 - shadows IPython's exit in the learner's namespace on purpose
        raise SystemExit("exit() stops a notebook's kernel: the grader went on with the next cells")
    namespace["exit"] = namespace["quit"] = exit


# A command that installs packages, anywhere in what a learner's cell hands to a shell or a subprocess (`!cd x && pip
# install y`, `subprocess.check_call([sys.executable, "-m", "pip", "install", ...])`): the grader's own check skips
# only the lines that start with one (execute.INSTALL_LINE), and an install changes the machine for every later
# learner.
INSTALL_COMMAND = re.compile(r"(?:\b|(?<=-m))(?:pip[\d.]*|conda|mamba|micromamba|apt-get|apt)['\",\s]+"
                             r"(?:-{1,2}[\w=.:/@+-]*['\",\s]+)*"  # options before the command: `pip -q install`
                             r"(?:install|uninstall|remove)\b")  # `-m pip install`, `uv pip install` too; not pip list


def install_guard(results_path: str, nonce: str, blocked_dirs: list[str]) -> None:
    """Block reads of notebooks and solution files from now on in this process; record attempts."""
    blocked = [os.path.realpath(d) for d in blocked_dirs]
    fh = open(results_path, "a", encoding="utf-8", buffering=1)  # kept open: writes raise no audit event
    busy = [False]

    def flag(kind: str, detail: str) -> None:  # kind "note": a line for the notes, not a flag
        busy[0] = True
        record = {"kind": "note", "note": detail[:300]} if kind == "note" else \
            {"kind": "flag", "flag": kind, "detail": detail[:300]}
        try:
            fh.write(json.dumps({"nonce": nonce} | record) + "\n")
        except (OSError, ValueError):  # a forked child that closed its files before exec (pexpect, for IPython's !)
            pass
        finally:
            busy[0] = False

    def forbidden(path) -> str | None:
        if isinstance(path, int):
            return None
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return None
        if real.endswith(".ipynb") or any(real == b or real.startswith(b + os.sep) for b in blocked):
            return real
        return None

    def hook(event: str, args: tuple) -> None:
        if busy[0]:
            return
        if event == "open" and args:
            real = forbidden(args[0])
            if real:  # ("open", path, mode, flags): a learner saving a notebook of their own is not reading one
                writes = len(args) > 2 and isinstance(args[2], int) and bool(args[2] & (os.O_WRONLY | os.O_RDWR))
                flag("write-notebooks" if writes else "read-solutions", real)
                raise PermissionError(f"kd-tutorial grader: {'writing' if writes else 'reading'} {real} is not "
                                      "allowed while grading")
        elif event == "kd_tutorial.grading.solution" and args:
            flag("viewed-solution", str(args[0]))
        elif event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn"):
            text = repr(args)
            if ".ipynb" in text or any(b in text for b in blocked) or "solutions" in text:
                flag("read-solutions", f"{event}: {text}")
                raise PermissionError("kd-tutorial grader: this command is not allowed while grading")
            if INSTALL_COMMAND.search(text):
                flag("note", f"an install was not run (the grader runs none): {text}")
                raise PermissionError("kd-tutorial grader: installing packages is not allowed while grading")

    sys.addaudithook(hook)
    _flag[0] = flag
    record_failed_cells()  # a cell that raises before its def is an error, not an exercise left blank
    fh.write(json.dumps({"nonce": nonce, "kind": "kernel", "executable": sys.executable,
                         "version": sys.version.split()[0]}) + "\n")


# What the checks call into besides their own code: a learner's `torch.allclose = lambda *a, **k: True` or
# `builtins.all = ...` made every check pass. Their public names are remembered before the learner's cells,
# and put back (and flagged) before the checks.
LIBRARIES = ("builtins", "math", "torch", "torch.nn.functional", "torch.testing")
_remembered: dict[tuple[str, str], object] = {}
_flag = [None]  # install_guard's flag(kind, detail), for purge_modules


KERNEL_OWN = {"input"}  # builtins the kernel itself replaces for every cell (ipykernel's input)


def _public(owner) -> dict:
    """``owner``'s own public attributes (a module's, or a class's), less those the kernel manages."""
    return {k: v for k, v in vars(owner).items() if not k.startswith("_") and k not in KERNEL_OWN}


def _owners() -> dict:
    """``{name: module or class}`` of :data:`LIBRARIES` as imported now, and ``torch.Tensor``."""
    owners = {name: sys.modules[name] for name in LIBRARIES if name in sys.modules}
    if "torch" in owners:
        owners["torch.Tensor"] = owners["torch"].Tensor
    return owners


def remember_libraries() -> None:
    """Note the public attributes of the libraries the checks call into (after the grader's own imports)."""
    _remembered.clear()
    for name, owner in _owners().items():
        _remembered.update({(name, k): v for k, v in _public(owner).items()})


def _torch_wrapped(current, original) -> bool:
    """Whether ``current`` is ``original`` or torch's own wrapper of it: importing ``torch._dynamo`` (the first
    optimizer step does) replaces ``torch.manual_seed`` with one, which is no learner's patch."""
    for _ in range(5):
        if current is original:
            return True
        if not str(getattr(current, "__module__", "")).startswith("torch") or not hasattr(current, "__wrapped__"):
            return False
        current = current.__wrapped__
    return False


def restore_libraries() -> list[str]:
    """Put back every remembered attribute that the learner's cells replaced or deleted (not torch's own wrappers),
    and remove a method they added to ``torch.Tensor`` (it would shadow the one its base class holds); their names."""
    owners, changed = _owners(), []
    for (name, key), value in _remembered.items():
        owner = owners.get(name)
        if owner is not None and not _torch_wrapped(vars(owner).get(key, _remembered), value):
            setattr(owner, key, value)
            changed.append(f"{name}.{key}")
    tensor = owners.get("torch.Tensor")
    for key in [k for k in _public(tensor) if ("torch.Tensor", k) not in _remembered] if tensor else []:
        delattr(tensor, key)
        changed.append(f"torch.Tensor.{key}")
    return changed


def purge_modules() -> None:
    """Put back what the learner's cells changed in the libraries the checks use (flagged), then forget every
    imported ``kd_tutorial`` module, so that checks run from fresh, unpatched code."""
    changed = restore_libraries()
    if changed and _flag[0] is not None:
        _flag[0]("patched-libraries", ", ".join(changed))
    for name in [m for m in sys.modules if m == "kd_tutorial" or m.startswith("kd_tutorial.")]:
        del sys.modules[name]


def _shell():
    """The IPython shell this code runs in (a grading kernel), or None."""
    try:
        from IPython import get_ipython  # noqa: PLC0415
    except ImportError:
        return None
    return get_ipython()


def record_failed_cells() -> None:
    """From now on, keep the source and the error of every cell that raises, on the kernel's shell (a module of
    ours would be forgotten by :func:`purge_modules`): :func:`failed_definition` reads them."""
    shell = _shell()
    if shell is None:
        return
    shell.kd_failed_cells = []

    def after(result) -> None:
        err = result.error_before_exec or result.error_in_exec
        shell.kd_last_error = err  # the error of the cell run last, for mark_interrupted
        cap = getattr(shell, "kd_output_cap", None)
        if type(err).__name__ == "OutputLimitExceeded" and cap:  # the grader's cap (of any copy of this module)
            shell.kd_failed_cells.append((result.info.raw_cell, err, (output_reason(cap["limit"]), False)))
        elif err is not None:
            shell.kd_failed_cells.append((result.info.raw_cell, err))
    shell.events.register("post_run_cell", after)


class OutputLimitExceeded(BaseException):
    """Raised from a learner's own write to the kernel's stdout or stderr, or from its ``display()``, once the cell
    running prints more than the grader's ``--max-output`` (:func:`cap_output`): the cell ran on to its time limit
    while the kernel's memory grew by GBs. A BaseException, so that the learner's ``except Exception:`` does not
    swallow it."""


# in the source of each cell the grader itself runs (its setup, purge, checks, and the cells after an interrupt):
# the output cap is never on for them, whatever a learner's cell did to sys.modules or to the shell's hooks
GRADER_CELL = "# kd-tutorial grader cell"


def output_reason(limit: int) -> str:
    """Why a cell was stopped for its output, as a row says it (after "the cell that defines `f`")."""
    return f"printed more than {limit:,} characters of output (--max-output) and was stopped"


def _capped(write, cap: dict):
    """``write`` (a stream's bound method) that counts what the main thread writes while ``cap`` is on, writes what
    fits in the cell's limit, then raises :class:`OutputLimitExceeded` (again at each later write of the cell). A
    write counts once however many capped writes it passes through (``cap["local"]``: IPython's history tee can sit
    between two, and a learner's Tee of stdout can call one from another). Another thread's writes (ipykernel
    forwards a subprocess's output from one) are passed through."""
    main, local = threading.main_thread(), cap["local"]

    def capped_write(text):
        if getattr(local, "counting", False) or not cap["on"] or not isinstance(text, str) \
                or threading.current_thread() is not main:
            return write(text)
        hook = _in_event_hook()  # a learner's pre_run_cell hook: cut at the cap, and charged to no cell
        local.counting = True
        try:
            room = cap["limit"] - cap["count"]
            cap["count"] += 0 if hook else len(text)
            if len(text) <= room:
                return write(text)
            if room > 0:
                write(text[:room])
        finally:
            local.counting = False
        if hook:  # raised there, the stop would escape the shell's run_cell, past the kernel's reply
            return None
        raise OutputLimitExceeded(f"kd-tutorial grader: this cell {output_reason(cap['limit'])}: print less in it")
    capped_write.kd_capped = True
    return capped_write


def _in_event_hook() -> bool:
    """Whether this runs inside one of IPython's event callbacks (a learner's ``pre_run_cell`` hook): raised there,
    the stop would escape the shell's ``run_cell``, past the kernel's reply."""
    try:
        from IPython.core.events import EventManager  # noqa: PLC0415
    except ImportError:
        return False
    code, frame = EventManager.trigger.__code__, sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def _wrap_once(owner, name: str, cap: dict, capped) -> None:
    """Replace the method ``owner.<name>`` by ``capped(method, cap)``, unless it is wrapped already, or missing."""
    method = getattr(owner, name, None)
    if method is None or getattr(method, "kd_capped", False):
        return
    try:
        setattr(owner, name, capped(method, cap))
    except (AttributeError, TypeError):  # an object whose attributes are read-only: left as it is
        pass


def _cap_streams(cap: dict) -> None:
    """Wrap the write of the kernel's own streams, recorded by :func:`cap_output` (never whatever ``sys.stdout`` is
    now: a file or a StringIO the learner redirected to), unless it is wrapped already (:func:`_capped`)."""
    for stream in cap["streams"]:
        _wrap_once(stream, "write", cap, _capped)


def _capped_publish(publish, cap: dict):
    """``publish`` (the display publisher's bound method, which ``display()`` calls, or the displayhook's
    ``write_format_data``, which sends a cell's last value: the same arguments) counted against the same cap as
    the streams' writes: what the main thread displays while ``cap`` is on counts the characters of each
    representation but its images (a plot counts its text line, "<Figure size 640x480 with 1 Axes>"; the grader's
    client cuts what it stores). An update of a display (``handle.update(...)``) replaces it, and is not counted. A
    display that fits is published; the one past the cap raises :class:`OutputLimitExceeded`, unpublished, as do the
    cell's later ones. ``display(df)`` in a loop ran on to its cell's time limit before."""
    main, local = threading.main_thread(), cap["local"]

    def capped_publish(data, *args, **kwargs):
        if getattr(local, "counting", False) or not cap["on"] or threading.current_thread() is not main \
                or not isinstance(data, dict) or kwargs.get("update"):  # an update replaces what it displayed
            return publish(data, *args, **kwargs)
        size = sum(len(str(value)) for kind, value in data.items() if not str(kind).startswith("image/"))
        hook = _in_event_hook()  # a learner's pre_run_cell hook: cut at the cap, and charged to no cell
        room = cap["limit"] - cap["count"]
        cap["count"] += 0 if hook else size
        if size <= room:
            local.counting = True  # a publisher that writes its text to stdout (a terminal's) counts it once
            try:
                return publish(data, *args, **kwargs)
            finally:
                local.counting = False
        if hook:
            return None
        raise OutputLimitExceeded(f"kd-tutorial grader: this cell {output_reason(cap['limit'])}: print less in it")
    capped_publish.kd_capped = True
    return capped_publish


def cap_output(limit: int) -> None:
    """From now on, count the output of each cell (from its start: IPython's ``pre_run_cell``) to the kernel's own
    stdout and stderr (those of now), through ``display()`` and as the value of a cell's last line (the shell's
    displayhook; both :func:`_capped_publish`), and stop a learner's cell that prints more than ``limit`` characters
    by itself (:class:`OutputLimitExceeded`). The cap is on only while a
    cell's code runs (``post_execute`` turns it off, before IPython's own hooks and the kernel's reply), and never for
    the grader's own cells (:data:`GRADER_CELL`). Its state lives on the kernel's shell, not in this module, which a
    learner's cell can make Python import anew."""
    shell = _shell()
    if shell is None:
        return
    streams = tuple(s for s in (sys.stdout, sys.stderr) if s is not None)
    cap = {"limit": int(limit), "on": False, "count": 0, "streams": streams, "local": threading.local()}
    shell.kd_output_cap = cap

    def before(info) -> None:
        _cap_streams(cap)  # at each cell: IPython 9 wraps write (its history's tee) anew for each cell
        _wrap_once(getattr(shell, "display_pub", None), "publish", cap, _capped_publish)  # display()
        _wrap_once(getattr(shell, "displayhook", None), "write_format_data", cap, _capped_publish)  # a last value
        cap["count"], cap["on"] = 0, GRADER_CELL not in str(getattr(info, "raw_cell", "") or "")

    def after() -> None:
        cap["on"] = False
    shell.events.register("pre_run_cell", before)
    shell.events.register("post_execute", after)


def mark_interrupted(reason: str, whole_limit: bool = False) -> None:
    """Run by the grader right after it interrupted a learner's cell at its time limit (too much output is stopped
    in the kernel instead, :func:`cap_output`): when that cell, the last one run, failed with the KeyboardInterrupt,
    its record says why (``reason``: "ran past the cell limit (60 s) and was interrupted"), as a timeout, so that a
    name it left undefined is not blamed on a Ctrl-C of the learner's. A cell stopped at the ``whole_limit`` (the cell
    limit, not what the notebook limit left) while its ``q1.check(fn)`` ran also marks that check of ``fn`` as timed
    out (:func:`timed_out_check`): the grader's own check of the same function would loop as long again. Only the
    check that was running (``Exercise.check`` leaves it on the shell when interrupted), not the cell's others."""
    shell = _shell()
    if shell is None:
        return
    cells = getattr(shell, "kd_failed_cells", None)
    err = getattr(shell, "kd_last_error", None)
    checking, shell.kd_checking = getattr(shell, "kd_checking", None), None
    if cells and isinstance(err, KeyboardInterrupt) and cells[-1][1] is err:
        cells[-1] = (cells[-1][0], err, (reason, True))
        if whole_limit and checking is not None:
            shell.kd_timed_out_checks = getattr(shell, "kd_timed_out_checks", []) + [(*checking, reason)]


def timed_out_check(label: str, fn: object) -> str | None:
    """Why the learner's own ``label.check(...)`` cell was stopped while it checked this very ``fn``
    (:func:`mark_interrupted`), or None when it was not."""
    marks = getattr(_shell(), "kd_timed_out_checks", None) or []
    return next((reason for marked, obj, reason in marks if marked == label and obj is fn), None)


def _failed_cell(name: str) -> tuple | None:
    """The latest record ``(source, error[, reason])`` of a failed cell that holds ``def name(``; None if none."""
    pattern = re.compile(rf"^\s*def {re.escape(name)}\s*\(", re.M)
    for record in reversed(getattr(_shell(), "kd_failed_cells", None) or []):
        if isinstance(record[0], str) and pattern.search(record[0]):
            return record
    return None


def failed_definition(name: str) -> str | None:
    """``"Type: message"`` of the error of a cell that holds ``def name(`` and raised (a SyntaxError, or an error
    above the ``def``), so that ``name`` was never defined; None when no such cell failed."""
    record = _failed_cell(name)
    if record is None:
        return None
    err = record[1]
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def interrupted_definition(name: str) -> tuple[str, bool] | None:
    """``(reason, timed_out)``: why the grader interrupted the failed cell that holds ``def name(``
    (:func:`mark_interrupted`); None when that cell failed by itself, or none did."""
    record = _failed_cell(name)
    return record[2] if record is not None and len(record) > 2 else None


def _earlier_version(set_id: str, label: str, name: str, namespace: dict):
    """A not-attempted Result that says the notebook answers an earlier version of the course (it defines the name
    this exercise had then: :data:`~kd_tutorial.grading.registry.FORMER_NAMES`); None when it does not."""
    from kd_tutorial.grading.core import NOT_ATTEMPTED, Result  # noqa: PLC0415
    from kd_tutorial.grading.registry import FORMER_NAMES  # noqa: PLC0415
    old = next((n for n in FORMER_NAMES.get(f"{set_id}.{label}", ()) if callable(namespace.get(n))), None)
    if old is None:
        return None
    return Result(NOT_ATTEMPTED, f"{label}: this notebook defines `{old}`, the exercise of an earlier version of the "
                                 f"course; this version asks for `{name}`, another task: do {label} in the current "
                                 f"exercises/ notebook")


def checked_instead(label: str, name: str, namespace: dict) -> str | None:
    """The function other than ``name`` that the learner's own check cell hands to ``label.check(...)``, if it is
    defined (``def my_softmax``, checked with ``q1.check(my_softmax)``: the learner saw the check pass), else None.
    The cells' sources are IPython's input history, ``In``; a check commented out (``# q1.check(draft)``) ran
    nothing, and does not count."""
    call = re.compile(rf"(?<![\w.]){re.escape(label)}\.check\(\s*([A-Za-z_]\w*)\s*\)")
    history = namespace.get("In")
    for source in reversed(history if isinstance(history, list) else []):
        code = re.sub(r"#[^\n]*", "", source) if isinstance(source, str) else ""
        found = [m for m in call.findall(code) if m != name]
        if found and callable(namespace.get(found[-1])):
            return found[-1]
    return None


def _interrupted(label: str, name: str, left: str, why: tuple[str, bool]):
    """The Result of an exercise whose function's cell the grader interrupted (``why``: :func:`interrupted_definition`):
    a timeout at its time limit, an error for too much output."""
    from kd_tutorial.grading.core import ERROR, TIMEOUT, Result  # noqa: PLC0415  (fresh, as the checks)
    reason, timed_out = why
    if not timed_out:
        return Result(ERROR, f"{label}: the cell that defines `{name}` {reason}, so {left}: print less above the "
                             "`def`")
    return Result(TIMEOUT, f"{label}: the cell that defines `{name}` {reason}, so {left}: an infinite loop or a long "
                           "wait above the `def`?")


def _graded(exercise, label: str, name: str, namespace: dict):
    """``exercise``'s Result for the function ``name`` of ``namespace``; a timeout, without running the check again,
    when the learner's own check cell ran past the cell limit with this same function (:func:`timed_out_check`)."""
    from kd_tutorial.grading.core import TIMEOUT, Result  # noqa: PLC0415  (fresh, as the checks)
    fn = namespace.get(name)
    reason = timed_out_check(label, fn) if fn is not None else None
    if reason is None:
        return exercise.grade(fn)
    return Result(TIMEOUT, f"{label}: not checked again: your own `{label}.check` cell {reason} while it checked this "
                           f"same `{name}` (an infinite loop in your function?)")


def grade_into(set_id: str, label: str, namespace: dict, results_path: str, nonce: str) -> None:
    """Run one exercise's check on the learner's namespace; append the result as a JSON line."""
    import importlib  # noqa: PLC0415

    start = time.perf_counter()
    module = importlib.import_module(f"kd_tutorial.grading.{set_id}")
    from kd_tutorial.grading.core import ERROR, NOT_ATTEMPTED, Result  # noqa: PLC0415  (fresh, as the checks)
    exercise = getattr(module, label)
    result = _graded(exercise, label, exercise.name, namespace)
    other = checked_instead(label, exercise.name, namespace) if result.status == NOT_ATTEMPTED else None
    if other:  # the exercise's function is missing, or still the stub, and the learner checked another one
        result = _graded(exercise, label, other, namespace)
        _write(results_path, {"nonce": nonce, "kind": "note", "note": f"{label}: graded `{other}`, the function its "
                              f"check cell names; the exercise asks for `{exercise.name}`: rename it"})
    failed = failed_definition(exercise.name) if result.status == NOT_ATTEMPTED else None
    if failed:  # the name undefined, or still the stub above a cell of the learner's own that failed
        left = ("the stub stayed in its place" if callable(namespace.get(exercise.name))
                else f"`{exercise.name}` was never defined")
        why = interrupted_definition(exercise.name)  # the grader interrupted it: not the learner's Ctrl-C
        result = Result(ERROR, f"{label}: the cell that defines `{exercise.name}` raised {failed}, so {left}: "
                               "fix that cell") if why is None else _interrupted(label, exercise.name, left, why)
    elif result.status == NOT_ATTEMPTED:
        result = _earlier_version(set_id, label, exercise.name, namespace) or result
    _write(results_path, {"nonce": nonce, "kind": "result", "exercise": f"{set_id}.{label}",
                          "status": result.status, "message": result.message[:1000],
                          "seconds": round(time.perf_counter() - start, 3)})
