"""A small check framework in the style of Kaggle Learn: ``q.check(fn)``, ``q.hint()``, ``q.solution()``.

A *checker* is a function ``checker(call)`` that exercises the learner's
function through ``call(*args, **kwargs)`` and raises :class:`Wrong` with a
short, specific message when the behaviour differs from the reference. The
framework turns that into what the learner sees:

* pass: one short confirmation line;
* wrong answer: :class:`CheckFailed` (no traceback wall in Jupyter);
* the stub's bare ``raise NotImplementedError()``: :class:`NotAttempted`;
* any other exception from the learner's code: :class:`LearnerError`.

:meth:`Exercise.grade` returns the same outcome as data (:class:`Result`),
which the workshop grader uses; it never parses printed text.
"""
from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

PASSED = "passed"
FAILED = "failed"
NOT_ATTEMPTED = "not attempted"
ERROR = "error"
TIMEOUT = "timeout"
STATUSES = (PASSED, FAILED, NOT_ATTEMPTED, ERROR, TIMEOUT)


class CheckFailed(Exception):
    """A check did not pass. Jupyter shows only the short message (``_render_traceback_``)."""

    status = FAILED
    icon = "\N{CROSS MARK}"

    def _render_traceback_(self) -> list[str]:
        return [f"{self.icon} {self}"]


class NotAttempted(CheckFailed):
    """The exercise still holds the stub (``raise NotImplementedError()``)."""

    status = NOT_ATTEMPTED
    icon = "\N{WHITE MEDIUM SQUARE}"


class LearnerError(CheckFailed):
    """The learner's function raised an exception other than the stub's."""

    status = ERROR
    icon = "\N{WARNING SIGN}"


class Wrong(Exception):
    """Raised by checkers: the learner's answer is wrong; the message says how."""


@dataclass
class Result:
    """Outcome of one check, as data."""

    status: str
    message: str

    @property
    def passed(self) -> bool:
        return self.status == PASSED


def _is_stub(exc: BaseException, fn: Callable) -> bool:
    """True only for the stub: a bare ``NotImplementedError()`` raised by ``fn``'s own body."""
    if type(exc) is not NotImplementedError or exc.args:
        return False
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    code = getattr(fn, "__code__", None)
    return tb is not None and code is not None and tb.tb_frame.f_code is code


def _stub_elsewhere(exc: BaseException) -> str | None:
    """Name of the notebook function whose bare ``NotImplementedError()`` this is, if any."""
    if type(exc) is not NotImplementedError or exc.args:
        return None
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return None
    code = tb.tb_frame.f_code
    in_notebook = "ipykernel" in code.co_filename or code.co_filename.startswith("<")
    return code.co_name if in_notebook else None


def _short(exc: BaseException, limit: int = 160) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Stub(Exception):
    pass


class LearnerCrash(Exception):
    """The learner's function raised; checkers may catch it to give a specific message."""

    def __init__(self, exc: BaseException):
        super().__init__(_short(exc))
        self.exc = exc


# what successive calls of ``q.hint()`` give
HINT_TIERS = ("concept", "API", "near-solution")


