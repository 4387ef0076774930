"""The grader's limits as a learner meets them (a review): a cell the grader interrupted is not blamed on the
learner, a flood of output stops its cell, a looping check leaves the later checks their time, and the printed
summary cuts long text at a word."""
from __future__ import annotations

from pathlib import Path

import nbformat

from kd_tutorial.grading import execute

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "grading"


def _correct_with(label_cell: str, prefix: str):
    """The correct ex02 notebook with ``prefix`` put above the ``def`` of the cell that answers ``label_cell``."""
    nb = nbformat.read(FIXTURES / "correct.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(f"def {label_cell}("))
    cell.source = prefix + cell.source
    return nb


def test_a_cell_interrupted_at_its_limit_above_a_def_is_a_timeout_not_the_learners_interrupt():
    """Real kernel: a wait above `def entropy` ran past the cell limit; the grader interrupted it, and the row said
    `error`, "raised KeyboardInterrupt ... fix that cell", of a key the learner never pressed."""
    nb = _correct_with("entropy", "import time\ntime.sleep(60)\n")
    run = execute.run_submission(nb, "ex02", timeout=40, cell_timeout=3)
    assert run.results["q1"][0] == "passed", run
    assert run.results["q2"] == ("timeout", "q2: the cell that defines `entropy` ran past the cell limit (3 s) and was "
                                            "interrupted, so `entropy` was never defined: an infinite loop or a long "
                                            "wait above the `def`?"), run


def test_the_learners_own_keyboard_interrupt_above_a_def_is_still_an_error():
    """Real kernel: a KeyboardInterrupt the learner's cell raised itself (no limit reached) keeps its `error` row."""
    nb = _correct_with("entropy", "raise KeyboardInterrupt\n")
    run = execute.run_submission(nb, "ex02", timeout=40, cell_timeout=8)
    assert run.results["q2"][0] == "error" and "raised KeyboardInterrupt" in run.results["q2"][1], run


def test_a_looping_check_leaves_the_later_checks_their_time():
    """Real kernel: q1's function loops; its check took what was left of the notebook limit, and a correct q2 said
    "TIMEOUT: the notebook time limit was reached before this check ran". Each later check now keeps its share."""
    nb = _correct_with("softmax_with_temperature", "")
    answer = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def softmax_with_temperature("))
    answer.source = "def softmax_with_temperature(logits, temperature=1.0):\n    while True:\n        pass"
    nb.cells = [c for c in nb.cells if "q1.check(" not in c.source]  # the learner's own check would loop too
    run = execute.run_submission(nb, "ex02", timeout=10, cell_timeout=20)  # 5 s kept for the checks
    assert run.results["q1"][0] == "timeout" and "the check timed out" in run.results["q1"][1], run
    assert run.results["q2"][0] == "passed", run


def test_a_checks_limit_keeps_a_share_for_each_later_check_and_a_floor():
    limit = execute._cell_limit
    assert limit("check", 17.0, 6.0, 20.0, 1) == 14.0  # a share of min(20, 3) s kept for the one check after it
    assert limit("check", 17.0, 6.0, 20.0, 0) == 17.0  # the last check: all that is left, within the cell limit
    assert limit("check", 40.0, 6.0, 20.0, 1) == 20.0
    assert limit("check", 4.0, 6.0, 2.0, 3) == 1.0  # never below the floor
    assert limit("learner", 17.0, 6.0, 20.0, 2) == 11.0 and limit("setup", 17.0, 6.0, 20.0, 2) == 17.0


def test_the_summary_cuts_long_notes_and_messages_at_a_word_with_an_ellipsis():
    """The printed table cut notes at 110 and messages at 150 characters mid-word ("...the rest was disc")."""
    from kd_tutorial.grading import grader
    words = " ".join(f"word{i:02d}" for i in range(40))  # 279 characters, a space every 7
    sub = {"learner": "alice", "file": "alice.ipynb", "notebook": "02", "flags": "", "notes": words,
           "passed": 0, "total": 1}
    row = {"learner": "alice", "file": "alice.ipynb", "exercise": "ex02.q1", "status": "error", "message": words}
    lines = grader.summary([row], [sub]).splitlines()
    note = lines[1].split("  [", 1)[1]
    assert note == words[:words.rfind(" ", 0, 109)] + "…]", note
    message = next(line for line in lines if line.startswith("  alice ex02.q1 error: ")).split(": ", 1)[1]
    assert message == words[:words.rfind(" ", 0, 149)] + "…" and len(message) <= 150, message
    assert grader._cut("short", 150) == "short" and grader._cut("x" * 200, 10) == "x" * 9 + "…"
    assert grader._cut("see the notes; " + "y" * 5, 16) == "see the notes…"
