"""One readable training loop, used to fine-tune the teacher and to distil the students.

``mode="ce"``: cross-entropy on the hard labels (the teacher, and every baseline).
``mode="kd"``: :func:`kd_tutorial.losses.distillation_loss` against the teacher's
logits, read from a cache (``teacher_logits[index]``) or, for comparison, from a
frozen teacher called at every step.
``mode="pseudo"``: cross-entropy on the teacher's arg-max for unlabelled rows (the
pseudo-label control: the teacher's labels without its soft targets).
``config.intermediate`` adds intermediate-layer terms (:mod:`kd_tutorial.recipes`):
[CLS] states can come from a cache (``teacher_cls``); per-token states, attention
maps and value vectors come from the frozen teacher, called under ``no_grad``, or,
but for attention maps, from its cached layers (``teacher_states``).

What the loop does, in order: AdamW with linear warm-up and decay; gradient
accumulation (each micro-batch's row means weighted by its share of the step's rows, its token means by its
share of the step's real tokens);
autocast to bf16 (CUDA, or CPUs with bf16 units) or fp16 with a gradient scaler;
gradient clipping; a NaN/inf guard; a tqdm bar showing live loss and accuracy;
a validation pass every ``eval_every`` steps (else after each epoch), keeping the
best weights on validation and stopping after ``patience`` passes without a gain;
an atomic checkpoint after each validation pass; and ``resume``.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from . import losses
from .bars import progress_bar
from .data import batch_groups, collate, n_batches, prefetch
from .device import (autocast, autocast_dtype, device_type, pad_multiple, pick_device, resolve_precision,
                     synchronize)
from .errors import error_cause, Terminated, UsageError, UserError
from .evaluate import accuracy, binomial_lower_tail, NonFiniteLogitsError, predict_logits
from .features import attention_dropouts, Features, forward_features, use_eager_attention
from .history import History
from .layer_cache import widened
from .layer_maps import layer_mapping
from .models import check_rows, check_same_vocab
from .recipes import Intermediate, intermediate_terms, TOKEN_TERMS
from .seeding import rng_states, set_cuda_rng_states
from .store import ArtifactError, atomic_torch_save
from .train_config import TrainConfig


class TrainingDivergedError(UserError, RuntimeError):
    """The loss became NaN or infinite."""


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Put a teacher in ``eval()`` (dropout off) with ``requires_grad=False`` everywhere."""
    model.eval()
    model.requires_grad_(False)
    return model


