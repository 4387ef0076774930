"""Grader-side execution of one submission in a fresh kernel (nbclient), with timeouts and an output cap.

The executed notebook is built by the grader: a guard cell, then the
learner's code cells (unchanged but for lines that install packages, which
become ``pass``), then one check cell per exercise. Results come back as JSON
lines, tagged with a nonce, in a file the grader chose.
"""
from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DISK_FULL, JSON_ERRORS, UserError
from .core import ERROR, NOT_ATTEMPTED, TIMEOUT, UNDEFINED
from .registry import SETS
from .runner import GRADER_CELL

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "KD_TUTORIAL_GRADING": "1", "PYTHONDONTWRITEBYTECODE": "1",
}
# Imported by the grader's setup cell, before the learner's cells and outside the per-cell limit (only the
# notebook limit applies): a cold ``import torch`` can take seconds on a busy machine, and must not use up
# the time limit of the learner's first cell. The exercise set's module and its own ``PRELOAD`` follow.
PRELOAD: tuple[str, ...] = ("torch", "torch.nn.functional")
# A learner's `!pip install ...` (Colab learners are told to add one) would change the grader's environment for
# every later submission: such lines become `pass`. `!`/`!!` or `%`, then pip, conda, mamba, uv pip, apt(-get), or
# python -m pip, at the start of a line (indented or not), optionally after sudo, or after `&&`, `;` or a pipe on
# a `!` line. What reaches a shell or a subprocess otherwise is refused in the kernel (runner.INSTALL_COMMAND).
INSTALL_LINE = re.compile(r"^(?P<indent>[ \t]*)(?:(?:!{1,2}|%)[ \t]*(?:sudo[ \t]+)?"
                          r"(?:pip[\d.]*|conda|mamba|micromamba|uv[ \t]+pip|apt-get|apt|"
                          r"(?:python[\d.]*|\{sys\.executable\})[ \t]+-m[ \t]+pip)(?:[ \t]|$)"
                          # or chained after another command on a shell line: `!cd x && pip install -e .`
                          r"|!{1,2}.*?(?:&&|\|\||;|\|)[ \t]*(?:sudo[ \t]+)?(?:pip[\d.]*|conda|mamba|micromamba|"
                          r"uv[ \t]+pip|apt-get|apt|python[\d.]*[ \t]+-m[ \t]+pip)[ \t]+(?:-{1,2}[\w=.:/@+-]*[ \t]+)*"
                          r"(?:install|uninstall|remove)\b"
                          # IPython's automagic runs a bare `pip install x` as %pip (never valid Python)
                          r"|(?:pip[\d.]*|conda|mamba|micromamba|uv[ \t]+pip)[ \t]+"
                          r"(?:install|uninstall|remove|update)\b)")

# Colab's way to restart the runtime after an install (`os.kill(os.getpid(), 9)`, or `os._exit(...)`): in the grader
# it killed the kernel, and every exercise after it scored "error". Such a line becomes `pass` too: a line that
# starts with either call (after `import os;`, as the snippet is often pasted), at any indentation.
RESTART_LINE = re.compile(r"^(?P<indent>[ \t]*)(?:import[ \t]+os[ \t]*;[ \t]*)?"
                          r"os\.(?:_exit[ \t]*\(|kill[ \t]*\([ \t]*os\.getpid[ \t]*\([ \t]*\)[ \t]*,)")


# what the system's temporary folder may answer when it cannot take the checks' results, and what that means
_REFUSALS = {errno.ENOSPC: "no space left on its disk", errno.EDQUOT: "disk quota exceeded",
             errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
             errno.EPERM: "operation not permitted"}


class ResultsRefused(UserError):
    """The system's temporary folder refuses the checks' results (a full disk...): every notebook graded from now on
    would get "the check did not report a result" for answers that were never checked, so the grading stops."""


@dataclass
class Run:
    """What happened when one submission was executed and checked."""

    results: dict[str, tuple[str, str]] = field(default_factory=dict)  # "q1" -> (status, message)
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    seconds: float = 0.0
    kernel_python: str | None = None
    skipped_cells: list[int] = field(default_factory=list)  # learner cells not run, to leave the checks their time


