"""Distillation with Hugging Face's ``transformers.Trainer``: the course's loss, its normalisation, a frozen teacher.

The course trains with its own loop (:mod:`kd_tutorial.train`). Learners who already
use ``Trainer`` get the same distillation here, with the same loss
(:func:`kd_tutorial.losses.distillation_loss`) and the same normalisation::

    from kd_tutorial import hf
    args = hf.training_arguments("out", per_device_train_batch_size=8, gradient_accumulation_steps=4,
                                 learning_rate=2e-3, num_train_epochs=3)
    trainer = hf.DistillationTrainer(model=student, args=args, train_dataset=hf.EncodedDataset(train_rows),
                                     teacher_logits=cached, temperature=2.0, alpha=0.5)
    trainer.train()

* :class:`EncodedDataset` - the rows of a :class:`kd_tutorial.data.Encoded` (``input_ids``, ``labels``,
  ``index``: each row's position in that ``Encoded``, which finds its cached teacher logits).
* :class:`EncodedCollator` - pads a batch to its longest row (dynamic padding) and passes ``labels``
  (-1 = unlabelled) and ``index`` through.
* :func:`training_arguments` - ``TrainingArguments`` with ``remove_unused_columns=False``: by default the
  Trainer drops every column the model's ``forward`` does not name, ``index`` among them, and cached
  teacher logits could then not be looked up.
* :class:`DistillationTrainer` - the ``Trainer`` subclass.
* :func:`compute_accuracy` - a ``compute_metrics`` for ``Trainer.evaluate`` that skips unlabelled rows.

This module imports transformers at the top: ``import kd_tutorial`` never imports it, and nothing in the
package imports this module (import it explicitly). ``Trainer`` itself needs ``accelerate``:
``pip install "kd-tutorial[hf]"`` (the ``dev`` extra has it too). Tested with transformers 5.
"""
from __future__ import annotations

import copy
import os
import warnings
from contextlib import contextmanager

import torch
import transformers
from packaging.version import Version  # a dependency of transformers
from transformers import PreTrainedModel, Trainer, TrainingArguments
from transformers.trainer import TRAINING_ARGS_NAME

from . import losses
from .errors import UsageError
from .store import refuse_unfolded
from .train import freeze

IGNORE_LABEL = losses.IGNORE_LABEL  # the course's "no label" (-1)
HF_IGNORE_INDEX = -100  # transformers' "no label": read as -1 too


class EncodedDataset(torch.utils.data.Dataset):
    """The rows of a :class:`kd_tutorial.data.Encoded` as ``Trainer`` items.

    Item ``i`` is ``{"input_ids": list[int], "labels": int, "index": int}``, where ``index`` is the
    row's position in ``encoded``: the row of cached teacher logits that belongs to it. ``rows``
    (optional) selects and orders rows (a subset, or a fixed order); each keeps its own ``index``.
    """

    def __init__(self, encoded, rows=None):
        self.encoded = encoded
        self.rows = list(range(len(encoded))) if rows is None else [int(r) for r in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        return {"input_ids": self.encoded.input_ids[row], "labels": int(self.encoded.labels[row]), "index": row}


class EncodedCollator:
    """Pads a list of :class:`EncodedDataset` items into one batch (dynamic padding).

    Returns what :func:`kd_tutorial.data.collate` returns: ``input_ids`` padded with ``pad_id`` to the
    longest row (rounded up to ``pad_to_multiple_of`` when given), ``attention_mask`` (1 = real token),
    ``labels`` (-1 = unlabelled) and ``index``, all ``torch.long``. Labels are read from a ``labels``, else a
    ``label`` (a ``datasets`` table's name, IMDB's), else a ``label_ids`` column, as transformers' own collators
    read them; ``token_type_ids`` (sentence pairs) are padded with 0 and kept (a GPT-2 classifier adds them to its
    embeddings, zeros included: leave them out of its rows).

    ``pad_id=None`` (the default) pads with 0, BERT's ``[PAD]``, when the collator is used on its own; inside
    :class:`DistillationTrainer` it becomes the student's ``config.pad_token_id`` (else the
    ``processing_class``'s ``pad_token_id``). A decoder classifier (GPT-2, Llama ``...ForSequenceClassification``)
    reads the logits at the last token that is not its pad token, so padding with another id would make it
    classify a padding position.
    """

    def __init__(self, pad_id: int | None = None, pad_to_multiple_of: int | None = None):
        self.pad_id, self.pad_to_multiple_of = pad_id, pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict:
        ids = [list(f["input_ids"]) for f in features]
        width = max(len(x) for x in ids)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pad = 0 if self.pad_id is None else int(self.pad_id)
        batch = {"input_ids": torch.tensor([x + [pad] * (width - len(x)) for x in ids], dtype=torch.long),
                 "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids],
                                                dtype=torch.long)}
        if all("token_type_ids" in f for f in features):
            batch["token_type_ids"] = torch.tensor([list(f["token_type_ids"]) + [0] * (width - len(f["token_type_ids"]))
                                                    for f in features], dtype=torch.long)
        key = next((k for k in ("labels", "label", "label_ids") if all(k in f for f in features)), None)
        if key is not None:
            batch["labels"] = torch.tensor([int(f[key]) for f in features], dtype=torch.long)
        if all("index" in f for f in features):
            batch["index"] = torch.tensor([int(f["index"]) for f in features], dtype=torch.long)
        return batch


