"""A mutation audit of ex08.q1 and ex09.q1/q2's checks and of the language-model methods they teach: each test fails
on an edit of the check (or of kd_tutorial.lm / lm_methods) that the other tests let through: a tolerance loosened,
a message quoting the wrong quantity, a gradient or evaluation check weakened, a masked or unmasked metric.

The wrong answers are written the way a learner would write them in the notebook.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kd_tutorial import lm, losses
from kd_tutorial import lm_methods as M
from kd_tutorial.grading import registry
from kd_tutorial.grading.core import PASSED
from kd_tutorial.losses import distillation_loss
from kd_tutorial.models import VocabularyMismatchError
from test_grading_review_fixes import assert_fails_with

pytestmark = pytest.mark.usefixtures("one_thread")

EXERCISES = {ex.key: ex for ex in registry.all_exercises()}


def grade(key, fn):
    result = EXERCISES[key].grade(fn)
    assert "\n" not in result.message and len(result.message) < 300, result.message
    return result


# -- ex08.q1: compute_loss under gradient accumulation ----------------------------------------------------------

def _share(s, t, y, n, T=2.0, a=0.5):
    loss = distillation_loss(s, t, y, T, a)
    return loss if n is None else loss * s.shape[0] / n


def test_ex08_the_shortcut_message_quotes_the_weights_of_the_first_step():
    """The first step has micro-batches of 8, 8, 8 and 3 rows: a short review weighs 1/(4 x 3), a full one 1/32,
    where each should weigh 1/27."""
    assert_fails_with("ex08.q1", lambda s, t, y, n, T=2.0, a=0.5: distillation_loss(s, t, y, T, a) / 4,
                      "in a step of 8, 8, 8 and 3 rows", "1/(4 x 3) = 1/12", "full micro-batch 1/32",
                      "instead of 1/27 each")


def test_ex08_an_answer_off_by_half_a_percent_fails():
    assert_fails_with("ex08.q1", lambda *args: 1.005 * _share(*args), "micro-batch 1 returned")


def test_ex08_the_generic_message_quotes_the_micro_batch_that_is_wrong_with_its_rows():
    """Wrong on the short (3-row) micro-batch only: the message names micro-batch 4, its rows and the step's."""
    from kd_tutorial.grading import ex08

    def compute_loss(s, t, y, n, T=2.0, a=0.5):
        return _share(s, t, y, n, T, a) * (1.1 if n is not None and len(y) == 3 else 1.0)
    s, t, y = ex08._steps()[0][0][-1]
    expected = float(distillation_loss(s, t, y, 2.0, 0.5) * 3 / 27)
    assert_fails_with("ex08.q1", compute_loss, "micro-batch 4 returned", f"{1.1 * expected:.5f}",
                      f"is {expected:.5f} (its mean x 3 / 27)")


def test_ex08_right_values_with_a_detached_hard_term_fail_on_the_gradient():
    def compute_loss(s, t, y, n, T=2.0, a=0.5):
        soft = losses.kl_divergence(s, t, T)
        hard = distillation_loss(s, t, y, T, 0.0).detach()  # alpha = 0: the hard term alone
        loss = a * soft + (1 - a) * hard
        return loss if n is None else loss * len(y) / n
    assert_fails_with("ex08.q1", compute_loss, "do not add up to the gradient", "one batch of 27 rows")


def test_ex08_right_values_with_a_gradient_one_percent_off_fail():
    def compute_loss(s, t, y, n, T=2.0, a=0.5):
        loss = _share(s, t, y, n, T, a)
        return loss + 0.01 * (loss - loss.detach())  # the value unchanged, the gradient x 1.01
    assert_fails_with("ex08.q1", compute_loss, "do not add up to the gradient")


def test_ex08_a_loss_of_a_detached_copy_of_the_student_says_no_gradient_reaches_it():
    def compute_loss(s, t, y, n, T=2.0, a=0.5):
        return _share(s.detach().clone().requires_grad_(True), t, y, n, T, a)
    assert_fails_with("ex08.q1", compute_loss, "no gradient reaches student_logits")


