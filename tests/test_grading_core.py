"""The check framework: outcomes as data, what the learner sees, and what counts as 'not attempted'."""
from __future__ import annotations

import pytest

from kd_tutorial.grading.core import (ERROR, FAILED, NOT_ATTEMPTED, PASSED, CheckFailed, Exercise, LearnerError,
                                      NotAttempted, Wrong)


def _checker(call):
    if call(2) != 4:
        raise Wrong("double it")


EX = Exercise("ex00.q1", "Double", "double", _checker, hint="x + x",
              solution="def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION")


def _helper_stub():
    raise NotImplementedError()


def test_outcomes():
    assert EX.grade(lambda x: 2 * x).status == PASSED
    assert EX.grade(lambda x: x).status == FAILED
    assert EX.grade(None).status == NOT_ATTEMPTED
    assert EX.grade(42).status == FAILED

    def stub(x):
        raise NotImplementedError()
    assert EX.grade(stub).status == NOT_ATTEMPTED

    def not_a_stub(x):  # a NotImplementedError with a message is a real error, not the stub
        raise NotImplementedError("aten::foo is not implemented for this backend")
    assert EX.grade(not_a_stub).status == ERROR

    def calls_helper(x):  # raised deeper, in another module: an error, not the stub
        return _helper_stub()
    assert EX.grade(calls_helper).status == ERROR

    def crashes(x):
        return 1 / 0
    result = EX.grade(crashes)
    assert result.status == ERROR and "ZeroDivisionError" in result.message

    def exits(x):
        raise SystemExit(3)
    assert EX.grade(exits).status == ERROR


def test_function_from_the_package_is_not_the_learners():
    from kd_tutorial.grading.ex02 import q1
    from kd_tutorial.losses import softmax_with_temperature
    result = q1.grade(softmax_with_temperature)
    assert result.status == FAILED and "write your own" in result.message


def test_check_prints_or_raises_short_exceptions(capsys):
    EX.check(lambda x: 2 * x)
    assert capsys.readouterr().out.startswith("\N{WHITE HEAVY CHECK MARK} q1: Correct!")
    with pytest.raises(CheckFailed) as info:
        EX.check(lambda x: x)
    assert info.value._render_traceback_() == ["\N{CROSS MARK} q1: double it"]
    with pytest.raises(NotAttempted):
        EX.check(None)
    with pytest.raises(LearnerError):
        EX.check(lambda x: 1 / 0)


def test_hint_and_solution(capsys):
    EX.hint()
    assert "x + x" in capsys.readouterr().out
    EX.solution()
    out = capsys.readouterr().out
    assert "return 2 * x" in out and "BEGIN SOLUTION" not in out
