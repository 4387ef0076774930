"""Exercises for notebook 01 (BERT anatomy)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from .core import Exercise, Wrong, as_tensor, close, diagnose

# -- q1: scaled dot-product attention ----------------------------------------


def _attention_ref(q, k, v, mask=None, *, scale=None, dim=-1, mask_mode="fill"):
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / (math.sqrt(d) if scale is None else scale)
    if mask is not None and mask_mode == "fill":
        scores = scores.masked_fill(mask == 0, torch.finfo(scores.dtype).min)
    elif mask is not None and mask_mode == "inverted":
        scores = scores.masked_fill(mask != 0, torch.finfo(scores.dtype).min)
    elif mask is not None and mask_mode == "add":
        scores = scores + mask
    w = torch.softmax(scores, dim=dim)
    if mask is not None and mask_mode == "after":
        w = w * (mask != 0)
    return w @ v, w


def _attention_cases():
    g = torch.Generator().manual_seed(1)
    B, H, L, d = 2, 3, 5, 8
    q, k, v = (torch.randn(B, H, L, d, generator=g) for _ in range(3))
    mask = torch.ones(B, 1, 1, L, dtype=torch.long)
    mask[1, ..., 3:] = 0  # the second sequence has two padding positions
    q2 = torch.randn(2, 3, 16, generator=g)
    k2, v2 = torch.randn(2, 6, 16, generator=g), torch.randn(2, 6, 4, generator=g)
    mask2 = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])[:, None, :]
    return [(q, k, v, None), (q, k, v, mask), (q2, k2, v2, mask2)]


def _diagnose_attention(cases, weights) -> str:
    def V(subset=None, **kw):
        chosen = cases if subset is None else cases[:subset]
        return lambda: [_attention_ref(q, k, v, m, **kw)[1] for q, k, v, m in chosen]

    if not close(weights[0], _attention_ref(*cases[0])[1], atol=1e-5):  # no mask: scaling and softmax
        message = diagnose(weights[:1], {
            "you forgot to scale the scores: divide Q K^T by sqrt(d_k) before the softmax": V(1, scale=1.0),
            "divide the scores by sqrt(d_k), not by d_k": V(1, scale=cases[0][0].shape[-1]),
            "your softmax runs over the queries: each query's weights over the keys must sum to 1 (dim=-1)":
                V(1, dim=-2),
        }, atol=1e-5)
        return message or "without a mask, your weights differ from softmax(Q K^T / sqrt(d_k), dim=-1)"
    message = diagnose(weights, {
        "your mask is inverted: 1 marks a real token (attend), 0 marks padding (ignore)": V(mask_mode="inverted"),
        "you added the 0/1 mask to the scores: masked positions need -inf (or a very large negative "
        "number) before the softmax": V(mask_mode="add"),
        "you zeroed the masked weights after the softmax, so the rest no longer sums to 1: mask the "
        "scores before the softmax": V(mask_mode="after"),
        "padding positions receive attention: set their scores to -inf "
        "(scores.masked_fill(mask == 0, float('-inf'))) before the softmax": V(mask_mode="none"),
    }, atol=1e-5)
    return message or "your weights are right without a mask but wrong with one: mask == 0 marks padding"


def _check_attention(call):
    cases = _attention_cases()
    outs, weights = [], []
    for q, k, v, m in cases:
        res = call(q.clone(), k.clone(), v.clone(), None if m is None else m.clone())
        if not (isinstance(res, tuple) and len(res) == 2):
            raise Wrong("return a pair (output, weights): the attended values and the attention weights")
        ref_out, ref_w = _attention_ref(q, k, v, m)
        weights.append(as_tensor(res[1], ref_w.shape, "the attention weights"))
        outs.append(as_tensor(res[0], ref_out.shape, "the attention output"))
    expected = [_attention_ref(q, k, v, m)[1] for q, k, v, m in cases]
    if not all(close(w, e, atol=1e-5) for w, e in zip(weights, expected)):
        raise Wrong(_diagnose_attention(cases, weights))
    for o, (q, k, v, m), w in zip(outs, cases, expected):
        if not close(o, w @ v, atol=1e-5):
            raise Wrong("your weights are right but the output is not: it is weights @ value")


# -- q2: counting parameters --------------------------------------------------


def _counts(c, *, bias=True, layer_norm=True, position=True, token_type=True, layers=True,
            out_proj=True, ffn_out=True, pooler=True) -> dict:
    H, I, L = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    ln = 2 * H if layer_norm else 0
    b = 1 if bias else 0
    emb = c.vocab_size * H + (c.max_position_embeddings * H if position else 0) \
        + (c.type_vocab_size * H if token_type else 0) + ln
    attn = (4 if out_proj else 3) * (H * H + b * H) + ln
    ffn = H * I + b * I + ((I * H + b * H) if ffn_out else 0) + ln
    n = L if layers else 1
    pool = (H * H + b * H) if pooler else 0
    out = {"embeddings": emb, "attention": n * attn, "feed_forward": n * ffn, "pooler": H * H + b * H}
    out["total"] = emb + n * (attn + ffn) + pool
    return out


def bert_parameter_counts(config) -> dict:
    """Reference counts for ``BertModel(config)`` (no classification head), by component."""
    return _counts(config)


_KEYS = ("embeddings", "attention", "feed_forward", "pooler", "total")


def _check_counts(call):
    cfgs = [
        SimpleNamespace(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, type_vocab_size=2),
        SimpleNamespace(vocab_size=200, hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                        intermediate_size=64, max_position_embeddings=40, type_vocab_size=3),
        SimpleNamespace(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2),
    ]
    got = []
    for c in cfgs:
        res = call(c)
        if not isinstance(res, dict):
            raise Wrong(f"return a dict with the keys {list(_KEYS)}")
        missing = [k for k in _KEYS if k not in res]
        if missing:
            raise Wrong(f"your dict is missing the keys {missing}")
        got.append({k: int(res[k]) for k in _KEYS})
    expected = [_counts(c) for c in cfgs]
    hints = {
        "embeddings": [
            (dict(position=False), "you forgot the position embeddings (max_position_embeddings x hidden)"),
            (dict(token_type=False), "you forgot the token-type (segment) embeddings"),
            (dict(layer_norm=False), "you forgot the embeddings' LayerNorm (a weight and a bias of size hidden)"),
            (dict(position=False, token_type=False, layer_norm=False),
             "you counted only the word embeddings: add position and token-type embeddings and a LayerNorm"),
        ],
        "attention": [
            (dict(layers=False), "count every layer: multiply by num_hidden_layers"),
            (dict(bias=False), "you forgot the biases of the Q, K, V and output projections"),
            (dict(layer_norm=False), "each attention block ends with a LayerNorm (2 x hidden parameters)"),
            (dict(out_proj=False), "you forgot the attention's output projection (a 4th hidden x hidden matrix)"),
        ],
        "feed_forward": [
            (dict(layers=False), "count every layer: multiply by num_hidden_layers"),
            (dict(bias=False), "you forgot the feed-forward biases (intermediate + hidden)"),
            (dict(layer_norm=False), "each feed-forward block ends with a LayerNorm (2 x hidden parameters)"),
            (dict(ffn_out=False), "the feed-forward block has two matrices: hidden->intermediate and back"),
        ],
        "pooler": [(dict(bias=False), "the pooler is a dense layer: hidden x hidden weights plus a bias")],
        "total": [(dict(pooler=False), "your total leaves out the pooler")],
    }
    for key in _KEYS:
        if all(g[key] == e[key] for g, e in zip(got, expected)):
            continue
        for kwargs, message in hints[key]:
            if all(g[key] == _counts(c, **kwargs)[key] for g, c in zip(got, cfgs)):
                raise Wrong(f"'{key}': {message}")
        i = next(i for i, (g, e) in enumerate(zip(got, expected)) if g[key] != e[key])
        if key == "total" and got[i]["total"] != sum(got[i][k] for k in _KEYS[:-1]):
            raise Wrong("'total' should be the sum of the four components")
        extra = " (bert-base-uncased: 109,482,240 in all)" if i == 2 else ""
        raise Wrong(f"'{key}' is {got[i][key]:,} for config #{i + 1}, expected {expected[i][key]:,}{extra}")


q1 = Exercise(
    "ex01.q1", "Scaled dot-product attention from scratch", "scaled_dot_product_attention",
    _check_attention,
    hints=(
        "Attention compares each query with every key (a dot product), turns each query's scores into a "
        'probability distribution over the keys, and returns the matching weighted average of the values. The'
        ' scores are scaled so that their size does not grow with the head dimension, and padded keys must '
        'get exactly zero weight.',
        'query @ key.transpose(-2, -1) gives the (..., L_q, L_k) scores; divide by math.sqrt(d_k) with d_k = '
        "query.shape[-1]; scores.masked_fill(mask == 0, float('-inf')) removes padded keys before the "
        'softmax; torch.softmax(..., dim=-1) normalises over the keys; weights @ value mixes the values.',
        'Scale the scores by the square root of the last dimension of query (not by d_k itself); fill the '
        'positions where mask is 0 with -inf *before* the softmax (not after it, and not by adding the 0/1 '
        'mask); softmax over the last dimension (the keys, not the queries); return the pair (weights @ '
        'value, weights).',
    ),
    solution='''
def scaled_dot_product_attention(query, key, value, mask=None):
    """softmax(Q K^T / sqrt(d_k)) V. mask: 1 = attend, 0 = padding (broadcastable to the scores)."""
    ### BEGIN SOLUTION
    d_k = query.shape[-1]
    scores = query @ key.transpose(-2, -1) / math.sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ value, weights
    ### END SOLUTION
''',
    success="Correct! This is what each of BERT's heads computes (F.scaled_dot_product_attention does it fused).",
)

q2 = Exercise(
    "ex01.q2", "Counting BERT's parameters by component", "count_bert_parameters", _check_counts,
    hints=(
        'Count layer by layer: a linear layer has a weight matrix and a bias vector, a LayerNorm a scale and '
        'a shift; the encoder repeats the same layer num_hidden_layers times; the pooler is one more linear '
        'layer on top.',
        'Linear(a, b) has a*b + b parameters; LayerNorm(h) has 2*h. Embeddings: word (vocab_size), position '
        '(max_position_embeddings) and token-type (type_vocab_size) tables of width hidden_size, plus a '
        'LayerNorm. Check your numbers against sum(p.numel() for p in module.parameters()) on a tiny '
        'BertModel.',
        'embeddings = (vocab + positions + token types) * H + 2H; attention = L * (four H x H linears with '
        'biases + a LayerNorm); feed_forward = L * (H -> I linear + I -> H linear, with biases, + a '
        'LayerNorm); pooler = H*H + H; total is the sum of all four.',
    ),
    solution='''
def count_bert_parameters(config):
    """Parameter counts of BertModel(config), by component."""
    ### BEGIN SOLUTION
    H, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    layer_norm = 2 * H
    embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * H + layer_norm
    attention = L * (4 * (H * H + H) + layer_norm)
    feed_forward = L * ((H * I + I) + (I * H + H) + layer_norm)
    pooler = H * H + H
    total = embeddings + attention + feed_forward + pooler
    ### END SOLUTION
    return {"embeddings": embeddings, "attention": attention, "feed_forward": feed_forward,
            "pooler": pooler, "total": total}
''',
    success="Correct! In bert-base, almost a quarter of the parameters are the word-embedding table.",
)

__all__ = ["q1", "q2", "bert_parameter_counts"]
