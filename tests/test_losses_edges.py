"""Edges of the intermediate-layer and language-model losses (kd_tutorial.losses), from a mutation audit (which
also mutated the layer keys and projections of kd_tutorial.recipes.Intermediate: other files' tests caught those).

Each test pins a behaviour that a small change of the code left every other test passing: masks and teachers that
would broadcast over the tokens are refused in one line naming the fix, a batch with no token that counts scores 0
(not nan), probabilities that underflowed to 0 keep the attention KL finite and exact, the cosine ignores lengths
however short the states, the value relations are computed where autocast is refused, a token only the student
rules out adds nothing to the reverse KL, the rest bucket takes a rest mass rounded just above 1, and log1mexp is
accurate at both ends. The last tests pin defects the audit and a review found, fixed: a traceback, a refusal
naming a fix that cannot help, or states of every token taken for [CLS] states.
"""
import math

import pytest
import torch

from kd_tutorial import losses

pytestmark = pytest.mark.usefixtures("one_thread")


def states(seed: int, width: int = 8, lengths=(5, 3)):
    """Student and teacher states (B, L, width) in float64 and their mask, rows of different lengths."""
    g = torch.Generator().manual_seed(seed)
    B, L = len(lengths), max(lengths)
    mask = (torch.arange(L)[None] < torch.tensor(lengths)[:, None]).long()
    s = torch.randn(B, L, width, generator=g, dtype=torch.float64)
    t = torch.randn(B, L, width, generator=g, dtype=torch.float64)
    return s, t, mask


def attention(seed: int, mask: torch.Tensor, heads: int = 2, scale: float = 2.0):
    """(B, heads, L, L) attention probabilities over the real keys (0 on padded keys)."""
    g = torch.Generator().manual_seed(seed)
    B, L = mask.shape
    scores = torch.randn(B, heads, L, L, generator=g, dtype=torch.float64) * scale
    return scores.masked_fill(~mask[:, None, None, :].bool(), float("-inf")).softmax(-1)


def exact_row_kl(p, q, mask):
    """KL(p || q) over real keys with 0 log 0 = 0, averaged over heads and real queries, by loops in float64."""
    total, rows = 0.0, 0
    for b, n in enumerate(mask.sum(1).tolist()):
        for h in range(p.shape[1]):
            for i in range(n):
                pt, qs = p[b, h, i, :n], q[b, h, i, :n]
                total += float(torch.where(pt > 0, pt * (pt.log() - qs.log()), 0.0).sum())
                rows += 1
    return total / rows


def logits(seed: int, B: int = 2, L: int = 5, V: int = 11):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, V, generator=g) * 3, torch.randn(B, L, V, generator=g) * 3


# --------------------------------------------------------------------------- refusals that name the fix

def test_a_mask_of_one_column_is_refused_not_broadcast_over_the_tokens():
    """A (B, 1) mask has the right batch: it broadcast over every token of a row (padding counted, the wrong
    number of tokens divided by) where only the batch was checked. Each loss refuses it naming the shape to give."""
    s, t, mask = states(0)
    z_s, z_t = logits(0)
    column = mask[:, :1]
    calls = {
        "hidden_mse": lambda m: losses.hidden_mse(s, t, m),
        "hidden_cosine": lambda m: losses.hidden_cosine(s, t, m),
        "attention_kl": lambda m: losses.attention_kl(attention(1, mask), attention(2, mask), m),
        "value_relation_kl": lambda m: losses.value_relation_kl(s, t, m, 2),
        "token_kl": lambda m: losses.token_kl(z_s, z_t, m),
        "reverse_token_kl": lambda m: losses.reverse_token_kl(z_s, z_t, m),
        "token_cross_entropy": lambda m: losses.token_cross_entropy(z_s, z_t.argmax(-1), m),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=rf"^{name}: the mask is \(2, 1\) for a batch of 2 sequences of 5 "
                                             r"tokens; pass one mask row per sequence, of shape \(2, 5\)$"):
            call(column)


