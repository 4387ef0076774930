"""Notebook 09's on-policy distillation through TRL's ``GKDTrainer`` instead of the course's own loop.

* :func:`hf_tokenizer` - :class:`kd_tutorial.lm.WordTokenizer` as a ``transformers`` fast tokenizer with the
  same ids, which TRL needs as its ``processing_class`` (padding, the end-of-sequence token, generation).
* :func:`gkd_dataset` - token rows as a prompt/completion ``datasets.Dataset``, already tokenized, with the
  ``completion_mask`` that keeps the prompt out of the loss.
* :func:`run_gkd` - train a student on a teacher with ``trl.experimental.gkd.GKDTrainer``; return the
  student and its loss at every step.

TRL is optional (the ``trl`` extra: ``pip install "kd-tutorial[trl]"``): it, transformers, tokenizers and
datasets are imported inside the functions, so importing this module, like ``import kd_tutorial``, loads none
of them.
"""
from __future__ import annotations

import os
import tempfile
import warnings

import torch

from .lm import BOS, EOS, PAD, UNK, WordTokenizer


def hf_tokenizer(word_tokenizer: WordTokenizer):
    """A ``transformers.PreTrainedTokenizerFast`` that splits and numbers text as ``word_tokenizer`` does.

    A word-level model over its vocabulary, lower-casing, and its word pattern ``[a-z0-9']+|[^\\sa-z0-9']``
    (split on whitespace first, then each piece into its matches); ``tokenizer(text)["input_ids"]`` equals
    ``word_tokenizer.encode(text)``, ``<bos>`` and ``<eos>`` included.
    """
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(WordLevel(dict(word_tokenizer.ids), unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(r"[a-z0-9']+|[^\sa-z0-9']"), behavior="isolated")])
    bos, eos = word_tokenizer.ids[BOS], word_tokenizer.ids[EOS]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, bos), (EOS, eos)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   unk_token=UNK)


def gkd_dataset(rows: list[list[int]], prompt_tokens: int, word_tokenizer: WordTokenizer):
    """Token rows as a prompt/completion ``datasets.Dataset`` for ``GKDTrainer``: one example per row longer
    than its prompt.

    Columns: ``prompt`` (the first ``prompt_tokens`` tokens) and ``completion`` (the rest) as text,
    ``input_ids`` (the row) and ``completion_mask`` (0 on the prompt, 1 after). GKDTrainer tells SFTTrainer to
    skip its own tokenization and hands the raw examples to its collator (``DataCollatorForChatML``), which
    needs a ``prompt`` (otherwise chat ``messages`` and a chat template) and, given ``input_ids``, finds where
    the prompt ends from ``completion_mask`` (TRL 1.16) or by tokenizing ``prompt`` (TRL 1.0): the
    text is the tokens joined by spaces, ``<bos>`` included, so that it tokenizes back to the same ids. The
    collator sets the labels of the prompt to -100, which the loss ignores.
    """
    from datasets import Dataset

    kept = [row for row in rows if len(row) > prompt_tokens]
    return Dataset.from_dict({
        "prompt": [" ".join(word_tokenizer.vocab[i] for i in row[:prompt_tokens]) for row in kept],
        "completion": [" ".join(word_tokenizer.vocab[i] for i in row[prompt_tokens:]) for row in kept],
        "input_ids": [list(row) for row in kept],
        "completion_mask": [[0] * prompt_tokens + [1] * (len(row) - prompt_tokens) for row in kept],
    })


def _right_padded(collator):
    """``collator``'s batches with ``input_ids``, ``attention_mask`` and ``labels`` padded on the right.

    TRL's collator pads on the left (what generation from its ``prompts`` needs), but GKDTrainer calls the
    model without ``position_ids`` and GPT-2 then numbers positions from 0 at the first column, padding
    included: a left-padded review would be read at shifted positions, unlike in the course's loop and its
    perplexity. Rolling each row left by its padding puts every review at positions 0, 1, ... again.
    """
    def collate(examples):
        batch = collator(examples)
        shifts = (batch["attention_mask"] == 0).long().cumprod(1).sum(1).tolist()  # leading padding per row
        for key in ("input_ids", "attention_mask", "labels"):
            batch[key] = torch.stack([row.roll(-s) for row, s in zip(batch[key], shifts)])
        return batch
    return collate