class Exercise:
    """One graded exercise.

    ``name`` is the name of the function the learner defines (the grader looks
    it up in the notebook's namespace); ``checker(call)`` raises :class:`Wrong`.
    ``hints`` holds the three tiers of :data:`HINT_TIERS` that successive ``hint()`` calls show.
    """

    def __init__(self, key: str, title: str, name: str, checker: Callable[[Callable], Any],
                 hints: tuple[str, str, str], solution: str, success: str = "Correct!"):
        self.key = key            # e.g. "ex03.q1"
        self.title = title
        self.name = name
        self._checker = checker
        if isinstance(hints, str) or len(hints) != len(HINT_TIERS):
            raise ValueError(f"{key}: hints must be {len(HINT_TIERS)} tiers {HINT_TIERS}")
        self.hints = tuple(" ".join(textwrap.dedent(h).split()) for h in hints)
        if not all(self.hints) or len(set(self.hints)) != len(self.hints):
            raise ValueError(f"{key}: the hint tiers must be non-empty and distinct")
        self._hints_shown = 0     # per exercise object, i.e. per kernel
        self.solution_code = textwrap.dedent(solution).strip("\n")
        self._success = success

    @property
    def label(self) -> str:
        return self.key.split(".")[-1]

    def __repr__(self) -> str:
        return f"<Exercise {self.key}: {self.title}>"

    # -- outcome as data ---------------------------------------------------
    def grade(self, fn: Any) -> Result:
        """Run the check on ``fn`` and return a :class:`Result` (never raises for learner faults)."""
        if fn is None:
            return Result(NOT_ATTEMPTED, f"`{self.name}` is not defined: not attempted yet")
        if not callable(fn):
            return Result(FAILED, f"`{self.name}` should be a function, got {type(fn).__name__}")
        module = getattr(fn, "__module__", None) or ""
        if module == "kd_tutorial" or module.startswith("kd_tutorial."):
            return Result(FAILED, f"{self.label}: `{self.name}` is imported from {module}: write your own")

        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except NotImplementedError as exc:
                if _is_stub(exc, fn):
                    raise _Stub() from None
                other = _stub_elsewhere(exc)
                if other:
                    raise Wrong(f"`{self.name}` calls `{other}`, which is still a stub "
                                "(raise NotImplementedError()): finish that exercise first") from None
                raise LearnerCrash(exc) from None
            except (Wrong, _Stub, LearnerCrash):
                raise
            except (Exception, SystemExit) as exc:  # the learner's code failed
                raise LearnerCrash(exc) from None
        call.__wrapped__ = fn  # for checks that must see the learner's globals (ex06's virtual clock)

        try:
            self._checker(call)
        except _Stub:
            return Result(NOT_ATTEMPTED, f"{self.label}: not attempted yet "
                          f"(replace `raise NotImplementedError()` in `{self.name}` with your code)")
        except LearnerCrash as crash:
            return Result(ERROR, f"{self.label}: `{self.name}` raised {crash}")
        except Wrong as wrong:
            return Result(FAILED, f"{self.label}: {wrong}")
        return Result(PASSED, f"{self.label}: {self._success}")

    # -- what the learner calls -------------------------------------------
    def check(self, fn: Any = None) -> None:
        """Check ``fn``: print a short confirmation, or raise a short :class:`CheckFailed`."""
        result = self.grade(fn)
        if result.passed:
            print(f"\N{WHITE HEAVY CHECK MARK} {result.message}")
            return None
        exc = {NOT_ATTEMPTED: NotAttempted, ERROR: LearnerError}.get(result.status, CheckFailed)
        raise exc(result.message)

    def hint(self) -> None:
        """Print the next hint tier: the concept, then the API, then a near-solution (repeated after that)."""
        tier = min(self._hints_shown, len(self.hints) - 1)
        again = self._hints_shown >= len(self.hints)
        self._hints_shown += 1
        n = len(self.hints)
        note = " (no more hints: this is the last one again; q.solution() shows the answer)" if again else ""
        print(f"\N{ELECTRIC LIGHT BULB} Hint {tier + 1}/{n} ({self.label}, {HINT_TIERS[tier]}){note}: "
              f"{self.hints[tier]}")

    def solution(self) -> None:
        """Show the reference solution."""
        if hasattr(sys, "audit"):
            sys.audit("kd_tutorial.grading.solution", self.key)
        code = "\n".join(line for line in self.solution_code.splitlines()
                         if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))
        text = f"Solution ({self.label}):\n```python\n{code}\n```"
        try:
            from IPython.display import Markdown, display  # noqa: PLC0415
            from IPython import get_ipython  # noqa: PLC0415
            if get_ipython() is not None:
                display(Markdown(text))
                return None
        except ImportError:
            pass
        print(text)
        return None


# -- helpers used by checkers ------------------------------------------------
def as_float(value: Any, what: str = "your function") -> float:
    """Turn a scalar tensor / number into a float, or raise :class:`Wrong`."""
    try:
        import torch  # noqa: PLC0415
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise Wrong(f"{what} should return a scalar, got a tensor of shape {tuple(value.shape)}")
            return float(value.detach())
    except ImportError:  # pragma: no cover
        pass
    try:
        return float(value)
    except (TypeError, ValueError):
        raise Wrong(f"{what} should return a number, got {type(value).__name__}") from None


def as_tensor(value: Any, shape: tuple | None = None, what: str = "your function"):
    """Check ``value`` is a tensor (of ``shape``) and return it detached, or raise :class:`Wrong`."""
    import torch  # noqa: PLC0415
    if not isinstance(value, torch.Tensor):
        raise Wrong(f"{what} should return a torch.Tensor, got {type(value).__name__}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise Wrong(f"{what} returned shape {tuple(value.shape)}, expected {tuple(shape)}")
    return value.detach()


def student_gradient(call: Callable, student, teacher, *rest, student_name: str, teacher_name: str):
    """Call ``call(student, teacher, *rest)`` on fresh leaf copies, backpropagate, and return the student's
    gradient; raise :class:`Wrong` when no gradient flows or when one reaches the (frozen) teacher."""
    import torch
    student, teacher = student.clone().requires_grad_(True), teacher.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = call(student, teacher, *rest)
        if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
            raise Wrong(f"your loss carries no gradient to {student_name}: return a tensor "
                        "(no .item(), no torch.no_grad())")
        loss.backward()
    if teacher.grad is not None and float(teacher.grad.abs().sum()) > 0:
        raise Wrong(f"a gradient reaches {teacher_name}, so it reaches the teacher, which is frozen: "
                    f"use {teacher_name}.detach()")
    return student.grad


def close(a, b, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """``allclose`` for tensors or floats; False (not an error) on shape mismatch or NaN."""
    import torch  # noqa: PLC0415
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape:
        return False
    return bool(torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))


def diagnose(got: list, variants: dict[str, Callable[[], list]], rtol: float = 1e-4,
             atol: float = 1e-6) -> str | None:
    """Return the message of the first known-wrong variant whose outputs match ``got`` on every input.

    ``variants`` maps a message to a zero-argument function returning the
    variant's outputs on the same inputs (a list aligned with ``got``).
    """
    for message, outputs in variants.items():
        try:
            expected = outputs()
        except Exception:  # a variant that cannot run on these inputs never matches
            continue
        if all(close(g, e, rtol, atol) for g, e in zip(got, expected, strict=True)):
            return message
    return None
