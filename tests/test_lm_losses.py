"""The generative-LM losses (kd_tutorial.losses: token_cross_entropy, token_kl, reverse_token_kl, topk_token_kl,
topk_rest_token_kl): values against direct formulas, identities as property tests, padding
and prompt masks, gradients."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kd_tutorial import losses

# no 200 ms deadline an example on a busy machine: test_losses' "kd" profile (the same values) lifts it in a full run,
# but not for this file run alone (in conftest.py, importing Hypothesis made a SIGTERM test's pytest abort at exit)
settings.register_profile("kd-lm", max_examples=40, deadline=None)
settings.load_profile("kd-lm")

seeds = st.integers(0, 10_000)
temps = st.floats(0.5, 8.0)


def case(seed, b=3, length=6, vocab=11, scale=3.0):
    """Student and teacher logits (B, L, V) and a mask with rows of different lengths and prompts."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, length, vocab, generator=g) * scale
    t = torch.randn(b, length, vocab, generator=g) * scale
    lengths = torch.randint(2, length + 1, (b,), generator=g)
    prompts = torch.randint(0, 2, (b,), generator=g)
    pos = torch.arange(length)[None]
    mask = ((pos < lengths[:, None]) & (pos >= prompts[:, None])).long()
    mask[0, -1] = 1  # at least one counted token
    return s, t, mask


def direct_kl(p_logits, q_logits, mask, T):
    """sum_{b,t} m KL(p || q) / sum m, written out token by token."""
    total, count = 0.0, 0
    for b in range(mask.shape[0]):
        for i in range(mask.shape[1]):
            if mask[b, i]:
                p = torch.softmax(p_logits[b, i] / T, -1)
                q = torch.softmax(q_logits[b, i] / T, -1)
                total += float((p * (p.log() - q.log())).sum())
                count += 1
    return T * T * total / count


@given(seeds, temps)
def test_token_kl_and_its_reverse_match_the_formula(seed, T):
    s, t, m = case(seed)
    assert abs(float(losses.token_kl(s, t, m, T)) - direct_kl(t, s, m, T)) < 1e-4
    assert abs(float(losses.reverse_token_kl(s, t, m, T)) - direct_kl(s, t, m, T)) < 1e-4


@given(seeds, temps)
def test_the_kls_are_nonnegative_zero_at_the_teacher_and_swap_roles(seed, T):
    s, t, m = case(seed)
    assert float(losses.token_kl(s, t, m, T)) >= -1e-7 and float(losses.reverse_token_kl(s, t, m, T)) >= -1e-7
    assert abs(float(losses.token_kl(t.clone(), t, m, T))) < 1e-6
    assert torch.allclose(losses.reverse_token_kl(s, t, m, T), losses.token_kl(t, s, m, T), atol=1e-6)


@given(seeds, temps)
def test_one_position_per_row_is_the_classifiers_kd_loss(seed, T):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(4, 1, 5, generator=g) * 3, torch.randn(4, 1, 5, generator=g) * 3
    ones = torch.ones(4, 1, dtype=torch.long)
    assert torch.allclose(losses.token_kl(s, t, ones, T), losses.kl_divergence(s[:, 0], t[:, 0], T), atol=1e-6)


@given(seeds)
@settings(deadline=None)
def test_padded_and_prompt_positions_never_change_a_value(seed):
    s, t, m = case(seed)
    g = torch.Generator().manual_seed(seed + 1)
    garbage = (m == 0)[..., None]
    s2 = torch.where(garbage, torch.randn(s.shape, generator=g) * 50, s)
    t2 = torch.where(garbage, torch.randn(t.shape, generator=g) * 50, t)
    ids = torch.randint(0, s.shape[-1], m.shape, generator=g)
    ids2 = torch.where(m == 0, torch.randint(0, s.shape[-1], m.shape, generator=g), ids)
    for fn in (losses.token_kl, losses.reverse_token_kl):
        assert torch.allclose(fn(s, t, m), fn(s2, t2, m), atol=1e-5)
    assert torch.allclose(losses.token_cross_entropy(s, ids, m), losses.token_cross_entropy(s2, ids2, m), atol=1e-5)
    # garbage that is not even a number: a masked position's nan or inf must not reach the value either
    for junk in (float("nan"), float("inf"), float("-inf")):
        s3, t3 = torch.where(garbage, junk, s), torch.where(garbage, junk, t)
        for fn in (losses.token_kl, losses.reverse_token_kl):
            assert torch.allclose(fn(s, t, m), fn(s3, t3, m), atol=1e-5), (fn.__name__, junk)
        assert torch.allclose(losses.token_cross_entropy(s, ids, m), losses.token_cross_entropy(s3, ids, m),
                              atol=1e-5), junk


