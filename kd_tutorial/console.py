"""The ``kd-tutorial`` console script. The command line loads PyTorch on import, which takes seconds: an
interrupt meanwhile ends in one line, as it does once a command runs (:func:`kd_tutorial.cli.main`).

Before PyTorch loads, a machine already busy gets OpenMP threads that sleep while they wait instead of spinning
(:func:`kd_tutorial.threads.quiet_threads_when_busy`)."""
from __future__ import annotations

import sys

from . import threads


def main() -> int:
    """Import the command line, then run it; Ctrl-C while it loads exits 130 with one line, not a traceback."""
    threads.busy_at = threads.quiet_threads_when_busy()
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        print("kd-tutorial: interrupted while starting; nothing was written", file=sys.stderr)
        return 130
    return run()
