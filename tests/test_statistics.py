"""The paired statistics behind every verdict: the bootstrap interval, McNemar's test and the verdict rule."""
import itertools
import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kd_tutorial.evaluate import (VERDICTS, compare_paired, correct_matrix, mcnemar, multinomial_counts,
                                  paired_bootstrap, teacher_share, verdict)


def _pair(n_ab: int, n_ba: int, n_both: int = 50, n_neither: int = 10):
    """Correctness vectors with n_ab reviews only A gets right, n_ba only B, and the rest shared."""
    a = [1] * n_ab + [0] * n_ba + [1] * n_both + [0] * n_neither
    b = [0] * n_ab + [1] * n_ba + [1] * n_both + [0] * n_neither
    return torch.tensor(a, dtype=torch.bool), torch.tensor(b, dtype=torch.bool)


def test_mcnemar_p_value_matches_the_exact_binomial_tail():
    a, b = _pair(10, 2)
    out = mcnemar(a, b)
    assert (out["n_ab"], out["n_ba"]) == (10, 2)
    expected = 2 * sum(math.comb(12, i) for i in range(3)) / 2 ** 12  # 2 * P(Bin(12, 1/2) <= 2) = 158 / 4096
    assert out["p"] == pytest.approx(expected, rel=1e-9)


def test_mcnemar_is_symmetric_and_one_for_a_tie_or_no_disagreement():
    a, b = _pair(7, 3)
    assert mcnemar(a, b)["p"] == pytest.approx(mcnemar(b, a)["p"])
    assert (mcnemar(b, a)["n_ab"], mcnemar(b, a)["n_ba"]) == (3, 7)
    assert mcnemar(*_pair(5, 5))["p"] == 1.0
    assert mcnemar(a, a) == {"n_ab": 0, "n_ba": 0, "p": 1.0}


def test_mcnemar_counts_each_review_once_however_many_seeds():
    # the same answers from three seeds are not three times the evidence: p must not change
    a, b = _pair(12, 4)
    one = mcnemar(a, b)
    three = mcnemar(torch.stack([a, a, a]), torch.stack([b, b, b]))
    assert (three["n_ab"], three["n_ba"], three["p"]) == (one["n_ab"], one["n_ba"], one["p"])


def test_mcnemar_counts_a_review_by_the_sign_of_its_difference_averaged_over_seeds():
    # review 0: A right on 2 seeds of 3, B on 1: counts for A; review 1: one each way: a tie, not counted
    a = torch.tensor([[1, 1], [1, 0], [0, 1]], dtype=torch.bool)
    b = torch.tensor([[1, 0], [0, 1], [0, 1]], dtype=torch.bool)
    assert (mcnemar(a, b)["n_ab"], mcnemar(a, b)["n_ba"]) == (1, 0)


def test_mcnemar_over_seeds_weighs_a_review_by_how_many_seeds_agree():
    # 12 reviews A wins on every seed against 6 that B wins on one seed of three: the sign test would see
    # 12 against 6 (p = 0.24); the sums are 36 against 6, far beyond what random signs give
    a = torch.tensor([[1] * 12 + [0] * 6] * 3, dtype=torch.bool)
    b = torch.tensor([[0] * 12 + [1] * 6] + [[0] * 12 + [0] * 6] * 2, dtype=torch.bool)
    out = mcnemar(a, b)
    assert (out["n_ab"], out["n_ba"]) == (12, 6)
    assert out["p"] < 0.01 < mcnemar(a[0], b[0])["p"]


def _sign_flip_p_by_enumeration(a: torch.Tensor, b: torch.Tensor) -> float:
    """P(|sum of +-d_i| >= |sum of d_i|) over all 2^n sign patterns, d_i the per-review difference summed over seeds."""
    d = [x for x in (a.long() - b.long()).sum(0).tolist() if x]
    observed = abs(sum(d))
    if observed == 0:
        return 1.0
    hits = sum(abs(sum(s * x for s, x in zip(signs, d))) >= observed
               for signs in itertools.product((1, -1), repeat=len(d)))
    return hits / 2 ** len(d)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3).flatmap(lambda seeds: st.lists(
    st.lists(st.tuples(st.booleans(), st.booleans()), min_size=seeds, max_size=seeds), min_size=1, max_size=11)))
def test_mcnemar_equals_the_sign_flip_test_by_enumeration(reviews):
    a = torch.tensor([[r[s][0] for r in reviews] for s in range(len(reviews[0]))], dtype=torch.bool)
    b = torch.tensor([[r[s][1] for r in reviews] for s in range(len(reviews[0]))], dtype=torch.bool)
    assert mcnemar(a, b)["p"] == pytest.approx(_sign_flip_p_by_enumeration(a, b), rel=1e-9, abs=1e-12)


