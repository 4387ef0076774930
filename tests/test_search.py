"""`kd-tutorial search`: a small multi-objective Optuna study on the tiny profile (a few steps per trial)."""
import dataclasses
import json

import pytest

optuna = pytest.importorskip("optuna", reason="optuna is not installed: pip install -e '.[search]'")

from kd_tutorial import cli, search  # noqa: E402
from kd_tutorial.errors import UsageError  # noqa: E402
from kd_tutorial.profiles import get_profile  # noqa: E402

# a cheaper teacher than tiny's (2 epochs, 600 transfer reviews): the study, not the teacher, is under test
PROFILE = get_profile("tiny").replace(teacher_epochs=2, n_transfer=600)
FAST = dict(steps=2, device="cpu", progress=False, latency_n=8, seed=0)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Three calls on one out folder: 3 trials, then 1 more (resumed), then 1 more forced to be pruned.

    Returns each call's search.json content and the trial numbers each call measured on test."""
    out = tmp_path_factory.mktemp("search")
    tested, real = [], search.evaluate_on_test
    search.evaluate_on_test = lambda ctx, number: tested[-1].append(number) or real(ctx, number)
    try:
        runs = []
        for trials, margin in ((3, 1.0), (4, 1.0), (5, -1.0)):  # margin -1: below the teacher + 1, always pruned
            tested.append([])
            runs.append(search.run_search(PROFILE, trials=trials, out=out, margin=margin, **FAST))
    finally:
        search.evaluate_on_test = real
    return out, runs, tested


def test_the_front_on_hand_made_trials_with_the_ties_a_search_makes():
    """The front tests read search.dominates itself: a dominance strict on both objectives, which keeps a trial tied
    on latency with a more accurate one (two trials of one student share its latency), passed them all."""
    def trial(number, acc, ms, state="COMPLETE"):
        return {"number": number, "val_accuracy": acc, "latency_ms": ms, "state": state}
    trials = [trial(0, 0.80, 1.0), trial(1, 0.85, 2.0), trial(2, 0.83, 2.0),  # 2: tied on latency with 1, less right
              trial(3, 0.90, 5.0), trial(4, 0.90, 5.0),  # equal on both: both kept
              trial(5, 0.79, 1.0), trial(6, 0.95, 9.0), trial(7, 0.99, 0.5, "PRUNED")]  # 5: tied on latency with 0
    assert [t["number"] for t in search.pareto_front(trials)] == [0, 1, 3, 4, 6]
    assert search.dominates(trials[1], trials[2]) and not search.dominates(trials[3], trials[4])


def test_the_front_is_non_empty_and_non_dominated(study):
    out, (first, *_), _ = study
    assert [t["state"] for t in first["trials"]] == ["COMPLETE"] * 3
    front = first["front"]
    assert front
    for point in front:
        assert not any(search.dominates(t, point) for t in first["trials"])
    assert {p["number"] for p in front} == {p["number"] for p in search.pareto_front(first["trials"])}
    for point in front:
        assert set(point["params"]) == {"T", "alpha", "student", "transfer_fraction"}
        assert 1.0 <= point["params"]["T"] <= 8.0 and 0.0 <= point["params"]["alpha"] <= 1.0
        assert point["latency_ms"] > 0 and 0.0 <= point["val_accuracy"] <= 1.0
        # timed again side by side, with a spread; the study's single reading is kept beside it
        q1, q3 = point["latency_iqr"]
        assert q1 <= point["latency_ms"] <= q3 and point["study_latency_ms"] > 0
        lo, hi = point["test_interval"]
        assert lo <= point["test_accuracy"] <= hi and 0 < hi - lo < 1 and point["n_test"] > 0
    done = [t for t in first["trials"] if t["state"] == "COMPLETE"]
    for t in done:  # one student, one latency: its trials differ in accuracy alone
        assert {o["latency_ms"] for o in done if o["params"]["student"] == t["params"]["student"]} == {t["latency_ms"]}