def linear_schedule(optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up from peak / warmup_steps (the first step) to the peak learning rate, then linear decay
    towards 0 (notebook 04 writes the formula out and checks it against this schedule)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, without weight decay on biases and LayerNorm weights (as BERT is trained)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # one fused kernel instead of a loop over tensors: 5x faster steps on CPU here
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # devices without a fused implementation (e.g. MPS on older torch)
        return torch.optim.AdamW(groups, lr=lr)


def teacher_outputs(batch: dict, config: TrainConfig, teacher_logits=None, teacher=None,
                    teacher_cls=None, teacher_states=None, mapping=None) -> Features:
    """The teacher's side of one batch: cached rows (``index``) where possible, else a frozen teacher's pass.

    ``teacher_states`` (:class:`~kd_tutorial.layer_cache.LayerStates`) holds the cached per-token layers
    that ``mapping`` (teacher layers, one per student layer) picks; without them those come from the teacher.
    """
    spec = config.intermediate
    if teacher_logits is not None and spec is not None and uses_cached_layers(spec, teacher_states, mapping):
        return _cached_layers(batch, spec, teacher_logits, teacher_states, mapping)
    online = teacher_logits is None or (spec is not None and (spec.needs_token_internals
                                                              or (spec.cls and teacher_cls is None)))
    if online:
        if teacher is None or teacher.training:
            raise ValueError("this batch needs the teacher's own pass: give a frozen teacher in eval() mode "
                             "(kd_tutorial.train.freeze)")
        with torch.no_grad():
            out = forward_features(teacher, batch["input_ids"], batch["attention_mask"],
                                   **(spec.internals() if spec is not None else {}))
        if teacher_logits is not None:  # the cached logits, so that every run distils the same targets
            out.logits = teacher_logits[batch["index"]].to(out.logits.device)
        return out
    rows = batch["index"]
    device = batch["input_ids"].device
    hidden = None
    if teacher_cls is not None:
        hidden = tuple(teacher_cls[rows, k].to(device).float() for k in range(teacher_cls.shape[1]))
    return Features(logits=teacher_logits[rows].to(device), hidden=hidden)


def uses_cached_layers(spec: Intermediate, teacher_states, mapping) -> bool:
    """Whether ``teacher_states`` hold every per-token layer that ``spec`` reads under ``mapping``."""
    return (teacher_states is not None and spec.cacheable
            and set(spec.layer_keys(mapping)) <= teacher_states.keys)


def _cached_layers(batch: dict, spec: Intermediate, teacher_logits, teacher_states, mapping) -> Features:
    """The teacher's side of one batch read from the caches: its logits and its mapped layers (already read
    with the batch, ``batch["teacher_layers"]``, when the loop's batch thread did it: :func:`layer_reader`)."""
    device, keys = batch["input_ids"].device, spec.layer_keys(mapping)
    read = batch.get("teacher_layers")
    if read is None or not set(keys) <= read.keys():
        read = teacher_states.read(batch["index"], batch["input_ids"].shape[1], keys)
    read = {key: widened(x, device) for key, x in read.items()}
    layers = teacher_states.depth
    return Features(logits=teacher_logits[batch["index"]].to(device),
                    hidden=tuple(read.get(("hidden", t)) for t in range(layers + 1)),
                    values=[read.get(("values", t)) for t in range(1, layers + 1)])


def layer_reader(model, config: TrainConfig, teacher_states):
    """``read(batch) -> {key: tensor}``, the cached teacher layers one batch of this run needs, or None when the run
    reads none. The loop calls it where it builds its batches, in a background thread, so that reading the rows
    from disk overlaps the step before instead of stalling the next (only for a run given the teacher's logits:
    without them, the step calls the teacher)."""
    spec = config.intermediate
    if spec is None or teacher_states is None:
        return None
    student = getattr(model, "student", model)
    mapping = layer_mapping(spec.mapping, student.config.num_hidden_layers, teacher_states.depth)
    if not uses_cached_layers(spec, teacher_states, mapping):
        return None
    keys = spec.layer_keys(mapping)
    return lambda batch: teacher_states.read(batch["index"], batch["input_ids"].shape[1], keys)


def _teacher_layers(teacher, teacher_cls, teacher_states=None) -> int:
    if teacher is not None:
        return teacher.config.num_hidden_layers
    if teacher_states is not None:
        return teacher_states.depth
    if teacher_cls is not None:
        return teacher_cls.shape[1] - 1
    raise ValueError("intermediate terms need a teacher, its cached layers or its cached [CLS] states")


def recipe_loss(model, batch: dict, config: TrainConfig, teacher_logits=None, teacher=None, teacher_cls=None,
                teacher_states=None, token_scale: float = 1.0):
    """``(loss, student logits, {term: value})`` of one batch. The teacher never receives a gradient.

    ``model`` is a student, or a :class:`~kd_tutorial.models.DistillationStudent`
    that also holds the projections to the teacher's width. The logit loss and the [CLS] term are means over
    rows, the other terms means over real tokens (:data:`~kd_tutorial.recipes.TOKEN_TERMS`); ``token_scale``
    weighs the latter against the former. 1 for a whole batch; in a micro-batch, its share of the step's real
    tokens over its share of the step's rows, so that the micro-batches add up to the whole batch's loss.
    """
    _check_mode(config)
    spec = config.intermediate
    student = getattr(model, "student", model)
    s = forward_features(student, batch["input_ids"], batch["attention_mask"],
                         **(spec.internals() if spec is not None else {}))
    labels = batch["labels"]
    if config.mode == "ce":
        return losses.hard_cross_entropy(s.logits, labels), s.logits, {}
    mapping = None if spec is None else layer_mapping(spec.mapping, student.config.num_hidden_layers,
                                                      _teacher_layers(teacher, teacher_cls, teacher_states))
    t = teacher_outputs(batch, config, teacher_logits, teacher, teacher_cls, teacher_states, mapping)
    if config.mode == "pseudo":
        loss = losses.hard_cross_entropy(s.logits, torch.where(labels >= 0, labels, t.logits.argmax(-1)))
    else:
        loss = losses.distillation_loss(s.logits, t.logits, labels, config.temperature, config.alpha)
    if spec is None:
        return loss, s.logits, {}
    terms = intermediate_terms(spec, s, t, batch["attention_mask"], mapping, getattr(model, "projections", None))
    scale = {name: token_scale if name in TOKEN_TERMS else 1.0 for name in terms}
    return loss + sum(spec.weights[name] * scale[name] * value for name, value in terms.items()), s.logits, terms


def batch_loss(model, batch: dict, config: TrainConfig, teacher_logits=None, teacher=None, teacher_cls=None):
    """The loss of one batch, and the student's logits (:func:`recipe_loss` without the terms)."""
    loss, logits, _ = recipe_loss(model, batch, config, teacher_logits, teacher, teacher_cls)
    return loss, logits


def _to(batch: dict, device: str) -> dict:
    """Move a batch's tensors to ``device`` without waiting (they are pinned when the device is a GPU); its cached
    teacher layers (a dict) move where they are used."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@dataclass
class _Progress:
    """Where a run stands: what a checkpoint must hold to continue it exactly."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of the current epoch already done
    best_val: float = -1.0
    bad_evals: int = 0  # validation passes since the last gain
    stats: dict = field(default_factory=lambda: dict(loss=0.0, n=0, correct=0, labelled=0, tokens=0, seconds=0.0))


def _save_checkpoint(path: Path, model, optimizer, scheduler, scaler, history: History, progress: _Progress,
                     best_state, config: TrainConfig, rng: tuple) -> None:
    atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng[0],
                       "cuda_rng": rng[1], "history": history.to_dict(), "progress": asdict(progress),
                       "best_state": best_state, "config": asdict(config)}, path)


def checkpoint_step(path: Path, config: TrainConfig | None = None) -> int | None:
    """The step a run's checkpoint holds, read without loading its tensors; None where there is none, it cannot be
    read, or (given ``config``) it was written with another configuration, which no resume would continue."""
    try:
        state = torch.load(path, mmap=True, weights_only=False, map_location="cpu")
        return int(state["progress"]["step"]) if config is None or state["config"] == asdict(config) else None
    except Exception:  # noqa: BLE001 - missing, cut short, another file: no step to keep
        return None


def _load_checkpoint(path: Path, model, optimizer, scheduler, scaler, config: TrainConfig):
    try:
        state = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as err:
        raise ArtifactError(f"cannot read the checkpoint {path} ({err.__class__.__name__}): delete it to train this "
                            "run from the start") from err
    if not isinstance(state, dict):  # another file saved under its name (a tensor, a list)
        raise ArtifactError(f"cannot resume from {path}: it holds a {type(state).__name__}, not a checkpoint of "
                            "kd-tutorial; delete it to train this run from the start")
    if state.get("config") != asdict(config):
        raise ArtifactError(f"cannot resume from {path}: it was written with a different configuration; delete it "
                            "to train this run from the start")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when written where fp16 was not chosen (bf16 or fp32): a fresh scale then
            scaler.load_state_dict(state["scaler"])  # (precision "auto" picks per device, and a run resumes anywhere)
        torch.set_rng_state(state["rng"])
        set_cuda_rng_states(state.get("cuda_rng"))
        return History.from_dict(state["history"]), _Progress(**state["progress"]), state["best_state"]
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # a part missing or of another shape
        if "out of memory" in str(err).lower():  # the optimizer's state moved to a full GPU: the file is fine
            raise
        raise ArtifactError(f"cannot resume from {path} ({error_cause(err)}): delete it to train this run from the "
                            "start") from err