def test_ex08_an_evaluation_loss_off_by_one_percent_fails():
    def compute_loss(s, t, y, n, T=2.0, a=0.5):
        return 1.01 * _share(s, t, y, n, T, a) if n is None else _share(s, t, y, n, T, a)
    assert_fails_with("ex08.q1", compute_loss, "with num_items_in_batch=None (evaluation) your loss is")


def test_ex08_an_evaluation_loss_averaging_the_hard_term_over_labelled_rows_fails():
    """The evaluation batch has unlabelled rows: a None branch with the -100 habit is caught there too."""
    def compute_loss(s, t, y, n, T=2.0, a=0.5):
        if n is not None:
            return _share(s, t, y, n, T, a)
        m = y != -1
        return a * losses.kl_divergence(s, t, T) + (1 - a) * F.cross_entropy(s[m], y[m])
    assert_fails_with("ex08.q1", compute_loss, "with num_items_in_batch=None (evaluation) your loss is")


def test_ex08_a_detached_loss_tensor_says_it_carries_no_gradient():
    """A tensor without a graph (not only a float) is named as such, not reported as a crash of backward()."""
    assert_fails_with("ex08.q1", lambda *args: _share(*args).detach(), "your loss carries no gradient")


def test_ex08_passes_num_items_in_batch_as_a_0d_tensor_that_item_reads():
    def compute_loss(s, t, y, n, T=2.0, a=0.5):
        return _share(s, t, y, None if n is None else n.item(), T, a)
    assert grade("ex08.q1", compute_loss).status == PASSED


# -- ex09.q1: the token-level KD loss; ex09.q2: the reverse KL -------------------------------------------------

def _lm_kd(s, t, a, m, T):
    return losses.token_kl(s[:, :-1], t[:, :-1], m[:, 1:], T)


def _reverse_kl(s, t, m):
    return losses.reverse_token_kl(s, t, m)


def test_ex09_q1_an_answer_off_by_half_a_percent_fails():
    assert_fails_with("ex09.q1", lambda *args: 1.005 * _lm_kd(*args), "your loss is")


def test_ex09_q1_the_generic_message_quotes_the_batch_that_is_wrong_and_its_temperature():
    """Wrong at T = 3 only (the third batch): the message quotes that batch's value, not the first's."""
    from kd_tutorial.grading import ex09
    s, t, a, m, T = ex09._lm_cases()[2]
    expected = float(_lm_kd(s, t, a, m, T))
    assert_fails_with("ex09.q1", lambda s, t, a, m, T: _lm_kd(s, t, a, m, T) * (1.1 if T == 3.0 else 1.0),
                      f"your loss is {1.1 * expected:.5f}", f"is {expected:.5f} (T = 3)")


def test_ex09_q1_right_values_with_the_students_normaliser_detached_fail_on_the_gradient():
    def lm_kd_loss(s, t, a, m, T):
        z = s[:, :-1] / T
        log_q = z - z.logsumexp(-1, keepdim=True).detach()  # the value of log_softmax, not its gradient
        log_p = F.log_softmax(t[:, :-1].detach() / T, -1)
        w = m[:, 1:].float()
        return T * T * ((log_p.exp() * (log_p - log_q)).sum(-1) * w).sum() / w.sum()
    assert_fails_with("ex09.q1", lm_kd_loss, "the value is right but the gradient is not")


def test_ex09_q1_right_values_with_a_gradient_one_percent_off_fail():
    def lm_kd_loss(s, t, a, m, T):
        loss = _lm_kd(s, t, a, m, T)
        return loss + 0.01 * (loss - loss.detach())
    assert_fails_with("ex09.q1", lm_kd_loss, "the value is right but the gradient is not")


def test_ex09_q2_an_answer_off_by_half_a_percent_fails():
    assert_fails_with("ex09.q2", lambda *args: 1.005 * _reverse_kl(*args), "your loss is")


