"""The KD losses: exact values, gradients, and property tests of the identities the course teaches.

The checks are written as functions of a loss implementation, so that
``test_every_mutant_is_caught`` can run the *same* checks against broken
versions (the classic bugs) and prove that each one makes the suite fail.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kd_tutorial import losses

settings.register_profile("kd", max_examples=40, deadline=None)
settings.load_profile("kd")


def logits_pair(draw_seed: int, batch: int, classes: int, scale: float = 3.0):
    g = torch.Generator().manual_seed(draw_seed)
    s = torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale
    t = torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale
    return s, t


def reference_soft(s, t, T):
    """T^2 * KL(p_t || q_s), by the textbook sum, averaged over the batch."""
    p = torch.softmax(t / T, -1)
    log_q = torch.log_softmax(s / T, -1)
    return T * T * (p * (torch.log(p) - log_q)).sum(-1).mean()


def closed_form_gradient(s, t, labels, T, alpha):
    """d L / d z_s of the Hinton loss, written out: alpha * T * (q_s^T - p_t^T) / B for every row, plus
    (1 - alpha) * (softmax(z_s) - onehot(y)) / B for the labelled rows (an unlabelled row, y = -1, adds nothing)."""
    B, C = s.shape
    grad = alpha * T * (torch.softmax(s / T, -1) - torch.softmax(t / T, -1)) / B
    if labels is not None:
        labelled = labels >= 0
        onehot = F.one_hot(labels.clamp_min(0), C).to(s.dtype)
        grad = grad + (1 - alpha) * (torch.softmax(s, -1) - onehot) * labelled[:, None] / B
    return grad


# --------------------------------------------------------------------------- checks on an implementation
# ``kd(s, t, labels, T, alpha)`` follows the signature of losses.distillation_loss.

def check_value(kd):
    s, t = logits_pair(0, 8, 5)
    labels = torch.tensor([0, 1, 2, 3, 4, -1, -1, 1])
    T, alpha = 3.0, 0.7
    hard = F.cross_entropy(s[labels >= 0], labels[labels >= 0], reduction="sum") / len(labels)  # every row 1/B
    expected = alpha * reference_soft(s, t, T) + (1 - alpha) * hard
    assert torch.allclose(kd(s, t, labels, T, alpha).double(), expected.double(), rtol=1e-5, atol=1e-6)


def check_zero_at_teacher(kd):
    _, t = logits_pair(1, 6, 4)
    assert abs(float(kd(t.clone(), t, None, 2.0, 1.0))) < 1e-6
    s, _ = logits_pair(2, 6, 4)
    assert float(kd(s, t, None, 2.0, 1.0)) > 1e-4


def check_unlabelled_rows_weigh_the_soft_term_by_alpha(kd):
    """No labels (or every row -1): the hard term is 0, the soft one still weighs alpha (not 1)."""
    s, t = logits_pair(4, 5, 3)
    none = kd(s, t, None, 2.0, 0.3)
    assert torch.allclose(none, kd(s, t, torch.full((5,), -1), 2.0, 0.3))
    assert torch.allclose(none, 0.3 * reference_soft(s, t, 2.0))


def check_no_teacher_gradient(kd):
    s, t = logits_pair(3, 4, 3)
    s.requires_grad_(True)
    t.requires_grad_(True)
    kd(s, t, torch.tensor([0, 1, 2, 0]), 2.0, 0.5).backward()
    assert t.grad is None or torch.count_nonzero(t.grad) == 0, "a gradient reached the teacher's logits"
    assert s.grad is not None and torch.count_nonzero(s.grad) > 0, "no gradient reached the student"


def check_batch_invariance(kd):
    s, t = logits_pair(4, 5, 3)
    one = kd(s, t, None, 2.0, 1.0)
    two = kd(torch.cat([s, s]), torch.cat([t, t]), None, 2.0, 1.0)
    assert torch.allclose(one, two, rtol=1e-6)


def check_temperature_scaling(kd):
    """With T^2, the soft gradient keeps its scale as T grows (within the T -> inf limit)."""
    s, t = logits_pair(5, 16, 4, scale=1.0)
    s, t = s - s.mean(-1, keepdim=True), t - t.mean(-1, keepdim=True)
    grads = []
    for T in (10.0, 100.0):
        x = s.clone().requires_grad_(True)
        kd(x, t, None, T, 1.0).backward()
        grads.append(x.grad.norm())
    assert math.isclose(float(grads[0]), float(grads[1]), rel_tol=0.05)


def check_gradient_closed_form(kd):
    s, t = logits_pair(6, 6, 4)
    labels = torch.tensor([0, -1, 3, 1, -1, 2])
    x = s.clone().requires_grad_(True)
    kd(x, t, labels, 3.0, 0.7).backward()
    assert torch.allclose(x.grad, closed_form_gradient(s, t, labels, 3.0, 0.7), rtol=1e-7, atol=1e-12)


CHECKS = [check_value, check_zero_at_teacher, check_unlabelled_rows_weigh_the_soft_term_by_alpha,
          check_no_teacher_gradient, check_batch_invariance, check_temperature_scaling, check_gradient_closed_form]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_distillation_loss(check):
    check(losses.distillation_loss)


# --------------------------------------------------------------------------- mutation check

def _soft_mutant(kind):
    def kd(s, t, labels, T, alpha):
        if kind != "gradient leak":
            t = t.detach()
        if kind == "reduction mean":
            soft = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="mean") * T * T
        elif kind == "no T^2":
            soft = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean")
        elif kind == "probabilities as input":
            soft = F.kl_div(F.softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T * T
        elif kind == "swapped":
            soft = F.kl_div(F.log_softmax(t / T, -1), F.softmax(s / T, -1), reduction="batchmean") * T * T
        elif kind == "teacher on both sides":
            soft = F.kl_div(F.log_softmax(t / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T * T
        elif kind in ("gradient leak", "reference", "alpha ignored without labels"):
            soft = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T * T
        if labels is None or alpha == 1.0:
            return soft if kind == "alpha ignored without labels" else alpha * soft
        return alpha * soft + (1 - alpha) * losses.hard_cross_entropy(s, labels)
    return kd


MUTANTS = ["reduction mean", "no T^2", "probabilities as input", "swapped", "teacher on both sides",
           "gradient leak", "alpha ignored without labels"]


def test_the_unmutated_template_passes():
    """The template with no mutation passes every check, so each mutant fails because of its bug."""
    for check in CHECKS:
        check(_soft_mutant("reference"))


@pytest.mark.filterwarnings("ignore:reduction")
@pytest.mark.parametrize("kind", MUTANTS)
def test_every_mutant_is_caught(kind):
    failures = []
    for check in CHECKS:
        try:
            check(_soft_mutant(kind))
        except (AssertionError, RuntimeError):  # a wrong value, or no gradient path at all
            failures.append(check.__name__)
    assert failures, f"no check fails for the broken loss '{kind}'"


# --------------------------------------------------------------------------- property tests (hypothesis)

seeds = st.integers(0, 10_000)
batches = st.integers(1, 16)
classes = st.integers(2, 10)
temps = st.floats(0.5, 20.0)


@given(seeds, batches, classes, temps)
def test_kl_nonnegative_and_zero_at_teacher(seed, b, c, T):
    s, t = logits_pair(seed, b, c)
    assert float(losses.kl_divergence(s, t, T)) >= -1e-9
    assert abs(float(losses.kl_divergence(t.clone(), t, T))) < 1e-9


@given(seeds, batches, classes, temps, st.integers(2, 4))
def test_invariant_to_batch_duplication(seed, b, c, T, k):
    s, t = logits_pair(seed, b, c)
    labels = torch.arange(b) % c
    one = losses.distillation_loss(s, t, labels, T, 0.5)
    many = losses.distillation_loss(s.repeat(k, 1), t.repeat(k, 1), labels.repeat(k), T, 0.5)
    assert torch.allclose(one, many, rtol=1e-6, atol=1e-9)


@given(seeds, batches, classes, temps)
def test_soft_cross_entropy_and_kl_have_equal_gradients(seed, b, c, T):
    s, t = logits_pair(seed, b, c)
    x1, x2 = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    kl, ce = losses.kl_divergence(x1, t, T), losses.soft_cross_entropy(x2, t, T)
    kl.backward()
    ce.backward()
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-6, atol=1e-10)
    # ... but the values differ by T^2 times the teacher's entropy
    p = torch.softmax(t / T, -1)
    entropy = -(p * torch.log(p)).sum(-1).mean()
    assert torch.allclose(ce - kl, T * T * entropy, rtol=1e-6, atol=1e-8)


@given(seeds, batches, classes, temps, st.floats(0.0, 1.0), st.integers(0, 2 ** 16 - 1))
def test_gradient_matches_the_closed_form(seed, b, c, T, alpha, label_bits):
    """The gradient the student gets: T (q - p) / B from the soft term (the T^2 factor leaves one T, where
    KL alone would give (q - p) / (T B)), softmax - onehot from the hard one, on labelled rows only."""
    s, t = logits_pair(seed, b, c)
    labels = torch.tensor([i % c if label_bits >> i & 1 else -1 for i in range(b)])
    x = s.clone().requires_grad_(True)
    losses.distillation_loss(x, t, labels, T, alpha).backward()
    assert torch.allclose(x.grad, closed_form_gradient(s, t, labels, T, alpha), rtol=1e-7, atol=1e-12)
    # the value agrees with PyTorch's own KL (batch mean) times T^2
    unscaled = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean")
    assert torch.allclose(unscaled * T * T, losses.kl_divergence(s, t, T), rtol=1e-9)


@given(seeds, batches, classes)
def test_high_temperature_limit_is_half_logit_mse(seed, b, c):
    s, t = logits_pair(seed, b, c, scale=1.0)
    s, t = s - s.mean(-1, keepdim=True), t - t.mean(-1, keepdim=True)
    target = 0.5 * losses.logit_mse(s, t).double()
    errors, grad_errors = [], []
    # The error falls like c1/T + c2/T^2 + ...: at a moderate T the two terms can cancel by chance (seed 2467, b=c=7:
    # 1.9e-5 at T=5, 3.8e-4 at T=50, 4.1e-5 at T=500), so compare the limit with the worse of two moderate temperatures,
    # which no single cancellation can make small. Beyond T of about 1e4, float64 rounding takes over: T^2 x 2.2e-16 is
    # about 5.6e-9 at T = 5000, the floor below which nearly equal logits (seed 4637, b=1, c=2: 1.6e-9) cannot go.
    for T in (5.0, 50.0, 5000.0):
        x = s.clone().requires_grad_(True)
        value = losses.kl_divergence(x, t, T).double()
        value.backward()
        y = s.clone().requires_grad_(True)
        (0.5 * losses.logit_mse(y, t)).backward()
        errors.append(abs(float(value.detach() - target)))
        grad_errors.append(float((x.grad - y.grad).norm()))
    assert errors[2] <= 0.1 * max(errors[:2]) + 1e-8
    assert errors[2] < 1e-3 * float(target) + 1e-8  # the float64 floor above: 5.0e-9 at seed 7679, b=1, c=2
    assert grad_errors[2] <= 0.1 * max(grad_errors[:2]) + 1e-12
    assert grad_errors[2] < 1e-3 * float(y.grad.norm()) + 1e-9


# --------------------------------------------------------------------------- the other functions

@given(seeds, batches, classes, temps)
def test_softmax_with_temperature(seed, b, c, T):
    s, _ = logits_pair(seed, b, c)
    p = losses.softmax_with_temperature(s, T)
    assert torch.allclose(p, torch.softmax(s / T, -1))
    assert torch.allclose(p.sum(-1), torch.ones(b, dtype=p.dtype))


def test_temperature_flattens_and_sharpens():
    z = torch.tensor([[3.0, 1.0, 0.0]])
    ent = lambda p: float(-(p * p.log()).sum())  # noqa: E731
    assert ent(losses.softmax_with_temperature(z, 0.5)) < ent(losses.softmax_with_temperature(z, 1)) \
        < ent(losses.softmax_with_temperature(z, 5))
    with pytest.raises(ValueError, match="temperature must be a finite number above 0"):
        losses.softmax_with_temperature(z, 0)


@pytest.mark.parametrize("T", [0, -2.0, float("nan"), float("inf"), "abc", None])
def test_every_tempered_loss_refuses_a_temperature_that_is_not_positive(T):
    """T = 0 gave nan and T < 0 a loss that rewards the wrong class, silently; T = inf a loss of nan, and a word
    Python's own "could not convert string to float"."""
    s, t = logits_pair(1, 4, 3)
    m = torch.ones(4, 1)
    for call in (lambda: losses.kl_divergence(s, t, T), lambda: losses.soft_cross_entropy(s, t, T),
                 lambda: losses.distillation_loss(s, t, None, T), lambda: losses.token_kl(s[:, None], t[:, None], m, T),
                 lambda: losses.reverse_token_kl(s[:, None], t[:, None], m, T)):
        with pytest.raises(ValueError, match="temperature must be a finite number above 0"):
            call()