def test_mcnemar_keeps_its_precision_far_in_the_tail():
    a, b = _pair(600, 20, n_both=3000)
    expected = 2 * sum(math.comb(620, i) for i in range(21)) / 2 ** 620  # about 1e-149
    assert mcnemar(a, b)["p"] == pytest.approx(expected, rel=1e-9)


def test_mcnemar_on_a_test_set_of_collapsed_answers_is_exact_in_memory_linear_in_its_size():
    """A review: the exact p-value convolved with conv1d, whose (n+1) x (2n+1) table for n disagreements took 10 GB
    at 25,000 (a student collapsed to one class on the full profile's test reviews) and failed to allocate 26 GB
    at 40,300. The same sums, direct, in numpy: the binomial tail itself, summed here term by term in logs."""
    a, b = _pair(20_300, 20_000, n_both=0, n_neither=0)
    logs = [math.lgamma(40_301) - math.lgamma(i + 1) - math.lgamma(40_301 - i) for i in range(20_001)]
    top = max(logs)  # 2 * P(Bin(40300, 1/2) <= 20000), about 0.14
    expected = 2 * math.exp(top - 40_300 * math.log(2)) * math.fsum(math.exp(x - top) for x in logs)
    assert mcnemar(a, b)["p"] == pytest.approx(expected, rel=1e-9)
    three = mcnemar(torch.stack([a, a, b]), torch.stack([b, b, a]))  # per review +1 or -1 over 3 seeds: McNemar again
    assert three["p"] == pytest.approx(expected, rel=1e-9)


def test_paired_bootstrap_difference_is_the_accuracy_difference_and_its_interval_contains_it():
    a, b = _pair(20, 8, n_both=150, n_neither=22)
    out = paired_bootstrap(a, b, n_boot=2000)
    assert out["diff"] == pytest.approx((a.float().mean() - b.float().mean()).item())
    assert out["ci_low"] < out["diff"] < out["ci_high"]
    assert (out["reviews"], out["seeds"], out["n_boot"]) == (200, 1, 2000)
    # the normal approximation of a paired difference: sd of per-review differences / sqrt(n)
    d = a.float() - b.float()
    half = 1.96 * d.std().item() / math.sqrt(len(d))
    assert out["ci_high"] - out["ci_low"] == pytest.approx(2 * half, rel=0.15)


def test_paired_bootstrap_of_a_model_with_itself_is_exactly_zero():
    a, _ = _pair(5, 5)
    out = paired_bootstrap(a, a, n_boot=500)
    assert out["diff"] == out["ci_low"] == out["ci_high"] == 0.0


def test_paired_bootstrap_of_one_difference_on_every_review_is_exactly_that_difference():
    """Every resample of reviews that all differ by the same amount has that mean: a mean over another count than the
    reviews drawn (N + 1) shrank the interval to [0.875, 0.875] for 7 reviews and stayed inside every other test."""
    right = torch.ones(2, 7, dtype=torch.bool)
    out = paired_bootstrap(right, ~right, n_boot=200)
    assert out["diff"] == out["ci_low"] == out["ci_high"] == 1.0
    one_seed_of_two = torch.stack([right[0], ~right[0]])  # +1/2 on every review, pooled over the two seeds
    out = paired_bootstrap(one_seed_of_two, ~right, n_boot=200)
    assert out["diff"] == out["ci_low"] == out["ci_high"] == 0.5


def test_paired_bootstrap_is_reproducible_and_narrows_with_more_reviews():
    a, b = _pair(10, 5, n_both=80, n_neither=5)
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)
    width = lambda x, y: (lambda o: o["ci_high"] - o["ci_low"])(paired_bootstrap(x, y, n_boot=2000))
    assert width(a.repeat(9), b.repeat(9)) < 0.5 * width(a, b)  # 9x the reviews: about a third of the width


