"""Edges of the batch grader's run of one notebook (``grading/execute.py``) and of ``kd-tutorial make-exercises``
(``grading/authoring.py``) that a mutation audit found untested.

execute: the install and restart lines the grader does not run, the results file (only the checks' own lines count),
the one-line refusal of a temporary folder that cannot take the results, and what a run reports when the kernel dies,
a check loops, the kernel stays stuck, the notebook limit runs out or the output is capped. Those runs use a stand-in
kernel (:class:`FakeKernel`, no Jupyter kernel is started): the learner's cells and the checks run in-process, the
grader's setup cells are skipped, and a stand-in clock makes the time limits exact.

authoring: unmarked solution cells and outputs never reach the exercises, malformed solutions and a broken record are
one line or ignored, and the folders make-exercises picks when none is given.
"""
import contextlib
import errno
import json
import tempfile
from types import SimpleNamespace

import nbformat
import pytest
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from kd_tutorial.grading import authoring, execute
from kd_tutorial.grading.runner import GRADER_CELL

# ----------------------------------------------------------------------------- execute: lines not run


@pytest.mark.parametrize("line", [
    "!{sys.executable} -m pip install x",  # the form Jupyter's own docs recommend
    "!pip3 install x",
    "!pip3.11 install x",
    "!cd src; pip install -e .",
    "!cd src && conda remove -y x",
    "conda update -y x",  # automagic: IPython runs it as %conda
])
def test_more_forms_of_an_install_become_pass(line):
    assert execute.without_installs(line) == (f"pass  # {line} : not run by the grader", True)


def test_an_install_in_a_sh_cell_becomes_the_shells_no_op():
    assert execute.without_installs("%%sh\npip install x") == ("%%sh\n:  # pip install x : not run by the grader",
                                                               True)


def test_os_exit_is_a_restart_the_grader_does_not_run():
    assert execute.without_installs("    os._exit(0)", execute.RESTART_LINE) == (
        "    pass  # os._exit(0) : not run by the grader", True)


def test_check_reserve_keeps_at_most_three_seconds_a_check_and_at_most_half_the_limit():
    assert execute.check_reserve(2, 20.0, 100.0) == 6.0
    assert execute.check_reserve(2, 2.0, 100.0) == 4.0
    assert execute.check_reserve(4, 20.0, 10.0) == 5.0


# ----------------------------------------------------------------------------- execute: the results file


def test_only_the_checks_own_lines_for_this_exercise_set_count(tmp_path):
    """A line without the checks' nonce (written by a learner), for another set or an unknown label, a repeated
    label, a line that is not an object: none of them changes a grade; notes and flags are kept once each, flags
    only with the guard's nonce."""
    lines = [
        {"kind": "result", "nonce": "forged", "exercise": "ex02.q1", "status": "passed", "message": "forged"},
        {"kind": "result", "nonce": "checks", "exercise": "ex03.q2", "status": "passed", "message": "other set"},
        {"kind": "result", "nonce": "checks", "exercise": "ex02.q9", "status": "passed", "message": "no such label"},
        [1, 2],
        {"kind": "result", "nonce": "checks", "exercise": "ex02.q1", "status": "failed", "message": "q1: wrong"},
        {"kind": "result", "nonce": "checks", "exercise": "ex02.q1", "status": "passed", "message": "q1: again"},
        {"kind": "note", "nonce": "guard", "note": "from the guard"},
        {"kind": "note", "nonce": "guard", "note": "from the guard"},
        {"kind": "note", "nonce": "forged", "note": "forged note"},
        {"kind": "flag", "nonce": "guard", "flag": "patched-libraries", "detail": "torch.allclose"},
        {"kind": "flag", "nonce": "guard", "flag": "patched-libraries", "detail": "torch.allclose"},
        {"kind": "flag", "nonce": "checks", "flag": "read-solutions", "detail": "not the guard's"},
    ]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    run = execute.Run()
    execute._read_results(str(results), "guard", "checks", "ex02", run)
    assert run.results == {"q1": ("failed", "q1: wrong")}
    assert run.notes == ["from the guard"]
    assert run.flags == ["replaced functions the checks use (put back before the checks): torch.allclose"]