def kernel_manager_class():
    """An ``AsyncKernelManager`` subclass whose kernel is always ``sys.executable -m ipykernel_launcher``."""
    from jupyter_client.kernelspec import KernelSpec  # noqa: PLC0415
    from jupyter_client.manager import AsyncKernelManager  # noqa: PLC0415

    class GraderKernelManager(AsyncKernelManager):
        """Always this interpreter's ipykernel, whatever kernelspec the notebook names."""

        @property
        def kernel_spec(self):
            if self._kernel_spec is None:
                self._kernel_spec = KernelSpec(
                    name="kd-tutorial-grader", display_name="kd-tutorial grader", language="python",
                    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                          "--HistoryManager.hist_file=:memory:"])
            return self._kernel_spec

    return GraderKernelManager


def _client_class():
    from nbclient import NotebookClient  # noqa: PLC0415

    class GraderClient(NotebookClient):
        """nbclient with a cap on stored output, a record of cell timeouts, and of the cells that the kernel's own
        cap stopped for their output (:func:`runner.cap_output`)."""

        max_output_bytes = 1_000_000
        output_bytes = 0
        truncated = False
        timed_out = False
        flooded: tuple = ()  # indices of the cells that failed with runner.OutputLimitExceeded

        async def _async_handle_timeout(self, timeout, cell=None):
            self.timed_out = True
            return await super()._async_handle_timeout(timeout, cell)

        async def _check_raise_for_error(self, cell, cell_index, exec_reply):
            content = (exec_reply or {}).get("content", {})
            if content.get("status") == "error" and content.get("ename") == "OutputLimitExceeded" and \
                    cell_index not in self.flooded:
                self.flooded += (cell_index,)
            return await super()._check_raise_for_error(cell, cell_index, exec_reply)

        def output(self, outs, msg, display_id, cell_index):
            content = msg.get("content", {})
            size = len(content.get("text", "")) + sum(len(str(v)) for v in content.get("data", {}).values()) \
                + sum(len(line) for line in content.get("traceback", []))
            self.output_bytes += size
            if self.output_bytes > self.max_output_bytes:
                if not self.truncated:
                    self.truncated = True
                    from nbformat.v4 import new_output  # noqa: PLC0415
                    outs.append(new_output("stream", name="stderr",
                                           text="[kd-tutorial grader: output truncated]\n"))
                return None
            return super().output(outs, msg, display_id, cell_index)

    return GraderClient


def _blocked_dirs() -> list[str]:
    here = Path(__file__).resolve().parents[2]
    candidates = [here / "solutions", Path.cwd() / "solutions"]
    return sorted({str(p.resolve()) for p in candidates if p.is_dir()})


# a cell run by a shell (%%bash, %%sh, %%script bash ...): its lines are shell commands, installs with no prefix
SHELL_CELL = re.compile(r"^\s*%%(?:bash|sh|script[ \t]+(?:\S*/)?(?:bash|sh|zsh|dash))\b")
SHELL_INSTALL = re.compile(r"^(?P<indent>[ \t]*)(?:sudo[ \t]+)?(?:pip[\d.]*|conda|mamba|micromamba|uv[ \t]+pip"
                           r"|apt-get|apt|(?:\S*/)?python[\d.]*[ \t]+-m[ \t]+pip)[ \t]")


