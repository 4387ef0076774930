"""``kd-tutorial grade SUBMISSIONS... [--out grades.csv] [--timeout SECONDS]``: grade a workshop's notebooks.

Each submission runs in a fresh kernel of this interpreter (whatever
kernelspec the file names), with per-cell and per-notebook timeouts; the
package's checks run in that kernel after the learner's cells and report as
structured data. The learner's ID is the file name (stem), or, for the stems that
repeat (one folder per learner), the path below those notebooks' common folder. One
row per learner and exercise goes to a CSV (UTF-8 with a byte-order mark, for
Excel) and a JSON file (both written to temporary files, then renamed into place
together), and a summary table is printed; text that cannot be encoded (a file name
that is not UTF-8) is escaped, never fatal. An earlier report at ``--out`` is
merged: the notebooks graded now replace their rows, the others' rows are kept.
Exit status: 0 once everything is graded, 2 on usage errors (one line naming the
fix, before anything is graded: a report path that cannot be written or would
overwrite a file that is not an earlier report is refused first; or, after grading, when the disk refused the
reports at ``--out``: they are then in a new temporary folder, named in one line), 130 on Ctrl-C,
SIGTERM or SIGHUP (the reports then hold the notebooks graded before it; one that comes while they are written
lets the write finish first).

Security model: grading *runs the learners' code*. Grade untrusted
submissions inside a container or VM. The solutions are public (and
``q.solution()`` shows them), so the grades are formative.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from ..errors import (file_argument, held_open_fix, JSON_ERRORS, path_argument, refuse_not_regular, shell_arg,
                      UsageError, UserError)
from .core import ERROR, NOT_ATTEMPTED, PASSED
from .registry import SETS, set_for_name

SUBMISSION_KEYS = ("learner", "file", "notebook", "flags", "notes", "seconds")
COLUMNS = ["learner", "file", "notebook", "exercise", "title", "status", "message", "flags", "notes", "seconds"]
SHORT = {"passed": "pass", "failed": "FAIL", "not attempted": "-", "error": "ERROR", "timeout": "TIMEOUT"}
CLUTTER = {"__MACOSX", ".ipynb_checkpoints"}  # folders whose files are never a learner's notebook
LOCK_SUFFIX = ".kd-lock"  # a report's lock beside it, .<name>.kd-lock (report_locked): never a learner's file
INVALID = "not a valid notebook"  # how the notes of a submission that could not be read as a notebook begin
UNKNOWN_SET = ("cannot tell which exercise notebook this is: give the learner's copy of a notebook of exercises/, "
               "or put its name in the file name (e.g. alice_02_soft_targets_temperature.ipynb)")


def find_submissions(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Expand files and folders into notebook paths; also return the missing paths."""
    found, missing, _ = scan(paths)
    return found, missing


def _skipped(path: Path, folder: Path) -> bool:
    """Whether a file found in ``folder`` is clutter, never a learner's: what a Mac adds to a zip (``__MACOSX/``,
    ``._name`` AppleDouble files, ``.DS_Store``), Jupyter's ``.ipynb_checkpoints/``, a report's lock
    (:func:`report_locked`)."""
    return (not path.is_file() or path.name.startswith("._") or path.name == ".DS_Store"
            or (path.name.startswith(".") and LOCK_SUFFIX in path.name)
            or bool(CLUTTER & set(path.relative_to(folder).parts[:-1])))


def scan(paths: list[str]) -> tuple[list[Path], list[str], list[Path]]:
    """The notebooks of ``paths`` (files as given; ``*.ipynb`` in folders, in any case: ``.IPYNB``), each file once
    however it was named (relative, absolute, a link); the missing paths; the other files found in the folders."""
    found, missing, others = [], [], []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            unreadable(p)
            for q in sorted(q for q in p.rglob("*") if not _skipped(q, p)):
                (found if q.suffix.lower() == ".ipynb" else others).append(q)
        elif p.is_file():
            found.append(p)
        else:
            missing.append(raw)
    unique: dict[str, Path] = {}
    for p in found:
        unique.setdefault(file_key(p), p)
    return list(unique.values()), missing, others


def unreadable(folder: Path) -> None:
    """Name, in one line each, the subfolders of ``folder`` that cannot be read: a glob passes them by without a
    word, and a learner whose folder it is would be missing from the reports unnoticed."""
    def say(err: OSError) -> None:
        _say(f"cannot read {err.filename} ({(err.strerror or type(err).__name__).lower()}): its notebooks are not "
             "graded; fix its permissions and grade it again")
    for _ in os.walk(folder, onerror=say):
        pass


def file_key(file) -> str:
    """A submission's identity in the reports: its resolved path (:func:`printable`), however it was given."""
    return printable(os.path.realpath(os.fspath(file)))


def still_there(key: str) -> bool:
    """Whether the notebook of a report's ``file`` (a :func:`file_key`) exists: under that name, or under the name
    whose undecodable bytes :func:`printable` escaped (``\\xff`` back to the byte 0xff)."""
    if os.path.exists(key):
        return True
    try:
        raw = re.sub(rb"\\x([89a-f][0-9a-f])", lambda m: bytes([int(m[1], 16)]), os.fsencode(key))
    except UnicodeEncodeError:  # a lone surrogate: no file name decodes to it
        return False
    return os.path.exists(raw)


