"""The grader's limits as a learner meets them (a review): a cell the grader interrupted is not blamed on the
learner, a flood of output stops its cell, a looping check leaves the later checks their time, and the printed
summary cuts long text at a word."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

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
    # 6 s kept for the two checks, so the kernel's start and the learner's cells have 10 s (5 s, at timeout=10, ran
    # out on a loaded machine); q1's check may take 10 s of what is left, where it took all of it
    run = execute.run_submission(nb, "ex02", timeout=16, cell_timeout=20)
    assert run.results["q1"][0] == "timeout" and "the check timed out" in run.results["q1"][1], run
    assert run.results["q2"][0] == "passed", run


def _looping_q1(nb) -> None:
    """Make q1's function of ``nb`` loop forever (the learner's own ``q1.check`` cell below it stays)."""
    answer = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def softmax_with_temperature("))
    answer.source = "def softmax_with_temperature(logits, temperature=1.0):\n    while True:\n        pass"


def test_a_check_the_learners_own_cell_ran_past_the_cell_limit_is_not_run_again():
    """Real kernel: the learner's `q1.check(...)` cell looped to the cell limit, then the grader's check of the same
    function looped as long again (twice --cell-timeout for one mistake). The grader's check reports the timeout."""
    nb = _correct_with("softmax_with_temperature", "")
    _looping_q1(nb)
    run = execute.run_submission(nb, "ex02", timeout=60, cell_timeout=4)
    assert run.results["q1"] == ("timeout", "q1: not checked again: your own `q1.check` cell ran past the cell limit "
                                            "(4 s) and was interrupted while it checked this same "
                                            "`softmax_with_temperature` (an infinite loop in your function?)"), run
    assert run.results["q2"][0] == "passed", run