def test_a_kernel_of_another_python_is_noted_and_this_one_is_not(tmp_path):
    results = tmp_path / "results.jsonl"
    for executable, notes in (("/elsewhere/bin/python", ["kernel ran /elsewhere/bin/python, not "]),
                              (execute.sys.executable, [])):
        results.write_text(json.dumps({"kind": "kernel", "nonce": "guard", "executable": executable}) + "\n")
        run = execute.Run()
        execute._read_results(str(results), "guard", "checks", "ex02", run)
        assert run.kernel_python == executable
        assert [note[:len(notes[0])] for note in run.notes] == notes


# ----------------------------------------------------------------------------- execute: a disk that refuses


def test_a_temporary_folder_without_permission_says_make_it_writable():
    said = str(execute._refused(OSError(errno.EACCES, "Permission denied")))
    assert said == (f"the checks cannot write their results in {tempfile.gettempdir()} (permission denied): make it "
                    "writable or set TMPDIR to a folder on a disk with room, then run it again")


def test_a_refused_results_folder_leaves_no_working_folder_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real, made = tempfile.mkdtemp, []

    def second_refused(*args, **kwargs):
        if made:
            raise OSError(errno.ENOSPC, "No space left on device")
        made.append(real(*args, **kwargs))
        return made[-1]
    monkeypatch.setattr(tempfile, "mkdtemp", second_refused)
    with pytest.raises(execute.ResultsRefused, match="no space left on its disk"):
        execute.run_submission(new_notebook(), "ex02", timeout=30, cell_timeout=5)
    assert made and list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- execute: runs with a stand-in kernel


class FakeKernel:
    """Stands in for nbclient's client: runs the learner's cells and the checks in-process, skips the grader's other
    cells (guard, preload, purge, and the cell sent after an interrupt); ``actions`` maps a fragment of a cell's
    source to what happens there: seconds the cell takes, "flood" (the kernel's cap stopped it), "truncate" (the
    output past the cap was left out), or an exception."""

    def __init__(self, clock, actions=None, fail_setup=None):
        self.max_output_bytes, self.output_bytes, self.truncated, self.flooded = 0, 0, False, ()
        self.timeout, self.timed_out = None, False
        self.clock, self.actions, self.fail_setup, self.env, self.namespace = clock, actions or {}, fail_setup, None, {}

    @contextlib.contextmanager
    def setup_kernel(self, env=None, **kwargs):
        self.env = env
        if self.fail_setup:
            raise self.fail_setup
        yield

    def execute_cell(self, cell, index):
        for fragment, action in self.actions.items():
            if fragment in cell.source:
                if action == "flood":
                    self.flooded += (index,)
                    return
                if action == "truncate":
                    self.truncated = True
                    return
                if isinstance(action, (int, float)):
                    self.clock.now += action
                    continue
                raise action
        if not cell.source.startswith(GRADER_CELL) or "grade_into(" in cell.source:
            exec(cell.source, self.namespace)  # noqa: S102 - the test's own tiny cells and the grader's checks


ANSWERS = ("import torch\n\n\ndef softmax_with_temperature(logits, temperature=1.0):\n"
           "    return torch.softmax(logits / temperature, dim=-1)\n\n\n"
           "def entropy(p):\n    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim=-1)\n")


def fake_run(monkeypatch, cells, actions=None, timeout=60.0, cell_timeout=5.0, **kwargs):
    """``run_submission`` of a notebook of ``cells`` (sources) for ex02 with a :class:`FakeKernel`; (run, kernel)."""
    clock = SimpleNamespace(now=1000.0)
    kernel = FakeKernel(clock, actions, kwargs.pop("fail_setup", None))
    monkeypatch.setattr(execute, "time", SimpleNamespace(monotonic=lambda: clock.now))
    monkeypatch.setattr(execute, "_make_client", lambda *args, **kw: kernel)
    nb = new_notebook(cells=[new_code_cell(source) for source in cells])
    return execute.run_submission(nb, "ex02", timeout=timeout, cell_timeout=cell_timeout, **kwargs), kernel