@given(seeds, temps)
def test_a_token_the_teacher_rules_out_adds_nothing_to_the_forward_kl(seed, T):
    """A teacher logit of -inf (a banned token) has p = 0, and 0 log 0 = 0: the forward KL stays finite and
    equals the sum over the other tokens; reading it as 0 * -inf gave nan."""
    s, t, m = case(seed)
    t[..., 0] = float("-inf")
    p = torch.softmax(t[..., 1:] / T, -1)  # the other tokens; token 0 has p = 0
    log_q = torch.log_softmax(s / T, -1)[..., 1:]  # the student's softmax over the whole vocabulary
    per_token = (p * (p.log() - log_q)).sum(-1)
    rest = T * T * float((per_token * m).sum() / m.sum())
    value = losses.token_kl(s, t, m, T)
    assert torch.isfinite(value) and abs(float(value) - rest) < 1e-4 * max(1.0, rest)
    ids = torch.arange(1, s.shape[-1]).expand(*s.shape[:2], -1)
    assert torch.isfinite(losses.topk_token_kl(s, t[..., 1:], ids, m, T))


@given(seeds, temps)
def test_a_token_both_models_rule_out_adds_nothing_to_the_reverse_kl(seed, T):
    """A logit of -inf on both sides (a banned token, a padded vocabulary entry) gave the reverse KL nan:
    0 * (-inf - (-inf)). It is the KL over the other tokens, with a finite gradient."""
    s, t, m = case(seed)
    s, t = s.clone().requires_grad_(True), t.clone()
    t[..., 0] = float("-inf")
    banned = torch.cat([torch.full_like(s[..., :1], float("-inf")), s[..., 1:]], -1)
    q = torch.softmax(s[..., 1:] / T, -1)
    per_token = (q * (q.log() - torch.log_softmax(t[..., 1:] / T, -1))).sum(-1)
    expected = T * T * float((per_token * m).sum().detach() / m.sum())
    value = losses.reverse_token_kl(banned, t, m, T)
    assert torch.isfinite(value) and abs(float(value.detach()) - expected) < 1e-4 * max(1.0, expected)
    value.backward()
    assert torch.isfinite(s.grad).all()


@given(seeds)
def test_every_counted_token_weighs_the_same(seed):
    """Not a mean of per-review means: duplicating one review's tokens by concatenation changes the weights."""
    s, t, m = case(seed)
    per_token = F.kl_div(torch.log_softmax(s, -1), torch.log_softmax(t, -1), reduction="none", log_target=True).sum(-1)
    expected = (per_token * m).sum() / m.sum()
    assert torch.allclose(losses.token_kl(s, t, m), expected, atol=1e-6)


@given(seeds)
def test_token_cross_entropy_is_pytorchs_with_ignored_positions(seed):
    s, _, m = case(seed)
    ids = torch.randint(0, s.shape[-1], m.shape, generator=torch.Generator().manual_seed(seed))
    ref = F.cross_entropy(s.reshape(-1, s.shape[-1]), ids.masked_fill(m == 0, -100).reshape(-1), ignore_index=-100)
    assert torch.allclose(losses.token_cross_entropy(s, ids, m), ref, atol=1e-6)


@given(seeds, temps)
def test_topk_with_the_whole_vocabulary_is_the_full_kl(seed, T):
    s, t, m = case(seed)
    values, ids = t.topk(t.shape[-1], dim=-1)
    assert torch.allclose(losses.topk_token_kl(s, values, ids, m, T), losses.token_kl(s, t, m, T), atol=1e-5)


@given(seeds, st.integers(1, 10))
def test_topk_is_nonnegative_and_zero_when_the_student_puts_all_its_mass_on_the_teachers_topk(seed, k):
    s, t, m = case(seed)
    values, ids = t.topk(k, dim=-1)
    assert float(losses.topk_token_kl(s, values, ids, m)) >= -1e-6
    # a student equal to the teacher on the top k and -inf elsewhere matches the truncated teacher exactly
    student = torch.full_like(t, -1e4).scatter(-1, ids, values)
    assert abs(float(losses.topk_token_kl(student, values, ids, m))) < 1e-5


def test_gradients_reach_the_student_only_and_are_finite():
    s, t, m = case(0)
    values, ids = t.topk(4, dim=-1)
    for fn, args in ((losses.token_kl, (t,)), (losses.reverse_token_kl, (t,)), (losses.topk_token_kl, (values, ids))):
        x = s.clone().requires_grad_(True)
        teacher = [a.clone().requires_grad_(True) if a.is_floating_point() else a for a in args]
        fn(x, *teacher, m).backward()
        assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0
        assert all(a.grad is None for a in teacher if a.is_floating_point())
        assert float(x.grad[m == 0].abs().sum()) == 0.0  # uncounted positions get no gradient


