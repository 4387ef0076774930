"""Tiny BERT models and batches for exercises and checks (random weights, offline, fast on CPU).

transformers is imported lazily, so that a notebook can set the offline
environment variables before anything imports it.
"""
from __future__ import annotations

import torch

TOY_VOCAB = 99  # the size transformers' own tests use


def toy_config(num_layers: int = 2, hidden: int = 32, heads: int = 4, intermediate: int = 37,
               dropout: float = 0.0, num_labels: int = 2, vocab_size: int = TOY_VOCAB, **extra):
    """A small :class:`transformers.BertConfig` (eager attention, so attention weights are available)."""
    from transformers import BertConfig  # noqa: PLC0415

    return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=num_layers,
                      num_attention_heads=heads, intermediate_size=intermediate,
                      hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                      max_position_embeddings=64, type_vocab_size=2, num_labels=num_labels,
                      attn_implementation="eager", **extra)


def toy_bert(num_layers: int = 2, seed: int = 0, dropout: float = 0.0, logit_scale: float = 1.0, **config):
    """A randomly initialised ``BertForSequenceClassification`` (deterministic given ``seed``).

    ``logit_scale`` multiplies the classifier's weights: a random BERT's logits are
    close to 0, and a larger scale makes it look like a confident, trained teacher.
    """
    from transformers import BertForSequenceClassification  # noqa: PLC0415

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForSequenceClassification(toy_config(num_layers=num_layers, dropout=dropout, **config))
        with torch.no_grad():
            model.classifier.weight.mul_(logit_scale)
    return model


def toy_batch(batch_size: int = 4, max_len: int = 12, seed: int = 0, vocab_size: int = TOY_VOCAB,
              labels: list[int] | None = None, min_len: int = 3) -> dict:
    """A padded batch: ``input_ids``, ``attention_mask`` (1 = token, 0 = padding), ``labels``, ``index``."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=g)
    lengths[0] = max_len
    ids = torch.randint(5, vocab_size, (batch_size, max_len), generator=g)
    mask = (torch.arange(max_len)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    ids[:, 0] = 2  # a [CLS]-like first token
    if labels is None:
        labels = torch.randint(0, 2, (batch_size,), generator=g).tolist()
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(labels),
            "index": torch.arange(batch_size)}