def test_ex09_q2_the_generic_message_quotes_the_batch_that_is_wrong():
    from kd_tutorial.grading import ex09
    s, t, m = ex09._rev_cases()[1]
    expected = float(_reverse_kl(s, t, m))

    def reverse_kl_loss(s, t, m):
        return _reverse_kl(s, t, m) * (1.1 if s.shape[0] == 2 else 1.0)  # the second batch has 2 rows
    assert_fails_with("ex09.q2", reverse_kl_loss, f"your loss is {1.1 * expected:.5f}",
                      f"is {expected:.5f} (batch 2 of 3)")


def test_ex09_q2_right_values_with_a_gradient_one_percent_off_fail():
    def reverse_kl_loss(s, t, m):
        loss = _reverse_kl(s, t, m)
        return loss + 0.01 * (loss - loss.detach())
    assert_fails_with("ex09.q2", reverse_kl_loss, "the value is right but the gradient is not")


def _naive_kl(s, t, T):
    """KL from probabilities and their logs: log 0 = -inf where a softmax underflowed (at the garbage padding)."""
    p, q = F.softmax(t.detach() / T, -1), F.softmax(s / T, -1)
    return (p * (p.log() - q.log())).sum(-1)


def test_ex09_q1_a_nan_loss_is_explained_by_0_log_0_at_the_padding():
    def lm_kd_loss(s, t, a, m, T):
        w = m[:, 1:].float()
        return T * T * (_naive_kl(s[:, :-1], t[:, :-1], T) * w).sum() / w.sum()
    assert_fails_with("ex09.q1", lm_kd_loss, "your loss is nan: padded positions", "0 * log 0",
                      "F.log_softmax in lm_kd_loss")


def test_ex09_q2_a_nan_loss_is_explained_by_0_log_0_at_the_padding():
    def reverse_kl_loss(s, t, m):
        q, p, w = F.softmax(s, -1), F.softmax(t.detach(), -1), m.float()
        return ((q * (q.log() - p.log())).sum(-1) * w).sum() / w.sum()
    assert_fails_with("ex09.q2", reverse_kl_loss, "your loss is nan: padded positions", "0 * log 0",
                      "F.log_softmax in reverse_kl_loss")


def test_ex09_q2_a_gradient_that_is_nan_at_the_padding_is_named():
    """The value is right (torch.where drops the padding's nan), the gradient is not: the message says so."""
    def reverse_kl_loss(s, t, m):
        q, p = F.softmax(s, -1), F.softmax(t.detach(), -1)
        kl = (q * (q.log() - p.log())).sum(-1)
        return torch.where(m > 0, kl, 0.0).sum() / m.sum()
    assert_fails_with("ex09.q2", reverse_kl_loss, "the value is right but its gradient is nan")


def test_ex09_q2_an_answer_right_on_one_batch_only_fails():
    def reverse_kl_loss(s, t, m):
        return _reverse_kl(s, t, m) * (1.0 if s.shape[0] == 2 else 0.9)
    assert_fails_with("ex09.q2", reverse_kl_loss, "your loss is")


# -- kd_tutorial.lm and lm_methods: the language-model methods and metrics of notebook 09 -------------------------

V = 12
ROWS = [[lm.BOS_ID, 5, 6, 7, 8, 9, lm.EOS_ID], [lm.BOS_ID, 4, 10, lm.EOS_ID], [lm.BOS_ID, 11, 5, 6, 4, lm.EOS_ID]]


@pytest.fixture(scope="module")
def pair():
    """Two tiny GPTs of one vocabulary with random weights: a teacher and a student."""
    return lm.gpt(V, 1, 16, 2, 16, seed=0).eval(), lm.gpt(V, 1, 16, 2, 16, seed=1).eval()