@given(seeds, temps)
@settings(deadline=None)
def test_reverse_kl_gradient_is_autograd_of_the_float64_formula(seed, T):
    """Guards against a reverse KL whose value is right but whose gradient skips the ``q`` weights
    (``log_q.exp().detach()``): the student's gradient must be that of the formula, through ``q`` and ``log q``."""
    s, t, m = case(seed)
    x = s.clone().requires_grad_(True)
    losses.reverse_token_kl(x, t, m, T).backward()
    ref = s.double().requires_grad_(True)
    log_q, log_p = F.log_softmax(ref / T, -1), F.log_softmax(t.double() / T, -1)
    per_token = (log_q.exp() * (log_q - log_p)).sum(-1)
    (T * T * (per_token * m).sum() / m.sum()).backward()
    assert torch.allclose(x.grad.double(), ref.grad, atol=1e-5, rtol=1e-4)


def test_reverse_kl_is_mode_seeking_and_forward_kl_mean_seeking():
    """The one-peak student (a discretised Gaussian) closest to a two-peak target, found by grid search:
    under forward KL it sits between the peaks and covers both; under reverse KL it sits on one peak."""
    x = torch.arange(41.0)
    p = torch.exp(-(x - 10) ** 2 / 8) + torch.exp(-(x - 30) ** 2 / 8)
    target = p.log()[None, None]
    one = torch.ones(1, 1, dtype=torch.long)

    def best(fn):
        candidates = [(mu, sigma) for mu in range(41) for sigma in [0.5 * k for k in range(1, 41)]]
        return min(candidates, key=lambda c: float(fn((-(x - c[0]) ** 2 / (2 * c[1] ** 2))[None, None], target, one)))
    (mu_f, sigma_f), (mu_r, sigma_r) = best(losses.token_kl), best(losses.reverse_token_kl)
    assert mu_f == 20 and sigma_f > 10
    assert mu_r in (10, 30) and sigma_r == 2.0


def brute_force_rest_kl(s, t, ids, mask):
    """The KL over k + 1 outcomes (the teacher's top k, everything else), position by position, in float64."""
    total, count = 0.0, 0
    for b in range(mask.shape[0]):
        for i in range(mask.shape[1]):
            if mask[b, i]:
                p, q = torch.softmax(t[b, i].double(), -1), torch.softmax(s[b, i].double(), -1)
                top, outside = ids[b, i], torch.ones(len(p), dtype=torch.bool)
                outside[top] = False
                p_rest, q_rest = p[outside].sum(), q[outside].sum()  # an empty rest sums to 0
                kl = float((p[top] * (p[top].log() - q[top].log())).sum())
                if p_rest > 0:
                    kl += float(p_rest * (p_rest.log() - q_rest.log()))
                total += kl
                count += 1
    return total / count


def test_the_rest_bucket_kl_keeps_float64_as_every_other_loss_does():
    """It cast its inputs with .float(), so float64 logits were scored in float32 (a 7e-8 gap to a float64
    reference); bf16 and fp16 still go up to float32."""
    s, t, m = case(0)
    values, ids = t.double().topk(3, dim=-1)
    outside = torch.ones_like(t, dtype=torch.bool).scatter(-1, ids, False)
    log_rest = (torch.softmax(t.double(), -1) * outside).sum(-1).log()
    exact = losses.topk_rest_token_kl(s.double(), values, ids, log_rest, m)
    assert exact.dtype == torch.float64
    assert abs(float(exact) - brute_force_rest_kl(s.double(), t.double(), ids, m)) < 1e-12
    assert losses.topk_rest_token_kl(s.bfloat16(), values.bfloat16(), ids, log_rest.bfloat16(), m).dtype == \
        torch.float32


@given(seeds, st.integers(1, 11))
@settings(deadline=None)
def test_topk_with_a_rest_bucket_is_the_kl_over_the_top_k_and_everything_else(seed, k):
    s, t, m = case(seed)
    values, ids = t.topk(k, dim=-1)
    outside = torch.ones_like(t, dtype=torch.bool).scatter(-1, ids, False)
    log_rest = (torch.softmax(t.double(), -1) * outside).sum(-1).log().float()  # -inf when k = V
    value = float(losses.topk_rest_token_kl(s, values, ids, log_rest, m))
    expected = brute_force_rest_kl(s, t, ids, m)
    assert abs(value - expected) < 1e-4 * max(1.0, expected), (value, expected)
    if k == t.shape[-1]:  # no rest: the full KL
        assert abs(value - float(losses.token_kl(s, t, m))) < 1e-4