def test_a_teacher_for_sequences_of_another_length_is_refused_naming_the_fix():
    """Value relations and top-k caches may differ from the student in width, never in (batch, length): a teacher
    cut to fewer tokens is refused in one line that says to compute both on the same batch (a top-k cache of one
    position broadcast over every position of the student, with no error, where only the batch was checked)."""
    s, t, mask = states(1, width=4)
    with pytest.raises(ValueError, match=r"^value_relation_kl: student \(2, 5, 4\) and teacher \(2, 3, 4\) hold "
                                         r"different sequences \(batch, length\); compute both on the same batch$"):
        losses.value_relation_kl(s, t[:, :3], mask, 2)
    z_s, z_t = logits(1)
    top = z_t.topk(3, -1)
    rest = torch.full((2, 5), -1.0)
    for name, call in (("topk_token_kl", lambda v, i: losses.topk_token_kl(z_s, v, i, mask)),
                       ("topk_rest_token_kl", lambda v, i: losses.topk_rest_token_kl(z_s, v, i, rest, mask))):
        with pytest.raises(ValueError, match=rf"^{name}: student \(2, 5, 11\) and teacher \(2, 1, 3\) hold different "
                                             r"sequences \(batch, length\); compute both on the same batch$"):
            call(top.values[:, :1], top.indices[:, :1])


def test_cls_states_of_another_width_are_refused_naming_the_projection():
    """PKD's [CLS] term compares a student's and a teacher's (B, H) states: of different widths, one line that names
    the student's projection, not a broadcasting error from torch."""
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"^cls_mse: student \(3, 4\) and teacher \(3, 8\) differ; project the "
                                         r"student's states to the teacher's width first"):
        losses.cls_mse(torch.randn(3, 4, generator=g), torch.randn(3, 8, generator=g))


def test_token_losses_refuse_a_classifiers_logits_naming_the_shape_to_give():
    """(B, V) logits, a classifier's, are not per-token logits: the message names (batch, length, vocabulary),
    not the mask."""
    z_s, z_t = logits(2)
    for fn in (losses.token_kl, losses.reverse_token_kl):
        with pytest.raises(ValueError, match=r"student logits \(2, 11\), teacher logits \(2, 11\); give both as "
                                             r"\(batch, length, vocabulary\)"):
            fn(z_s[:, 0], z_t[:, 0], torch.ones(2, 1))


# --------------------------------------------------------------------------- values at the edges

def test_a_batch_with_no_token_that_counts_scores_0_with_a_finite_gradient():
    """Every target in the prompt (a truncated continuation), or every row padding: no token counts, and each loss is
    0, as documented, with a zero gradient; a division by no tokens gave nan, which poisons the weights."""
    s, t, mask = states(3)
    none = torch.zeros_like(mask)
    z_s, z_t = logits(3)
    top = z_t.topk(3, -1)
    calls = [
        (s, lambda x: losses.hidden_mse(x, t, none)), (s, lambda x: losses.hidden_cosine(x, t, none)),
        (s, lambda x: losses.value_relation_kl(x, t, none, 2)),
        (attention(4, mask), lambda x: losses.attention_kl(x, attention(5, mask), none)),
        (z_s, lambda x: losses.token_kl(x, z_t, none)), (z_s, lambda x: losses.reverse_token_kl(x, z_t, none)),
        (z_s, lambda x: losses.token_cross_entropy(x, z_t.argmax(-1), none)),
        (z_s, lambda x: losses.topk_token_kl(x, top.values, top.indices, none)),
    ]
    for inputs, call in calls:
        x = inputs.clone().requires_grad_(True)
        value = call(x)
        value.backward()
        assert float(value.detach()) == 0.0 and bool(torch.isfinite(x.grad).all()), (value, call)


def test_an_attention_probability_that_underflowed_to_0_keeps_the_kl_finite_and_exact():
    """A teacher's 0 at a real key adds nothing (0 log 0 = 0: nan without the eps); a student's 0 where the teacher
    puts mass is a large finite term (inf without the eps); small probabilities count exactly as they are."""
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    p, q = attention(6, mask), attention(7, mask)
    zero_p = p.clone()
    zero_p[..., 0] = 0.0
    zero_p = zero_p / zero_p.sum(-1, keepdim=True)
    value = losses.attention_kl(q, zero_p, mask)
    assert math.isfinite(float(value)) and float(value) == pytest.approx(exact_row_kl(zero_p, q, mask), rel=1e-9)
    zero_q = q.clone()
    zero_q[..., 0] = 0.0
    assert math.isfinite(float(losses.attention_kl(zero_q, p, mask)))
    peaked_p, peaked_q = attention(8, mask, scale=4.0), attention(9, mask, scale=4.0)  # entries down to ~1e-9
    assert float(peaked_q[peaked_q > 0].min()) < 1e-6
    assert float(losses.attention_kl(peaked_q, peaked_p, mask)) == pytest.approx(
        exact_row_kl(peaked_p, peaked_q, mask), rel=1e-9)


