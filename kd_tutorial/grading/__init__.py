"""Exercises with instant feedback, and a grader for workshops.

* ``kd_tutorial.grading.exNN`` holds the exercises of course notebook NN
  (``q1``, ``q2``...): ``q1.check(fn)``, ``q1.hint()``, ``q1.solution()``.
* :mod:`.core`: the check framework; :mod:`.registry`: which exercises belong to
  which notebook; :mod:`.grader`: ``kd-tutorial grade``; :mod:`.authoring`:
  ``kd-tutorial make-exercises``.

Importing this package imports neither torch nor transformers.
"""
from .core import (ERROR, FAILED, NOT_ATTEMPTED, PASSED, STATUSES, TIMEOUT, CheckFailed,  # noqa: F401
                   Exercise, LearnerError, NotAttempted, Result)

__all__ = ["ERROR", "FAILED", "NOT_ATTEMPTED", "PASSED", "STATUSES", "TIMEOUT", "CheckFailed", "Exercise",
           "LearnerError", "NotAttempted", "Result"]