def test_search_json_and_the_plot_are_written(study):
    out, runs, _ = study
    saved = json.loads((out / "search.json").read_text())
    assert saved["trials"] == runs[-1]["trials"] and saved["front"] == runs[-1]["front"]
    assert (out / "search-pareto.png").stat().st_size > 1000
    assert (out / "search.db").exists()


def test_a_second_call_resumes_the_study_without_repeating_trials(study):
    _, (first, second, _), _ = study
    assert [t["number"] for t in second["trials"]] == [0, 1, 2, 3]
    # finished trials are read back, not rerun. Only the front's trials carry a test accuracy, and a new trial can
    # push an old one off the front (its latency is measured, so which one varies from run to run)
    # Latency is timed again at each call, so it is left out too (the study's own reading is compared)
    def stored(t):
        return {k: v for k, v in t.items() if k not in ("test_accuracy", "test_interval", "n_test", "latency_ms",
                                                        "latency_iqr")}
    for before, after in zip(first["trials"], second["trials"]):
        assert stored(after) == stored(before)
    for run in (first, second):
        on_front = {p["number"] for p in run["front"]}
        assert {t["number"] for t in run["trials"] if "test_accuracy" in t} == on_front
    assert second["trials"][3]["params"] not in [t["params"] for t in first["trials"]]


def test_a_trial_below_the_threshold_is_marked_pruned(study):
    out, (*_, third), _ = study
    last = third["trials"][-1]
    assert (last["number"], last["state"]) == (4, "PRUNED")
    assert "below the teacher" in last["pruned_because"] and last["val_curve"]
    assert last["number"] not in [p["number"] for p in third["front"]]
    assert not search.trial_folder(out, 4).exists()  # a pruned trial keeps no weights


def test_test_accuracy_is_computed_only_for_the_chosen_points(study):
    _, runs, tested = study
    for result, numbers in zip(runs, tested):
        front = {p["number"] for p in result["front"]}
        assert sorted(numbers) == sorted(front)
        assert all(0.0 <= p["test_accuracy"] <= 1.0 for p in result["front"])
        assert not any("test_accuracy" in t for t in result["trials"] if t["number"] not in front)


def test_the_pruning_rule():
    rule = dict(teacher_val=0.9, margin=0.1, min_finished=2)
    assert search.prune_reason([], [], **rule) is None
    assert "teacher" in search.prune_reason([0.7], [], **rule)
    assert search.prune_reason([0.85], [[0.8]], **rule) is None  # one finished trial: no median yet
    assert "median" in search.prune_reason([0.85], [[0.88, 0.9], [0.9]], **rule)
    assert search.prune_reason([0.85, 0.9], [[0.88, 0.9], [0.9]], **rule) is None
    assert search.prune_reason([0.9, 0.7], [], **rule) is None  # its best pass counts, not its last
    # peers are compared up to this trial's pass: their later 0.95 does not count against an early 0.80
    assert search.prune_reason([0.80], [[0.70, 0.95], [0.75, 0.95]], **(rule | {"margin": 0.5})) is None
    assert search.prune_reason([0.85], [[0.9]], **(rule | {"min_finished": 2})) is None
    assert search.prune_reason([0.85], [[0.9], [0.9]], **(rule | {"min_finished": 3})) is None
    assert search.prune_reason([0.85], [[0.85], [0.85]], **rule) is None  # level with the median: goes on
    two_reached = [[0.9], [0.86, 0.9], [0.87, 0.9]]  # only two finished trials had a second pass
    assert "median" in search.prune_reason([0.85, 0.85], two_reached, **rule)
    assert search.prune_reason([0.85, 0.85], two_reached, **(rule | {"min_finished": 3})) is None
    # below the median by more than one standard error of it on n_val reviews: sqrt(0.9 * 0.1 / 100) = 0.03
    assert "standard error (0.030)" in search.prune_reason([0.86], [[0.9], [0.9]], **rule, n_val=100)
    assert search.prune_reason([0.88], [[0.9], [0.9]], **rule, n_val=100) is None  # within noise: goes on


