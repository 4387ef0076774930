"""Edges of `kd-tutorial search` (cmd_search in kd_tutorial/cli.py: its option checks, its defaults, and what it
passes on to kd_tutorial.search.run_search, stubbed here so that nothing trains) and of where a result says it comes
from (kd_tutorial/provenance.py: the git commit with its +dirty mark, read from a throw-away checkout, and the
versions recorded)."""
import importlib.metadata
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from kd_tutorial import cli, env, provenance
from test_bad_inputs import error_line

HELP = "(see kd-tutorial search --help)"
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="no git here")


@pytest.fixture
def searched(monkeypatch):
    """run_search stubbed: the keyword arguments the command gave it, and the profile as ``profile``."""
    pytest.importorskip("optuna", reason="optuna is not installed: pip install -e '.[search]'")
    asked = {}

    def run_search(profile, **kwargs):
        asked.update(kwargs, profile=profile)
        return {}
    monkeypatch.setattr(cli, "run_search", run_search)
    return asked


# ------------------------------------------------------------------------------------------ search: what it passes

def test_every_option_reaches_the_study_and_the_smallest_counts_are_taken(searched, tmp_path):
    """--trials 1 and --steps 1 are the least a study can run, and each option given is the one the study gets."""
    out = tmp_path / "study"
    assert cli.main(["search", "--profile", "tiny", "--trials", "1", "--steps", "1", "--margin", "0.5", "--seed", "7",
                     "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    profile = searched.pop("profile")
    assert profile.name == "tiny"
    assert searched == {"trials": 1, "out": str(out), "steps": 1, "device": "cpu", "progress": False,
                        "margin": 0.5, "seed": 7}


def test_the_defaults_the_help_names(searched, tmp_path, monkeypatch):
    """20 trials into runs/search, the profile's steps, a margin of 0.15, seed 0, progress bars on."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["search", "--profile", "tiny"]) == 0
    assert {key: searched[key] for key in ("trials", "out", "steps", "margin", "seed", "progress")} == {
        "trials": 20, "out": "runs/search", "steps": None, "margin": 0.15, "seed": 0, "progress": True}
    assert (tmp_path / "runs" / "search").is_dir()  # checked writable where the study will be


def test_a_small_gpus_fitted_batch_is_said_and_searched_with(searched, tmp_path, monkeypatch, capsys):
    """The line that says the batch was split to fit the GPU (the GPU is faked: its memory and precision)."""
    monkeypatch.setattr(env, "memory_gb", lambda device: 14.74 if device.startswith("cuda") else None)  # a T4
    monkeypatch.setattr(env, "resolve_precision", lambda device, precision="auto": "fp16")
    monkeypatch.setattr(cli, "check_device", lambda device: device)
    assert cli.main(["search", "--profile", "full", "--device", "cuda", "--out", str(tmp_path / "s")]) == 0
    assert "14.7 GiB GPU in fp16: batch 16 x 2 accumulation steps (the profile's effective batch of 32)" in \
        capsys.readouterr().out
    assert (searched["profile"].batch_size, searched["profile"].grad_accum, searched["device"]) == (16, 2, "cuda")


def test_the_libraries_logging_is_quieted_for_the_study(searched, tmp_path):
    """transformers' loading reports and warnings would interleave with the lines of the trials."""
    import transformers
    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()
    try:
        assert cli.main(["search", "--profile", "tiny", "--out", str(tmp_path / "s")]) == 0
        assert transformers.logging.get_verbosity() == transformers.logging.ERROR
    finally:
        transformers.logging.set_verbosity(before)


# ----------------------------------------------------------------------------------------- search: what it refuses

def test_zero_trials_is_one_line_that_says_what_to_give(searched, tmp_path, capsys):
    line = error_line(capsys, "search", "--profile", "tiny", "--trials", "0", "--out", str(tmp_path / "s"))
    assert line == "kd-tutorial: error: --trials 0: give the total number of trials, a whole number >= 1"
    assert searched == {}


@pytest.mark.parametrize("margin", ["1.5", "-0.5"])
def test_a_margin_outside_0_to_1_is_refused_with_the_range_to_give(searched, tmp_path, capsys, margin):
    """Above 1 no trial is ever pruned below the teacher; below 0 a trial has to beat the teacher."""
    line = error_line(capsys, "search", "--profile", "tiny", "--margin", margin, "--out", str(tmp_path / "s"))
    assert line == (f"kd-tutorial: error: --margin {float(margin)}: give how far below the teacher's validation "
                    "accuracy a trial may fall before it is pruned, from 0 to 1 (e.g. 0.15)")
    assert searched == {}


@pytest.mark.parametrize("flag, text, said", [("--trials", "2.5", "is not an integer"),
                                              ("--steps", "x", "is not an integer"),
                                              ("--margin", "x", "is not a number")])
def test_a_count_or_margin_that_is_not_one_is_refused_by_name(searched, capsys, flag, text, said):
    """--trials 2.5 is a number, but not a count of trials: it is refused as one, not taken as 2.5 trials."""
    with pytest.raises(SystemExit) as stop:
        cli.main(["search", "--profile", "tiny", flag, text])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"kd-tutorial: error: argument {flag}: {flag} {text!r} {said} {HELP}\n"
    assert searched == {}


@pytest.mark.parametrize("flag", ["--device", "--profile"])
def test_an_empty_device_or_profile_is_refused_not_taken_for_the_default(searched, capsys, flag):
    with pytest.raises(SystemExit) as stop:
        cli.main(["search", flag, ""])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (f"kd-tutorial: error: argument {flag}: an empty value: give one, or leave the "
                                       f"option out for its default {HELP}\n")
    assert searched == {}


def test_an_out_that_is_a_file_is_refused_before_the_study_and_the_file_is_kept(searched, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    line = error_line(capsys, "search", "--profile", "tiny", "--out", str(notes))
    assert line == (f"kd-tutorial: error: --out {notes} is not a writable folder (it is a file): give --out a folder "
                    "you can write")
    assert searched == {} and notes.read_text() == "my notes"


def test_an_artifact_cache_that_is_a_file_is_refused_before_the_study(searched, tmp_path, capsys, monkeypatch):
    """The teacher and the trials' data are cached under $KD_TUTORIAL_HOME: refused before the study, as distill is."""
    home = tmp_path / "a-file"
    home.write_text("not a folder")
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(home))
    line = error_line(capsys, "search", "--profile", "tiny", "--out", str(tmp_path / "s"))
    assert line.startswith(f"kd-tutorial: error: KD_TUTORIAL_HOME={home} is not a writable folder (it is a file): "
                           "point KD_TUTORIAL_HOME to a folder you can write")
    assert searched == {} and home.read_text() == "not a folder"


# --------------------------------------------------------------------------------------------------- provenance

def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args],
                          cwd=folder, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A throw-away git checkout with one commit that holds the package (provenance's own file is read from it),
    and the current folder elsewhere, outside any checkout."""
    repo = tmp_path / "course"
    (repo / "kd_tutorial").mkdir(parents=True)
    (repo / "kd_tutorial" / "cli.py").write_text("print('hello')\n")
    (repo / "kd_tutorial" / "provenance.py").write_text("# the course's file, tracked\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    monkeypatch.setattr(provenance, "__file__", str(repo / "kd_tutorial" / "provenance.py"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return repo


@needs_git
def test_a_clean_checkout_records_its_short_commit_from_any_current_folder(checkout):
    assert provenance.git_commit() == _git(checkout, "rev-parse", "--short=7", "HEAD")


@needs_git
def test_an_edited_tracked_file_marks_the_commit_dirty_and_an_untracked_file_does_not(checkout):
    """A result never claims a commit whose code it did not run; an untracked file (notes beside the code) is no
    edit of it."""
    commit = _git(checkout, "rev-parse", "--short=7", "HEAD")
    (checkout / "notes.txt").write_text("untracked")
    assert provenance.git_commit() == commit
    (checkout / "kd_tutorial" / "cli.py").write_text("print('edited')\n")
    assert provenance.git_commit() == f"{commit}+dirty"


@needs_git
def test_a_package_installed_inside_another_projects_checkout_records_no_commit(tmp_path, monkeypatch):
    """A learner's own project, its virtual environment ignored (.venv/): its commit is not the course's. git_commit
    asked git in the package's folder and recorded the project's commit in results.json."""
    project = tmp_path / "my-project"
    package = project / ".venv" / "lib" / "site-packages" / "kd_tutorial"
    package.mkdir(parents=True)
    (project / ".gitignore").write_text(".venv/\n")
    _git(project, "init", "-q")
    _git(project, "add", ".gitignore")
    _git(project, "commit", "-q", "-m", "my project")
    monkeypatch.setattr(provenance, "__file__", str(package / "provenance.py"))
    assert provenance.git_commit() is None


def test_a_machine_without_git_records_no_commit(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on it: subprocess.run raises FileNotFoundError
    assert provenance.git_commit() is None


def test_the_versions_recorded_are_the_installed_ones_and_pythons():
    """What results.json and the benchmark report record of Python and of the packages that compute the numbers."""
    found = provenance.versions()
    assert found["python"] == platform.python_version()
    for name in ("torch", "transformers", "tokenizers", "numpy"):
        assert found[name] == importlib.metadata.version(name), name
