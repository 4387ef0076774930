"""The catalogue of typical wrong answers: each gets its own, specific message.

The wrong implementations below are written the way a learner would write
them (not copied from the checks' internal variants).
"""
from __future__ import annotations

import copy
import math
import random
import re
import time
import warnings

import pytest
import torch
import torch.nn.functional as F

from kd_tutorial.grading import registry
from kd_tutorial.grading.core import ERROR, FAILED, PASSED
from kd_tutorial.losses import distillation_loss

CATALOGUE: dict[str, list] = {}


pytestmark = pytest.mark.usefixtures("one_thread")


def wrong(key: str, fragment: str):
    """Register a wrong implementation of exercise ``key``; the check's message must contain ``fragment``."""
    def deco(fn):
        CATALOGUE.setdefault(key, []).append((fn, fragment))
        return fn
    return deco


# -- ex01.q1: multi-head attention from a packed QKV projection ------------------------------------
def _mha(x, mask, w, b, h, *, scale="head", mask_op="fill", split="heads", packed="blocks", concat=True,
         query_mask=False, softmax_dim=-1):
    B, L, H = x.shape
    d = H // h
    qkv = x @ w.T + b
    if packed == "blocks":
        q, k, v = qkv.chunk(3, dim=-1)
    else:  # [q_h, k_h, v_h] for each head in turn
        q, k, v = (t.flatten(2) for t in qkv.view(B, L, h, 3, d).unbind(3))

    def heads(t):
        if split == "heads":
            return t.reshape(B, L, h, d).permute(0, 2, 1, 3)
        if split == "strided":
            return t.reshape(B, L, d, h).permute(0, 3, 1, 2)
        return t.reshape(B, h, L, d)

    q, k, v = heads(q), heads(k), heads(v)
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / {"head": math.sqrt(d), "d": d, "hidden": math.sqrt(H)}[scale]
    keys = mask[:, None, None, :] if not query_mask else mask[:, None, :, None]
    if mask_op == "fill":
        scores = scores.masked_fill(keys == 0, float("-inf"))
    elif mask_op == "zero":
        scores = scores.masked_fill(keys == 0, 0.0)
    elif mask_op == "inverted":  # the real tokens masked
        scores = scores.masked_fill(keys == 1, float("-inf"))
    elif mask_op == "inverted_add":
        scores = scores + keys * -10000.0
    elif mask_op.startswith("add "):  # "add -1e9": scores + (1 - mask) * -1e9
        scores = scores + (1 - keys) * float(mask_op.split()[1])
    att = scores.softmax(softmax_dim)
    if mask_op == "after":
        att = att * keys
    out = att @ v
    out = out.permute(0, 2, 1, 3).reshape(B, L, H) if concat else out.reshape(B, L, H)
    return out, att


wrong("ex01.q1", "over the queries (dim=-2)")(lambda *a: _mha(*a, softmax_dim=-2))  # was told to mask the keys
wrong("ex01.q1", "over the heads (dim=1)")(lambda *a: _mha(*a, softmax_dim=1))
wrong("ex01.q1", "you masked the real tokens: attention_mask is 1 for a real token")(
    lambda *a: _mha(*a, mask_op="inverted"))
wrong("ex01.q1", "you masked the real tokens: attention_mask is 1 for a real token")(
    lambda *a: _mha(*a, mask_op="inverted_add"))
wrong("ex01.q1", "not by the head dimension itself")(lambda *a: _mha(*a, scale="d"))
wrong("ex01.q1", "divided by sqrt(hidden size)")(lambda *a: _mha(*a, scale="hidden"))
wrong("ex01.q1", "after the softmax")(lambda *a: _mha(*a, mask_op="after"))
wrong("ex01.q1", "scores to 0")(lambda *a: _mha(*a, mask_op="zero"))
wrong("ex01.q1", "padded keys receive attention")(lambda *a: _mha(*a, mask_op="none"))
wrong("ex01.q1", "split along the wrong axis")(lambda *a: _mha(*a, split="strided"))
wrong("ex01.q1", "mixes positions between heads")(lambda *a: _mha(*a, split="flat"))
wrong("ex01.q1", "Q, then K, then V")(lambda *a: _mha(*a, packed="per_head"))
wrong("ex01.q1", "not concatenated per token")(lambda *a: _mha(*a, concat=False))
wrong("ex01.q1", "never the queries")(lambda *a: _mha(*a, query_mask=True))
# the additive version of the same mistake: no nan, the padded queries' rows come out uniform (or nearly unmasked)
wrong("ex01.q1", "you masked the queries, not the keys")(lambda *a: _mha(*a, query_mask=True, mask_op="add -1e9"))
wrong("ex01.q1", "you masked the queries, not the keys")(lambda *a: _mha(*a, query_mask=True, mask_op="add -10000"))
wrong("ex01.q1", "return a pair")(lambda *a: _mha(*a)[0])



def test_ex01_q1_accepts_float64_weights_and_a_list_pair():
    """Weights from a softmax taken in float64 made the check itself fail ("Double did not match Float ... the check
    itself is at fault"), and `return [output, weights]` was told to return a pair; both are the right answer."""
    def in_float64(x, attention_mask, w_qkv, b_qkv, num_heads):
        out, weights = _mha(x.double(), attention_mask, w_qkv.double(), b_qkv.double(), num_heads)
        return out.float(), weights

    def as_list(*args):
        return list(_mha(*args))
    def additive_keys(*args):  # scores + (1 - mask[:, None, None, :]) * -1e9 masks the keys right
        return _mha(*args, mask_op="add -1e9")
    for answer in (in_float64, as_list, additive_keys):
        result = EXERCISES["ex01.q1"].grade(answer)
        assert result.status == PASSED, result.message
    result = EXERCISES["ex01.q1"].grade(lambda *a: [t.double() for t in _mha(*a, mask_op="inverted")])
    assert result.status == FAILED and "you masked the real tokens" in result.message, result.message

# -- ex01.q2: parameters of a student configuration ------------------------------------------------
def _student(teacher, overrides, add_pooling_layer=True, *, bias=1, ln=True, own_positions=True, pooler="flag",
             use_overrides=True, segments=True, own_vocab=True):
    get = (lambda k: overrides.get(k, getattr(teacher, k))) if use_overrides else (lambda k: getattr(teacher, k))
    V, H, L, I = get("vocab_size"), get("hidden_size"), get("num_hidden_layers"), get("intermediate_size")
    P = get("max_position_embeddings") if own_positions else teacher.max_position_embeddings
    T = get("type_vocab_size") if segments else 0
    if not own_vocab:
        V, T = teacher.vocab_size, teacher.type_vocab_size
    norm = 2 * H if ln else 0
    total = (V + P + T) * H + norm
    total += L * (4 * (H * H + bias * H) + norm + H * I + bias * I + I * H + bias * H + norm)
    dense = H * H + bias * H
    total += {"flag": dense if add_pooling_layer else 0, "twice": 2 * dense if add_pooling_layer else 0,
              "always": dense, "never": 0}[pooler]
    return total


wrong("ex01.q2", "your vocabulary is the teacher's")(lambda t, o, add_pooling_layer=True: _student(
    t, o, add_pooling_layer, own_vocab=False))
wrong("ex01.q2", "teacher's count")(lambda t, o, add_pooling_layer=True: _student(t, o, add_pooling_layer,
                                                                                   use_overrides=False))
wrong("ex01.q2", "forgot the biases")(lambda t, o, add_pooling_layer=True: _student(t, o, add_pooling_layer, bias=0))
wrong("ex01.q2", "forgot the LayerNorms")(lambda t, o, add_pooling_layer=True: _student(t, o, add_pooling_layer,
                                                                                         ln=False))
wrong("ex01.q2", "position table has the teacher's length")(
    lambda t, o, add_pooling_layer=True: _student(t, o, add_pooling_layer, own_positions=False))
wrong("ex01.q2", "token-type (segment) embeddings")(
    lambda t, o, add_pooling_layer=True: _student(t, o, add_pooling_layer, segments=False))
wrong("ex01.q2", "counted the pooler twice")(
    lambda t, o, add_pooling_layer=True: _student(t, o, add_pooling_layer, pooler="twice"))
wrong("ex01.q2", "add_pooling_layer=False the model has no pooler")(
    lambda t, o, add_pooling_layer=True: _student(t, o, add_pooling_layer, pooler="always"))
wrong("ex01.q2", "add_pooling_layer=True the model has a pooler")(
    lambda t, o, add_pooling_layer=True: _student(t, o, add_pooling_layer, pooler="never"))


def _student_less(part):
    """The right count less one component, as a learner who forgot it counts."""
    def count(t, o, add_pooling_layer=True):
        H, L, I, P = (o.get(k, getattr(t, k)) for k in ("hidden_size", "num_hidden_layers", "intermediate_size",
                                                          "max_position_embeddings"))
        less = {"out_proj": L * (H * H + H), "ffn_out": L * (I * H + H), "layer_ln": L * 2 * H, "emb_ln": 2 * H,
                "positions": P * H}[part]
        return _student(t, o, add_pooling_layer) - less
    return count


wrong("ex01.q2", "you left out the attention's output dense layer")(_student_less("out_proj"))
wrong("ex01.q2", "you counted one feed-forward linear per layer")(_student_less("ffn_out"))
wrong("ex01.q2", "you counted one LayerNorm per layer")(_student_less("layer_ln"))
wrong("ex01.q2", "you forgot the LayerNorm after the embeddings")(_student_less("emb_ln"))
wrong("ex01.q2", "you forgot the position embeddings")(_student_less("positions"))


@wrong("ex01.q2", "changed its arguments")
def student_count_mutating(teacher, overrides, add_pooling_layer=True):
    for key, value in overrides.items():
        setattr(teacher, key, value)  # the caller's teacher config is now the student's
    overrides.clear()
    return _student(teacher, overrides, add_pooling_layer)


# -- ex02.q1: softmax with temperature -----------------------------------------------------
wrong("ex02.q1", "multiplied the logits by T")(lambda z, T=1.0: torch.softmax(z * T, -1))
wrong("ex02.q1", "temperature has no effect")(lambda z, T=1.0: torch.softmax(z, -1))
wrong("ex02.q1", "after the softmax")(lambda z, T=1.0: torch.softmax(z, -1) / T)
wrong("ex02.q1", "log-probabilities")(lambda z, T=1.0: torch.log_softmax(z / T, -1))
wrong("ex02.q1", "wrong dimension")(lambda z, T=1.0: torch.softmax(z / T, 0))
wrong("ex02.q1", "nan/inf for large logits")(lambda z, T=1.0: torch.exp(z / T) / torch.exp(z / T).sum(-1, keepdim=True))
wrong("ex02.q1", "subtract the largest of z / T, not of z")(  # stable at T = 1 only: nan at T = 2 for z = 1000
    lambda z, T=1.0: (lambda e: e / e.sum(-1, keepdim=True))(torch.exp(z / T - z.max(-1, keepdim=True).values)))
wrong("ex02.q1", "do not sum to 1 over the classes")(  # one softmax over the whole batch, not one per row
    lambda z, T=1.0: torch.softmax((z / T).flatten(), 0).reshape(z.shape))
wrong("ex02.q1", "should return a torch.Tensor")(lambda z, T=1.0: torch.softmax(z / T, -1).tolist())

# -- ex02.q2: entropy ----------------------------------------------------------------------------
wrong("ex02.q2", "in bits")(lambda p: -torch.special.xlogy(p, p).sum(-1) / math.log(2))
wrong("ex02.q2", "base-10 logs")(lambda p: -(torch.special.xlogy(p, p) / math.log(10)).sum(-1))
wrong("ex02.q2", "forgot the minus sign")(lambda p: torch.special.xlogy(p, p).sum(-1))
wrong("ex02.q2", "averaged over the classes")(lambda p: -torch.special.xlogy(p, p).mean(-1))
wrong("ex02.q2", "nan when a probability is 0")(lambda p: -(p * p.log()).sum(-1))
wrong("ex02.q2", "expected -sum p log p")(  # eps inside the log: about 5e-4 off, a near miss the check must see
    lambda p: -(p * (p + 1e-4).log()).sum(-1))
wrong("ex02.q2", "per row")(lambda p: -torch.special.xlogy(p, p).sum())


# -- ex03.q1: soft loss -------------------------------------------------------------------------
def _kd(s, t, T, reduction="batchmean", factor=None, s_T=True, t_T=True, inp="log", swap=False, detach=True):
    t = t.detach() if detach else t
    if swap:
        s, t = t, s
    zs = s / T if s_T else s
    zt = t / T if t_T else t
    x = {"log": F.log_softmax(zs, -1), "prob": F.softmax(zs, -1), "raw": zs}[inp]
    with warnings.catch_warnings():  # reduction="mean" warns: it is the bug under test
        warnings.simplefilter("ignore")
        return F.kl_div(x, F.softmax(zt, -1), reduction=reduction) * (T * T if factor is None else factor)


wrong("ex03.q1", "4x too small on a batch of 4 classes (C times for C classes): did you use reduction='mean'")(
    lambda s, t, T: _kd(s, t, T, "mean"))