def test_a_trial_is_compared_only_with_finished_trials_of_its_own_student():
    """Trials of a faster student have their own place on the front: a slower student's median does not prune them."""
    from types import SimpleNamespace
    done = [SimpleNamespace(params={"student": "big"}, user_attrs={"val_curve": [0.9]}) for _ in range(5)]
    study = SimpleNamespace(get_trials=lambda **kw: done)
    attrs = {}
    trial = SimpleNamespace(study=study, set_user_attr=attrs.__setitem__)
    ctx = SimpleNamespace(teacher_val=0.9, margin=0.5, min_finished=2, prep=SimpleNamespace(
        encoded={"validation": [0] * 10_000}))
    history = SimpleNamespace(evals=[{"val_acc": 0.8}])
    search._pruning_hook(trial, ctx, "small")(0, history)  # goes on: no finished trial of "small"
    assert "pruned_because" not in attrs
    with pytest.raises(optuna.TrialPruned, match="median 0.900 of this student's"):
        search._pruning_hook(trial, ctx, "big")(0, history)
    assert "median" in attrs["pruned_because"]


def test_a_diverged_trial_is_pruned_with_its_reason_and_the_study_goes_on(study, monkeypatch, capfd, tmp_path):
    """A nan loss is a bad point of the space, not the user's error; an empty front says why and what to change."""
    from kd_tutorial.train import TrainingDivergedError

    def diverge(*args, **kwargs):
        raise TrainingDivergedError("the loss became nan at step 1 (epoch 0); lower the learning rate")
    monkeypatch.setattr(search, "train", diverge)
    result = search.run_search(PROFILE, trials=2, out=tmp_path / "nan", **FAST)
    assert [t["state"] for t in result["trials"]] == ["PRUNED", "PRUNED"] and result["front"] == []
    assert result["trials"][0]["pruned_because"] == "training diverged: the loss became nan at step 1 (epoch 0)"
    said = capfd.readouterr()
    assert "trial 1 pruned (" in said.out and "): training diverged" in said.out
    empty = [line for line in said.out.splitlines() if "the front is empty" in line]
    assert len(empty) == 1 and empty[0].endswith(  # not --margin, which cannot help a diverged trial
        "give more --trials (a diverged trial is a bad point of T and alpha)") and "--margin" not in said.out
    assert "Traceback" not in said.err
    assert search.empty_front_fix([{"pruned_because": "validation accuracy 0.5 after pass 1 is below the teacher's "
                                                      "0.9 - 0.15"}]) == "give a larger --margin, or give more --trials"


def test_ctrl_c_in_a_trial_leaves_no_traceback_from_optuna(study, monkeypatch, tmp_path):
    """Optuna logged the interrupted trial at WARNING, with a 34-line traceback, before the CLI's one line."""
    import logging
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)
    keep = Keep(level=logging.DEBUG)
    logging.getLogger("optuna").addHandler(keep)  # optuna's own handler writes to the stream pytest captured early

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(search, "train", interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            search.run_search(PROFILE, trials=1, out=tmp_path / "int", **FAST)
    finally:
        logging.getLogger("optuna").removeHandler(keep)
    assert not [r for r in records if r.levelno >= logging.WARNING], [r.getMessage()[:80] for r in records]


def test_missing_trial_weights_are_a_one_line_error(study, tmp_path):
    import shutil
    out, *_ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "trials")
    (copy / "trials").mkdir()
    with pytest.raises(UsageError, match=r"weights are missing from .*: restore them there, or give another --out"):
        search.run_search(PROFILE, trials=5, out=copy, margin=-1.0, **FAST)