def _validate(model, val_data, config: TrainConfig, device: str) -> tuple[float, str]:
    """Accuracy on ``val_data``, and each labelled review's answer as a string of "1" (right) and "0" (wrong)."""
    logits = predict_logits(model, val_data, batch_size=max(config.batch_size, 64), device=device,
                            precision=config.precision, progress=False)
    labels = torch.as_tensor(val_data.labels)
    right = (logits.argmax(-1)[labels >= 0] == labels[labels >= 0]).tolist()
    return accuracy(logits, val_data.labels), "".join("1" if r else "0" for r in right)


def train(model: torch.nn.Module, train_data, *, config: TrainConfig, val_data=None, teacher_logits=None,
          teacher=None, teacher_cls=None, teacher_states=None, device: str | None = None,
          checkpoint_dir: str | Path | None = None,
          resume: bool = False, desc: str = "train", progress: bool = True, on_epoch_end=None, on_step=None,
          log_every: int = 25, checkpoint_every_s: float = 300.0) -> History:
    """Train ``model`` on ``train_data`` (a :class:`kd_tutorial.data.Encoded`) and return its history.

    ``mode="kd"`` and ``"pseudo"`` need ``teacher_logits`` (rows aligned with
    ``train_data``) or a frozen ``teacher``; intermediate terms on per-token
    internals need the ``teacher`` itself, or its cached layers (``teacher_states``,
    rows aligned too; attention maps always need the teacher). With ``checkpoint_dir``, one checkpoint
    (``last.pt``, with the optimizer state) is rewritten after every validation
    pass (or epoch); ``resume=True`` continues from it. ``on_epoch_end(epoch, history)`` is called after each epoch
    (tests use it to simulate an interruption), ``on_step(step, total)`` as the run starts and after each optimizer
    step (a parent process shows it: :func:`kd_tutorial.parallel.report_step`). Losses and metrics stay on the
    device and reach the host every ``log_every`` steps (the only times the loop waits for a GPU). The checkpoint is
    also rewritten every ``checkpoint_every_s`` seconds, mid-epoch, and on Ctrl-C
    (at the last completed step), so an interrupted run loses at most that much. Inputs that cannot train are refused
    first, in one line: an online teacher of another vocabulary or label order, cached logits of another number of
    classes or with their classes evidently in another order, labels past ``num_labels``, rows past the position
    embeddings, ``val_data`` without labels. The model comes back in training mode (``model.eval()`` to use it)."""
    _check_run(config, model, train_data, val_data, TeacherSide(teacher_logits, teacher, teacher_cls, teacher_states))
    device = device or pick_device()
    model.to(device)
    if teacher is not None:
        teacher.to(device)
    logits, cls = (None if t is None else t.to(device) for t in (teacher_logits, teacher_cls))  # read every step
    run = _Run(model, train_data, config, val_data, TeacherSide(logits, teacher, cls, teacher_states), device,
               Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None, desc, log_every, checkpoint_every_s)
    run.start(resume)
    eager = _eager_for_attention(config, model, teacher)
    try:
        run.loop(progress, on_epoch_end, on_step)
    finally:
        _restore_attention(eager)
    if config.keep_best and run.best_state is not None:
        model.load_state_dict(run.best_state)
    run.history.finished_at = time.strftime("%Y-%m-%d %H:%M")
    return run.history


def _then(before: str | None, now: str) -> str:
    """What a run trained in (its precision, or thread count): ``now``, or ``"bf16, then fp32"`` for a run resumed
    in another one."""
    if before in (None, now) or before.endswith(f", then {now}"):  # resumed again in the same one: said already
        return before or now
    return f"{before}, then {now}"


def _check_run(config: TrainConfig, model, train_data, val_data, side: TeacherSide) -> None:
    """Refuse, in one line and before any step, a run that cannot train as asked: a distillation mode or a term
    without the teacher's outputs it reads, outputs on other rows than ``train_data``, a teacher not frozen, a
    ``patience`` that is no count of passes, choosing on validation without ``val_data``; and what
    :func:`_check_inputs` refuses; and :func:`_check_budget`'s."""
    _check_budget(config)
    if config.mode != "ce" and side.teacher_logits is None and side.teacher is None:
        raise ValueError(f"mode={config.mode!r} needs teacher_logits or a teacher")
    _check_inputs(model, train_data, val_data, side.teacher if config.mode != "ce" else None, side.teacher_logits)
    spec = config.intermediate
    if spec is not None and spec.needs_token_internals and side.teacher is None and \
            not _states_cover(spec, side.teacher_states, model):
        raise ValueError("intermediate terms on per-token states, attention or values need the frozen teacher "
                         "(or, but for attention, its cached layers: teacher_states)")
    if spec is not None and spec.cls and side.teacher_cls is None and side.teacher is None:
        raise ValueError("the [CLS] term needs the frozen teacher or its cached [CLS] states (teacher_cls)")
    for name, rows in (("teacher_logits", side.teacher_logits), ("teacher_cls", side.teacher_cls),
                       ("teacher_states", side.teacher_states)):
        if rows is not None and len(rows) != len(train_data):  # another split's targets would train in silence
            raise ValueError(f"{name} hold {len(rows)} rows for {len(train_data)} training rows: give the teacher's "
                             "outputs on these training rows, in their order")
    if side.teacher is not None and any(p.requires_grad for p in side.teacher.parameters()):
        raise ValueError("the teacher must be frozen: call kd_tutorial.train.freeze(teacher) first")
    if config.patience is not None and (not isinstance(config.patience, int) or config.patience < 1):
        raise ValueError(f"patience={config.patience!r}: give the number of validation passes without a gain that "
                         "stop a run (1 or more), or None for no early stopping")
    if (config.keep_best or config.patience) and val_data is None:
        raise ValueError("keep_best and patience choose on validation: pass val_data")