def test_multinomial_counts_add_up_and_pick_each_kind_in_proportion():
    counts = torch.tensor([500, 300, 150, 50])
    draws = multinomial_counts(counts, 20_000, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (20_000, 4) and (draws.sum(1) == 1000).all() and (draws >= 0).all()
    assert draws.mean(0) == pytest.approx(counts.double(), rel=0.01)
    p = counts.double() / 1000  # a multinomial's variance: N p (1 - p)
    assert draws.var(0) == pytest.approx(1000 * p * (1 - p), rel=0.05)
    assert (multinomial_counts(torch.tensor([7]), 3) == 7).all()


def test_paired_bootstrap_draws_what_resampling_the_reviews_draws():
    """The counts of each per-review difference give the same interval as drawing N review indices."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 300, generator=g) < 0.85, torch.rand(3, 300, generator=g) < 0.8  # 3 seeds
    per_review = (a.double() - b.double()).mean(0)
    by_index = per_review[torch.randint(0, 300, (40_000, 300), generator=g)].mean(1)
    expected = torch.quantile(by_index, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    out = paired_bootstrap(a, b, n_boot=40_000)
    assert [out["ci_low"], out["ci_high"]] == pytest.approx(expected, abs=0.003)
    assert out["diff"] == pytest.approx(float(per_review.mean()))


def test_seeds_that_agree_add_no_reviews_to_the_bootstrap():
    """The bootstrap resamples reviews, each with all its seeds' answers: three seeds that agree on every review
    give the one seed's interval (resampling (seed, review) pairs would narrow it by sqrt(3))."""
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(300, generator=g) < 0.85, torch.rand(300, generator=g) < 0.8
    one, three = paired_bootstrap(a, b), paired_bootstrap(a.repeat(3, 1), b.repeat(3, 1))
    assert (three["ci_low"], three["ci_high"], three["reviews"]) == (one["ci_low"], one["ci_high"], 300)
    assert three["seeds"] == 3 and one["ci_high"] - one["ci_low"] > 0.05


def test_teacher_share_is_the_ratio_of_pooled_accuracies_and_its_interval_holds_it():
    g = torch.Generator().manual_seed(3)
    teacher = torch.rand(400, generator=g) < 0.85
    student = teacher & (torch.rand(3, 400, generator=g) < 0.95)  # right mostly where the teacher is
    out = teacher_share(student, teacher, n_boot=4000)
    assert out["share"] == pytest.approx(student.double().mean().item() / teacher.double().mean().item())
    assert out["ci_low"] < out["share"] < out["ci_high"] <= 1.0  # never right where the teacher is wrong
    assert (out["reviews"], out["seeds"], out["n_boot"], out["level"]) == (400, 3, 4000, 0.95)
    assert teacher_share(teacher, teacher) | {"n_boot": 0} == {"share": 1.0, "ci_low": 1.0, "ci_high": 1.0,
                                                               "level": 0.95, "n_boot": 0, "reviews": 400, "seeds": 1}


def test_teacher_share_draws_what_resampling_the_reviews_draws():
    """Reviews are drawn with both models' answers on them: the interval of drawing N review indices."""
    g = torch.Generator().manual_seed(4)
    teacher = torch.rand(300, generator=g) < 0.85
    student = torch.where(torch.rand(2, 300, generator=g) < 0.8, teacher, ~teacher)  # agrees on 80 %
    s, t = student.double().mean(0), teacher.double()
    idx = torch.randint(0, 300, (40_000, 300), generator=g)
    by_index = s[idx].sum(1) / t[idx].sum(1)
    expected = torch.quantile(by_index, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    out = teacher_share(student, teacher, n_boot=40_000)
    assert [out["ci_low"], out["ci_high"]] == pytest.approx(expected, abs=0.004)


def test_teacher_share_pairs_the_reviews():
    """A student that errs where the teacher errs has a narrower interval than one erring on other reviews with
    the same accuracy: resampling the two models separately would give both the same width."""
    teacher = torch.tensor([True] * 170 + [False] * 30)
    same = torch.tensor([True] * 160 + [False] * 40)  # wrong on the teacher's 30 and 10 more
    other = torch.tensor([False] * 40 + [True] * 160)  # wrong on 40 the teacher gets right
    width = lambda s: (lambda o: o["ci_high"] - o["ci_low"])(teacher_share(s, teacher, n_boot=4000))
    assert teacher_share(same, teacher)["share"] == teacher_share(other, teacher)["share"]
    assert width(same) < 0.6 * width(other)


def test_teacher_share_refuses_other_reviews_and_a_teacher_never_right():
    with pytest.raises(ValueError, match="same reviews: 5 vs 6"):
        teacher_share(torch.ones(5, dtype=torch.bool), torch.ones(6, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one review right"):
        teacher_share(torch.ones(5, dtype=torch.bool), torch.zeros(5, dtype=torch.bool))


def test_paired_statistics_refuse_unpaired_inputs():
    a, b = _pair(3, 2)
    for stat in (paired_bootstrap, mcnemar):
        with pytest.raises(ValueError, match="same reviews and seeds"):
            stat(a, b[:-1])


@pytest.mark.parametrize("low, high, expected", [
    (0.01, 0.03, "better"), (-0.03, -0.01, "worse"), (-0.01, 0.02, "no detectable difference at this size"),
    (0.0, 0.02, "no detectable difference at this size"), (-0.02, 0.0, "no detectable difference at this size"),
    (1e-17, 0.02, "no detectable difference at this size"), (-0.02, -1e-17, "no detectable difference at this size"),
    (1e-6, 0.02, "better")])  # a bound of 1e-17 is rounding of a 0, printed +0.00; one review in a million is not
def test_verdict_needs_the_whole_interval_on_one_side_of_zero(low, high, expected):
    assert verdict(low, high) == expected and expected in VERDICTS


def test_compare_paired_reports_a_clear_gain_as_better_and_its_reverse_as_worse():
    labels = torch.tensor([1, 0] * 100)
    right = torch.stack([labels == 0, labels == 1], -1).float()  # logits that always pick the label
    wrong = right.flip(-1)
    mostly = torch.where(torch.arange(200)[:, None] < 150, right, wrong)  # 75 % right
    half = torch.where(torch.arange(200)[:, None] < 100, right, wrong)   # 50 % right, a subset of mostly's
    a, b = correct_matrix([mostly], labels), correct_matrix([half], labels)
    up, down = compare_paired(a, b, n_boot=1000), compare_paired(b, a, n_boot=1000)
    assert up["diff"] == pytest.approx(0.25) and up["verdict"] == "better" and up["p_mcnemar"] < 1e-10
    assert down["diff"] == pytest.approx(-0.25) and down["verdict"] == "worse"
    assert (up["n_ab"], up["n_ba"]) == (50, 0)


def test_latency_times_the_same_reviews_in_every_pass_and_never_the_warm_up_ones():
    """repeats passes over n reviews: n x repeats samples, each review timed repeats times; the warm-up reviews are
    run once and left out (they were timed in the passes after the first). A split smaller than warm-up still works."""
    from collections import Counter

    from kd_tutorial import data, evaluate
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            seen.append(int(input_ids[0, 1]))  # each review's own token

    enc = data.Encoded([[101, 1000 + i, 102] for i in range(10)], torch.zeros(10, dtype=torch.long), "ten")
    out = evaluate.latency(Recorder(), enc, device="cpu", n=4, warmup=2, repeats=3)
    warm, timed = seen[:2], Counter(seen[2:])
    assert len(out["samples"]) == 12 and len(timed) == 4 and set(timed.values()) == {3}
    assert not set(warm) & set(timed)
    seen.clear()
    small = evaluate.latency(Recorder(), data.Encoded([[101, 7, 102]] * 2, torch.zeros(2, dtype=torch.long), "two"),
                             device="cpu", n=30, warmup=5, repeats=1)
    assert len(seen) == 2 and len(small["samples"]) == 1


def test_latency_reports_the_quartiles_of_its_timings_in_order(monkeypatch):
    """Guards against latency() returning its quartiles mislabelled (q1 and q3 swapped, or not those of its samples):
    each timing comes from a stand-in clock, so the quartiles are known exactly."""
    from kd_tutorial import data, evaluate
    timings = iter([50.0, 40.0] + [7.0, 1.0, 9.0, 3.0, 5.0, 2.0, 8.0, 4.0])  # two warm-up calls, then 4 x 2 timed
    monkeypatch.setattr(evaluate, "_forward_ms", lambda *a, **kw: next(timings))
    enc = data.Encoded([[101, 1000 + i, 102] for i in range(6)], torch.zeros(6, dtype=torch.long), "six")
    out = evaluate.latency(torch.nn.Identity(), enc, device="cpu", n=4, warmup=2, repeats=2)
    assert out["samples"] == [7.0, 1.0, 9.0, 3.0, 5.0, 2.0, 8.0, 4.0]  # the warm-up calls are not timed
    assert (out["q1"], out["p50"], out["q3"]) == evaluate.quartiles(out["samples"]) == (2.75, 4.5, 7.25)
    assert out["q1"] <= out["p50"] <= out["q3"]


def test_models_compared_are_timed_in_turns_so_drift_falls_on_all_of_them(monkeypatch):
    """compare timed one model's passes back to back, then the next's: a machine that slowed down half-way made one
    architecture 40 % slower than its twin. Each round now times one pass of every model, in alternating order."""
    from kd_tutorial import evaluate
    order, clock = [], iter(range(100))
    monkeypatch.setattr(evaluate, "latency", lambda model, *a, **kw: order.append(model.tag) or {
        "samples": [float(next(clock))] * 2})
    models = {}
    for tag in ("a", "b", "c"):
        models[tag] = torch.nn.Linear(1, 1)
        models[tag].tag = tag
    out = evaluate.latency_in_turns(models, None, device="cuda", repeats=4)  # a GPU's turns (latency is a stand-in)
    assert order == list("abccbaabccba")
    assert out["a"]["samples"] == [0.0, 0.0, 5.0, 5.0, 6.0, 6.0, 11.0, 11.0]  # one pass per round, all kept
    assert out["b"]["p50"] == statistics.median(out["b"]["samples"])


def test_on_the_cpu_models_take_turns_review_by_review_so_their_timings_pair_up(monkeypatch):
    """Turns of one pass each left a busy second on one model's whole pass, so its timings were not comparable
    review by review with another's. On the CPU every model now times review i in turn, moments apart."""
    from kd_tutorial import data, evaluate
    calls, clock = [], iter(range(1000))
    monkeypatch.setattr(evaluate, "_forward_ms", lambda model, batch, *a: calls.append(
        (model.tag, int(batch["input_ids"][0, 1]))) or float(next(clock)))
    models = {}
    for tag in ("a", "b"):
        models[tag] = torch.nn.Linear(1, 1)
        models[tag].tag = tag
    enc = data.Encoded([[101, 1000 + i, 102] for i in range(10)], torch.zeros(10, dtype=torch.long), "ten")
    out = evaluate.latency_in_turns(models, enc, device="cpu", n=3, repeats=2)
    timed = calls[10:]  # after 5 warm-up calls each, on other reviews
    assert {r for _, r in calls[:10]}.isdisjoint({r for _, r in timed}) and len(timed) == 12
    assert [t for t, _ in timed] == list("abbaabbaabba")
    reviews = [r for _, r in timed]
    assert reviews[0::2] == reviews[1::2] and len(set(reviews)) == 3  # each review timed by both, one after the other
    assert out["a"]["samples"] == [10.0, 13.0, 14.0, 17.0, 18.0, 21.0]
    assert out["b"]["samples"] == [11.0, 12.0, 15.0, 16.0, 19.0, 20.0]  # pair i: the same review, moments apart


def test_throughput_is_taken_in_turns_and_the_median_pass_is_kept(monkeypatch):
    """compare timed each model's throughput straight after the previous model's: four identical students read
    18,856, 4,732, 584 and 2,763 reviews/s on a loaded machine. Now three passes in turns, the median one kept."""
    from kd_tutorial import evaluate
    order, rates = [], iter([9.0, 1.0, 5.0, 4.0, 2.0, 7.0])  # per call: a, b, b, a, a, b

    def throughput(model, encoded, **kw):
        order.append((model.tag, kw["max_batches"]))
        rate = next(rates)
        return {"reviews_per_s": rate, "tokens_per_s": 10 * rate, "lengths": [rate]}
    monkeypatch.setattr(evaluate, "throughput", throughput)
    models = {}
    for tag in ("a", "b"):
        models[tag] = torch.nn.Linear(1, 1)
        models[tag].tag = tag
    out = evaluate.throughput_in_turns(models, None, max_batches=8, repeats=3)
    assert order == [(t, 3) for t in "abbaab"]  # 8 batches shared out over 3 passes: 3 each
    assert out["a"]["passes"] == [9.0, 4.0, 2.0] and out["a"]["reviews_per_s"] == 4.0
    assert out["b"] == {"reviews_per_s": 5.0, "tokens_per_s": 50.0, "lengths": [5.0], "passes": [1.0, 5.0, 7.0]}


def test_compare_hands_each_model_back_on_the_device_it_came_on(monkeypatch):
    """compare moved every model to the measuring device and left it there: after the pipeline's evaluation a GPU
    held every student of every seed. A device the CPU also answers to (cpu:0, which compares unequal to cpu)
    stands in for a model's own device here."""
    from kd_tutorial import data, evaluate, models
    home, moves = torch.device("cpu", 0), []
    monkeypatch.setattr(evaluate, "_device_of", lambda model: home)
    real_to = torch.nn.Module.to
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **kw: (moves.append((id(self), a)),
                                                                       real_to(self, *a, **kw))[1])
    small = {"num_hidden_layers": 1, "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2}
    pair = {"teacher": models.load_teacher("tiny-bert", config_overrides=small),
            "student": models.load_teacher("tiny-bert", config_overrides=small)}
    enc = data.Encoded([[101, 1000 + i, 102] for i in range(6)], torch.tensor([0, 1] * 3), "six")
    evaluate.compare(pair, enc, device="cpu", precision="fp32", latency_n=2, latency_repeats=1, throughput_batches=1)
    for model in pair.values():
        own = [args for who, args in moves if who == id(model)]
        assert ("cpu",) in own and own[-1] == (home,)  # measured on the device asked for, then sent home


def test_compare_predicts_in_the_precision_it_times_in(monkeypatch):
    """Accuracy and agreement come from predictions in the table's precision, as its timings and the teacher's logits
    do (they were made in "auto", bf16 here, whatever the profile asked for)."""
    from kd_tutorial import data, evaluate, models
    asked, predict = [], evaluate.predict_logits
    monkeypatch.setattr(evaluate, "predict_logits", lambda *a, **kw: asked.append(kw.get("precision")) or predict(*a, **kw))
    model = models.load_teacher("tiny-bert", config_overrides={"num_hidden_layers": 1, "hidden_size": 16,
                                                              "intermediate_size": 32, "num_attention_heads": 2})
    enc = data.Encoded([[101, 1000 + i, 102] for i in range(6)], torch.tensor([0, 1] * 3), "six")
    rows = evaluate.compare({"teacher": model}, enc, precision="fp32", latency_n=2, latency_repeats=1,
                            throughput_batches=1)
    assert asked == ["fp32"] and rows[0]["precision"] == "fp32"


def test_a_handful_of_disagreements_is_no_verdict_however_narrow_the_bootstrap_interval():
    # A right and B wrong on 4 of 1,000 reviews, and they agree on the rest: the percentile interval is
    # [+0.001, +0.008] (no resample is below 0 often enough), while McNemar's exact p is 2 / 2**4 = 0.125
    a = torch.ones(1000, dtype=torch.bool)
    b = a.clone()
    b[:4] = False
    out = compare_paired(a, b)
    assert out["ci_low"] > 0 and out["p_mcnemar"] == pytest.approx(0.125)
    assert out["verdict"] == "no detectable difference at this size"
    b[:40] = False  # 40 of 0: both say so
    assert compare_paired(a, b)["verdict"] == "better" and compare_paired(b, a)["verdict"] == "worse"
    assert verdict(0.01, 0.02, p=0.05) == VERDICTS[2] and verdict(0.01, 0.02, p=0.049) == "better"


def test_the_verdict_asks_p_below_one_minus_the_level_it_was_given():
    """compare_paired(level=0.99) gives a 99 % interval and needs McNemar's p below 0.01: A right and B wrong on 6
    reviews of 1,000 (p = 2 / 2**6 = 0.031; a resample misses all six 0.24 % of the time, so the 99 % interval stays
    above 0) is "better" at 95 % and not at 99 %. A rule that kept 0.05 whatever the level said "better" at both."""
    a = torch.ones(1000, dtype=torch.bool)
    b = a.clone()
    b[:6] = False
    at_95, at_99 = compare_paired(a, b), compare_paired(a, b, level=0.99)
    assert at_99["p_mcnemar"] == pytest.approx(2 / 2 ** 6) and at_99["ci_low"] > 0 and at_99["level"] == 0.99
    assert at_95["verdict"] == "better" and at_99["verdict"] == VERDICTS[2]
    assert verdict(0.01, 0.02, p=0.07, level=0.9) == "better"


def test_latency_quartiles_stay_within_the_timings():
    from kd_tutorial.evaluate import quartiles
    assert quartiles([1.0, 10.0]) == (3.25, 5.5, 7.75)  # the default method gave q1 = -1.25 from these two
    assert quartiles([4.0]) == (4.0, 4.0, 4.0)
    assert quartiles([3.0, 1.0, 2.0, 5.0, 4.0]) == (2.0, 3.0, 4.0)


def test_the_wilson_interval_of_one_accuracy():
    """Wilson's interval, as scipy.stats.binomtest(...).proportion_ci(method="wilson") gives it for 838 of 1000 and
    3 of 17; it stays within [0, 1] at 0 and n, and refuses counts that are not one."""
    from kd_tutorial.evaluate import accuracy_interval
    assert accuracy_interval(838, 1000) == pytest.approx((0.8138772231121078, 0.8595358881516569), abs=1e-12)
    assert accuracy_interval(3, 17) == pytest.approx((0.061911266376209945, 0.4102945856883412), abs=1e-12)
    lo, hi = accuracy_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and 0.2 < hi < 0.3
    lo, hi = accuracy_interval(10, 10)
    assert 0.7 < lo < 0.8 and hi == 1.0
    for bad in ((11, 10), (-1, 10), (0, 0)):
        with pytest.raises(ValueError, match="accuracy_interval needs"):
            accuracy_interval(*bad)
    # in floats the formula's ends pass 0 and 1 by an ulp (0 of 9: -1.9e-17): the interval stays within [0, 1]
    assert all(accuracy_interval(0, n)[0] >= 0.0 and accuracy_interval(n, n)[1] <= 1.0 for n in range(1, 100))


def test_the_bootstrap_seed_decides_the_resample():
    """Guards against a ``seed`` that paired_bootstrap and teacher_share accept and never use: each seed is its
    own resample (the same seed, the same interval), so a learner asking for another seed gets one."""
    a, b = _pair(10, 5, n_both=80, n_neither=5)
    runs = [paired_bootstrap(a, b, n_boot=200, seed=s) for s in (0, 0, 1)]
    assert runs[0] == runs[1] and (runs[0]["ci_low"], runs[0]["ci_high"]) != (runs[2]["ci_low"], runs[2]["ci_high"])
    shares = [teacher_share(a, a | b, n_boot=200, seed=s) for s in (0, 0, 1)]
    assert shares[0] == shares[1] and (shares[0]["ci_low"], shares[0]["ci_high"]) != (shares[2]["ci_low"],
                                                                                       shares[2]["ci_high"])


def test_throughput_leaves_its_warm_up_batch_out_of_the_rate(monkeypatch):
    """Guards against throughput() counting the warm-up batch's reviews and time: each batch's time comes from a
    stand-in clock, so the rate of the timed batches alone is known exactly; and against counting
    padding as tokens."""
    from kd_tutorial import data, evaluate
    timings = iter([1000.0, 100.0, 300.0])  # the warm-up batch, then two timed ones: 4 reviews in 0.4 s
    monkeypatch.setattr(evaluate, "_forward_ms", lambda *a, **kw: next(timings))
    enc = data.Encoded([[101, *range(n), 102] for n in range(1, 7)], torch.zeros(6, dtype=torch.long), "six")
    out = evaluate.throughput(torch.nn.Identity(), enc, device="cpu", batch_size=2, max_batches=2, precision="fp32")
    assert out["reviews_per_s"] == pytest.approx(10.0) and len(out["lengths"]) == 4
    # every batch pairs two lengths (8 and 7, 6 and 5, 4 and 3 tokens): its padding is no token processed
    assert out["tokens_per_s"] == pytest.approx(sum(out["lengths"]) / 0.4) and sum(out["lengths"]) in (18, 22, 26)


def test_choice_key_ties_float_noise_but_not_one_review_in_a_hundred_thousand():
    """Guards against a choice between runs that rounds away a real difference: one review in 100,000 (1e-5)
    decides it, while two float32 means of the same answers (apart in the 8th digit) tie."""
    from kd_tutorial.evaluate import choice_key
    right = torch.tensor([True] * 85_431 + [False] * 14_569)
    assert choice_key(float(right.float().mean())) == choice_key(85_431 / 100_000)
    assert choice_key(85_431 / 100_000) > choice_key(85_430 / 100_000)


@pytest.mark.parametrize("call, match", [
    (lambda a, b: compare_paired(a, b, level=95), "fraction strictly between 0 and 1"),  # torch: q values must be in..
    (lambda a, b: compare_paired(a, b, level=0), "fraction strictly between 0 and 1"),  # a 0-width interval: "better"
    (lambda a, b: teacher_share(a, a | b, level=1.5), "fraction strictly between 0 and 1"),
    (lambda a, b: paired_bootstrap(a, b, n_boot=0), "n_boot is how many resamples"),  # torch: input must be non-empty
    (lambda a, b: compare_paired(a[:0], b[:0]), "at least one review, got shape \\(0,\\)"),  # torch: size mismatch
    (lambda a, b: compare_paired(a.repeat(2, 3, 1), b.repeat(2, 3, 1)), "got shape \\(2, 3, 20\\)")])  # 6 x 20 reviews
def test_paired_statistics_refuse_a_level_no_resample_and_answers_they_cannot_pair_in_one_line(call, match):
    """Guards against inputs the statistics took into torch's own errors or into a wrong answer: a level given in
    percent, a level of 0 (a zero-width interval read as a verdict), no resample, no review, a 3-D stack of answers
    (its reviews counted 6 x 20 = 120, and each seed's difference a nested list)."""
    a, b = _pair(7, 3, n_both=8, n_neither=2)
    with pytest.raises(ValueError, match=match) as error:
        call(a, b)
    assert "\n" not in str(error.value)
    assert compare_paired(a, b, level=0.9, n_boot=1)["level"] == 0.9  # the least a bootstrap can do still works


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_logits_that_are_not_numbers_are_refused_by_every_score(bad):
    """argmax reads a NaN as the largest value: a model whose logits were all NaN scored 50 % accuracy, agreed with
    itself on every review and had an ECE of 0 ('perfectly calibrated'), and its rows entered the comparisons."""
    from kd_tutorial.evaluate import accuracy, agreement, expected_calibration_error
    labels, fine = torch.tensor([0, 0, 0, 1, 1, 1]), torch.zeros(6, 2)
    broken = fine.clone()
    broken[2, 1] = bad
    for score in (lambda: accuracy(broken, labels), lambda: expected_calibration_error(broken, labels),
                  lambda: agreement(fine, broken), lambda: correct_matrix([fine, broken], labels)):
        with pytest.raises(ValueError, match=r"logits hold NaN or infinity on 1 of 6 rows: .*retrain it"):
            score()
    assert accuracy(fine, labels) == 0.5 and correct_matrix([fine], labels).shape == (1, 6)


def test_a_model_whose_outputs_are_nan_is_refused_where_its_logits_are_predicted():
    from kd_tutorial import data, evaluate
    enc = data.Encoded([[101, 7, 8, 102]] * 3, torch.tensor([0, 1, 0]), "rows")

    class Broken(torch.nn.Module):
        def forward(self, input_ids, attention_mask, **kwargs):
            from types import SimpleNamespace
            return SimpleNamespace(logits=torch.full((len(input_ids), 2), float("nan")), hidden=None)
    model = Broken()
    model.config = type("C", (), {"max_position_embeddings": 16, "vocab_size": 200})()
    with pytest.raises(evaluate.NonFiniteLogitsError, match=r"^test: the model's logits hold NaN or infinity on 3 of 3 rows: its weights "
                                         r"hold NaN or infinity: retrain it$"):
        evaluate.predict_logits(model, enc, device="cpu", precision="fp32", desc="test")


def test_reviews_without_a_label_are_refused_where_two_models_are_compared():
    """A row labelled -1 counted as wrong for both models: accuracy skips it, the comparisons did not."""
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]]), torch.tensor([0, 1, -1])
    with pytest.raises(ValueError, match=r"^1 of 3 reviews have no label \(-1\): compare models on a labelled split"):
        correct_matrix([logits], labels)
    assert correct_matrix([logits], labels[:2].tolist() + [0]).all()


def test_the_median_pass_of_an_even_number_of_passes_is_the_lower_one():
    """median_pass keeps the lower of the two middle passes (its docstring); three passes could not tell."""
    from kd_tutorial.evaluate import median_pass
    runs = [{"reviews_per_s": r, "tag": r} for r in (40.0, 10.0, 30.0, 20.0)]
    out = median_pass(runs)
    assert out["reviews_per_s"] == 20.0 and out["tag"] == 20.0
    assert out["passes"] == [40.0, 10.0, 30.0, 20.0]  # every pass, in the order taken
    assert median_pass(runs[:2])["reviews_per_s"] == 10.0


def test_paired_statistics_refuse_probabilities_for_right_answers_in_one_line():
    """``.bool()`` read any nonzero value as a right answer: confidences of 0.6-0.9 against 0.1-0.4 came out as a
    difference of 0.0, p = 1 and "no detectable difference". Exactly 0 and 1, of any dtype, are still answers."""
    sure, unsure = torch.tensor([0.6, 0.7, 0.8, 0.9]), torch.tensor([0.1, 0.2, 0.3, 0.4])
    right = torch.tensor([True, False, True, True])
    for call in (lambda: compare_paired(sure, unsure), lambda: paired_bootstrap(sure, right),
                 lambda: mcnemar(right, unsure), lambda: teacher_share(sure, right),
                 lambda: teacher_share(right, torch.tensor([1.0, float("nan"), 1.0, 0.0]))):
        with pytest.raises(ValueError, match=r"^right answers must be booleans \(or exactly 0 and 1\), got \S+ among "
                                             r"the torch.float32 values: pass correct_matrix\(logits_per_seed, labels\)"
                           ) as error:
            call()
        assert "\n" not in str(error.value)
    as_floats = compare_paired(right.float(), torch.tensor([1, 0, 0, 0]), n_boot=100)
    assert as_floats == compare_paired(right, torch.tensor([True, False, False, False]), n_boot=100)
    assert as_floats["diff"] == 0.5