def test_the_cosine_ignores_the_length_of_short_states_too():
    """hidden_cosine aligns directions only: states of norm ~0.003 score as those of norm ~3 (an eps as large as the
    norms divided by it instead)."""
    s, t, mask = states(4)
    assert float(losses.hidden_cosine(1e-3 * s, 1e-3 * t, mask)) == pytest.approx(
        float(losses.hidden_cosine(s, t, mask)), rel=1e-9)


def test_value_relations_are_computed_where_torch_refuses_autocast_for_the_device(monkeypatch):
    """torch before 2.5 refuses even a disabled autocast on Apple's MPS ("unsupported autocast device_type"): the
    value-relation term is then computed without one, and its value is unchanged."""
    s, t, mask = states(5)
    expected = losses.value_relation_kl(s, t, mask, 2)

    def refused(*args, **kwargs):
        raise RuntimeError("User specified an unsupported autocast device_type 'mps'")
    monkeypatch.setattr(torch, "autocast", refused)
    assert torch.equal(losses.value_relation_kl(s, t, mask, 2), expected)


def test_a_token_only_the_student_rules_out_adds_nothing_to_the_reverse_kl():
    """The reverse KL is weighed by the student's q: a token it rules out (logit -inf, q = 0) adds 0 log 0 = 0 however
    much mass the teacher gives it, and the value and the gradient stay finite (0 * -inf gave nan)."""
    z_s, z_t = logits(7)
    mask = torch.tensor([[1, 1, 1, 1, 0], [0, 1, 1, 1, 1]])
    x = z_s.clone().requires_grad_(True)
    banned = torch.cat([torch.full_like(x[..., :1], float("-inf")), x[..., 1:]], -1)
    value = losses.reverse_token_kl(banned, z_t, mask)
    q = torch.softmax(z_s[..., 1:].double(), -1)
    per_token = (q * (q.log() - torch.log_softmax(z_t.double(), -1)[..., 1:])).sum(-1)
    expected = float((per_token * mask).sum() / mask.sum())
    assert math.isfinite(float(value.detach())) and float(value.detach()) == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert bool(torch.isfinite(x.grad).all())


def test_a_rest_mass_rounded_just_above_1_counts_as_1():
    """``log p_rest`` a rounding above 0 (a learner's ``log(sum of the outside probabilities)`` in float32) is read
    as 0: the same value as an exact 0, not nan from log(1 - exp(x)) of a positive x."""
    z_s, z_t = logits(6)
    top = z_t.topk(3, -1)
    mask = torch.ones(2, 5)
    at_one = losses.topk_rest_token_kl(z_s, top.values, top.indices, torch.zeros(2, 5), mask)
    above = losses.topk_rest_token_kl(z_s, top.values, top.indices, torch.full((2, 5), 1e-7), mask)
    assert math.isfinite(float(above)) and float(above) == float(at_one)


def test_log1mexp_is_accurate_at_both_ends():
    """log(1 - exp(x)) to float32's relative precision from x = -1e-10 (1 - exp(x) is all cancellation) to x = -40
    (exp(x) below float32's epsilon next to 1), and -inf at 0."""
    x = torch.tensor([-1e-10, -1e-4, -0.5, -0.6931, -0.6932, -1.0, -5.0, -15.0, -40.0])
    exact = torch.tensor([math.log(-math.expm1(v)) if v > -1 else math.log1p(-math.exp(v)) for v in x.tolist()],
                         dtype=torch.float64)  # float64, each formula where it loses no digits
    got = losses.log1mexp(x)
    assert got.dtype == torch.float32 and torch.allclose(got.double(), exact, rtol=1e-5, atol=0), (got, exact)
    assert float(losses.log1mexp(torch.tensor(0.0))) == float("-inf")


