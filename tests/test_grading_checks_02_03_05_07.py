"""Wrong answers to exercises 02, 03, 05 and 07 that a mutation audit of their checks found untested: a check could be
loosened (a diagnosis dropped, a tolerance widened, a crash blamed on the wrong cause, the fix left out of a message)
and every other test still passed. Each test passes on the checks as they are and fails on its mutant.

The wrong answers are written the way a learner would write them in the notebook.
"""
from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F

from kd_tutorial.grading import registry
from kd_tutorial.grading.core import ERROR
from kd_tutorial.losses import distillation_loss
from test_grading_catalogue import _accumulate, _hard, _soft, _step, reference_solution
from test_grading_review_fixes import assert_fails_with

EXERCISES = {ex.key: ex for ex in registry.all_exercises()}

pytestmark = pytest.mark.usefixtures("one_thread")


# -- ex02.q1: softmax with temperature --------------------------------------------------------------------------
def test_ex02_q1_an_overflowing_softmax_is_told_to_subtract_the_largest_logit():
    """exp(z / T) / sum: inf / inf = nan at T = 1 already; the message names the fix, not only the symptom."""
    assert_fails_with("ex02.q1", lambda z, T=1.0: torch.exp(z / T) / torch.exp(z / T).sum(-1, keepdim=True),
                      "nan/inf for large logits (e.g. 1000): subtract the largest logit before exp")


# -- ex02.q2: entropy -------------------------------------------------------------------------------------------
def test_ex02_q2_a_nan_entropy_is_told_to_use_xlogy():
    assert_fails_with("ex02.q2", lambda p: -(p * p.log()).sum(-1),
                      "0 * log(0) counts as 0 (use torch.special.xlogy(p, p), or mask the zeros)")


def test_ex02_q2_an_entropy_wrong_on_one_distribution_only_quotes_log_8():
    """A 1-D input handled on its own, averaged over the classes: wrong on the uniform distribution only."""
    def entropy(p):
        h = -torch.special.xlogy(p, p)
        return h.sum(-1) if p.dim() > 1 else h.mean()
    assert_fails_with("ex02.q2", entropy, "your entropy of the uniform distribution over 8 classes is 0.2599, "
                      "expected log(8) = 2.0794")


def test_ex02_q2_the_generic_message_quotes_a_distribution_where_the_entropy_differs():
    """log(p) floored at 0.01 "to avoid log 0": right on every distribution without a probability under 0.01."""
    message = assert_fails_with("ex02.q2", lambda p: -(p * p.clamp_min(0.01).log()).sum(-1),
                                "for the distribution p = ")
    got, want = re.search(r"your entropy is (\S+), expected -sum p log p = (\S+)$", message).groups()
    assert got != want, message


# -- ex03.q1: the soft loss -------------------------------------------------------------------------------------
def test_ex03_q1_the_generic_message_quotes_the_reference_of_the_batch_it_names():
    """Right at T = 2 (the first batch) only: the message names the second batch and its own reference value."""
    from kd_tutorial.grading import ex03
    from kd_tutorial.losses import kl_divergence

    def soft_kd_loss(s, t, T):
        return _soft(s, t, T) * (1.0 if T == 2.0 else 1.37)
    s, t, T = ex03._cases()[1]
    assert_fails_with("ex03.q1", soft_kd_loss, f"is {float(kl_divergence(s, t, T)):.4f} (B=5, C=3, T=3.0)")


# -- ex03.q2: the full loss -------------------------------------------------------------------------------------
def test_ex03_q2_a_crash_on_a_fully_labelled_batch_is_not_blamed_on_unlabelled_rows():
    """Float labels crash F.cross_entropy on the first batch, which holds no -1: the crash is shown as it is."""
    def kd_loss(s, t, y, T=2.0, a=0.5):
        return a * _soft(s, t, T) + (1 - a) * F.cross_entropy(s, y.float())
    result = EXERCISES["ex03.q2"].grade(kd_loss)
    assert result.status == ERROR and "unlabelled" not in result.message, result


