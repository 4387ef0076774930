"""Wrong answers to exercises 01, 04 and 06 that a fourth mutation audit of their checks found untested: a check
could be loosened (a diagnosis dropped, a case or a condition skipped, a message quoting the wrong number) and
every other test still passed. Each test passes on the checks as they are and fails on its mutant.

The wrong answers are written the way a learner would write them in the notebook.
"""
from __future__ import annotations

import math
import random
import time
import timeit

import pytest
import torch

from kd_tutorial.grading import registry
from kd_tutorial.grading.core import PASSED
from test_grading_catalogue import _student, reference_solution
from test_grading_review_fixes import assert_fails_with

EXERCISES = {ex.key: ex for ex in registry.all_exercises()}

pytestmark = pytest.mark.usefixtures("one_thread")


# -- ex01.q1: multi-head attention -----------------------------------------------------------------------------
def _attention(x, attention_mask, w_qkv, b_qkv, num_heads, *, scaled=True, masking="fill", fill=float("-inf")):
    B, L, H = x.shape
    d = H // num_heads
    q, k, v = (t.view(B, L, num_heads, d).transpose(1, 2) for t in (x @ w_qkv.T + b_qkv).split(H, dim=-1))
    scores = q @ k.transpose(-2, -1)
    if scaled:
        scores = scores / math.sqrt(d)
    keys = attention_mask[:, None, None, :]
    scores = scores + keys if masking == "add" else scores.masked_fill(keys == 0, fill)
    weights = scores.softmax(-1)
    return (weights @ v).transpose(1, 2).reshape(B, L, H), weights


def test_ex01_q1_names_unscaled_scores():
    assert_fails_with("ex01.q1", lambda *a: _attention(*a, scaled=False), "you forgot to scale the scores")


def test_ex01_q1_names_a_0_1_mask_added_to_the_scores():
    assert_fails_with("ex01.q1", lambda *a: _attention(*a, masking="add"), "you added the 0/1 mask to the scores")


def test_ex01_q1_refuses_padded_keys_masked_with_a_small_negative_number():
    """-5 instead of -inf leaves the padded keys a little weight (a few hundredths): the weights are wrong, and the
    message must not say they are right (and blame the output)."""
    message = assert_fails_with("ex01.q1", lambda *a: _attention(*a, fill=-5.0), "with the padded keys at -inf")
    assert "your weights are right" not in message, message


def test_ex01_q1_wants_exactly_a_pair():
    assert_fails_with("ex01.q1", lambda *a: (*_attention(*a), None), "a pair (output, weights)")


def test_ex01_q1_refuses_heads_of_a_fixed_width():
    """head_dim = 4 written in, not H // num_heads: every case had heads 4 wide, and the answer passed "Correct!"."""
    def fixed_head_dim(x, attention_mask, w_qkv, b_qkv, num_heads):
        return _attention(x, attention_mask, w_qkv, b_qkv, x.shape[-1] // 4)
    assert_fails_with("ex01.q1", fixed_head_dim, "the attention weights returned shape (2, 6, 4, 4), expected "
                      "(2, 3, 4, 4)")


# -- ex01.q2: parameters of a student configuration -----------------------------------------------------------
def test_ex01_q2_quotes_the_case_and_both_counts_of_an_unknown_mistake():
    """type_vocab_size read from the teacher (every other setting from the overrides): 32 parameters too many in
    the one case that overrides it, which no diagnosis names; the message quotes that case and both counts."""
    def teacher_segments(teacher, overrides, add_pooling_layer=True):
        return _student(teacher, {k: v for k, v in overrides.items() if k != "type_vocab_size"}, add_pooling_layer)
    assert_fails_with("ex01.q2", teacher_segments, "for overrides {'vocab_size': 50, 'type_vocab_size': 1",
                      "(add_pooling_layer=False)", "you counted 12,320 parameters, expected 12,288")


def test_ex01_q2_refuses_an_answer_that_fills_in_the_overrides():
    def fills_in(teacher, overrides, add_pooling_layer=True):
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings",
                    "type_vocab_size"):
            overrides.setdefault(key, getattr(teacher, key))  # the caller's dict now holds every setting
        return _student(teacher, overrides, add_pooling_layer)
    assert_fails_with("ex01.q2", fills_in, "your function changed its arguments")


def test_ex01_q2_refuses_an_answer_that_writes_the_overrides_into_the_teacher():
    def into_teacher(teacher, overrides, add_pooling_layer=True):
        for key, value in overrides.items():
            setattr(teacher, key, value)  # the caller's teacher config is now the student's
        return _student(teacher, {}, add_pooling_layer)
    assert_fails_with("ex01.q2", into_teacher, "your function changed its arguments")


# -- ex04.q1: teacher logits ----------------------------------------------------------------------------------
def test_ex04_q1_refuses_a_teacher_whose_weights_were_changed_after_predicting():
    def then_halved(teacher, batch):
        teacher.eval()
        with torch.no_grad():
            logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        teacher.half()  # "to save memory": the caller's teacher is changed
        return logits
    assert_fails_with("ex04.q1", then_halved, "your function changed the teacher's weights")


# -- ex04.q2: padding waste -----------------------------------------------------------------------------------
def test_ex04_q2_names_the_fraction_of_real_tokens():
    waste = reference_solution("ex04.q2")
    assert_fails_with("ex04.q2", lambda w, b, m=512: 1 - waste(w, b, m), "you returned the fraction of real tokens")