def test_only_the_check_that_looped_in_a_cell_of_several_is_not_run_again():
    """A review: with `q1.check(...)` and `q2.check(...)` in one cell and only q2's function looping, q1's correct
    answer was reported as a timeout too: every check the cell named was marked, not the one that was running."""
    nb = _correct_with("entropy", "")
    answer = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def entropy("))
    answer.source = "def entropy(p):\n    while True:\n        pass"
    checks = [c for c in nb.cells if c.cell_type == "code" and ".check(" in c.source]
    checks[-1].source = "q1.check(softmax_with_temperature)\nq2.check(entropy)"  # below both functions
    nb.cells = [c for c in nb.cells if c not in checks[:-1]]
    run = execute.run_submission(nb, "ex02", timeout=60, cell_timeout=4)
    assert run.results["q1"][0] == "passed", run
    assert run.results["q2"][0] == "timeout" and "not checked again" in run.results["q2"][1], run


def test_a_function_redefined_after_its_looping_check_is_checked_again():
    """Real kernel: a learner who fixed the function in a later cell is graded on the fix."""
    nb = _correct_with("softmax_with_temperature", "")
    fixed = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def softmax_with_temperature("))
    at = nb.cells.index(fixed)
    nb.cells.insert(at + 2, nbformat.v4.new_code_cell(fixed.source))  # after the learner's own q1 check cell
    _looping_q1(nb)
    run = execute.run_submission(nb, "ex02", timeout=60, cell_timeout=4)
    assert "q1.check" in nb.cells[at + 1].source and run.results["q1"][0] == "passed", run


def test_a_checks_limit_keeps_a_share_for_each_later_check_and_a_floor():
    limit = execute._cell_limit
    assert limit("check", 17.0, 6.0, 20.0, 1) == 14.0  # a share of min(20, 3) s kept for the one check after it
    assert limit("check", 17.0, 6.0, 20.0, 0) == 17.0  # the last check: all that is left, within the cell limit
    assert limit("check", 40.0, 6.0, 20.0, 1) == 20.0
    assert limit("check", 4.0, 6.0, 2.0, 3) == 1.0  # never below the floor
    assert limit("learner", 17.0, 6.0, 20.0, 2) == 11.0 and limit("setup", 17.0, 6.0, 20.0, 2) == 17.0


def _printing_at_each_call(nb, characters: int) -> None:
    """Make q1's correct function print ``characters`` at each call (the grader's check calls it), and drop the
    learner's own q1 check cell, which a cap on learner cells would stop."""
    answer = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def softmax_with_temperature("))
    answer.source += ("\n_kd_softmax = softmax_with_temperature\n\n\n"
                      "def softmax_with_temperature(logits, temperature=1.0):\n"
                      f"    print('y' * {characters})\n    return _kd_softmax(logits, temperature)\n")
    nb.cells[:] = [c for c in nb.cells if "q1.check(" not in c.source]


def _number_of(nb, fragment: str) -> int:
    """The number (from 1, as the notes count) of the first code cell of ``nb`` whose source holds ``fragment``."""
    return 1 + next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and fragment in c.source)


# a print flood writes what fits, so the notebook's output passes the cap with the error: "(truncated)"; a display
# past the cap is not published at all
@pytest.mark.parametrize("flood, truncated", [("print('x' * 10000)", "printed more than 100,000 characters of output "
                                                                     "(truncated); "),
                                              ("display(HTML('x' * 10000))", "")])
def test_a_flood_above_a_def_is_stopped_in_the_kernel_at_the_cap_and_a_later_print_still_runs(flood, truncated):
    """Real kernel: a cell printing without end above `def softmax_with_temperature` had its output discarded past
    --max-output, but ran on to its cell limit while the kernel's memory grew by GBs. The kernel's own cap stops it
    from its own print, with no signal (an interrupt sent by the grader once lost a finished cell's reply); the notes
    and q1's row say so, and the next cell, which prints a line, runs. A flood of `display()` ran on to its cell limit
    too (the cap counted only stdout and stderr); it is stopped and graded the same way."""
    nb = _correct_with("softmax_with_temperature",
                       f"from IPython.display import HTML, display\nwhile True:\n    {flood}\n")
    answer = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def entropy("))
    answer.source = "print('the entropy cell')\n" + answer.source
    cell = _number_of(nb, flood)
    run = execute.run_submission(nb, "ex02", timeout=60, cell_timeout=30, max_output_bytes=100_000)
    assert not any("timed out" in note for note in run.notes), run.notes  # stopped well before its 30 s
    assert run.notes == [f"{truncated}cell {cell} printed more "
                         "than 100,000 characters of output by itself (--max-output) and was stopped there: print "
                         "less in it"]
    assert run.results["q1"] == ("error", "q1: the cell that defines `softmax_with_temperature` printed more than "
                                          "100,000 characters of output (--max-output) and was stopped, so "
                                          "`softmax_with_temperature` was never defined: print less above the `def`")
    assert run.results["q2"][0] == "passed", run


def test_cells_that_each_print_up_to_the_cap_are_not_stopped_and_are_graded_as_before():
    """Real kernel: five cells each print exactly --max-output characters (their last line; a cell of q1's `def`
    among them), 500,000 together: none passes the cap by itself, so none is stopped, no reply is lost (the grader's
    interrupt once lost 8 of 8: a finished cell waited out its limit), and the notebook is graded as before, with the
    truncation note only."""
    nb = _correct_with("softmax_with_temperature", "")
    last_line = "\nprint('x' * 99_999)"  # 99,999 x and a newline: 100,000 characters, the cap itself
    answer = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def softmax_with_temperature("))
    answer.source += last_line
    at = nb.cells.index(answer)
    nb.cells[at:at] = [nbformat.v4.new_code_cell(f"x = {i}{last_line}") for i in range(4)]
    run = execute.run_submission(nb, "ex02", timeout=60, cell_timeout=10, max_output_bytes=100_000)
    assert run.notes == ["printed more than 100,000 characters of output (truncated)"], run.notes
    assert run.results["q1"][0] == "passed" and run.results["q2"][0] == "passed", run


def test_the_stop_passes_a_learners_except_exception_and_never_stops_a_check():
    """Real kernel: a flood inside the learner's `try: ... except Exception: pass` above `def entropy` is stopped all
    the same (the stop is a BaseException); a cell printing one character past the cap is stopped; q1's function,
    which prints past the cap at each call, is not stopped inside the grader's check, which passes."""
    nb = _correct_with("entropy", "try:\n    while True:\n        print('x' * 10000)\nexcept Exception:\n    pass\n")
    _printing_at_each_call(nb, 150_000)
    nb.cells.append(nbformat.v4.new_code_cell("print('z' * 100_000)"))  # 100,001 characters with the newline
    swallowed, past = _number_of(nb, "except Exception:"), _number_of(nb, "print('z' * 100_000)")
    run = execute.run_submission(nb, "ex02", timeout=60, cell_timeout=20, max_output_bytes=100_000)
    assert not any("timed out" in note for note in run.notes), run.notes
    assert f"cells {swallowed}, {past} each printed more than 100,000 characters of output by themselves " \
           "(--max-output) and were stopped there: print less in them" in run.notes[0], run.notes
    assert run.results["q2"] == ("error", "q2: the cell that defines `entropy` printed more than 100,000 characters "
                                          "of output (--max-output) and was stopped, so `entropy` was never defined: "
                                          "print less above the `def`"), run
    assert run.results["q1"][0] == "passed", run


def _fake_cap(monkeypatch, limit: int):
    """runner's cap installed on a stand-in shell, as in a kernel without IPython 9's per-cell tee of write (IPython
    8): the shell's ``pre_run_cell`` and ``post_execute`` hooks, and a cell runner ``run(source, code)``."""
    import io
    import sys
    import types

    from kd_tutorial.grading import runner
    hooks: dict = {}
    shell = types.SimpleNamespace(events=types.SimpleNamespace(
        register=lambda event, func: hooks.setdefault(event, []).append(func)))
    monkeypatch.setattr(runner, "_shell", lambda: shell)
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # the kernel's own stream, as cap_output finds it
    runner.cap_output(limit)

    def run(source: str, code) -> None:
        for hook in hooks["pre_run_cell"]:
            hook(types.SimpleNamespace(raw_cell=source))
        try:
            code()
        finally:
            for hook in hooks["post_execute"]:
                hook()
    return shell, run


def test_the_kernels_cap_writes_what_fits_then_stops_the_cell_from_the_main_thread_only(monkeypatch):
    """No kernel: runner's capped write keeps a cell's output up to the cap (the last character included), then raises
    a BaseException from the write that passes it, and from every later one; another thread's writes (ipykernel
    forwards a subprocess's output from one) and the grader's cells (marked runner.GRADER_CELL) pass through."""
    import sys
    import threading

    import pytest

    from kd_tutorial.grading import runner
    shell, run = _fake_cap(monkeypatch, 10)
    written = sys.stdout

    def cell():
        sys.stdout.write("abcdef")
        sys.stdout.write("ghij")  # 10 characters: the cap itself, not past it
        with pytest.raises(runner.OutputLimitExceeded, match=r"more than 10 characters .* print less in it"):
            sys.stdout.write("klm")
        with pytest.raises(runner.OutputLimitExceeded):
            sys.stdout.write("n")
        shell.kd_output_cap["count"] = 8  # a write that passes the cap keeps what fits
        with pytest.raises(runner.OutputLimitExceeded):
            sys.stdout.write("xyz")
        thread = threading.Thread(target=sys.stdout.write, args=("|from a thread",))
        thread.start()
        thread.join()
    run("print('learner')", cell)
    assert not issubclass(runner.OutputLimitExceeded, Exception)
    run(f"{runner.GRADER_CELL}\ncheck()", lambda: sys.stdout.write("|from a check" * 10))
    assert written.getvalue() == "abcdefghijxy|from a thread" + "|from a check" * 10


def test_the_kernels_cap_counts_what_a_cell_displays_but_its_images_and_stops_the_display_past_it(monkeypatch):
    """No kernel: display() reaches the notebook through the shell's display publisher, which the cap wraps at each
    cell. A display's text counts with the cell's prints; the one past the cap is not published and raises, as does
    every later write; an image costs nothing (a plot, only its line of text), nor does an update of a display;
    another thread's displays and the grader's cells pass. Before, only writes counted, and `display(df)` in a loop
    ran on to the cell's limit."""
    import sys
    import threading
    import types

    import pytest

    from kd_tutorial.grading import runner
    shell, run = _fake_cap(monkeypatch, 10)
    published = []
    shell.display_pub = types.SimpleNamespace(publish=lambda data, metadata=None, **kwargs: published.append(data))
    plot = {"text/plain": "<Figure>", "image/png": "i" * 1000}

    def cell():
        sys.stdout.write("ab")
        shell.display_pub.publish(data=plot)  # 8 characters of text: the image is not counted
        with pytest.raises(runner.OutputLimitExceeded, match=r"more than 10 characters .* print less in it"):
            shell.display_pub.publish({"text/html": "<b>k</b>"})
        with pytest.raises(runner.OutputLimitExceeded):
            sys.stdout.write("l")
        shell.display_pub.publish({"text/plain": "an update" * 10}, update=True)  # replaces a display: not counted
        thread = threading.Thread(target=shell.display_pub.publish, args=({"text/plain": "from a thread"},))
        thread.start()
        thread.join()
    run("display(fig)", cell)
    run(f"{runner.GRADER_CELL}\ncheck()", lambda: shell.display_pub.publish({"text/plain": "m" * 100}))
    run("display(fig)", lambda: shell.display_pub.publish(data=plot))  # a new cell: counted from 0
    assert published == [plot, {"text/plain": "an update" * 10}, {"text/plain": "from a thread"},
                         {"text/plain": "m" * 100}, plot]
    assert sys.stdout.getvalue() == "ab"


def test_the_kernels_cap_counts_a_cells_last_value_and_stops_the_cell_past_it(monkeypatch):
    """No kernel: a cell's last value reaches the notebook through the shell's displayhook (``write_format_data``),
    which the cap wraps at each cell as it wraps display(): its text counts with the cell's prints, and the value past
    the cap is not sent. Before, a cell ending in `'x' * 10**9` sent its whole repr to the grader's client."""
    import sys
    import types

    import pytest

    from kd_tutorial.grading import runner
    shell, run = _fake_cap(monkeypatch, 10)
    sent = []
    shell.displayhook = types.SimpleNamespace(write_format_data=lambda data, md=None: sent.append(data))

    def cell():
        sys.stdout.write("ab")
        shell.displayhook.write_format_data({"text/plain": "'12345'"})  # 7 characters: 9 with the print
        with pytest.raises(runner.OutputLimitExceeded, match=r"more than 10 characters .* print less in it"):
            shell.displayhook.write_format_data({"text/plain": "'xy'"})
    run("'x' * 10**9", cell)
    run("'12345'", lambda: shell.displayhook.write_format_data({"text/plain": "'12345678'"}))  # a new cell: 10
    assert sent == [{"text/plain": "'12345'"}, {"text/plain": "'12345678'"}]


def test_a_cell_whose_last_value_is_too_long_is_stopped_and_the_notebook_graded():
    """Real kernel: a cell ending in a value whose repr passes --max-output is stopped, and named in the notes; one
    whose value fits is not; both checks pass. Before, the value was sent whole, and only the client's truncation
    note said that output was lost."""
    nb = _correct_with("entropy", "")
    at = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.startswith("def entropy("))
    nb.cells[at:at] = [nbformat.v4.new_code_cell("'w' * 90_000"), nbformat.v4.new_code_cell("'v' * 300_000")]
    long_value = _number_of(nb, "'v' * 300_000")
    run = execute.run_submission(nb, "ex02", timeout=60, cell_timeout=20, max_output_bytes=100_000)
    assert run.notes == [f"cell {long_value} printed more than 100,000 characters of output "
                         "by itself (--max-output) and was stopped there: print less in it"], run.notes
    assert run.results["q1"][0] == "passed" and run.results["q2"][0] == "passed", run


def test_a_learners_tee_of_stdout_counts_each_print_once_without_ipythons_tee(monkeypatch):
    """No kernel, IPython 8's way (no per-cell tee of write): a learner's `sys.stdout = Tee(sys.stdout, 'log.txt')`
    had both its own write and the kernel's stream's capped, and a print of 60 characters at a cap of 100 was stopped
    (counted twice). The cap wraps only the kernel's own stream, and counts a write once however many capped writes
    it passes; a file or StringIO that sys.stdout is redirected to is not counted at all."""
    import io
    import sys

    import pytest

    from kd_tutorial.grading import runner
    _, run = _fake_cap(monkeypatch, 100)
    kernel_stream, log = sys.stdout, io.StringIO()

    class Tee:
        def __init__(self, stream):
            self.stream = stream

        def write(self, text):
            self.stream.write(text)
            log.write(text)
    run("install the tee", lambda: setattr(sys, "stdout", Tee(sys.stdout)))
    run("print 60", lambda: print("g" * 59))
    run("print 60 again", lambda: print("g" * 59))
    with pytest.raises(runner.OutputLimitExceeded):
        run("print 101", lambda: print("g" * 100))
    assert kernel_stream.getvalue() == "g" * 59 + "\n" + "g" * 59 + "\n" + "g" * 100
    run("redirect to a StringIO", lambda: setattr(sys, "stdout", io.StringIO()))
    run("print 300 there", lambda: print("s" * 300))
    assert len(sys.stdout.getvalue()) == 301


def _with_cells_before(nb, label_cell: str, *sources: str):
    """``nb`` with code cells of ``sources`` put just above the cell that answers ``label_cell``."""
    at = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.startswith(f"def {label_cell}("))
    nb.cells[at:at] = [nbformat.v4.new_code_cell(source) for source in sources]
    return nb


def _not_stopped(run) -> None:
    """No cell of ``run`` was stopped for its output, no check timed out, and both checks passed."""
    assert not any("stopped" in note or "timed out" in note for note in run.notes), run.notes
    assert run.results["q1"][0] == "passed" and run.results["q2"][0] == "passed", run


def test_a_print_after_a_cell_with_a_top_level_await_is_counted_once():
    """Real kernel (IPython 9): a cell with a top-level `await` runs without IPython's tee of write, so the cap's
    wrapper stayed, and from the next cell on each write passed two capped writes: a correct answer printing 60,000
    characters at a cap of 100,000 was stopped. A write now counts once."""
    nb = _with_cells_before(_correct_with("softmax_with_temperature", ""), "softmax_with_temperature",
                            "import asyncio\nawait asyncio.sleep(0)", "print('a' * 60_000)")
    run = execute.run_submission(nb, "ex02", timeout=60, cell_timeout=20, max_output_bytes=100_000)
    _not_stopped(run)


def test_a_learner_cell_that_forgets_the_kd_tutorial_modules_never_gets_a_check_stopped():
    """Real kernel: a learner cell deleted the kd_tutorial modules from sys.modules, so the purge imported a new
    runner that switched off another copy of the cap, and q1's check of a function printing 300,000 characters at
    each call was stopped. The cap lives on the shell, and is never on for the grader's own cells."""
    nb = _correct_with("softmax_with_temperature", "")
    _printing_at_each_call(nb, 300_000)
    _with_cells_before(nb, "softmax_with_temperature",
                       "import sys\nfor _m in [m for m in sys.modules if m.startswith('kd_tutorial')]:\n"
                       "    del sys.modules[_m]")
    run = execute.run_submission(nb, "ex02", timeout=60, cell_timeout=20, max_output_bytes=100_000)
    _not_stopped(run)


def test_a_learners_pre_run_cell_hook_that_floods_never_gets_a_check_stopped():
    """Real kernel: a learner's last cell hooked pre_run_cell to print 200,000 characters; the hook's print, counted in
    each check's cell, stopped it, and every check "did not report a result". The grader's cells are never capped."""
    nb = _correct_with("softmax_with_temperature", "")
    nb.cells.append(nbformat.v4.new_code_cell(
        "get_ipython().events.register('pre_run_cell', lambda info: print('p' * 200_000))"))
    run = execute.run_submission(nb, "ex02", timeout=60, cell_timeout=20, max_output_bytes=100_000)
    assert run.results["q1"][0] == "passed" and run.results["q2"][0] == "passed", run


def test_a_learners_pre_run_cell_hook_that_floods_is_charged_to_no_cell():
    """Real kernel (a review of the third try): the hook's cut output was still counted in the cell after it, so a
    correct cell that printed 6 characters was stopped, its function never defined (q1: error, where the code before
    the cap gave full marks). A hook's output is cut at the cap and charged to no cell."""
    nb = _with_cells_before(_correct_with("softmax_with_temperature", ""), "softmax_with_temperature",
                            "get_ipython().events.register('pre_run_cell', lambda info: print('p' * 200_000))")
    answer = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def softmax_with_temperature("))
    answer.source = "print('start')\n" + answer.source
    run = execute.run_submission(nb, "ex02", timeout=60, cell_timeout=20, max_output_bytes=100_000)
    assert run.results["q1"][0] == "passed" and run.results["q2"][0] == "passed", run
    assert not any("was stopped" in note for note in run.notes), run.notes


def test_output_redirected_to_a_file_or_a_stringio_is_not_counted():
    """Real kernel: a learner's `sys.stdout = open('train.log', 'w')` (or an io.StringIO) set in one cell had the
    next cell's 300,000 characters to it counted, and stopped. Only the kernel's own streams are capped."""
    nb = _with_cells_before(
        _correct_with("softmax_with_temperature", ""), "softmax_with_temperature",
        "import io, sys\n_old = sys.stdout\nsys.stdout = open('train.log', 'w')",
        "for i in range(3000):\n    print('epoch', i, 'f' * 100)\nsys.stdout.close()\nsys.stdout = io.StringIO()")
    answer = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def softmax_with_temperature("))
    answer.source = ("print('s' * 300_000)\n_n = len(sys.stdout.getvalue())\nsys.stdout = _old\n"  # above q1's def:
                     "assert _n == 300_001, _n\n" + answer.source)  # q1 passes only if the print and the assert held
    run = execute.run_submission(nb, "ex02", timeout=60, cell_timeout=20, max_output_bytes=100_000)
    _not_stopped(run)


def test_the_help_and_the_readme_say_what_happens_to_a_cell_that_prints_past_max_output():
    """--max-output's help said only "output kept in memory per notebook", and exercises/README.md that a flooding cell
    runs on to its cell limit: both now say that such a cell is stopped."""
    import argparse

    from kd_tutorial.grading import grader
    action = next(a for a in grader._parser(argparse.ArgumentParser)._actions if "--max-output" in a.option_strings)
    assert "prints or displays more than this by itself to the notebook (stdout, stderr, display(), its last value) " \
        "is stopped" in action.help, action.help
    assert "counted in characters, not bytes" in action.help and action.metavar == "CHARS"  # was BYTES
    assert "images, updates of a display, a subprocess's" in action.help
    readme = " ".join((FIXTURES.parents[2] / "exercises" / "README.md").read_text(encoding="utf-8").split())
    assert "a cell of the learner's that prints more than that by itself is stopped there" in readme
    assert "counted as characters, not bytes" in readme
    assert "and so do `display()` and a cell's last value (all but their images" in readme
    assert "still runs to its cell limit" not in readme


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