wrong("ex03.q1", "3x too large on a batch of 3 reviews (B times for a batch of B)")(lambda s, t, T: _kd(s, t, T, "sum"))
wrong("ex03.q1", "T^2 too small")(lambda s, t, T: _kd(s, t, T, factor=1.0))
wrong("ex03.q1", "you multiplied by T;")(lambda s, t, T: _kd(s, t, T, factor=T))
wrong("ex03.q1", "not softmax")(lambda s, t, T: _kd(s, t, T, inp="prob"))
wrong("ex03.q1", "your softmax runs over the batch (dim=0)")(
    lambda s, t, T: F.kl_div(F.log_softmax(s / T, 0), F.softmax(t / T, 0), reduction="batchmean") * T * T)
wrong("ex03.q1", "raw logits")(lambda s, t, T: _kd(s, t, T, inp="raw"))
wrong("ex03.q1", "KL(student || teacher)")(lambda s, t, T: _kd(s, t, T, swap=True))
wrong("ex03.q1", "divide the student's logits by T too")(lambda s, t, T: _kd(s, t, T, s_T=False))
wrong("ex03.q1", "divide the teacher's logits by T too")(lambda s, t, T: _kd(s, t, T, t_T=False))
wrong("ex03.q1", "soft cross-entropy")(
    lambda s, t, T: -(F.softmax(t / T, -1) * F.log_softmax(s / T, -1)).sum(-1).mean() * T * T)
wrong("ex03.q1", "seed article")(lambda s, t, T: F.cross_entropy(s, F.softmax(t, -1)))
# a loss a couple of percent off (a rounded constant, an epsilon in a hand-written log) is no correct answer: the
# check compares to the reference, not within a loose band
wrong("ex03.q1", "for a batch where T^2 * KL (batchmean) is")(lambda s, t, T: _kd(s, t, T) * 1.02)
wrong("ex03.q1", "a gradient reaches teacher_logits")(lambda s, t, T: _kd(s, t, T, detach=False))
wrong("ex03.q1", "carries no gradient")(lambda s, t, T: _kd(s, t, T).item())


# -- ex03.q2: full loss ---------------------------------------------------------------------------
def _soft(s, t, T):
    return F.kl_div(F.log_softmax(s / T, -1), F.softmax(t.detach() / T, -1), reduction="batchmean") * T * T


def _hard(s, y):
    """The course's normalisation: cross-entropy summed over labelled rows, divided by all B rows."""
    return F.cross_entropy(s, y, ignore_index=-1, reduction="sum") / len(y)


def _hard_nan_when_unlabelled(s, y):
    m = y != -1
    return F.cross_entropy(s[m], y[m]) * m.sum() / len(y)  # right on mixed batches, nan on an unlabelled one


wrong("ex03.q2", "alpha weights the soft")(lambda s, t, y, T=2.0, a=0.5: (1 - a) * _soft(s, t, T) + a * _hard(s, y))
wrong("ex03.q2", "at T = 1")(lambda s, t, y, T=2.0, a=0.5: a * _soft(s, t, T) + (1 - a) * _hard(s / T, y))
wrong("ex03.q2", "missing its T^2")(lambda s, t, y, T=2.0, a=0.5: a * _soft(s, t, T) / T ** 2 + (1 - a) * _hard(s, y))
wrong("ex03.q2", "labelled rows only")(
    lambda s, t, y, T=2.0, a=0.5: a * _soft(s, t, T) + (1 - a) * F.cross_entropy(s, y, ignore_index=-1))
wrong("ex03.q2", "no hard-label term")(lambda s, t, y, T=2.0, a=0.5: a * _soft(s, t, T))
wrong("ex03.q2", "unlabelled rows (label -1)")(lambda s, t, y, T=2.0, a=0.5: a * _soft(s, t, T) + (1 - a) * F.cross_entropy(s, y))
wrong("ex03.q2", "counts the unlabelled rows (label -1) as class 0")(
    lambda s, t, y, T=2.0, a=0.5: a * _soft(s, t, T) + (1 - a) * _hard(s, y.clamp_min(0)))
wrong("ex03.q2", "hard term must be 0")(
    lambda s, t, y, T=2.0, a=0.5: a * _soft(s, t, T) + (1 - a) * _hard_nan_when_unlabelled(s, y))

wrong("ex03.q2", "carries no gradient to student_logits")(  # a value, but nothing can train on it
    lambda s, t, y, T=2.0, a=0.5: (a * _soft(s, t, T) + (1 - a) * _hard(s, y)).item())
wrong("ex03.q2", "a gradient reaches teacher_logits")(
    lambda s, t, y, T=2.0, a=0.5: a * T * T * F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1),
                                                       reduction="batchmean") + (1 - a) * _hard(s, y))

# q1's soft-term mistakes inside the whole loss, and hard-term mistakes: each named (a review got the generic message)
wrong("ex03.q2", "you computed KL(student || teacher)")(lambda s, t, y, T=2.0, a=0.5: a * T * T * F.kl_div(
    F.log_softmax(t.detach() / T, -1), F.softmax(s / T, -1), reduction="batchmean") + (1 - a) * _hard(s, y))
wrong("ex03.q2", "your soft term is 3x too small on a batch of 3 classes (C times for C classes)")(
    lambda s, t, y, T=2.0, a=0.5: a * T * T * F.kl_div(F.log_softmax(s / T, -1), F.softmax(t.detach() / T, -1),
                                                       reduction="mean") + (1 - a) * _hard(s, y))
wrong("ex03.q2", "your soft term is the soft cross-entropy")(lambda s, t, y, T=2.0, a=0.5: a * T * T * -(
    F.softmax(t.detach() / T, -1) * F.log_softmax(s / T, -1)).sum(-1).mean() + (1 - a) * _hard(s, y))
wrong("ex03.q2", "not divided by the batch size: divide it by B")(lambda s, t, y, T=2.0, a=0.5: (
    a * _soft(s, t, T) + (1 - a) * F.cross_entropy(s, y, ignore_index=-1, reduction="sum")))
wrong("ex03.q2", "F.nll_loss expects log-probabilities, you passed raw logits")(lambda s, t, y, T=2.0, a=0.5: (
    a * _soft(s, t, T) + (1 - a) * F.nll_loss(s, y, ignore_index=-1, reduction="sum") / len(y)))
wrong("ex03.q2", "only the soft term is scaled by T^2")(
    lambda s, t, y, T=2.0, a=0.5: a * _soft(s, t, T) + (1 - a) * T * T * _hard(s / T, y))


def test_ex03_q2_names_a_crash_on_label_minus_one_in_one_sentence():
    """The crash's own text ends in a full stop: the message went on with another (out of bounds..)."""
    result = EXERCISES["ex03.q2"].grade(
        lambda s, t, y, T=2.0, a=0.5: a * _soft(s, t, T) + (1 - a) * F.cross_entropy(s, y))
    assert result.status == FAILED and "out of bounds. Unlabelled rows add 0" in result.message, result.message
    assert "bounds.." not in result.message, result.message


# -- ex03.q3: gradient accumulation ---------------------------------------------------------------------
def _accumulate(student, optimizer, x, t, y, k, T=2.0, a=0.5, *, divide=True, zero="once", step="once",
                hard=_hard, item=True):
    if zero == "once":
        optimizer.zero_grad()
    total = 0.0
    for xs, ts, ys in zip(x.chunk(k), t.chunk(k), y.chunk(k)):
        if zero == "every":
            optimizer.zero_grad()
        s = student(xs)
        loss = a * _soft(s, ts, T) + (1 - a) * hard(s, ys)
        if divide:
            loss = loss / k
        loss.backward()
        total += loss.item() if item else loss  # item=False: `total += loss` keeps tensors
        if step == "every":
            optimizer.step()
    if step == "once":
        optimizer.step()
    return total


wrong("ex03.q3", "4x too large: divide each micro-batch's loss by K")(lambda *a: _accumulate(*a, divide=False))
wrong("ex03.q3", "averages over the labelled rows of each micro-batch")(
    lambda *a: _accumulate(*a, hard=lambda s, y: F.cross_entropy(s, y, ignore_index=-1)))


@wrong("ex03.q3", "inputs.split(4) cuts pieces of 4 rows, inputs.chunk(4) cuts 4 pieces")
def accumulates_over_split_not_chunk(student, optimizer, x, t, y, k, T=2.0, a=0.5):
    optimizer.zero_grad()
    total = 0.0
    for xs, ts, ys in zip(x.split(k), t.split(k), y.split(k)):  # pieces of k rows, not k pieces
        s = student(xs)
        loss = (a * _soft(s, ts, T) + (1 - a) * _hard(s, ys)) / k
        loss.backward()
        total += loss.item()
    optimizer.step()
    return total


wrong("ex03.q3", "after every micro-batch")(lambda *a: _accumulate(*a, step="every"))
wrong("ex03.q3", "zeroed the gradients in every micro-batch")(lambda *a: _accumulate(*a, zero="every"))
wrong("ex03.q3", "left over from the previous step leaked")(lambda *a: _accumulate(*a, zero="never"))
wrong("ex03.q3", "did not move")(lambda *a: _accumulate(*a, step="never"))
wrong("ex03.q3", "loss you return is 4x too large")(lambda *a: 4 * _accumulate(*a))


wrong("ex03.q3", "returned the loss as a tensor that still carries its autograd graph: return a float (loss.item())")(
    lambda *a: _accumulate(*a, item=False))  # the update is right; the statement asks for the loss as a float


# -- ex03.q4: reading a sweep ---------------------------------------------------------------------------
def _pick(sweep, by):
    r = max(sweep, key=lambda r: r[by])
    return r["temperature"], r["alpha"]


wrong("ex03.q4", "chose on the test accuracy")(lambda sweep, default=(2.0, 0.5): _pick(sweep, "test_acc"))
wrong("ex03.q4", "no more than the interval of that lead")(lambda sweep, default=(2.0, 0.5): _pick(sweep, "val_acc"))
wrong("ex03.q4", "largest temperature")(
    lambda sweep, default=(2.0, 0.5): max((r["temperature"], r["alpha"]) for r in sweep))
wrong("ex03.q4", "you kept the default")(lambda sweep, default=(2.0, 0.5): tuple(default))
wrong("ex03.q4", "return a pair")(lambda sweep, default=(2.0, 0.5): max(sweep, key=lambda r: r["val_acc"]))


@wrong("ex03.q4", "is not in this sweep, so there is nothing to keep")
def keeps_a_default_the_sweep_lacks(sweep, default=(2.0, 0.5)):
    from kd_tutorial.grading.ex03 import _choose
    if all((r["temperature"], r["alpha"]) != tuple(default) for r in sweep):
        return tuple(default)
    return _choose(sweep, default)



@wrong("ex03.q4", "reordered the caller's list (sweep.sort(...) sorts it in place)")  # was "changed the sweep's rows"
def sorts_the_sweep_in_place(sweep, default=(2.0, 0.5)):
    from kd_tutorial.grading.ex03 import _choose
    sweep.sort(key=lambda r: r["val_acc"], reverse=True)
    return _choose(sweep, default)


@wrong("ex03.q4", "changed the sweep's rows")
def rounds_the_rows(sweep, default=(2.0, 0.5)):
    from kd_tutorial.grading.ex03 import _choose
    for r in sweep:
        r["val_acc"] = round(r["val_acc"], 2)
    return _choose(sweep, default)

# -- ex04.q1: teacher logits ----------------------------------------------------------------------------
def _tl(teacher, batch, eval_=True, no_grad=True, mask=True, probs=False, whole=False):
    if eval_:
        teacher.eval()
    kwargs = {"input_ids": batch["input_ids"]}
    if mask:
        kwargs["attention_mask"] = batch["attention_mask"]
    with torch.set_grad_enabled(not no_grad):
        out = teacher(**kwargs)
    if whole:
        return out
    return out.logits.softmax(-1) if probs else out.logits


wrong("ex04.q1", "still in training mode; call teacher.eval() before predicting (teacher.eval without ()")(
    lambda t, b: _tl(t, b, eval_=False))
