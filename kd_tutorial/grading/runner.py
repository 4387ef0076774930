"""Kernel-side half of the grader: code that the grader injects into a submission's kernel.

* :func:`install_guard` runs *before* the learner's cells. It adds an audit
  hook (which cannot be removed) that refuses to open notebook files and
  anything under the solutions folders, and records such attempts, and calls
  to ``q.solution()``, as flags.
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
import time


def _write(path: str, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def install_guard(results_path: str, nonce: str, blocked_dirs: list[str]) -> None:
    """Block reads of notebooks and solution files from now on in this process; record attempts."""
    blocked = [os.path.realpath(d) for d in blocked_dirs]
    fh = open(results_path, "a", encoding="utf-8", buffering=1)  # kept open: writes raise no audit event
    busy = [False]

    def flag(kind: str, detail: str) -> None:
        busy[0] = True
        try:
            fh.write(json.dumps({"nonce": nonce, "kind": "flag", "flag": kind, "detail": detail[:300]}) + "\n")
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
            if real:
                flag("read-solutions", real)
                raise PermissionError(f"kd-tutorial grader: reading {real} is not allowed while grading")
        elif event == "kd_tutorial.grading.solution" and args:
            flag("viewed-solution", str(args[0]))
        elif event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn"):
            text = repr(args)
            if ".ipynb" in text or any(b in text for b in blocked) or "solutions" in text:
                flag("read-solutions", f"{event}: {text}")
                raise PermissionError("kd-tutorial grader: this command is not allowed while grading")

    sys.addaudithook(hook)
    fh.write(json.dumps({"nonce": nonce, "kind": "kernel", "executable": sys.executable,
                         "version": sys.version.split()[0]}) + "\n")


def purge_modules() -> None:
    """Forget every imported ``kd_tutorial`` module, so that checks run from fresh, unpatched code."""
    for name in [m for m in sys.modules if m == "kd_tutorial" or m.startswith("kd_tutorial.")]:
        del sys.modules[name]


def defined_in_a_cell(cells, name: str) -> bool:
    """Whether one of the notebook's executed cells (IPython's ``In``) holds ``def name(``: when ``name`` is still
    not defined, that cell raised (a SyntaxError, or an error above the ``def``) and the exercise was attempted."""
    pattern = re.compile(rf"^\s*def {re.escape(name)}\s*\(", re.M)
    return any(isinstance(cell, str) and pattern.search(cell) for cell in cells)


def last_error() -> str:
    """`` (the notebook's last error: Type: message)``, as IPython keeps it; empty when there is none."""
    err = getattr(sys, "last_value", None)
    if err is None:
        return ""
    text = str(err).strip().splitlines()
    return f" (the notebook's last error: {type(err).__name__}{': ' + text[0][:200] if text else ''})"


def grade_into(set_id: str, label: str, namespace: dict, results_path: str, nonce: str) -> None:
    """Run one exercise's check on the learner's namespace; append the result as a JSON line."""
    import importlib  # noqa: PLC0415

    start = time.perf_counter()
    module = importlib.import_module(f"kd_tutorial.grading.{set_id}")
    from kd_tutorial.grading.core import ERROR, NOT_ATTEMPTED, Result  # noqa: PLC0415  (fresh, as the checks)
    exercise = getattr(module, label)
    result = exercise.grade(namespace.get(exercise.name))
    if result.status == NOT_ATTEMPTED and namespace.get(exercise.name) is None and \
            defined_in_a_cell(namespace.get("In", ()), exercise.name):
        result = Result(ERROR, f"{label}: the cell that defines `{exercise.name}` raised an error, so it was never "
                               f"defined{last_error()}: fix that cell")
    _write(results_path, {"nonce": nonce, "kind": "result", "exercise": f"{set_id}.{label}",
                          "status": result.status, "message": result.message[:1000],
                          "seconds": round(time.perf_counter() - start, 3)})
