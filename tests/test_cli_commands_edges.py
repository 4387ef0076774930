"""Edges of the command line's commands other than distill's argument checks (kd_tutorial/cli.py), and of where a
result says it comes from (kd_tutorial/provenance.py), on small made-up inputs, nothing downloaded, trained or
measured: `report` (more than one file, the order of its tables, the README's read and write, a hand-edited
results.json refused in one line, never a traceback), `prefetch` (what it downloads, and a Hub whose reachability is
unknown), `benchmark` and `search` (what they pass on to the measurement), and ``git_commit``."""
import errno
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from kd_tutorial import cli, report
from test_bad_inputs import error_line

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
START, END = report.README_START, report.README_END


def _results(folder: Path, edit=None, name: str = "results.json") -> Path:
    """``folder/results.json``: the committed tiny run, changed by ``edit`` (called on its dict) where given."""
    data = json.loads((RESULTS / "tiny.json").read_text())
    if edit:
        edit(data)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(data))
    return folder / name


# ------------------------------------------------------------------------------------------------------- report

def test_a_summary_of_two_results_files_is_refused_and_nothing_is_written(tmp_path, capsys):
    """--summary writes one file: with two inputs it would summarise the first and drop the second in silence."""
    first, second = _results(tmp_path / "a"), _results(tmp_path / "b")
    target = tmp_path / "summary.json"
    line = error_line(capsys, "report", str(first), str(second), "--summary", str(target))
    assert line == "kd-tutorial: error: --summary writes one file: give exactly one results.json"
    assert not target.exists()


def test_the_printed_tables_come_in_path_order_whatever_order_the_files_are_given_in(tmp_path, capsys):
    first = _results(tmp_path / "a", lambda r: r["run"].update(profile="tiny"))
    second = _results(tmp_path / "b", lambda r: r["run"].update(profile="cpu"))
    assert cli.main(["report", str(second), str(first)]) == 0
    out = capsys.readouterr().out
    assert 0 <= out.index("Profile `tiny`") < out.index("Profile `cpu`")


def test_a_readme_the_splice_cannot_write_is_one_line_that_names_the_option(tmp_path, capsys, monkeypatch):
    """A plain OSError from the README's write (its permissions restored on a file of another user, say), not only
    the package's own StorageError, is one line naming --readme, and the README is as it was."""
    run = _results(tmp_path / "run")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold\n{END}\n")

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(readme))
    monkeypatch.setattr(cli, "splice_readme", refused)
    line = error_line(capsys, "report", str(run), "--readme", str(readme))
    assert line == (f"kd-tutorial: error: cannot write --readme {readme} (Permission denied): give a file path you can "
                    "write; what was there before is untouched")
    assert readme.read_text() == f"intro\n{START}\nold\n{END}\n"


def test_a_readme_that_is_a_folder_is_one_line(tmp_path, capsys):
    run = _results(tmp_path / "run")
    (tmp_path / "docs").mkdir()
    line = error_line(capsys, "report", str(run), "--readme", str(tmp_path / "docs"))
    assert line.startswith(f"kd-tutorial: error: cannot read --readme {tmp_path / 'docs'} (")
    assert line.endswith(f"): give the README.md that holds the {START} marker")


@pytest.mark.parametrize("section", ["run", "models"])
def test_a_run_or_models_section_of_another_type_is_an_edited_results_json(tmp_path, capsys, section):
    """A hand edit that left "run": 5 or "models": 5 gets the line that says what a results.json has there (it was
    told the file has no 'run' and 'models', both being there)."""
    path = _results(tmp_path, lambda r: r.update({section: 5}))
    line = error_line(capsys, "report", str(path))
    kinds = "'run' is int, 'models' list" if section == "run" else "'run' is dict, 'models' int"
    assert line == (f"kd-tutorial: error: results file {path} is incomplete or edited ({kinds}, where distill writes "
                    f"a dict and a list of models): {cli.RESULTS_FIX}, or run it again")


@pytest.mark.parametrize("key", ["agreement", "params", "mb", "tokens_per_s", "latency_q3_ms"])
def test_every_measured_number_edited_to_text_is_refused_by_name(tmp_path, capsys, key):
    path = _results(tmp_path, lambda r: r["models"][1].update({key: "x"}))
    name = json.loads(path.read_text())["models"][1]["name"]
    line = error_line(capsys, "report", str(path))
    assert line.startswith(f"kd-tutorial: error: results file {path} is incomplete or edited ({name}'s {key} is 'x', "
                           "not a number)")