def training_arguments(output_dir: str, **overrides) -> TrainingArguments:
    """``TrainingArguments`` for :class:`DistillationTrainer`: ``remove_unused_columns=False`` and no loggers.

    ``remove_unused_columns=False`` keeps the ``index`` column that cached teacher logits are looked
    up by (the Trainer would drop it: the model's ``forward`` has no such argument).
    ``label_names=["labels"]`` makes evaluation compute a loss for any model (a wrapper such as
    :class:`kd_tutorial.models.DistillationStudent` names no labels). ``report_to="none"`` logs to no
    service. Everything else is ``TrainingArguments``'s own default unless ``overrides`` says otherwise.
    """
    kwargs = dict(remove_unused_columns=False, label_names=["labels"], report_to="none")
    kwargs.update(overrides)
    return TrainingArguments(output_dir=output_dir, **kwargs)


def compute_accuracy(eval_pred) -> dict:
    """A ``compute_metrics`` for ``Trainer``: ``{"accuracy": ...}`` over labelled rows (label -1 / -100 skipped);
    nan when no row is labelled (there is nothing to be right about, and 0.0 would read as all wrong)."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    logits = torch.as_tensor(logits[0] if isinstance(logits, tuple) else logits)
    labels = torch.as_tensor(labels)
    labelled = (labels != IGNORE_LABEL) & (labels != HF_IGNORE_INDEX)
    hits = (logits.argmax(-1) == labels) & labelled
    n = labelled.sum().item()
    return {"accuracy": hits.sum().item() / n if n else float("nan")}


# Trainer in transformers 5.2 to 5.5.3 has accelerate divide each micro-batch's loss by the accumulation steps once
# more, whatever the trainer says of its loss (fixed in 5.5.4): a step of K micro-batches came out K times too short,
# without a word. Compared by release numbers, as env.MINIMUM is (a 5.5.4 release candidate passes)
EXACT_ACCUMULATION = (5, 5, 4)


def check_accumulation(args) -> None:
    """Refuse gradient accumulation (``args.gradient_accumulation_steps > 1``) on the installed transformers when it
    scales such steps wrongly: the one-line error names the upgrade."""
    version, fixed = transformers.__version__, ".".join(map(str, EXACT_ACCUMULATION))
    if args.gradient_accumulation_steps > 1 and Version(version).release < EXACT_ACCUMULATION:
        raise UsageError(f"transformers {version} divides a gradient-accumulation step's loss by its "
                         f"{args.gradient_accumulation_steps} micro-batches twice (fixed in {fixed}): pip install -U "
                         f'"transformers>={fixed}", or train with gradient_accumulation_steps=1')


class DistillationTrainer(Trainer):
    r"""``transformers.Trainer`` that distils: Hinton et al.'s loss against a frozen teacher or cached logits.

    ``DistillationTrainer(model=student, args=..., train_dataset=..., teacher=None, teacher_logits=None,
    eval_teacher_logits=None, temperature=2.0, alpha=0.5, **trainer_kwargs)``

    The teacher's side of a batch comes from, in this order of preference:

    * ``teacher_logits`` (training) / ``eval_teacher_logits`` (evaluation): a ``[N, C]`` tensor aligned
      with the rows of the training / evaluation data, looked up by the batch's ``index`` column
      (:class:`EncodedDataset` and :class:`EncodedCollator` provide it; keep it with
      ``remove_unused_columns=False``, see :func:`training_arguments`). Indices refer to *that* data's
      rows, which is why evaluation never reads ``teacher_logits``.
    * ``teacher``: a frozen model called under ``torch.no_grad()``. It is frozen here
      (``eval()``, ``requires_grad_(False)``), kept in ``eval()`` at every step although ``Trainer``
      calls ``model.train()`` on the student, held outside the student (so outside the optimizer and
      the saved checkpoints), and moved to ``args.device`` at its first use. Its vocabulary and label
      order are checked against the student's (:func:`kd_tutorial.models.check_same_vocab`).

    In evaluation with neither ``eval_teacher_logits`` nor ``teacher``, the reported loss is the
    student's hard cross-entropy on the labelled rows (a warning says so once).

    A student built with ``teacher_word_vectors`` trains as it is, and its checkpoints resume it; fold it with
    :func:`kd_tutorial.models.fold_word_embeddings` before ``save_pretrained``. ``trainer.save_model`` and
    ``trainer.push_to_hub`` refuse it unfolded (``from_pretrained`` would give it random word vectors). A wrapper
    that holds the student as ``.student`` (:class:`kd_tutorial.models.DistillationStudent`) is saved and pushed as
    its student alone, which ``from_pretrained`` reloads. Checkpoints are saved as they are (they resume training),
    so ``args.push_to_hub=True`` would upload them unfolded, or wrapped: call ``trainer.push_to_hub()`` after
    training (and folding) instead.

    **Padding.** The batches are padded with the student's ``config.pad_token_id`` (else the ``processing_class``'s
    ``pad_token_id``), see :class:`EncodedCollator`; a collator or an online teacher padding with another id gets
    a warning (a decoder classifier would read a padding position; an encoder reads the attention mask only).

    **The loss.** For a batch of ``B`` rows with student logits ``z_s``, teacher logits ``z_t`` and
    labels ``y`` (-1, or transformers' -100, for an unlabelled row), per row ``i``::

        l_i = alpha * T^2 * KL(softmax(z_t,i / T) || softmax(z_s,i / T))
              + (1 - alpha) * CE(y_i, softmax(z_s,i)) * [y_i != -1]
        L   = (1 / B) * sum_i l_i  =  losses.distillation_loss(z_s, z_t, y, T, alpha)

    Every review in a batch of ``B`` weighs ``1 / B``, labelled or not (as in the course's loop).

    **Gradient accumulation.** One optimizer step reads ``K`` micro-batches ``b_1 .. b_K`` of
    ``B_1 .. B_K`` rows. :meth:`get_batch_samples` counts the step's rows, ``N = B_1 + ... + B_K``,
    and the Trainer hands ``N`` to :meth:`compute_loss` as ``num_items_in_batch``. For micro-batch
    ``k`` it returns::

        L_k * B_k / N = (1 / N) * sum_{i in b_k} l_i

    and, since it is already normalised over the whole step (``loss_is_scaled_for_ga`` is True),
    the Trainer does not divide it again by ``gradient_accumulation_steps``. The micro-batches'
    gradients add up to the gradient of ``(1 / N) * sum_{i in the step} l_i``: exactly the loss of one
    batch of ``N`` rows. Two shortcuts would not be exact: the mean of each micro-batch divided by
    ``K`` weighs rows ``1 / (K * B_k)``, wrong when the micro-batches differ in size (the last of an
    epoch); and a hard term averaged over the labelled rows of each micro-batch (transformers'
    ``-100`` convention) weighs a labelled review by how many others in its micro-batch are labelled.
    With several processes and ``args.average_tokens_across_devices`` (the default), ``N`` is summed
    over the ``W`` processes and the loss multiplied by ``W``, because DDP averages the gradients.
    Outside training (evaluation, or ``num_items_in_batch=None``) the loss is the batch mean ``L``.
    On transformers 5.2 to 5.5.3, whose Trainer divides such a step once more, accumulation is refused
    (:func:`check_accumulation`).
    """

    def __init__(self, model=None, args=None, *, teacher=None, teacher_logits: torch.Tensor | None = None,
                 eval_teacher_logits: torch.Tensor | None = None, temperature: float = 2.0, alpha: float = 0.5,
                 data_collator=None, **kwargs):
        if teacher is None and teacher_logits is None:
            raise ValueError("DistillationTrainer needs a teacher (teacher=...) or its cached logits "
                             "(teacher_logits=..., aligned with the training rows)")
        losses.check_temperature(temperature)  # a finite number above 0, refused as the losses refuse it
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self._scaled_for_ga = False
        self._warned_hard_eval = False
        self._save_student_alone = False
        data_collator = _padding_collator(model, teacher, data_collator, kwargs.get("processing_class"))
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)
        check_accumulation(self.args)
        self.teacher = freeze(teacher) if teacher is not None else None
        self._teacher_device = None
        self.teacher_logits = _as_logits(teacher_logits, "teacher_logits")
        self.eval_teacher_logits = _as_logits(eval_teacher_logits, "eval_teacher_logits")
        self.temperature, self.alpha = float(temperature), float(alpha)
        # The loss is normalised by ``num_items_in_batch`` (see the class docstring). Older transformers
        # read this flag, not ``loss_is_scaled_for_ga``, to decide not to divide by the accumulation steps.
        self.model_accepts_loss_kwargs = True
        if not self.label_names:
            self.label_names = ["labels"]
        self._check(model, kwargs.get("train_dataset"), kwargs.get("eval_dataset"))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """``Trainer.save_model``, saving what ``from_pretrained`` reloads: a wrapper's ``.student`` alone.

        A student built with ``teacher_word_vectors`` and not folded yet is refused. A wrapper such as
        :class:`kd_tutorial.models.DistillationStudent` (the model holds the student as ``.student``) is saved as
        ``model.student.save_pretrained(output_dir)``, with the processing class and the training arguments as
        ``Trainer`` saves them; its projections are left out. Checkpoints (``_internal_call``) save the model as it
        is: resuming loads them into the same wrapper, or the same unfolded student."""
        if not _internal_call:
            refuse_unfolded(self.model, output_dir or self.args.output_dir)
        with self._student_alone(not _internal_call):
            super().save_model(output_dir, _internal_call)

    def push_to_hub(self, *args, **kwargs):
        """``Trainer.push_to_hub``, refusing an unfolded student and uploading a wrapper's ``.student`` alone, as
        :meth:`save_model` does (``Trainer`` saves it as a checkpoint would, which ``from_pretrained`` cannot read)."""
        refuse_unfolded(self.model, self.args.hub_model_id or self.args.output_dir)
        with self._student_alone(True):
            return super().push_to_hub(*args, **kwargs)

    @contextmanager
    def _student_alone(self, on: bool):
        """While open (and ``on``), :meth:`_save` saves a wrapper's ``.student`` instead of the wrapper."""
        before = self._save_student_alone
        self._save_student_alone = before or on
        try:
            yield
        finally:
            self._save_student_alone = before

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """``Trainer._save``; for a final save of a wrapper, ``.student.save_pretrained`` (see :meth:`save_model`)."""
        student = getattr(self.model, "student", None)
        if not self._save_student_alone or isinstance(self.model, PreTrainedModel) \
                or not isinstance(student, PreTrainedModel):
            return super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return None
        os.makedirs(output_dir, exist_ok=True)
        if state_dict is not None:  # gathered from the wrapper (FSDP, DeepSpeed): its names start with "student."
            state_dict = {k[len("student."):]: v for k, v in state_dict.items() if k.startswith("student.")}
        student.save_pretrained(output_dir, state_dict=state_dict)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        elif getattr(self.data_collator, "tokenizer", None) is not None:  # as Trainer._save falls back to it
            self.data_collator.tokenizer.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))
        return None

    # --------------------------------------------------------------------- checks

    def _check(self, model, train_dataset, eval_dataset) -> None:
        """Refuse what would silently distil the wrong targets: mismatched rows, classes or vocabularies."""
        cached = self.teacher_logits is not None or self.eval_teacher_logits is not None
        if cached and self.args.remove_unused_columns:
            raise ValueError("cached teacher logits are looked up by the batch's 'index' column, which the Trainer "
                             "drops unless TrainingArguments(remove_unused_columns=False): use "
                             "kd_tutorial.hf.training_arguments(...)")
        student = getattr(model, "student", model)
        for table, data, what in ((self.teacher_logits, train_dataset, "teacher_logits"),
                                  (self.eval_teacher_logits, eval_dataset, "eval_teacher_logits")):
            if table is not None:
                self._check_table(table, data, what)
        if self.teacher is not None and student is not None and hasattr(self.teacher, "config") \
                and hasattr(student, "config"):
            from .models import check_same_vocab
            check_same_vocab(self.teacher, student)

    def _check_table(self, table: torch.Tensor, data, what: str) -> None:
        """Refuse cached logits for a dict of datasets, or with another number of classes than the student, or of
        rows than ``data``."""
        if isinstance(data, dict):
            raise ValueError(f"{what} are aligned with one dataset's rows, and this is a dict of several: give each "
                             "dataset its own, or an online teacher=")
        student = getattr(self.model, "student", self.model)
        classes = getattr(getattr(student, "config", None), "num_labels", None)
        if classes is not None and table.shape[1] != classes:
            raise ValueError(f"{what} has {table.shape[1]} classes, the student {classes}")
        rows = _rows_of(data)
        if rows is not None and table.shape[0] != rows:
            raise ValueError(f"{what} has {table.shape[0]} rows but its dataset has {rows}: the logits must be "
                             "aligned with the dataset's rows (row i = review i, found by the 'index' column)")

    # --------------------------------------------------------------------- evaluation on another dataset

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", *,
                 eval_teacher_logits: torch.Tensor | None = None):
        """``Trainer.evaluate``; ``eval_teacher_logits``: the cached teacher logits of the ``eval_dataset`` given
        here (see :meth:`_eval_targets`: the trainer's own serve only the dataset they were checked against)."""
        with self._eval_targets(eval_dataset, eval_teacher_logits):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test", *,
                eval_teacher_logits: torch.Tensor | None = None):
        """``Trainer.predict``; ``eval_teacher_logits``: the cached teacher logits of ``test_dataset``, for its loss
        (see :meth:`_eval_targets`)."""
        with self._eval_targets(test_dataset, eval_teacher_logits):
            return super().predict(test_dataset, ignore_keys, metric_key_prefix)

    @contextmanager
    def _eval_targets(self, dataset, table: torch.Tensor | None):
        """While open, the evaluation's cached teacher logits: ``table`` (checked against ``dataset``) when given;
        the trainer's ``eval_teacher_logits`` for the ``eval_dataset`` they were checked against; none, with a
        warning, for another dataset, whose loss then comes from the online teacher, else the hard cross-entropy
        (its rows' ``index`` would read another dataset's logits)."""
        before, swap = self.eval_teacher_logits, False
        if table is not None:
            target = dataset if dataset is not None else self.eval_dataset
            if isinstance(target, str) and isinstance(self.eval_dataset, dict):  # a name, as Trainer takes one
                target = self.eval_dataset.get(target)
            self._check_table(table, target, "eval_teacher_logits")
            self.eval_teacher_logits, swap = _as_logits(table, "eval_teacher_logits"), True
        elif before is not None and dataset is not None and dataset is not self.eval_dataset:
            warnings.warn("eval_teacher_logits belong to the trainer's eval_dataset, not to this dataset: its loss "
                          "comes from the online teacher, else the hard cross-entropy; pass eval_teacher_logits=... "
                          "for it", stacklevel=4)  # the caller of evaluate / predict, past contextlib
            self.eval_teacher_logits, swap = None, True
        try:
            yield
        finally:
            if swap:
                self.eval_teacher_logits = before

    # --------------------------------------------------------------------- gradient accumulation

    @property
    def loss_is_scaled_for_ga(self) -> bool:
        """Whether the last training loss is already normalised over the whole accumulated batch (``N`` rows)."""
        return self._scaled_for_ga

    def get_batch_samples(self, epoch_iterator, num_batches: int, device=None):
        """The next ``num_batches`` micro-batches and ``N``, their number of rows (every review counts).

        transformers counts labels other than -100 instead; the course's loss weighs every review,
        labelled or not, so the rows are counted here. With several processes and
        ``average_tokens_across_devices``, ``N`` is the sum over all of them.
        """
        batch_samples = []
        for _ in range(num_batches):
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                break
        device = device if device is not None else self.args.device
        rows = torch.tensor(sum(_batch_rows(b) for b in batch_samples), device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            rows = self.accelerator.gather(rows).sum()
        return batch_samples, rows

    # --------------------------------------------------------------------- the loss

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """The distillation loss of one (micro-)batch, normalised as the class docstring says.

        ``inputs`` holds the model's inputs plus ``labels`` (-1 or -100: unlabelled) and ``index``
        (needed with cached logits); neither of those two reaches the model.
        """
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        index = inputs.pop("index", None)
        outputs = model(**inputs)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        if labels is not None:
            labels = labels.masked_fill(labels == HF_IGNORE_INDEX, IGNORE_LABEL)
        training = model.training
        if training and labels is None and self.alpha < 1:
            raise ValueError(f"this batch has no labels, so the hard term (weight 1 - alpha = {1 - self.alpha:g}) "
                             "would silently drop out: name the label column 'labels' or 'label' (unlabelled rows: "
                             "-1 or -100), or pass alpha=1.0 to train on the soft targets alone")
        target = self._teacher_side(inputs, index, training)
        if target is None:
            if not self._warned_hard_eval:
                warnings.warn("DistillationTrainer: no eval_teacher_logits and no teacher for evaluation, so eval_loss "
                              "is the student's hard cross-entropy", stacklevel=2)
                self._warned_hard_eval = True
            loss = losses.hard_cross_entropy(logits, labels) if labels is not None else logits.sum() * 0.0
        else:
            loss = losses.distillation_loss(logits, target, labels, self.temperature, self.alpha)
        scaled = training and num_items_in_batch is not None
        if scaled:
            loss = loss * (logits.shape[0] / num_items_in_batch)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                loss = loss * self.accelerator.num_processes
        self._scaled_for_ga = scaled
        if isinstance(outputs, tuple):  # Trainer.prediction_step reads a tuple's logits after its loss
            outputs = (loss, *outputs)
        return (loss, outputs) if return_outputs else loss

    def _teacher_side(self, inputs: dict, index, training: bool):
        """The teacher's logits for this batch: cached rows (by ``index``), else the frozen teacher's pass."""
        name = "teacher_logits" if training else "eval_teacher_logits"
        table = getattr(self, name)
        if table is not None:
            if index is None:
                raise ValueError(f"{name} are looked up by the batch's 'index' column, and this batch has none: use "
                                 "kd_tutorial.hf.EncodedDataset and EncodedCollator, with "
                                 "TrainingArguments(remove_unused_columns=False)")
            if table.device != self.args.device:
                table = table.to(self.args.device)
                setattr(self, name, table)  # moved once, read at every step
            return table[index.to(table.device)]
        if self.teacher is None:
            if training:
                raise ValueError("no teacher logits for the training rows: pass teacher_logits or teacher")
            return None
        teacher = self._ready_teacher()
        with torch.no_grad(), self.accelerator.autocast():
            out = teacher(**inputs)
        return (out["logits"] if isinstance(out, dict) else out[0]).detach()

    def _ready_teacher(self):
        """The frozen teacher, in ``eval()`` and on ``args.device`` (moved at its first use)."""
        teacher = self.teacher
        if teacher.training:
            teacher.eval()
        if self._teacher_device != self.args.device:
            teacher.to(self.args.device)
            self._teacher_device = self.args.device
        return teacher


def _padding_collator(model, teacher, data_collator, processing_class):
    """The trainer's collator, padding with the student's pad token (:class:`EncodedCollator` with ``pad_id=None``
    gets ``config.pad_token_id``, else ``processing_class.pad_token_id``); refuses a collator or an online teacher
    that pads with another id, on which a decoder classifier would classify a padding position."""
    student = getattr(model, "student", model)
    config_pad = getattr(getattr(student, "config", None), "pad_token_id", None)
    pad = config_pad if config_pad is not None else getattr(processing_class, "pad_token_id", None)
    collator = data_collator if data_collator is not None else EncodedCollator()
    given = getattr(collator, "pad_id", getattr(getattr(collator, "tokenizer", None), "pad_token_id", None))
    # warnings, not errors: an encoder reads the attention mask and never the pad id, a decoder classifier does
    if given is not None and config_pad is not None and int(given) != int(config_pad):
        warnings.warn(f"the data collator pads with id {given} but the student's config.pad_token_id is {config_pad}: "
                      "a decoder classifier (GPT-2, Llama ...ForSequenceClassification) would classify a padding "
                      f"position; pad with {config_pad} (EncodedCollator(pad_id=None) does)", stacklevel=3)
    pad = given if given is not None else pad  # what the batches will be padded with, where known
    teacher_pad = getattr(getattr(teacher, "config", None), "pad_token_id", None)
    if teacher_pad is not None and pad is not None and int(teacher_pad) != int(pad):
        warnings.warn(f"the teacher's config.pad_token_id is {teacher_pad}, the student pads with {pad}: a decoder "
                      "classifier teacher would classify a padding position; set both configs' pad_token_id to the "
                      "tokenizer's pad token id", stacklevel=3)
    if isinstance(collator, EncodedCollator) and collator.pad_id is None and pad is not None:
        collator = copy.copy(collator)  # the caller's collator is left as it was
        collator.pad_id = int(pad)
    return collator


def _batch_rows(batch) -> int:
    """How many reviews a collated batch holds."""
    for key in ("input_ids", "labels", "index", "inputs_embeds"):
        if key in batch:
            return len(batch[key])
    raise ValueError(f"cannot count the rows of a batch with keys {sorted(batch)}: give it input_ids")


def _as_logits(table, what: str):
    if table is None:
        return None
    table = torch.as_tensor(table)
    if table.ndim != 2:
        raise ValueError(f"{what} must be a [rows, classes] tensor, got shape {tuple(table.shape)}")
    return table.detach().float()


def _rows_of(dataset) -> int | None:
    """How many rows cached logits for ``dataset`` must have: its ``Encoded``'s, or its length; None if unknown."""
    if isinstance(dataset, EncodedDataset):
        return len(dataset.encoded)  # ``index`` is the row in the whole Encoded, whatever ``rows`` selects
    try:
        return len(dataset) if dataset is not None and not isinstance(dataset, (dict, str)) else None
    except TypeError:
        return None
