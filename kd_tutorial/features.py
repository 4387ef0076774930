"""What intermediate-layer distillation reads from inside a BERT: hidden states, attention maps, value vectors.

:func:`forward_features` runs a ``BertForSequenceClassification`` once and
returns its logits together with whatever a recipe asks for:

* ``hidden``: ``hidden_states[k]`` of shape (B, L, H), ``k = 0`` the embeddings'
  output and ``k = i`` the output of layer ``i`` (1-based);
* ``attentions``: the attention probabilities of each layer, (B, heads, L, L).
  SDPA, the default attention kernel, never materialises them, so the model
  is switched to ``attn_implementation="eager"`` (slower: only recipes with an
  attention term pay for it);
* ``values``: each layer's value vectors ``V = h W_V + b_V``, (B, L, width),
  captured with a forward hook on the layer's ``value`` projection.

Layer ``i`` of ``attentions`` and ``values`` is ``i - 1`` in the lists (there
is no attention in the embeddings).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass
class Features:
    """One forward pass: logits and, when asked for, per-layer internals (see the module docstring)."""

    logits: torch.Tensor
    hidden: tuple | None = None
    attentions: tuple | None = None
    values: list | None = None


def use_eager_attention(model) -> None:
    """Switch a transformers model to eager attention, which returns attention probabilities (SDPA returns none)."""
    if getattr(model.config, "_attn_implementation", None) != "eager":
        model.set_attn_implementation("eager")


def attention_dropouts(model) -> list[torch.nn.Dropout]:
    """The dropout modules on ``model``'s attention probabilities, one per self-attention layer."""
    return [m.dropout for m in model.modules()
            if type(m).__name__.endswith("SelfAttention") and isinstance(getattr(m, "dropout", None), torch.nn.Dropout)]


@contextlib.contextmanager
def _record_values(model):
    layers = model.bert.encoder.layer
    values: list = [None] * len(layers)
    handles = [layer.attention.self.value.register_forward_hook(
        lambda _module, _inputs, out, i=i: values.__setitem__(i, out)) for i, layer in enumerate(layers)]
    try:
        yield values
    finally:
        for h in handles:
            h.remove()


def device_mask(model, attention_mask: torch.Tensor) -> torch.Tensor:
    """The (B, 1, 1, L) attention mask that ``model``'s attention kernel takes, built on the device.

    Given the 2D padding mask, transformers first asks whether it holds any padding
    (``mask.all()``), which makes the CPU wait for the GPU at every forward pass.
    A 4D mask is used as it is: a boolean one for SDPA (True = attend), an additive
    one (0 or the dtype's minimum) for eager attention. Same outputs, no wait.
    """
    keys = attention_mask[:, None, None, :]
    if getattr(model.config, "_attn_implementation", None) == "eager":
        return (1.0 - keys.float()) * torch.finfo(torch.float32).min
    return keys.bool()


def forward_features(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, hidden: bool = False,
                     attentions: bool = False, values: bool = False) -> Features:
    """One forward pass of a BERT classifier, returning its logits and the internals asked for."""
    if attentions:
        use_eager_attention(model)
    with _record_values(model) if values else contextlib.nullcontext() as recorded:
        out = model(input_ids=input_ids, attention_mask=device_mask(model, attention_mask), output_hidden_states=hidden,
                    output_attentions=attentions)
    return Features(logits=out.logits, hidden=out.hidden_states if hidden else None,
                    attentions=out.attentions if attentions else None, values=recorded if values else None)
