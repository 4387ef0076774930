"""Test-wide settings: offline, quiet, tiny profile, and a private artifact cache; ``cut_tiny`` builds the
tiny profile cut to seconds, for tests that train.

The Hugging Face flags are read when transformers is imported, so they are set
here, before any test module imports it.
"""
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.update({
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "KD_TUTORIAL_PROFILE": "tiny",
    "MPLBACKEND": "Agg",
})
os.environ.pop("KD_TUTORIAL_DATA_DIR", None)
# One temporary folder per run of the suite, for what the tests and the notebooks' kernels leave in the system's
# (nbval kills its kernels, so notebook 08's 28 MB search study, removed when a kernel shuts down, stayed there each
# run): TMPDIR, inherited by the xdist workers and the kernels, is a folder of it, removed when the run ends.
MADE_TMP = "KD_TUTORIAL_TESTS_TMP" not in os.environ
if MADE_TMP:
    os.environ["KD_TUTORIAL_TESTS_TMP"] = os.environ["TMPDIR"] = tempfile.mkdtemp(prefix="kd-tutorial-suite-")
    tempfile.tempdir = None  # tempfile reads TMPDIR again
# One artifact cache per run of the suite, shared by its xdist workers (they inherit this environment from the process
# that starts them), removed when the run ends (pytest_unconfigure). It was named after the parent process, so every
# run from one shell reused it (a second run of tests/test_full_rehearsal.py found its teacher cached and failed) and
# each new shell left its 250 MB in the temporary folder. A KD_TUTORIAL_HOME of your own is used instead, and kept.
MADE_HOME = "KD_TUTORIAL_HOME" not in os.environ
if MADE_HOME:
    os.environ["KD_TUTORIAL_HOME"] = tempfile.mkdtemp(prefix="kd-tutorial-tests-")
# pytest-xdist runs two workers on two cores: one thread each avoids oversubscription (10x slower steps).
# Without xdist too, so that a file run alone computes what CI computes: two threads sum in another order, and the
# tiny runs' margins (pseudo-label's agreement with the teacher, a retrained student's weights) moved with it.
# Notebook kernels started by nbval inherit this environment.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"


# The suite's longest files, handed out first. pytest-xdist (--dist loadscope) gives a worker one file at a time in
# collection order (--no-loadscope-reorder; by default it orders files by their count of tests, which put the
# 62-second full-profile rehearsal, one test, last): a long file picked up last keeps one core busy while the other
# idles, about 45 s of a 9-minute suite. Notebook 05 comes one long file before 07 so that, whichever worker is free
# first, 07 starts after 05's runs are in the artifact cache and loads them instead of training them again beside it.
# Seconds of one core each, from `--durations=0` on 2 AVX2 cores: 136, 87, 116, 90, 65, 62, 52, 37, 35.
RUN_FIRST = ("notebooks/09_distilling_generative_lms.ipynb", "notebooks/05_distillation.ipynb",
             "tests/test_pipeline.py", "notebooks/07_intermediate_layers.ipynb", "tests/test_exercises_notebooks.py",
             "tests/test_full_rehearsal.py", "tests/test_grading_grader.py", "tests/test_grading_batch.py",
             "tests/test_browser.py")


def pytest_unconfigure(config):
    """Remove the run's artifact cache and temporary folder where this process made them (an xdist worker's are
    its starter's to remove)."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        return
    for made, name in ((MADE_HOME, "KD_TUTORIAL_HOME"), (MADE_TMP, "KD_TUTORIAL_TESTS_TMP")):
        if made:
            shutil.rmtree(os.environ[name], ignore_errors=True)


def pytest_collection_modifyitems(items):
    """The files of :data:`RUN_FIRST` first, in its order; the others after them, as collected."""
    rank = {path: i for i, path in enumerate(RUN_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(RUN_FIRST)))


@pytest.fixture(scope="session")
def cut_tiny(tmp_path_factory):
    """Builds the tiny profile cut to seconds (one teacher epoch, half-epoch student runs, the compact student
    only) in a private cache of its own: ``with cut_tiny(n_transfer) as (profile, teacher, prep, logits)``,
    the teacher trained and its logits on train and transfer cached. Each call gets a cache of its own to change
    at will; a later call with the same ``n_transfer``, in this worker or another of the run, starts from a copy of
    the first's cache as it was once built, and loads that teacher instead of training the same one again (same
    seed, same weights). The test files that use it ask for the same ``n_transfer``, and so share one teacher."""
    built = {}  # n_transfer -> where the untouched copy of the cache its first call built is kept
    # xdist's workers: the run's temporary folder, shared by its workers (theirs are popen-gw0, popen-gw1 in it)
    shared = os.environ.get("PYTEST_XDIST_WORKER") is not None

    def kept(n_transfer: int) -> Path:
        if n_transfer not in built:
            built[n_transfer] = (tmp_path_factory.getbasetemp().parent / "kd-cut-tiny" / str(n_transfer) if shared
                                 else tmp_path_factory.mktemp("kd-home-built"))
        return built[n_transfer]

    @contextlib.contextmanager
    def build(n_transfer: int):
        from kd_tutorial import store, teachers
        from kd_tutorial.profiles import get_profile
        home, folder = tmp_path_factory.mktemp("kd-home"), kept(n_transfer)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KD_TUTORIAL_HOME", str(home))
            tiny = get_profile("tiny")
            profile = tiny.replace(teacher_epochs=1, n_transfer=n_transfer, student_epochs=0.5,
                                   students=tiny.students[1:], evals_per_run=1)
            with store.locked(folder, name=".cut-tiny.lock"):  # the other worker waits, then copies
                done = (folder / "done").exists()
                if done:
                    shutil.copytree(folder / "home", home, dirs_exist_ok=True)
                teacher, prep, _ = teachers.ensure_teacher(profile, progress=False)
                logits = {s: teachers.ensure_teacher_logits(profile, s, progress=False) for s in ("train", "transfer")}
                if not done:  # a copy cut short by a worker that died is made again
                    shutil.rmtree(folder / "home", ignore_errors=True)
                    shutil.copytree(home, folder / "home")
                    (folder / "done").touch()
            yield profile, teacher, prep, logits
    return build


@pytest.fixture
def one_thread():
    """Tiny tensors: OpenMP threads only add latency (badly so on a busy machine). Test files of many tiny
    checks use it for every test: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