def test_any_negative_label_is_unlabelled_in_the_hard_loss():
    """The course marks a transfer review -1; transformers' ignore index is -100. Either must add 0, not be
    clamped to class 0 and trained on."""
    s, _ = logits_pair(3, 4, 2)
    course = losses.hard_cross_entropy(s, torch.tensor([1, -1, 0, -1]))
    assert torch.equal(losses.hard_cross_entropy(s, torch.tensor([1, -100, 0, -100])), course)
    expected = F.cross_entropy(s[[0, 2]], torch.tensor([1, 0]), reduction="sum") / 4
    assert torch.allclose(course, expected)


def test_logit_mse_matches_pytorch():
    s, t = logits_pair(7, 4, 3)
    assert torch.allclose(losses.logit_mse(s, t).double(), F.mse_loss(s, t).double())


def test_unlabelled_rows_never_reach_the_cross_entropy():
    s, t = logits_pair(8, 4, 2)
    labels = torch.tensor([1, -1, 0, -1])
    hard = losses.hard_cross_entropy(s, labels)
    # the two labelled rows' cross-entropies, each weighing 1/4 of the batch
    assert torch.allclose(hard.double(), F.cross_entropy(s[[0, 2]], labels[[0, 2]]).double() / 2)
    # all unlabelled: the hard term is zero and alpha * soft is all that is left
    none = torch.full((4,), -1)
    assert float(losses.hard_cross_entropy(s, none)) == 0.0
    assert torch.allclose(losses.distillation_loss(s, t, none, 2.0, 0.5), 0.5 * losses.kl_divergence(s, t, 2.0))