def test_ex03_q2_a_crash_on_label_minus_one_names_the_labelled_rows():
    assert_fails_with("ex03.q2", lambda s, t, y, T=2.0, a=0.5: a * _soft(s, t, T) + (1 - a) * F.cross_entropy(s, y),
                      "keep the rows with labels >= 0, e.g. F.cross_entropy(logits[labelled], labels[labelled], "
                      "reduction='sum') / batch size")


def test_ex03_q2_a_row_labelled_minus_100_is_unlabelled_too():
    """Any negative label is unlabelled, as in kd_tutorial.losses: ignore_index=-1 passes every batch labelled -1 and
    crashes on -100; a mask of labels >= 0 (the solution), or -100 mapped to the ignored -1, passes."""
    assert_fails_with("ex03.q2", lambda s, t, y, T=2.0, a=0.5: a * _soft(s, t, T) + (1 - a) * _hard(s, y),
                      "your loss fails on a batch whose unlabelled rows are labelled -100", "ignore_index=-1 ignores "
                      "-1 only: keep the rows with labels >= 0")

    def kd_loss_mapped(s, t, y, T=2.0, a=0.5):
        return a * _soft(s, t, T) + (1 - a) * _hard(s, y.clamp_min(-1))
    assert EXERCISES["ex03.q2"].grade(kd_loss_mapped).status == "passed"

    def kd_loss_drops_minus_100(s, t, y, T=2.0, a=0.5):  # the -100 rows left out of B: wrong value, no crash
        keep = y != -100
        return a * _soft(s[keep], t[keep], T) + (1 - a) * _hard(s[keep], y[keep])
    assert_fails_with("ex03.q2", kd_loss_drops_minus_100, "on a batch whose unlabelled rows are labelled -100 your "
                      "loss is ", "any negative label marks an unlabelled review")


def test_ex03_reduction_messages_give_the_factor_of_the_batch_they_quote():
    """reduction='mean' divides by C and 'sum' multiplies by B, which differ from batch to batch (q1's: C = 4, 3, 6,
    2): each message says the factor is C (or B) and quotes it for the first batch, q1's (C = 4, B = 3) and q2's
    (C = 3), not q1's C for q2."""
    from kd_tutorial.grading import ex03
    classes = [s.shape[1] for s, _, _ in ex03._cases()]
    assert len(set(classes)) > 1 and classes[0] == 4 and ex03._label_cases()[0][0].shape == (4, 3)
    for s, t, T in ex03._cases():  # the claim behind "C times for C classes", in every batch
        torch.testing.assert_close(_kd_mean(s, t, T) * s.shape[1], _soft(s, t, T))
    assert_fails_with("ex03.q1", lambda s, t, T: _kd_mean(s, t, T), "your loss is 4x too small on a batch of 4 "
                      "classes (C times for C classes)")
    assert_fails_with("ex03.q1", lambda s, t, T: _soft(s, t, T) * s.shape[0], "your loss is 3x too large on a "
                      "batch of 3 reviews (B times for a batch of B)")
    message = assert_fails_with("ex03.q2", lambda s, t, y, T=2.0, a=0.5: a * _kd_mean(s, t, T) + (1 - a) * _hard(s, y),
                                "your soft term is 3x too small on a batch of 3 classes (C times for C classes)")
    assert "4x" not in message, message


def _kd_mean(s, t, T):
    """T^2 * KL with reduction='mean' (the learner's mistake): batchmean / C."""
    return F.kl_div(F.log_softmax(s / T, -1), F.softmax(t.detach() / T, -1), reduction="sum") / s.numel() * T * T


def test_ex03_q2_a_crash_on_a_batch_of_unlabelled_reviews_only_is_named():
    """The labelled rows' losses stacked: fine while one review is labelled, torch.stack([]) on none."""
    def kd_loss(s, t, y, T=2.0, a=0.5):
        rows = [F.cross_entropy(s[i:i + 1], y[i:i + 1]) for i in range(len(y)) if y[i] != -1]
        return a * _soft(s, t, T) + (1 - a) * torch.stack(rows).sum() / len(y)
    assert_fails_with("ex03.q2", kd_loss, "your loss fails on a batch of unlabelled reviews only (all labels -1)",
                      "The hard term is 0 there")