def test_ex04_q2_refuses_a_rounded_waste_and_quotes_the_truncation_case():
    """Rounded to two decimals "for display": 1 to 3 % off, no known mistake; the message quotes the case with a
    truncated review, the right waste and the learner's."""
    waste = reference_solution("ex04.q2")
    assert_fails_with("ex04.q2", lambda w, b, m=512: round(waste(w, b, m), 2),
                      "for word_counts=[30, 2, 2, 2, 9, 9, 9, 9, 1], batch_size=4, max_length=16 the padding waste "
                      "is 0.3243, you returned 0.3200")


# -- ex04.q3: length-grouped batches --------------------------------------------------------------------------
def _grouped(lengths, batch_size, seed=0, *, shuffle=True):
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle:
        random.Random(seed).shuffle(batches)
    return batches


@pytest.mark.parametrize("extra", [-1, "len"])
def test_ex04_q3_refuses_an_index_outside_the_reviews(extra):
    def with_extra(lengths, batch_size, seed=0):
        batches = _grouped(lengths, batch_size, seed)
        min(batches, key=len).append(len(lengths) if extra == "len" else extra)  # the short batch: still <= 16
        return batches
    assert_fails_with("ex04.q3", with_extra, "indices outside range(len(lengths))")


def test_ex04_q3_refuses_batches_larger_than_batch_size():
    assert_fails_with("ex04.q3", lambda lengths, batch_size, seed=0: _grouped(lengths, 2 * batch_size, seed),
                      "some batches hold more than batch_size = 16 reviews")


def test_ex04_q3_refuses_batches_from_the_longest_to_the_shortest():
    assert_fails_with("ex04.q3", lambda lengths, batch_size, seed=0: _grouped(lengths, batch_size, shuffle=False)[::-1],
                      "your batches come in order of length")


def test_ex04_q3_accepts_indices_given_as_whole_floats():
    """Indices that went through a float array (numpy.argsort of a float tensor, say) and came back as 3.0."""
    result = EXERCISES["ex04.q3"].grade(
        lambda lengths, batch_size, seed=0: [[float(i) for i in b] for b in _grouped(lengths, batch_size, seed)])
    assert result.status == PASSED, result


# -- ex04.q4: the teacher's label order -------------------------------------------------------------------------
def test_ex04_q4_names_probabilities_returned_for_logits():
    align = reference_solution("ex04.q4")
    assert_fails_with("ex04.q4", lambda z, t, d: align(z, t, d).softmax(-1),
                      "return the reordered logits themselves")


def test_ex04_q4_refuses_data_with_a_class_the_teacher_lacks():
    """Refusing only a teacher class missing from the data: a data class the teacher never predicts (neutral) is
    silently dropped, and the logits come back with a column too few."""
    def one_way(logits, teacher_labels, data_labels):
        t, d = [n.lower() for n in teacher_labels], [n.lower() for n in data_labels]
        if set(t) - set(d):
            raise ValueError(f"the data has no class {set(t) - set(d)}")
        return logits[:, [t.index(n) for n in d if n in t]]
    assert_fails_with("ex04.q4", one_way, "['negative', 'neutral', 'positive'] name different classes")


# -- ex06.q1: measuring latency -------------------------------------------------------------------------------
def latency_warmed_up_one_call_short(model, batch, sync=lambda: None, warmup=3, repeats=10):
    # off by one: the last cold call is timed
    return reference_solution("ex06.q1")(model, batch, sync, warmup - 1, repeats)


def latency_of_the_fastest_run_one_warm_up_call_short(model, batch, sync=lambda: None, warmup=3, repeats=10):
    for _ in range(warmup - 1):  # the last cold call lands in timeit's first run, which min() leaves out
        model(**batch)
    sync()

    def run():
        model(**batch)
        sync()
    return min(timeit.repeat(run, number=repeats, repeat=3)) / repeats


def test_ex06_q1_names_a_warm_up_one_call_short():
    assert_fails_with("ex06.q1", latency_warmed_up_one_call_short, "one too few")


def test_ex06_q1_refuses_a_clock_started_one_warm_up_call_early():
    """The value is exact (min() drops the run with the cold call), but the warm-up was not `warmup` calls."""
    assert_fails_with("ex06.q1", latency_of_the_fastest_run_one_warm_up_call_short,
                      "with warmup=5 your clock started after only 4 model calls")


def test_ex06_q1_accepts_each_call_timed_on_its_own_after_a_look_at_the_output():
    """One untimed call more than warmup + repeats, then `repeats` spans of one call each: right."""
    def measure_latency(model, batch, sync=lambda: None, warmup=3, repeats=10):
        for _ in range(warmup):
            model(**batch)
        assert model(**batch).logits.shape[0] == batch["input_ids"].shape[0]
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            model(**batch)
            sync()
            times.append(time.perf_counter() - start)
        return sum(times) / repeats
    result = EXERCISES["ex06.q1"].grade(measure_latency)
    assert result.status == PASSED, result


# -- ex06.q2: speed-ups -----------------------------------------------------------------------------------------
def _latency(model, batch, sync=lambda: None):
    return reference_solution("ex06.q1")(model, batch, sync)


def test_ex06_q2_says_the_student_was_never_called():
    assert_fails_with("ex06.q2", lambda t, s, make_batch, sizes, sync=lambda: None: {
        b: _latency(t, make_batch(b), sync) / _latency(t, make_batch(b), sync) for b in sizes},
        "the student was never called")


def test_ex06_q2_names_a_zero_speed_up_from_a_teacher_timed_without_sync():
    assert_fails_with("ex06.q2", lambda t, s, make_batch, sizes, sync=lambda: None: {
        b: _latency(t, make_batch(b)) / _latency(s, make_batch(b), sync) for b in sizes},
        "a latency came out as 0 s")
