"""What decides how one model is trained: :class:`TrainConfig`, read by the training loop
(:mod:`kd_tutorial.train`) and set, for each student run, by the plan of runs (:mod:`kd_tutorial.plan`),
which builds no model and so does not import the loop."""
from __future__ import annotations

from dataclasses import dataclass

from .recipes import Intermediate


@dataclass
class TrainConfig:
    """Everything that decides how a model is trained (and so what a checkpoint belongs to)."""

    epochs: float = 1.0
    lr: float = 5e-5
    batch_size: int = 32
    max_steps: int | None = None  # a fixed optimizer-step budget; overrides ``epochs``
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    mode: str = "ce"  # "ce" | "kd" | "pseudo"
    temperature: float = 2.0
    alpha: float = 0.5
    intermediate: Intermediate | None = None  # intermediate-layer terms (kd and pseudo modes)
    precision: str = "auto"  # "auto" | "fp32" | "bf16" | "fp16"
    group_by_length: bool = True
    pad_to_max: int | None = None  # pad every batch to this length (the naive baseline)
    seed: int = 0  # the batch order only: dropout draws from the global generator (seed_everything first)
    eval_every: int | None = None  # validate every this many steps (None: after each epoch)
    keep_best: bool = False  # end with the weights that scored best on validation
    patience: int | None = None  # stop after this many validation passes without a gain (None: never)