def load(path: Path):
    """Read a notebook; return ``(nb, None)`` or ``(None, short reason)``, the reason naming the fix for what a
    download gets wrong (an empty file, a web page, a file cut short)."""
    import nbformat  # noqa: PLC0415
    again = "download the learner's notebook again"
    try:
        raw = path.read_bytes()
        if not raw.strip():
            return None, f"the file is empty: {again}"
        if raw.lstrip()[:1] == b"<":
            return None, f"it is a web page (HTML), not a notebook: {again} (File > Download)"
        try:
            data = json.loads(raw)
        except (*JSON_ERRORS, UnicodeDecodeError):
            return None, f"NotJSONError: it is not JSON, perhaps cut short: {again}, or re-save it in Jupyter"
        if not (isinstance(data, dict) and "nbformat" in data):  # nbformat would read it as version 2, cells emptied
            return None, "it has no nbformat version, so Jupyter did not save it: open it and save it again in Jupyter"
        # with a byte-order mark, or in UTF-16 (Windows editors save so): json reads either, and so does this
        nb = nbformat.reads(raw.decode(json.detect_encoding(raw)), as_version=4)
        if not isinstance(nb.get("cells"), list):
            return None, "it has no list of cells"
        return nb, None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is graded as 'error'
        reason = " ".join(str(exc).replace("\\n", " ").split())
        reason = reason.split(": '")[0][:120]  # drop the echoed file content
        return None, (f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__) + \
            "; open it and save it again in Jupyter"


def detect_set(nb, path: Path) -> str | None:
    """The exercise set of a submission: notebook metadata, then imports, then the file/folder name."""
    if nb is not None:
        meta = nb.get("metadata", {}).get("kd_tutorial", {})
        if isinstance(meta, dict) and isinstance(meta.get("exercise_set"), str) and meta["exercise_set"] in SETS:
            return meta["exercise_set"]
        source = "\n".join(str(c.get("source", "")) for c in nb.get("cells", []) if isinstance(c, dict))
        for set_id in SETS:
            if f"kd_tutorial.grading.{set_id}" in source:
                return set_id
    return set_for_name(str(path))


def course_notebook(nb, set_id: str) -> bool:
    """Whether ``nb`` is the course's notebook of ``set_id`` (notebooks/NN_*.ipynb, whose cell ids are ``NN-00``,
    ``NN-n01``...), not the learner's copy of the exercises: it neither names an exercise set nor imports its checks,
    and most of its cells carry the course notebook's ids."""
    meta = nb.get("metadata", {}).get("kd_tutorial")
    cells = [c for c in nb.get("cells", []) if isinstance(c, dict)]
    if (isinstance(meta, dict) and "exercise_set" in meta) or not cells or any(
            "kd_tutorial.grading.ex" in str(c.get("source", "")) for c in cells):
        return False
    course = re.compile(rf"{re.escape(SETS[set_id][0][:2])}-n?\d+")
    return 2 * sum(bool(course.fullmatch(str(c.get("id", "")))) for c in cells) > len(cells)


def course_notebook_message(set_id: str) -> str:
    """The one line for a course notebook handed in instead of the exercises (:func:`course_notebook`)."""
    stem = SETS[set_id][0]
    return (f"this is the course notebook notebooks/{stem}.ipynb, not the exercises: its own code is not the "
            f"learner's answers, so it was not graded; ask for the learner's copy of exercises/{stem}.ipynb")


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode escaped: a file name's undecodable bytes (``\\xe9``), lone surrogates."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def printable_all(data):
    """``data`` (dicts, lists, strings...) with every string :func:`printable`."""
    if isinstance(data, str):
        return printable(data)
    if isinstance(data, dict):
        return {printable_all(k): printable_all(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [printable_all(v) for v in data]
    return data


def _say(message: str, file=None) -> None:
    """Print ``message`` on ``file`` (stdout), what its encoding cannot encode escaped."""
    stream = file or sys.stdout
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        print(printable(message).encode(encoding, "backslashreplace").decode(encoding), flush=True, file=stream)
    except OSError:  # a terminal gone with a dropped SSH session (SIGHUP): the reports are written all the same
        pass


class GradingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGTERM, SIGHUP) during :func:`grade_paths`: the rows and submissions of the notebooks finished before
    it, of ``total``."""

    def __init__(self, rows: list[dict], submissions: list[dict], total: int):
        super().__init__(f"interrupted after {len(submissions)} of {total} notebooks")
        self.rows, self.submissions, self.total = rows, submissions, total


class GradingStopped(UserError):
    """The grading cannot go on (:class:`~kd_tutorial.grading.execute.ResultsRefused`: the checks cannot write their
    results): ``why``, one line; the rows and submissions of the notebooks finished before, of ``total``."""

    def __init__(self, why: str, rows: list[dict], submissions: list[dict], total: int):
        super().__init__(why)
        self.why, self.rows, self.submissions, self.total = why, rows, submissions, total


def learner_names(paths: list[Path]) -> dict[Path, str]:
    """Each notebook's learner: its stem, or, for notebooks whose stems repeat (``alice/02.ipynb``, ``bob/02.ipynb``),
    their path below their common folder without the suffix (``alice/02``); the other learners keep their stems."""
    by_stem: dict[str, list[Path]] = {}
    for p in paths:
        by_stem.setdefault(p.stem, []).append(p)
    names = {}
    for stem, group in by_stem.items():
        if len(group) == 1:
            names[group[0]] = stem
            continue
        absolute = {p: Path(os.path.abspath(p)) for p in group}
        common = os.path.commonpath([str(a.parent) for a in absolute.values()])
        longer = {p: a.relative_to(common).with_suffix("").as_posix() for p, a in absolute.items()}
        if len(set(longer.values())) < len(group):  # x.ipynb and x.IPYNB in one folder: keep the suffix
            longer = {p: a.relative_to(common).as_posix() for p, a in absolute.items()}
        names.update(longer)
    return names


_HELD_FROM: dict = {}  # while signals_deferred() holds a signal: the handler it replaced


@contextlib.contextmanager
def signals_interrupt():
    """While in this block, SIGTERM and SIGHUP (``docker stop``, a dropped SSH session) raise KeyboardInterrupt once,
    as Ctrl-C does: the kernel is shut down, the temporary folders removed and the notebooks graded so far reported.
    Inside :func:`signals_deferred` (the CLI's: no signal may fall between the grading and the reports' write),
    Ctrl-C gets its handler from before that block back meanwhile. The previous handlers come back after; outside
    the main thread (no handlers there) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum, frame):
        if not fired:  # a second signal must not break the cleanup that the first one started
            fired.append(signum)
            raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {}
    try:
        for sig in (getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)):
            if signal.getsignal(sig) is not signal.SIG_IGN:  # `nohup` ignores SIGHUP: so does the grading
                previous[sig] = signal.signal(sig, handler)
        if signal.SIGINT in _HELD_FROM:  # Ctrl-C interrupts the grading, as it would without the deferral
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, _HELD_FROM[signal.SIGINT])
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


