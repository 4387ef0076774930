"""Exercises for notebook 01 (BERT anatomy)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from .core import Exercise, Wrong, as_float, as_tensor, close, diagnose, wrong_return

# imported by the grader before the learner's cells (outside the per-cell time limit): q2 passes real BertConfigs
PRELOAD = ("transformers.models.bert.configuration_bert",)

# -- q1: multi-head attention from a packed QKV projection -----------------------------


def _mha_ref(x, mask, w, b, heads, *, scale="head", mask_mode="fill", split="heads", layout="blocks",
             concat=True, softmax_dim=-1):
    B, L, H = x.shape
    d = H // heads
    qkv = x @ w.T + b
    if layout == "blocks":
        q, k, v = qkv.split(H, dim=-1)
    else:  # per-head interleaved [q_h, k_h, v_h] blocks
        q, k, v = qkv.view(B, L, heads, 3, d).unbind(3)
        q, k, v = (t.reshape(B, L, H) for t in (q, k, v))

    def to_heads(t):
        if split == "heads":
            return t.view(B, L, heads, d).transpose(1, 2)
        if split == "interleaved":
            return t.view(B, L, d, heads).permute(0, 3, 1, 2)
        return t.reshape(B, heads, L, d)  # "no_transpose"

    q, k, v = to_heads(q), to_heads(k), to_heads(v)
    div = {"head": math.sqrt(d), "d": d, "hidden": math.sqrt(H), "none": 1.0}[scale]
    scores = q @ k.transpose(-2, -1) / div
    m = mask[:, None, None, :]
    if mask_mode == "fill":
        scores = scores.masked_fill(m == 0, float("-inf"))
    elif mask_mode == "zero":
        scores = scores.masked_fill(m == 0, 0.0)
    elif mask_mode == "add":
        scores = scores + m
    elif mask_mode == "inverted":  # the real tokens masked: -inf where the mask is 1
        scores = scores.masked_fill(m == 1, float("-inf"))
    elif mask_mode == "inverted_add":
        scores = scores + m * -10000.0
    weights = torch.softmax(scores, dim=softmax_dim)
    if mask_mode == "after":
        weights = weights * m
    out = weights @ v
    out = out.transpose(1, 2).reshape(B, L, H) if concat else out.reshape(B, L, H)
    return out, weights


def _mha_cases():
    g = torch.Generator().manual_seed(11)
    out = []
    # the last case's heads are 8 wide, the others' 4: an answer that fixes head_dim instead of H // num_heads fails
    for B, L, H, heads, lengths in [(2, 5, 12, 3, [5, 3]), (3, 4, 8, 2, [2, 4, 1]), (1, 6, 16, 4, [6]),
                                    (2, 4, 24, 3, [4, 2])]:
        x = torch.randn(B, L, H, generator=g)
        w, b = torch.randn(3 * H, H, generator=g) / math.sqrt(H), torch.randn(3 * H, generator=g) * 0.1
        mask = (torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]).long()
        out.append((x, mask, w, b, heads))
    return out


_QUERIES = ("you masked the queries, not the keys: padded keys still get weight from every real token; mask the keys "
            "(the last dimension of the scores, attention_mask[:, None, None, :]), never the queries")


def _queries_masked(weights, cases):
    """The learner's ``weights`` with every real query's row set to unmasked attention: they match it when the
    keys went unmasked and the padded queries' rows were changed (an additive mask on the queries, of any size)."""
    out = []
    for wt, c in zip(weights, cases):
        unmasked = _mha_ref(*c, mask_mode="none")[1].to(torch.float64)
        padded_query = (c[1] == 0)[:, None, :, None]
        out.append(torch.where(padded_query, wt.detach().cpu().to(torch.float64), unmasked))
    return out


_INVERTED = ("you masked the real tokens: attention_mask is 1 for a real token and 0 for padding, so the keys to "
             "set to -inf (or a large negative number) are those where mask == 0")