def test_ex03_q2_names_the_seed_articles_loss():
    assert_fails_with("ex03.q2", lambda s, t, y, T=2.0, a=0.5: F.cross_entropy(s, F.softmax(t, -1)),
                      "this is the seed article's loss", "no hard-label term")


def test_ex03_q2_names_a_temperature_fixed_at_the_default():
    assert_fails_with("ex03.q2", lambda s, t, y, T=2.0, a=0.5: distillation_loss(s, t, y, 2.0, a),
                      "your loss ignores its temperature argument (it computed temperature = 2 whatever it was given)")


def test_ex03_q2_refuses_a_batch_of_unlabelled_reviews_given_the_soft_term_unweighted():
    """No labels, so "the loss is the soft term": alpha forgotten on the all-unlabelled batch only."""
    def kd_loss(s, t, y, T=2.0, a=0.5):
        if bool((y == -1).all()):
            return _soft(s, t, T)
        return a * _soft(s, t, T) + (1 - a) * _hard(s, y)
    assert_fails_with("ex03.q2", kd_loss, "on a batch of unlabelled reviews only (all labels -1) the hard term must "
                      "be 0")


# -- ex03.q3: gradient accumulation -----------------------------------------------------------------------------
def test_ex03_q3_a_student_run_on_the_whole_batch_is_told_never_to():
    def accumulated_kd_step(student, optimizer, x, t, y, k, T=2.0, a=0.5):
        optimizer.zero_grad()
        logits = student(x)  # the whole batch at once, then cut
        total = 0.0
        for s, ts, ys in zip(logits.chunk(k), t.chunk(k), y.chunk(k)):
            loss = (a * _soft(s, ts, T) + (1 - a) * _hard(s, ys)) / k
            loss.backward(retain_graph=True)
            total += loss.item()
        optimizer.step()
        return total
    assert_fails_with("ex03.q3", accumulated_kd_step, "saw 8 rows at once", ", never on the whole batch")


def test_ex03_q3_refuses_micro_batches_of_a_rounded_up_size():
    """inputs.split(B // K + 1): pieces of 3, 3 and 2 rows where K = 4 asks for 4 pieces of 2."""
    def accumulated_kd_step(student, optimizer, x, t, y, k, T=2.0, a=0.5):
        size = len(x) // k + 1
        optimizer.zero_grad()
        total = 0.0
        for xs, ts, ys in zip(x.split(size), t.split(size), y.split(size)):
            s = student(xs)
            loss = (a * _soft(s, ts, T) + (1 - a) * _hard(s, ys)) / k
            loss.backward()
            total += loss.item()
        optimizer.step()
        return total
    assert_fails_with("ex03.q3", accumulated_kd_step, "saw 3 rows at once, but with micro_batches=4 and a batch of 8")


def test_ex03_q3_refuses_a_step_every_two_micro_batches():
    def accumulated_kd_step(student, optimizer, x, t, y, k, T=2.0, a=0.5):
        optimizer.zero_grad()
        total = 0.0
        for i, (xs, ts, ys) in enumerate(zip(x.chunk(k), t.chunk(k), y.chunk(k))):
            s = student(xs)
            loss = (a * _soft(s, ts, T) + (1 - a) * _hard(s, ys)) / k
            loss.backward()
            total += loss.item()
            if i % 2 == 1:
                optimizer.step()
        return total
    assert_fails_with("ex03.q3", accumulated_kd_step, "you called optimizer.step() 2 times: one step per call")