def test_the_kernel_started_by_the_grader_is_offline_and_knows_it_grades(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("KD_TUTORIAL_GRADING", "0")
    _, kernel = fake_run(monkeypatch, [ANSWERS])
    assert kernel.env["HF_HUB_OFFLINE"] == "1" and kernel.env["KD_TUTORIAL_GRADING"] == "1"


def test_installs_and_restarts_skipped_are_noted_with_their_cells(monkeypatch):
    run, _ = fake_run(monkeypatch, ["!pip install x\nimport os", "if False:\n    os._exit(0)",
                                    "import os; os.kill(os.getpid(), 0)", ANSWERS])  # signal 0: harmless
    assert run.notes == ["installs skipped (the grader does not run them): cell 1",
                         "kernel restarts skipped (the grader does not run them): cells 2, 3"]
    assert run.results["q1"][0] == "passed"


def test_a_kernel_that_dies_in_a_check_fails_that_check_and_stops_the_rest(monkeypatch):
    run, _ = fake_run(monkeypatch, [ANSWERS], {"'q1'": DeadKernelError("dead")})
    assert run.results == {
        "q1": ("error", "the kernel died while checking q1 (os._exit, crash or out of memory)"),
        "q2": ("error", "the kernel died while running the check of q1; the remaining checks could not run")}
    assert run.notes == ["the kernel died while running the check of q1 (os._exit, crash or out of memory)"]


def test_a_kernel_that_dies_as_it_starts_fails_every_check(monkeypatch):
    run, _ = fake_run(monkeypatch, [ANSWERS], fail_setup=DeadKernelError("dead"))
    assert run.results == {"q1": ("error", "the kernel died"), "q2": ("error", "the kernel died")}


def test_a_kernel_that_cannot_start_fails_every_check_with_a_note_not_a_crash(monkeypatch):
    run, _ = fake_run(monkeypatch, [ANSWERS], fail_setup=RuntimeError("no such kernel"))
    assert run.results == dict.fromkeys(("q1", "q2"), ("error", "the grader could not run the notebook "
                                                                "(RuntimeError)"))
    assert run.notes == ["grader could not run the notebook: RuntimeError: no such kernel"]


def test_a_check_that_times_out_is_a_timeout_and_the_next_check_still_runs(monkeypatch):
    run, _ = fake_run(monkeypatch, [ANSWERS], {"'q1'": CellTimeoutError("timed out")})
    assert run.results["q1"] == ("timeout", "q1: the check timed out after 5 s (an infinite loop in your function?)")
    assert run.results["q2"][0] == "passed", run
    assert run.notes == ["the check of q1 timed out after 5 s and was interrupted"]


def test_a_kernel_stuck_after_an_interrupt_stops_the_checks_as_a_timeout(monkeypatch):
    stuck = CellTimeoutError("timed out")
    run, _ = fake_run(monkeypatch, [ANSWERS], {"'q1'": stuck, f"{GRADER_CELL}\npass": stuck})
    assert run.results["q2"] == ("timeout", "the kernel was stuck (ignored an interrupt) before this check ran")
    assert run.notes[-1] == "the kernel ignored the interrupt and was stopped"


def test_a_notebook_limit_of_a_second_or_less_runs_nothing_and_says_so(monkeypatch):
    run, _ = fake_run(monkeypatch, [ANSWERS], timeout=1.0)
    assert run.results == dict.fromkeys(("q1", "q2"), (
        "timeout", "the notebook time limit (1 s) was reached before this check ran"))
    assert run.notes == ["notebook time limit (1 s) reached"]


def test_cells_skipped_for_the_checks_time_are_noted_and_what_they_define_is_a_timeout(monkeypatch):
    """The first cell takes 14 of the 20 s: the 6 s kept for the two checks leave none for the next cells. q1's
    function, defined in a skipped cell, is "not checked", not "not attempted"; q2's stub was left in place, which
    no time limit explains: it stays "not attempted"."""
    stub = "def entropy(p):\n    raise NotImplementedError()"
    cells = ["import time  # slow", "import torch", ANSWERS.split("def entropy")[0], "pass"]
    run, _ = fake_run(monkeypatch, [stub, *cells], {"# slow": 14.0}, timeout=20.0)
    assert run.notes == ["notebook time limit (20 s) nearly reached: cells 3, 4, 5 not run, to leave time for the "
                         "checks"]
    assert run.results["q1"] == ("timeout", "q1: not checked: the notebook time limit (20 s) left some of its cells "
                                            "unrun (see the notes)")
    assert run.results["q2"][0] == "not attempted", run


def test_the_skipped_cells_note_names_ten_cells_then_dots(monkeypatch):
    run, _ = fake_run(monkeypatch, ["pass  # slow", *["pass"] * 12], {"# slow": 14.0}, timeout=20.0)
    assert run.notes == ["notebook time limit (20 s) nearly reached: cells 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ... not "
                         "run, to leave time for the checks"]


def test_a_single_skipped_cell_is_one_cell(monkeypatch):
    run, _ = fake_run(monkeypatch, ["pass  # slow", "pass"], {"# slow": 14.0}, timeout=20.0)
    assert run.notes == ["notebook time limit (20 s) nearly reached: cell 2 not run, to leave time for the checks"]


def test_output_past_the_cap_is_noted(monkeypatch):
    run, _ = fake_run(monkeypatch, ["print('x')  # long", ANSWERS], {"# long": "truncate"}, max_output_bytes=1000)
    assert run.notes == ["printed more than 1,000 characters of output (truncated)"]


def test_cells_the_kernels_cap_stopped_are_named_each_and_the_truncation_too(monkeypatch):
    run, _ = fake_run(monkeypatch, [f"pass  # flood {i}" for i in range(11)] + [ANSWERS],
                           {"# flood": "flood"}, max_output_bytes=1000)
    assert run.notes == ["cells 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... each printed more than 1,000 characters of output "
                         "by themselves (--max-output) and were stopped there: print less in them"]
    actions = {"# flood": "flood", "# long": "truncate"}
    run, _ = fake_run(monkeypatch, ["pass  # flood", "pass  # long", ANSWERS], actions, max_output_bytes=1000)
    assert run.notes == ["printed more than 1,000 characters of output (truncated); cell 1 printed more than 1,000 "
                         "characters of output by itself (--max-output) and was stopped there: print less in it"]


def test_the_grader_leaves_no_temporary_folder_behind(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run, _ = fake_run(monkeypatch, [ANSWERS])
    assert run.results["q1"][0] == "passed" and list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- authoring


def solution_notebook(*cells) -> nbformat.NotebookNode:
    """A solution notebook: a marked solution cell (check_folders wants one), then ``cells``."""
    marked = new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION")
    return new_notebook(cells=[new_markdown_cell("# Title"), marked, *cells])


def write_solutions(folder, nb=None, name="01_tiny.ipynb"):
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb or solution_notebook(), folder / name)
    return folder


def test_an_unmarked_solution_cell_and_every_output_are_left_out_of_the_exercise():
    """nbgrader's rule: a solution cell without markers becomes the stub entirely; no output or execution count of
    the solutions (an answer printed) reaches the exercises."""
    unmarked = new_code_cell("answer = 42", metadata={"nbgrader": {"solution": True, "grade": False}},
                             execution_count=3, outputs=[new_output("stream", name="stdout", text="42\n")])
    exercise = authoring.make_exercise(solution_notebook(unmarked))
    assert exercise.cells[2].source == "# YOUR CODE HERE\nraise NotImplementedError()"
    assert exercise.cells[2].outputs == [] and exercise.cells[2].execution_count is None
    plain = new_code_cell("print(2)", execution_count=1, outputs=[new_output("stream", name="stdout", text="2\n")])
    exercise = authoring.make_exercise(solution_notebook(plain))
    assert exercise.cells[2].source == "print(2)" and exercise.cells[2].outputs == []
    assert exercise.cells[2].execution_count is None


def test_an_end_marker_alone_names_the_file_and_the_fix(tmp_path, capsys):
    solutions = write_solutions(tmp_path / "solutions", solution_notebook(new_code_cell("x = 1\n### END SOLUTION")))
    assert authoring.main(["--solutions", str(solutions), "--exercises", str(tmp_path / "ex")]) == 2
    assert capsys.readouterr().err == (
        f"kd-tutorial make-exercises: {solutions / '01_tiny.ipynb'}, cell 2: '### END SOLUTION' without '### BEGIN "
        "SOLUTION': pair each '### BEGIN SOLUTION' with one '### END SOLUTION' below it\n")
    assert not (tmp_path / "ex").exists()


def test_a_solution_that_is_json_but_not_a_valid_notebook_is_one_line(tmp_path, capsys):
    solutions = write_solutions(tmp_path / "solutions")
    nb = json.loads((solutions / "01_tiny.ipynb").read_text())
    nb["cells"][1]["source"] = 5
    (solutions / "01_tiny.ipynb").write_text(json.dumps(nb))
    write_solutions(solutions, name="00_ok.ipynb")
    assert authoring.main(["--solutions", str(solutions), "--exercises", str(tmp_path / "ex")]) == 2
    assert capsys.readouterr().err == (
        f"kd-tutorial make-exercises: {solutions / '01_tiny.ipynb'} is not a valid notebook (NotebookValidationError): "
        f"save it again from Jupyter, or move it out of {solutions}\n")


@pytest.mark.parametrize("record", ["[]", '{"notebooks": []}', '{"notebooks": 3}'])
def test_a_broken_record_is_read_as_none(tmp_path, record):
    solutions, out = write_solutions(tmp_path / "solutions"), tmp_path / "ex"
    assert authoring.main(["--solutions", str(solutions), "--exercises", str(out)]) == 0
    (out / authoring.RECORD).write_text(record)
    assert authoring.read_record(out) == {}
    assert authoring.main(["--solutions", str(solutions), "--exercises", str(out)]) == 0


def test_exercises_of_an_older_version_with_outputs_added_are_regenerated_without_force(tmp_path):
    """No record (an older make-exercises wrote them), and the learner's Jupyter added outputs only: the cells are
    what make-exercises writes, so the notebook is regenerated, not refused as a learner's work."""
    solutions, out = write_solutions(tmp_path / "solutions"), tmp_path / "ex"
    assert authoring.main(["--solutions", str(solutions), "--exercises", str(out)]) == 0
    (out / authoring.RECORD).unlink()
    nb = json.loads((out / "01_tiny.ipynb").read_text())
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "1\n"}]
    (out / "01_tiny.ipynb").write_text(json.dumps(nb))
    assert authoring.main(["--solutions", str(solutions), "--exercises", str(out)]) == 0
    assert (out / "01_tiny.ipynb").read_text() == authoring.render(solutions)["01_tiny.ipynb"]


