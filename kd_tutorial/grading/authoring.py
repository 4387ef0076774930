"""Generate ``exercises/`` from ``solutions/`` (``kd-tutorial make-exercises``).

``solutions/*.ipynb`` are the single source of truth. Each region between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` becomes the stub that nbgrader
would leave (``# YOUR CODE HERE`` / ``raise NotImplementedError()``, at the
marker's indentation); outputs and execution counts are stripped; cell ids
and nbgrader metadata are kept. ``--check`` reports a stale ``exercises/``.
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")


class AuthoringError(ValueError):
    """A solution notebook is malformed (unbalanced or nested markers)."""


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
        is_solution = cell.get("metadata", {}).get("nbgrader", {}).get("solution", False)
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


def render(solutions: Path) -> dict[str, str]:
    """``{file name: exercise notebook text}`` for every solution notebook."""
    import nbformat  # noqa: PLC0415
    out = {}
    for path in sorted(solutions.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        out[path.name] = _writes(make_exercise(nb))
    return out


def stale(solutions: Path, exercises: Path) -> list[str]:
    """Names of exercise notebooks that are missing, different or extra."""
    wanted = render(solutions)
    problems = [name for name, text in wanted.items()
                if not (exercises / name).exists() or (exercises / name).read_text(encoding="utf-8") != text]
    problems += [p.name for p in sorted(exercises.glob("*.ipynb")) if p.name not in wanted]
    return problems


def generate(solutions: Path, exercises: Path) -> list[Path]:
    """Write ``exercises/`` from ``solutions/``; remove exercise notebooks without a source. Returns written paths."""
    wanted = render(solutions)
    exercises.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in wanted.items():
        path = exercises / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    for path in exercises.glob("*.ipynb"):
        if path.name not in wanted:
            path.unlink()
    return written


def _default(name: str) -> Path:
    here = Path.cwd() / name
    if here.exists():
        return here
    repo = Path(__file__).resolve().parents[2] / name  # an editable install: the repository
    return repo if repo.exists() else here


def main(argv: list[str] | None = None) -> int:
    """``kd-tutorial make-exercises [--solutions DIR] [--exercises DIR] [--check]``."""
    parser = argparse.ArgumentParser(prog="kd-tutorial make-exercises",
                                     description="Generate exercises/ from solutions/ (nbgrader-style stubs).")
    parser.add_argument("--solutions", type=Path, default=None, help="source notebooks (default: ./solutions)")
    parser.add_argument("--exercises", type=Path, default=None, help="output folder (default: ./exercises)")
    parser.add_argument("--check", action="store_true", help="exit 1 if exercises/ is stale; write nothing")
    args = parser.parse_args(argv)
    solutions = args.solutions or _default("solutions")
    exercises = args.exercises or solutions.parent / "exercises"
    if not solutions.is_dir() or not any(solutions.glob("*.ipynb")):
        print(f"kd-tutorial make-exercises: no solution notebooks in {solutions}", file=sys.stderr)
        return 2
    try:
        if args.check:
            problems = stale(solutions, exercises)
            if problems:
                print(f"exercises/ is stale: {', '.join(problems)}. Run `kd-tutorial make-exercises`.")
                return 1
            print(f"exercises/ is up to date ({len(render(solutions))} notebooks).")
            return 0
        written = generate(solutions, exercises)
    except AuthoringError as exc:
        print(f"kd-tutorial make-exercises: {exc}", file=sys.stderr)
        return 2
    print(f"{len(written)} exercise notebook(s) written to {exercises}" if written
          else f"exercises/ already up to date ({exercises})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