def test_ex03_q3_an_update_half_a_percent_off_fails():
    """Each micro-batch's loss divided by K - 0.02 (a constant typed in): 0.5 % too large an update."""
    def accumulated_kd_step(student, optimizer, x, t, y, k, T=2.0, a=0.5):
        optimizer.zero_grad()
        total = 0.0
        for xs, ts, ys in zip(x.chunk(k), t.chunk(k), y.chunk(k)):
            s = student(xs)
            loss = (a * _soft(s, ts, T) + (1 - a) * _hard(s, ys)) / (k - 0.02)
            loss.backward()
            total += loss.item()
        optimizer.step()
        return total
    assert_fails_with("ex03.q3", accumulated_kd_step, "differs from one step on the whole batch of 8 rows")


def test_ex03_q3_names_the_last_micro_batch_alone_and_undivided():
    assert_fails_with("ex03.q3", lambda *a: _accumulate(*a, zero="every", divide=False),
                      "only the last micro-batch reached the update (and it is not divided by K)")


def test_ex03_q3_names_leaked_gradients_and_an_update_k_times_too_large():
    assert_fails_with("ex03.q3", lambda *a: _accumulate(*a, zero="never", divide=False),
                      "leaked into this one (call optimizer.zero_grad() first), and your update is 4x too large")


def test_ex03_q3_a_returned_loss_half_a_percent_off_fails_and_names_the_fix():
    assert_fails_with("ex03.q3", lambda *a: 1.005 * _accumulate(*a), "the update is right, but you returned",
                      "return the sum of the K scaled micro-batch losses (as a float)")


def test_ex03_q3_returning_the_last_micro_batch_loss_names_the_fix():
    def accumulated_kd_step(student, optimizer, x, t, y, k, T=2.0, a=0.5):
        optimizer.zero_grad()
        for xs, ts, ys in zip(x.chunk(k), t.chunk(k), y.chunk(k)):
            s = student(xs)
            loss = (a * _soft(s, ts, T) + (1 - a) * _hard(s, ys)) / k
            loss.backward()
        optimizer.step()
        return loss.item()  # the last micro-batch's share only
    assert_fails_with("ex03.q3", accumulated_kd_step, "return the sum of the K scaled micro-batch losses")


# -- ex05.q1: the fixed distillation step -----------------------------------------------------------------------
def test_ex05_q1_a_rounded_loss_fails_with_both_values():
    """Every bug fixed, the loss rounded to 3 decimals "for display": a fraction of a percent off; the message quotes
    the learner's loss and the reference's, which differ."""
    message = assert_fails_with("ex05.q1", lambda *a: round(_step(*a), 3), "the loss of your first step is")
    got, want = re.search(r"first step is (\S+), expected (\S+) ", message).groups()
    assert got != want, message


def test_ex05_q1_refuses_a_step_that_leaves_the_student_in_eval_mode():
    """student.eval() at the end "ready for evaluation", and no student.train() at the start: the second step runs
    the student in eval mode (the toy student has no dropout, so every value still matches)."""
    def distillation_step(student, teacher, batch, optimizer, temperature=2.0, alpha=0.5):
        teacher.eval()
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with torch.no_grad():
            t = teacher(**inputs).logits
        loss = distillation_loss(student(**inputs).logits, t, batch["labels"], temperature, alpha)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        student.eval()
        return loss.item()
    assert_fails_with("ex05.q1", distillation_step, "the student ran in eval mode: call student.train() in the step")


def test_ex05_q1_refuses_a_step_that_changes_the_teachers_weights():
    """The teacher cast to half precision once its soft labels are computed ("to save memory"): the caller's teacher
    is changed."""
    def distillation_step(student, teacher, batch, optimizer, temperature=2.0, alpha=0.5):
        loss = _step(student, teacher.float(), batch, optimizer, temperature, alpha)
        teacher.half()
        return loss
    assert_fails_with("ex05.q1", distillation_step, "the teacher's weights changed")