def test_a_student_that_learns_from_the_spare_reviews_in_distill_is_told_the_study_reads_none():
    """search's transfer set is the labelled and transfer reviews for every student: the cpu profile's compact
    student, which reads the spare train reviews too in distill, is named in one line; tiny has none to name."""
    assert search.spare_note(get_profile("tiny")) is None
    assert search.spare_note(get_profile("cpu")) == (
        "search: compact-2L-H128 also learns from the spare train reviews in distill; here every trial reads the "
        "labelled and transfer reviews alone, at the budget they make")
    cpu = get_profile("cpu")
    both = cpu.replace(students=tuple(dataclasses.replace(s, spare_reviews=True) for s in cpu.students))
    assert search.spare_note(both).startswith("search: distil-3L, compact-2L-H128 also learn from")
    from types import SimpleNamespace
    assert search.spare_note(cpu, SimpleNamespace(spare_rows=lambda: 0)) is None  # data with none: nothing to say
    assert search.spare_note(cpu, SimpleNamespace(spare_rows=lambda: 5)) == search.spare_note(cpu)


def test_a_student_is_timed_once_and_a_trial_trains_as_long_whatever_share_of_the_transfer_set_it_reads(
        monkeypatch):
    """Two trials of one student differ in weights, not in speed: timing each let the timer's noise keep the less
    accurate one on the front. And a trial on a quarter of the transfer set got a quarter of the steps, so the
    fraction changed two things at once."""
    from types import SimpleNamespace
    timed = []
    monkeypatch.setattr(search, "latency", lambda model, *a, **kw: timed.append(model) or {"p50": 1.0 + len(timed)})
    study = SimpleNamespace(user_attrs={})
    study.set_user_attr = study.user_attrs.__setitem__
    ctx = SimpleNamespace(prep=SimpleNamespace(encoded={"validation": None}), device="cpu", latency_n=8,
                          profile=PROFILE, rows=list(range(1000)), steps=None)
    ms = [search.student_latency(study, ctx, name, model) for name, model in (("a", "A1"), ("b", "B"), ("a", "A2"))]
    assert ms == [2.0, 3.0, 2.0] and timed == ["A1", "B"]
    spec = PROFILE.students[0]
    assert search.trial_steps(ctx, spec) == search.step_budget(PROFILE, spec, 1000)
    assert search.trial_steps(SimpleNamespace(**{**vars(ctx), "steps": 7}), spec) == 7


def test_a_study_of_another_budget_is_not_continued(study):
    out, _, _ = study
    with pytest.raises(UsageError, match="--steps 2"):
        search.run_search(PROFILE, trials=6, out=out, steps=3, device="cpu", progress=False)


@pytest.mark.parametrize("argv, said", [
    (["--trials", "0"], "--trials"), (["--steps", "-1"], "--steps"), (["--profile", "nope"], "unknown profile"),
    (["--margin", "x"], "--margin"),
    (["--margin", "-1"], "--margin -1.0: give how far below the teacher's validation accuracy a trial may fall")])
def test_bad_values_are_one_line_errors(argv, said, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "run_search", lambda *a, **k: pytest.fail("a study started: the value was let through"))
    try:
        code = cli.main(["search", "--out", str(tmp_path), *argv])
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and said in err and "\n" not in err and err.startswith("kd-tutorial: error:")