def test_alpha_out_of_range_is_refused():
    s, t = logits_pair(9, 2, 2)
    with pytest.raises(ValueError, match="alpha must be in"):
        losses.distillation_loss(s, t, None, 2.0, 1.5)


def test_seed_article_loss_is_not_hintons():
    """F.cross_entropy(student, softmax(teacher)) has no temperature and no hard term: it differs."""
    s, t = logits_pair(10, 8, 2)
    labels = torch.tensor([0, 1] * 4)
    seed_loss = F.cross_entropy(s, torch.softmax(t, -1))
    assert not torch.allclose(seed_loss.double(), losses.distillation_loss(s, t, labels, 2.0, 0.5).double())


@pytest.mark.parametrize("teacher_shape", [(4, 1), (1, 3), (4, 2)])
def test_logit_losses_refuse_teacher_logits_of_another_shape(teacher_shape):
    """A (4, 1) teacher (one logit per review) or a (1, 3) one (one row for the batch) broadcast inside F.kl_div and
    gave a number, no error: a student distilled from nothing that it could learn."""
    s = logits_pair(11, 4, 3)[0]
    t = torch.randn(*teacher_shape, dtype=torch.float64)
    for call in (lambda: losses.kl_divergence(s, t, 2.0), lambda: losses.soft_cross_entropy(s, t, 2.0),
                 lambda: losses.logit_mse(s, t), lambda: losses.distillation_loss(s, t, torch.tensor([0, 1, 2, -1]))):
        with pytest.raises(ValueError, match=r"give both as \(rows, classes\)"):
            call()


