"""Edges of `kd-tutorial search` and `kd-tutorial benchmark` on small made-up inputs, training and timing stubbed:
the front's ties, the search space, the rows a trial reads, the pruning bar, the retimed front, and every ratio,
rate and count a benchmark record derives from its (fake) clock."""
import types

import pytest
import torch

optuna = pytest.importorskip("optuna", reason="optuna is not installed: pip install -e '.[search]'")

from kd_tutorial import benchmark as B  # noqa: E402
from kd_tutorial import search  # noqa: E402
from kd_tutorial.data import Encoded  # noqa: E402
from kd_tutorial.errors import UsageError  # noqa: E402
from kd_tutorial.flops import forward_flops, train_flops  # noqa: E402
from kd_tutorial.profiles import get_profile  # noqa: E402
from kd_tutorial.history import History  # noqa: E402

TINY = get_profile("tiny")
NS = types.SimpleNamespace


def _record(number, acc, ms, student="s", state="COMPLETE"):
    return {"number": number, "val_accuracy": acc, "latency_ms": ms, "state": state,
            "params": {"T": 2.0, "alpha": 0.5, "student": student, "transfer_fraction": 1.0}}


def _bench(peak=None):
    return B._Bench(TINY, "cpu", dict(B.SETTINGS["quick"]), {"peak_tflops": peak}, False)


# ----------------------------------------------------------------------------------------------------- search

def test_an_equally_accurate_but_slower_trial_is_off_the_front():
    fast, slow = _record(0, 0.85, 1.0), _record(1, 0.85, 2.0)
    assert search.dominates(fast, slow) and not search.dominates(slow, fast)
    assert [r["number"] for r in search.pareto_front([slow, fast])] == [0]


def test_the_search_space_bounds():
    asked = {}

    class Trial:
        def suggest_float(self, name, low, high, log=False):
            asked[name] = (low, high, log)
            return low

        def suggest_categorical(self, name, choices):
            asked[name] = list(choices)
            return choices[0]
    point = search.suggest(Trial(), NS(students={"a": None, "b": None}))
    assert asked == {"T": (1.0, 8.0, True), "alpha": (0.0, 1.0, False), "student": ["a", "b"],
                     "transfer_fraction": [0.25, 0.5, 1.0]}
    assert point == {"T": 1.0, "alpha": 0.0, "student": "a", "transfer_fraction": 0.25}


@pytest.mark.parametrize("fraction, n_kept", [(0.5, 4), (1.0, 8)])
def test_a_trial_reads_every_labelled_review_and_a_share_of_the_transfer_reviews(fraction, n_kept):
    rows = Encoded([[101, i, 102] for i in range(10)], torch.arange(10) % 2, "rows")  # 2 labelled, 8 transfer
    ctx = NS(rows=rows, n_labelled=2, logits=torch.arange(10.0).unsqueeze(1).repeat(1, 2))
    sub, logits = search.transfer_rows(ctx, fraction)
    ids = [r[1] for r in sub.input_ids]
    assert ids[:2] == [0, 1] and len(ids) == 2 + n_kept and len(set(ids)) == len(ids)
    assert all(i >= 2 for i in ids[2:]) and logits[:, 0].tolist() == [float(i) for i in ids]


def test_a_trial_exactly_margin_below_the_teacher_goes_on():
    assert search.prune_reason([0.5], [], teacher_val=0.75, margin=0.25, min_finished=5) is None
    assert "teacher" in search.prune_reason([0.49], [], teacher_val=0.75, margin=0.25, min_finished=5)


def test_pruned_trials_are_not_peers_of_the_median_rule():
    """Only completed trials set the median: pruned ones stopped early, at low accuracies."""
    C, P = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
    trials = [NS(state=C, params={"student": "s"}, user_attrs={"val_curve": [0.5]}) for _ in range(2)]
    trials += [NS(state=P, params={"student": "s"}, user_attrs={"val_curve": [0.1]}) for _ in range(3)]
    study = NS(get_trials=lambda deepcopy, states: [t for t in trials if t.state in states])
    attrs = {}
    trial = NS(study=study, set_user_attr=attrs.__setitem__)
    ctx = NS(teacher_val=0.5, margin=1.0, min_finished=2, prep=NS(encoded={"validation": [0] * 10_000}))
    with pytest.raises(optuna.TrialPruned, match="median 0.500"):
        search._pruning_hook(trial, ctx, "s")(0, NS(evals=[{"val_acc": 0.3}]))


