"""The check framework: outcomes as data, what the learner sees, and what counts as 'not attempted'."""
from __future__ import annotations

from pathlib import Path

import pytest

from kd_tutorial.grading.core import (ERROR, FAILED, NOT_ATTEMPTED, PASSED, CheckFailed, Exercise, LearnerError,
                                      NotAttempted, Wrong)


def _checker(call):
    if call(2) != 4:
        raise Wrong("double it")


EX = Exercise("ex00.q1", "Double", "double", _checker,
              hints=("Doubling adds a number to itself.", "Use + or *.", "x + x"),
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


def test_check_with_no_argument_checks_the_notebooks_function(capsys, monkeypatch):
    """q1.check() with no argument (the Kaggle Learn habit) said "`double` is not defined: not attempted yet" although
    the learner had defined it: it now checks the function of that name in the notebook's namespace (__main__), and
    says how to define it when there is none."""
    import sys
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "double", lambda x: 2 * x, raising=False)
    EX.check()
    assert capsys.readouterr().out.startswith("\N{WHITE HEAVY CHECK MARK} q1: Correct!")
    monkeypatch.delattr(main, "double")
    with pytest.raises(NotAttempted) as info:
        EX.check()
    assert str(info.value) == "q1: `double` is not defined yet: run the cell that defines it, then `q1.check(double)`"


def test_hint_and_solution(capsys):
    ex = Exercise("ex00.q1", "Double", "double", _checker, hints=EX.hints, solution=EX.solution_code)
    ex.hint()
    assert "x + x" not in capsys.readouterr().out
    ex.solution()
    EX.solution()
    out = capsys.readouterr().out
    assert "return 2 * x" in out and "BEGIN SOLUTION" not in out
    assert "```" not in out  # a plain terminal renders no Markdown: the code is shown as it is, ready to paste


def test_solution_in_a_terminal_ipython_shows_the_code_not_an_object_repr(monkeypatch):
    """Under IPython, q.solution() displayed a Markdown object: a terminal IPython (ipython, jupyter console) has no
    Markdown renderer and showed `<IPython.core.display.Markdown object>` instead of the code. The plain-text
    form a terminal shows must hold the code too, and Jupyter still gets the Markdown."""
    import IPython
    import IPython.display
    from IPython.core.formatters import DisplayFormatter
    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False, **kw: shown.append((obj, raw)))
    EX.solution()
    (obj, raw), = shown
    data = obj if raw else DisplayFormatter().format(obj)[0]
    assert "return 2 * x" in data["text/plain"] and "BEGIN SOLUTION" not in data["text/plain"]
    assert "```" not in data["text/plain"]
    assert "```python" in data["text/markdown"] and "return 2 * x" in data["text/markdown"]


def _new(hints=("Doubling adds a number to itself.", "Use + or *.", "x + x")):
    return Exercise("ex00.q1", "Double", "double", _checker, hints=hints, solution=EX.solution_code)


def test_hint_tiers_in_order_then_the_last_again(capsys):
    ex = _new()
    outs = []
    for _ in range(4):
        ex.hint()
        outs.append(capsys.readouterr().out)
    assert "1/3" in outs[0] and "concept" in outs[0] and "Doubling adds" in outs[0]
    assert "2/3" in outs[1] and "API" in outs[1] and "Use + or *." in outs[1]
    assert "3/3" in outs[2] and "near-solution" in outs[2] and "x + x" in outs[2]
    assert "x + x" in outs[3] and "last one again" in outs[3] and "last one again" not in outs[2]
    assert "q1.solution() shows the answer" in outs[3]  # the notebook's name for it (it said q.solution())
    assert "x + x" not in outs[0] + outs[1]


def test_hint_tier_is_per_exercise_object(capsys):
    a, b = _new(), _new()
    a.hint()
    a.hint()
    capsys.readouterr()
    b.hint()
    assert "1/3" in capsys.readouterr().out


@pytest.mark.parametrize("hints", ["one string", ("a", "b"), ("a", "b", ""), ("a", "b", "a")])
def test_hints_must_be_three_distinct_tiers(hints):
    with pytest.raises(ValueError):
        _new(hints)


def _solution_lines(code):
    return [line.strip() for line in code.splitlines()
            if line.strip() and not line.strip().startswith(("def ", "#", '"""'))]


