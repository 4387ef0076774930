"""Progress bars that suit where they are drawn. In a terminal or a notebook a redraw replaces the last one, so
they redraw a few times a second; in a file or a CI log (``kd-tutorial distill > log.txt 2>&1``, a batch job) every
redraw stays as one more carriage-return line, so they redraw once every :data:`LOG_INTERVAL_S` seconds (each bar's
first and last lines are always written)."""
from __future__ import annotations

import sys

from tqdm import auto

LOG_INTERVAL_S = 30.0  # seconds between two redraws of a bar that writes to a file or a log, not a terminal


def is_live(file=None) -> bool:
    """True where a redraw replaces the last one: a notebook's widget bar, or a terminal (``file``: sys.stderr)."""
    if auto.notebook_tqdm is not auto.std_tqdm:  # tqdm.auto found a Jupyter kernel: its bars are widgets
        return True
    stream = sys.stderr if file is None else file
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable=None, **kwargs):
    """A ``tqdm.auto`` bar; in a file or a log (not :func:`is_live`) it redraws every :data:`LOG_INTERVAL_S` s."""
    if not is_live(kwargs.get("file")):
        kwargs["mininterval"] = max(kwargs.get("mininterval", 0.1), LOG_INTERVAL_S)
        kwargs["maxinterval"] = max(kwargs.get("maxinterval", 10.0), LOG_INTERVAL_S)  # the monitor's forced redraw
    return auto.tqdm(iterable, **kwargs)


def tick(bar) -> None:
    """Redraw ``bar`` (its elapsed time, its postfix) unless this did less than its ``mininterval`` ago: a bar whose
    count moves rarely still shows it is alive, in a log (:func:`progress_bar`) no more often than it redraws itself.
    Unlike ``bar.update(0)`` it leaves alone the rate (and so the time left) that tqdm measures between updates."""
    if bar.disable:  # a disabled bar has no clock to read
        return
    now = bar._time()
    if now - getattr(bar, "kd_ticked_at", -float("inf")) >= bar.mininterval:
        bar.kd_ticked_at = now
        bar.refresh()