def test_one_review_s_logits_must_keep_their_batch_axis():
    """``batchmean`` divides by the first axis: one review's (C,) logits gave the KL divided by C, silently."""
    s, t = logits_pair(12, 1, 3)
    assert float(losses.kl_divergence(s, t, 2.0)) > 0  # (1, C): a batch of one review
    with pytest.raises(ValueError, match=r"one row: logits\[None\]"):
        losses.kl_divergence(s[0], t[0], 2.0)


@pytest.mark.parametrize("labels", [[0, 2, -1, 1], torch.tensor([0.0, 2.0, 1.0, 1.0]), torch.tensor([0, 1]),
                                    torch.tensor([[0], [2], [1], [1]])])
def test_the_hard_loss_names_the_labels_it_needs(labels):
    """A Python list stopped on ``'>=' not supported``, a float tensor or a column deep in F.cross_entropy."""
    s, t = logits_pair(13, 4, 3)
    for call in (lambda: losses.hard_cross_entropy(s, labels), lambda: losses.distillation_loss(s, t, labels)):
        with pytest.raises(ValueError, match=r"labels: give a torch.long tensor of shape \(4,\)"):
            call()


def test_half_precision_logits_are_scored_in_float32():
    """Guards against losses computed in the bf16 / fp16 that autocast hands them: a KL of near-equal rows, or a
    loss logged to four digits, then reads bf16's 3 significant digits. Each equals its float32 value."""
    g = torch.Generator().manual_seed(0)
    s, t = (torch.randn(8, 2, generator=g).bfloat16() for _ in range(2))
    labels = torch.tensor([0, 1] * 4)
    pairs = ((losses.kl_divergence(s, t, 2.0), losses.kl_divergence(s.float(), t.float(), 2.0)),
             (losses.distillation_loss(s, t, labels), losses.distillation_loss(s.float(), t.float(), labels)),
             (losses.logit_mse(s.half(), t.half()), losses.logit_mse(s.float(), t.float())))
    for value, exact in pairs:
        assert value.dtype == torch.float32 and torch.allclose(value, exact, rtol=1e-6, atol=0)