@contextlib.contextmanager
def signals_deferred():
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP held off in this block (the main thread only): each one that arrives is
    appended to the yielded list instead of acting, so that the block (the reports' write: two renames) ends whole,
    and the caller stops after it. The previous handlers come back after; a signal ignored before the block
    (``nohup``'s SIGHUP) stays ignored. A :func:`signals_interrupt` block inside takes the signals over, and gives
    them back to this one as it ends: a signal then is held too, never lost between the two."""
    received: list[int] = []
    names = ("SIGINT", "SIGTERM", "SIGHUP") if threading.current_thread() is threading.main_thread() else ()
    previous = {}
    try:
        for sig in (getattr(signal, n) for n in names if hasattr(signal, n)):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
                _HELD_FROM[sig] = signal.SIG_DFL if previous[sig] is None else previous[sig]
        yield received
    finally:
        for sig, old in previous.items():
            _HELD_FROM.pop(sig, None)
            signal.signal(sig, signal.SIG_DFL if old is None else old)


def grade_paths(paths: list[Path], *, timeout: float, cell_timeout: float, max_output: int = 1_000_000,
                progress=_say) -> tuple[list[dict], list[dict]]:
    """Grade every notebook; return ``(rows, submissions)``. Ctrl-C (or SIGTERM, SIGHUP) stops it: the running kernel
    is shut down, then :class:`GradingInterrupted` carries the notebooks finished before; so does
    :class:`GradingStopped` when the checks cannot write their results (a full disk)."""
    from .execute import ResultsRefused  # noqa: PLC0415
    done: list[tuple[list[dict], dict]] = []  # appended whole, so an interrupt never splits a notebook's rows
    try:
        with signals_interrupt():  # the loading too: inside the CLI's signals_deferred(), a signal then would wait
            loaded = [(p, *load(p)) for p in paths]
            sets = {p: detect_set(nb, p) for p, nb, _ in loaded}
            common = Counter(s for s in sets.values() if s).most_common(1)
            fallback, names = (common[0][0] if common else None), learner_names(paths)
            for i, (path, nb, problem) in enumerate(loaded, 1):
                if progress:
                    progress(f"[{i}/{len(loaded)}] {names[path]} ({path})")
                limits = dict(timeout=timeout, cell_timeout=cell_timeout, max_output_bytes=max_output)
                try:
                    done.append(grade_one(path, nb, problem, names[path], sets[path], fallback, limits))
                except ResultsRefused as exc:  # this notebook's grades, and every later one's, would be wrong
                    raise GradingStopped(f"stopped before grading {names[path]} ({i} of {len(loaded)}): {exc}",
                                         [r for rows, _ in done for r in rows], [s for _, s in done], len(paths))
                except Exception as exc:  # noqa: BLE001 - one odd file is an error row, never the end of the batch
                    done.append(grade_one(path, None, f"the grader failed on it ({type(exc).__name__}: {exc})",
                                          names[path], sets[path], fallback, limits))
    except KeyboardInterrupt:
        raise GradingInterrupted([r for rows, _ in done for r in rows], [s for _, s in done], len(paths)) from None
    return [r for rows, _ in done for r in rows], [s for _, s in done]


def grade_one(path: Path, nb, problem: str | None, learner: str, detected: str | None, fallback: str | None,
              limits: dict) -> tuple[list[dict], dict]:
    """Grade one notebook (``nb`` loaded, or the ``problem`` that it could not be) of exercise set ``detected`` (else
    ``fallback``) under ``limits`` (:func:`run_submission`'s keywords); its rows and its submission."""
    from .execute import run_submission  # noqa: PLC0415
    from .registry import exercises  # noqa: PLC0415

    set_id = detected or fallback
    notes, flags, seconds, kernel = [], [], 0.0, None
    if set_id is None:
        results = {}
        notes.append(f"{INVALID} ({problem}); {UNKNOWN_SET}" if problem else UNKNOWN_SET)
    elif problem:
        results = {label: (ERROR, f"{INVALID} ({problem})") for label in SETS[set_id][1]}
        notes.append(f"{INVALID}: {problem}")
    elif course_notebook(nb, set_id):
        results = {label: (ERROR, f"{label}: {course_notebook_message(set_id)}") for label in SETS[set_id][1]}
        notes.append(course_notebook_message(set_id))
    else:
        if detected is None:
            notes.append(f"exercise set guessed from the other submissions ({set_id})")
        elif set_for_name(str(path)) not in (None, set_id):  # handed in for one assignment, holds another's
            notes.append(f"its name or folder says {SETS[set_for_name(str(path))][0]}, but it holds the exercises of "
                         f"{SETS[set_id][0]}: graded as those")
        run = run_submission(nb, set_id, **limits)
        results, flags, seconds, kernel = run.results, run.flags, run.seconds, run.kernel_python
        notes += run.notes
    titles = {}
    if set_id:
        try:
            titles = {ex.label: ex.title for ex in exercises(set_id)}
        except Exception:  # noqa: BLE001 - titles are cosmetic
            titles = {}
    base = {"learner": learner, "file": file_key(path), "notebook": SETS[set_id][0] if set_id else "?",
            "flags": "; ".join(flags), "notes": "; ".join(notes), "seconds": seconds}
    rows = [] if results else [{**base, "exercise": "?", "title": "", "status": ERROR,
                                "message": "; ".join(notes) or "could not grade"}]
    for label in (SETS[set_id][1] if set_id else []):
        status, message = results.get(label, (ERROR, "no result"))
        rows.append({**base, "exercise": f"{set_id}.{label}", "title": titles.get(label, ""),
                     "status": status, "message": message})
    return rows, {**{k: base[k] for k in SUBMISSION_KEYS},
                  "exercise_set": set_id, "kernel_python": kernel,
                  "passed": sum(1 for s, _ in results.values() if s == PASSED),
                  "total": len(SETS[set_id][1]) if set_id else 0}


def json_path_of(out: Path) -> Path:
    """The JSON report beside the CSV ``out``; a UsageError for an ``out`` that is itself a .json name."""
    if out.suffix.lower() == ".json":
        raise UsageError(f"--out {out} would put the CSV report where the JSON report goes: give a .csv name, e.g. "
                         f"--out {shell_arg(out.with_suffix('.csv'))} (the JSON report is written beside it)")
    return out.with_suffix(".json")


def is_report(path: Path) -> bool:
    """Whether ``path`` is empty or an earlier report of the grader (a CSV with its header, or its JSON)."""
    try:
        if path.stat().st_size == 0:
            return True
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8-sig"))
            return isinstance(data, dict) and {"submissions", "rows"} <= data.keys()
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as fh:  # -sig: Excel's BOM
            header = next(csv.reader(fh), [])
        return set(COLUMNS) <= set(header)  # columns an instructor added (comments) are the gradebook's too
    except (OSError, csv.Error, *JSON_ERRORS):
        return False


def check_out(out: Path) -> Path:
    """Refuse, before anything is graded, an ``--out`` the reports cannot go to: a folder, a .json name, a file
    (or a JSON beside it) that is not an earlier report, a folder that cannot be written. Returns the JSON path."""
    json_path = json_path_of(out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder: give a file name in it, e.g. --out {shell_arg(out / 'grades.csv')}")
    for path in (out, json_path):
        refuse_not_regular(path, f"--out {out} would write {path}", "give --out a file path")
    if out.exists() and not is_report(out):
        raise UsageError(f"--out {out} is a file but not a report of kd-tutorial grade: give --out a new .csv name, "
                         f"or move {out} away")
    if json_path.exists() and (json_path.is_dir() or not is_report(json_path)):
        raise UsageError(f"--out {out} would overwrite {json_path}, which is not a report of kd-tutorial grade: "
                         f"give --out another name, or move {json_path} away")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
        for path in (p for p in (out, json_path) if p.exists()):
            with path.open("a"):  # an earlier report: writable? (appending nothing changes nothing)
                pass
    except OSError as err:
        why = "it is a file" if out.parent.is_file() else (err.strerror or type(err).__name__).lower()
        raise UsageError(f"cannot write --out {out} ({err.filename or out.parent}: {why}): {held_open_fix(err)}give "
                         "--out a file in a folder you can write") from None
    return json_path


def _not_a_formula(value):
    """A CSV cell a spreadsheet shows as text: a learner named ``=1+2 alice.ipynb`` (or a message starting with
    ``+``, ``-``, ``@``) would otherwise be read as a formula. The JSON report keeps the text as it is."""
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@") else value


def write_reports(rows: list[dict], submissions: list[dict], out: Path, seconds: float) -> Path:
    """Write ``out`` (CSV) and the JSON next to it, text that UTF-8 cannot encode escaped; return the JSON path.
    Both are written in full to temporary files before either replaces its earlier report. The CSV starts with
    UTF-8's byte-order mark, so that Excel shows non-ASCII names right, and ends its lines with CRLF as written."""
    json_path = json_path_of(out)
    rows, submissions = printable_all(rows), printable_all(submissions)
    table = io.StringIO(newline="")
    extra = list(dict.fromkeys(k for row in rows for k in row if k not in COLUMNS))  # an instructor's own columns
    writer = csv.DictWriter(table, fieldnames=COLUMNS + extra)
    writer.writeheader()
    writer.writerows([{key: _not_a_formula(value) for key, value in row.items()} for row in rows])
    report = json.dumps({"seconds": round(seconds, 2), "submissions": submissions, "rows": rows},
                        indent=2, ensure_ascii=False) + "\n"
    replace_together({out: "\ufeff" + table.getvalue(), json_path: report})
    return json_path


def write_or_set_aside(rows: list[dict], submissions: list[dict], out: Path, seconds: float) -> tuple:
    """:func:`write_reports` to ``out``; when the disk refuses (full, gone, read-only since the start), to a new
    folder in the system's temporary folder instead, so that a batch's grades are never lost. Returns the CSV and
    JSON paths written, and None or the one line that says why they are not at ``out``."""
    from ..store import StorageError  # noqa: PLC0415 - store imports torch
    try:
        return out, write_reports(rows, submissions, out, seconds), None
    except (StorageError, OSError) as err:
        cause = err.__cause__ if isinstance(err.__cause__, OSError) else err
        why = (getattr(cause, "strerror", None) or type(cause).__name__).lower()
    when = "no program has it open (on Windows, Excel locks the CSV it shows)" if held_open_fix(cause) else \
        "it can be written"
    aside = Path(tempfile.mkdtemp(prefix="kd-grade-reports-")) / out.name
    json_path = write_reports(rows, submissions, aside, seconds)
    return aside, json_path, (f"cannot write {out} ({why}): the reports are in {aside} and {json_path} instead; "
                              f"copy them to {out} once {when} (what was there is untouched)")


def replace_together(texts: dict[Path, str]) -> None:
    """Write every ``{path: text}`` (line endings untranslated) to a temporary file beside its path, then rename them
    all into place: a failure while writing leaves every earlier file as it was."""
    from ..store import MARK, atomic_write_text  # noqa: PLC0415 - store imports torch

    staged: dict[Path, Path] = {}
    texts = {Path(os.path.realpath(p)) if Path(p).is_symlink() else p: t for p, t in texts.items()}  # through a link,
    try:  # the file it names (a gradebook kept elsewhere): the link stays a link, as report's writes keep it
        for path, text in texts.items():
            staged[path] = path.with_name(f".{path.name}.{MARK}grade{os.getpid()}.tmp")
            staged[path].unlink(missing_ok=True)  # a leftover of ours, or a link the write would follow
            atomic_write_text(staged[path], text, newline="")  # "": the CSV's \r\n never becomes \r\r\n
        for path, tmp in staged.items():
            os.replace(tmp, path)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)


def read_report(out: Path) -> tuple[list[dict], list[dict]]:
    """The rows and submissions of the earlier report at ``out``: from the JSON beside it, else (JSON gone or not a
    report) from the CSV itself, its submissions rebuilt from its rows; ``([], [])`` when ``out`` holds no report."""
    if not (out.is_file() and out.stat().st_size > 0 and is_report(out)):
        return [], []
    try:  # the CSV is the gradebook (an instructor may have edited it): the JSON only where it says the same
        with out.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            raw = [row for row in reader if isinstance(row.get("file"), str) and row["file"].strip()]  # no blank rows
            columns = COLUMNS + [k for k in reader.fieldnames or [] if k and k not in COLUMNS]  # an added column kept
        rows = [{k: _formula_back(row.get(k) or "") for k in columns} for row in raw]
    except UnicodeDecodeError:
        raise UsageError(f"the earlier report {out} is not UTF-8 (saved by Excel as \"CSV (Comma delimited)\"?): save "
                         "it again as \"CSV UTF-8\", or give --out a new .csv name") from None
    except (OSError, csv.Error) as err:
        raise UsageError(f"cannot read the earlier report {out} ({err}): give --out a new .csv name, or move {out} "
                         "away") from None
    with contextlib.suppress(OSError, *JSON_ERRORS, TypeError, KeyError, AttributeError):  # no JSON (moved away,
        data = json.loads(json_path_of(out).read_text(encoding="utf-8-sig"))  # say), or an edited one: the CSV alone
        same = _well_formed(data) and [[_csv_cell(r.get(k)) for k in COLUMNS] for r in data["rows"]] == \
            [[r.get(k) or "" for k in COLUMNS] for r in raw]  # every column: an ID renamed in the CSV is kept
        if same and columns == COLUMNS:
            return [{k: r.get(k, "") for k in COLUMNS} for r in data["rows"]], data["submissions"]
    submissions: dict[str, dict] = {}
    for row in rows:
        with contextlib.suppress(ValueError):
            row["seconds"] = float(row["seconds"])
        set_id = row["exercise"].partition(".")[0] if "." in row["exercise"] else None
        sub = submissions.setdefault(row["file"], {**{k: row[k] for k in SUBMISSION_KEYS}, "exercise_set": set_id,
                                                   "kernel_python": None, "passed": 0, "total": 0})
        sub["passed"] += row["status"] == PASSED
        sub["total"] += set_id is not None
    return rows, list(submissions.values())


def _well_formed(data) -> bool:
    """Whether a JSON report's rows and submissions are what :func:`write_reports` writes, as far as merging reads
    them: lists of dicts whose ``file`` and ``learner`` are text (a hand-edited learner of 5 or ["a"] stopped a
    grading after every notebook had run)."""
    parts = [data.get("rows"), data.get("submissions")] if isinstance(data, dict) else [None]
    return all(isinstance(part, list) and all(
        isinstance(x, dict) and isinstance(x.get("file"), str) and isinstance(x.get("learner", ""), str)
        for x in part) for part in parts)


def _csv_cell(value) -> str:
    """What :func:`write_reports` wrote in the CSV for a JSON report's ``value``."""
    return "" if value is None else str(_not_a_formula(value))


def _formula_back(value):
    """A CSV cell as :func:`_not_a_formula` found it."""
    return value[1:] if isinstance(value, str) and value[:1] == "'" and value[1:2] in ("=", "+", "-", "@") else value


def _free_id(learner: str, file: str, taken: set) -> str:
    """``learner``, or, where a kept learner of the report has that ID (another folder's frank_02), or the report
    tells this notebook's learners apart by their folders (alice/02, bob/02), the ID with the notebook's folder in
    front (late/frank_02, carol/02), else its whole path."""
    if learner not in taken and not any(t.endswith(f"/{learner}") for t in taken):
        return learner
    longer = f"{Path(file).parent.name}/{learner}"
    return longer if longer not in taken else str(Path(file).with_suffix(""))


def _kept_id(earlier: str | None, now: str, key: str, taken: set) -> str:
    """A regraded notebook's learner ID: its earlier one, unless that was the bare file name (one notebook graded
    alone) and this run names it by its folder (alice/02_...) as it names the others; a new notebook's is free."""
    if earlier is None:
        return _free_id(now, key, taken)
    if earlier == Path(key).stem and now != earlier and now not in taken:
        return now
    return earlier


def merge_reports(rows: list[dict], submissions: list[dict], earlier_rows: list[dict],
                  earlier_submissions: list[dict]) -> tuple[list[dict], list[dict], int, list[str]]:
    """An earlier report with this run's notebooks in it: a notebook graded again (the same file, however named)
    replaces its rows in place, under its earlier learner ID (unless that was its bare file name and this run, seeing
    more of the class, tells it apart by its folder), and keeps the values of the columns an instructor added; the
    others' rows are kept; new ones are added at the end. Returns the rows, the submissions, how many earlier rows
    were kept, and the notebooks they are of."""
    earlier_ids = {file_key(x["file"]): x["learner"] for x in (*earlier_rows, *earlier_submissions) if "learner" in x}
    now = {file_key(s["file"]) for s in submissions}
    taken = {v for k, v in earlier_ids.items() if k not in now}
    ids = {key: _kept_id(earlier_ids.get(key), s["learner"], key, taken)
           for key, s in ((file_key(s["file"]), s) for s in submissions)}
    added = {(file_key(r["file"]), r.get("exercise")): {k: v for k, v in r.items() if k not in COLUMNS}
             for r in earlier_rows}
    rows = [{**added.get((file_key(x["file"]), x.get("exercise")), {}), **x} for x in rows]
    rows, submissions = ([{**x, "learner": ids.get(file_key(x["file"]), x["learner"])} for x in xs]
                         for xs in (rows, submissions))

    def merged(new: list[dict], old: list[dict]) -> list[dict]:
        groups: dict[str, list[dict]] = {}
        for x in old:
            groups.setdefault(file_key(x["file"]), []).append(x)
        for key in now & groups.keys():
            groups[key] = []  # graded again: its new rows go where its old ones were
        for x in new:
            groups.setdefault(file_key(x["file"]), []).append(x)
        return [x for group in groups.values() for x in group]

    kept = [r for r in earlier_rows if file_key(r["file"]) not in now]
    return (merged(rows, earlier_rows), merged(submissions, earlier_submissions), len(kept),
            sorted({file_key(r["file"]) for r in kept}))


def _cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters: cut at the last space that leaves room for "…" (mid-word only for a
    word longer than half the limit), the punctuation before the cut dropped."""
    if len(text) <= limit:
        return text
    head = text[:limit - 1]
    space = head.rfind(" ")
    if space >= limit // 2:
        head = head[:space]
    return head.rstrip(" ,;:") + "…"


def summary(rows: list[dict], submissions: list[dict]) -> str:
    """A plain-text table: one line per learner, then the messages of everything not passed (:func:`printable`)."""
    rows, submissions = printable_all(rows), printable_all(submissions)
    by_learner: dict[str, list[dict]] = {}
    for r in rows:
        by_learner.setdefault(r["file"], []).append(r)
    width = max([len(s["learner"]) for s in submissions] + [7])
    lines = [f"{'learner':<{width}}  {'notebook':<28} {'score':>5}  exercises"]
    for s in submissions:
        marks = " ".join(f"{r['exercise'].split('.')[-1]}:{SHORT.get(r['status'], r['status'])}"
                         for r in by_learner.get(s["file"], []))
        score = f"{s['passed']}/{s['total']}"
        extra = "  [" + _cut("; ".join(x for x in (s["flags"], s["notes"]) if x), 110) + "]" \
            if (s["flags"] or s["notes"]) else ""
        lines.append(f"{s['learner']:<{width}}  {s['notebook']:<28} {score:>5}  {marks}{extra}")
    details = [f"  {r['learner']} {r['exercise']} {r['status']}: {_cut(r['message'], 150)}"
               for r in rows if r["status"] not in (PASSED, NOT_ATTEMPTED)]
    if details:
        lines += ["", "Details (failed, error, timeout):", *details]
    counts = Counter(r["status"] for r in rows)
    lines += ["", "Totals: " + ", ".join(f"{k} {counts[k]}" for k in SHORT if counts[k])]
    return "\n".join(lines)


def _parser(parser_class) -> argparse.ArgumentParser:
    """The arguments of ``kd-tutorial grade``."""
    parser = parser_class(prog="kd-tutorial grade", description="Grade a workshop's notebooks: each runs in a fresh "
                          "kernel, its checks report, and one row per learner and exercise goes to a CSV and a JSON "
                          "report (merged into an earlier report at --out).",
                          epilog="Exit status: 0 once the notebooks are graded, whatever the scores (a broken "
                          "notebook among them is an error row); 1 when none of them is a valid notebook (the reports "
                          "are written still); 2 on bad input; 130 when interrupted.")
    parser.add_argument("submissions", nargs="+", metavar="SUBMISSIONS", type=path_argument,
                        help="notebooks, or folders searched recursively for *.ipynb")
    parser.add_argument("--out", type=lambda text: Path(file_argument("grades.csv")(text)), default=Path("grades.csv"),
                        help="CSV report (the JSON report goes next to it); default grades.csv. An earlier report "
                        "there keeps the rows of the notebooks not graded now")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="time limit per notebook, kernel start included (default 300)")
    parser.add_argument("--cell-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="time limit per learner cell and per check (default 60); torch and the "
                        "checks' imports are loaded before the learner's cells, under the notebook limit only")
    parser.add_argument("--max-output", type=int, default=1_000_000, metavar="CHARS",
                        help="output kept per notebook, counted in characters, not bytes (default 1,000,000); a "
                        "learner's cell that prints or displays more than this by itself to the notebook (stdout, "
                        "stderr, display(), its last value) is stopped there, with an error; images, updates of a "
                        "display, a subprocess's or another thread's output, and output redirected elsewhere are not "
                        "counted")
    return parser


def check_limits(args) -> None:
    """Refuse a --timeout or --cell-timeout that is not a finite number of seconds above 0 (nan, inf, 0, -1), and a
    --max-output below 1 character."""
    for flag, value, default in (("--timeout", args.timeout, 300), ("--cell-timeout", args.cell_timeout, 60)):
        if not (math.isfinite(value) and value > 0):
            raise UsageError(f"{flag} {value:g} is not a time limit: give a finite number of seconds above 0, "
                             f"e.g. {flag} {default}")
    if args.max_output < 1:
        raise UsageError(f"--max-output {args.max_output} is not an amount of output: give a number of "
                         "characters of 1 or more, e.g. --max-output 1000000")


def submissions_of(raw: list[str]) -> list[Path]:
    """The notebooks to grade; a UsageError naming what to give for a missing path or no notebook at all."""
    paths, missing, others = scan(raw)
    if others:  # a zip's README or data file, a notebook saved as .txt: named, so nobody is missed silently
        names = ", ".join(p.name for p in others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        _say(f"skipped {len(others)} file{'s that are' if len(others) > 1 else ' that is'} not "
             f"{'notebooks' if len(others) > 1 else 'a notebook'}: {names}")
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}: give the learners' .ipynb files, or "
                         "folders that hold them")
    reports = [p for p in paths if p.suffix.lower() != ".ipynb" and p.stat().st_size > 0 and is_report(p)]
    if reports:  # `grade out/*` also names the reports an earlier run wrote there: they are no learner's
        _say(f"skipped {len(reports)} earlier grading report(s), not notebooks: {', '.join(map(str, reports))}")
        paths = [p for p in paths if p not in reports]
    if not paths:
        raise UsageError(f"no notebooks (*.ipynb) found in {', '.join(raw)}: give the learners' .ipynb files, or "
                         "a folder that holds them (its subfolders are searched too)")
    return paths


def main(argv: list[str] | None = None, parser_class=argparse.ArgumentParser) -> int:
    """Entry point of ``kd-tutorial grade``; returns the exit status. Bad input is one line on stderr and status 2
    (``parser_class``: the CLI passes its one-line parser)."""
    args = _parser(parser_class).parse_args(argv)
    try:
        return _grade(args)
    except UserError as exc:
        _say(f"kd-tutorial grade: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _say(f"kd-tutorial grade: interrupted before the reports were written: {args.out} and its JSON are as they "
             "were; run it again to grade the notebooks", file=sys.stderr)
        return 130


def _partial_out(out: Path) -> Path:
    """Where an interrupted run's reports go: ``out``, unless an earlier report is there (a whole class's, which a
    few notebooks must not replace): then ``<name>-interrupted.csv`` beside it."""
    if not (out.exists() and out.stat().st_size > 0):
        return out
    partial = out.with_name(f"{out.stem}-interrupted{out.suffix}")
    check_out(partial)
    return partial


@contextlib.contextmanager
def report_locked(out: Path):
    """Hold a lock on the report ``out`` (:func:`kd_tutorial.store.locked`: ``.<name>.kd-lock`` beside it, an empty
    file that stays) for the block: two gradings into one --out read, merge and write it one after the other, so
    neither drops the rows the other writes. Where the lock cannot be had (a folder read-only since the start, or
    a holder past ``$KD_TUTORIAL_LOCK_TIMEOUT``), the block runs without it: the grades are written still (or, where
    the folder refuses them, set aside by :func:`write_or_set_aside`), never lost."""
    from ..store import locked  # noqa: PLC0415 - store imports torch
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(OSError, UserError):  # StorageError, ArtifactError: kd_tutorial.store's
            stack.enter_context(locked(out.parent, name=f".{out.name}{LOCK_SUFFIX}", what=f"the report {out}"))
        yield


def _read_again(out: Path, earlier: tuple) -> tuple:
    """The earlier report at ``out`` read again just before this run's rows are merged in (holding
    :func:`report_locked`), so that rows another grading wrote there while this one ran (or an instructor's edits)
    are kept; ``earlier``, as read at the start, when it can no longer be read."""
    try:
        return read_report(out)
    except UsageError:
        return earlier


def _grade(args) -> int:
    """Check every input of ``args``, then grade, write the reports (merged into an earlier report at ``--out``) and
    print the summary; the exit status (130, with the reports of the notebooks finished, when interrupted)."""
    check_limits(args)
    from ..store import lock_timeout  # noqa: PLC0415 - store imports torch
    lock_timeout()  # a bad $KD_TUTORIAL_LOCK_TIMEOUT, refused now: inside report_locked it left the report unlocked
    paths = submissions_of(args.submissions)
    check_out(args.out)
    earlier = read_report(args.out)  # read before grading: a report that cannot be read is refused first
    start, stopped = time.monotonic(), None
    # held from before the grading hands its signals back until the reports are whole: a signal after the grading
    # neither kills the run with no report nor cuts the report; it stops the run once the reports are written
    with signals_deferred() as received:
        try:
            rows, submissions = grade_paths(paths, timeout=args.timeout, cell_timeout=args.cell_timeout,
                                            max_output=args.max_output)
        except (GradingInterrupted, GradingStopped) as stop:
            if not stop.submissions and isinstance(stop, GradingStopped):
                raise UserError(f"{stop.why} (nothing was written)") from stop
            if not stop.submissions:  # nothing graded: earlier reports are kept as they are
                _say(f"kd-tutorial grade: interrupted before any of the {stop.total} notebooks was graded: nothing "
                     "was written; run it again to grade them", file=sys.stderr)
                return 130
            rows, submissions, stopped = stop.rows, stop.submissions, stop
            args.out = _partial_out(args.out)  # this run's notebooks, and an earlier interrupted run's there
        seconds = time.monotonic() - start
        with report_locked(args.out):  # read, merged and written while another grading into it waits
            # the report as it is now: another grading into this --out may have written it meanwhile
            earlier = _read_again(args.out, earlier if stopped is None else ([], []))
            all_rows, all_submissions, kept, notebooks = merge_reports(rows, submissions, *earlier)
            args.out, json_path, failed = write_or_set_aside(all_rows, all_submissions, args.out, seconds)
    if received and stopped is None:  # every notebook was graded: the reports hold them all
        if failed:
            _say(f"kd-tutorial grade: {failed}", file=sys.stderr)
        return _interrupted(len(submissions), len(paths), args.out, json_path)
    graded = {file_key(s["file"]) for s in submissions}
    _say("\n" + summary([r for r in all_rows if file_key(r["file"]) in graded],
                        [s for s in all_submissions if file_key(s["file"]) in graded]))
    if kept:
        gone = [n for n in notebooks if not still_there(n)]
        _say(f"\nkept {kept} earlier row(s) in {args.out}, of {len(notebooks)} notebook(s) this run did not grade"
             + (f" ({len(gone)} of them no longer there: {', '.join(Path(n).name for n in gone[:3])})" if gone else "")
             + " (give --out a new name for a report of this run only)")
    _say(f"\nGraded {len(submissions)} notebook(s) in {seconds:.1f} s -> {args.out}, {json_path}")
    if failed:
        _say(f"kd-tutorial grade: {failed}", file=sys.stderr)
    if isinstance(stopped, GradingStopped):
        _say(f"kd-tutorial grade: {stopped.why} (the reports hold the {len(submissions)} graded before)",
             file=sys.stderr)
        return 2
    if stopped is not None:
        return _interrupted(len(submissions), stopped.total, args.out, json_path)
    if not failed and none_graded(submissions):
        _say(f"kd-tutorial grade: none of the {len(submissions)} file(s) is a valid notebook, so nothing was graded "
             f"(the reports say why for each): give the learners' .ipynb files as Jupyter saved them", file=sys.stderr)
        return 1
    return 2 if failed else 0


def none_graded(submissions: list[dict]) -> bool:
    """Whether a run had submissions and none of them could be read as a notebook (each a row of
    :data:`INVALID`): a batch with one broken notebook among others is graded, and exits 0."""
    return bool(submissions) and all(s["notes"].startswith(INVALID) for s in submissions)


def _interrupted(n: int, total: int, out: Path, json_path: Path) -> int:
    """Say that the run stopped (Ctrl-C, SIGTERM, SIGHUP) after ``n`` of ``total`` notebooks, whose rows the reports
    hold; exit status 130."""
    again = f"; run it again to grade all {total}" if n < total else ""
    _say(f"kd-tutorial grade: interrupted after {n} of {total} notebooks: the reports ({out}, {json_path}) hold "
         f"those {n}{again}", file=sys.stderr)
    return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