@pytest.mark.parametrize("value", ["", False, []])
def test_an_empty_or_false_measurement_is_refused_not_skipped(tmp_path, capsys, value):
    """Only a missing number (null) is let through: an empty text, false or [] is no measurement either."""
    path = _results(tmp_path, lambda r: r["models"][1].update(ece=value))
    line = error_line(capsys, "report", str(path))
    assert f"'s ece is {value!r}, not a number" in line


@pytest.mark.parametrize("edit", [lambda r: r["models"].insert(1, "distil-2L"),
                                  lambda r: r["run"].update(phase_seconds=None),
                                  lambda r: r["run"].update(phase_seconds=[1, 2]),
                                  lambda r: r["models"][1].update(accuracy_std="x")])
def test_a_hand_edit_of_another_shape_is_one_line_not_a_traceback(tmp_path, capsys, edit):
    """A model that is no table, phase seconds that are no table, a spread that is text: each was let through the
    checks of the numbers, and is refused in one line where the tables are rendered."""
    path = _results(tmp_path, edit)
    line = error_line(capsys, "report", str(path))
    assert line.startswith(f"kd-tutorial: error: results file {path} is incomplete or edited (")
    assert line.endswith("or run it again")


# ----------------------------------------------------------------------------------------------------- prefetch

@pytest.fixture
def online(monkeypatch):
    """A machine with internet (this one has none): the offline flags unset, nothing downloaded but recorded."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    fetched = []
    monkeypatch.setattr(cli, "_download", lambda name, generative=False: fetched.append(name))
    monkeypatch.setattr(cli, "hub_reachable", lambda: True)
    return fetched


def test_prefetch_goes_ahead_where_it_cannot_tell_whether_the_hub_answers(online, monkeypatch, capsys):
    """hub_reachable() is None behind a proxy (no verdict): only a Hub known not to answer is refused."""
    monkeypatch.setattr(cli, "hub_reachable", lambda: None)
    assert cli.main(["prefetch", "--profile", "cpu", "--models-only"]) == 0
    assert online == ["sentence-transformers/all-MiniLM-L6-v2"]


def test_prefetch_downloads_the_imdb_dataset_the_course_reads(online, monkeypatch, capsys):
    from kd_tutorial.data import HUB_DATASET
    loaded = []
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=loaded.append,
                                                                     disable_progress_bars=lambda: None))
    assert cli.main(["prefetch", "--profile", "cpu"]) == 0
    assert loaded == [HUB_DATASET]
    assert f"downloading {HUB_DATASET} ..." in capsys.readouterr().out


@pytest.mark.parametrize("generative, model", [(False, "BertForSequenceClassification"), (True, "GPT2LMHeadModel")])
def test_a_download_fetches_the_tokenizer_and_the_model_the_course_loads(monkeypatch, generative, model):
    """A BERT teacher or student as a two-class classifier, notebook 09's GPT-2 as a language model."""
    calls = []
    fake = types.SimpleNamespace(**{cls: type(cls, (), {"from_pretrained": staticmethod(  # nothing reaches the Hub
        lambda name, _cls=cls, **kwargs: calls.append((_cls, name, kwargs)))})
        for cls in ("AutoTokenizer", "BertForSequenceClassification", "GPT2LMHeadModel")})
    monkeypatch.setitem(sys.modules, "transformers", fake)
    cli._download("org/m", generative=generative)
    assert calls == [("AutoTokenizer", "org/m", {}), (model, "org/m", {} if generative else {"num_labels": 2})]


# ------------------------------------------------------------------------------------------- benchmark and search

def test_the_loop_benchmark_measures_with_the_options_given(monkeypatch, capsys):
    asked = {}
    monkeypatch.setattr(cli, "loop_speed", lambda profile, **kwargs: asked.update(kwargs) or {"speedup": 1.5})
    assert cli.main(["benchmark", "--profile", "tiny", "--student", "1", "--steps", "3", "--init", "random",
                     "--quiet"]) == 0
    assert (asked["student"], asked["steps"], asked["init"], asked["progress"]) == (1, 3, "random", False)
    out = capsys.readouterr().out  # the profile line, then the measurement as JSON
    assert json.loads(out[out.index("\n{") + 1:]) == {"speedup": 1.5}
    assert cli.main(["benchmark", "--profile", "tiny"]) == 0
    assert (asked["student"], asked["steps"], asked["init"]) == (0, cli.LOOP_STEPS, "pretrained")


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_a_benchmark_report_is_measured_as_asked_and_a_gpus_is_told_where_it_belongs(tmp_path, monkeypatch, capsys,
                                                                                     device):
    measured = json.loads((RESULTS / "benchmark-nvidia-h200.json").read_text())
    measured["environment"]["device"] = device
    asked = {}
    monkeypatch.setattr(cli, "run_benchmark", lambda profile, **kwargs: asked.update(kwargs) or measured)
    target = tmp_path / "bench.json"
    assert cli.main(["benchmark", "--profile", "tiny", "--report", str(target), "--quick", "--steps", "2"]) == 0
    assert (asked["quick"], asked["steps"]) == (True, 2)
    assert json.loads(target.read_text())["kind"] == "benchmark"
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == (f"wrote {target}; a GPU's report belongs in docs/results/benchmark-nvidia-h200.json"
                    if device == "cuda" else f"wrote {target}")


