"""A leaf: :class:`History`, what one training run logged (its steps, validation passes, epochs, time and tokens),
written by the training loop (:mod:`kd_tutorial.train`) and read back from a cached run's ``history.json``
(:mod:`kd_tutorial.artifacts`) without the loop."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class History:
    """What a run logged: one row per optimizer step, per validation pass and per epoch."""

    steps: list = field(default_factory=list)  # {step, loss, lr, grad_norm, <terms>}; skipped: fp16 overflow
    epochs: list = field(default_factory=list)  # {epoch, step, train_loss, train_acc, val_acc?, tokens_per_s, seconds}
    evals: list = field(default_factory=list)  # {step, val_acc}
    seconds: float = 0.0  # training time, validation passes excluded
    tokens: int = 0  # real (non-pad) tokens seen
    eval_seconds: float = 0.0  # time spent in validation passes
    best_step: int | None = None  # the step whose weights were kept (keep_best)
    # the best pass's answer on each validation review, "1" right and "0" wrong, for paired comparisons of runs
    best_val_correct: str | None = None
    finished_at: str | None = None  # when training ended (local time): a cached model's speed is from then
    # the precision it trained in ("bf16", "fp32"...; "bf16, then fp32" for a run resumed elsewhere): "auto" resolves
    # per machine, and a model from the cache may have been trained on another (None: before this was recorded)
    precision: str | None = None
    # the CPU threads it trained with ("2", or "2, then 1" resumed with another count; None: on a GPU, or not
    # recorded): sums run in another order with another count, so the same run differs in its last digits
    threads: str | None = None

    @property
    def tokens_per_s(self) -> float:
        """Training throughput in real tokens per second (padding and validation excluded)."""
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def best_val_acc(self) -> float | None:
        """The best validation accuracy of the run (None before the first validation pass)."""
        return max((e["val_acc"] for e in self.evals), default=None)

    def final(self, key: str):
        """The last epoch's value of ``key`` (None before the first epoch)."""
        return self.epochs[-1].get(key) if self.epochs else None

    def to_dict(self) -> dict:
        """The history as plain JSON values (``from_dict`` reads it back)."""
        return {"steps": self.steps, "epochs": self.epochs, "evals": self.evals, "seconds": self.seconds,
                "tokens": self.tokens, "tokens_per_s": self.tokens_per_s, "eval_seconds": self.eval_seconds,
                "best_step": self.best_step, "finished_at": self.finished_at,
                "best_val_correct": self.best_val_correct, "precision": self.precision, "threads": self.threads}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        """A history from ``to_dict``'s values; keys added later default for older files."""
        return cls(steps=list(d["steps"]), epochs=list(d["epochs"]), evals=list(d.get("evals", [])),
                   seconds=d["seconds"], tokens=d["tokens"], eval_seconds=d.get("eval_seconds", 0.0),
                   best_step=d.get("best_step"), finished_at=d.get("finished_at"),
                   best_val_correct=d.get("best_val_correct"), precision=d.get("precision"),
                   threads=d.get("threads"))