def test_a_trial_returns_its_best_validation_pass_and_trains_on_validation(monkeypatch, tmp_path):
    from kd_tutorial import models
    val, test = object(), object()
    seen = {}

    def train(student, rows, *, val_data, **kwargs):
        seen["val"] = val_data
        return History(evals=[{"step": 1, "val_acc": 0.6}, {"step": 2, "val_acc": 0.9}, {"step": 3, "val_acc": 0.7}])
    monkeypatch.setattr(search, "train", train)
    monkeypatch.setattr(search, "_pruning_hook", lambda *a: None)
    monkeypatch.setattr(search, "transfer_rows", lambda ctx, fraction: (None, None))
    monkeypatch.setattr(search, "trial_steps", lambda ctx, spec: 3)
    monkeypatch.setattr(search, "atomic_save_pretrained", lambda *a: None)
    monkeypatch.setattr(search, "student_latency", lambda study, ctx, name, student: 4.0)
    monkeypatch.setattr(models, "build_student", lambda *a, **k: torch.nn.Linear(2, 2))
    monkeypatch.setattr(models, "fold_word_embeddings", lambda m: m)
    trial = optuna.trial.FixedTrial({"T": 2.0, "alpha": 0.5, "student": "distil-2L", "transfer_fraction": 1.0})
    trial.study = None
    ctx = NS(profile=TINY, students={s.name: s for s in TINY.students}, seed=0, teacher=None, out=tmp_path,
             prep=NS(tokenizer=None, encoded={"validation": val, "test": test}), device="cpu")
    assert search.run_trial(trial, ctx) == (0.9, 4.0) and seen["val"] is val


def test_retime_sets_each_completed_record_to_its_students_new_timing(monkeypatch, tmp_path):
    monkeypatch.setattr(search, "load_trial", lambda ctx, number: f"model of {number}")
    timed = {"a": {"p50": 3.0, "q1": 2.5, "q3": 3.5}, "b": {"p50": 1.0, "q1": 0.9, "q3": 1.2}}
    monkeypatch.setattr(search, "latency_in_turns", lambda models, *a, **k: {n: timed[n] for n in models})
    records = [_record(0, 0.9, 9.0, "a"), _record(1, 0.8, 8.0, "b"), _record(2, 0.7, 7.0, "a"),
               _record(3, 0.0, None, "b", "PRUNED")]
    ctx = NS(out=tmp_path, prep=NS(encoded={"validation": None}), device="cpu", latency_n=5,
             profile=NS(precision="fp32"))
    search.retime(ctx, records)
    assert [(r["latency_ms"], r["study_latency_ms"], r["latency_iqr"]) for r in records[:3]] == [
        (3.0, 9.0, [2.5, 3.5]), (1.0, 8.0, [0.9, 1.2]), (3.0, 7.0, [2.5, 3.5])]
    assert "study_latency_ms" not in records[3]


def test_the_front_is_chosen_on_the_latencies_timed_again(monkeypatch, tmp_path):
    """Trial 1 is slower than trial 0 in the study's reading, faster when timed again: both are on the front."""
    state = optuna.trial.TrialState.COMPLETE
    trials = [NS(number=0, state=state, values=[0.9, 1.0], params={"student": "a"}, user_attrs={}),
              NS(number=1, state=state, values=[0.8, 2.0], params={"student": "b"}, user_attrs={})]

    def retime(ctx, records):
        for r in records:
            r["latency_ms"] = {"a": 3.0, "b": 0.5}[r["params"]["student"]]
    monkeypatch.setattr(search, "retime", retime)
    monkeypatch.setattr(search, "evaluate_on_test", lambda ctx, number: {})
    monkeypatch.setattr(search, "plot_front", lambda *a: "plot.png")
    monkeypatch.setattr(search, "atomic_write_json", lambda *a: None)
    monkeypatch.setattr(search, "format_front", lambda front: "")
    ctx = NS(out=tmp_path, profile=NS(name="tiny"), device="cpu", steps=2, teacher_val=0.9,
             prep=NS(encoded={"validation": [0] * 10}))
    result = search.write_results(NS(get_trials=lambda **k: trials), ctx)
    assert sorted(r["number"] for r in result["front"]) == [0, 1]


def test_the_front_table_lists_the_fastest_first():
    front = [_record(7, 0.9, 5.0), _record(8, 0.8, 1.0)]
    rows = search.format_front(front).splitlines()[2:]
    assert [row.split("|")[1].strip() for row in rows] == ["8", "7"]


