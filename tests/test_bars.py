"""Progress bars: live in a terminal or a notebook, a few lines in a file or a CI log."""
import itertools

import pytest
import torch
import tqdm.std

from kd_tutorial import bars, data, models
from kd_tutorial.train import TrainConfig, train

SMALL = {"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}


class _Terminal:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass

    def isatty(self):
        return True


def test_a_training_bar_in_a_log_redraws_every_30_seconds_not_twice_a_second(monkeypatch, capsys):
    """kd-tutorial distill > log.txt 2>&1 (or a CI job) kept every redraw of a bar as one more carriage-return line:
    two a second (mininterval 0.5), thousands in an hour's run. A fake clock: one second at every reading."""
    clock = itertools.count(0.0, 1.0)
    monkeypatch.setattr(tqdm.std, "time", lambda: float(next(clock)))
    monkeypatch.setattr(tqdm.std.tqdm, "monitor_interval", 0)  # no monitor thread reading its own clock
    enc = data.Encoded([[101] + [7] * (2 + i % 5) + [102] for i in range(16)], torch.arange(16) % 2, "rows")
    model = models.load_teacher("tiny-bert", config_overrides=SMALL)
    train(model, enc, config=TrainConfig(mode="ce", max_steps=8, batch_size=2), device="cpu", desc="run")
    err = capsys.readouterr().err
    lines = [line for line in err.split("\r") if line.strip()]
    assert len(lines) <= 3, lines  # the first, at most one in between, the last
    assert "8/8" in lines[-1]  # the closing line: the bar's total, reached


def test_a_bar_in_a_terminal_keeps_its_redraw_rate():
    terminal = _Terminal()
    live = bars.progress_bar(total=3, file=terminal, mininterval=0.5)
    assert bars.is_live(terminal) and live.mininterval == 0.5
    live.close()
    logged = bars.progress_bar(total=3, file=_Log())
    assert logged.mininterval == logged.maxinterval == bars.LOG_INTERVAL_S
    logged.close()


class _Log(_Terminal):
    def isatty(self):
        return False


def test_a_run_stopped_by_patience_says_so_on_its_bar(capsys):
    """With patience, the bar ended at '10%| 4/40' and nothing said why: the run looked cut short or hung."""
    enc = data.Encoded([[101] + [7] * (2 + i % 5) + [102] for i in range(16)], torch.arange(16) % 2, "rows")
    model = models.load_teacher("tiny-bert", config_overrides=SMALL)
    config = TrainConfig(mode="ce", max_steps=16, batch_size=2, eval_every=2, patience=1, lr=0.0)
    history = train(model, enc, val_data=enc, config=config, device="cpu", desc="run")
    err = capsys.readouterr().err
    last = [line for line in err.split("\r") if line.strip()][-1]
    assert f"{len(history.steps)}/16" in last and len(history.steps) < 16 and "stopped early (patience)" in last
    assert (f"run: stopped early at step {len(history.steps)} of 16: 1 validation pass without a gain (patience=1); "
            f"best val_acc") in err


def test_tick_redraws_a_still_bar_once_per_interval_and_keeps_its_rate(monkeypatch):
    """Student runs side by side: their bar's count moves only when a run ends (minutes apart), so tick redraws it
    in between (elapsed time, steps), in a log no more than every 30 s, without resetting tqdm's rate."""
    now = [0.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: now[0])
    monkeypatch.setattr(tqdm.std.tqdm, "monitor_interval", 0)
    log = _Terminal()
    log.isatty = lambda: False
    bar = bars.progress_bar(total=4, desc="student runs", file=log)
    for t in (1.0, 10.0, 31.0, 45.0, 62.0):
        now[0] = t
        bar.set_postfix_str(f"steps {int(t)}/310", refresh=False)
        bars.tick(bar)
    lines = [line for line in log.text.split("\r") if line.strip()]
    assert [line.split("steps ")[-1].rstrip("] ") for line in lines[1:]] == ["1/310", "31/310", "62/310"]
    assert "01:02" in lines[-1]  # its elapsed time moved
    now[0] = 100.0
    bar.update()
    assert bar.format_dict["rate"] == pytest.approx(0.01)  # one run in 100 s, not one in the 38 s since the last tick
    bar.close()


def test_tick_leaves_a_disabled_bar_alone():
    """A bar made with disable=True (--quiet, a run without progress) has no clock: tick raised AttributeError."""
    bar = bars.progress_bar(total=4, disable=True)
    bars.tick(bar)
    bar.close()
