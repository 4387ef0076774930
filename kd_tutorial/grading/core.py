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

import inspect
import sys
import sysconfig
import textwrap
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

PASSED = "passed"
FAILED = "failed"
NOT_ATTEMPTED = "not attempted"
ERROR = "error"
TIMEOUT = "timeout"
STATUSES = (PASSED, FAILED, NOT_ATTEMPTED, ERROR, TIMEOUT)


def _ipython():
    """The IPython shell this code runs in, or None (a script, a test)."""
    try:
        from IPython import get_ipython  # noqa: PLC0415
    except ImportError:
        return None
    return get_ipython()


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
        """Whether the check passed."""
        return self.status == PASSED


def _check_line(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of ``exc``'s traceback outside Python's and the installed libraries'
    folders (kd_tutorial's own files always count): the line of the check that failed, not torch's."""
    libraries = tuple({str(Path(sysconfig.get_paths()[key])) for key in ("stdlib", "purelib", "platlib")})
    package = str(Path(__file__).resolve().parents[1])
    where, tb = "?", exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name.startswith(package) or not name.startswith(libraries + ("<",)):  # "<frozen ...>": Python's
            where = f"{Path(name).name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


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


def _tensors(args: tuple, kwargs: dict) -> dict:
    """The tensors among a call's arguments, and one level into the dicts, lists and tuples among them (a batch),
    keyed by (argument position or name, key inside it or None)."""
    import torch  # noqa: PLC0415
    out = {}
    for key, value in (dict(enumerate(args)) | kwargs).items():
        inner = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) \
            else [(None, value)]
        out |= {(key, k): v for k, v in inner if isinstance(v, torch.Tensor)}
    return out


def _tensor_snapshot(args: tuple, kwargs: dict) -> dict:
    """Copies of the tensors a call is given (:func:`_tensors`)."""
    return {key: value.detach().clone() for key, value in _tensors(args, kwargs).items()}


def _refuse_changed_inputs(before: dict, args: tuple, kwargs: dict, fn, name: str) -> None:
    """A :class:`Wrong` when the learner's function changed a tensor it was given, in place: the caller's tensor
    changes for good (``t /= T`` divides a cached teacher's logits again at every call), and a check that compares
    values alone would pass it. A tensor taken out of a dict (Trainer's ``inputs.pop("labels")``) is not changed."""
    now = _tensors(args, kwargs)
    for (key, inner), old in before.items():
        new = now.get((key, inner))
        if new is None:  # taken out of a dict (labels = batch.pop("labels")): the tensor itself is unchanged
            continue
        same = old.shape == new.shape and old.dtype == new.dtype and bool(
            ((old == new) | (old.isnan() & new.isnan())).all() if old.is_floating_point() else old.equal(new))
        if not same:
            try:
                param = key if isinstance(key, str) else list(inspect.signature(fn).parameters)[key]
            except (TypeError, ValueError, IndexError):
                param = f"number {key + 1}"
            where = param if inner is None else f"{param}[{inner!r}]"
            raise Wrong(f"your `{name}` changed its argument `{where}` in place (an operation such as `/=`, "
                        "`[...] =` or a method ending in `_`): the caller's tensor stays changed after the call. "
                        "Work on a new tensor instead, e.g. `x = x / T`")


class LearnerCrash(Exception):
    """The learner's function raised; checkers may catch it to give a specific message."""

    def __init__(self, exc: BaseException):
        super().__init__(_short(exc))
        self.exc = exc


# what successive calls of ``q.hint()`` give
HINT_TIERS = ("concept", "API", "near-solution")


UNDEFINED = "is not defined: not attempted yet"  # the message's end when the function does not exist (execute.py)


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
        """The exercise's short name: the last part of its key."""
        return self.key.split(".")[-1]

    def __repr__(self) -> str:
        return f"<Exercise {self.key}: {self.title}>"

    # -- outcome as data ---------------------------------------------------
    def grade(self, fn: Any) -> Result:
        """Run the check on ``fn`` and return a :class:`Result` (never raises for learner faults)."""
        if fn is None:
            return Result(NOT_ATTEMPTED, f"`{self.name}` {UNDEFINED}")
        if not callable(fn):
            return Result(FAILED, f"`{self.name}` should be a function, got {type(fn).__name__}")
        module = getattr(fn, "__module__", None) or ""
        if module == "kd_tutorial" or module.startswith("kd_tutorial."):
            return Result(FAILED, f"{self.label}: `{self.name}` is imported from {module}: write your own")

        def call(*args, **kwargs):
            before = _tensor_snapshot(args, kwargs)
            try:
                out = fn(*args, **kwargs)
                _refuse_changed_inputs(before, args, kwargs, fn, self.name)
                return out
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

        import torch  # noqa: PLC0415  (the checks' own reference gradients need autograd on, whatever the notebook
        try:              # set: torch.set_grad_enabled(False) in an earlier cell failed correct answers)
            with torch.enable_grad():
                self._checker(call)
        except _Stub:
            return Result(NOT_ATTEMPTED, f"{self.label}: not attempted yet "
                          f"(replace `raise NotImplementedError()` in `{self.name}` with your code)")
        except LearnerCrash as crash:
            return Result(ERROR, f"{self.label}: `{self.name}` raised {crash}")
        except Wrong as wrong:
            return Result(FAILED, f"{self.label}: {wrong}")
        except Exception as exc:  # noqa: BLE001 - last resort: a value no check foresaw never shows a traceback
            return Result(FAILED, f"{self.label}: the check could not use what `{self.name}` returned "
                          f"({_short(exc, 120)}, at {_check_line(exc)}): compare its type and shape with the "
                          "exercise's description; if they match, the check itself is at fault: report this line")
        return Result(PASSED, f"{self.label}: {self._success}")

    # -- what the learner calls -------------------------------------------
    def check(self, fn: Any = None) -> None:
        """Check ``fn``: print a short confirmation, or raise a short :class:`CheckFailed`. With no argument
        (``q1.check()``, as on Kaggle Learn), the function of the exercise's name in the notebook's namespace."""
        if fn is None:
            fn = getattr(sys.modules.get("__main__"), self.name, None)
        if fn is None:
            raise NotAttempted(f"{self.label}: `{self.name}` is not defined yet: run the cell that defines it, "
                               f"then `{self.label}.check({self.name})`")
        shell = _ipython()
        if shell is not None:  # what a cell interrupted now was checking (the grader's runner.mark_interrupted)
            shell.kd_checking = (self.label, fn)
        result = self.grade(fn)
        if shell is not None:  # not reached when interrupted (KeyboardInterrupt passes through grade)
            shell.kd_checking = None
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
        note = (f" (no more hints: this is the last one again; {self.label}.solution() shows the answer)"
                if again else "")
        print(f"\N{ELECTRIC LIGHT BULB} Hint {tier + 1}/{n} ({self.label}, {HINT_TIERS[tier]}){note}: "
              f"{self.hints[tier]}")

    def solution(self) -> None:
        """Show the reference solution."""
        if hasattr(sys, "audit"):
            sys.audit("kd_tutorial.grading.solution", self.key)
        code = "\n".join(line for line in self.solution_code.splitlines()
                         if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))
        plain = f"Solution ({self.label}):\n{code}"  # a terminal shows the code as it is, ready to paste
        try:
            from IPython.display import display  # noqa: PLC0415
            from IPython import get_ipython  # noqa: PLC0415
            if get_ipython() is not None:  # Jupyter renders the Markdown; a terminal IPython shows the plain text
                markdown = f"Solution ({self.label}):\n```python\n{code}\n```"
                display({"text/markdown": markdown, "text/plain": plain}, raw=True)
                return None
        except ImportError:
            pass
        print(plain)
        return None


# -- helpers used by checkers ------------------------------------------------
def _num(x: Any) -> str:
    """One number, short: 4 significant digits for floats."""
    if isinstance(x, bool) or not isinstance(x, (int, float, complex)):
        return str(x)
    if isinstance(x, int) and abs(x) < 10 ** 12:
        return str(x)
    if isinstance(x, int):  # as a Decimal: a float overflows past 1e308, and str() stops at 4,300 digits
        mantissa, exponent = f"{Decimal(x):.4g}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"  # as a float's "{:.4g}" writes it: 1e+15, 1.5e+400
    return f"{x:.4g}" if isinstance(x, float) else f"{x:.3g}"


def _numbers(values: list, total: int) -> str:
    shown = ", ".join(_num(v) for v in values[:3])
    return f"[{shown}{', ...' if total > 3 else ''}]"


def _brief(x: Any) -> str:
    """A few characters for an item inside a container."""
    torch = sys.modules.get("torch")
    if x is None or isinstance(x, (bool, int, float, complex)):
        return _num(x)
    if isinstance(x, str):
        return repr(x) if len(x) <= 12 else repr(x[:9]) + "..."
    if torch is not None and isinstance(x, torch.Tensor):
        if x.dim() == 0 and x.device.type != "meta" and x.layout == torch.strided:
            return f"tensor({_num(x.detach().cpu().item())})"
        return f"tensor of shape {tuple(x.shape)}"
    if isinstance(x, (list, tuple, dict, set)):
        return f"{type(x).__name__} of {len(x)}"
    return type(x).__name__


def _a(word: str) -> str:
    """``word`` with its indefinite article: "an int64", "a float32"."""
    return f"an {word}" if word[:1].lower() in "aeiou" else f"a {word}"


def _items(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


def _describe(value: Any) -> str:
    torch = sys.modules.get("torch")
    numpy = sys.modules.get("numpy")
    if value is None:
        return "None"
    if isinstance(value, bool):
        return f"the bool {value}"
    if isinstance(value, (int, float)):
        return f"the number {_num(value)}"
    if isinstance(value, complex):
        return f"the complex number {_num(value)}"
    if isinstance(value, (str, bytes)):
        kind = "string" if isinstance(value, str) else "bytes"
        return f"the {kind} {value[:30]!r}{'...' if len(value) > 30 else ''}"
    if torch is not None and isinstance(value, torch.Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        where = "" if value.device.type == "cpu" else f" on {value.device.type}"
        if value.device.type == "meta" or value.layout != torch.strided:
            layout = "" if value.layout == torch.strided else f"{str(value.layout).replace('torch.', '')} "
            return f"{_a(layout + dtype)} tensor of shape {tuple(value.shape)}{where}"
        flat = value.detach().reshape(-1)
        if value.dim() == 0:
            return f"a 0-d {dtype} tensor ({_num(flat[0].cpu().item())}){where}"
        numbers = _numbers(flat[:3].cpu().tolist(), flat.numel())
        return f"{_a(dtype)} tensor of shape {tuple(value.shape)}{where} {numbers}"
    if numpy is not None and isinstance(value, numpy.ndarray):
        flat = value.reshape(-1)
        return f"a numpy array of shape {value.shape}, {value.dtype} {_numbers(flat[:3].tolist(), flat.size)}"
    if numpy is not None and isinstance(value, numpy.generic):
        return f"a numpy {value.dtype} ({_num(value.item())})"
    if isinstance(value, dict):
        items = list(value.items())
        shown = ", ".join(f"{_brief(k)}: {_brief(v)}" for k, v in items[:3])
        return f"a dict of {_items(len(items))} {{{shown}{', ...' if len(items) > 3 else ''}}}"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        shown = ", ".join(_brief(x) for x in items[:3])
        return f"a {type(value).__name__} of {_items(len(items))} [{shown}{', ...' if len(items) > 3 else ''}]"
    name = type(value).__name__
    if hasattr(value, "__next__"):
        return f"a {name} (an iterator)"
    return _a(name)


def describe(value: Any, limit: int = 80) -> str:
    """A learner's value in one short line: its type, shape and dtype, and a few numbers (never a repr dump)."""
    try:
        text = _describe(value)
    except Exception:  # noqa: BLE001 - a value that cannot even be described is named by its type
        text = _a(type(value).__name__)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _subject(what: str) -> tuple[str, str]:
    """("`name` returned", "return") for a function's name, ("the attention output is", "be") for a value."""
    if what.isidentifier():
        return f"`{what}` returned", "return"
    if what == "your function":
        return "your function returned", "return"
    return f"{what} is", "be"


_ADVICE_TENSOR = {
    "list": " (torch.tensor(...) or torch.stack(...) makes one)",
    "tuple": " (torch.tensor(...) or torch.stack(...) makes one)",
    "ndarray": " (stay in torch: no .numpy())",
    "str": ", not text",
    "dict": "",
}
_ADVICE_NUMBER = {"str": ", not text", "list": ", not a list", "tuple": ", not a tuple", "dict": ", not a dict"}


def wrong_return(value: Any, want: str, what: str = "your function") -> Wrong:
    """A :class:`Wrong` that names what the learner returned instead of ``want`` (one line, no repr dump).

    ``what`` is the learner's function name (``"`entropy` returned a list ..."``) or a description of a
    part of its result (``"the attention output is None ..."``).
    """
    subject, verb = _subject(what)
    if value is None:
        if verb == "return":
            return Wrong(f"{subject} None: did you forget `return`? It should return {want}")
        return Wrong(f"{subject} None: it should be {want}")
    advice = ""
    kind = type(value).__name__
    if want.startswith("a number"):
        advice = _ADVICE_NUMBER.get(kind, "")
    elif "tensor" in want.lower():
        advice = _ADVICE_TENSOR.get(kind, "")
    if hasattr(value, "__next__") and hasattr(value, "__iter__"):
        advice = " (a generator or iterator is lazy: build the values first)"
    return Wrong(f"{subject} {describe(value)}: it should {verb} {want}{advice}")


def _tensor_problem(value: Any, what: str) -> Wrong | None:
    """A :class:`Wrong` for a tensor that holds no usable real values (complex, meta, sparse), else None."""
    import torch  # noqa: PLC0415
    subject, _ = _subject(what)
    if value.device.type == "meta":
        return Wrong(f"{subject} a tensor on the meta device (shape {tuple(value.shape)}), which holds no values: "
                     "compute it from the inputs, on their device")
    if value.layout != torch.strided:
        return Wrong(f"{subject} {describe(value)}: return a dense tensor (.to_dense())")
    if value.is_complex():
        return Wrong(f"{subject} {describe(value)}: it should be real-valued (a float tensor), not complex")
    return None


def as_float(value: Any, what: str = "your function") -> float:
    """Turn a scalar tensor / number into a float, or raise :class:`Wrong` naming what ``value`` is."""
    numpy = sys.modules.get("numpy")
    torch = sys.modules.get("torch")
    subject, verb = _subject(what)
    if torch is not None and isinstance(value, torch.Tensor):
        problem = _tensor_problem(value, what)
        if problem is not None:
            raise problem
        if value.numel() != 1:
            raise Wrong(f"{subject} {describe(value)}: it should {verb} a scalar (one number), not a tensor of "
                        f"shape {tuple(value.shape)}")
        return float(value.detach().reshape(()).cpu().item())
    if numpy is not None and isinstance(value, (numpy.ndarray, numpy.generic)):
        if numpy.iscomplexobj(value) or value.dtype.kind not in "biuf":
            raise wrong_return(value, "a number (a float or a 0-d tensor)", what)
        if value.size != 1:
            raise Wrong(f"{subject} {describe(value)}: it should {verb} a scalar (one number)")
        return float(value.reshape(-1)[0])
    if value is None or isinstance(value, (str, bytes, complex)):
        raise wrong_return(value, "a number (a float or a 0-d tensor)", what)
    try:
        return float(value)
    except OverflowError:
        raise Wrong(f"{subject} {describe(value)}, too large for a float") from None
    except (TypeError, ValueError, RuntimeError):
        raise wrong_return(value, "a number (a float or a 0-d tensor)", what) from None


def as_loss_float(value: Any, name: str) -> float:
    """:func:`as_float` for a training step that returns its loss "as a float": the loss tensor itself, which still
    carries its autograd graph, is refused with a message naming ``.item()``."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor) and value.requires_grad:
        raise Wrong(f"`{name}` returned the loss as a tensor that still carries its autograd graph: return a float "
                    "(loss.item()); a loop that adds up the returned losses would chain every step's graph in memory")
    return as_float(value, name)


def as_tensor(value: Any, shape: tuple | None = None, what: str = "your function"):
    """Check ``value`` is a real tensor (of ``shape``) and return it detached, on the CPU, or raise :class:`Wrong`."""
    import torch  # noqa: PLC0415
    if not isinstance(value, torch.Tensor):
        raise wrong_return(value, "a torch.Tensor", what)
    problem = _tensor_problem(value, what)
    if problem is not None:
        raise problem
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise Wrong(f"{what} returned shape {tuple(value.shape)}, expected {tuple(shape)}")
    return value.detach().cpu()


def reaches(grad) -> bool:
    """Whether a gradient reached a tensor: any entry that is not 0, nan included (``torch.xlogy(p, p)`` on a
    teacher's probability of exactly 0 gives a nan gradient, whose sum compares False with 0)."""
    return grad is not None and bool((grad != 0).any())


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
        as_float(loss, "your loss")  # one real number, or a message saying what it is
        try:
            loss.backward()
        except Exception as exc:  # noqa: BLE001 - the learner's graph (a custom backward, a hook) failed
            raise LearnerCrash(exc) from None
    if reaches(teacher.grad):
        raise Wrong(f"a gradient reaches {teacher_name}, so it reaches the teacher, which is frozen: "
                    f"use {teacher_name}.detach()")
    return student.grad


def records_graph(module) -> bool:
    """Whether a forward pass of ``module`` now builds an autograd graph: grad mode on and a parameter that requires
    grad. A teacher under ``torch.no_grad()``, or frozen with ``requires_grad_(False)`` (notebook 04), builds none."""
    import torch  # noqa: PLC0415
    return torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())


def close(a, b, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """``allclose`` for tensors or floats; False (not an error) on shape mismatch or NaN."""
    import torch  # noqa: PLC0415
    a, b = (x.detach().cpu().to(torch.float64) if isinstance(x, torch.Tensor) else
            torch.as_tensor(x, dtype=torch.float64) for x in (a, b))
    if a.shape != b.shape:
        return False
    return bool(torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))


def mismatch(got: list, expected: list, rtol: float = 1e-4, atol: float = 1e-6) -> int:
    """The index of the first input on which ``got`` and ``expected`` differ (0 when none does): the case a generic
    message quotes, since quoting one where they agree (a learner who ignored an argument still matches the
    default case) reads as "your 3.8734 should be 3.8734"."""
    return next((i for i, (g, e) in enumerate(zip(got, expected)) if not close(g, e, rtol, atol)), 0)


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


def ignored_settings(T, a, default, callee: str, outputs, subject: str = "your step") -> dict:
    """Diagnoses for a step that drops temperature and/or alpha, so that ``callee`` ran at its defaults:
    ``outputs(T, a)`` gives what the step would produce at that setting (for :func:`diagnose`)."""
    variants = {}
    for used in ((default[0], default[1]), (T, default[1]), (default[0], a)):
        names = "/".join(name for name, u, v in (("temperature", used[0], T), ("alpha", used[1], a)) if u != v)
        if not names:
            continue
        them = "them" if "/" in names else "it"
        variants[f"{subject} ignores {names} (called with temperature={T:g}, alpha={a:g}, it computed the loss "
                 f"at T={used[0]:g}, alpha={used[1]:g} instead): pass {them} on to {callee}"] = \
            (lambda used=used: outputs(*used))
    return variants