wrong("ex04.q1", "eval() before predicting (not after)")(lambda t, b: (_tl(t, b, eval_=False), t.eval())[0])
wrong("ex04.q1", "carry a gradient")(lambda t, b: _tl(t, b, no_grad=False))
wrong("ex04.q1", "not probabilities")(lambda t, b: _tl(t, b, probs=True))
wrong("ex04.q1", "pass the attention_mask")(lambda t, b: _tl(t, b, mask=False))
wrong("ex04.q1", "not the whole model output")(lambda t, b: _tl(t, b, whole=True))
wrong("ex04.q1", "autograd on: .detach() afterwards comes too late")(  # eval, but no no_grad: the graph is built
    lambda t, b: t.eval()(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.detach())


@wrong("ex04.q1", "you passed the batch's labels to the teacher (teacher(**batch) does)")
def teacher_logits_from_the_whole_batch(teacher, batch):
    teacher.eval()
    with torch.no_grad():
        return teacher(**batch).logits


# -- ex04.q2: padding waste of a batch order -----------------------------------------------------------------
def _waste(word_counts, batch_size, max_length=512, *, specials=2, cap_words=False, global_max=False, mean=False,
           pad_to_max_length=False, drop_last=False):
    lengths = []
    for n in word_counts:
        lengths.append(min(n, max_length) + specials if cap_words else min(n + specials, max_length))
    stop = len(lengths) - len(lengths) % batch_size if drop_last else len(lengths)
    batches = [lengths[i:i + batch_size] for i in range(0, stop, batch_size)]
    fractions, pad, total = [], 0, 0
    for batch in batches:
        width = max_length if pad_to_max_length else max(lengths) if global_max else max(batch)
        fractions.append(sum(width - x for x in batch) / (width * len(batch)))
        pad += sum(width - x for x in batch)
        total += width * len(batch)
    return sum(fractions) / len(fractions) if mean else pad / total


wrong("ex04.q2", "[CLS] and [SEP] twice")(lambda w, b, m=512: _waste([n + 2 for n in w], b, m))
wrong("ex04.q2", "forgot [CLS] and [SEP]")(lambda w, b, m=512: _waste(w, b, m, specials=0))
wrong("ex04.q2", "max_length counts the special tokens too")(lambda w, b, m=512: _waste(w, b, m, cap_words=True))
wrong("ex04.q2", "longest review overall")(lambda w, b, m=512: _waste(w, b, m, global_max=True))
wrong("ex04.q2", "averaged the per-batch fractions")(lambda w, b, m=512: _waste(w, b, m, mean=True))
wrong("ex04.q2", "not a percentage")(lambda w, b, m=512: 100 * _waste(w, b, m))
wrong("ex04.q2", "padded every review to max_length")(lambda w, b, m=512: _waste(w, b, m, pad_to_max_length=True))


def _padding(w, b, m=512, full_last=False):
    """(padding positions, all positions, real tokens) of the given order; ``full_last``: the short last batch
    counted as ``b`` rows."""
    lengths = [min(n + 2, m) for n in w]
    batches = [lengths[i:i + b] for i in range(0, len(lengths), b)]
    total = sum((b if full_last else len(x)) * max(x) for x in batches)
    return total - sum(lengths), total, sum(lengths)


wrong("ex04.q2", "you sorted the reviews first")(lambda w, b, m=512: _waste(sorted(w), b, m))
wrong("ex04.q2", "counted the last, shorter batch as batch_size rows")(
    lambda w, b, m=512: (lambda pad, total, real: pad / total)(*_padding(w, b, m, full_last=True)))
wrong("ex04.q2", "you returned the number of padding positions")(lambda w, b, m=512: _padding(w, b, m)[0])
wrong("ex04.q2", "you divided the padding by the real tokens")(
    lambda w, b, m=512: (lambda pad, total, real: pad / real)(*_padding(w, b, m)))
wrong("ex04.q2", "left out the last, shorter batch")(lambda w, b, m=512: _waste(w, b, m, drop_last=True))


# -- ex04.q3: length-grouped batches ----------------------------------------------------------------------
def _grouped(lengths, bs, seed, drop_last=False, shuffle=True, sort=True, rng=None):
    order = sorted(range(len(lengths)), key=lambda i: lengths[i]) if sort else list(range(len(lengths)))
    batches = [order[i:i + bs] for i in range(0, len(order), bs)]
    if drop_last and len(batches[-1]) < bs:
        batches = batches[:-1]
    if shuffle:
        (rng or random.Random(seed)).shuffle(batches)
    return batches


wrong("ex04.q3", "drop the last")(lambda ls, bs, seed=0: _grouped(ls, bs, seed, drop_last=True))
wrong("ex04.q3", "in order of length")(lambda ls, bs, seed=0: _grouped(ls, bs, seed, shuffle=False))
wrong("ex04.q3", "about as much as random")(lambda ls, bs, seed=0: _grouped(ls, bs, seed, sort=False))


@wrong("ex04.q3", "your grouping cut the padding from 61% (random batches) to 17% of the positions, not enough")
def grouped_within_pools_of_a_hundred(lengths, bs, seed=0, pool=100):  # a bucket iterator with small pools
    rng, order, batches = random.Random(seed), list(range(len(lengths))), []
    rng.shuffle(order)
    for i in range(0, len(order), pool):
        chunk = sorted(order[i:i + pool], key=lengths.__getitem__)
        batches += [chunk[j:j + bs] for j in range(0, len(chunk), bs)]
    rng.shuffle(batches)
    return batches


wrong("ex04.q3", "more than one batch")(lambda ls, bs, seed=0: _grouped(ls, bs, seed) + [[0]])
wrong("ex04.q3", "your batches hold the reviews' lengths, not their indices")(
    lambda ls, bs, seed=0: [[ls[i] for i in b] for b in _grouped(ls, bs, seed)])
wrong("ex04.q3", "same seed gave different batches")(
    lambda ls, bs, seed=0: _grouped(ls, bs, seed, rng=random.Random()))
wrong("ex04.q3", "seeds 0 and 1 gave the same batches")(lambda ls, bs, seed=0: _grouped(ls, bs, 0))


# -- ex04.q4: label order ---------------------------------------------------------------------------------
def _align(logits, teacher_labels, data_labels, *, lower=True, inverse=False, rows=False, check=True):
    t = [n.lower() for n in teacher_labels] if lower else list(teacher_labels)
    d = [n.lower() for n in data_labels] if lower else list(data_labels)
    if check and sorted(t) != sorted(d):
        raise ValueError("label sets differ")
    order = [d.index(n) for n in t] if inverse else [t.index(n) for n in d]
    return logits[order] if rows else logits[:, order]


wrong("ex04.q4", "still in the teacher's order")(lambda z, t, d: z)
wrong("ex04.q4", "inverse permutation")(lambda z, t, d: _align(z, t, d, inverse=True))
wrong("ex04.q4", "differ only in case")(lambda z, t, d: _align(z, t, d, lower=False, check=False))
wrong("ex04.q4", "reordered the rows")(lambda z, t, d: z if len(t) == 2 and t[0].lower() == d[0].lower()
                                       else _align(z, t, d, rows=len(t) == 3))
wrong("ex04.q4", "returned logits anyway")(
    lambda z, t, d: z[:, [([n.lower() for n in t] + [n.lower() for n in d]).index(n.lower()) % z.shape[1] for n in d]]
    if len(d) == z.shape[1] else z)
wrong("ex04.q4", "returned logits anyway")(  # no label-set check: a teacher with an extra class loses it silently
    lambda z, t, d: z[:, [[n.lower() for n in t].index(n.lower()) for n in d]])
wrong("ex04.q4", "raise a ValueError")(  # a dict lookup: a KeyError, not a refusal that names the two label sets
    lambda z, t, d: z[:, [{n.lower(): i for i, n in enumerate(t)}[n.lower()] for n in d]])


# -- ex05.q1: the distillation step ------------------------------------------------------------------------
def _step(student, teacher, batch, optimizer, T=2.0, alpha=0.5, *, eval_=True, no_grad=True, zero=True, loss="hinton",
          student_train=True, whole_batch=False, item=True):
    student.train(student_train)
    if eval_ is True:
        teacher.eval()
    inputs = batch if whole_batch else {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.set_grad_enabled(not no_grad):
        t = teacher(**inputs).logits
    if eval_ == "after":  # switched off, but only once the soft labels were computed with dropout
        teacher.eval()
    s = student(**inputs).logits
    if loss == "seed":
        value = F.cross_entropy(s, F.softmax(t, -1))
    elif loss == "soft_only":
        value = alpha * _soft(s, t, T)
    elif loss == "swapped":
        value = distillation_loss(t, s, batch["labels"], T, alpha)
    elif loss == "labelled_mean":
        value = alpha * _soft(s, t, T) + (1 - alpha) * F.cross_entropy(s, batch["labels"], ignore_index=-1)
    elif loss == "kl_swapped":  # KL(student || teacher): the teacher's probabilities taken as the prediction
        value = alpha * _soft(t, s, T) + (1 - alpha) * _hard(s, batch["labels"])
    elif loss == "alpha_swapped":
        value = (1 - alpha) * _soft(s, t, T) + alpha * _hard(s, batch["labels"])
    elif loss == "no_t2":
        value = alpha * _soft(s, t, T) / (T * T) + (1 - alpha) * _hard(s, batch["labels"])
    elif loss == "no_temperature":
        value = alpha * _soft(s, t, 1.0) + (1 - alpha) * _hard(s, batch["labels"])
    else:
        value = distillation_loss(s, t, batch["labels"], T, alpha)
    if zero is True:
        optimizer.zero_grad()
    value.backward()
    if zero == "before_step":  # throws away the gradients backward() just computed
        optimizer.zero_grad()
    optimizer.step()
    return value.item() if item else value  # item=False: `return loss`, the tensor with its graph


@wrong("ex05.q1", "a gradient reached the teacher")
def step_as_published(student, teacher, batch, optimizer, temperature=2.0, alpha=0.5):
    """The broken step, unchanged."""
    student.train()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    teacher_logits = teacher(**inputs).logits
    student_logits = student(**inputs).logits
    loss = F.cross_entropy(student_logits, F.softmax(teacher_logits, dim=-1))
    loss.backward()
    optimizer.step()
    return loss.item()


wrong("ex05.q1", "autograd on: wrap it in torch.no_grad()")(lambda *a: _step(*a, no_grad=False))


wrong("ex05.q1", "`distillation_step` returned the loss as a tensor that still carries its autograd graph")(
    lambda *a: _step(*a, item=False))  # every bug fixed, but the statement asks for the loss as a float
wrong("ex05.q1", "still in training mode")(lambda *a: _step(*a, eval_=False))
wrong("ex05.q1", "seed article")(lambda *a: _step(*a, loss="seed"))
wrong("ex05.q1", "no hard-label term")(lambda *a: _step(*a, loss="soft_only"))
wrong("ex05.q1", "gradients accumulate")(lambda *a: _step(*a, zero=False))
wrong("ex05.q1", "the student ran in eval mode")(lambda *a: _step(*a, student_train=False))
wrong("ex05.q1", "no gradient reaches the student: its logits go first")(lambda *a: _step(*a, loss="swapped"))
wrong("ex05.q1", "averaged the hard term over the labelled reviews only")(lambda *a: _step(*a, loss="labelled_mean"))
wrong("ex05.q1", "pass the models only input_ids and attention_mask")(lambda *a: _step(*a, whole_batch=True))
wrong("ex05.q1", "call teacher.eval() before its forward pass, not after")(lambda *a: _step(*a, eval_="after"))
wrong("ex05.q1", "the student never moved")(lambda *a: _step(*a, zero="before_step"))
wrong("ex05.q1", "you swapped teacher and student in the soft term")(lambda *a: _step(*a, loss="kl_swapped"))
wrong("ex05.q1", "alpha weights the soft term")(lambda *a: _step(*a, loss="alpha_swapped"))
wrong("ex05.q1", "your soft term is missing its T^2 factor")(lambda *a: _step(*a, loss="no_t2"))
wrong("ex05.q1", "your soft term has no temperature")(lambda *a: _step(*a, loss="no_temperature"))
wrong("ex05.q1", "your step ignores temperature/alpha")(  # right at the defaults only: the settings never reach the loss
    lambda student, teacher, batch, optimizer, temperature=2.0, alpha=0.5: _step(student, teacher, batch, optimizer))


def test_ex05_q1_accepts_a_step_that_pops_the_labels_off_the_batch():
    """`labels = batch.pop("labels")` (the Trainer idiom) changes no tensor, and was refused as "changed its argument
    `batch['labels']` in place (an operation such as `/=`...)"; relabelling the caller's tensor stays refused."""
    def distillation_step(student, teacher, batch, optimizer, temperature=2.0, alpha=0.5):
        labels = batch.pop("labels")
        batch.pop("index", None)
        return _step(student, teacher, batch | {"labels": labels}, optimizer, temperature, alpha)
    result = EXERCISES["ex05.q1"].grade(distillation_step)
    assert result.status == PASSED, result.message
    result = EXERCISES["ex05.q1"].grade(_relabels_the_batch)
    assert result.status == FAILED and "changed its argument `batch['labels']` in place" in result.message


@wrong("ex05.q1", "changed its argument `batch['labels']` in place")
def _relabels_the_batch(student, teacher, batch, optimizer, T=2.0, alpha=0.5):
    batch["labels"][batch["labels"] == -1] = -100  # the caller's batch, changed for good
    return _step(student, teacher, batch | {"labels": batch["labels"].masked_fill(batch["labels"] == -100, -1)},
                 optimizer, T, alpha)


# -- ex05.q2: DistilBERT-style init ---------------------------------------------------------------------------
def _init(teacher, layer_map, *, first_k=False, emb=True, pooler=True, share=False, inplace=False, head=False):
    from transformers import BertForSequenceClassification
    if inplace:
        teacher.bert.encoder.layer = torch.nn.ModuleList([teacher.bert.encoder.layer[i] for i in layer_map])
        teacher.config.num_hidden_layers = len(layer_map)
        return teacher
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layer_map)
    student = BertForSequenceClassification(config)
    if share:
        student.bert.encoder.layer = torch.nn.ModuleList([teacher.bert.encoder.layer[i] for i in layer_map])
    else:
        for j, i in enumerate(range(len(layer_map)) if first_k else layer_map):
            student.bert.encoder.layer[j].load_state_dict(teacher.bert.encoder.layer[i].state_dict())
    if emb:
        student.bert.embeddings.load_state_dict(teacher.bert.embeddings.state_dict())
    if pooler:
        student.bert.pooler.load_state_dict(teacher.bert.pooler.state_dict())
    if head:
        student.classifier.load_state_dict(teacher.classifier.state_dict())
    return student


wrong("ex05.q2", "you copied teacher layers [0, 1]")(lambda t, m: _init(t, m, first_k=True))
wrong("ex05.q2", "copy the embeddings")(lambda t, m: _init(t, m, emb=False))
wrong("ex05.q2", "copy the pooler")(lambda t, m: _init(t, m, pooler=False))
wrong("ex05.q2", "shares tensors with the teacher")(lambda t, m: _init(t, m, share=True))
wrong("ex05.q2", "modified the teacher")(lambda t, m: _init(t, m, inplace=True))
wrong("ex05.q2", "for layer_map=[1, 3] you copied teacher layers [0, 2]")(  # every other layer, whatever layer_map says
    lambda t, m: _init(t, [2 * j for j in range(len(m))]))


@wrong("ex05.q2", "(and config.num_hidden_layers = 2), got 2")
def student_from_a_deepcopy_with_its_layers_cut(teacher, layer_map):
    """The teacher deep-copied and its layer list cut to layer_map, but its config still says 4 layers."""
    student = copy.deepcopy(teacher)
    student.bert.encoder.layer = torch.nn.ModuleList([student.bert.encoder.layer[i] for i in layer_map])
    student.classifier.reset_parameters()  # a new head, as asked
    return student


@wrong("ex05.q2", "student layer 1 is not a copy of any teacher layer")
def student_with_its_last_layer_left_uncopied(teacher, layer_map):
    student = _init(teacher, layer_map)
    student.bert.encoder.layer[-1].apply(student._init_weights)  # the copy loop stopped one layer short
    return student
wrong("ex05.q2", "you copied the classification head")(lambda t, m: _init(t, m, head=True))


def test_ex05_q2_does_not_say_distilbert_kept_every_other_layer():
    """Notebook 05 says DistilBERT's script took layers 0, 2, 4, 7, 9, 11: the success message and the exercise's
    statement said it kept every other layer of BERT."""
    import json
    from pathlib import Path
    result = EXERCISES["ex05.q2"].grade(reference_solution("ex05.q2"))
    assert result.status == PASSED and "a subset of its teacher's layers" in result.message, result.message
    for folder in ("exercises", "solutions"):
        nb = json.loads((Path(__file__).parent.parent / folder / "05_distillation.ipynb").read_text(encoding="utf-8"))
        text = "".join(next(c for c in nb["cells"] if c.get("id") == "ex05-q2-statement")["source"])
        assert "every other layer" not in text and "0, 2, 4, 7, 9, 11" in text, (folder, text)


# -- ex06: timing --------------------------------------------------------------------------------------------
def _latency(model, batch, sync=lambda: None, warmup=3, repeats=10, *, do_warmup=True, do_sync=True, unit=1.0,
             per_call=True):
    if do_warmup:
        for _ in range(warmup):
            model(**batch)
    if do_sync:
        sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        model(**batch)
    if do_sync:
        sync()
    elapsed = (time.perf_counter() - t0) * unit
    return elapsed / repeats if per_call else elapsed


wrong("ex06.q1", "Call sync() before starting the clock")(lambda *a: _latency(*a, do_sync=False))
wrong("ex06.q1", "warm-up calls ended up inside your timed region")(lambda *a: _latency(*a, do_warmup=False))
wrong("ex06.q1", "not milliseconds")(lambda *a: _latency(*a, unit=1000.0))
wrong("ex06.q1", "not nanoseconds: time.perf_counter_ns() counts nanoseconds")(lambda *a: _latency(*a, unit=1e9))

# range(repeats + 1) timed calls, divided by repeats: one call too many
wrong("ex06.q1", "one too many: make range(warmup) untimed calls, then range(repeats) timed ones")(
    lambda m, b, sync=lambda: None, warmup=3, repeats=10: _latency(m, b, sync, warmup, repeats + 1) * (repeats + 1)
    / repeats)
wrong("ex06.q1", "total time of all repeats")(lambda *a: _latency(*a, per_call=False))
wrong("ex06.q1", "; expected 10.0 ms")(  # synced right, divided by repeats twice: no diagnosis fits, the values do
    lambda m, b, sync=lambda: None, warmup=3, repeats=10: _latency(m, b, sync, warmup, repeats) / repeats)
wrong("ex06.q1", "the time per review: return the seconds per call of model(**batch)")(
    lambda m, b, *a: _latency(m, b, *a) / len(b["input_ids"]))
wrong("ex06.q2", "student time / teacher time")(
    lambda t, s, mk, sizes, sync=lambda: None: {b: _latency(s, mk(b), sync) / _latency(t, mk(b), sync) for b in sizes})
wrong("ex06.q2", "barely change with the batch size")(
    lambda t, s, mk, sizes, sync=lambda: None: {b: _latency(t, mk(1), sync) / _latency(s, mk(1), sync) for b in sizes})
wrong("ex06.q2", "Likely causes: timings without warm-up or sync()")(  # one cold call per model and size: no warm-up
    lambda t, s, mk, sizes, sync=lambda: None: {b: _latency(t, mk(b), sync, do_warmup=False, repeats=1)
                                                / _latency(s, mk(b), sync, do_warmup=False, repeats=1) for b in sizes})
wrong("ex06.q2", "with the keys")(lambda t, s, mk, sizes, sync=lambda: None: [1.0 for _ in sizes])
wrong("ex06.q2", "you timed the teacher once, at batch size 1")(
    lambda t, s, mk, sizes, sync=lambda: None: (lambda teacher: {b: teacher / _latency(s, mk(b), sync) for b in sizes})(
        _latency(t, mk(1), sync)))
wrong("ex06.q2", "you timed the student once, at batch size 1")(
    lambda t, s, mk, sizes, sync=lambda: None: (lambda student: {b: _latency(t, mk(b), sync) / student for b in sizes})(
        _latency(s, mk(1), sync)))
wrong("ex06.q2", "the teacher's time per review (latency / batch size) by the student's time per batch")(
    lambda t, s, mk, sizes, sync=lambda: None: {b: _latency(t, mk(b), sync) / b / _latency(s, mk(b), sync)
                                                for b in sizes})
wrong("ex06.q2", "the teacher's time per batch by the student's time per review (latency / batch size)")(
    lambda t, s, mk, sizes, sync=lambda: None: {b: _latency(t, mk(b), sync) / (_latency(s, mk(b), sync) / b)
                                                for b in sizes})
wrong("ex06.q2", "the percentage of time saved, 100 x (1 - student / teacher)")(
    lambda t, s, mk, sizes, sync=lambda: None: {b: 100 * (1 - _latency(s, mk(b), sync) / _latency(t, mk(b), sync))
                                                for b in sizes})
wrong("ex06.q2", "(teacher - student) / student, which is the speed-up - 1")(
    lambda t, s, mk, sizes, sync=lambda: None: {b: (_latency(t, mk(b), sync) - _latency(s, mk(b), sync))
                                                / _latency(s, mk(b), sync) for b in sizes})
wrong("ex06.q2", "only your speed-up for batch size 1, the first one measured, is off (2.31, not 1.19)")(
    lambda t, s, mk, sizes, sync=lambda: None: {b: _latency(t, mk(b), sync, warmup=0)  # no warm-up at all
                                                / _latency(s, mk(b), sync, warmup=0) for b in sizes})


@wrong("ex06.q1", "your clock did not see the wait")
def latency_on_cpu_time(model, batch, sync=lambda: None, warmup=3, repeats=10):
    for _ in range(warmup):
        model(**batch)
    sync()
    t0 = time.process_time()  # CPU time: blind to waiting for the device
    for _ in range(repeats):
        model(**batch)
    sync()
    return (time.process_time() - t0) / repeats


@wrong("ex06.q1", "your clock was read while the work was still queued, and the sync() after the reading came too late")
def latency_with_the_sync_after_each_reading(model, batch, sync=lambda: None, warmup=3, repeats=10):
    for _ in range(warmup):
        model(**batch)
    sync()
    total = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(**batch)
        total += time.perf_counter() - t0  # read while the call's work is still queued
        sync()
    return total / repeats


@wrong("ex06.q1", "with repeats=9 your clock timed one span of 10 calls: time `repeats` calls")
def latency_of_ten_calls_whatever_repeats_is(model, batch, sync=lambda: None, warmup=3, repeats=10):
    for _ in range(warmup):
        model(**batch)
    sync()
    t0 = time.perf_counter()
    for _ in range(10):  # right when repeats=10, and still the right latency otherwise: but not `repeats` calls
        model(**batch)
    sync()
    return (time.perf_counter() - t0) / 10


@wrong("ex06.q1", "it was called 55 times, and you measured 100.0 ms per call, not 10.0 ms")
def latency_with_timeit_repeat_undivided(model, batch, sync=lambda: None, warmup=3, repeats=10):
    import timeit
    for _ in range(warmup):
        model(**batch)
    sync()

    def run():
        model(**batch)
        sync()
    return min(timeit.repeat(run, number=repeats))  # the time of `repeats` calls: not divided by repeats


def _latency_on_a_saved_clock(clock=time.perf_counter):  # runs when this module is imported: the real clock
    def measure_latency(model, batch, sync=lambda: None, warmup=3, repeats=10):
        for _ in range(warmup):
            model(**batch)
        sync()
        t0 = clock()  # the closure keeps the machine's clock: the check cannot redirect it
        for _ in range(repeats):
            model(**batch)
        sync()
        return (clock() - t0) / repeats
    return measure_latency


wrong("ex06.q1", "your clock did not see the wait. Call time.perf_counter() inside the function")(
    _latency_on_a_saved_clock())


@wrong("ex06.q1", "your warm-up ran `repeats` calls: your clock started after 10 model calls with repeats=10 and "
                  "after 9 with repeats=9")
def latency_warmed_up_with_repeats(model, batch, sync=lambda: None, warmup=3, repeats=10):
    for _ in range(repeats):  # typo: the warm-up loop counts `repeats` (enough calls, so the value is right)
        model(**batch)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        model(**batch)
    sync()
    return (time.perf_counter() - t0) / repeats


@wrong("ex06.q1", "your clock started after 10 model calls both with warmup=5 and with warmup=2")
def latency_with_ten_warmup_calls(model, batch, sync=lambda: None, warmup=3, repeats=10):
    for _ in range(10):  # "surely enough": right whenever warmup <= 10, but not `warmup` calls
        model(**batch)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        model(**batch)
    sync()
    return (time.perf_counter() - t0) / repeats


@wrong("ex06.q1", "with repeats=10 your clock timed 20 calls, each on its own: time `repeats` calls")
def latency_of_twenty_calls_timed_one_by_one(model, batch, sync=lambda: None, warmup=3, repeats=10):
    for _ in range(warmup):
        model(**batch)
    sync()
    times = []
    for _ in range(20):  # a fixed count: every call is steady-state on the fakes, so the mean is right
        t0 = time.perf_counter()
        model(**batch)
        sync()
        times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


@wrong("ex06.q1", "with warmup=5 your clock started after only 0 model calls: make the `warmup` warm-up calls before")
def latency_with_timeit_repeat_and_no_warmup(model, batch, sync=lambda: None, warmup=3, repeats=10):
    import timeit

    def run():
        for _ in range(repeats):
            model(**batch)
        sync()
    return min(timeit.repeat(run, number=1, repeat=5)) / repeats  # the cold calls are timed in the first run


_EXTRA_CALLS = {  # correct measurements that call the model more than warmup + repeats times, or time each call
    "timeit.repeat": "    def run():\n        model(**batch)\n        sync()\n"
                     "    return min(timeit.repeat(run, number=repeats)) / repeats\n",
    "torch.utils.benchmark": "    import torch.utils.benchmark as benchmark\n"
                             "    timer = benchmark.Timer(stmt='model(**batch); sync()', globals={'model': model, "
                             "'batch': batch, 'sync': sync})\n"
                             "    return timer.timeit(repeats).mean\n",
    "a look at the output": "    assert model(**batch).logits.shape[0] == batch['input_ids'].shape[0]\n"
                            "    sync()\n    start = time.perf_counter()\n"
                            "    for _ in range(repeats):\n        model(**batch)\n"
                            "    sync()\n    return (time.perf_counter() - start) / repeats\n",
    "timeit.repeat of a loop": "    def run():\n        for _ in range(repeats):\n            model(**batch)\n"
                               "        sync()\n"
                               "    return min(timeit.repeat(run, number=1, repeat=3)) / repeats\n",
    "each call timed on its own": "    times = []\n    for _ in range(repeats):\n"
                                  "        start = time.perf_counter()\n        model(**batch)\n        sync()\n"
                                  "        times.append(time.perf_counter() - start)\n"
                                  "    return sorted(times)[len(times) // 2]\n",
}


@pytest.mark.parametrize("name", sorted(_EXTRA_CALLS))
def test_ex06_a_correct_measurement_with_extra_calls_passes(name):
    """timeit.repeat (5 x repeats calls), torch.utils.benchmark (its own warm-up calls), one more call to look at
    the output, or each call timed on its own: the value is exact, the warm-up came before the clock started and
    `repeats` calls were timed, so the count alone does not fail them."""
    import timeit
    ns = {"timeit": timeit, "time": time}
    exec("def measure_latency(model, batch, sync=lambda: None, warmup=3, repeats=10):\n"
         "    for _ in range(warmup):\n        model(**batch)\n"
         "    sync()\n" + _EXTRA_CALLS[name], ns)
    result = EXERCISES["ex06.q1"].grade(ns["measure_latency"])
    assert result.status == PASSED, result


_WARMUP_TIMED_TOO = {  # correct: every call timed, the warm-up ones left out of the result
    "each call timed, the first warmup dropped": (
        "def measure_latency(model, batch, sync=lambda: None, warmup=3, repeats=10):\n"
        "    times = []\n    for _ in range(warmup + repeats):\n        sync()\n"
        "        start = time.perf_counter()\n        model(**batch)\n        sync()\n"
        "        times.append(time.perf_counter() - start)\n"
        "    return sum(times[warmup:]) / repeats\n"),
    "one clock reading before the warm-up too": (
        "def measure_latency(model, batch, sync=lambda: None, warmup=3, repeats=10):\n"
        "    sync()\n    t0 = time.perf_counter()\n"
        "    for _ in range(warmup):\n        model(**batch)\n"
        "    sync()\n    t1 = time.perf_counter()\n"
        "    for _ in range(repeats):\n        model(**batch)\n"
        "    sync()\n    total = time.perf_counter() - t0\n"
        "    return (total - (t1 - t0)) / repeats\n"),
}


@pytest.mark.parametrize("name", sorted(_WARMUP_TIMED_TOO))
def test_ex06_a_correct_measurement_that_also_times_the_warm_up_passes(name):
    """Timing the warm-up calls as well and leaving them out of the result is right: warmup + repeats calls and an
    exact value (a cold call in the result would show: it is 8 times slower)."""
    ns = {"time": time}
    exec(_WARMUP_TIMED_TOO[name], ns)
    result = EXERCISES["ex06.q1"].grade(ns["measure_latency"])
    assert result.status == PASSED, result


@pytest.mark.parametrize("source", [
    "def measure_latency(model, batch, sync=lambda: None, warmup=3, repeats=10, clock=time.perf_counter):\n"
    "    for _ in range(warmup):\n        model(**batch)\n"
    "    sync()\n    start = clock()\n"
    "    for _ in range(repeats):\n        model(**batch)\n"
    "    sync()\n    return (clock() - start) / repeats\n",
    "class Stopwatch:\n    now = staticmethod(time.perf_counter)\n\n"
    "    def __enter__(self):\n        self.start = self.now()\n        return self\n\n"
    "    def __exit__(self, *exc):\n        self.elapsed = self.now() - self.start\n\n"
    "def measure_latency(model, batch, sync=lambda: None, warmup=3, repeats=10):\n"
    "    for _ in range(warmup):\n        model(**batch)\n"
    "    sync()\n    with Stopwatch() as watch:\n"
    "        for _ in range(repeats):\n            model(**batch)\n"
    "        sync()\n    return watch.elapsed / repeats\n",
    "class Stopwatch:\n    now = time.perf_counter\n\n"  # no staticmethod: a builtin does not bind as a method
    "    def __enter__(self):\n        self.start = self.now()\n        return self\n\n"
    "    def __exit__(self, *exc):\n        self.elapsed = self.now() - self.start\n\n"
    "def measure_latency(model, batch, sync=lambda: None, warmup=3, repeats=10):\n"
    "    for _ in range(warmup):\n        model(**batch)\n"
    "    sync()\n    with Stopwatch() as watch:\n"
    "        for _ in range(repeats):\n            model(**batch)\n"
    "        sync()\n    return watch.elapsed / repeats\n",
], ids=["default argument", "class attribute", "plain class attribute"])
def test_ex06_a_clock_bound_before_the_check_is_redirected(source):
    """perf_counter saved as a default argument or a class attribute, before the check ran: it reads the virtual
    clock during the check, and the learner's bindings are given back afterwards."""
    ns = {"time": time, "__name__": "__main__"}
    exec(source, ns)
    assert EXERCISES["ex06.q1"].grade(ns["measure_latency"]).status == PASSED
    assert ns["measure_latency"].__defaults__[-1] in (time.perf_counter, 10)
    assert "Stopwatch" not in ns or ns["Stopwatch"].now is time.perf_counter
    if "Stopwatch" in ns:  # given back as written: a staticmethod only where the learner wrote one
        assert isinstance(vars(ns["Stopwatch"])["now"], staticmethod) == ("staticmethod" in source)


def _ex06_solution():
    ns = {"torch": torch, "time": time}
    exec(EXERCISES["ex06.q1"].solution_code, ns)
    return ns


def test_ex06_times_the_fakes_on_a_virtual_clock_exactly(monkeypatch):
    """The fakes' latency is known, so a correct measurement must equal it; nothing really sleeps."""
    slept, real_clock = [], time.perf_counter
    monkeypatch.setattr(time, "sleep", lambda s: slept.append(s))
    measure = _ex06_solution()["measure_latency"]
    seen = []

    def spy(model, batch, sync=lambda: None, warmup=3, repeats=10):
        seen.append((measure(model, batch, sync, warmup, repeats), model.latency(int(batch["input_ids"].shape[0]))))
        return seen[-1][0]
    assert EXERCISES["ex06.q1"].grade(spy).status == PASSED
    # two calls (the second with other warmup/repeats values), each exact but for rounding
    assert len(seen) == 2 and all(got == pytest.approx(want, rel=1e-6, abs=0) for got, want in seen)
    assert slept == []
    assert time.perf_counter is real_clock  # given back after the check


@pytest.mark.parametrize("call", ["timeit.timeit(run, number=repeats)", "timeit.Timer(run).timeit(repeats)",
                                  "min(timeit.repeat(run, number=repeats, repeat=1))"])
def test_ex06_a_correct_measurement_with_timeit_passes(call):
    """timeit's functions bound the real perf_counter as a default argument when timeit was imported (Jupyter
    imports it at start): a correct answer read 0.0 ms and was told to use perf_counter, which it did."""
    import timeit
    ns = {"timeit": timeit}
    exec("def measure_latency(model, batch, sync=lambda: None, warmup=3, repeats=10):\n"
         "    for _ in range(warmup):\n        model(**batch)\n"
         "    sync()\n"
         "    def run():\n        model(**batch)\n        sync()\n"
         f"    return {call} / repeats\n", ns)
    assert EXERCISES["ex06.q1"].grade(ns["measure_latency"]).status == PASSED
    assert timeit.timeit.__defaults__[2] is time.perf_counter  # given back after the check


def test_ex06_virtual_clock_reaches_from_imports_and_only_the_checking_thread():
    import threading
    ns = {}
    exec("from time import perf_counter\n"  # a learner who imported the function, not the module
         "def measure_latency(model, batch, sync=lambda: None, warmup=3, repeats=10):\n"
         "    for _ in range(warmup):\n        model(**batch)\n"
         "    sync()\n    start = perf_counter()\n"
         "    for _ in range(repeats):\n        model(**batch)\n"
         "    sync()\n    return (perf_counter() - start) / repeats\n", ns)
    assert EXERCISES["ex06.q1"].grade(ns["measure_latency"]).status == PASSED
    assert ns["perf_counter"] is time.perf_counter  # the learner's binding is given back
    from kd_tutorial.grading.ex06 import VirtualClock, virtual_time
    clock, other = VirtualClock(), []
    with virtual_time(clock):
        before = time.monotonic()
        time.sleep(1000.0)  # virtual: returns at once, 1000 s later
        thread = threading.Thread(target=lambda: other.append(time.monotonic()))
        thread.start()
        thread.join()
        after = time.monotonic()
    assert after - before == pytest.approx(1000.0)
    assert other[0] < before + 900  # the other thread read the real clock
    assert time.monotonic() < after - 900  # and so does this one, once the check is over



# -- ex07.q1: masked attention KL ---------------------------------------------------------------------
def _attn_kl(s, t, mask, reverse=False, mask_keys=True, mask_queries=True, log_zero=False, sum_heads=False):
    p, q = (s, t.detach()) if reverse else (t.detach(), s)
    rows = p * (p.log() - q.log()) if log_zero else p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())
    if mask_keys:
        rows = rows.masked_fill(mask[:, None, None, :] == 0, 0.0)
    rows = rows.sum(-1)
    if sum_heads:
        rows = rows.sum(1, keepdim=True)
    if not mask_queries:
        return rows.mean()
    m = mask[:, None, :].expand_as(rows).float()
    return (rows * m).sum() / m.sum()