def test_distillation_loss_defaults_to_temperature_2_and_alpha_one_half():
    """Notebook 05 calls distillation_loss(z_s, z_t, y) and its text reads T = 2, alpha = 0.5."""
    s, t = logits_pair(7, 8, 3)
    y = torch.tensor([0, 1, 2, -1, 0, 1, 2, 0])
    torch.testing.assert_close(losses.distillation_loss(s, t, y), losses.distillation_loss(s, t, y, 2.0, 0.5))
    assert not torch.allclose(losses.distillation_loss(s, t, y), losses.distillation_loss(s, t, y, 1.0, 0.5))


def test_the_losses_refuse_labels_past_the_classes_an_empty_batch_and_logits_that_are_no_float_tensor():
    """Each gave torch's own error or a nan: labels [0, 1, 2] for two classes an IndexError ("Target 2 is out of
    bounds"), an empty batch a loss of nan, logits as a list an AttributeError ('list' has no 'dim'), integer logits
    "log_softmax ... not implemented for 'Long'". Now one line each, naming the fix; -1 (unlabelled) still counts 0."""
    s, t = logits_pair(5, 4, 2)
    y = torch.tensor([0, 1, 1, 0])
    cases = [
        (lambda: losses.distillation_loss(s, t, torch.tensor([0, 1, 2, 0])),
         r"^labels: class id 2 for the student's logits of 2 classes; give ids from 0 to 1 \(-1: unlabelled\)"),
        (lambda: losses.hard_cross_entropy(s, torch.tensor([0, 5, 1, 0])), r"^labels: class id 5 .* of 2 classes"),
        (lambda: losses.distillation_loss(s[:0], t[:0], y[:0]), r"^kl_divergence: the batch has no rows"),
        (lambda: losses.hard_cross_entropy(s[:0], y[:0]), r"^hard_cross_entropy: the batch has no rows"),
        (lambda: losses.logit_mse(s[:0], t[:0]), r"^logit_mse: the batch has no rows"),
        (lambda: losses.distillation_loss(s.tolist(), t, y), r"^kl_divergence: student logits are a list; give a "
                                                             r"float tensor of logits"),
        (lambda: losses.distillation_loss(s, t.long(), y), r"^kl_divergence: teacher logits are a torch.int64 tensor; "
                                                           r"give a float tensor of logits"),
        (lambda: losses.hard_cross_entropy(s.long(), y), r"^hard_cross_entropy: student logits are a torch.int64"),
        (lambda: losses.soft_cross_entropy(s, t.tolist()), r"^soft_cross_entropy: teacher logits are a list"),
        (lambda: losses.softmax_with_temperature([1.0, 2.0], 2), r"^softmax_with_temperature: the logits are a list"),
        (lambda: losses.token_kl(s[:, None].long(), t[:, None], torch.ones(4, 1)), r"^token_kl: student logits are "
                                                                                    r"a torch.int64 tensor")]
    for call, match in cases:
        with pytest.raises(ValueError, match=match) as error:
            call()
        assert "\n" not in str(error.value)
    unlabelled = torch.tensor([0, 1, -1, -100])
    assert torch.isfinite(losses.distillation_loss(s, t, unlabelled)) and torch.isfinite(losses.hard_cross_entropy(
        s, unlabelled))