def without_installs(source: str, pattern: re.Pattern = INSTALL_LINE) -> tuple[str, bool]:
    """``source`` with every line that installs packages (:data:`INSTALL_LINE`, with its ``\\`` continuation lines)
    replaced by ``pass  # <line> : not run by the grader`` at its indentation (``:`` in a shell cell, where any
    pip, conda or apt command counts: :data:`SHELL_INSTALL`); and whether there was one. With ``pattern``
    :data:`RESTART_LINE`, the lines that restart the kernel, in Python cells only."""
    lines, found, out = source.split("\n"), False, []
    shell = bool(SHELL_CELL.match(source))
    if shell and pattern is not INSTALL_LINE:
        return source, False
    pattern, noop = (SHELL_INSTALL, ":") if shell else (pattern, "pass")
    i, quote = 0, None  # quote: the triple quote of a Python string still open at the start of line i
    while i < len(lines):
        match = pattern.match(lines[i]) if not (shell and i == 0) and quote is None else None
        if match and pattern is RESTART_LINE and lines[i].count("(") != lines[i].count(")"):
            match = None  # a restart call split over lines is left whole: its next lines would not parse alone
        if not match:
            quote = quote if shell else _open_quote_after(lines[i], quote)  # a line inside a string is text
            out.append(lines[i])
            i += 1
            continue
        found, end = True, i
        while lines[end].rstrip().endswith("\\") and end + 1 < len(lines):
            end += 1
        command = " ".join(line.strip().rstrip("\\").strip() for line in lines[i:end + 1])
        out += [f"{match['indent']}{noop}  # {command} : not run by the grader"] + [""] * (end - i)
        i = end + 1
    return "\n".join(out), found


# the end of a triple-quoted string (a backslash-escaped quote does not end it), and a one-line string: for
# :func:`_open_quote_after`
_TRIPLE_END = {q: re.compile(rf"(?:\\.|[^\\])*?{q}", re.S) for q in ('"""', "'''")}
_ONE_LINE_STRING = {q: re.compile(rf"{q}(?:\\.|[^\\{q}])*{q}") for q in ('"', "'")}


def _open_quote_after(line: str, quote: str | None) -> str | None:
    """The triple quote (three double or three single quotes) of a Python string still open after ``line``, given
    the one open before it (None: none). Single-quoted strings and comments are stepped over, and a ``!`` or ``%``
    line is IPython's, whose quotes open no Python string: enough to tell the lines of a docstring or a help text,
    which are never commands, from code."""
    if quote is None and line.lstrip()[:1] in ("!", "%"):
        return None
    i = 0
    while i < len(line):
        if quote:
            end = _TRIPLE_END[quote].match(line, i)  # a backslash-escaped quote does not end it
            if end is None:
                return quote
            i, quote = end.end(), None
        elif line[i] == "#":
            return None
        elif line.startswith(('"""', "'''"), i):
            quote, i = line[i:i + 3], i + 3
        elif line[i] in "\"'":
            close = _ONE_LINE_STRING[line[i]].match(line, i)
            i = close.end() if close else len(line)
        else:
            i += 1
    return quote


def _sendable(source: str) -> str:
    """``source`` with each lone surrogate (half of an emoji a copy cut in two, kept by the notebook's JSON as
    ``\\ud83d``) made U+FFFD: the message to the kernel cannot encode one, and the whole notebook scored "error"."""
    return re.sub("[\ud800-\udfff]", "\ufffd", source)


def _grading_cells(nb, set_id: str, labels, results_path: str, guard_nonce: str, check_nonce: str,
                   max_output_bytes: int = 1_000_000):
    """The cells the grader runs, as ``(kind, ref, cell)``: its setup (the guard, the cap on a learner cell's output,
    and the preloaded imports), the learner's code cells (their installs and kernel restarts made ``pass``:
    :func:`without_installs`), a purge of the learner's modules, and one check per exercise label, each of the
    grader's own cells marked (``runner.GRADER_CELL``: the cap is never on for them); also the numbers (from 1) of
    the cells whose installs were skipped, and of those whose restarts were."""
    from nbformat.v4 import new_code_cell  # noqa: PLC0415
    guard = (f"{GRADER_CELL}\nimport kd_tutorial.grading.runner as _kd_runner\n"
             f"_kd_runner.install_guard({results_path!r}, {guard_nonce!r}, {_blocked_dirs()!r})\n"
             f"_kd_runner.cap_output({int(max_output_bytes)!r})\n"
             f"_kd_runner.keep_kernel(globals())\n"
             f"del _kd_runner")
    preload = (f"{GRADER_CELL}\nimport importlib as _kd_importlib\n"
               f"for _kd_name in {PRELOAD!r}:\n    _kd_importlib.import_module(_kd_name)\n"
               f"for _kd_name in getattr(_kd_importlib.import_module('kd_tutorial.grading.{set_id}'), 'PRELOAD', ()):\n"
               f"    _kd_importlib.import_module(_kd_name)\n"
               f"_kd_importlib.import_module('kd_tutorial.grading.runner').remember_libraries()\n"
               f"del _kd_importlib, _kd_name")
    learner = [(i, c) for i, c in enumerate(nb.get("cells", [])) if c.get("cell_type") == "code"]
    cells = [("setup", None, new_code_cell(guard)), ("setup", None, new_code_cell(preload))]
    sources = {i: without_installs(_sendable(str(c.get("source", "")))) for i, c in learner}
    restarts = {i: without_installs(source, RESTART_LINE) for i, (source, _) in sources.items()}
    cells += [("learner", i, new_code_cell(restarts[i][0])) for i, _ in learner]
    cells.append(("purge", None, new_code_cell(
        f"{GRADER_CELL}\n__import__('kd_tutorial.grading.runner', fromlist=['_']).purge_modules()")))
    for label in labels:
        cells.append(("check", label, new_code_cell(
            f"{GRADER_CELL}\n__import__('kd_tutorial.grading.runner', fromlist=['_']).grade_into("
            f"{set_id!r}, {label!r}, globals(), {results_path!r}, {check_nonce!r})")))
    return cells, *([i + 1 for i, (_, found) in skipped.items() if found] for skipped in (sources, restarts))