wrong("ex07.q1", "KL(student || teacher)")(lambda s, t, m: _attn_kl(s, t, m, reverse=True))
wrong("ex07.q1", "zeroed the padded positions, then .mean() divided by every row")(  # padded rows zeroed, then mean
    lambda s, t, m: ((t * (t.clamp_min(1e-12).log() - s.clamp_min(1e-12).log())).masked_fill(
        m[:, None, None, :] == 0, 0).sum(-1) * m[:, None, :]).mean())
wrong("ex07.q1", "padded query positions")(lambda s, t, m: _attn_kl(s, t, m, mask_queries=False))
wrong("ex07.q1", "your sum still holds the padded query rows")(  # every row summed, divided by the real rows
    lambda s, t, m: (t * (t.clamp_min(1e-12).log() - s.clamp_min(1e-12).log())).sum(-1).sum()
    / (s.shape[1] * m.sum()))
wrong("ex07.q1", "is nan")(lambda s, t, m: _attn_kl(s, t, m, log_zero=True, mask_keys=False))
wrong("ex07.q1", "0 * log 0 is nan in floating point")(  # the nan named for its cause, not "your loss is nan"
    lambda s, t, m: _attn_kl(s, t, m, log_zero=True, mask_keys=False))
wrong("ex07.q1", "gradient is nan")(lambda s, t, m: _attn_kl(s, t, m, log_zero=True))
wrong("ex07.q1", "summed over heads")(lambda s, t, m: _attn_kl(s, t, m, sum_heads=True))
wrong("ex07.q1", "no gradient")(lambda s, t, m: _attn_kl(s, t, m).detach())
wrong("ex07.q1", "reaches the teacher")(
    lambda s, t, m: ((t * (t.clamp_min(1e-12).log() - s.clamp_min(1e-12).log())).masked_fill(
        m[:, None, None, :] == 0, 0).sum(-1) * m[:, None, :]).sum() / (m.sum() * s.shape[1]))