def _check_mode(config: TrainConfig) -> None:
    """Refuse, in one line, a mode the loop does not know (:class:`TrainConfig`'s ``mode``), and intermediate terms
    in a run on the labels alone, which reads no teacher (it would train without them in silence)."""
    if config.mode not in ("ce", "kd", "pseudo"):
        raise ValueError(f"unknown mode {config.mode!r}: use 'ce', 'kd' or 'pseudo'")
    if config.mode == "ce" and config.intermediate is not None:
        raise ValueError("mode='ce' trains on the labels alone and reads no intermediate terms: set "
                         "intermediate=None, or mode='kd' (or 'pseudo') to distil with them")


def _check_budget(config: TrainConfig) -> None:
    """Refuse, in one line, what :func:`_check_mode` refuses and a budget that trains nothing or stops on a division
    by zero: a batch or an accumulation below 1, a step budget below 1, a number of epochs not above 0 (or not finite);
    and an optimizer's number outside :data:`RATE_RULES`. Whole numbers may be NumPy's; a float is refused where a
    count goes, as the profiles refuse it."""
    _check_mode(config)
    counts = {"batch_size": ("rows", ""), "grad_accum": ("micro-batches", " (1: no accumulation)"),
              "max_steps": ("optimizer steps", ", or None to train for `epochs`")}
    for name, (what, also) in counts.items():
        value = getattr(config, name)
        if name == "max_steps" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name}={value!r}: give a whole number of {what} >= 1{also}")
    epochs = config.epochs
    if config.max_steps is None and (isinstance(epochs, bool) or not isinstance(epochs, numbers.Real)
                                     or not math.isfinite(epochs) or epochs <= 0):
        raise ValueError(f"epochs={epochs!r}: give a number of passes above 0 (a fraction such as 0.5 too)")
    for name, (ok, give) in RATE_RULES.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value) or not ok(value):
            raise ValueError(f"{name}={value!r}: give {give}")


# what the optimizer's numbers must be (a negative max_grad_norm flipped every gradient: the loss climbed)
RATE_RULES = {"lr": (lambda v: 0 <= v < math.inf, "a finite learning rate >= 0, such as 1e-4 (0: no update)"),
              "warmup_fraction": (lambda v: 0 <= v <= 1, "the share of the steps spent warming up, from 0 to 1"),
              "weight_decay": (lambda v: 0 <= v < math.inf, "a finite number >= 0 (0: no decay)"),
              "max_grad_norm": (lambda v: v > 0, "the largest gradient norm kept, above 0 (inf: no clipping)")}


def _check_inputs(model, train_data, val_data, teacher, teacher_logits) -> None:
    """Refuse, before any step, what would stop a run mid-epoch with a shape error, or train it in silence: rows or
    labels the student cannot read (:func:`~kd_tutorial.models.check_rows`), a teacher of another vocabulary or label
    order (:func:`~kd_tutorial.models.check_same_vocab`, correctness notes 8 and 9), cached logits of another number
    of classes, and validation rows without a label (every pass would score nan and never keep a weight)."""
    student = getattr(model, "student", model)
    for name, rows in (("train_data", train_data), ("val_data", val_data)):
        if rows is not None:
            check_rows(student, rows, name)
    if teacher is not None:
        check_rows(teacher, train_data, "train_data (for the teacher)", labels=False)
        if hasattr(teacher, "config") and hasattr(student, "config"):  # a module of one's own has no vocab to compare
            check_same_vocab(teacher, student)
    classes = getattr(getattr(student, "config", None), "num_labels", None)
    if teacher_logits is not None and (teacher_logits.dim() != 2 or classes not in (None, teacher_logits.shape[1])):
        student_of = f" for a student of {classes} classes" if classes is not None else ""
        raise ValueError(f"teacher_logits of shape {tuple(teacher_logits.shape)}{student_of}: give the teacher's "
                         f"(rows, {classes or 'classes'}) logits, its classes in the student's order")
    if teacher_logits is not None:
        _check_logit_order(teacher_logits, train_data.labels)
    if val_data is not None and not bool((val_data.labels >= 0).any()):
        raise ValueError(f"val_data {val_data.name!r} has no labelled rows, so validation accuracy is nan at every "
                         "pass: give labelled validation rows, or no val_data")


LOGIT_ORDER_TAIL = 1e-6  # how unlikely at chance an agreement with the labels must be to refuse cached logits