def _make_client(exec_nb, cell_timeout: float, workdir: str):
    """An nbclient client for the grader's kernel: errors allowed, interrupt on a cell timeout."""
    return _client_class()(
        exec_nb, kernel_name="kd-tutorial-grader", kernel_manager_class=kernel_manager_class(),
        timeout=int(cell_timeout), allow_errors=True, interrupt_on_timeout=True,
        error_on_timeout={"ename": "CellTimeoutError", "evalue": "timed out", "traceback": []},
        iopub_timeout=2, record_timing=False, startup_timeout=60, shutdown_kernel="immediate",
        resources={"metadata": {"path": workdir}})


def check_reserve(n_checks: int, cell_timeout: float, timeout: float) -> float:
    """Seconds of the notebook limit kept for the checks: ``min(cell_timeout, 3)`` each (a check takes under a
    second: its imports are preloaded), at most half the limit. More would cut a slow but finished notebook short."""
    return min(n_checks * min(cell_timeout, 3.0), timeout / 2)


def run_submission(nb, set_id: str, *, timeout: float, cell_timeout: float,
                   max_output_bytes: int = 1_000_000) -> Run:
    """Execute notebook ``nb`` (a ``NotebookNode``) in a fresh kernel and grade exercise set ``set_id``. Lines that
    install packages are not run; slow learner cells leave :func:`check_reserve` seconds for the checks."""
    from nbclient.exceptions import DeadKernelError  # noqa: PLC0415
    from nbformat.v4 import new_notebook  # noqa: PLC0415

    labels = SETS[set_id][1]
    run = Run()
    start = time.monotonic()
    workdir, resdir = _temp_folders()
    results_path = os.path.join(resdir, f"{secrets.token_hex(8)}.jsonl")
    guard_nonce, check_nonce = secrets.token_hex(16), secrets.token_hex(16)
    fate: dict[str, tuple[str, str]] = {}  # label -> (status, message) for checks that never reported
    stop: tuple[str, str] | None = None
    client = None
    try:
        cells, installs, restarts = _grading_cells(nb, set_id, labels, results_path, guard_nonce, check_nonce,
                                                   max_output_bytes)
        for what, found in (("installs", installs), ("kernel restarts", restarts)):
            if found:
                run.notes.append(f"{what} skipped (the grader does not run them): cell{'s' * (len(found) > 1)} "
                                 f"{', '.join(map(str, found[:10]))}")
        client = _make_client(new_notebook(cells=[c for _, _, c in cells]), cell_timeout, workdir)
        client.max_output_bytes = max_output_bytes
        # tiny tensors: one thread avoids OpenMP stalls on a busy machine (a learner's env may override)
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **os.environ, **OFFLINE_ENV}
        with client.setup_kernel(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
            stop = _run_cells(client, cells, run, fate, start + timeout, timeout, cell_timeout)
    except DeadKernelError:
        stop = stop or (ERROR, "the kernel died")
    except Exception as exc:  # kernel failed to start, etc.: report, never crash the whole grading run
        run.notes.append(f"grader could not run the notebook: {type(exc).__name__}: {exc}"[:300])
        stop = stop or (ERROR, f"the grader could not run the notebook ({type(exc).__name__})")
    finally:  # also on Ctrl-C, SIGTERM, SIGHUP (KeyboardInterrupt): no kd-grade-* folder is left behind
        if client is not None and (client.truncated or getattr(client, "flooded", ())):
            run.notes.append(_output_note(max_output_bytes, client.truncated,
                                          [cells[i][1] + 1 for i in client.flooded if cells[i][0] == "learner"]))
        _read_results(results_path, guard_nonce, check_nonce, set_id, run)
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(resdir, ignore_errors=True)
    if any(label not in run.results and label not in fate for label in labels):
        _check_results_writable()  # a check that did not report, on a disk that refuses its line: stop, not ERROR
    for label in (label for label in labels if label not in run.results):
        run.results[label] = fate.get(label) or stop or (ERROR, f"{label}: the check did not report a result")
    if run.skipped_cells:  # a function "not defined" may be one that a skipped cell defines
        run.results.update({label: (TIMEOUT, f"{label}: not checked: the notebook time limit ({timeout:g} s) left "
                                              "some of its cells unrun (see the notes)")
                            for label, (status, message) in run.results.items()
                            if status == NOT_ATTEMPTED and message.endswith(UNDEFINED)})
    run.seconds = round(time.monotonic() - start, 2)
    return run


def _output_note(max_output_bytes: int, truncated: bool, stopped: list[int]) -> str:
    """The note on a notebook's output past --max-output: kept up to it (``truncated``), and the learner's cells
    (numbered from 1) that the kernel's cap stopped for printing more than that by themselves (``stopped``)."""
    kept = f"printed more than {max_output_bytes:,} characters of output (truncated)"
    if not stopped:
        return kept
    one = len(stopped) == 1
    cells = f"cell{'' if one else 's'} {', '.join(map(str, stopped[:10]))}{'' if len(stopped) <= 10 else ', ...'}"
    return (f"{kept + '; ' if truncated else ''}{cells} {'' if one else 'each '}printed more than "
            f"{max_output_bytes:,} characters of output by {'itself' if one else 'themselves'} (--max-output) and "
            f"{'was' if one else 'were'} stopped there: print less in {'it' if one else 'them'}")


def _temp_folders() -> tuple[str, str]:
    """New folders in the system's temporary folder: the kernel's working folder and the checks' results folder;
    :class:`ResultsRefused` when its disk refuses them."""
    made = []
    try:
        for prefix in ("kd-grade-cwd-", "kd-grade-res-"):
            made.append(tempfile.mkdtemp(prefix=prefix))
    except OSError as err:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
        if err.errno not in _REFUSALS:
            raise
        raise _refused(err) from err
    return made[0], made[1]


def _check_results_writable(size: int = 65536) -> None:
    """:class:`ResultsRefused` when the system's temporary folder, where the checks write their results, refuses
    ``size`` bytes now (the grader's own write, which no learner's code can fake); nothing when it takes them."""
    try:
        with tempfile.TemporaryFile(prefix="kd-grade-probe-") as fh:
            fh.write(b"\0" * size)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        if err.errno not in _REFUSALS:
            raise
        raise _refused(err) from err


def _refused(err: OSError) -> ResultsRefused:
    """The disk's refusal ``err`` (an errno of :data:`_REFUSALS`) as the one-line :class:`ResultsRefused` that
    names the fix."""
    fix = "free some space there" if err.errno in DISK_FULL else "make it writable"
    return ResultsRefused(f"the checks cannot write their results in {tempfile.gettempdir()} ({_REFUSALS[err.errno]}):"
                          f" {fix} or set TMPDIR to a folder on a disk with room, then run it again")


def _run_cells(client, cells: list, run: Run, fate: dict, deadline: float, timeout: float, cell_timeout: float):
    """Run ``cells`` in ``client``'s kernel, each under its limit; the reason the remaining checks could not run, or
    None. Learner cells stop short of the time kept for the checks (:func:`check_reserve`)."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError  # noqa: PLC0415

    reserve = check_reserve(sum(kind == "check" for kind, _, _ in cells), cell_timeout, timeout)
    checks_after = [sum(kind == "check" for kind, _, _ in cells[i + 1:]) for i in range(len(cells))]
    skipped: list[int] = []
    for index, (kind, ref, cell) in enumerate(cells):
        remaining = deadline - time.monotonic()
        if kind == "learner" and (skipped or remaining - reserve < 1):
            skipped.append(ref + 1)  # the learner's cells come one after another: what is left goes to the checks
            run.skipped_cells = skipped
            continue
        if skipped and kind == "purge":
            run.notes.append(_skipped_note(skipped, timeout))
        if remaining <= 1:
            run.notes.append(f"notebook time limit ({timeout:g} s) reached")
            return (TIMEOUT, f"the notebook time limit ({timeout:g} s) was reached before this check ran")
        limit = _cell_limit(kind, remaining, reserve, cell_timeout, checks_after[index])
        client.timeout = max(1, int(limit))
        client.timed_out = False
        try:
            client.execute_cell(cell, index)
        except DeadKernelError:
            return _after_death(run, fate, kind, ref, cell)
        except CellTimeoutError:
            client.timed_out = True
        if client.timed_out:
            stop = _after_timeout(client, run, fate, (kind, ref, index, cell), deadline, cell_timeout)
            if stop:
                return stop
    return None


CHECK_FLOOR = 1.0  # seconds a check (or the purge before them) gets however little of the notebook limit is left


def _cell_limit(kind: str, remaining: float, reserve: float, cell_timeout: float, checks_after: int) -> float:
    """Seconds a cell may run: the grader's setup (imports), the notebook limit only; a learner's cell, the cell limit
    and the time left before the checks' ``reserve``; the grader's other cells (a check, the purge) the cell limit,
    keeping ``min(cell_timeout, 3)`` for each of the ``checks_after`` checks still to run, but at least
    :data:`CHECK_FLOOR` (a looping check took the time of the correct ones after it)."""
    if kind == "setup":
        return remaining
    if kind == "learner":
        return min(cell_timeout, remaining - reserve)
    kept = min(cell_timeout, 3.0) * checks_after
    return min(cell_timeout, remaining, max(CHECK_FLOOR, remaining - kept))


def _skipped_note(cells: list[int], timeout: float) -> str:
    """The note on the learner cells not run, to leave the checks their time."""
    shown = ", ".join(map(str, cells[:10])) + (", ..." if len(cells) > 10 else "")
    return (f"notebook time limit ({timeout:g} s) nearly reached: cell{'s' * (len(cells) > 1)} {shown} not run, "
            "to leave time for the checks")


def _learner_cell(ref: int, cell) -> str:
    """``cell 5 (`while True:`)``: a learner's cell by its number among all the notebook's cells, counted from 1, and
    its first line, which a learner can find where JupyterLab shows no number."""
    first = next((line.strip() for line in str(cell.get("source", "")).splitlines() if line.strip()), "")
    return f"cell {ref + 1}" + (f" (`{first[:40]}{'...' if len(first) > 40 else ''}`)" if first else "")


def _after_death(run: Run, fate: dict, kind: str, ref, cell):
    """Note a kernel that died in a cell (and the check's fate); the reason the remaining checks could not run."""
    where = (_learner_cell(ref, cell) if kind == "learner" else f"the check of {ref}" if kind == "check"
             else "grader setup")
    run.notes.append(f"the kernel died while running {where} (os._exit, crash or out of memory)")
    if kind == "check":
        fate[ref] = (ERROR, f"the kernel died while checking {ref} (os._exit, crash or out of memory)")
    return (ERROR, f"the kernel died while running {where}; the remaining checks could not run")


def _after_timeout(client, run: Run, fate: dict, where: tuple, deadline: float, cell_timeout: float):
    """Note a cell (``where``: its kind, ref, index and the cell) that timed out (and the check's fate, or a learner
    cell's reason: :func:`_interrupted_code`); the reason to stop when the kernel stays stuck, else None."""
    kind, ref, index, cell = where
    what = _learner_cell(ref, cell) if kind == "learner" else f"the check of {ref}" if kind == "check" \
        else "grader setup" if kind == "setup" else "a grader cell"
    run.notes.append(f"{what} timed out after {client.timeout} s and was interrupted")
    if kind == "check":
        fate[ref] = (TIMEOUT, f"{ref}: the check timed out after {client.timeout} s "
                              "(an infinite loop in your function?)")
    limit = (f"the cell limit ({client.timeout} s)" if client.timeout >= int(cell_timeout)
             else f"the {client.timeout} s the notebook limit left it")
    code = _interrupted_code(f"ran past {limit} and was interrupted", client.timeout >= int(cell_timeout)) \
        if kind == "learner" else f"{GRADER_CELL}\npass"
    if not _responsive(client, index, max(1, min(5, int(deadline - time.monotonic()))), code):
        run.notes.append("the kernel ignored the interrupt and was stopped")
        return (TIMEOUT, "the kernel was stuck (ignored an interrupt) before this check ran")
    return None


def _interrupted_code(reason: str, whole_limit: bool) -> str:
    """A cell that tells the kernel why the grader interrupted the cell run last (:func:`runner.mark_interrupted`): a
    name that cell left undefined is then reported as such, not as the learner's KeyboardInterrupt; and, when it ran
    the ``whole_limit``, a check it called is not run again on the same function."""
    return (f"{GRADER_CELL}\n"
            f"__import__('kd_tutorial.grading.runner', fromlist=['_']).mark_interrupted({reason!r}, {whole_limit!r})")


def _responsive(client, index: int, seconds: int = 5, code: str = f"{GRADER_CELL}\npass") -> bool:
    """After an interrupt: does the kernel answer a trivial cell (``code``) within ``seconds``?"""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError  # noqa: PLC0415
    from nbformat.v4 import new_code_cell  # noqa: PLC0415

    client.timeout, client.timed_out = seconds, False
    try:
        client.execute_cell(new_code_cell(code), index)
    except (CellTimeoutError, DeadKernelError):
        return False
    return not client.timed_out


def _read_results(path: str, guard_nonce: str, check_nonce: str, set_id: str, run: Run) -> None:
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        try:
            rec = json.loads(line)
        except JSON_ERRORS:
            continue
        if not isinstance(rec, dict):
            continue
        kind = rec.get("kind")
        if kind == "result" and rec.get("nonce") == check_nonce:
            ex_set, _, label = str(rec.get("exercise", "")).partition(".")
            if ex_set == set_id and label in SETS[set_id][1] and label not in run.results:
                run.results[label] = (str(rec.get("status")), str(rec.get("message", "")))
        elif kind == "note" and rec.get("nonce") in (check_nonce, guard_nonce) and \
                str(rec.get("note", ""))[:300] not in run.notes:  # the checks' notes, and the kernel's guard's
            run.notes.append(str(rec.get("note", ""))[:300])
        elif kind == "flag" and rec.get("nonce") == guard_nonce:
            text = {"read-solutions": "tried to read solution/notebook files (blocked)",
                    "write-notebooks": "tried to write a notebook or solution file (blocked)",
                    "viewed-solution": "called .solution()",
                    "patched-libraries": "replaced functions the checks use (put back before the checks)"}.get(
                rec.get("flag"), str(rec.get("flag")))
            entry = f"{text}: {rec.get('detail', '')}"
            if entry not in run.flags:
                run.flags.append(entry)
        elif kind == "kernel" and rec.get("nonce") == guard_nonce:
            run.kernel_python = rec.get("executable")
            if run.kernel_python and os.path.realpath(run.kernel_python) != os.path.realpath(sys.executable):
                run.notes.append(f"kernel ran {run.kernel_python}, not {sys.executable}")