def test_a_data_variable_that_names_a_source_is_refused_with_a_fix_search_can_take(capsys, monkeypatch, tmp_path):
    """search has no --set: its refusal of KD_TUTORIAL_DATA_DIR=tiny named one."""
    monkeypatch.setenv("KD_TUTORIAL_DATA_DIR", "tiny")
    monkeypatch.setattr(cli, "run_search", lambda *a, **k: pytest.fail("a study started: the folder was let through"))
    assert cli.main(["search", "--profile", "tiny", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("'tiny' names a data source, not a folder: give ./tiny for a folder of that name, or unset "
                        "KD_TUTORIAL_DATA_DIR for the profile's own data") and "--set" not in err


def test_a_front_plot_the_disk_refuses_is_one_storage_error_and_leaves_no_cut_png(tmp_path, monkeypatch):
    """Before: a full disk while the Pareto plot was saved was an OSError traceback, with a cut PNG left."""
    import contextlib
    import errno
    from pathlib import Path

    from matplotlib.figure import Figure
    from kd_tutorial.store import StorageError

    def full(self, fname, **kwargs):
        with open(fname, "wb") if isinstance(fname, (str, Path)) else contextlib.nullcontext(fname) as f:
            f.write(b"\x89PNG half")  # a cut PNG, to a path (as before) or a file object
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Figure, "savefig", full)
    record = {"number": 0, "state": "COMPLETE", "latency_ms": 1.0, "val_accuracy": 0.8, "params": {"student": "s"}}
    with pytest.raises(StorageError, match="no space left on the disk"):
        search.plot_front([record], [record], tmp_path / "search-pareto.png", "t")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_under_the_study_database_is_one_line_and_keeps_the_finished_trials(tmp_path, monkeypatch):
    """Before: SQLite's "database or disk is full" when a trial's result was stored reached the user as optuna's
    AssertionError traceback ("Should not reach."); now it is one StorageError naming the fix, and the trials
    finished before it stay in search.db for the next call."""
    import sqlite3

    import optuna
    import sqlalchemy.exc
    from optuna.storages._rdb import storage as rdb
    from kd_tutorial.store import StorageError
    db = tmp_path / "search.db"
    study = search._create_study(db)
    study.optimize(lambda trial: (0.8, 1.0), n_trials=1)

    def full(self, *a, **k):
        raise sqlalchemy.exc.OperationalError("UPDATE trials", {}, sqlite3.OperationalError("database or disk is full"))
    monkeypatch.setattr(rdb.RDBStorage, "set_trial_state_values", full)
    with pytest.raises(StorageError, match=r"^cannot write .*search.db: database or disk is full; free some space, "
                                           r"or make .* writable, then run the same command again to continue"):
        with search._study_writes(db):
            study.optimize(lambda trial: (0.9, 1.0), n_trials=1)
    monkeypatch.undo()
    done = optuna.load_study(study_name=search.STUDY_NAME, storage=f"sqlite:///{db}").get_trials(
        states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.values for t in done] == [[0.8, 1.0]]
    with pytest.raises(ValueError, match="not a database one"):  # any other error goes through as it is
        with search._study_writes(db):
            raise ValueError("not a database one")


def test_a_trial_whose_weights_are_cut_is_one_line_naming_the_fix(tmp_path):
    """Before: a trial folder whose model.safetensors was cut (a study copied to another machine, the copy cut short)
    was a SafetensorError traceback once every trial had run, when the front was timed and tested."""
    import types

    from transformers import BertConfig, BertForSequenceClassification
    folder = search.trial_folder(tmp_path, 3)
    BertForSequenceClassification(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=16, max_position_embeddings=16)).save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UsageError, match=r"^cannot read trial 3's weights in .* \(SafetensorError: .*\): restore them "
                                         r"there from where the study was copied, or give another --out"):
        search.load_trial(types.SimpleNamespace(out=tmp_path), 3)


@pytest.mark.parametrize("recorded", ["missing", None, "0.9"])
def test_a_teacher_json_without_a_validation_accuracy_gives_the_pruning_rule_the_teachers_computed_again(
        study, monkeypatch, capsys, recorded):
    """An older or hand-edited teacher.json (no val_accuracy, null, a string) was read as a teacher at 0 %: the
    "below the teacher" rule never pruned, and search.json said 0. The cached teacher's accuracy is computed again."""
    from kd_tutorial import teachers
    teacher, prep, info = teachers.ensure_teacher(PROFILE, device="cpu", progress=False)
    edited = {k: v for k, v in info.items() if k != "val_accuracy"} | ({} if recorded == "missing"
                                                                        else {"val_accuracy": recorded})
    monkeypatch.setattr(search, "ensure_teacher", lambda *a, **k: (teacher, prep, edited))
    ctx = search.make_context(PROFILE, study[0], device="cpu", steps=2, progress=False)
    assert ctx.teacher_val == pytest.approx(info["val_accuracy"], abs=1e-9) and info["val_accuracy"] > 0.5
    assert "records no validation accuracy" in capsys.readouterr().out