def test_the_rest_bucket_keeps_the_teachers_mass_outside_its_top_k_where_plain_top_k_drops_it():
    """Minimised on one position, topk_token_kl puts nearly all the student's mass on the teacher's top 5 (the
    other tokens taught as impossible); with the rest bucket the student keeps the teacher's share outside them."""
    torch.manual_seed(0)
    z_t, one = torch.randn(1, 1, 50) * 1.5, torch.ones(1, 1)
    values, ids = z_t.topk(5, dim=-1)
    teacher_top = float(torch.softmax(z_t, -1).gather(-1, ids).sum())
    log_rest = torch.log1p(-torch.softmax(z_t, -1).gather(-1, ids).sum(-1))
    assert 0.6 < teacher_top < 0.9
    for loss, target in ((lambda z: losses.topk_token_kl(z, values, ids, one), 0.99),
                         (lambda z: losses.topk_rest_token_kl(z, values, ids, log_rest, one), teacher_top)):
        z = torch.zeros(1, 1, 50, requires_grad=True)
        optimizer = torch.optim.Adam([z], lr=0.1)
        for _ in range(500):
            optimizer.zero_grad()
            loss(z).backward()
            optimizer.step()
        student_top = float(torch.softmax(z.detach(), -1).gather(-1, ids).sum())
        assert (student_top > target) if target == 0.99 else abs(student_top - target) < 1e-3, (student_top, target)
    full = values.new_full((1, 1), float("-inf"))  # k = V: an empty rest gives finite gradients
    z = torch.randn(1, 1, 50, requires_grad=True)
    everything = z_t.topk(50, dim=-1)
    losses.topk_rest_token_kl(z, *everything, full, one).backward()
    assert bool(torch.isfinite(z.grad).all())


def test_the_teachers_rest_mass_stays_below_one_on_a_large_nearly_flat_vocabulary():
    """Summed directly in float32, the mass outside the top k of 262,144 nearly equal logits rounded to the whole
    (log 0): the top bucket then got -inf and the loss 0, or nan a rounding the other way."""
    from kd_tutorial.lm_methods import _log_outside
    g = torch.Generator().manual_seed(0)
    flat = 40 + 1e-3 * torch.randn(1, 2, 262_144, generator=g)
    peaked = torch.randn(1, 2, 50, generator=g) * 10
    for z, k in ((flat, 1), (peaked, 5)):
        ids = z.topk(k, -1).indices
        p = z.double().softmax(-1)
        exact = torch.log(1 - p.gather(-1, ids).sum(-1))  # float64
        got = _log_outside(z, ids)
        assert (got < 0).all() and torch.allclose(got.double(), exact, rtol=1e-4, atol=0), (got, exact)


def test_a_target_of_minus_100_never_counts_as_token_0():
    """Hugging Face marks a position to ignore with the label -100; token_cross_entropy scored it as token 0 wherever
    the mask was 1 (2.5630 against F.cross_entropy's 2.8792 in the review's case)."""
    s, _, mask = case(3)
    targets = torch.randint(1, s.shape[-1], mask.shape, generator=torch.Generator().manual_seed(3))
    targets[0, :2] = -100
    everywhere = torch.ones_like(mask)
    expected = F.cross_entropy(s.flatten(0, 1), targets.flatten(), ignore_index=-100)
    assert torch.allclose(losses.token_cross_entropy(s, targets, everywhere), expected)


def test_a_mask_or_a_teacher_for_other_sequences_is_refused_not_broadcast():
    """A (1, L) mask or a (1, L, V) teacher broadcast over a batch gave a number and no error."""
    s, t, mask = case(4)
    k = t.topk(3, -1)
    for call in (lambda m: losses.token_kl(s, t, m), lambda m: losses.reverse_token_kl(s, t, m),
                 lambda m: losses.token_cross_entropy(s, s.argmax(-1), m),
                 lambda m: losses.topk_token_kl(s, k.values, k.indices, m)):
        with pytest.raises(ValueError, match=r"pass one mask row per sequence, of shape \(3, 6\)"):
            call(mask[:1])
    for divergence in (losses.token_kl, losses.reverse_token_kl):
        with pytest.raises(ValueError, match=r"give both as \(batch, length, vocabulary\)"):
            divergence(s, t[:1], mask)
    with pytest.raises(ValueError, match=r"targets \(1, 6\) for logits \(3, 6, 11\); give one target id per "
                                         r"position, of shape \(3, 6\)"):
        losses.token_cross_entropy(s, s.argmax(-1)[:1], mask)
    log_rest = torch.zeros(3, 6) - 1.0
    for call in (lambda ids: losses.topk_token_kl(s, k.values, ids, mask),  # a second review: (1, L, k) ids passed
                 lambda ids: losses.topk_rest_token_kl(s, k.values, ids, log_rest, mask)):  # or failed in torch
        with pytest.raises(ValueError, match=r"the teacher's top-k ids \(1, 6, 3\) and logits \(3, 6, 3\) differ"):
            call(k.indices[:1])