# ------------------------------------------------------------------- defects found by the audit, fixed

@pytest.mark.parametrize("heads", [0, -2])
def test_a_relation_head_count_below_1_is_refused_in_one_line(heads):
    """0 stopped on a ZeroDivisionError in ``width % heads``, -2 on view()'s RuntimeError."""
    s, t, mask = states(7)
    with pytest.raises(ValueError) as refused:
        losses.value_relation_kl(s, t, mask, heads)
    assert str(refused.value) == (f"value_relation_kl: relation_heads={heads}: give a whole number >= 1 that "
                                  "divides both widths")


def test_relation_heads_from_numpy_or_a_tensor_are_whole_numbers():
    """The first check of relation_heads refused np.int64(2), which worked before it."""
    import numpy as np
    s, t, mask = states(7)
    expected = losses.value_relation_kl(s, t, mask, 2)
    for heads in (np.int64(2), torch.tensor(2)):
        assert torch.equal(losses.value_relation_kl(s, t, mask, heads), expected)


def test_a_shape_mismatch_that_is_not_a_width_does_not_ask_for_a_projection():
    """Attention maps of other heads, and states or maps of other sequences, were told to project the student's
    states to the teacher's width, which cannot help."""
    s, t, mask = states(8)
    with pytest.raises(ValueError) as other_rows:
        losses.hidden_mse(s, t[:1], mask)
    assert str(other_rows.value) == ("hidden_mse: student (2, 5, 8) and teacher (1, 5, 8) hold different sequences; "
                                     "compute both on the same batch")
    with pytest.raises(ValueError) as other_heads:
        losses.attention_kl(attention(1, mask, heads=2), attention(2, mask, heads=4), mask)
    assert str(other_heads.value).endswith("differ; attention maps are compared head by head: give the student the "
                                           "teacher's number of heads, or compare values with value_relation_kl, "
                                           "which takes any heads")
    with pytest.raises(ValueError, match="hold different sequences"):
        losses.attention_kl(attention(1, mask), attention(2, mask)[:1], mask)
    with pytest.raises(ValueError, match="hold different sequences"):  # other queries: no head count would help
        losses.attention_kl(attention(1, mask)[:, :, :3], attention(2, mask), mask)
    with pytest.raises(ValueError) as averaged:  # maps averaged over their heads
        losses.attention_kl(attention(1, mask).mean(1), attention(2, mask), mask)
    assert str(averaged.value) == ("attention_kl: student (2, 5, 5) and teacher (2, 2, 5, 5): give both as (batch, "
                                   "heads, length, length)")
    with pytest.raises(ValueError, match=r"teacher \(5, 8\): give both as \(batch, length, width\)$"):
        losses.hidden_mse(s, t[0], mask)  # one sequence's states: no projection would help
    with pytest.raises(ValueError, match="differ; project the student's states to the teacher's width first"):
        losses.hidden_cosine(s, torch.cat([t, t], -1), mask)  # a width: the projection is the fix


def test_cls_mse_refuses_the_states_of_every_token():
    """(B, L, H) states were taken and averaged over every token, padding included, as if each were a [CLS]."""
    s, t, _ = states(10)
    for student, teacher in ((s, t), (s[:, 0], t)):  # every token's states, on either side
        with pytest.raises(ValueError) as refused:
            losses.cls_mse(student, teacher)
        assert str(refused.value).endswith(": give both as (batch, width), each row's [CLS] state (hidden[:, 0] of "
                                           "(batch, length, width) states)")
    assert torch.isfinite(losses.cls_mse(s[:, 0], t[:, 0]))


@pytest.mark.parametrize("shape", [(1, 5), (2, 5, 1)])
def test_a_rest_of_another_shape_is_refused_in_one_line(shape):
    z_s, z_t = logits(9)
    top = z_t.topk(3, -1)
    with pytest.raises(ValueError) as refused:  # torch's RuntimeError from cat() or a broadcast, before
        losses.topk_rest_token_kl(z_s, top.values, top.indices, torch.full(shape, -1.0), torch.ones(2, 5))
    assert str(refused.value) == (f"topk_rest_token_kl: teacher_log_rest is {shape}; give one log mass per token, "
                                  "of shape (2, 5) (batch, length)")