def test_search_refuses_zero_steps_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "run_search", lambda *a, **k: pytest.fail("searched"))
    line = error_line(capsys, "search", "--profile", "tiny", "--steps", "0", "--out", str(tmp_path / "s"))
    assert line == "kd-tutorial: error: --steps 0: give a whole number of optimizer steps >= 1 per trial"



def test_make_exercises_refuses_an_unknown_option_in_the_clis_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["make-exercises", "--chekc"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.startswith("kd-tutorial: error: unrecognized arguments: --chekc"), err
    assert len(err.strip().splitlines()) == 1, err

# --------------------------------------------------------------------------------------------------- provenance

@pytest.mark.parametrize("answer", [subprocess.CompletedProcess([], 128, stdout="", stderr="fatal: not a git repo"),
                                    subprocess.TimeoutExpired("git", 5)])
def test_a_checkout_without_a_commit_to_name_records_none(monkeypatch, answer):
    """A checkout whose describe fails (no commit yet) or hangs: no commit, rather than "" or a traceback. The file
    is tracked (ls-files answers), so each answer is describe's."""
    from kd_tutorial import provenance

    def git(command, **kwargs):
        if "ls-files" in command:
            return subprocess.CompletedProcess(command, 0, stdout="provenance.py\n")
        if isinstance(answer, Exception):
            raise answer
        return answer
    monkeypatch.setattr(provenance.subprocess, "run", git)
    assert provenance.git_commit() is None


# ----------------------------------------------------------------------------- distill: how it ends

def test_distill_ends_naming_its_plots_its_checkpoints_and_what_to_run_next(tmp_path, monkeypatch, capsys):
    """It ended "wrote runs/latest/results.json and 2 plots": no plot's name, no checkpoints, no next step."""
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    out = tmp_path / "run"

    def trained(*args, **kwargs):
        (out / "checkpoints").mkdir(parents=True)
        return {"plots": [str(out / "accuracy_vs_latency.png"), str(out / "training_curves.png")]}
    monkeypatch.setattr(cli, "run_distill", trained)
    assert cli.main(["distill", "--profile", "tiny", "--out", str(out), "--quiet"]) == 0
    wrote, then = capsys.readouterr().out.splitlines()[-2:]
    assert wrote.startswith(f"wrote {out / 'results.json'}, the plots accuracy_vs_latency.png, training_curves.png "
                            f"and the checkpoints in {out / 'checkpoints'}/ in ")
    assert then.startswith(f"next: `kd-tutorial report {out / 'results.json'}` renders the tables")
    assert then.endswith("notebooks 05 and 06, with KD_TUTORIAL_PROFILE=tiny, reuse the students this run trained")


def test_distill_captions_its_comparisons_with_how_a_verdict_is_reached(capsys):
    """The comparisons table came with no words in the console: the caption says what is compared and the rule."""
    from kd_tutorial import pipeline
    from kd_tutorial.profiles import get_profile
    results = json.loads((RESULTS / "tiny.json").read_text())
    pipeline._print_results(results, get_profile("tiny"), "cpu")
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| student | recipe | against |"))
    assert lines[at - 1].startswith("Each recipe against its student's baseline (and the soft targets against the "
                                    "pseudo-label control; each recipe that adds a term to kd+transfer against")
    assert "McNemar's p" in lines[at - 1]
    assert lines[at - 1].endswith("a verdict is better or worse only where both agree")


def test_the_comparisons_caption_names_only_the_references_the_rows_hold_and_pools_seeds():
    """The caption named the pseudo-label control and kd+transfer whatever the rows compared, and never the seeds."""
    rows = json.loads((RESULTS / "tiny.json").read_text())["comparisons"]
    alone = report.comparisons_caption([r for r in rows if r["against"] == "baseline"], "held-out", 3)
    assert alone.startswith("Each recipe against its student's baseline, on the same held-out reviews, pooled over "
                            "seeds: the difference") and "pseudo-label" not in alone and "kd+transfer" not in alone
    assert "pooled" not in report.comparisons_caption(rows, "test", 1)