def _check_logit_order(teacher_logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Refuse cached logits whose arg-max agrees with the labelled training rows far less often than chance: their
    classes in another order than the labels (correctness note 9; the vocabulary, note 8, logits cannot show).
    Chance is what predictions of the same class frequencies would agree with these labels by accident,
    sum_c p_pred(c) p_label(c) (a uniform or one-sided teacher is no mistake); far less, at most
    :data:`LOGIT_ORDER_TAIL` likely at chance, so a weak teacher passes."""
    if len(teacher_logits) != len(labels):  # logits of other rows: _check_run refuses them
        return
    classes = teacher_logits.shape[1]
    labelled = (labels >= 0).unsqueeze(1)
    predicted = torch.nn.functional.one_hot(teacher_logits.argmax(-1).to(labels.device), classes) * labelled
    given = torch.nn.functional.one_hot(labels.clamp(0, classes - 1), classes) * labelled
    counts = torch.cat([(predicted * given).sum().view(1), predicted.sum(0), given.sum(0)]).tolist()  # one read
    agree, n = counts[0], sum(counts[1:classes + 1])
    chance = sum(p * g for p, g in zip(counts[1:classes + 1], counts[classes + 1:])) / n ** 2 if n else 0.0
    if 0 < chance < 1 and agree < n * chance and binomial_lower_tail(agree, n, chance) < LOGIT_ORDER_TAIL:
        raise ValueError(f"teacher_logits agree with {agree} of the {n} labelled training rows' labels, far fewer than "
                         f"the {n * chance:.0f} that chance gives predictions of their class frequencies: their "
                         "classes are in another order than the labels; permute their columns to the labels' order "
                         "(e.g. logits.flip(-1) for two)")


def _states_cover(spec: Intermediate, teacher_states, model) -> bool:
    """Whether cached layers can stand in for the teacher for every term of ``spec``, for this student."""
    if teacher_states is None:
        return False
    student = getattr(model, "student", model)
    mapping = layer_mapping(spec.mapping, student.config.num_hidden_layers, teacher_states.depth)
    return uses_cached_layers(spec, teacher_states, mapping)


def check_step_fits(config: TrainConfig, per_epoch: int, rows: int, desc: str) -> None:
    """Refuse, in one line, a ``grad_accum`` above the ``per_epoch`` micro-batches of an epoch of ``rows``: each
    step would end at the epoch's end on fewer rows than ``batch_size x grad_accum``, the batch a run records.
    (``kd-tutorial distill`` refuses it before its teacher trains: :func:`kd_tutorial.pipeline.check_grad_accum`;
    this catches the runs a notebook or a script starts.)"""
    if config.grad_accum > per_epoch:
        raise UsageError(f"{desc}: grad_accum={config.grad_accum}, but an epoch of its {rows} training rows holds "
                         f"{per_epoch} micro-batch(es) of batch_size={config.batch_size}, so no step could gather "
                         f"{config.grad_accum}: give grad_accum=N with N <= {per_epoch}")


class TeacherSide(NamedTuple):
    """What a run's steps read of the teacher, named as :func:`recipe_loss` takes them: its cached logits, the frozen
    teacher (called at a step where nothing cached stands in), its cached [CLS] states and its cached layers."""
    teacher_logits: torch.Tensor | None
    teacher: torch.nn.Module | None
    teacher_cls: torch.Tensor | None
    teacher_states: object | None


# after Ctrl-C, how to continue from the checkpoint: a run started without resume is told how to ask for it; one
# started with it (a notebook cell, ensure_teacher, distill --resume) continues when the same call runs again
RESUME_WITH = "run again with resume=True (kd-tutorial: --resume)"
RESUMES = "run it again as it is (it resumes)"


class _Run:
    """The state of one training run and its steps: what :func:`train` loops over.

    Nothing in a step waits for the device: the loss, the accuracy counts and each
    step's log row stay on it as tensors (``self.pending``) until :meth:`flush`,
    every ``log_every`` steps, at validation passes and at the end of an epoch.
    """

    def __init__(self, model, data, config: TrainConfig, val_data, teacher_side: TeacherSide, device: str,
                 ckpt_path: Path | None, desc: str, log_every: int = 25, checkpoint_every_s: float = 300.0):
        self.model, self.data, self.config, self.val_data, self.device = model, data, config, val_data, device
        self.teacher_side, self.ckpt_path, self.desc, self.log_every = teacher_side, ckpt_path, desc, log_every
        self.checkpoint_every_s, self.saved_at, self.saved_step = checkpoint_every_s, time.monotonic(), None
        self.earlier_step = None  # an earlier run's checkpoint step, which stands until this run passes it
        self.again = RESUME_WITH  # how to continue after Ctrl-C: start() says it as the caller needs
        per_epoch = n_batches(len(data), config.batch_size)
        if per_epoch == 0:
            raise ValueError(f"{desc}: the training data is empty")
        check_step_fits(config, per_epoch, len(data), desc)
        self.total = config.max_steps or max(1, math.ceil(config.epochs * math.ceil(per_epoch / config.grad_accum)))
        self.kind = device_type(device)
        self.dtype = autocast_dtype(device, config.precision)
        self.scaler = torch.amp.GradScaler(self.kind, enabled=self.dtype == torch.float16)
        self.optimizer = make_optimizer(model, config.lr, config.weight_decay)
        self.scheduler = linear_schedule(self.optimizer, int(config.warmup_fraction * self.total), self.total)
        self.history, self.at, self.best_state, self.bar = History(), _Progress(), None, None
        self.on_step = None  # the caller's on_step (:meth:`loop`)
        self.pending: list[tuple] = []  # (step, lr, loss, grad_norm, terms) of steps not yet logged
        self.sums = torch.zeros(3, device=device)  # loss (micro-batches weighted), correct, labelled since flush
        self.step_sums = torch.zeros(3, device=device)  # the same, for the micro-batches of the step under way
        self.step_tokens = 0  # real tokens of the step under way
        self.step_log: list[tuple] = []  # (weighted loss, {term: weighted value}) of its micro-batches
        self.boundary, self.boundary_rng, self.stepping = 0, rng_states(), False  # the last completed step
        self.validating = False  # a pass due at this step has not finished: Ctrl-C keeps the previous checkpoint
        self.clock = time.perf_counter()  # training time not yet added to the epoch's seconds starts here

    def batches(self, epoch: int, skip: int):
        """The epoch's batches after the first ``skip``, built (and pinned for a GPU) in a background thread, with
        their rows of the teacher's cached layers when the run reads them (:func:`layer_reader`).

        Each comes with its real tokens and its shares of its step's rows and real tokens (:func:`_step_shares`):
        the weights of its row means and token means, so that the micro-batch gradients add up to one batch's
        even when the micro-batches differ in length or the epoch's last step is shorter.
        """
        c = self.config
        groups = batch_groups(self.data, c.batch_size, shuffle=True, group_by_length=c.group_by_length,
                              seed=c.seed * 1000 + epoch)
        tokens = [sum(len(self.data.input_ids[i]) for i in g) for g in groups]
        weights = list(zip(_step_shares([len(g) for g in groups], c.grad_accum), _step_shares(tokens, c.grad_accum)))
        side = self.teacher_side
        pin, multiple, longest = self.kind == "cuda", pad_multiple(self.kind), max(self.data.lengths, default=0)
        read = (layer_reader(self.model, c, side.teacher_states)
                if side.teacher_logits is not None else None)  # else the step asks the teacher

        def build(j):
            batch = collate(self.data, groups[j], pad_to_max=c.pad_to_max, pin=pin, multiple=multiple, limit=longest)
            if read is not None:
                batch["teacher_layers"] = {key: x.pin_memory() if pin else x for key, x in read(batch).items()}
            return batch, tokens[j], weights[j]
        return prefetch(build, range(skip, len(groups)))

    def start(self, resume: bool) -> None:
        """Continue from the checkpoint (``resume``), or else keep it aside until this run passes its step
        (:meth:`behind_earlier`)."""
        if resume:
            self.again = RESUMES  # the same call again continues (a notebook cell, ensure_teacher): say so
            self.resume()
        elif self.ckpt_path is not None:
            self.earlier_step = checkpoint_step(self.ckpt_path, self.config)

    def behind_earlier(self) -> bool:
        """Whether an earlier run's checkpoint holds more steps than this run, started without resume, has taken:
        it stands until this run passes its step, so that a run started over by mistake (``--resume`` forgotten,
        then stopped) loses nothing of it, and one left to train replaces it. One that cannot be read, or of
        another configuration (no resume would continue it), is replaced."""
        return self.earlier_step is not None and self.at.step <= self.earlier_step

    def resume(self) -> None:
        """Continue from the checkpoint, when there is one."""
        if self.ckpt_path is not None and self.ckpt_path.exists():
            self.history, self.at, self.best_state = _load_checkpoint(
                self.ckpt_path, self.model, self.optimizer, self.scheduler, self.scaler, self.config)
            self.boundary_rng = rng_states()  # restored: Ctrl-C before the next step saves these, not the start's
            self.saved_step = self.at.step

    def loop(self, progress: bool, on_epoch_end, on_step=None) -> None:
        """Epochs until the step budget is spent or patience runs out; ``on_step(step, total)`` at the start and
        after each step."""
        self.bar = progress_bar(total=self.total, initial=self.at.step, desc=self.desc, disable=not progress,
                                leave=True, dynamic_ncols=True, mininterval=0.5)
        self.on_step = on_step
        unknown = "not recorded" if self.at.step else None  # a checkpoint from before histories recorded them
        self.history.precision = _then(self.history.precision or unknown,
                                       resolve_precision(self.device, self.config.precision))
        if device_type(self.device) == "cpu":
            self.history.threads = _then(self.history.threads or unknown, str(torch.get_num_threads()))
        if on_step is not None:
            on_step(self.at.step, self.total)
        try:
            stopped = self.catch_up(on_epoch_end)
            while self.at.step < self.total and not stopped:
                stopped = self.epoch()
                if on_epoch_end is not None:
                    on_epoch_end(self.at.epoch, self.history)
            if stopped and self.at.step < self.total:  # else the bar ends short of its total with no word of why
                self.stopped_early()
        except KeyboardInterrupt:
            self.save_interrupted()
            raise
        finally:
            self.bar.close()

    def stopped_early(self) -> None:
        """Say on the bar (short: a terminal's width cuts it), and in a line above it, that patience ended the run."""
        self.bar.set_postfix_str("stopped early (patience)", refresh=False)
        if not self.bar.disable:
            n = self.at.bad_evals
            self.bar.write(f"{self.desc}: stopped early at step {self.at.step} of {self.total}: {n} validation "
                           f"pass{'es' if n != 1 else ''} without a gain (patience={self.config.patience}); best "
                           f"val_acc {self.at.best_val:.3f} at step {self.history.best_step}", file=sys.stderr)

    def save_interrupted(self) -> None:
        """On Ctrl-C: checkpoint the last completed step (dropping the half-done one) and say how to go on."""
        if self.ckpt_path is not None and self.behind_earlier():
            print(f"\n{self.desc}: interrupted at step {self.at.step}; the checkpoint of an earlier run of these "
                  f"settings, step {self.earlier_step}, in {self.ckpt_path} stands: run again with resume=True "
                  "(kd-tutorial: --resume) to continue it", file=sys.stderr)
            return
        if self.ckpt_path is not None and (self.stepping or self.validating):  # the last checkpoint stands
            when = "during a validation pass" if self.validating else "mid-step"
            print(f"\n{self.desc}: interrupted {when}; {self.what_stands()}", file=sys.stderr)
        if self.ckpt_path is None or self.stepping or self.validating:
            return
        self.at.batch, self.step_tokens, self.step_log = self.boundary, 0, []
        self.step_sums.zero_()
        self.optimizer.zero_grad(set_to_none=True)
        self.add_time()
        try:
            self.checkpoint(rng=self.boundary_rng)
        except KeyboardInterrupt:  # a second one (the stop button clicked twice) stops the save; saves are atomic
            print(f"\n{self.desc}: interrupted again while saving step {self.at.step}; {self.what_stands()}",
                  file=sys.stderr)
            raise
        print(f"\n{self.desc}: interrupted; step {self.at.step} of {self.total} is saved in {self.ckpt_path}: "
              f"{self.again} to continue from there", file=sys.stderr)

    def what_stands(self) -> str:
        """After a Ctrl-C that saved nothing: the checkpoint that stands, and how to continue from it."""
        if self.saved_step is None:
            return "no step of this run was saved yet"
        return (f"the checkpoint of step {self.saved_step} in {self.ckpt_path} stands: {self.again} to continue from "
                "there")

    def epoch(self) -> bool:
        """One epoch (or what is left of it after a resume); True when patience ran out."""
        config, at = self.config, self.at
        self.model.train()
        last, stopped, self.clock = n_batches(len(self.data), config.batch_size), False, time.perf_counter()
        batches, self.boundary = self.batches(at.epoch, at.batch), at.batch
        try:  # an error in a step also stops the batch thread and frees the batches it built ahead
            for i, (batch, tokens, (weight, token_share)) in enumerate(batches, start=at.batch):
                self.micro_batch(_to(batch, self.device), weight, token_share)
                at.batch, self.step_tokens = i + 1, self.step_tokens + tokens
                if (i + 1) % config.grad_accum and i + 1 < last:
                    continue
                self.optimizer_step()
                due = config.eval_every and (at.step % config.eval_every == 0 or at.step >= self.total)
                if due and self.val_data is not None:
                    self.add_time()
                    stopped = self.validate()
                    self.checkpoint()
                    self.clock = time.perf_counter()
                elif self.ckpt_path is not None and time.monotonic() - self.saved_at >= self.checkpoint_every_s:
                    self.add_time()  # the checkpoint keeps these steps' tokens: their seconds go with them
                    self.checkpoint()
                    self.clock = time.perf_counter()
                elif at.step % self.log_every == 0:
                    self.flush()
                if at.step >= self.total or stopped:
                    break
        finally:
            batches.close()
        return self.end_epoch() or stopped

    def end_epoch(self) -> bool:
        """Close the epoch, with its validation pass when passes are per epoch; True when patience ran out."""
        self.add_time()
        row, stopped = self.close_epoch(), False
        if not self.config.eval_every and self.val_data is not None:
            stopped = self.validate()
        if self.history.evals and self.history.evals[-1]["step"] == self.at.step:
            row["val_acc"] = self.history.evals[-1]["val_acc"]
        self.history.epochs.append(row)
        self.checkpoint()
        return stopped

    def catch_up(self, on_epoch_end=None) -> bool:
        """After a resume: whether patience has run out, once what a Ctrl-C held to the end of an optimizer step
        (:func:`ctrl_c_after`) kept from running has run. The step is saved as done, but its validation pass, and
        the epoch's close where the budget or patience ended there, came after it; without them a resumed run could
        keep other weights, and another history, than a straight one."""
        c, at, evals = self.config, self.at, self.history.evals
        stopped = c.patience is not None and at.bad_evals >= c.patience  # a run resumed after patience ended it
        due = c.eval_every and at.step and (at.step % c.eval_every == 0 or at.step >= self.total)
        if not stopped and due and self.val_data is not None and not (evals and evals[-1]["step"] == at.step):
            stopped = self.validate()
            self.checkpoint()
        if (stopped or at.step >= self.total) and at.batch:  # the run ended within an epoch never closed
            stopped = self.end_epoch() or stopped
            if on_epoch_end is not None:
                on_epoch_end(at.epoch, self.history)
        return stopped

    def add_time(self) -> None:
        """Add the training seconds since :attr:`clock` to the epoch's (the tokens/s of the history), and restart
        it; called wherever the epoch's statistics are saved or closed, so that a resumed run's speed counts every
        step's time."""
        self.at.stats["seconds"] += _elapsed(self.clock, self.device)
        self.clock = time.perf_counter()

    def micro_batch(self, batch: dict, weight: float = 1.0, token_share: float | None = None) -> None:
        """Forward and backward of one micro-batch, weighted by its shares of the step's rows and real tokens (see
        :meth:`batches`); its loss and terms, so weighted, add up to the step's in ``self.step_log``."""
        token_share = weight if token_share is None else token_share
        with autocast(self.kind, self.dtype):
            loss, logits, terms = recipe_loss(self.model, batch, self.config, **self.teacher_side._asdict(),
                                              token_scale=token_share / weight)
        self.scaler.scale(loss * weight).backward()
        labels = batch["labels"]
        hits = ((logits.detach().argmax(-1) == labels) & (labels >= 0)).sum()
        weighted = loss.detach() * weight  # the micro-batch's share of the step's loss
        self.step_sums += torch.stack([weighted.float(), hits.float(), (labels >= 0).sum().float()])
        self.step_log.append((weighted, {name: value.detach() * (
            token_share if name in TOKEN_TERMS else weight) for name, value in terms.items()}))

    def optimizer_step(self) -> None:
        """Unscale, clip, step; the step's log row (its micro-batches' weighted loss and terms, summed) waits on
        the device until :meth:`flush`. A Ctrl-C meanwhile waits for the step's end (:func:`ctrl_c_after`), so
        that the step it interrupts is the one saved, not dropped for the last checkpoint's."""
        with ctrl_c_after():
            self._optimizer_step()

    def _optimizer_step(self) -> None:
        """:meth:`optimizer_step`, with Ctrl-C held."""
        self.stepping = True
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        # a step fp16's scaler skipped (its first few, at most) still moves the schedule and counts toward the budget:
        # telling it apart now would wait for the GPU at every step (transformers' Trainer does); the log marks it
        self.scheduler.step()
        self.at.step += 1
        log, self.step_log = self.step_log, []
        self.pending.append((self.at.step, lr, sum(loss for loss, _ in log), grad_norm.detach(),
                             {k: sum(terms[k] for _, terms in log) for k in log[0][1]}))
        st = self.at.stats  # the step is complete: fold its micro-batches into the running statistics
        self.sums += self.step_sums
        st["n"], st["tokens"] = st["n"] + 1, st["tokens"] + self.step_tokens  # n: steps, whose losses average
        self.step_sums, self.step_tokens = torch.zeros_like(self.step_sums), 0
        self.boundary, self.boundary_rng, self.stepping = self.at.batch, rng_states(), False
        self.bar.update(1)
        if self.on_step is not None:
            self.on_step(self.at.step, self.total)

    def _fix(self) -> str:
        """What to do about a loss that became nan or inf: fp32 is advice only for a run in lower precision."""
        return "lower the learning rate" + (" or train in fp32 (precision='fp32')" if self.dtype is not None else
                                            " (this run is in fp32 already)")

    def flush(self) -> None:
        """Bring the pending steps' values to the host (one transfer), log them, and stop a diverged run."""
        if not self.pending and not self.at.stats["n"]:
            return
        names = list(self.pending[0][4]) if self.pending else []
        values = [torch.stack([p[2].float(), p[3].float(), *(p[4][k].float() for k in names)]) for p in self.pending]
        host = torch.cat([torch.stack(values).flatten() if values else self.sums[:0], self.sums]).tolist()
        rows, sums = host[:len(host) - 3], host[len(host) - 3:]
        width = 2 + len(names)
        for j, (step, lr, *_rest) in enumerate(self.pending):
            loss, grad_norm, *term_values = rows[j * width:(j + 1) * width]
            if not math.isfinite(loss):
                raise TrainingDivergedError(
                    f"{self.desc}: the loss became {loss} at step {step} (epoch {self.at.epoch}); {self._fix()}")
            row = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm}
            if not math.isfinite(grad_norm):  # JSON has no inf or NaN; fp16's GradScaler skipped this update
                row |= {"grad_norm": None} | ({"skipped": True} if self.scaler.is_enabled() else {})
            self.history.steps.append(row | dict(zip(names, term_values)))
        st = self.at.stats
        st["loss"], st["correct"], st["labelled"] = st["loss"] + sums[0], st["correct"] + sums[1], st["labelled"] + sums[2]
        self.pending, self.sums = [], torch.zeros_like(self.sums)
        if not math.isfinite(st["loss"]):
            raise TrainingDivergedError(f"{self.desc}: the loss became {st['loss']} before step {self.at.step} "
                                        f"(a gradient-accumulation micro-batch); {self._fix()}")
        self.bar.set_postfix(loss=f"{st['loss'] / max(1, st['n']):.4f}",
                             acc=f"{st['correct'] / max(1, st['labelled']):.3f}", refresh=False)

    def validate(self) -> bool:
        """A validation pass; keeps the best weights; True when patience has run out."""
        self.flush()
        at, t0 = self.at, time.perf_counter()
        self.validating = True
        try:
            val_acc, correct = _validate(self.model, self.val_data, self.config, self.device)
        except NonFiniteLogitsError:  # the last update made the weights NaN: the run diverged
            raise TrainingDivergedError(f"{self.desc}: the model's outputs became NaN or infinite at step {at.step} "
                                        f"(epoch {at.epoch}), at its validation pass; {self._fix()}") from None
        self.validating = False
        self.history.eval_seconds += time.perf_counter() - t0
        self.history.evals.append({"step": at.step, "val_acc": val_acc})
        if val_acc > at.best_val:
            at.best_val, at.bad_evals, self.history.best_step = val_acc, 0, at.step
            self.history.best_val_correct = correct
            if self.config.keep_best:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        else:
            at.bad_evals += 1
        self.bar.set_postfix(val_acc=f"{val_acc:.3f}", best=f"{at.best_val:.3f}", refresh=False)
        return self.config.patience is not None and at.bad_evals >= self.config.patience

    def close_epoch(self) -> dict:
        """Fold the epoch's running statistics into the history; return its row."""
        self.flush()
        at, st = self.at, self.at.stats
        self.history.seconds += st["seconds"]
        self.history.tokens += st["tokens"]
        row = {"epoch": at.epoch + 1, "step": at.step, "train_loss": st["loss"] / max(1, st["n"]),
               "train_acc": st["correct"] / st["labelled"] if st["labelled"] else None,
               "tokens_per_s": st["tokens"] / st["seconds"] if st["seconds"] else 0.0, "seconds": st["seconds"]}
        at.epoch, at.batch, at.stats = at.epoch + 1, 0, _Progress().stats
        self.boundary = 0
        return row

    def checkpoint(self, rng: tuple | None = None) -> None:
        """Rewrite the run's one checkpoint (weights, optimizer, scheduler, scaler, RNG states, history)."""
        if self.ckpt_path is not None and not self.behind_earlier():
            self.flush()
            _save_checkpoint(self.ckpt_path, self.model, self.optimizer, self.scheduler, self.scaler, self.history,
                             self.at, self.best_state, self.config, rng or rng_states())
            self.saved_at, self.saved_step = time.monotonic(), self.at.step


@contextlib.contextmanager
def ctrl_c_after():
    """Hold Ctrl-C (SIGINT) until the block ends, then hand it to the handler that was in place (Python's raises
    KeyboardInterrupt; a worker's, :func:`kd_tutorial.parallel._on_interrupt`, too): weights half-updated by an
    optimizer step cannot be saved, and a step takes well under a second. Outside the main thread, where signal
    handlers cannot be set, the block runs as it is. A SIGTERM the CLI hands on as Ctrl-C
    (:func:`kd_tutorial.cli.sigterm_as_ctrl_c`) is held too, and raises :class:`~kd_tutorial.errors.Terminated` where
    Python's handler or none was in place, even where Ctrl-C itself is ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if came:
        if signal.SIGTERM in came and (previous is signal.default_int_handler or not callable(previous)):
            raise Terminated  # a KeyboardInterrupt that says which signal stopped the run
        if callable(previous):  # a worker's handler: told which signal came, to raise Terminated for a SIGTERM
            previous(signal.SIGTERM if signal.SIGTERM in came else signal.SIGINT, None)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt


def _step_shares(sizes: list[int], k: int) -> list[float]:
    """Each micro-batch's share of its step, the steps being runs of ``k`` micro-batches: ``size / step total``."""
    totals = [sum(sizes[i - i % k:i - i % k + k]) for i in range(len(sizes))]
    return [size / max(total, 1) for size, total in zip(sizes, totals)]


def _elapsed(start: float, device: str) -> float:
    synchronize(device)
    return time.perf_counter() - start


def _eager_for_attention(config: TrainConfig, model, teacher) -> dict:
    """Switch student and teacher to eager attention when a term needs attention maps, with no dropout on the
    attention probabilities: eager attention returns the maps after dropout, and a row with zeroed and rescaled
    entries is no distribution to compare with the teacher's. Return what to restore."""
    spec = config.intermediate
    if spec is None or not spec.attention:
        return {}
    before = {}
    for m in (getattr(model, "student", model), teacher):
        if m is not None:
            dropouts = attention_dropouts(m)
            before[id(m)] = (m, m.config._attn_implementation, [(d, d.p) for d in dropouts])
            use_eager_attention(m)
            for d in dropouts:
                d.p = 0.0
    return before


def _restore_attention(before: dict) -> None:
    for m, implementation, dropouts in before.values():
        if m.config._attn_implementation != implementation:
            m.set_attn_implementation(implementation)
        for d, p in dropouts:
            d.p = p