wrong("ex07.q1", "reaches the teacher")(  # xlogy(p, p) of an undetached teacher: its gradient is nan where p is 0
    lambda s, t, m: (lambda rows: (rows * m[:, None, :]).sum() / (m.sum() * s.shape[1]))(
        (torch.xlogy(t, t) - t * s.clamp_min(1e-12).log()).sum(-1)))
wrong("ex07.q1", "each review's rows, then the reviews")(
    lambda s, t, m: (lambda rows, w: ((rows * w).sum((1, 2)) / w.sum((1, 2))).mean())(
        (t * (t.clamp_min(1e-12).log() - s.clamp_min(1e-12).log())).masked_fill(m[:, None, None, :] == 0, 0).sum(-1),
        m[:, None, :].float().expand(-1, s.shape[1], -1)))
wrong("ex07.q1", "F.kl_div")(
    lambda s, t, m: F.kl_div(s.clamp_min(1e-12).log(), t, reduction="batchmean"))
wrong("ex07.q1", "you added 1e-06 inside the log")(  # F.kl_div on log(q + 1e-6): off by about 1e-6 / q
    lambda s, t, m: (lambda rows, w: (rows * w).sum() / w.sum())(
        F.kl_div((s + 1e-6).log(), t.detach(), reduction="none").masked_fill(m[:, None, None, :] == 0, 0).sum(-1),
        m[:, None, :].float().expand(-1, s.shape[1], -1)))
wrong("ex07.q1", "you added 1e-05 inside the log")(  # on both sides
    lambda s, t, m: _attn_kl(s + 1e-5, t.detach() + 1e-5, m))
wrong("ex07.q1", "you added 5e-06 inside the log")(  # not a power of ten
    lambda s, t, m: _attn_kl(s + 5e-6, t.detach() + 5e-6, m))
wrong("ex07.q1", "its first argument must be log-probabilities")(  # the student's probabilities, not their log
    lambda s, t, m: (lambda rows, w: (rows * w).sum() / w.sum())(
        F.kl_div(s, t.detach(), reduction="none").masked_fill(m[:, None, None, :] == 0, 0).sum(-1),
        m[:, None, :].float().expand(-1, s.shape[1], -1)))

wrong("ex07.q1", "you averaged over the keys (.mean(-1) divides each row's KL by the padded length L)")(
    lambda s, t, m: (lambda rows, w: (rows * w).sum() / w.sum())(
        (t.detach() * (t.detach().clamp_min(1e-12).log() - s.clamp_min(1e-12).log())).mean(-1),
        m[:, None, :].float().expand(-1, s.shape[1], -1)))
wrong("ex07.q1", "then divided by the batch size B (as reduction='batchmean' does after masking)")(
    lambda s, t, m: (lambda real: F.kl_div(s.clamp_min(1e-12).log().masked_fill(~real, 0), t.detach() * real,
                                           reduction="batchmean"))((m[:, None, None, :] * m[:, None, :, None]).bool()))


# -- ex07.q2: hidden states through a projection ------------------------------------------------------
def _hidden(s, t, m, proj, mapping, project=True, same_layer=False, student_off=0, teacher_off=0, masked=True,
            detach_teacher=True, detach_projected=False):
    total = 0.0
    for i, t_layer in enumerate(mapping, start=1):
        x = s[i - student_off]
        y = t[(i if same_layer else t_layer) - teacher_off]
        y = y.detach() if detach_teacher else y
        x = proj[i - 1](x) if project is True or (project == "if-needed" and x.shape[-1] != y.shape[-1]) else x
        x = x.detach() if detach_projected else x
        if masked:
            w = m[..., None].float()
            total = total + ((x - y) ** 2 * w).sum() / (w.sum() * y.shape[-1])
        else:
            total = total + ((x - y) ** 2).mean()
    return total / len(mapping)