def test_solutions_in_a_folder_named_exercises_get_another_folder_suggested(tmp_path, capsys):
    solutions = write_solutions(tmp_path / "exercises")
    assert authoring.main(["--solutions", str(solutions), "--exercises", str(solutions)]) == 2
    assert capsys.readouterr().err.endswith(f"give --exercises a folder of its own, e.g. --exercises "
                                            f"{tmp_path / 'exercises-generated'}\n")


def test_an_exercises_folder_whose_parents_do_not_exist_yet_is_made(tmp_path):
    solutions, out = write_solutions(tmp_path / "solutions"), tmp_path / "new" / "course" / "ex"
    assert authoring.main(["--solutions", str(solutions), "--exercises", str(out)]) == 0
    assert (out / "01_tiny.ipynb").is_file()


def test_a_rerun_with_nothing_to_change_writes_nothing_and_says_so(tmp_path, capsys):
    solutions, out = write_solutions(tmp_path / "solutions"), tmp_path / "ex"
    assert authoring.main(["--solutions", str(solutions), "--exercises", str(out)]) == 0
    assert capsys.readouterr().out == f"1 exercise notebook(s) written to {out}\n"
    assert authoring.main(["--solutions", str(solutions), "--exercises", str(out)]) == 0
    assert capsys.readouterr().out == f"exercises/ already up to date ({out})\n"