def run_gkd(teacher, student, rows: list[list[int]], word_tokenizer: WordTokenizer, *, steps: int,
            lmbda: float = 0.5, beta: float = 0.0, lr: float, batch_size: int, prompt_tokens: int,
            max_new_tokens: int, seed: int = 0, output_dir: str | None = None, device: str = "cpu"):
    """Train ``student`` towards ``teacher`` with TRL's ``GKDTrainer`` for ``steps`` optimizer steps.

    At each step, with probability ``lmbda`` the batch's completions are replaced by ones the student writes
    from their prompts (sampled at temperature 1, as :func:`kd_tutorial.lm.sample` does); the loss is TRL's
    generalised Jensen-Shannon divergence at every completion position. Only its ends are the plain KLs
    (``beta=0``: forward ``KL(p || q)``, ``beta=1``: reverse ``KL(q || p)``, teacher ``p``, student ``q``); in
    between it is ``beta KL(p || m) + (1 - beta) KL(q || m)`` against the mixture ``m = beta p + (1 - beta) q``,
    not a blend of the two KLs: it shrinks to 0 towards both ends (about ``beta`` times the forward KL near 0,
    ``1 - beta`` times the reverse KL near 1), so a ``beta`` near an end is not that end's KL. The schedule is
    nearly the course's (AdamW, weight decay 0.01, 10 % warm-up then linear decay,
    gradient clipping at 1; transformers' warm-up starts from 0, the course's from one warm-up step's share), and
    the precision is the course's: fp32, where TRL's configs default to bf16 autocast (emulated,
    and 4-5x slower, on a CPU without bf16 units). Quiet: no progress bar, no logging service, no checkpoint
    (``output_dir``, a temporary folder unless given, stays empty). Returns ``(student, losses)``: the trained
    student in eval mode and the loss of every step. Refused up front: teacher, student and ``word_tokenizer`` of
    different vocabularies (:func:`kd_tutorial.models.check_same_vocab`), and ``prompt_tokens + max_new_tokens``
    beyond the positions the models read.
    """
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # trl.experimental warns on import otherwise
    from transformers import PrinterCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer
    from trl.experimental.utils import DataCollatorForChatML

    _check_models(teacher, student, word_tokenizer)
    _check_lengths(teacher, student, prompt_tokens, max_new_tokens)
    tokenizer = hf_tokenizer(word_tokenizer)
    max_length = min(_positions(student), _positions(teacher))  # what both read, as _check_lengths measured
    with tempfile.TemporaryDirectory() as scratch:
        collator = _right_padded(DataCollatorForChatML(tokenizer=tokenizer, max_length=max_length))
        with warnings.catch_warnings():  # transformers 5 warns about TrainingArguments fields GKDConfig sets
            warnings.simplefilter("ignore")
            config = GKDConfig(
                output_dir=output_dir or scratch, max_steps=steps, per_device_train_batch_size=batch_size,
                learning_rate=lr, weight_decay=0.01, warmup_steps=max(1, steps // 10), lr_scheduler_type="linear",
                max_grad_norm=1.0, lmbda=lmbda, beta=beta, temperature=1.0, max_new_tokens=max_new_tokens,
                max_length=max_length, seed=seed, use_cpu=device == "cpu", bf16=False, report_to="none",
                save_strategy="no", logging_strategy="steps", logging_steps=1, disable_tqdm=True,
                dataloader_num_workers=0)
            trainer = GKDTrainer(model=student, teacher_model=teacher, args=config, data_collator=collator,
                                 train_dataset=gkd_dataset(rows, prompt_tokens, word_tokenizer),
                                 processing_class=tokenizer)
            trainer.remove_callback(PrinterCallback)  # with disable_tqdm, Trainer prints every log line instead
            # Trainer counts num_items_in_batch from the data's completions before an on-policy step replaces
            # them with the student's, and GKD's loss divides by it; without it the loss is the mean over the
            # tokens actually scored (no gradient accumulation here, so that is the whole step)
            trainer.model_accepts_loss_kwargs = False
            trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return trainer.model.eval(), losses


def _check_models(teacher, student, word_tokenizer: WordTokenizer) -> None:
    """Refuse a teacher and a student of two vocabularies, or whose vocabulary is smaller than ``word_tokenizer``'s
    (a larger one is a vocabulary padded to a round size)."""
    from .models import VocabularyMismatchError, check_same_vocab
    check_same_vocab(teacher, student)
    if len(word_tokenizer) > student.config.vocab_size:  # fewer is a vocabulary padded beyond the tokenizer's
        raise VocabularyMismatchError(
            f"the word tokenizer has {len(word_tokenizer)} tokens, the models' vocabulary only "
            f"{student.config.vocab_size}: build teacher and student with vocab_size=len(word_tokenizer), from the "
            "tokenizer of their training rows")


def _positions(model) -> int:
    """How many positions the model reads: ``n_positions`` (GPT-2) or ``max_position_embeddings``."""
    config = model.config
    return getattr(config, "n_positions", None) or config.max_position_embeddings


def _check_lengths(teacher, student, prompt_tokens: int, max_new_tokens: int) -> None:
    """Refuse on-policy samples longer than the models read: the run would stop mid-way (an IndexError on the CPU,
    a device-side assert on a GPU) at the first sample that runs that long."""
    positions = min(_positions(student), _positions(teacher))
    if prompt_tokens >= positions:
        raise ValueError(f"prompt_tokens={prompt_tokens} leaves no room to write: the models read {positions} "
                         f"positions; give prompt_tokens <= {positions - 1}")
    if prompt_tokens + max_new_tokens > positions:
        raise ValueError(f"prompt_tokens={prompt_tokens} + max_new_tokens={max_new_tokens} exceeds the {positions} "
                         f"positions the models read: give max_new_tokens <= {positions - prompt_tokens}")
