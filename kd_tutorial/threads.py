"""How PyTorch's CPU threads wait: spinning, OpenMP's default, or asleep on a machine another process keeps busy.

A leaf module: it imports nothing of the package, and not PyTorch, whose OpenMP runtime reads the policy once, as it
loads. The console script calls :func:`quiet_threads_when_busy` before it loads the command line (and so PyTorch).
"""
from __future__ import annotations

import os

# the 1-minute load average from which OpenMP's spinning threads cost more than they save: beside one busy process
# (load 1.6 to 2.7 on 2 cores) the tiny pipeline took 95 s spinning and 61 s waiting passively, its teacher 40 s
# and 15 s; on idle cores passive waiting cost about 15 % (docs/tuning.md, "OpenMP threads on a busy machine")
BUSY_LOAD = 1.0
busy_at: float | None = None  # the load that made this process's threads wait passively, for the command to say


def quiet_threads_when_busy(environ=os.environ, load: float | None = None) -> float | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` (read when PyTorch loads) where the 1-minute load average is at least
    :data:`BUSY_LOAD` and the user set no policy: a thread spinning on a core another process needs holds up its
    siblings at every barrier. Returns the load when it set it, else None."""
    if "OMP_WAIT_POLICY" in environ:
        return None
    load = load_average() if load is None else load
    if load is None or load < BUSY_LOAD:
        return None
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return load


def load_average() -> float | None:
    """The 1-minute load average: how many processes wanted a core, on average; None where there is none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy_note() -> str | None:
    """The line a command prints when the console script (:func:`kd_tutorial.console.main`) made the threads wait
    passively, else None."""
    if busy_at is None:
        return None
    return (f"threads: this machine was busy as the command started (load {busy_at:.1f}), so PyTorch's threads sleep "
            "while they wait instead of spinning (OMP_WAIT_POLICY=PASSIVE; set OMP_WAIT_POLICY=ACTIVE to keep them "
            "spinning)")