def test_without_flags_the_solutions_folder_here_is_used_and_check_names_no_flag(tmp_path, monkeypatch, capsys):
    """In a course folder, `kd-tutorial make-exercises --check` reads ./solutions (not the checkout the package is
    installed from), and its advice is the plain command, without a `--exercises None`."""
    write_solutions(tmp_path / "solutions")
    monkeypatch.chdir(tmp_path)
    assert authoring.main(["--check"]) == 1
    assert capsys.readouterr().out == f"{tmp_path / 'exercises'} is stale: 01_tiny.ipynb. Run `kd-tutorial " \
                                      "make-exercises`.\n"


def test_the_exercises_go_beside_the_solutions_given_whatever_the_current_folder(tmp_path, monkeypatch, capsys):
    solutions = write_solutions(tmp_path / "course" / "solutions")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert authoring.main(["--solutions", str(solutions), "--check"]) == 1
    assert capsys.readouterr().out == (f"{tmp_path / 'course' / 'exercises'} is stale: 01_tiny.ipynb. Run "
                                       f"`kd-tutorial make-exercises --solutions {solutions}`.\n")
    assert authoring.main(["--solutions", str(solutions)]) == 0
    assert (tmp_path / "course" / "exercises" / "01_tiny.ipynb").is_file()
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_check_says_regenerating_removes_its_own_notebook_whose_solution_is_gone(tmp_path, capsys):
    """Its own unchanged notebook is what a plain rerun removes: --check says to run it, not to move the file."""
    solutions, out = write_solutions(tmp_path / "solutions"), tmp_path / "ex"
    write_solutions(solutions, name="02_gone.ipynb")
    assert authoring.main(["--solutions", str(solutions), "--exercises", str(out)]) == 0
    (solutions / "02_gone.ipynb").unlink()
    capsys.readouterr()
    assert authoring.main(["--solutions", str(solutions), "--exercises", str(out), "--check"]) == 1
    assert capsys.readouterr().out == (f"{out} is stale: 02_gone.ipynb. Run `kd-tutorial make-exercises --solutions "
                                       f"{solutions} --exercises {out}`.\n")


