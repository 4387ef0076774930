"""Generate ``exercises/`` from ``solutions/`` (``kd-tutorial make-exercises``).

``solutions/*.ipynb`` are the single source of truth. Each region between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` becomes the stub that nbgrader
would leave (``# YOUR CODE HERE`` / ``raise NotImplementedError()``, at the
marker's indentation); outputs and execution counts are stripped; cell ids
and nbgrader metadata are kept. ``--check`` reports a stale ``exercises/``.

A learner's work is never lost: the hash of every notebook's cells as written is
recorded in ``exercises/.make-exercises.json``; a notebook whose cells no longer
match it (or, with no record, match neither it nor the new version) is not
overwritten without ``--force``, and only notebooks the record lists, unchanged,
are removed when their solution is gone. Bad input is one line, exit status 2.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from ..errors import DISK_FULL, JSON_ERRORS, path_argument, shell_arg, UsageError, UserError

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
RECORD = ".make-exercises.json"  # in the exercises folder: {"notebooks": {name: cells hash as written}}


class AuthoringError(UsageError):
    """A solution notebook is malformed (not a notebook, unbalanced or nested markers)."""


def stub_source(source: str, where: str = "cell") -> str:
    """Replace every solution region of a code cell's source with the stub."""
    out: list[str] = []
    inside = False
    for line in source.split("\n"):
        if BEGIN in line:
            if inside:
                raise AuthoringError(f"{where}: nested '{BEGIN}'")
            inside = True
            indent = re.match(r"\s*", line).group(0)
            out.extend(indent + s for s in STUB)
        elif END in line:
            if not inside:
                raise AuthoringError(f"{where}: '{END}' without '{BEGIN}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise AuthoringError(f"{where}: '{BEGIN}' without '{END}'")
    return "\n".join(out)


def make_exercise(nb):
    """Return the exercise version of a solution notebook (a new ``NotebookNode``)."""
    nb = copy.deepcopy(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        nbgrader = cell.get("metadata", {}).get("nbgrader")  # null where a tool wrote the key empty: no solution
        is_solution = isinstance(nbgrader, dict) and nbgrader.get("solution", False)
        if BEGIN in cell.source or END in cell.source:
            cell.source = stub_source(cell.source, f"cell {i}")
        elif is_solution:  # nbgrader replaces an unmarked solution cell entirely
            cell.source = "\n".join(STUB)
        cell.outputs = []
        cell.execution_count = None
    return nb


def _writes(nb) -> str:
    import nbformat  # noqa: PLC0415
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def read_solution(path: Path):
    """A solution notebook, read and validated; an AuthoringError naming the file and the fix if it is not one."""
    import nbformat  # noqa: PLC0415
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # noqa: BLE001 - NotJSONError, ValidationError, UnicodeDecodeError, OSError...
        raise AuthoringError(f"{path} is not a valid notebook ({type(exc).__name__}): save it again from Jupyter, "
                             f"or move it out of {path.parent}") from None
    return nb


def render(solutions: Path) -> dict[str, str]:
    """``{file name: exercise notebook text}`` for every solution notebook."""
    out = {}
    for path in sorted(solutions.glob("*.ipynb")):
        nb = read_solution(path)
        try:
            out[path.name] = _writes(make_exercise(nb))
        except AuthoringError as exc:
            raise AuthoringError(f"{path}, {exc}: pair each '{BEGIN}' with one '{END}' below it") from None
    return out


def cells_hash(text: str) -> str | None:
    """sha256 of a notebook's cells (their types and sources: what a learner edits; outputs and metadata are
    left out); None when ``text`` is not a notebook."""
    try:
        cells = [[c.get("cell_type"), "".join(c.get("source", ""))] for c in json.loads(text)["cells"]]
    except (*JSON_ERRORS, KeyError, TypeError, AttributeError):
        return None
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def read_record(exercises: Path) -> dict[str, str]:
    """``{name: cells hash}`` of the notebooks make-exercises wrote into ``exercises``; {} without a readable record."""
    try:
        record = json.loads((exercises / RECORD).read_text(encoding="utf-8"))["notebooks"]
        return {str(name): str(digest) for name, digest in record.items()}
    except (OSError, *JSON_ERRORS, KeyError, TypeError, AttributeError):
        return {}


def changed(path: Path, text: str, recorded: str | None) -> bool:
    """Whether the exercise notebook at ``path`` holds changes make-exercises did not make: its cells differ from
    the hash ``recorded`` when it was written or, with no record (an older version wrote it), from ``text``'s."""
    if not path.exists():
        return False
    current = _read(path)
    if current is None:  # a folder, or a file it cannot read, where the notebook goes: not make-exercises' to replace
        return True
    return current != text and cells_hash(current) != (recorded or cells_hash(text))


def _read(path: Path) -> str | None:
    """The text of ``path``, bytes that are not UTF-8 replaced; None when it is missing or cannot be read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def stale(solutions: Path, exercises: Path) -> list[str]:
    """Names of exercise notebooks that are missing, different (unreadable, not UTF-8...) or extra."""
    wanted = render(solutions)
    problems = [name for name, text in wanted.items() if _read(exercises / name) != text]
    problems += [p.name for p in sorted(exercises.glob("*.ipynb")) if p.name not in wanted]
    return problems


def check_advice(problems: list[str], solutions: Path, exercises: Path, command: str = "kd-tutorial make-exercises") \
        -> str:
    """What ``--check`` says of ``problems`` (:func:`stale`): the notebooks generating would write, with the
    ``command`` that writes them (the folders as given), those among them it would refuse to overwrite (changed since
    it wrote them: move them away, or ``--force``), and those with no solution that it would keep (it removes only
    its own, unchanged), which only moving them away fixes."""
    wanted, record = {p.name for p in solutions.glob("*.ipynb")}, read_record(exercises)
    keep = [n for n in problems if n not in wanted and not (
        record.get(n) and cells_hash(_read(exercises / n)) == record[n])]
    redo = [n for n in problems if n not in keep]
    texts = render(solutions) if redo else {}
    edited = [n for n in redo if n in texts and changed(exercises / n, texts[n], record.get(n))]
    said = [f"{exercises} is stale: {', '.join(redo)}. Run `{command}`."] if redo else []
    if edited:
        it = "it" if len(edited) == 1 else "them"
        said.append(f"It would refuse {', '.join(edited)}, changed since make-exercises wrote {it} (a learner's "
                    f"work?): move {it} out of {exercises} first, or add --force (what changed is lost).")
    if keep:
        said.append(f"{exercises} holds {', '.join(keep)}, which no solution generates and make-exercises did not "
                    f"write as it stands: move {'it' if len(keep) == 1 else 'them'} out of {exercises}.")
    return " ".join(said)


def generate(solutions: Path, exercises: Path, force: bool = False) -> tuple[list[Path], list[str]]:
    """Write ``exercises/`` from ``solutions/`` and record what was written; remove the notebooks it wrote earlier
    whose solution is gone, if unchanged. Refuses, before writing anything, to overwrite a notebook with changes
    it did not make (unless ``force``). Returns the written paths and the names of the notebooks left in place."""
    wanted = render(solutions)
    try:
        record = read_record(exercises)
        folders = [name for name in wanted if (exercises / name).is_dir()]
        if folders:  # not a notebook --force could replace: refused before anything is written
            one = len(folders) == 1
            raise UsageError(f"{', '.join(folders)} in {exercises} {'is a folder' if one else 'are folders'} where "
                             f"the exercise notebook goes: move {'it' if one else 'them'} out of {exercises}, then "
                             "run it again")
        edited = [name for name, text in wanted.items() if changed(exercises / name, text, record.get(name))]
        if edited and not force:
            them = "it" if len(edited) == 1 else "them"
            raise UsageError(f"{', '.join(edited)} in {exercises} changed since make-exercises wrote {them} (a "
                             f"learner's work?): move {them} out of {exercises} to keep {them}, or pass --force to "
                             f"overwrite {them}")
        exercises.mkdir(parents=True, exist_ok=True)
        written = [exercises / name for name, text in wanted.items() if _write(exercises / name, text)]
        kept = prune(exercises, set(wanted), record)
        notebooks = {name: cells_hash(text) for name, text in wanted.items()}
        _replace(exercises / RECORD, json.dumps({"written_by": "kd-tutorial make-exercises",
                                                 "notebooks": notebooks}, indent=1) + "\n")
    except OSError as err:  # a full disk is fixed by room on it, not by another folder's permissions
        fix = ("free some space on its disk (the notebooks already written are kept), then run it again" if
               err.errno in DISK_FULL else "give --exercises a folder you can write")
        raise UsageError(f"cannot write the exercises in {exercises} ({err.strerror or type(err).__name__}): "
                         f"{fix}") from None
    return written, kept


def _write(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it holds it already; whether it was written."""
    if path.exists() and path.read_text(encoding="utf-8", errors="replace") == text:
        return False
    _replace(path, text)
    return True


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it: a Ctrl-C never leaves half a notebook.
    (Not store.atomic_write_text: that imports torch and names the artifact cache in its errors.)"""
    tmp = path.with_name(f".{path.name}.kd-{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def prune(exercises: Path, wanted: set[str], record: dict[str, str]) -> list[str]:
    """Remove the exercise notebooks without a solution that make-exercises wrote (``record``) and nobody changed
    since; return the names of the other notebooks without a solution, left in place."""
    kept = []
    for path in sorted(exercises.glob("*.ipynb")):
        if path.name in wanted:
            continue
        if record.get(path.name) and cells_hash(path.read_text(encoding="utf-8", errors="replace")) == \
                record[path.name]:
            path.unlink()
        else:
            kept.append(path.name)
    return kept


def _default(name: str) -> Path:
    here = Path.cwd() / name
    if here.exists():
        return here
    repo = Path(__file__).resolve().parents[2] / name  # an editable install: the repository
    return repo if repo.exists() else here


def check_folders(solutions: Path, exercises: Path) -> None:
    """Refuse, before anything is written: a --solutions that does not exist or is a file, no solution notebooks in
    it (none, or none that marks a solution), an --exercises that is a file, and
    folders that are one and the same or hold one another (the stubs would replace the solutions)."""
    fix = "give --solutions the folder of the solution notebooks (*.ipynb), e.g. the course's solutions/"
    if not solutions.exists():
        raise UsageError(f"--solutions {solutions} does not exist: {fix}")
    if not solutions.is_dir():
        raise UsageError(f"--solutions {solutions} is a file, not a folder: {fix}")
    if not any(solutions.glob("*.ipynb")):
        raise UsageError(f"no solution notebooks in {solutions}: {fix}")
    if not any(BEGIN in _text_of(path) for path in solutions.glob("*.ipynb")):  # the course's notebooks, say: copied
        raise UsageError(f"no notebook in {solutions} marks a solution ('{BEGIN}' ... '{END}'), so the exercises "
                         f"would be copies of them: {fix}")
    if exercises.exists() and not exercises.is_dir():
        raise UsageError(f"--exercises {exercises} is a file: give --exercises a folder (by default exercises/ "
                         "beside the solutions folder)")
    sol, ex = solutions.resolve(), exercises.resolve()
    if sol == ex or sol in ex.parents or ex in sol.parents:
        how = "is" if sol == ex else "is inside" if sol in ex.parents else "holds"
        other = sol.parent / ("exercises" if sol.name != "exercises" else "exercises-generated")
        raise UsageError(f"--exercises {exercises} {how} the solutions folder {solutions}: give --exercises a "
                         f"folder of its own, e.g. --exercises {other}")


def _text_of(path: Path) -> str:
    """A notebook file's text as it stands, "" where it cannot be read (rendering it then says why)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _path(text: str) -> Path:
    """An argparse type: a path, ``~`` expanded (:func:`kd_tutorial.errors.path_argument`)."""
    return Path(path_argument(text))


def _parser(parser_class) -> argparse.ArgumentParser:
    """The arguments of ``kd-tutorial make-exercises``."""
    parser = parser_class(prog="kd-tutorial make-exercises",
                          description="Generate exercises/ from solutions/ (nbgrader-style stubs).")
    parser.add_argument("--solutions", type=_path, default=None, help="source notebooks (default: ./solutions, else "
                        "the solutions/ of the checkout kd_tutorial is installed from)")
    parser.add_argument("--exercises", type=_path, default=None, help="output folder (default: exercises/ beside the "
                        "solutions folder)")
    parser.add_argument("--check", action="store_true", help="exit 1 if exercises/ is stale; write nothing")
    parser.add_argument("--force", action="store_true", help="overwrite exercise notebooks changed since they "
                        "were generated (a learner's work in them is lost)")
    return parser


def main(argv: list[str] | None = None, parser_class=argparse.ArgumentParser) -> int:
    """``kd-tutorial make-exercises [--solutions DIR] [--exercises DIR] [--check] [--force]``; bad input is one
    line on stderr and exit status 2 (``parser_class``: the CLI passes its one-line parser)."""
    args = _parser(parser_class).parse_args(argv)
    try:
        return _make(args)
    except UserError as exc:
        print(f"kd-tutorial make-exercises: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kd-tutorial make-exercises: interrupted; each notebook is whole, as it was or as written: run it again "
              "to finish", file=sys.stderr)
        return 130


def _make(args) -> int:
    """Check or generate the exercises of ``args``; the exit status."""
    solutions = args.solutions or _default("solutions")
    exercises = args.exercises or solutions.parent / "exercises"
    check_folders(solutions, exercises)
    if args.check:
        problems = stale(solutions, exercises)
        if problems:
            given = "".join(f" --{flag} {shell_arg(getattr(args, flag))}" for flag in ("solutions", "exercises")
                            if getattr(args, flag) is not None)
            print(check_advice(problems, solutions, exercises, f"kd-tutorial make-exercises{given}"))
            return 1
        print(f"exercises/ is up to date ({len(render(solutions))} notebooks).")
        return 0
    written, kept = generate(solutions, exercises, force=args.force)
    print(f"{len(written)} exercise notebook(s) written to {exercises}" if written
          else f"exercises/ already up to date ({exercises})")
    if kept:
        print(f"kept {', '.join(kept)} in {exercises}: no solution has that name, and make-exercises did not "
              "write it as it stands (or an older version wrote it, with no record), so it was not removed")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