def test_test_accuracy_counts_every_labelled_test_review_and_no_unlabelled_one(monkeypatch):
    labels = torch.tensor([0, 0, 1, 1, -1])
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])  # 3 of 4 right
    monkeypatch.setattr(search, "load_trial", lambda ctx, number: None)
    monkeypatch.setattr(search, "predict_logits", lambda *a, **k: logits)
    ctx = NS(prep=NS(encoded={"test": NS(labels=labels)}), profile=TINY, device="cpu")
    out = search.evaluate_on_test(ctx, 0)
    assert out["n_test"] == 4 and out["test_accuracy"] == 0.75
    assert out["test_interval"] == list(search.accuracy_interval(3, 4))


def test_the_study_maximises_accuracy_and_minimises_latency(tmp_path):
    study = search._create_study(tmp_path / "search.db")
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]


def test_pruned_trials_count_as_finished_and_failed_ones_do_not():
    from optuna.trial import create_trial, TrialState
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[0.8, 1.0]))
    study.add_trial(create_trial(state=TrialState.PRUNED))
    study.add_trial(create_trial(state=TrialState.FAIL))
    assert search.finished_count(study) == 2


def test_margins_zero_and_one_are_accepted():
    search.check_margin(0.0)
    search.check_margin(1.0)
    with pytest.raises(UsageError):
        search.check_margin(1.01)


# -------------------------------------------------------------------------------------------------- benchmark

def _fake_clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(B, "time", NS(perf_counter=lambda: now[0]))
    return now


def test_loop_summary_rates_the_cache_in_real_tokens_per_second():
    pairs = [(History(tokens=600, seconds=3.0), History(tokens=600, seconds=1.0), 2.0),
             (History(tokens=600, seconds=6.0), History(tokens=600, seconds=2.0), 4.0),
             (History(tokens=600, seconds=2.0), History(tokens=600, seconds=1.5), 3.0)]
    out = B.loop_summary(pairs, 1200)
    assert out["cache_seconds"] == 3.0 and out["cache_tokens_per_s"] == 400.0
    assert out["speedup"] == 400.0 / 200.0


def test_loop_speed_rates_the_cache_on_the_real_tokens_of_the_rows_both_loops_read(monkeypatch):
    lengths = []

    def fake_runs(profile, spec, teacher, rows, *, steps, device, ours_first=False, **kw):
        lengths.append(sum(rows.lengths))
        return History(tokens=60, seconds=1.0), History(tokens=60, seconds=0.5), 2.0
    monkeypatch.setattr(B, "naive_vs_ours", fake_runs)
    monkeypatch.setattr(B, "git_commit", lambda: "abc")
    monkeypatch.setattr(B, "configure", lambda device: {})
    result = B.loop_speed(TINY, steps=2, device="cpu")
    assert result["cache_tokens_per_s"] == lengths[-1] / 2.0 and lengths[-1] < 2 * TINY.batch_size * TINY.max_length


def test_naive_vs_optimised_speedup_and_flops(monkeypatch):
    def fake_runs(*args, between=lambda phase: None, **kwargs):
        between("naive")
        between("cache")
        return History(tokens=500, seconds=4.0), History(tokens=500, seconds=1.0), 0.5
    monkeypatch.setattr(B, "naive_vs_ours", fake_runs)
    bench = _bench()
    out = bench.naive_vs_optimised(None)
    steps = B.SETTINGS["quick"]["steps"]
    rows = B.synthetic_rows(steps * TINY.batch_size, TINY.max_length, seed=1)  # the timed rows: the first drawn
    spec = TINY.students[0].name
    student, online = train_flops(bench.configs[spec], rows.lengths), forward_flops(bench.configs["teacher"],
                                                                                    rows.lengths)
    assert out["speedup"] == 4.0 and out["cache_seconds"] == 0.5
    assert out["naive"]["flops"] == student + online and out["optimised"]["flops"] == student
    assert out["naive"]["tokens_per_s"] == 125.0 and out["optimised"]["tokens_per_s"] == 500.0


def test_a_record_derives_tokens_per_second_tflops_and_mfu():
    r = _bench(peak=100.0).record(seconds=2.0, tokens=1000, flops=4e12)
    assert (r["tokens_per_s"], r["tflops"], r["mfu"]) == (500.0, 2.0, 0.02)


def test_the_worst_batch_times_the_second_pass_to_its_synchronisation(monkeypatch):
    now = _fake_clock(monkeypatch)
    monkeypatch.setattr(B, "synchronize", lambda device: now.__setitem__(0, now[0] + 10.0))  # the queued work

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w, self.calls = torch.nn.Parameter(torch.ones(1)), 0

        def forward(self, **batch):
            self.calls += 1
            now[0] += 100.0 if self.calls == 1 else 1.0  # the warm-up pass is slow
            return NS(loss=(self.w * 0).sum())
    r = _bench().one_worst_batch(Model(), torch.bfloat16)
    assert r["seconds"] == 11.0 and r["tokens"] == TINY.batch_size * TINY.max_length