def _check_mha(call):
    cases = _mha_cases()
    outs, weights = [], []
    for x, mask, w, b, heads in cases:
        res = call(x.clone(), mask.clone(), w.clone(), b.clone(), heads)
        if not (isinstance(res, (tuple, list)) and len(res) == 2):  # return out, w; or [out, w]
            raise wrong_return(res, "a pair (output, weights): output [B, L, H], weights [B, num_heads, L, L]",
                               "packed_multi_head_attention")
        ref_out, ref_w = _mha_ref(x, mask, w, b, heads)
        outs.append(as_tensor(res[0], ref_out.shape, "the attention output"))
        weights.append(as_tensor(res[1], ref_w.shape, "the attention weights"))
    expected = [_mha_ref(*c) for c in cases]
    axis = diagnose(weights, {  # before the nan message: over the queries, masked keys' columns are all -inf
        f"your softmax runs over the {where}: each query's weights over the keys sum to 1, so softmax over the "
        "last dimension of the scores (dim=-1)": (lambda dim=dim: [_mha_ref(*c, softmax_dim=dim)[1] for c in cases])
        for where, dim in (("queries (dim=-2)", -2), ("heads (dim=1)", 1))}, atol=1e-5)
    if axis:
        raise Wrong(axis)
    inverted = [_mha_ref(*c, mask_mode="inverted")[1] for c in cases]  # nan where a review has no padding
    if all(close(wt, iv, rtol=1e-5, atol=1e-5) for wt, iv in zip(weights, inverted)):  # float64 weights too
        raise Wrong(_INVERTED)
    if any(bool(torch.isnan(t).any()) for t in weights + outs):
        raise Wrong("your result holds nan: a row of scores that is all -inf (every key masked) has no "
                    "softmax, so mask the keys (the last dimension of the scores), never the queries; and 0 x -inf "
                    "is nan, so mask with scores.masked_fill(mask == 0, float('-inf')), not scores + (1 - mask) "
                    "* -inf")
    if not all(close(wt, e[1], atol=1e-5) for wt, e in zip(weights, expected)):
        V = lambda **kw: (lambda: [_mha_ref(*c, **kw)[1] for c in cases])  # noqa: E731
        message = diagnose(weights, {
            "divide the scores by the square root of the head dimension, not by the head dimension itself":
                V(scale="d"),
            "you divided by sqrt(hidden size): each head's dot products have head_dim = hidden / num_heads "
            "terms, so divide by sqrt(head_dim)": V(scale="hidden"),
            "you forgot to scale the scores by 1 / sqrt(head_dim)": V(scale="none"),
            "you zeroed the padded keys' weights after the softmax, so each row no longer sums to 1: mask the "
            "scores before the softmax": V(mask_mode="after"),
            "you set the padded keys' scores to 0, which still gives them weight (exp(0) = 1): they need -inf "
            "before the softmax": V(mask_mode="zero"),
            "you added the 0/1 mask to the scores: padded keys need -inf before the softmax": V(mask_mode="add"),
            _INVERTED: V(mask_mode="inverted_add"),
            "padded keys receive attention: use the attention_mask (1 = real token, 0 = padding) on the keys":
                V(mask_mode="none"),
            _QUERIES: lambda: _queries_masked(weights, cases),  # after "none": it matches that too
            "your heads are split along the wrong axis: head h owns the h-th block of head_dim consecutive "
            "features, i.e. view(B, L, num_heads, head_dim), not every num_heads-th feature":
                V(split="interleaved"),
            "you reshaped [B, L, H] straight to [B, num_heads, L, head_dim], which mixes positions between "
            "heads: view as [B, L, num_heads, head_dim], then swap the L and head axes": V(split="no_transpose"),
            "the packed projection holds Q, then K, then V, each a block of hidden_size consecutive outputs, "
            "not [q, k, v] interleaved head by head": V(layout="interleaved"),
        }, atol=1e-5)
        raise Wrong(message or "your attention weights differ from softmax(Q K^T / sqrt(head_dim)) with the "
                    "padded keys at -inf, per head")
    _check_mha_output(outs, cases, expected)


def _check_mha_output(outs, cases, expected):
    """With the weights right: the output must be each head's weights @ values, heads concatenated per token."""
    for o, c, e in zip(outs, cases, expected):
        if close(o, e[0], atol=1e-5):
            continue
        if close(o, _mha_ref(*c, concat=False)[0], atol=1e-5):
            raise Wrong("your weights are right, but the heads are not concatenated per token: move the head "
                        "axis next to head_dim (transpose(1, 2)) before reshaping to [B, L, H]")
        raise Wrong("your weights are right but the output is not: each head's weights @ its values, then the "
                    "heads concatenated back to [B, L, H]")


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


_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings",
           "type_vocab_size")


def _student_total(teacher, overrides, pooler, *, bias=True, layer_norm=True, teacher_positions=False,
                   teacher_width_table=False, token_type=True, pooler_times=1, ignore_flag=False,
                   ignore_overrides=False, teacher_vocab=False, out_proj=True, ffn_out=True, layer_lns=2,
                   emb_ln=True, position=True):
    c = SimpleNamespace(**{k: getattr(teacher, k) if ignore_overrides else overrides.get(k, getattr(teacher, k))
                           for k in _FIELDS})
    if teacher_positions:
        c.max_position_embeddings = teacher.max_position_embeddings
    if teacher_vocab:
        c.vocab_size, c.type_vocab_size = teacher.vocab_size, teacher.type_vocab_size
    V, H, L, I, P = c.vocab_size, c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.max_position_embeddings
    b, ln = (1 if bias else 0), (2 * H if layer_norm else 0)
    E = teacher.hidden_size if teacher_width_table else H
    emb = (V + (P if position else 0) + (c.type_vocab_size if token_type else 0)) * E \
        + (2 * E if layer_norm and emb_ln else 0)
    layer = (4 if out_proj else 3) * (H * H + b * H) + (H * I + b * I) + ((I * H + b * H) if ffn_out else 0) \
        + layer_lns * ln
    with_pooler = pooler or ignore_flag
    return emb + L * layer + (pooler_times * (H * H + b * H) if with_pooler else 0)