def _alone(model, row):
    """The model's logits on one row, unpadded (L, V)."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([row])).logits[0]


def test_data_only_scores_the_tokens_after_the_prompt_only(pair):
    _, student = pair
    total, count = 0.0, 0
    for row in ROWS:
        z = _alone(student, row)
        total += float(F.cross_entropy(z[2:-1], torch.tensor(row[3:]), reduction="sum"))
        count += len(row) - 3
    with torch.no_grad():
        assert float(M.data_only(prompt_tokens=3)(student, ROWS)) == pytest.approx(total / count, rel=1e-5)


def test_prompts_of_leaves_out_a_row_with_no_continuation():
    assert M.prompts_of([[1, 5, 2], [1, 5, 6, 2], [1, 5]], 3) == [[1, 5, 6]]


def test_sequence_kd_writes_copies_continuations_of_every_prompt(pair):
    teacher, _ = pair
    rows = M.sequence_kd_rows(teacher, ROWS, prompt_tokens=2, max_length=10, copies=3)
    assert len(rows) == 3 * len(ROWS) and [r[:2] for r in rows] == [r[:2] for r in ROWS] * 3


def test_a_top_k_id_equal_to_the_vocabulary_size_is_refused_as_another_vocabulary(pair):
    _, student = pair
    cache = {tuple(r): (torch.zeros(len(r) - 1, 2), torch.full((len(r) - 1, 2), V - 1)) for r in ROWS}
    cache[tuple(ROWS[0])][1][0, 0] = V  # one id past the student's last
    with pytest.raises(VocabularyMismatchError, match=f"the cached teacher ids reach {V}"):
        M.topk_kd(cache)(student, ROWS)


def test_agreement_and_entropy_count_the_real_tokens_of_padded_rows_only(pair):
    teacher, student = pair
    same = count = entropy = 0.0
    for row in ROWS:
        zs, zt = _alone(student, row)[:-1], _alone(teacher, row)[:-1]
        same += float((zs.argmax(-1) == zt.argmax(-1)).sum())
        log_q = zs.log_softmax(-1)
        entropy += float(-(log_q.exp() * log_q).sum())
        count += len(row) - 1
    assert lm.agreement(student, teacher, ROWS) == pytest.approx(same / count)
    assert lm.mean_entropy(student, ROWS) == pytest.approx(entropy / count, rel=1e-5)


def test_on_policy_with_reverse_uses_the_reverse_kl_on_both_halves(pair, monkeypatch):
    teacher, student = pair
    seen = []
    monkeypatch.setattr(M.losses, "reverse_token_kl", lambda *a, **k: seen.append("reverse") or torch.tensor(0.0))
    monkeypatch.setattr(M.losses, "token_kl", lambda *a, **k: seen.append("forward") or torch.tensor(0.0))
    M.on_policy_kd(teacher, [r[:2] for r in ROWS], M.online(teacher), max_length=8, pool_size=2,
                   reverse=True)(student, ROWS)
    assert seen == ["reverse", "reverse"]


def test_sampling_at_a_tiny_temperature_is_greedy(pair):
    teacher, _ = pair
    rows = lm.sample(teacher, [[lm.BOS_ID, 5]], max_length=8, generator=torch.Generator().manual_seed(0),
                     temperature=1e-4)
    ids = [lm.BOS_ID, 5]
    while len(ids) < 8 and (len(ids) == 2 or ids[-1] != lm.EOS_ID):
        ids.append(int(_alone(teacher, ids)[-1].argmax()))
    assert rows == [ids]


def test_a_sampled_row_keeps_the_end_token_it_wrote():
    assert lm._until([5, lm.EOS_ID, 7], lm.EOS_ID) == [5, lm.EOS_ID] and lm._until([5, 6], lm.EOS_ID) == [5, 6]


def test_the_rest_mass_of_a_peaked_teacher_is_exact_not_zero():
    """The top token holds all but 3 e^-50 of the mass: log(1 - P(top)) rounds to log 0 in float32, the direct sum
    of the rest does not."""
    logits = torch.tensor([[50.0, 0.0, 0.0, 0.0]])
    log_rest = M._log_outside(logits, torch.tensor([[0]]))
    assert float(log_rest) == pytest.approx(float(torch.tensor(3.0).log() - logits.logsumexp(-1)), rel=1e-5)
