"""Test-wide settings: offline, quiet, tiny profile, and a private artifact cache.

The Hugging Face flags are read when transformers is imported, so they are set
here, before any test module imports it.
"""
import os
import tempfile

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
# one artifact cache per test session (shared by the xdist workers of one run)
os.environ.setdefault("KD_TUTORIAL_HOME", os.path.join(tempfile.gettempdir(), f"kd-tutorial-tests-{os.getppid()}"))
# pytest-xdist runs two workers on two cores: one thread each avoids oversubscription (10x slower steps).
# Notebook kernels started by nbval inherit this environment.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