def test_every_registered_exercise_has_three_tiers():
    from kd_tutorial.grading import registry
    exercises = registry.all_exercises()
    assert len(exercises) >= 13
    for ex in exercises:
        assert len(ex.hints) == 3, ex.key
        assert all(h.strip() for h in ex.hints), ex.key
        assert len(set(ex.hints)) == 3, ex.key
        body = "\n".join(_solution_lines(ex.solution_code))
        near = ex.hints[2]
        assert body not in near, ex.key
        # the near-solution is not the answer verbatim: no whole line of the solution's body appears in it
        verbatim = [line for line in _solution_lines(ex.solution_code)
                    if len(line) > 25 and "BEGIN SOLUTION" not in line and "END SOLUTION" not in line
                    and line in near]
        assert not verbatim, (ex.key, verbatim)


def test_an_exercise_whose_cell_raised_is_an_error_not_unattempted(tmp_path, monkeypatch):
    """A SyntaxError in the cell that defines the function left it undefined, and the grader reported "not
    attempted", as for a blank stub. The error quoted is that cell's own (the check cell after it raises a
    NameError), and a function defined by a cell that ran, then deleted, is still not attempted."""
    import json
    import types

    from kd_tutorial.grading import ex03, runner
    name = ex03.q1.name
    callbacks = []
    shell = types.SimpleNamespace(events=types.SimpleNamespace(register=lambda event, fn: callbacks.append(fn)))
    monkeypatch.setattr(runner, "_shell", lambda: shell)
    runner.record_failed_cells()

    def cell(source, error=None):  # what IPython passes to post_run_cell
        callbacks[0](types.SimpleNamespace(info=types.SimpleNamespace(raw_cell=source), error_before_exec=error,
                                           error_in_exec=None))
    results = tmp_path / "results.jsonl"
    cell("x = 1")
    runner.grade_into("ex03", "q1", {}, str(results), "n")  # nothing of it written: not attempted
    cell(f"def {name}(a, b):\n    return (a", SyntaxError("'(' was never closed"))
    cell(f"q1.check({name})", NameError(f"name '{name}' is not defined"))
    runner.grade_into("ex03", "q1", {}, str(results), "n")
    first, second = (json.loads(line) for line in results.read_text().splitlines())
    assert first["status"] == "not attempted"
    assert second["status"] == "error" and second["message"] == (
        f"q1: the cell that defines `{name}` raised SyntaxError: '(' was never closed, so `{name}` was never "
        "defined: fix that cell")


def test_a_failed_answer_cell_below_the_untouched_stub_is_an_error_not_unattempted(tmp_path, monkeypatch):
    """The learner kept the stub cell and wrote their answer in a new cell below it, with a syntax error: the stub
    still defined the name, so the report said "not attempted yet" of an answer that was written."""
    import json
    import types

    from kd_tutorial.grading import ex03, runner
    name = ex03.q1.name
    shell = types.SimpleNamespace(kd_failed_cells=[(f"def {name}(a, b):\n    return (a",
                                                    SyntaxError("'(' was never closed"))])
    monkeypatch.setattr(runner, "_shell", lambda: shell)

    def stub(*args, **kwargs):
        raise NotImplementedError()
    results = tmp_path / "results.jsonl"
    runner.grade_into("ex03", "q1", {name: stub}, str(results), "n")
    assert json.loads(results.read_text()) | {"seconds": 0} == {
        "nonce": "n", "kind": "result", "exercise": "ex03.q1", "status": "error", "seconds": 0,
        "message": f"q1: the cell that defines `{name}` raised SyntaxError: '(' was never closed, so the stub stayed "
                   "in its place: fix that cell"}


def test_a_notebook_of_an_earlier_course_version_is_told_so(tmp_path, monkeypatch):
    """A learner's notebook saved from an earlier version defines `scaled_dot_product_attention`, where ex01.q1 now
    asks for `packed_multi_head_attention` (another task): it was reported "not attempted yet", which hid the work."""
    import json
    import types

    from kd_tutorial.grading import runner
    monkeypatch.setattr(runner, "_shell", lambda: types.SimpleNamespace(kd_failed_cells=[]))
    results = tmp_path / "results.jsonl"
    runner.grade_into("ex01", "q1", {"scaled_dot_product_attention": lambda q, k, v: q}, str(results), "n")
    runner.grade_into("ex01", "q1", {"scaled_dot_product_attention": 3}, str(results), "n")  # not a function
    old, other = (json.loads(line) for line in results.read_text().splitlines())
    assert old["status"] == other["status"] == "not attempted"
    assert old["message"] == ("q1: this notebook defines `scaled_dot_product_attention`, the exercise of an earlier "
                              "version of the course; this version asks for `packed_multi_head_attention`, another "
                              "task: do q1 in the current exercises/ notebook")
    assert "earlier version" not in other["message"]