wrong("ex07.q2", "narrower than the teacher")(lambda s, t, m, p, mp: _hidden(s, t, m, p, mp, project=False))
wrong("ex07.q2", "where the widths agree")(lambda s, t, m, p, mp: _hidden(s, t, m, p, mp, project="if-needed"))
wrong("ex07.q2", "not teacher layer i")(lambda s, t, m, p, mp: _hidden(s, t, m, p, mp, same_layer=True))
wrong("ex07.q2", "student_hidden[i]")(lambda s, t, m, p, mp: _hidden(s, t, m, p, mp, student_off=1))
wrong("ex07.q2", "teacher_hidden[mapping[i - 1]]")(lambda s, t, m, p, mp: _hidden(s, t, m, p, mp, teacher_off=1))
wrong("ex07.q2", "padded positions")(lambda s, t, m, p, mp: _hidden(s, t, m, p, mp, masked=False))
wrong("ex07.q2", "your sum still holds the padded ones")(  # every position summed, divided by the real ones
    lambda s, t, m, p, mp: sum(((p[i - 1](s[i]) - t[tl].detach()) ** 2).sum() / (m.sum() * t[tl].shape[-1])
                               for i, tl in enumerate(mp, start=1)) / len(mp))
wrong("ex07.q2", "zeroed the padded positions, then .mean() divided by every position")(
    lambda s, t, m, p, mp: sum(((p[i - 1](s[i]) - t[tl].detach()) ** 2 * m[..., None]).mean()
                               for i, tl in enumerate(mp, start=1)) / len(mp))
wrong("ex07.q2", "mapping holds hidden_states indices, counted from 1")(  # ex05's 0-based layer_map carried over
    lambda s, t, m, p, mp: _hidden(s, t, m, p, mp, teacher_off=-1))
wrong("ex07.q2", "carries no gradient")(lambda s, t, m, p, mp: _hidden(s, t, m, p, mp).item())
wrong("ex07.q2", "no gradient reaches the projections")(
    lambda s, t, m, p, mp: _hidden(s, t, m, p, mp, detach_projected=True) + 0 * sum(x.sum() for x in s))
wrong("ex07.q2", "no gradient reaches the student's states")(  # the states detached before their projection
    lambda s, t, m, p, mp: _hidden([x.detach() for x in s], t, m, p, mp))
wrong("ex07.q2", "reaches teacher_hidden")(lambda s, t, m, p, mp: _hidden(s, t, m, p, mp, detach_teacher=False))
# a projection read through .parameters() (or a state_dict), then summed over the layers: the sum is what is named
wrong("ex07.q2", "you summed over the mapped layers")(
    lambda s, t, m, p, mp: sum(((F.linear(s[i], *p[i - 1].parameters()) - t[tl].detach()) ** 2 * m[..., None]).sum()
                               / (m.sum() * t[tl].shape[-1]) for i, tl in enumerate(mp, start=1)))
# the projection left out without a crash: the teacher sliced to the student's width, or the student zero-padded
wrong("ex07.q2", "your loss never uses projections, and the student is narrower than the teacher")(
    lambda s, t, m, p, mp: _hidden([x for x in s], [y[..., :s[0].shape[-1]] for y in t], m, p, mp, project=False))
wrong("ex07.q2", "your loss never uses projections, and the student is narrower than the teacher")(
    lambda s, t, m, p, mp: _hidden([F.pad(x, (0, t[0].shape[-1] - x.shape[-1])) for x in s], t, m, p, mp,
                                   project=False))


@wrong("ex07.q2", "your loss ignores `mapping`: it matched student layer i with teacher layer i x T / S")
def hidden_loss_with_the_uniform_mapping(student_hidden, teacher_hidden, attention_mask, projections, mapping):
    S, T = len(student_hidden) - 1, len(teacher_hidden) - 1  # the mapping recomputed from the depths
    return _hidden(student_hidden, teacher_hidden, attention_mask, projections,
                   [round(i * T / S) for i in range(1, S + 1)])


@wrong("ex07.q2", "it returned the same value when the check changed mapping from [4, 5, 6] to [1, 2, 3]")
def hidden_loss_with_every_other_teacher_layer(student_hidden, teacher_hidden, attention_mask, projections, mapping):
    return _hidden(student_hidden, teacher_hidden, attention_mask, projections,
                   [2 * i for i in range(1, len(student_hidden))])


@wrong("ex07.q2", "you summed over the mapped layers: average them (divide by len(mapping))")
def hidden_loss_summed_over_layers(student_hidden, teacher_hidden, attention_mask, projections, mapping):
    return _hidden(student_hidden, teacher_hidden, attention_mask, projections, mapping) * len(mapping)


@wrong("ex07.q2", "you summed over the hidden units: the mean squared error averages over them too")
def hidden_loss_summed_over_units(student_hidden, teacher_hidden, attention_mask, projections, mapping):
    w = attention_mask[..., None].float()
    total = 0.0
    for i, t_layer in enumerate(mapping, start=1):
        x, y = projections[i - 1](student_hidden[i]), teacher_hidden[t_layer].detach()
        total = total + ((x - y) ** 2 * w).sum() / w.sum()  # per real token, summed over the units
    return total / len(mapping)


def _hidden_indexed(student_hidden, teacher_hidden, attention_mask, projections, mapping, *, proj_off=1,
                    student_off=0, map_off=1):
    """The loss written with explicit indices; the offsets reproduce indexing mistakes."""
    w = attention_mask[..., None].float()
    total = 0.0
    for i in range(1, len(student_hidden)):
        x = projections[i - proj_off](student_hidden[i + student_off])
        y = teacher_hidden[mapping[i - map_off]].detach()
        total = total + ((x - y) ** 2 * w).sum() / (w.sum() * y.shape[-1])
    return total / len(mapping)


wrong("ex07.q2", "your loss reads projections[2], which is not there (projections has 2 entries)")(
    lambda *a: _hidden_indexed(*a, proj_off=0))
wrong("ex07.q2", "your loss reads student_hidden[3], which is not there")(lambda *a: _hidden_indexed(*a, student_off=1))
wrong("ex07.q2", "your loss reads mapping[2], which is not there")(lambda *a: _hidden_indexed(*a, map_off=0))


@wrong("ex07.q2", "your loss reads teacher_hidden[1:][4], which is not there (teacher_hidden has 5 entries): mapping "
                  "holds hidden_states indices")
def hidden_loss_that_drops_the_embeddings_then_indexes_by_mapping(student_hidden, teacher_hidden, attention_mask,
                                                                  projections, mapping):
    """A slice is a sequence of its own: its IndexError was a bare crash, not named (a review found)."""
    layers = teacher_hidden[1:]  # the embeddings dropped, then indexed with hidden_states indices
    return _hidden_indexed(student_hidden, (teacher_hidden[0], *layers), attention_mask, projections,
                           [m for m in mapping]) * 0 + sum(layers[m].sum() * 0 for m in mapping)


def test_ex07_q2_a_crash_after_the_projection_is_shown_as_it_is():
    """A mask shaped (B, 1, L) crashes once the states are projected: the projection is not to blame."""
    def hidden_state_loss(student_hidden, teacher_hidden, attention_mask, projections, mapping):
        w = attention_mask[:, None].float()  # (B, 1, L): does not broadcast over the hidden units
        total = 0.0
        for i, t in enumerate(mapping, 1):
            x = projections[i - 1](student_hidden[i])
            total = total + ((x - teacher_hidden[t].detach()) ** 2 * w).sum() / (w.sum() * x.shape[-1])
        return total / len(mapping)
    result = EXERCISES["ex07.q2"].grade(hidden_state_loss)
    assert result.status == ERROR and "must match the size of tensor b" in result.message, result
    assert "projection" not in result.message, result.message



# -- ex07.q3: token-level KL ----------------------------------------------------------------------------
def _tok(s, t, m, T, *, masked=True, norm="tokens", dim=-1, scale=True):
    log_q = F.log_softmax(s / T, dim=dim)
    p = F.softmax(t.detach() / T, dim=dim)
    kl = F.kl_div(log_q, p, reduction="none").sum(-1)
    w = m.float() if masked else torch.ones(m.shape)
    total = (kl * w).sum() if norm != "sequence" else ((kl * w).sum(-1) / w.sum(-1)).mean()
    value = {"tokens": total / w.sum() if norm == "tokens" else total, "batch": total / s.shape[0],
             "sequence": total}[norm]
    return value * (T * T if scale else 1.0)


wrong("ex07.q3", "counts the padded positions")(lambda s, t, m, T: _tok(s, t, m, T, masked=False))
wrong("ex07.q3", "F.kl_div expects log-probabilities as its first argument")(  # softmax where log_softmax belongs
    lambda s, t, m, T: (F.kl_div(F.softmax(s / T, -1), F.softmax(t.detach() / T, -1), reduction="none").sum(-1)
                        * m).sum() / m.sum() * T * T)
wrong("ex07.q3", "your sum still holds the padded positions")(  # every position summed, divided by the real ones
    lambda s, t, m, T: T * T * F.kl_div(F.log_softmax(s / T, -1), F.softmax(t.detach() / T, -1),
                                        reduction="none").sum(-1).sum() / m.sum())
wrong("ex07.q3", "averaged within each sequence")(lambda s, t, m, T: _tok(s, t, m, T, norm="sequence"))
wrong("ex07.q3", "divided by the batch size B")(lambda s, t, m, T: _tok(s, t, m, T, norm="batch"))
wrong("ex07.q3", "zeroed the padded positions, then .mean() divided by every position")(
    lambda s, t, m, T: T * T * (F.kl_div(F.log_softmax(s / T, -1), F.softmax(t.detach() / T, -1),
                                         reduction="none").sum(-1) * m).mean())
wrong("ex07.q3", "averaged over the vocabulary")(lambda s, t, m, T: _tok(s, t, m, T) / s.shape[-1])
wrong("ex07.q3", "over the sequence dimension")(lambda s, t, m, T: _tok(s, t, m, T, dim=1))
wrong("ex07.q3", "T^2 too small")(lambda s, t, m, T: _tok(s, t, m, T, scale=False))
wrong("ex07.q3", "temperature on both sides")(  # the student's softmax at T = 1
    lambda s, t, m, T: _tok(s * T, t, m, T))
wrong("ex07.q3", "soft cross-entropy")(
    lambda s, t, m, T: T * T * (-(F.softmax(t.detach() / T, -1) * F.log_softmax(s / T, -1)).sum(-1) * m).sum()
    / m.sum())
wrong("ex07.q3", "your loss ignores the temperature")(
    lambda s, t, m, T: (F.kl_div(F.log_softmax(s, -1), F.softmax(t.detach(), -1), reduction="none").sum(-1) * m).sum()
    / m.sum())
wrong("ex07.q3", "you computed KL(student || teacher)")(  # F.kl_div with its arguments the other way round
    lambda s, t, m, T: T * T * (F.kl_div(F.log_softmax(t.detach() / T, -1), F.softmax(s / T, -1), reduction="none")
                                .sum(-1) * m).sum() / m.sum())
wrong("ex07.q3", "T times too small")(lambda s, t, m, T: _tok(s, t, m, T) / T)
wrong("ex07.q3", "padding included, and divided by the batch size B")(
    lambda s, t, m, T: F.kl_div(F.log_softmax(s / T, -1), F.softmax(t.detach() / T, -1), reduction="batchmean") * T * T)


# -- ex08.q1: compute_loss under gradient accumulation ----------------------------------------------------
def _ga(s, t, y, n, T=2.0, a=0.5, *, scale="share", hard="rows", none="mean", detach=True):
    t = t.detach() if detach else t
    soft = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T * T
    if hard == "rows":
        h = F.cross_entropy(s, y, ignore_index=-1, reduction="sum") / len(y)
    elif hard == "labelled":  # the -100 habit: a mean over labelled rows (nan when there is none)
        h = F.cross_entropy(s, y, ignore_index=-1)
    elif hard == "labelled_or_0":
        h = torch.nan_to_num(F.cross_entropy(s, y, ignore_index=-1))
    elif hard == "default":  # F.cross_entropy ignores -100, not -1
        h = F.cross_entropy(s, y)
    else:
        h = 0.0
    loss = a * soft + (1 - a) * h
    if n is None and none != "crash":
        return loss / 4 if none == "K" else loss
    return {"share": lambda: loss * len(y) / n, "K": lambda: loss / 4, "mean": lambda: loss,
            "over_n": lambda: loss / n, "sum": lambda: loss * len(y), "upside_down": lambda: loss * n / len(y),
            "labelled": lambda: loss * (y != -1).sum() / n}[scale]()


@wrong("ex08.q1", "(the shortcut)")
def compute_loss_as_shown(student_logits, teacher_logits, labels, num_items_in_batch, temperature=2.0, alpha=0.5):
    """The shortcut of the exercise notebook, unchanged."""
    loss = distillation_loss(student_logits, teacher_logits, labels, temperature, alpha)
    return loss / 4