_BERT_BASE = SimpleNamespace(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                             intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2)


def _student_cases():
    small = SimpleNamespace(vocab_size=99, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)
    odd = SimpleNamespace(vocab_size=200, hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                          intermediate_size=96, max_position_embeddings=40, type_vocab_size=3)
    return [
        (small, {"num_hidden_layers": 2}, True),
        (_BERT_BASE, {"num_hidden_layers": 4, "hidden_size": 312, "num_attention_heads": 12,
                      "intermediate_size": 1200, "max_position_embeddings": 128}, False),
        (odd, {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 40, "max_position_embeddings": 20},
         True),
        (_BERT_BASE, {"num_hidden_layers": 6}, True),
        (_BERT_BASE, {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2,
                      "intermediate_size": 512}, False),
        (small, {"vocab_size": 50, "type_vocab_size": 1, "num_hidden_layers": 1}, False),  # a smaller vocabulary
    ]


def _check_student_count(call):
    from transformers import BertConfig  # what the exercise promises (a learner may call .to_dict() on it)
    cases = _student_cases()
    got = []
    for teacher, overrides, pooler in cases:
        passed_teacher, passed_overrides = BertConfig(**vars(teacher)), dict(overrides)
        value = call(passed_teacher, passed_overrides, add_pooling_layer=pooler)
        if (passed_teacher.to_dict(), passed_overrides) != (BertConfig(**vars(teacher)).to_dict(), overrides):
            raise Wrong("your function changed its arguments: read the teacher's config and the overrides, "
                        "do not modify them")
        got.append(as_float(value, "count_student_parameters"))
    expected = [_student_total(*c) for c in cases]
    if all(g == e for g, e in zip(got, expected)):
        return
    V = lambda **kw: (lambda: [_student_total(*c, **kw) for c in cases])  # noqa: E731
    message = diagnose(got, {
        "this is the teacher's count: the student is the teacher's config with `overrides` applied "
        "(fewer layers, a narrower width, ...)": V(ignore_overrides=True),
        "you forgot the biases: every linear layer (Q, K, V, attention output, both feed-forward layers, the "
        "pooler) has a bias of its output size": V(bias=False),
        "you forgot the LayerNorms: one after the embeddings and two per layer, each 2 x hidden_size "
        "(a scale and a shift)": V(layer_norm=False),
        "your position table has the teacher's length: when `overrides` sets max_position_embeddings, the "
        "student's table has that many rows": V(teacher_positions=True),
        "your embedding tables have the teacher's width: the student's embeddings are its own hidden_size "
        "wide": V(teacher_width_table=True),
        "you forgot the token-type (segment) embeddings: type_vocab_size x hidden_size": V(token_type=False),
        "your vocabulary is the teacher's: when `overrides` sets vocab_size or type_vocab_size, the student's "
        "tables have that many rows": V(teacher_vocab=True),
        "you counted the pooler twice: it is one hidden x hidden dense layer with its bias": V(pooler_times=2),
        "you left out the attention's output dense layer: each layer has four hidden x hidden linears (Q, K, V "
        "and the output), each with its bias": V(out_proj=False),
        "you counted one feed-forward linear per layer: there are two, hidden -> intermediate and back "
        "(intermediate x hidden + hidden)": V(ffn_out=False),
        "you counted one LayerNorm per layer: there are two, after the attention and after the feed-forward, "
        "each 2 x hidden_size": V(layer_lns=1),
        "you forgot the LayerNorm after the embeddings (2 x hidden_size)": V(emb_ln=False),
        "you forgot the position embeddings: max_position_embeddings x hidden_size": V(position=False),
        "with add_pooling_layer=False the model has no pooler: leave it out of the count": V(ignore_flag=True),
        "with add_pooling_layer=True the model has a pooler (hidden x hidden + hidden): count it":
            V(pooler_times=0),
    }, rtol=0, atol=0.5)
    if message:
        raise Wrong(message)
    i = next(i for i, (g, e) in enumerate(zip(got, expected)) if g != e)
    teacher, overrides, pooler = cases[i]
    raise Wrong(f"for overrides {overrides} (add_pooling_layer={pooler}) on a teacher with hidden_size "
                f"{teacher.hidden_size} and {teacher.num_hidden_layers} layers you counted {got[i]:,.0f} "
                f"parameters, expected {expected[i]:,}")