def test_nested_solution_markers_are_refused_even_when_closed():
    """BEGIN, BEGIN, END: balanced in number, but a solution region inside another: refused, not stubbed twice."""
    with pytest.raises(authoring.AuthoringError, match="^cell: nested '### BEGIN SOLUTION'$"):
        authoring.stub_source("### BEGIN SOLUTION\nx = 1\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION")


# ----------------------------------------------------------------------------- defects found by the audit, fixed


def test_an_install_line_inside_a_string_is_text_and_one_after_the_string_is_still_made_pass():
    """A help text naming the command: the line that names it and closes the string became ``pass  # ...``, the
    string never closed, and the learner's whole cell was a SyntaxError graded "error"."""
    source = 'HELP = """Install it with:\npip install kd-tutorial"""\n!pip install kd-tutorial'
    rewritten, found = execute.without_installs(source)
    assert found and rewritten.splitlines()[-1] == "pass  # !pip install kd-tutorial : not run by the grader"
    namespace = {}
    exec(rewritten, namespace)  # noqa: S102 - the test's own lines
    assert namespace["HELP"] == "Install it with:\npip install kd-tutorial"


def test_a_cell_whose_nbgrader_metadata_is_null_is_no_solution(tmp_path):
    """Valid nbformat (a tool that empties the key writes it): make-exercises stopped on an AttributeError
    traceback. Such a cell is copied as any cell without nbgrader metadata is."""
    cell = new_code_cell("x = 1", metadata={"nbgrader": None})
    solutions = write_solutions(tmp_path / "solutions", solution_notebook(cell))
    assert authoring.main(["--solutions", str(solutions), "--exercises", str(tmp_path / "ex")]) == 0
    made = nbformat.read(tmp_path / "ex" / "01_tiny.ipynb", as_version=4)
    assert made.cells[-1].source == "x = 1"


@pytest.mark.parametrize("source", [
    '!echo """\n!pip install x',  # a shell line's quotes open no Python string
    "%env A='''\n!pip install x",
    's = """a \\"""\n"""\n!pip install x',  # an escaped triple quote does not end the string
    "!cd src && pip -q install x"])  # an option between the tool and its command
def test_an_install_after_quotes_that_open_no_string_or_after_options_is_still_made_pass(source):
    """A review of the string-aware rewrite: each of these left a real install line as it was."""
    rewritten, found = execute.without_installs(source)
    assert found and rewritten.splitlines()[-1].startswith("pass  # "), rewritten


def test_a_kernel_that_dies_in_a_learners_cell_names_the_cell_by_its_first_line(monkeypatch):
    """"the kernel died while running cell 2": JupyterLab numbers no cell, so the note quotes the cell's first line
    (cut at 40 characters) beside its number."""
    crash = "import ctypes  # a crash the kernel does not survive, in a cell whose first line is long enough to cut"
    run, _ = fake_run(monkeypatch, [ANSWERS, "\n" + crash], {"import ctypes": DeadKernelError("dead")})
    said = f"cell 2 (`{crash[:40]}...`)"
    assert run.notes == [f"the kernel died while running {said} (os._exit, crash or out of memory)"]
    assert run.results["q1"] == ("error", f"the kernel died while running {said}; the remaining checks could not run")