# -- ex05.q2: a DistilBERT-style student ------------------------------------------------------------------------
def test_ex05_q2_refuses_a_head_with_another_number_of_labels():
    from transformers import BertForSequenceClassification

    def init_student_from_teacher(teacher, layer_map):
        config = copy.deepcopy(teacher.config)
        config.num_hidden_layers, config.num_labels = len(layer_map), 3  # negative, neutral, positive
        student = BertForSequenceClassification(config)
        student.bert.embeddings.load_state_dict(teacher.bert.embeddings.state_dict())
        for j, i in enumerate(layer_map):
            student.bert.encoder.layer[j].load_state_dict(teacher.bert.encoder.layer[i].state_dict())
        student.bert.pooler.load_state_dict(teacher.bert.pooler.state_dict())
        return student
    assert_fails_with("ex05.q2", init_student_from_teacher, "the student's classification head should have the "
                      "teacher's shape")


def test_ex05_q2_refuses_the_encoder_alone():
    """student.bert returned: a BertModel, without the classification head the exercise asks for."""
    def init_student_from_teacher(teacher, layer_map):
        return reference_solution("ex05.q2")(teacher, layer_map).bert
    assert_fails_with("ex05.q2", init_student_from_teacher, "a BertForSequenceClassification (with .bert and "
                      ".classifier)")


# -- ex07.q1: masked attention KL -------------------------------------------------------------------------------

def test_ex07_q1_the_generic_message_names_the_batch_that_differs():
    """The number of heads written in as 2 (the first batch's): wrong on the batches with 3 and 4 heads only."""
    def attention_kl_loss(s, t, m):
        p = t.detach()
        rows = (p * (p.clamp_min(1e-12).log() - s.clamp_min(1e-12).log())).masked_fill(m[:, None, None, :] == 0, 0)
        return (rows.sum(-1) * m[:, None, :]).sum() / (2 * m.sum())
    assert_fails_with("ex07.q1", attention_kl_loss, "(lengths (5, 5, 3, 1))")


# -- ex07.q3: masked token KL -----------------------------------------------------------------------------------
def test_ex07_q3_refuses_a_right_value_whose_gradient_reaches_the_padded_positions():
    """The padded tokens' KL added and taken away again with .detach(): the value is right, the gradient is not."""
    def token_kd_loss(s, t, m, T):
        per_token = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t.detach() / T, -1), reduction="none").sum(-1)
        padded = (per_token * (1 - m)).sum()
        return T ** 2 * ((per_token * m).sum() + padded - padded.detach()) / m.sum()
    assert_fails_with("ex07.q3", token_kd_loss, "a gradient reaches the student's logits at padded positions")


def test_ex07_q3_the_generic_message_names_the_batch_that_differs():
    """Right at T = 1 only (the second batch): the message quotes the first batch, where it differs."""
    def token_kd_loss(s, t, m, T):
        per_token = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t.detach() / T, -1), reduction="none").sum(-1)
        return T ** 2.1 * (per_token * m).sum() / m.sum()
    assert_fails_with("ex07.q3", token_kd_loss, "on batch 1 of 3, T = 2")


# -- defects the audit found, fixed: a near miss quoted with digits that differ; a crash blamed on its cause -
def test_ex02_q1_a_softmax_in_half_precision_is_quoted_with_values_that_differ():
    """Logits cast to float16 "to save memory": about 1e-4 off, and the message quoted two identical rows."""
    message = assert_fails_with("ex02.q1", lambda z, T=1.0: torch.softmax(z.half() / T, -1),
                                "your probabilities differ from softmax(z / T)")
    got, want = re.search(r"you returned (\[.*\]), expected (\[.*\])$", message).groups()
    assert got != want, message


def test_ex03_q4_a_crash_after_renaming_lead_ci_in_the_rows_is_the_learners():
    """lead_ci renamed in the caller's rows, then the list of rows indexed with the default pair (a TypeError)."""
    def choose_setting(sweep, default=(2.0, 0.5)):
        for r in sweep:
            r["lead"] = r.pop("lead_ci")  # a shorter name
        best = max(sweep, key=lambda r: r["val_acc"])
        base = sweep[default]
        return default if best["val_acc"] - base["val_acc"] <= best["lead"] else (best["temperature"], best["alpha"])
    result = EXERCISES["ex03.q4"].grade(choose_setting)
    assert result.message == "q4: `choose_setting` raised TypeError: list indices must be integers or slices, not tuple"