def test_the_teacher_logits_phase_times_its_timed_pass_alone_on_real_tokens(monkeypatch):
    now, calls = _fake_clock(monkeypatch), []

    def predict_logits(model, rows, **kwargs):
        calls.append(rows)
        now[0] += len(rows)
    monkeypatch.setattr(B, "predict_logits", predict_logits)
    bench = _bench()
    r = bench.teacher_logits(None)
    timed = calls[-1]
    assert len(calls) == 2 and r["seconds"] == len(timed) == B.SETTINGS["quick"]["steps"] * TINY.eval_batch_size
    assert r["tokens"] == sum(timed.lengths) < len(timed) * TINY.max_length
    assert r["flops"] == forward_flops(bench.configs["teacher"], timed.lengths)


def test_a_students_training_phase_counts_its_own_flops_and_the_real_tokens_trained(monkeypatch):
    seen = []

    def train(model, rows, **kwargs):
        seen.append(rows)
        return History(tokens=sum(rows.lengths), seconds=2.0)
    monkeypatch.setattr(B, "train", train)
    bench = _bench()
    name = TINY.students[1].name
    r = bench.train_phase(None, name, "kd", 1e-3)
    timed = seen[-1]
    assert r["tokens"] == sum(timed.lengths) < len(timed) * TINY.max_length
    assert r["flops"] == train_flops(bench.configs[name], timed.lengths) != train_flops(bench.configs["teacher"],
                                                                                          timed.lengths)


def test_inference_seconds_tokens_and_flops_come_from_the_median_pass(monkeypatch):
    monkeypatch.setattr(B, "latency_in_turns", lambda models, *a, **k: {n: {"p50": 1.0, "q1": 0.5, "q3": 2.0}
                                                                       for n in models})
    monkeypatch.setattr(B, "passes_in_turns", lambda models, k, one_pass: {n: [] for n in models})
    timed = [10, 20, 30, 40]
    monkeypatch.setattr(B, "median_pass", lambda runs: {"lengths": timed, "reviews_per_s": 8.0, "tokens_per_s": 200.0,
                                                        "passes": [8.0], "peak_memory_gib": None})
    bench = _bench()
    r = bench.inference({"teacher": None})["teacher"]
    assert r["seconds"] == 0.5 and r["tokens"] == 100
    assert r["flops"] == pytest.approx(forward_flops(bench.configs["teacher"], timed))


def test_rates_read_each_key_from_its_own_phase():
    def rec(flops, seconds):
        return {"flops": flops, "seconds": seconds}
    phases = {"teacher_train": rec(10.0, 1.0), "teacher_logits": rec(20.0, 1.0),
              "students": {"s": rec(30.0, 1.0)}, "inference": {"teacher": rec(40.0, 1.0), "s": rec(50.0, 1.0)}}
    assert B.rates(phases) == {"train:teacher": 10.0, "infer:teacher": 20.0, "train:s": 30.0, "infer:s": 50.0}


def test_the_projection_floor_is_the_profiles_flops_at_the_peak():
    est = B.estimate_profile(TINY)
    rates = {key: 1e9 for phase in est["phases"].values() for key in phase["parts"]}
    p = B.projection(TINY, rates, 100.0)
    assert p["floor_s"] == pytest.approx(est["total_flops"] / 1e14) and not p["fallbacks"]


def test_the_naive_loop_pads_in_fp32_without_grouping_and_the_course_loop_groups_in_auto(monkeypatch):
    configs = {}

    def train(model, rows, *, config, **kwargs):
        configs[kwargs["desc"]] = config
        return History(tokens=1, seconds=1.0)
    monkeypatch.setattr(B, "train", train)
    monkeypatch.setattr(B, "predict_logits", lambda *a, **k: torch.zeros(len(a[1]), 2))
    bench = _bench()
    teacher = B.freeze(bench.teacher())
    B.naive_vs_ours(TINY, TINY.students[0], teacher, bench.rows(8), steps=1, device="cpu", init="random")
    naive, ours = configs["naive loop"], configs["course loop"]
    assert (naive.precision, naive.group_by_length, naive.pad_to_max) == ("fp32", False, TINY.max_length)
    assert (ours.precision, ours.group_by_length, ours.pad_to_max) == ("auto", True, None)
    assert naive.max_steps == ours.max_steps == 1 and naive.temperature == ours.temperature == TINY.temperature