def test_the_grader_reports_a_syntax_error_in_a_def_cell_as_an_error(tmp_path):
    """End to end, in a real kernel: the failed cell is recorded as it runs."""
    import nbformat

    from kd_tutorial.grading import grader
    fixtures = Path(__file__).resolve().parent / "fixtures" / "grading"
    nb = nbformat.read(fixtures / "untouched.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.source.startswith("def softmax_with_temperature"))
    cell.source = "def softmax_with_temperature(logits, temperature=1.0):\n    return (logits / temperature"
    nbformat.write(nb, tmp_path / "alice.ipynb")
    rows, _ = grader.grade_paths([tmp_path / "alice.ipynb"], timeout=90, cell_timeout=8, progress=None)
    status = {r["exercise"].split(".")[-1]: (r["status"], r["message"]) for r in rows}
    assert status["q1"][0] == "error" and "raised SyntaxError" in status["q1"][1], status
    assert status["q2"][0] == "not attempted", status


def test_a_nan_gradient_reaches_the_tensor():
    """`float(grad.abs().sum()) > 0` is False for a nan gradient: an undetached teacher whose loss used
    torch.xlogy(p, p) on probabilities of exactly 0 (padded keys) got a nan gradient and passed as frozen."""
    import torch

    from kd_tutorial.grading.core import reaches
    assert reaches(torch.tensor([0.0, float("nan")])) and reaches(torch.tensor([0.0, -1e-30]))
    assert not reaches(torch.zeros(3)) and not reaches(None)


def test_near_solution_hint_of_the_lm_kd_loss_names_the_forward_kl():
    """ex09.q1's third hint said "the KL over the vocabulary from the detached teacher's log-softmax at T to the
    student's": "the KL from Q to P" is the usual name of KL(P || Q), so it read as KL(student || teacher), the
    reverse KL of q2, which the check refuses. The hint now names the direction the check wants."""
    from kd_tutorial.grading import ex09
    near = ex09.q1.hints[2]
    assert "KL(teacher || student)" in near and "teacher's log-softmax at T to the student's" not in near


def test_the_self_check_in_ex01_q2s_hint_runs_in_the_notebook():
    """ex01.q2's second hint said "To check yourself: sum(p.numel() for p in BertModel(config, ...))", but the
    notebook imports no BertModel and has no `config`, nor a `teacher_config` or `overrides` outside the function:
    typed as given, it raised NameError. The hint's statements, run in the notebook's namespace (its setup imports
    math and torch, nothing more), now count what the solution counts."""
    import math
    import re

    import torch

    from kd_tutorial.grading import ex01
    hint = ex01.q2.hints[1]
    assert "from transformers import" in hint, hint
    code = hint[hint.index("from transformers import"):].rstrip(".")
    code = re.sub(r" \([^)]*\);", ";", code.replace("add_pooling_layer=...", "add_pooling_layer=True"))  # prose
    code = "\n".join(s.replace("then sum(", "n = sum(") for s in code.split("; "))
    ns = {"math": math, "torch": torch}
    with torch.device("meta"):  # sizes alone: no bert-base weights drawn
        exec(code, ns)
    exec(ex01.q2.solution_code, ns)
    assert ns["n"] == ns["count_student_parameters"](ns["teacher_config"], ns["overrides"]) == 52_779_264


def test_a_solution_call_while_grading_is_flagged_and_a_hint_is_not(tmp_path):
    """exercises/README.md: a q.solution() call that runs in the grading kernel is flagged in the report (the
    audit hook sees it); a q.hint() call is not. Run in a subprocess: the guard's audit hook cannot be removed."""
    import subprocess
    import sys

    from kd_tutorial.grading.execute import Run, _read_results
    results = tmp_path / "results.jsonl"
    code = ("from kd_tutorial.grading.runner import install_guard\n"
            f"install_guard({str(results)!r}, 'n1', [{str(tmp_path / 'solutions')!r}])\n"
            "from kd_tutorial.grading.core import Exercise\n"
            f"q1 = Exercise('ex02.q1', 'Double', 'double', None, hints={EX.hints!r}, solution={EX.solution_code!r})\n"
            "q1.hint()\nq1.solution()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "return 2 * x" in done.stdout and "Hint 1/3 (q1" in done.stdout
    run = Run()
    _read_results(str(results), "n1", "n2", "ex02", run)
    assert run.flags == ["called .solution(): ex02.q1"]