wrong("ex08.q1", "plain mean")(lambda s, t, y, n, T=2.0, a=0.5: distillation_loss(s, t, y, T, a))
wrong("ex08.q1", "your values are K = 4 times too big")(
    lambda s, t, y, n, T=2.0, a=0.5: distillation_loss(s, t, y, T, a) * len(y) / n * 4)
wrong("ex08.q1", "pass alpha itself, not 1 - alpha")(
    lambda s, t, y, n, T=2.0, a=0.5: distillation_loss(s, t, y, T, 1 - a) * len(y) / n)
wrong("ex08.q1", "already divided by its own B_k rows")(lambda *a: _ga(*a, scale="over_n"))
wrong("ex08.q1", "sum over the micro-batch's rows")(lambda *a: _ga(*a, scale="sum"))
wrong("ex08.q1", "upside down")(lambda *a: _ga(*a, scale="upside_down"))
wrong("ex08.q1", "counted only the labelled rows")(lambda *a: _ga(*a, scale="labelled"))
wrong("ex08.q1", "whose reviews are all unlabelled")(lambda *a: _ga(*a, hard="labelled"))
wrong("ex08.q1", "labelled rows of each micro-batch")(lambda *a: _ga(*a, hard="labelled_or_0"))
wrong("ex08.q1", "two shortcuts at once")(lambda *a: _ga(*a, hard="labelled_or_0", scale="K"))
wrong("ex08.q1", "ignores -100 by default")(lambda *a: _ga(*a, hard="default"))
wrong("ex08.q1", "no hard-label term")(lambda *a: _ga(*a, hard="none"))
wrong("ex08.q1", "the Trainer passes no step size")(lambda *a: _ga(*a, none="crash"))
wrong("ex08.q1", "(evaluation) you still divided by K")(lambda *a: _ga(*a, none="K"))
wrong("ex08.q1", "a gradient reaches teacher_logits")(lambda *a: _ga(*a, detach=False))
wrong("ex08.q1", "carries no gradient")(lambda *a: _ga(*a).item())
wrong("ex08.q1", "ignores temperature/alpha (called with temperature=3, alpha=0.7")(  # right in the first step only
    lambda s, t, y, n, T=2.0, a=0.5: distillation_loss(s, t, y) * len(y) / n)
wrong("ex08.q1", "ignores alpha (called with")(
    lambda s, t, y, n, T=2.0, a=0.5: distillation_loss(s, t, y, T) * len(y) / n)
wrong("ex08.q1", "(temperature=2, alpha=0.5), micro-batch 1 returned")(  # a mistake no message names: the numbers
    lambda s, t, y, n, T=2.0, a=0.5: 1.1 * distillation_loss(s, t, y, T, a) * len(y) / n)
wrong("ex08.q1", "(temperature=3, alpha=0.7), micro-batch 1 returned")(  # right in the first step: quoted where wrong
    lambda s, t, y, n, T=2.0, a=0.5: distillation_loss(s, t, y, T, a) * len(y) / n * (1.0 if T == 2.0 else 1.1))


# -- ex09.q1: the token-level KD loss of a language model -----------------------------------------------
def _lmkd(s, t, m, T, *, logits="head", mask="tail", norm="tokens", reverse=False, scale=True, detach=True,
          naive=False):
    t = t.detach() if detach else t
    s, t = {"head": (s[:, :-1], t[:, :-1]), "tail": (s[:, 1:], t[:, 1:]), "all": (s, t)}[logits]
    w = {"tail": m[:, 1:], "head": m[:, :-1], "all": m}[mask].float()
    if naive:  # probabilities, then their logs: log 0 = -inf where a softmax underflowed
        p, q = F.softmax(t / T, -1), F.softmax(s / T, -1)
        kl = (p * (p.log() - q.log())).sum(-1)
    else:
        log_q, log_p = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
        if reverse:
            log_q, log_p = log_p, log_q
        kl = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)
    value = {"tokens": lambda: (kl * w).sum() / w.sum(), "mean": lambda: (kl * w).mean(),
             "batch": lambda: (kl * w).sum() / s.shape[0], "sequence": lambda: ((kl * w).sum(-1) / w.sum(-1)).mean(),
             "where": lambda: torch.where(w > 0, kl, 0.0).sum() / w.sum()}[norm]()
    return value * (T * T if scale else 1.0)


def _no_masks(s, t, a, m, T):
    """Neither mask: the mean over every shifted position."""
    log_q, p = F.log_softmax(s[:, :-1] / T, -1), F.softmax(t[:, :-1].detach() / T, -1)
    return F.kl_div(log_q, p, reduction="none").sum(-1).mean() * T * T


def _drop_the_prompt(s, t, a, m, T):
    """Its own mask, 'all but the prompt' (the prompt: real tokens that do not count): the padding stays in."""
    keep = 1 - (a - m)
    return _lmkd(s, t, keep, T)


wrong("ex09.q1", "not loss_mask[:, :-1]")(lambda s, t, a, m, T: _lmkd(s, t, m, T, mask="head"))
wrong("ex09.q1", "you did not shift")(lambda s, t, a, m, T: _lmkd(s, t, m, T, logits="all", mask="all"))
wrong("ex09.q1", "or shifted the wrong way")(lambda s, t, a, m, T: _lmkd(s, t, m, T, logits="tail"))
wrong("ex09.q1", "you shifted the wrong way: logits[:, 1:] weighed by loss_mask[:, :-1]")(
    lambda s, t, a, m, T: _lmkd(s, t, m, T, logits="tail", mask="head"))


@wrong("ex09.q1", "you counted the prompt's tokens")
def lm_kd_loss_attention_mask(student_logits, teacher_logits, attention_mask, loss_mask, temperature):
    """The mask the model's forward pass gets, shifted: every real token counts, the prompt's too."""
    T = temperature
    log_q = F.log_softmax(student_logits[:, :-1] / T, dim=-1)
    log_p = F.log_softmax(teacher_logits[:, :-1].detach() / T, dim=-1)
    per_token = (log_p.exp() * (log_p - log_q)).sum(-1)
    m = attention_mask[:, 1:].float()
    return T ** 2 * (per_token * m).sum() / m.sum()


@wrong("ex09.q1", "you counted the prompt's tokens")
def lm_kd_loss_masks_swapped(student_logits, teacher_logits, loss_mask, attention_mask, temperature):
    """The two masks taken in the wrong order: its 'loss_mask' is the attention mask."""
    return _lmkd(student_logits, teacher_logits, loss_mask, temperature)


wrong("ex09.q1", "ignores both masks, so it counts the padded positions")(_no_masks)
wrong("ex09.q1", "your loss counts the padded positions")(_drop_the_prompt)
wrong("ex09.q1", "averaged within each sequence")(lambda s, t, a, m, T: _lmkd(s, t, m, T, norm="sequence"))
wrong("ex09.q1", ".mean() divides it by every position")(lambda s, t, a, m, T: _lmkd(s, t, m, T, norm="mean"))
wrong("ex09.q1", "divided by the batch size B")(lambda s, t, a, m, T: _lmkd(s, t, m, T, norm="batch"))
wrong("ex09.q1", "T times too small: multiply the KL by temperature ** 2, not by temperature")(
    lambda s, t, a, m, T: _lmkd(s, t, m, T) / T)
wrong("ex09.q1", "reduction='batchmean') on (B, L, V) logits")(
    lambda s, t, a, m, T: F.kl_div(F.log_softmax(s[:, :-1] / T, -1), F.softmax(t[:, :-1].detach() / T, -1),
                                   reduction="batchmean") * T * T)
wrong("ex09.q1", "the reverse KL")(lambda s, t, a, m, T: _lmkd(s, t, m, T, reverse=True))
wrong("ex09.q1", "T^2 too small")(lambda s, t, a, m, T: _lmkd(s, t, m, T, scale=False))
wrong("ex09.q1", "reaches the teacher")(lambda s, t, a, m, T: _lmkd(s, t, m, T, detach=False))
wrong("ex09.q1", "carries no gradient")(lambda s, t, a, m, T: _lmkd(s, t, m, T).detach())
wrong("ex09.q1", "your loss is nan")(lambda s, t, a, m, T: _lmkd(s, t, m, T, naive=True))
wrong("ex09.q1", "gradient is nan")(lambda s, t, a, m, T: _lmkd(s, t, m, T, naive=True, norm="where"))


# -- ex09.q2: the reverse KL -----------------------------------------------------------------------------
def _rkl(s, t, m, *, kind="reverse", norm="tokens", detach="teacher", naive=False):
    t = t if detach == "nothing" else t.detach()
    if naive:
        q, p = F.softmax(s, -1), F.softmax(t, -1)
        log_q, log_p = q.log(), p.log()
    else:
        log_q, log_p = F.log_softmax(s, -1), F.log_softmax(t, -1)
        q, p = log_q.exp(), log_p.exp()
    if detach == "q":
        q = q.detach()
    kl = {"reverse": lambda: (q * (log_q - log_p)).sum(-1), "forward": lambda: (p * (log_p - log_q)).sum(-1),
          "cross": lambda: -(q * log_p).sum(-1)}[kind]()
    w = m.float()
    return {"tokens": lambda: (kl * w).sum() / w.sum(), "all": lambda: kl.mean(), "mean": lambda: (kl * w).mean(),
            "sequence": lambda: ((kl * w).sum(-1) / w.sum(-1)).mean(), "batch": lambda: (kl * w).sum() / w.shape[0],
            "sum": lambda: (kl * w).sum()}[norm]()


wrong("ex09.q2", "forward KL(teacher || student)")(lambda s, t, m: _rkl(s, t, m, kind="forward"))
wrong("ex09.q2", "without its entropy term")(lambda s, t, m: _rkl(s, t, m, kind="cross"))
wrong("ex09.q2", "detached the student's probabilities q")(lambda s, t, m: _rkl(s, t, m, detach="q"))
wrong("ex09.q2", "reaches the teacher")(lambda s, t, m: _rkl(s, t, m, detach="nothing"))
wrong("ex09.q2", "ignores loss_mask")(lambda s, t, m: _rkl(s, t, m, norm="all"))
wrong("ex09.q2", "averaged within each sequence")(lambda s, t, m: _rkl(s, t, m, norm="sequence"))
wrong("ex09.q2", ".mean() divides it by every position")(lambda s, t, m: _rkl(s, t, m, norm="mean"))
wrong("ex09.q2", "you divided by the batch size B")(lambda s, t, m: _rkl(s, t, m, norm="batch"))
wrong("ex09.q2", "you summed over the counted tokens without dividing")(lambda s, t, m: _rkl(s, t, m, norm="sum"))
wrong("ex09.q2", "your loss is nan")(lambda s, t, m: _rkl(s, t, m, naive=True))
wrong("ex09.q2", "carries no gradient")(lambda s, t, m: _rkl(s, t, m).detach())


def _fixed_temperature(s, t, T):
    T = 2.0  # the learner's own constant: the first case's T, so that case agrees
    return F.kl_div(F.log_softmax(s / T, -1), F.softmax(t.detach() / T, -1), reduction="batchmean") * T * T


wrong("ex03.q1", "ignores its temperature argument (it computed T = 2 whatever T it was given)")(_fixed_temperature)
wrong("ex03.q2", "ignores its alpha argument (it computed alpha = 0.5")(
    lambda s, t, y, T, a: distillation_loss(s, t, y, T, 0.5))



def _divides_in_place(s, t, T):
    t = t.detach()
    t /= T  # the caller's (cached) teacher logits, divided again at every call
    return F.kl_div(F.log_softmax(s / T, -1), F.softmax(t, -1), reduction="batchmean") * T * T


def _relabels_in_place(s, t, y, T, a):
    y[y == -1] = -100  # the caller's labels, changed for good
    soft = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t.detach() / T, -1), reduction="batchmean") * T * T
    return a * soft + (1 - a) * F.cross_entropy(s, y, ignore_index=-100, reduction="sum") / len(y)


wrong("ex03.q1", "changed its argument `t` in place")(_divides_in_place)
wrong("ex03.q2", "changed its argument `y` in place")(_relabels_in_place)


wrong("ex03.q1", "log-probabilities need log_target=True")(  # a log-probability target, read as probabilities
    lambda s, t, T: F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t.detach() / T, -1), reduction="batchmean") * T * T)



def _lm_counted(s, t, m, T, per_token):
    """ex09.q1's shape with another per-position term: logits[:, :-1] scored at loss_mask[:, 1:], times T^2."""
    w = m[:, 1:].float()
    return (per_token(s[:, :-1], t.detach()[:, :-1]) * w).sum() / w.sum() * T * T


wrong("ex09.q1", "divided only the teacher's logits by T")(lambda s, t, a, m, T: _lm_counted(s, t, m, T, lambda x, y: (
    F.softmax(y / T, -1) * (F.log_softmax(y / T, -1) - F.log_softmax(x, -1))).sum(-1)))
wrong("ex09.q1", "averaged over the vocabulary too")(lambda s, t, a, m, T: _lm_counted(s, t, m, T, lambda x, y: (
    F.softmax(y / T, -1) * (F.log_softmax(y / T, -1) - F.log_softmax(x / T, -1))).mean(-1)))
wrong("ex09.q1", "this is the soft cross-entropy")(lambda s, t, a, m, T: _lm_counted(s, t, m, T, lambda x, y: -(
    F.softmax(y / T, -1) * F.log_softmax(x / T, -1)).sum(-1)))
