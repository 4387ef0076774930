"""Random state: seeding every generator a run draws from, and putting a caller's state back.

A leaf module: the teacher, the pipeline, the search, the benchmark and the notebook header seed
through it, and the training loop saves and restores its random states through it (a checkpoint,
a resumed run), none of them needing the others for that.
"""
from __future__ import annotations

import contextlib
import random

import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy (if present) and torch, on every device: the same seed gives the same run."""
    random.seed(seed)
    try:
        import numpy as np
        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    torch.manual_seed(seed)


@contextlib.contextmanager
def kept_rng():
    """Leave the caller's random state (Python, NumPy, torch on the CPU and CUDA) as it was on entry: a model trained
    inside (the teacher, a student) then moves nothing that the code after it draws, so a notebook prints the same
    numbers whether that model was trained now or loaded from the cache. CUDA's state only where this process has
    started CUDA already: reading it would start CUDA here, and a forked worker (``--workers`` on a CPU of a machine
    with a GPU) cannot start CUDA again ("Cannot re-initialize CUDA in forked subprocess")."""
    import numpy as np
    py, npy, (cpu, cuda) = random.getstate(), np.random.get_state(), rng_states()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        set_cuda_rng_states(cuda)


def rng_states() -> tuple:
    """The CPU's and every GPU's random states (dropout masks come from them)."""
    return torch.get_rng_state(), cuda_rng_states()


def cuda_rng_states() -> list | None:
    """Every GPU's random state (dropout masks there come from it), or None where this process has not started
    CUDA (reading it would start it)."""
    return torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None


def set_cuda_rng_states(states: list | None) -> None:
    """Restore GPU random states saved by :func:`cuda_rng_states`, when this machine has as many GPUs."""
    if states and torch.cuda.is_available() and torch.cuda.device_count() == len(states):
        torch.cuda.set_rng_state_all(states)
