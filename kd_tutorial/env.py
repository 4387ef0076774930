"""The notebook header: offline flags, seeds, device, quiet logging, and an environment report.

Call :func:`setup` in the first code cell of every notebook, *before* anything
imports transformers: the Hugging Face offline flags are read at import time.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from dataclasses import dataclass

from .device import bf16_supported, pick_device  # noqa: F401  (re-exported for notebooks)
from .profiles import PROFILE_ENV, Profile, describe_choice, resolve_profile

QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",          # no LOAD REPORT tables, no SDPA warnings
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",        # no download / save bars
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}
# TOKENIZERS_PARALLELISM is left alone: "false" would make tokenizing 25k-100k reviews single-threaded (measured
# 1.7x slower on 2 cores for 10k IMDB reviews). Unset, the Rust tokenizer uses every core and, in a process forked
# after that, turns its threads off by itself (printing a warning) rather than deadlock.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
PACKAGES = ("kd-tutorial", "torch", "transformers", "tokenizers", "datasets", "matplotlib", "ipywidgets",
            "tqdm", "numpy")


@dataclass
class Session:
    """What :func:`setup` chose: the profile, the device and the seed."""

    profile: Profile
    device: str
    seed: int
    offline: bool

    def __repr__(self) -> str:
        return (f"Session(profile={self.profile.name!r}, device={self.device!r}, seed={self.seed}, "
                f"offline={self.offline})")


def quiet() -> None:
    """Silence Hugging Face logging and progress bars (env vars, and the APIs if already imported)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity_error()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()


def setup(profile: str | None = None, seed: int = 0, offline: bool | None = None) -> Session:
    """Prepare a notebook or script: quiet logging, offline flags, seeds, profile and device.

    ``offline=None`` turns the Hub off for the ``tiny`` profile (it needs nothing
    from it) and leaves it as the environment says otherwise.
    """
    quiet()
    chosen = resolve_profile(profile)
    if offline is None:
        offline = chosen.name == "tiny" or os.environ.get("HF_HUB_OFFLINE") == "1"
    if offline:
        if "transformers" in sys.modules and os.environ.get("HF_HUB_OFFLINE") != "1":
            print("warning: transformers was imported before setup(); the offline flag may not apply. "
                  "Restart the kernel and run this cell first.")
        os.environ.update(OFFLINE_ENV)
    from .train import seed_everything
    seed_everything(seed)
    device = pick_device()
    source = "argument" if profile else (f"${PROFILE_ENV}" if os.environ.get(PROFILE_ENV) else None)
    print(describe_choice(chosen, source))
    print(f"device: {device} | seed: {seed} | Hugging Face Hub: {'offline' if offline else 'online'}")
    return Session(profile=chosen, device=device, seed=seed, offline=offline)


def versions() -> dict[str, str]:
    """Installed versions of the packages the course uses ("missing" when absent)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def hub_reachable(timeout: float = 3.0) -> bool | None:
    """Whether huggingface.co answers on port 443 (None when HF_HUB_OFFLINE=1 says not to ask)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return None
    import socket
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def environment_report(profile: Profile | None = None) -> dict:
    """Versions, device, profile and whether what the profile needs is reachable or cached."""
    import torch
    profile = profile or resolve_profile()
    device = pick_device()
    report = {"versions": versions(), "device": device, "profile": profile.name,
              "torch_threads": torch.get_num_threads(), "bf16": bf16_supported(device),
              "hub_offline": os.environ.get("HF_HUB_OFFLINE") == "1", "hub_reachable": hub_reachable(),
              "data_dir": os.environ.get("KD_TUTORIAL_DATA_DIR")}
    if device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(0)
    from .device import describe
    report["precision"] = describe(device)
    from .artifacts import cache_status
    report["needs"] = cache_status(profile)
    return report