wrong("ex09.q1", "and you gave it probabilities")(lambda s, t, a, m, T: _lm_counted(s, t, m, T, lambda x, y: F.kl_div(
    F.softmax(x / T, -1), F.softmax(y / T, -1), reduction="none").sum(-1)))


CASES = [(key, fn, fragment) for key, items in CATALOGUE.items() for fn, fragment in items]
EXERCISES = {ex.key: ex for ex in registry.all_exercises()}


def test_catalogue_covers_every_exercise():
    assert set(CATALOGUE) == set(EXERCISES), set(EXERCISES) - set(CATALOGUE)
    assert len(EXERCISES) >= 12


@pytest.mark.parametrize("key,fn,fragment", CASES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(CASES)])
def test_wrong_answer_gets_its_message(key, fn, fragment):
    result = EXERCISES[key].grade(fn)
    assert result.status == FAILED, result
    assert fragment in result.message, result.message
    assert "\n" not in result.message and len(result.message) < 300, result.message  # one line a learner reads


def reference_solution(key: str):
    """The function exercise ``key``'s own solution code defines (what q.solution() shows)."""
    import kd_tutorial.losses as losses
    from transformers import BertForSequenceClassification
    ns = {"torch": torch, "F": F, "math": math, "random": random, "copy": copy, "time": time,
          "BertForSequenceClassification": BertForSequenceClassification,
          "distillation_loss": losses.distillation_loss}
    for other in EXERCISES.values():  # later exercises may call earlier ones of the same notebook
        if other.key.split(".")[0] == key.split(".")[0]:
            exec(other.solution_code, ns)
    return ns[EXERCISES[key].name]


@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_reference_solution_passes(key):
    """Each exercise's own solution code passes its check."""
    result = EXERCISES[key].grade(reference_solution(key))
    assert result.status == PASSED, result


def test_ex01_q2_accepts_an_answer_that_uses_the_bertconfig_it_was_promised():
    """The exercise says teacher_config is a BertConfig: an answer that builds the student's config with
    BertConfig(**{**teacher_config.to_dict(), **overrides}) and counts by formula must pass (it crashed on the plain
    object the check used to pass)."""
    from transformers import BertConfig

    def count_student_parameters(teacher_config, overrides, add_pooling_layer=True):
        c = BertConfig(**{**teacher_config.to_dict(), **overrides})
        H, I = c.hidden_size, c.intermediate_size
        emb = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * H + 2 * H
        layer = 4 * (H * H + H) + (H * I + I) + (I * H + H) + 4 * H
        return emb + c.num_hidden_layers * layer + (H * H + H if add_pooling_layer else 0)

    result = EXERCISES["ex01.q2"].grade(count_student_parameters)
    assert result.status == PASSED, result.message


def test_a_teacher_frozen_as_notebook_04_freezes_it_passes_ex04_q1_and_ex05_q1():
    """Notebook 04 freezes the teacher with eval() and requires_grad_(False): its forward pass builds no graph with
    grad mode on, so both checks accept it (they refused it as "ran with autograd on", which was untrue)."""
    def teacher_logits(teacher, batch):
        teacher.eval().requires_grad_(False)
        return teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def distillation_step(student, teacher, batch, optimizer, temperature=2.0, alpha=0.5):
        student.train()
        teacher.eval().requires_grad_(False)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        loss = distillation_loss(student(**inputs).logits, teacher(**inputs).logits, batch["labels"], temperature,
                                 alpha)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    for key, answer in (("ex04.q1", teacher_logits), ("ex05.q1", distillation_step)):
        result = EXERCISES[key].grade(answer)
        assert result.status == PASSED, (key, result.message)


@pytest.mark.parametrize("key", ["ex03.q3", "ex05.q1", "ex08.q1", "ex09.q1"])
def test_a_reference_solution_passes_with_autograd_switched_off_by_the_notebook(key):
    """`torch.set_grad_enabled(False)` in an earlier cell failed these correct answers: the checks' own reference
    gradients ran without autograd ("the check itself is at fault")."""
    import torch
    before = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    try:
        result = EXERCISES[key].grade(reference_solution(key))
    finally:
        torch.set_grad_enabled(before)
    assert result.status == "passed", result.message


def test_ex01_q1_names_the_additive_infinite_mask_behind_its_nan():
    """scores + (1 - mask) * -inf is 0 * -inf = nan on every real key: the message told a learner who had masked
    the keys to mask the keys."""
    def additive(x, mask, w, b, heads):
        B, L, H = x.shape
        d = H // heads
        q, k, v = (t.view(B, L, heads, d).transpose(1, 2) for t in (x @ w.T + b).split(H, dim=-1))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d) + (1 - mask[:, None, None, :]) * float("-inf")
        weights = scores.softmax(-1)
        return (weights @ v).transpose(1, 2).reshape(B, L, H), weights
    result = EXERCISES["ex01.q1"].grade(additive)
    assert result.status == FAILED and "0 x -inf is nan, so mask with scores.masked_fill(mask == 0" in result.message


def test_a_csv_cell_that_a_spreadsheet_would_take_for_a_formula_is_text(tmp_path):
    from kd_tutorial.grading import grader
    row = {c: "" for c in grader.COLUMNS} | {"learner": "=1+2 alice", "message": "-0.5 too small", "seconds": 1.5}
    grader.write_reports([row], [], tmp_path / "grades.csv", 1.0)
    import csv
    with open(tmp_path / "grades.csv", newline="", encoding="utf-8-sig") as f:
        written = next(csv.DictReader(f))
    assert written["learner"] == "'=1+2 alice" and written["message"] == "'-0.5 too small"
    import json
    assert json.loads((tmp_path / "grades.json").read_text())["rows"][0]["learner"] == "=1+2 alice"


def grade_code(key: str, code: str):
    """Grade a learner's answer given as source, defined beside the exercise set's own solutions (its kd_loss)."""
    ns = reference_solution(key).__globals__
    exec(code, ns)
    return EXERCISES[key].grade(ns[EXERCISES[key].name])


@pytest.mark.parametrize("one_graph", [
    "loss = kd_loss(torch.cat(outs), teacher_logits, labels, temperature, alpha)",
    "loss = sum(kd_loss(student(x), t, y, temperature, alpha) for x, t, y in zip(inputs.chunk(micro_batches), "
    "teacher_logits.chunk(micro_batches), labels.chunk(micro_batches))) / micro_batches"])
def test_ex03_q3_refuses_accumulation_that_keeps_every_graph(one_graph):
    """K forwards and one backward on their sum (or on the concatenated logits) passed, with "in 1/K of the
    memory": all K graphs stay alive until that backward, which is what accumulation exists to avoid."""
    result = grade_code("ex03.q3", f"""
def accumulated_kd_step(student, optimizer, inputs, teacher_logits, labels, micro_batches, temperature=2.0,
                        alpha=0.5):
    optimizer.zero_grad()
    outs = [student(x) for x in inputs.chunk(micro_batches)]
    {one_graph}
    loss.backward()
    optimizer.step()
    return loss.item()
""")
    assert result.status == FAILED and "call backward() on each micro-batch's loss" in result.message, result


def test_ex05_q2_refuses_a_student_that_shares_the_teachers_config():
    """The solution without its deepcopy (config = teacher.config; config.num_hidden_layers = len(layer_map))
    passed, and left the teacher's config saying 2 layers where it has 4."""
    solution = EXERCISES["ex05.q2"].solution_code
    assert "config = copy.deepcopy(teacher.config)" in solution
    result = grade_code("ex05.q2", solution.replace("copy.deepcopy(teacher.config)", "teacher.config"))
    assert result.status == FAILED and "shares (and changes) the teacher's config" in result.message, result


def test_ex04_q3_accepts_length_buckets_and_refuses_half_empty_batches():
    """Bucketing by length, batching within each bucket, then shuffling the batches meets every line of the
    exercise, and was refused because each bucket's last batch is short (17 of 70 batches; 80 with buckets of 16
    tokens)."""
    import random as stdlib_random

    def buckets(lengths, batch_size, seed):
        groups = {}
        for i, n in enumerate(lengths):
            groups.setdefault(n // 32, []).append(i)
        batches = [g[k:k + batch_size] for g in groups.values() for k in range(0, len(g), batch_size)]
        stdlib_random.Random(seed).shuffle(batches)
        return batches

    def halves(lengths, batch_size, seed):  # buckets again, in batches of half the size: twice the steps
        return buckets(lengths, batch_size // 2, seed)
    assert EXERCISES["ex04.q3"].grade(buckets).status == PASSED
    def narrow(lengths, batch_size, seed):  # buckets of 16 tokens: 80 batches
        return buckets([2 * n for n in lengths], batch_size, seed)
    assert EXERCISES["ex04.q3"].grade(narrow).status == PASSED
    result = EXERCISES["ex04.q3"].grade(halves)
    assert result.status == FAILED and "batches where 63 can hold the 1003 reviews" in result.message, result


def test_a_generic_message_quotes_a_batch_where_the_answer_differs():
    """A loss that ignored an argument matched the first case, which used the default, and the message read
    'your loss is 3.8734 for a batch where ... is 3.8734'."""
    from kd_tutorial.grading import core
    assert core.mismatch([1.0, 2.0, 3.0], [1.0, 2.5, 3.5]) == 1 and core.mismatch([1.0], [1.0]) == 0

    def odd(s, t, T):  # right on the first batch only, and no known mistake
        return _fixed_temperature(s, t, T) * (1.0 if T == 2.0 else 1.37)
    message = EXERCISES["ex03.q1"].grade(odd).message
    got, want = re.search(r"your loss is (\S+) for a batch where T\^2 \* KL \(batchmean\) is (\S+) ", message).groups()
    assert got != want, message


def test_ex02_generic_messages_quote_an_input_where_the_answer_differs():
    """An entropy right on the uniform distribution only (the mean of -log p) read 'your entropy of the uniform
    distribution over 8 classes is 2.0794, expected log(8) = 2.0794'; a softmax that clamps T at 1 (wrong at
    T = 0.5 only) was quoted at T = 2, where it is right."""
    message = EXERCISES["ex02.q2"].grade(lambda p: -p.clamp_min(1e-12).log().mean(-1)).message
    got, want = re.search(r"your entropy is (\S+), expected -sum p log p = (\S+)$", message).groups()
    assert got != want and "uniform" not in message, message
    message = EXERCISES["ex02.q1"].grade(lambda z, T=1.0: torch.softmax(z / max(T, 1.0), -1)).message
    assert "and T = 0.5 you returned" in message, message
    got, want = re.search(r"you returned (\[.*\]), expected (\[.*\])$", message).groups()
    assert got != want and len(message) < 300, message


def test_ex02_q1_refuses_a_softmax_over_dim_1_that_only_works_for_a_batch_of_rows():
    """dim=1 is the class dimension of a (batch, classes) tensor only: the check also hands 1-D and 3-D logits."""
    result = EXERCISES["ex02.q1"].grade(lambda z, T=1.0: torch.softmax(z / T, dim=1))
    assert result.status != PASSED, result


def test_ex02_q1_refuses_a_softmax_that_clamps_large_logits():
    """Clamping z / T to [-50, 50] 'for stability' is right on ordinary logits and wrong on the large ones only; the
    message quotes a large row, where the answer differs (it quoted an ordinary one: "you returned [0.12, ...],
    expected [0.12, ...]")."""
    result = EXERCISES["ex02.q1"].grade(lambda z, T=1.0: torch.softmax((z / T).clamp(-50, 50), -1))
    assert result.status == FAILED, result
    assert ("your probabilities differ from softmax(z / T): for z = [1000.0, 999.0, 0.0] and T = 1 you returned "
            "[0.5, 0.5, 0.0], expected [0.731, 0.269, 0.0]") in result.message


def test_ex04_q4_refuses_an_answer_that_lower_cases_the_teachers_names_only():
    """'Names match regardless of case', but every case gave the data's names in lower case, so lower-casing the
    teacher's names alone passed; it fails on data labels such as 'Negative'."""
    def teacher_only(logits, teacher_labels, data_labels):
        names = [n.lower() for n in teacher_labels]
        if sorted(names) != sorted(data_labels):
            raise ValueError("the label sets differ")
        return logits[:, [names.index(n) for n in data_labels]]
    result = EXERCISES["ex04.q4"].grade(teacher_only)
    assert result.status == FAILED and "differ only in case" in result.message, result
    assert "Compare both lists' names lower-cased" in result.message and len(result.message) < 300, result


def test_ex07_q2_a_projection_applied_through_its_parameters_or_state_dict_passes():
    """The check told a learner who wrote W, b = projections[i - 1].parameters() that the loss never used them."""
    def through(read):
        def loss(s, t, m, p, mp):
            total = 0.0
            for i, tl in enumerate(mp, start=1):
                x = F.linear(s[i], *read(p[i - 1]))
                total = total + ((x - t[tl].detach()) ** 2 * m[..., None]).sum() / (m.sum() * t[tl].shape[-1])
            return total / len(mp)
        return loss
    for read in (lambda q: q.parameters(), lambda q: [w for _, w in q.named_parameters()],
                 lambda q: (q.state_dict(keep_vars=True)["weight"], q.state_dict(keep_vars=True)["bias"])):
        result = EXERCISES["ex07.q2"].grade(through(read))
        assert result.status == PASSED, result.message