q1 = Exercise(
    "ex01.q1", "Multi-head attention from a packed QKV projection", "packed_multi_head_attention", _check_mha,
    hints=(
        'One matrix product gives the queries, keys and values of all heads at once; cut it into Q, K and V, '
        'then cut each into heads. Every head attends on its own, with scores scaled to the size of one head, '
        'and padded keys get exactly zero weight; the heads\' outputs are glued back together token by token.',
        'x @ w_qkv.T + b_qkv is the packed [B, L, 3H] projection; tensor.split(H, dim=-1) cuts it; '
        't.view(B, L, num_heads, head_dim).transpose(1, 2) makes [B, heads, L, head_dim]; '
        "scores.masked_fill(attention_mask[:, None, None, :] == 0, float('-inf')); torch.softmax(..., "
        'dim=-1); out.transpose(1, 2).reshape(B, L, H) concatenates the heads.',
        'Project once, split the last axis into Q, K, V blocks of H; give each the shape [B, heads, L, '
        'head_dim] (heads taken as consecutive blocks of features); compare queries with keys and divide by '
        'the square root of head_dim = H / num_heads (not by head_dim, not by sqrt(H)); set the padded keys '
        "to -inf before (not after) the softmax; weights times values; undo the head split; return the "
        'output and the weights.',
    ),
    solution='''
def packed_multi_head_attention(x, attention_mask, w_qkv, b_qkv, num_heads):
    """Self-attention of all heads from one packed projection: returns (output [B, L, H], weights [B, h, L, L])."""
    ### BEGIN SOLUTION
    B, L, H = x.shape
    head_dim = H // num_heads
    q, k, v = (x @ w_qkv.T + b_qkv).split(H, dim=-1)

    def heads(t):
        return t.view(B, L, num_heads, head_dim).transpose(1, 2)

    scores = heads(q) @ heads(k).transpose(-2, -1) / math.sqrt(head_dim)
    scores = scores.masked_fill(attention_mask[:, None, None, :] == 0, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    output = (weights @ heads(v)).transpose(1, 2).reshape(B, L, H)
    return output, weights
    ### END SOLUTION
''',
    success="Correct! This is BertSelfAttention with its three projections fused into one matrix product "
            "(nn.MultiheadAttention packs them the same way).",
)

q2 = Exercise(
    "ex01.q2", "Parameters of a student configuration", "count_student_parameters", _check_student_count,
    hints=(
        'The student is the teacher with a few settings changed; its size follows from its own settings '
        'only. Count it layer by layer: every linear layer has a weight matrix and a bias, every LayerNorm a '
        'scale and a shift, the encoder repeats one layer num_hidden_layers times, and the pooler exists only '
        'when asked for.',
        'overrides.get(name, getattr(teacher_config, name)) reads a setting of the student. Linear(a, b) has '
        'a*b + b parameters, LayerNorm(h) 2*h. The embeddings are three tables (vocab_size, '
        'max_position_embeddings and type_vocab_size rows) of width hidden_size, then a LayerNorm. To check '
        'yourself, in a cell of its own: from transformers import BertConfig, BertModel; teacher_config, '
        'overrides = BertConfig(), {"num_hidden_layers": 4} (bert-base and a student of it); config = '
        'BertConfig(**{**teacher_config.to_dict(), **overrides}); then '
        'sum(p.numel() for p in BertModel(config, add_pooling_layer=...).parameters()).',
        'Read V, H, L, I, P and T for the student (override first, teacher otherwise). Embeddings: (V + P + T) '
        'tables of H columns, plus 2H. One layer: four H x H linears with biases and a LayerNorm, then an H -> '
        'I and an I -> H linear with biases and a LayerNorm; times L. Add one H x H linear with bias if '
        'add_pooling_layer, once.',
    ),
    solution='''
def count_student_parameters(teacher_config, overrides, add_pooling_layer=True):
    """Parameters of BertModel(student config, add_pooling_layer=...): the teacher's config with `overrides`."""
    ### BEGIN SOLUTION
    def setting(name):
        return overrides.get(name, getattr(teacher_config, name))

    V, H, L = setting("vocab_size"), setting("hidden_size"), setting("num_hidden_layers")
    I, P, T = setting("intermediate_size"), setting("max_position_embeddings"), setting("type_vocab_size")
    embeddings = (V + P + T) * H + 2 * H
    per_layer = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H
    pooler = H * H + H if add_pooling_layer else 0
    return embeddings + L * per_layer + pooler
    ### END SOLUTION
''',
    success="Correct! Depth costs linearly and width quadratically; the embedding table does not shrink with depth, "
            "only with width (and the vocabulary).",
)

__all__ = ["q1", "q2", "bert_parameter_counts"]
