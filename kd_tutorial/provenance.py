"""Where a result comes from: the installed versions of the packages the course uses, and the git commit of the
checkout that ran it.

A leaf module: the notebook header (env), the pipeline's results.json and the benchmark's report all record these,
and none of them needs the others for that.
"""
from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

PACKAGES = ("kd-tutorial", "torch", "transformers", "tokenizers", "datasets", "matplotlib", "ipywidgets",
            "tqdm", "numpy")


def versions() -> dict[str, str]:
    """Installed versions of the packages the course uses ("missing" when absent)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    if out["kd-tutorial"] == "missing":  # imported from a checkout that pip never installed: say so, not "missing"
        from . import __version__
        out["kd-tutorial"] = f"{__version__} (from source, not installed: pip install -e .)"
    return out


def git_commit() -> str | None:
    """The current git commit of the course checkout, when there is one, with ``+dirty`` when tracked files
    differ from it (so a result never claims a commit whose code it did not run). None where this file is not
    tracked there: a package installed into a virtual environment inside another project's checkout is no part of
    that project, whose commit would name code the run did not come from."""
    here = Path(__file__)
    try:
        if _git(here.parent, "ls-files", "--error-unmatch", here.name).returncode != 0:
            return None
        return _git(here.parent, "describe", "--always", "--abbrev=7", "--dirty=+dirty").stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=folder, timeout=5)
