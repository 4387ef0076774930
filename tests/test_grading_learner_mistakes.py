"""A learner's function that returns the wrong kind of thing gets one short line naming it, never a traceback.

Every question's check is called with a set of wrong returns (None, a list, a numpy array, text, a dict, a
complex, NaN, meta or huge tensor, a function that raises), and with its own reference solution whose values
come back in the wrong form (complex, meta, NaN, text, numpy, lists).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kd_tutorial.grading import registry
from kd_tutorial.grading.core import (ERROR, FAILED, PASSED, Exercise, LearnerCrash, Wrong, as_float, as_tensor,
                                      describe, student_gradient, wrong_return)
from test_grading_catalogue import reference_solution

EXERCISES = {ex.key: ex for ex in registry.all_exercises()}
MAX_CHARS = 300
SAFETY_NET = "the check could not use what"  # Exercise.grade's last resort: a check should never need it


pytestmark = pytest.mark.usefixtures("one_thread")


def _generator():
    yield 1.0


WRONG_RETURNS = {
    "None": lambda: None,
    "list": lambda: [0.5, 1.0, 2.0],
    "numpy array": lambda: np.ones((3, 4)),
    "string": lambda: "0.5",
    "dict": lambda: {"a": 1},
    "generator": _generator,
    "complex tensor": lambda: torch.tensor(1 + 2j),
    "nan tensor": lambda: torch.tensor(float("nan")),
    "7x3x5 tensor": lambda: torch.randn(7, 3, 5, generator=torch.Generator().manual_seed(0)),
    "huge tensor": lambda: torch.zeros(1000, 1000),
    "meta tensor": lambda: torch.empty(3, device="meta"),
}


def assert_one_short_line(message: str):
    assert "\n" not in message and len(message) < MAX_CHARS, (len(message), message)
    assert "Traceback" not in message, message
    assert SAFETY_NET not in message, message


@pytest.mark.parametrize("what", list(WRONG_RETURNS))
@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_a_wrong_return_fails_with_one_short_line(key, what):
    make = WRONG_RETURNS[what]
    result = EXERCISES[key].grade(lambda *args, **kwargs: make())
    assert result.status == FAILED, result
    assert_one_short_line(result.message)


@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_a_function_that_raises_is_reported_in_one_line(key):
    """An error, or a failure where the check knows what usually makes that call fail (e.g. labels -1)."""
    def learner(*args, **kwargs):
        raise RuntimeError("my function broke\non two lines")
    result = EXERCISES[key].grade(learner)
    assert result.status in (ERROR, FAILED), result
    assert "RuntimeError: my function broke" in result.message
    assert_one_short_line(result.message)


# -- the reference solution, its values returned in the wrong form ---------------------------------------

_solution = reference_solution  # the reference solutions, as the catalogue builds them


FORMS = {
    "complex": lambda t: t.to(torch.complex64),
    "meta": lambda t: t.to("meta"),
    "nan": lambda t: t * float("nan"),
    "string": str,
    "numpy": lambda t: t.detach().numpy(),
    "list": lambda t: t.detach().tolist(),
}
MUST_FAIL = ("complex", "meta", "nan", "string")  # numpy / list may pass where a plain number is asked for


def _convert(value, form, seen: list):
    """``value`` with every tensor and number inside it (not the dict keys) turned into ``form``."""
    if isinstance(value, (bool, torch.nn.Module)):
        return value
    if isinstance(value, (int, float)):
        value = torch.tensor(value)
    if isinstance(value, torch.Tensor):
        seen.append(form)
        return FORMS[form](value)
    if isinstance(value, (list, tuple)):
        return type(value)(_convert(v, form, seen) for v in value)
    if isinstance(value, dict):
        return {k: _convert(v, form, seen) for k, v in value.items()}
    return value


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_the_right_values_in_the_wrong_form(key, form):
    solution, seen = _solution(key), []

    def learner(*args, **kwargs):
        return _convert(solution(*args, **kwargs), form, seen)
    result = EXERCISES[key].grade(learner)
    assert_one_short_line(result.message)
    if seen and form in MUST_FAIL:
        assert result.status == FAILED, result


@pytest.mark.parametrize("key", ["ex03.q1", "ex07.q3", "ex08.q1", "ex09.q2"])
def test_a_backward_pass_that_raises_in_the_learners_graph_is_their_error(key):
    solution = _solution(key)

    def learner(*args, **kwargs):
        loss = solution(*args, **kwargs)
        if loss.requires_grad:  # the gradient check's call; the value checks run without autograd
            loss.register_hook(lambda grad: 1 / 0)
        return loss
    result = EXERCISES[key].grade(learner)
    assert result.status == ERROR and "ZeroDivisionError" in result.message, result
    assert_one_short_line(result.message)


# -- the specific messages ----------------------------------------------------------------------------

def _message(key, value):
    return EXERCISES[key].grade(lambda *args, **kwargs: value).message


def test_entropy_without_return_says_so():
    assert _message("ex02.q2", None) == \
        "q2: `entropy` returned None: did you forget `return`? It should return a torch.Tensor"


@pytest.mark.parametrize("value, fragment", [
    ([1.0, 2.0], "returned a list of 2 items [1, 2]: it should return a torch.Tensor (torch.tensor(...)"),
    (np.ones((4, 5)), "returned a numpy array of shape (4, 5), float64 [1, 1, 1, ...]: it should return a "
                      "torch.Tensor (stay in torch"),
    ("0.5", "returned the string '0.5': it should return a torch.Tensor, not text"),
    ({"a": 1}, "returned a dict of 1 item {'a': 1}"),
    (torch.tensor(1 + 2j), "not complex"),
])
def test_entropy_names_what_was_returned(value, fragment):
    assert fragment in _message("ex02.q2", value)


def test_a_scalar_entropy_for_one_distribution_is_still_fine():
    """A 1-D input has a 0-d entropy: returning it as a Python float stays accepted."""
    def entropy(p):
        out = -torch.special.xlogy(p, p).sum(-1)
        return float(out) if out.dim() == 0 else out
    assert EXERCISES["ex02.q2"].grade(entropy).status == PASSED


def test_speedups_with_keys_that_are_not_batch_sizes():
    message = _message("ex06.q2", {"a": 1})
    assert message == ("q2: `speedups` returned a dict of 1 item {'a': 1}: it should return a dict "
                       "{batch_size: speed-up} with the keys [1, 8, 32]")


def test_choose_setting_summarises_a_tensor_instead_of_printing_it():
    message = _message("ex03.q4", torch.randn(7, 3, 5))
    assert message.startswith("q4: `choose_setting` returned a float32 tensor of shape (7, 3, 5) [")
    assert message.endswith("]: it should return a pair (temperature, alpha)")
    assert_one_short_line(message)


@pytest.mark.parametrize("value", [(2.0, 0.5, 1.0), (2.0,), "20"])
def test_choose_setting_wants_exactly_two_numbers(value):
    assert "it should return a pair (temperature, alpha)" in _message("ex03.q4", value)


def test_choose_setting_names_the_bad_half_of_the_pair():
    assert _message("ex03.q4", (None, 0.5)) == \
        "q4: the temperature you returned is None: it should be a number (a float or a 0-d tensor)"


def test_grouped_batches_with_an_empty_batch_or_float_indices():
    solution = _solution("ex04.q3")
    assert "some of your batches are empty" in EXERCISES["ex04.q3"].grade(lambda *a: solution(*a) + [[]]).message
    assert "a batch holds the number 1.5" in _message("ex04.q3", [[1.5, 2]])


def test_a_loss_on_the_meta_device():
    assert _message("ex03.q1", torch.empty((), device="meta")) == (
        "q1: `soft_kd_loss` returned a tensor on the meta device (shape ()), which holds no values: compute it "
        "from the inputs, on their device")


# -- the helpers themselves ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (None, "None"),
    (3, "the number 3"),
    (0.123456, "the number 0.1235"),
    ("x" * 100, "the string 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'..."),
    ([1, "a", None, 4], "a list of 4 items [1, 'a', None, ...]"),
    ((torch.ones(2), torch.tensor(3.0)), "a tuple of 2 items [tensor of shape (2,), tensor(3)]"),
    (torch.tensor(0.5), "a 0-d float32 tensor (0.5)"),
    (torch.arange(10), "an int64 tensor of shape (10,) [0, 1, 2, ...]"),
    (torch.ones(2, dtype=torch.bool), "a bool tensor of shape (2,) [True, True]"),
    (torch.empty(2, 3, device="meta"), "a float32 tensor of shape (2, 3) on meta"),
    (np.float32(0.25), "a numpy float32 (0.25)"),
    (iter([1]), "a list_iterator (an iterator)"),
    (object(), "an object"),
])
def test_describe(value, expected):
    assert describe(value) == expected


def test_describe_is_one_short_line_whatever_the_value():
    class Odd:
        def __repr__(self):
            raise RuntimeError("no repr")
    for value in (torch.zeros(1000, 1000), np.zeros((50, 50)), {i: str(i) * 50 for i in range(100)},
                  "a\nb" * 100, Odd(), [[[[1]]]] * 1000, 10 ** 400):
        text = describe(value)
        assert "\n" not in text and len(text) <= 80, text


@pytest.mark.parametrize("value, fragment", [
    (None, "`f` returned None: did you forget `return`?"),
    ("1.5", "returned the string '1.5': it should return a number"),
    (1 + 1j, "the complex number"),
    (torch.tensor([1 + 1j]), "not complex"),
    (torch.ones(3), "it should return a scalar (one number), not a tensor of shape (3,)"),
    (np.ones(3), "it should return a scalar"),
    (np.array(["a"]), "it should return a number"),
    (10 ** 400, "too large for a float"),
    ([0.5], "it should return a number (a float or a 0-d tensor), not a list"),
])
def test_as_float_refuses_with_a_message(value, fragment):
    with pytest.raises(Wrong) as info:
        as_float(value, "f")
    assert fragment in str(info.value)
    assert_one_short_line(str(info.value))


@pytest.mark.parametrize("value, expected", [
    (torch.tensor(2.5), 2.5), (torch.tensor([2.5]), 2.5), (np.float64(2.5), 2.5), (np.array(2.5), 2.5), (3, 3.0),
    (torch.tensor(2.5, requires_grad=True) * 1, 2.5),
])
def test_as_float_accepts_one_real_number(value, expected):
    assert as_float(value) == expected
    assert math.isnan(as_float(torch.tensor(float("nan"))))  # nan is a value: the checks diagnose it


def test_as_tensor_refuses_with_a_message_and_detaches():
    with pytest.raises(Wrong, match="the attention output is None: it should be a torch.Tensor"):
        as_tensor(None, None, "the attention output")
    with pytest.raises(Wrong, match="not complex"):
        as_tensor(torch.ones(2, dtype=torch.complex64), (2,), "f")
    with pytest.raises(Wrong, match="sparse"):
        as_tensor(torch.eye(2).to_sparse(), (2, 2), "f")
    out = as_tensor(torch.ones(2, requires_grad=True) * 2, (2,), "f")
    assert not out.requires_grad and out.device.type == "cpu"


def test_wrong_return_names_a_function_or_a_value():
    assert str(wrong_return([], "a pair", "choose_setting")) == \
        "`choose_setting` returned a list of 0 items []: it should return a pair"
    assert str(wrong_return(3, "a tensor", "the weights")) == "the weights is the number 3: it should be a tensor"


def test_student_gradient_refuses_a_complex_loss():
    def call(s, t):
        return (s.sum() + t.sum() * 0).to(torch.complex64)
    with pytest.raises(Wrong, match="not complex"):
        student_gradient(call, torch.ones(2), torch.ones(2), student_name="s", teacher_name="t")

    def boom(s, t):
        loss = s.sum()
        loss.register_hook(lambda grad: 1 / 0)
        return loss
    with pytest.raises(LearnerCrash, match="ZeroDivisionError"):
        student_gradient(boom, torch.ones(2), torch.ones(2), student_name="s", teacher_name="t")


def test_a_check_that_cannot_use_a_value_still_answers_in_one_line():
    """The last resort in Exercise.grade: an exception no check foresaw is a failure, not a traceback."""
    def checker(call):
        len(call())  # TypeError on an int
    ex = Exercise("ex00.q1", "Length", "f", checker, hints=("a", "b", "c"), solution="")
    result = ex.grade(lambda: 3)
    assert result.status == FAILED
    assert result.message.startswith("q1: the check could not use what `f` returned (TypeError: ")
    assert "\n" not in result.message
    # a bug in a check reads the same to the check: the line says where, and that it may be the check's
    checker_line = checker.__code__.co_firstlineno + 1
    assert f", at test_grading_learner_mistakes.py:{checker_line}): " in result.message
    assert result.message.endswith("if they match, the check itself is at fault: report this line")
