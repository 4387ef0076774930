"""End to end: `kd-tutorial distill --profile tiny`, the artifact cache, and resume."""
import dataclasses
import json
import os
import threading
from pathlib import Path

import pytest
import torch

from kd_tutorial import artifacts, cli, models, parallel, pipeline, plan, store, teacher_layers, teachers
from kd_tutorial.profiles import get_profile, ProfileOverrideError

from test_data import write_parquet


@pytest.fixture(scope="module", autouse=True)
def _same_models_on_every_cpu(tmp_path_factory):
    """fp32 everywhere, and a private artifact cache. "auto" precision means bf16 on a CPU with bf16 units and
    fp32 on the others, and the one-seed accuracies asserted below must not depend on which CPU runs them; a
    teacher cached by another test of the session (trained in that CPU's precision) must not be reused."""
    from kd_tutorial import device
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(device, "bf16_supported", lambda name: False)
        mp.setenv("KD_TUTORIAL_HOME", str(tmp_path_factory.mktemp("kd-home")))
        mp.setenv("OMP_WAIT_POLICY", "PASSIVE")  # PyTorch has read it already: only the record sees it
        yield


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert cli.main(["distill", "--profile", "tiny", "--out", str(out), "--quiet"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_the_record_says_how_the_threads_waited(tiny_run):
    """Its times depend on it: a run the console script made wait passively (a busy machine) says so."""
    assert tiny_run[1]["run"]["omp_wait_policy"] == "PASSIVE"
    load = tiny_run[1]["run"]["load_at_start"]  # and how busy the machine was as it started
    assert load is None or load >= 0
    for m in tiny_run[1]["models"]:  # one seed's three throughput passes, in turns, the median kept
        [passes] = m["reviews_per_s_passes"]
        assert len(passes) == 3 and sorted(passes)[1] == m["reviews_per_s"]


def len_test(results):
    return results["run"]["split_sizes"]["test"]


def _row(results, name):
    return next(r for r in results["models"] if r["name"] == name)


def test_teacher_learns_the_built_in_task(tiny_run):
    _, results = tiny_run
    assert _row(results, "teacher")["accuracy"] >= 0.80  # chance is 0.5; a bag of words gets about 0.74


def _comparison(results, student, recipe, against="baseline"):
    return next(c for c in results["comparisons"]
                if (c["student"], c["recipe"], c["against"]) == (student, recipe, against))


def test_kd_with_transfer_set_beats_the_hard_label_baseline(tiny_run):
    _, results = tiny_run
    for spec in get_profile("tiny").students:
        c = _comparison(results, spec.name, "kd+transfer")
        kd, base = _row(results, f"{spec.name} kd+transfer")["accuracy"], _row(results, f"{spec.name} baseline")["accuracy"]
        assert c["diff"] == pytest.approx(kd - base, abs=1e-6)  # one seed: the paired difference is the gap
        assert c["ci_low"] <= c["diff"] <= c["ci_high"]
    # the compact student, trained from scratch, gains most: the whole 95 % interval is above 0
    # (measured in fp32: 69.0% -> 83.8%, +14.8 points, CI [+11.9, +17.7])
    assert results["run"]["precision"]["training"] == "fp32"  # the same arithmetic on every CPU
    compact = _comparison(results, "compact-1L-H32", "kd+transfer")
    assert compact["verdict"] == "better" and compact["diff"] > 0.05, compact
    assert compact["p_mcnemar"] < 1e-3


def test_every_run_that_learns_from_the_teacher_agrees_with_it_more_than_the_baseline(tiny_run):
    """The same effects as on the cpu profile, in CI: soft targets, the control's hard pseudo-labels and the
    intermediate terms all move a student towards its teacher; the compact student gains from each of them."""
    _, results = tiny_run
    for spec in get_profile("tiny").students:
        base = _row(results, f"{spec.name} baseline")["agreement"]
        for recipe in plan.student_recipes(get_profile("tiny"), spec):
            if recipe.name != "baseline":
                assert _row(results, f"{spec.name} {recipe.name}")["agreement"] > base + 0.03, (spec.name, recipe.name)
    for recipe in ("kd+transfer+values", "pseudo-label"):
        assert _comparison(results, "compact-1L-H32", recipe)["verdict"] == "better"


def test_results_json_has_the_promised_fields(tiny_run):
    out, results = tiny_run
    run = results["run"]
    for key in ("profile", "data_source", "split_sizes", "device", "versions", "seeds", "git_commit",
                "wall_seconds", "phase_seconds", "evaluated_on", "student_workers"):
        assert key in run, key
    assert run["profile"] == "tiny" and run["evaluated_on"] == "test"
    assert run["data_notes"] == []  # the built-in corpus fills every split tiny asks for, with no duplicate
    assert set(run["phase_seconds"]) == {"teacher", "teacher_logits", "teacher_layers", "students", "evaluation"}
    # compact-1L-H32's kd+transfer+values reads the value vectors of the teacher's layer 4 (of 4) from the bf16 cache
    assert run["teacher_layers"]["setting"] == "cache" and run["teacher_layers"]["cached"] == ["values 4"]
    assert run["teacher_layers"]["runs_reading_it"] == ["compact-1L-H32 kd+transfer+values"]  # the one run that does
    rows = sum(run["split_sizes"][s] for s in ("train", "transfer"))
    assert 0 < run["teacher_layers"]["gb"] * 1e9 <= rows * 64 * 64 * 2  # up to 64 tokens x width 64 x 2 bytes a row
    assert run["student_workers"] == parallel.default_workers("cpu")  # one per core on 2 to 4 cores (Linux); else 1
    names = {r["name"] for r in results["models"]}
    profile = get_profile("tiny")
    runs = {s.name: [r.name for r in plan.student_recipes(profile, s)] for s in profile.students}
    assert names == {"teacher"} | {f"{s} {r}" for s, rs in runs.items() for r in rs}
    for row in results["models"]:
        for key in ("accuracy", "agreement", "ece", "params", "mb", "latency_ms", "latency_q1_ms", "latency_q3_ms",
                    "reviews_per_s", "tokens_per_s", "train_tokens_per_s"):
            assert row.get(key) is not None, (row["name"], key)
        assert 0 <= row["accuracy"] <= 1 and row["latency_ms"] > 0
        assert row["latency_q1_ms"] <= row["latency_ms"] <= row["latency_q3_ms"]
    # every recipe against its student's baseline, the soft-target runs against the pseudo-label control, and the
    # recipes that add to logit KD against kd+transfer; nothing else
    pairs = {(c["student"], c["recipe"], c["against"]) for c in results["comparisons"]}
    expected = set()
    for s in profile.students:
        added = [r for r in runs[s.name] if r.startswith("kd+transfer+")]
        assert added, s.name  # the tiny profile gives each student an intermediate recipe
        expected |= {(s.name, r, "baseline") for r in runs[s.name] if r != "baseline"}
        expected |= {(s.name, r, "pseudo-label") for r in ["kd+transfer", *added]}
        expected |= {(s.name, r, "kd+transfer") for r in added}
    assert pairs == expected
    for c in results["comparisons"]:
        assert c["verdict"] in ("better", "worse", "no detectable difference at this size")
        assert 0 <= c["p_mcnemar"] <= 1 and c["reviews"] == len_test(results)
    for s in profile.students:  # chosen on validation, and never the baseline or the pseudo-label control
        best = results["best_recipes"][s.name]
        assert best["recipe"] in runs[s.name] and best["recipe"] not in ("baseline", "pseudo-label")
        assert best["share_of_teacher"] == _row(results, f"{s.name} {best['recipe']}")["share_of_teacher"]
    teacher = _row(results, "teacher")
    assert teacher["agreement"] == 1.0 and "share_of_teacher" not in teacher
    for row in results["models"][1:]:  # each student's share of the teacher: its accuracy over the teacher's
        share = row["share_of_teacher"]
        assert share["share"] == pytest.approx(row["accuracy"] / teacher["accuracy"], rel=1e-6), row["name"]
        assert share["ci_low"] <= share["share"] <= share["ci_high"] and share["reviews"] == len_test(results)
    for png in ("training_curves.png", "accuracy_vs_latency.png"):
        assert (out / png).stat().st_size > 10_000
    assert (out / "checkpoints").is_dir()


def test_a_run_cut_short_leaves_the_earlier_runs_files_as_they_were(tiny_run, monkeypatch):
    """Checkpoints go into ``out`` only once the run is evaluated, just before its results.json: a run stopped while
    training or evaluating (here: Ctrl-C in the evaluation) leaves the earlier run's results and checkpoints alone."""
    out, _ = tiny_run
    files = sorted(p for p in (out / "checkpoints").rglob("*") if p.is_file()) + [out / "results.json"]
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in files}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "evaluate_all", interrupted)
    with pytest.raises(KeyboardInterrupt):  # every run is in the cache: loaded, not trained
        pipeline.run_distill(get_profile("tiny"), out=out, resume=True, progress=False, workers=1)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before


def test_each_checkpoint_holds_its_tokenizer_so_it_loads_whole(tiny_run):
    """A checkpoint held only config.json and the weights: `--teacher` (and transformers' pipeline()) refused it,
    "holds no tokenizer that transformers can load". It holds the tokenizer the run encoded its reviews with."""
    out, results = tiny_run
    folder = out / "checkpoints" / "compact-1L-H32_kd+transfer" / "model"
    tokenizer = artifacts.teacher_tokenizer(get_profile("tiny"), str(folder))
    assert tokenizer.get_vocab() == artifacts.teacher_tokenizer(get_profile("tiny"), "tiny-bert").get_vocab()
    for name in results["run"]["student_status"]:
        assert (out / "checkpoints" / name.replace(" ", "_") / "model" / "tokenizer_config.json").is_file(), name


def test_checkpoints_an_earlier_run_wrote_and_this_one_does_not_are_removed_and_nothing_else(tmp_path):
    """`--out` reused (runs/latest, after a run of another profile): the earlier run's checkpoints stayed beside the
    new ones, which results.json did not name. They go; a folder results.json did not name, and a file of the
    learner's own inside a named one, stay."""
    from transformers import BertConfig, BertForSequenceClassification
    from kd_tutorial.profiles import TINY_BERT
    earlier = {"run": {"student_status": {"old-3L baseline": "trained", "both kd": "trained", "../up": "trained"}}}
    (tmp_path / "results.json").write_text(json.dumps(earlier))
    for name in ("old-3L_baseline", "both_kd", "mine"):
        (tmp_path / "checkpoints" / name / "model").mkdir(parents=True)
        (tmp_path / "checkpoints" / name / "model" / "config.json").write_text("{}")
    (tmp_path / "checkpoints" / "both_kd" / "notes.txt").write_text("my notes")
    (tmp_path / "up").mkdir()
    model = BertForSequenceClassification(BertConfig(vocab_size=100, **TINY_BERT))
    pipeline.write_checkpoints({"new-2L baseline": {"model": model}, "both kd": {"model": model}}, tmp_path)
    kept = tmp_path / "checkpoints"
    left = sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file())
    assert [p for p in left if not p.startswith(("new-2L_baseline/model/", "both_kd/model/"))] == [
        "both_kd/notes.txt", "mine/model/config.json"]  # old-3L_baseline gone whole
    assert (tmp_path / "checkpoints" / "both_kd" / "model" / "model.safetensors").is_file()  # rewritten, not removed
    assert not (tmp_path / "checkpoints" / "old-3L_baseline").exists() and (tmp_path / "up").is_dir()
    assert not (tmp_path / "results.json").exists()  # the run writes its own next


def test_a_stale_checkpoint_folder_keeps_the_learners_own_files(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"run": {"student_status": {"old baseline": "trained"}}}))
    (tmp_path / "checkpoints" / "old_baseline" / "model").mkdir(parents=True)
    (tmp_path / "checkpoints" / "old_baseline" / "notes.txt").write_text("my notes")
    pipeline.write_checkpoints({}, tmp_path)
    assert not (tmp_path / "checkpoints" / "old_baseline" / "model").exists()
    assert (tmp_path / "checkpoints" / "old_baseline" / "notes.txt").read_text() == "my notes"


@pytest.mark.parametrize("status", ["mine", ["mine"], {"a\x00b": "trained", "x/y": "trained", "..": "trained"}])
def test_an_odd_earlier_results_json_names_no_checkpoint_to_remove(tmp_path, status):
    """A string was read letter by letter (checkpoints/m, i, n, e removed), and a NUL in a name raised after the
    earlier results.json was gone, so the run ended with none."""
    (tmp_path / "results.json").write_text(json.dumps({"run": {"student_status": status}}))
    for name in ("m", "mine", "a\x00b".replace("\x00", "_"), "x"):
        (tmp_path / "checkpoints" / name / "model").mkdir(parents=True, exist_ok=True)
    pipeline.write_checkpoints({}, tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["a_b", "m", "mine", "x"]


def test_an_earlier_checkpoint_differing_only_in_case_is_not_removed_after_the_new_one_is_written(tmp_path):
    """On a file system that ignores case (macOS's default), Foo_kd and foo_kd are one folder: the stale one's
    removal would take the checkpoint just written."""
    from transformers import BertConfig, BertForSequenceClassification
    from kd_tutorial.profiles import TINY_BERT
    (tmp_path / "results.json").write_text(json.dumps({"run": {"student_status": {"Foo kd": "trained"}}}))
    (tmp_path / "checkpoints" / "Foo_kd" / "model").mkdir(parents=True)
    model = BertForSequenceClassification(BertConfig(vocab_size=100, **TINY_BERT))
    pipeline.write_checkpoints({"foo kd": {"model": model}}, tmp_path)
    assert (tmp_path / "checkpoints" / "Foo_kd" / "model").is_dir()  # on Linux two folders: the old one is left


def test_a_teacher_in_the_checkpoints_this_run_replaces_is_refused_before_anything_loads(tiny_run, tmp_path, capsys):
    """README: a checkpoint loads whole as --teacher. One in the --out it was written to (runs/latest, the default)
    would be replaced or removed by the run it teaches."""
    out, _ = tiny_run
    teacher = out / "checkpoints" / "distil-2L_kd+transfer" / "model"
    assert cli.main(["distill", "--profile", "tiny", "--teacher", str(teacher), "--out", str(out), "--quiet"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.endswith(f"teacher {teacher} lies in the checkpoints of --out {out}, which this run replaces or "
                         "removes: copy it elsewhere first (cp -r), or give another --out"), line
    with pytest.raises(Exception, match="lies in the checkpoints of --out"):
        pipeline.run_distill(get_profile("tiny"), teacher=str(teacher), out=out, progress=False, workers=1)
    pipeline.check_teacher_outside(str(teacher), tmp_path)  # another --out: fine


def test_a_second_run_into_an_out_in_use_waits_for_it_and_names_it_instead_of_mixing_files(tmp_path, monkeypatch,
                                                                                          capsys):
    """Two `distill --out SAME` at once (a double-click, a notebook cell and a terminal): the one that finished its
    checkpoints second removed the other's, whose results.json then named checkpoints that were gone, beside the
    other run's plots. The second run now waits for the --out; past the timeout, one line names the holder and the
    fix, before anything loads, and the earlier results are untouched."""
    (tmp_path / "results.json").write_text('{"run": {"student_status": {}}, "models": []}')
    monkeypatch.setattr(pipeline, "_before_the_teacher", lambda *a, **k: pytest.fail("went on without the lock"))
    monkeypatch.setenv(store.LOCK_TIMEOUT_ENV, "0")
    held, release = threading.Event(), threading.Event()

    def other_run():  # another thread waits for the lock as another process would (store.locked)
        with store.locked(tmp_path):
            held.set()
            release.wait(10)
    thread = threading.Thread(target=other_run)
    thread.start()
    try:
        assert held.wait(10)
        status = cli.main(["distill", "--profile", "tiny", "--out", str(tmp_path), "--quiet"])
    finally:
        release.set()
        thread.join()
    err = capsys.readouterr().err
    assert status == 2
    assert f"waiting for {tmp_path}: in use by process {os.getpid()} on " in err
    assert "(or press Ctrl-C and give another --out)" in err
    line = err.strip().splitlines()[-1]
    assert f"{tmp_path} has been in use by process {os.getpid()} on " in line
    assert "let it finish, give another --out, or if that process no longer runs, delete" in line
    assert (tmp_path / "results.json").read_text() == '{"run": {"student_status": {}}, "models": []}'


def test_students_are_smaller_and_faster_than_the_teacher(tiny_run):
    _, results = tiny_run
    teacher = _row(results, "teacher")
    compact = _row(results, "compact-1L-H32 baseline")
    assert compact["params"] < teacher["params"]
    # faster by construction: fewer FLOPs per review (the measured speed-up is the benchmark's business, not a
    # wall-clock assert on a shared machine); the measured rates are only checked to be there
    from kd_tutorial import flops
    profile = get_profile("tiny")
    lengths = flops.imdb_lengths(64, profile.max_length)
    t_cfg = flops.teacher_config(profile)
    spec = next(s for s in profile.students if s.name == "compact-1L-H32")
    assert flops.forward_flops(flops.student_config(spec, t_cfg), lengths) < flops.forward_flops(t_cfg, lengths) / 4
    assert compact["reviews_per_s"] > 0 and teacher["reviews_per_s"] > 0


def test_second_run_reuses_the_teacher_and_resume_skips_finished_students(tiny_run, tmp_path, monkeypatch):
    out, first = tiny_run

    def no_training(*args, **kwargs):  # not a stopwatch: the second run must not train anything at all
        raise AssertionError("the second run trained a model that the artifact cache holds")
    for module in (pipeline, teachers):  # the students' and the teacher's training
        monkeypatch.setattr(module, "train", no_training)

    def no_prediction(*args, **kwargs):  # the evaluated students' test logits are kept beside them
        raise AssertionError("the second run predicted the test split again with a student the cache had evaluated")
    monkeypatch.setattr(pipeline, "predict_logits", no_prediction)
    # a fake clock for the timings (every forward pass 1 ms), whose batches and quartiles still run: they are not
    # what is checked here, and tiny_run timed these very models (810 batch-1 passes and 81 batches of 128)
    from kd_tutorial import evaluate
    monkeypatch.setattr(evaluate, "_forward_ms", lambda model, batch, device, precision: 1.0)
    assert cli.main(["distill", "--profile", "tiny", "--out", str(out), "--resume", "--quiet"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["run"]["teacher_status"] == "cached"
    # the first run trained every student; --resume takes all of them from the artifact cache
    assert set(first["run"]["student_status"].values()) == {"trained"}
    assert set(again["run"]["student_status"].values()) == {"cached"}
    for r1, r2 in zip(first["models"], again["models"]):
        assert r1["name"] == r2["name"] and r1["accuracy"] == r2["accuracy"]
    assert first["comparisons"] == again["comparisons"]


def test_teacher_logits_are_cached_and_aligned_with_the_split(tiny_run):
    profile = get_profile("tiny")
    teacher, prep, info = teachers.ensure_teacher(profile, progress=False)
    assert info["status"] == "cached"
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    cached = teachers.ensure_teacher_logits(profile, "transfer", progress=False)
    assert cached.shape == (len(prep.encoded["transfer"]), 2)
    from kd_tutorial.evaluate import predict_logits
    fresh = predict_logits(teacher, prep.encoded["transfer"], batch_size=profile.eval_batch_size, device="cpu")
    assert torch.allclose(cached, fresh, atol=1e-3)  # same batches, same rows: the cache is the teacher's output
    assert (prep.directory / "logits-transfer.pt").exists()
    assert str(prep.directory).startswith(os.environ["KD_TUTORIAL_HOME"])


def test_corrupt_cached_logits_give_a_clear_error(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path))
    profile = get_profile("tiny")
    prep = artifacts.prepare(profile)
    prep.directory.mkdir(parents=True)
    prep.split_file("logits", "test").write_bytes(b"not a tensor")
    with pytest.raises(artifacts.ArtifactError, match="cannot read cached logits.*delete the file"):
        teachers.ensure_teacher_logits(profile, "test", progress=False)


def test_atomic_writes_leave_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    store.atomic_write_json(target, {"ok": 1})

    def crash(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(store.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.atomic_write_json(target, {"ok": 2})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind


def test_student_cache_key_changes_with_any_setting_that_decides_the_run(tiny_run):
    profile = get_profile("tiny")
    prep = artifacts.prepare(profile)
    spec = profile.students[0]
    config = plan.run_config(profile, spec, "kd", steps=100, seed=0)

    def folder(profile=profile, spec=spec, config=config, init="pretrained"):
        return artifacts.student_folder(prep, "distil-2L kd s0", *plan.run_key(profile, spec, config, init))
    assert folder() == folder()  # stable
    assert folder().parent == prep.directory / "students"  # stored under its own teacher
    changes = [dict(config=dataclasses.replace(config, **change)) for change in
               (dict(temperature=4.0), dict(seed=1), dict(max_steps=101), dict(mode="ce"))]
    changes += [dict(init="random"), dict(spec=dataclasses.replace(spec, layer_map=(1, 3))),
               dict(profile=profile.replace(student_labels=100)), dict(profile=profile.replace(attention_dropout=0.0)),
               dict(profile=profile.replace(student_hidden_dropout=0.0)),
               dict(spec=dataclasses.replace(spec, teacher_word_vectors=True))]
    for change in changes:
        assert folder(**change) != folder(), change
    # a run cached by code that computed runs differently is never handed back
    revision, before = plan.RUN_REVISION, folder()
    plan.RUN_REVISION += 1
    try:
        assert folder() != before
    finally:
        plan.RUN_REVISION = revision
    # the runs docs/tuning/student_dropout.py trained with the setting patched in (e24) keep their folders
    assert plan.run_key(profile.replace(student_hidden_dropout=0), spec, config, "pretrained")[-1] == (
        "student hidden dropout", 0.0)
    assert profile.replace(student_hidden_dropout=0.0).teacher_hash() == profile.teacher_hash()  # the same teacher
    # a student without the option keeps the key it had before teacher_word_vectors existed
    assert "teacher_word_vectors" not in plan.run_key(profile, spec, config, "pretrained")[0]


def test_a_student_learning_from_the_spare_reviews_reads_them_in_every_transfer_set_run_and_only_there(
        capsys, monkeypatch):
    """StudentSpec.spare_reviews (the cpu profile's compact student, e32): the train reviews no split holds join
    its transfer set, labelled reviews first, then the transfer reviews, then the spare ones, each with the
    teacher's logits; every run of that student, baseline included, gets the step budget they make; a run that does
    not read the transfer set keeps its folder, and the other student is untouched."""
    # 600 of the corpus's train reviews are left over; a teacher of one epoch and runs of a tenth of an epoch
    # (11 to 13 steps, where half an epoch took 52 to 61 in 12 runs): what is checked here is which reviews each
    # run reads and at what budget, not what it learns
    base = get_profile("tiny").with_overrides(["n_train=400", "teacher_epochs=1", "student_epochs=0.1",
                                               "evals_per_run=1"])
    spare_spec = dataclasses.replace(base.students[1], spare_reviews=True)
    profile = base.replace(students=(base.students[0], spare_spec))
    teacher, prep, _ = teachers.ensure_teacher(profile, progress=False)
    logits = {s: teachers.ensure_teacher_logits(profile, s, progress=False) for s in ("train", "transfer")}
    kw = dict(runs=("baseline", "kd+transfer", "pseudo-label", "kd+transfer+values"), progress=False)
    with_spare = pipeline.distill_students(profile, teacher, prep, logits, **kw)
    n_spare = len(prep.data.spare)
    assert n_spare == 600 and prep.spare_rows() == n_spare
    # the teacher's layers are cached on the spare reviews for the student that reads them there, and only its keys
    assert with_spare["compact-1L-H32 kd+transfer+values"]["cached_layers"]
    spare_files = sorted(p.name for p in prep.directory.glob("*-spare-*.npy"))
    assert spare_files == [f"values-4-spare-{prep.split_hash('spare')}.npy"], spare_files
    assert len(teachers.ensure_teacher_layers(profile, "spare", [("values", 4)], teacher_model=teacher)) == n_spare
    said = capsys.readouterr().out
    assert f"compact-1L-H32: {with_spare['compact-1L-H32 baseline']['plan']['steps']} steps per run" in said
    assert "the transfer-set runs also learn from 600 spare train reviews" in said
    rows = plan.student_labels(profile, prep)
    n_rows = len(rows) + len(prep.encoded["transfer"])
    steps = {s.name: plan.step_budget(profile, s, n_rows + (n_spare if s.spare_reviews else 0))
             for s in profile.students}
    for name, item in with_spare.items():
        assert item["plan"]["steps"] == steps[item["student"]], name  # the same budget for every run of a student
    assert steps["compact-1L-H32"] > steps["distil-2L"]
    # the transfer set: labelled, transfer, spare reviews in that order, each with the teacher's logits on it
    sets = plan.student_data(profile, prep, logits | {"spare": teachers.ensure_teacher_logits(profile, "spare")},
                             splits=("transfer", "spare"))
    both, t_logits, _ = sets["transfer"]
    assert len(both) == len(t_logits) == n_rows + n_spare and both.name == "train+transfer+spare"
    assert both.input_ids[n_rows:] == prep.encoded["spare"].input_ids and (both.labels[n_rows:] == -1).all()
    assert torch.equal(t_logits[n_rows:], teachers.ensure_teacher_logits(profile, "spare"))
    assert teachers.ensure_teacher_logits(profile, "spare").shape == (n_spare, 2)
    assert prep.split_file("logits", "spare").name == f"logits-spare-{prep.split_hash('spare')}.pt"
    assert prep.split_file("logits", "spare").exists()
    # asked for runs that read no transfer set only, it needs nothing of the spare reviews (it once asked for the
    # teacher's logits on them, which no recipe had computed); the same budget finds the same runs
    alone = pipeline.distill_students(profile, teacher, prep, logits, runs=("baseline",), resume=True, progress=False)
    assert alone["compact-1L-H32 baseline"]["path"] == with_spare["compact-1L-H32 baseline"]["path"]
    # the teacher's outputs cover the spare reviews exactly when a planned run's rows hold them
    heads = teacher.config.num_attention_heads
    for runs, spare in ((("baseline",), False), (("baseline", "pseudo-label"), True), (("kd+transfer",), True)):
        chosen = pipeline.chosen_recipes(profile, profile.students, runs, heads)
        jobs = pipeline._plan_jobs(profile, profile.students, chosen, (0,), teacher, prep, "pretrained")
        assert any("spare" in job["splits"] for job in jobs) == spare, runs
        assert all(job["config"].max_steps == job["plan"]["steps"] for job in jobs)  # the baseline's budget too
        assert pipeline.outputs_splits(prep, profile.students, chosen) == ("train", "transfer", "spare")[:2 + spare]
    # given a cache without the spare reviews, a run still to train that reads them calls the teacher, and says so
    given = teacher_layers.teacher_layer_cache(profile, prep, [("values", 4)], teacher_model=teacher)
    assert set(given) == {"train", "transfer"}
    capsys.readouterr()
    handed = []  # what the run would train with: no need to train it (an online run on the spare reviews: 30 s)
    with monkeypatch.context() as m:
        m.setattr(pipeline, "_one_run", lambda *args, **kw: handed.append(kw["states"]) or {
            "model": None, "history": None, "status": "trained", "run_hash": "-"})
        online = pipeline.distill_students(profile, teacher, prep, logits, runs=("kd+transfer+values",), seeds=(1,),
                                           students=(spare_spec,), layers=given, progress=False)
    assert not online["compact-1L-H32 kd+transfer+values"]["cached_layers"] and handed == [None]  # the teacher
    assert ("teacher layers: the cache given lacks layers that compact-1L-H32 kd+transfer+values read on its "
            "reviews (built for other runs, or no room on the disk for them), so it calls the teacher") in \
        capsys.readouterr().out
    # without the option: the same folder for the run that reads no transfer set (at the other budget, another
    # folder), another one for those that do; the other student keeps its runs
    without = pipeline.distill_students(base, teacher, prep, logits, resume=True, **kw)
    for name, item in with_spare.items():
        same = item["student"] != "compact-1L-H32"
        assert (without[name]["path"] == item["path"]) == same, name
        assert without[name]["status"] == ("cached" if same else "trained"), name
    baseline = pipeline.get_recipe("baseline")
    keys = [plan.run_key(p, spec, plan.run_config(p, spec, baseline, 10, 0), "pretrained", baseline)
            for p, spec in ((profile, spare_spec), (base, base.students[1]))]
    assert keys[0] == keys[1]  # the baseline's key leaves out an option it does not read


def test_a_run_that_reads_no_soft_targets_keeps_its_key_when_the_temperature_or_alpha_changes():
    """--set temperature=4 retrained the baseline and pseudo-label runs, which read neither T nor alpha, and gave
    the same models; the runs that read them get new keys, and the presets' keys stay as they were."""
    profile = get_profile("tiny")
    spec = profile.students[0]

    def key(p, name):
        recipe = pipeline.get_recipe(name)
        return plan.run_key(p, spec, plan.run_config(p, spec, recipe, 10, 0), "pretrained", recipe)
    changed = profile.replace(temperature=4.0, alpha=0.9)
    for name in ("baseline", "pseudo-label"):
        assert key(changed, name) == key(profile, name), name
    for name in ("kd", "kd+transfer"):
        assert key(changed, name) != key(profile, name), name
    assert key(profile, "baseline")[1] == dataclasses.asdict(plan.run_config(
        profile, spec, pipeline.get_recipe("baseline"), 10, 0))  # the preset's T and alpha are the defaults


def test_a_run_without_intermediate_terms_keeps_its_key_when_the_layer_mapping_changes():
    """Comparing layer mappings retrained every baseline, kd and pseudo-label run, which map no layer; the runs
    whose intermediate terms read it get new keys, and every preset's keys stay as they were (a first version also
    left out the relation heads, which the full profile's compact student sets to 4: its cached runs would have
    been trained again)."""
    from kd_tutorial.profiles import PROFILES
    profile = get_profile("tiny")
    spec = profile.students[0]

    def key(s, name):
        recipe = pipeline.get_recipe(name)
        return plan.run_key(profile, s, plan.run_config(profile, spec, recipe, 10, 0), "pretrained", recipe)
    changed = dataclasses.replace(spec, mapping="last")
    for name in ("baseline", "kd", "kd+transfer", "pseudo-label"):
        assert key(changed, name) == key(spec, name), name
    for name in ("kd+transfer+hidden", "kd+transfer+values"):
        assert key(changed, name) != key(spec, name), name
    for preset in PROFILES.values():  # the key holds each preset student's own fields, as before
        for s in preset.students:
            # a student's own evals_per_run is in the key as the config's eval_every, not as a field
            expected = {k: v for k, v in dataclasses.asdict(s).items() if k not in ("recipes", "evals_per_run")}
            for option in ("teacher_word_vectors", "spare_reviews"):  # left out when off, and spare without spares
                if not expected[option] or option == "spare_reviews":
                    del expected[option]
            assert key(s, "baseline")[0] == expected, s.name


def test_a_uniform_mapping_whose_rounding_changed_keys_its_intermediate_runs_apart():
    """6 -> 4 maps onto 2, 3, 5, 6 now (half up) and onto 2, 3, 4, 6 before (Python's round), with RUN_REVISION
    unchanged: a cached run of such a student would have been handed back, trained on other layers. The presets
    map without a half, so their keys are the same with the teacher's depth given or not."""
    from kd_tutorial.profiles import PROFILES
    profile = get_profile("tiny")
    four = dataclasses.replace(profile.students[0], name="distil-4L", num_layers=4)

    def key(spec, name, depth, p=profile):
        recipe = pipeline.get_recipe(name)
        return plan.run_key(p, spec, plan.run_config(p, spec, recipe, 10, 0), "pretrained", recipe,
                            teacher_layers=depth)
    assert key(four, "kd+transfer+hidden", 6) != key(four, "kd+transfer+hidden", None)
    assert key(four, "kd+transfer+hidden", 8) == key(four, "kd+transfer+hidden", None)  # 8 -> 4: 2, 4, 6, 8
    assert key(four, "kd+transfer", 6) == key(four, "kd+transfer", None)  # no layer mapped
    depth = {"tiny": 4, "cpu": 6, "full": 12}
    for name, preset in PROFILES.items():
        for spec in preset.students:
            for recipe in ("kd+transfer+hidden", "kd+transfer+values"):
                assert key(spec, recipe, depth[name], preset) == key(spec, recipe, None, preset), (name, spec.name)


def test_two_students_of_one_name_are_refused_in_one_line():
    """Runs, checkpoints and results are keyed by a student's name: of two distil-2L students trained side by side,
    one vanished from the results without a word."""
    profile = get_profile("tiny")
    twin = dataclasses.replace(profile.students[0], num_layers=1)
    with pytest.raises(ProfileOverrideError, match=r"^students named distil-2L more than once: give each a name of "
                                                   r"its own$"):
        profile.replace(students=(profile.students[0], twin))


def test_an_augmenting_runs_key_holds_the_augmentation_settings(monkeypatch):
    """Guards against a run key without data.AUGMENT: runs with other augmentation settings would share a folder,
    and a student augmented the old way would be taken for one augmented the new way. Runs without augmentation
    keep their key."""
    profile = get_profile("tiny")
    spec = profile.students[0]
    keys = {}
    for when in ("before", "after"):
        for name in ("kd+transfer+aug", "kd+transfer"):
            recipe = pipeline.get_recipe(name)
            keys[when, name] = plan.run_key(profile, spec, plan.run_config(profile, spec, recipe, 10, 0),
                                            "pretrained", recipe)
        monkeypatch.setattr(plan, "AUGMENT", dict(plan.AUGMENT, p_mask=0.2))
    assert keys["before", "kd+transfer+aug"] != keys["after", "kd+transfer+aug"]
    assert keys["before", "kd+transfer"] == keys["after", "kd+transfer"]


def test_a_students_pretrained_folder_is_keyed_by_what_it_holds(tmp_path, monkeypatch):
    """Keyed by its path, other weights saved into the folder were taken for the run trained from the first ones
    (a review: "cached", the old accuracy). A folder now keys as a teacher folder does; a Hub name as it is."""
    profile = get_profile("full")
    recipe = pipeline.get_recipe("baseline")
    hub = next(s for s in profile.students if s.pretrained)

    def key(spec):
        return plan.run_key(profile, spec, plan.run_config(profile, spec, recipe, 10, 0), "pretrained", recipe)
    assert key(hub)[0]["pretrained"] == hub.pretrained  # the preset's keys are those they were
    folder = tmp_path / "my-bert"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"first weights")
    mine = dataclasses.replace(hub, pretrained=str(folder))
    first = key(mine)
    monkeypatch.chdir(tmp_path)
    assert key(dataclasses.replace(mine, pretrained="./my-bert")) == first  # the same folder, typed otherwise
    (folder / "model.safetensors").write_bytes(b"other weights, saved later")
    assert key(mine) != first


def test_a_student_asking_for_spare_reviews_where_there_are_none_trains_as_without_them(tiny_run, capsys):
    """The tiny corpus's carve uses every train review: the option changes nothing, and says so."""
    profile = get_profile("tiny")
    teacher, prep, _ = teachers.ensure_teacher(profile, progress=False)
    logits = {s: teachers.ensure_teacher_logits(profile, s, progress=False) for s in ("train", "transfer")}
    spec = dataclasses.replace(profile.students[1], spare_reviews=True)
    kw = dict(students=(spec,), runs=("kd+transfer",), progress=False, resume=True)
    asked = pipeline.distill_students(profile, teacher, prep, logits, **kw)["compact-1L-H32 kd+transfer"]
    assert "no spare train reviews in this data (every one is in a split)" in capsys.readouterr().out
    plain = pipeline.distill_students(profile, teacher, prep, logits,
                                      **kw | dict(students=(profile.students[1],)))["compact-1L-H32 kd+transfer"]
    assert asked["path"] == plain["path"] and asked["status"] == plain["status"] == "cached"  # tiny_run's run
    assert asked["plan"]["spare_reviews"] == 0 and "spare_reviews" not in plain["plan"]


def test_a_smaller_evaluation_batch_keeps_the_teacher():
    """The out-of-memory hint says --set eval_batch_size=N for the evaluation; that changed the teacher's cache key,
    and the teacher (an hour on a T4 for full) was trained again, and every student with it. It only batches the
    teacher's passes. The presets keep the keys their caches had."""
    from kd_tutorial.profiles import PROFILES, stable_hash, TEACHER_FIELDS
    for profile in PROFILES.values():
        assert profile.replace(eval_batch_size=8).teacher_hash() == profile.teacher_hash()
        assert profile.replace(batch_size=1).teacher_hash() != profile.teacher_hash()  # training settings still count
        assert profile.replace(markup="space").teacher_hash() != profile.teacher_hash()  # other tokens: another teacher
        before = {name: getattr(profile, name) for name in TEACHER_FIELDS}  # the key as it was computed before
        before |= {name: getattr(profile, name) for name in ("grad_accum", "precision", "val_block")
                   if getattr(profile, name) != {"grad_accum": 1, "precision": "auto", "val_block": None}[name]}
        assert profile.teacher_hash() == stable_hash(before)


def test_an_empty_or_default_equal_teacher_config_keys_the_default_teacher():
    """Before: --set "teacher_config={}" on tiny builds the default teacher ({} laid over TINY_BERT) under another
    cache key, so it trained a new one, was recorded as a change, and the time estimate knew no size for it. The
    presets keep their values, so their keys."""
    from kd_tutorial import flops
    from kd_tutorial.profiles import PROFILES, TINY_BERT
    tiny, cpu = get_profile("tiny"), get_profile("cpu")
    for same in ("teacher_config={}", "teacher_config={'hidden_size': 64}"):
        profile = tiny.with_overrides([same])
        assert (profile.teacher_hash(), profile.changes()) == (tiny.teacher_hash(), {})
        assert flops.teacher_config(profile) == flops.teacher_config(tiny)
    assert cpu.with_overrides(["teacher_config={}"]).teacher_hash() == cpu.teacher_hash()  # a teacher reading none
    other = tiny.with_overrides(["teacher_config={'num_hidden_layers': 2}"])
    assert other.teacher_config == {"num_hidden_layers": 2} and other.teacher_hash() != tiny.teacher_hash()
    assert tiny.with_overrides(["teacher=bert-base-uncased"]).teacher_config == TINY_BERT  # kept as given
    assert (PROFILES["tiny"].teacher_config, PROFILES["cpu"].teacher_config, PROFILES["full"].teacher_config) == (
        TINY_BERT, None, None)  # their keys, computed from these fields: test_a_smaller_evaluation_batch_keeps_...


def test_another_test_set_keeps_the_teacher_and_its_students(tiny_run, tmp_path):
    """n_test picks test reviews only: with a real test split, changing it reuses the fine-tuned teacher, its
    transfer logits and every student (same folder); the test logits get a file of their own. Where the test
    reviews are carved from train, n_test changes the training reviews, and so the folder."""
    tiny = get_profile("tiny")
    a, b = artifacts.prepare(tiny), artifacts.prepare(tiny.replace(n_test=300))
    assert len(b.encoded["test"]) == 300 < len(a.encoded["test"])
    assert a.directory == b.directory and a.split_file("logits", "transfer") == b.split_file("logits", "transfer")
    assert a.split_file("logits", "test") != b.split_file("logits", "test")
    write_parquet(tmp_path / "train.parquet", 400)  # no test split: the test set is a held-out slice of train
    small = tiny.replace(n_train=100, n_transfer=120, val_size=40)
    c, d = (artifacts.prepare(small.replace(n_test=n), data_dir=str(tmp_path)) for n in (60, 80))
    assert c.data.test_is_held_out and c.directory != d.directory


def test_cached_students_come_back_with_their_weights_and_history(tiny_run):
    profile = get_profile("tiny")
    teacher, prep, _ = teachers.ensure_teacher(profile, progress=False)
    logits = {s: teachers.ensure_teacher_logits(profile, s, progress=False) for s in ("train", "transfer")}
    spec = profile.students[1]
    kw = dict(students=(spec,), runs=("kd+transfer", "baseline"), progress=False)
    cached = pipeline.distill_students(profile, teacher, prep, logits, resume=True, **kw)
    assert {item["status"] for item in cached.values()} == {"cached"}
    kept = [artifacts.student_test_logits_file(prep, Path(item["path"]), item["run_hash"]) for item in cached.values()]
    assert all(path.exists() for path in kept)  # tiny_run evaluated them
    retrained = pipeline.distill_students(profile, teacher, prep, logits, resume=False, **kw)
    assert {item["status"] for item in retrained.values()} == {"trained"}
    assert not any(path.exists() for path in kept)  # another model in the folder: the old test logits are not its
    # and a process that loaded the old model before the retraining keeps its logits under the old training's name
    assert all(retrained[name]["run_hash"] != item["run_hash"] for name, item in cached.items())
    # seeded: training again reproduces the student, in the same arithmetic (the tests run one thread: conftest.py;
    # outside xdist this file once ran two, tiny_run's runs side by side with one thread each, and failed here)
    back = pipeline.distill_students(profile, teacher, prep, logits, resume=True, **kw)  # the cache hands it back
    for item in back.values():  # leave tiny_run's cache as found, every student's test logits kept, so that the
        pipeline.student_test_logits(profile, prep, item, device="cpu")  # --resume tests pass in any order
    for name, item in retrained.items():
        assert back[name]["status"] == "cached" and back[name]["run_hash"] == item["run_hash"]
        steps = [run[name]["history"].steps for run in (cached, retrained, back)]
        assert len(steps[0]) == len(steps[1]) == len(steps[2]) > 0
        assert steps[0][-1]["loss"] == pytest.approx(steps[1][-1]["loss"], rel=1e-4) and steps[1] == steps[2]
        for p0, p1, p2 in zip(*(run[name]["model"].parameters() for run in (cached, retrained, back))):
            assert torch.allclose(p0, p1.cpu(), atol=1e-5)
            assert torch.equal(p1.cpu(), p2)  # the cached student comes back with its very weights
        assert not (Path(item["path"]) / "last.pt").exists()  # no epoch checkpoint left once finished


def test_a_student_with_the_teachers_word_vectors_is_stored_and_reloaded_as_a_plain_bert(tiny_run):
    profile = get_profile("tiny")
    teacher, prep, _ = teachers.ensure_teacher(profile, progress=False)
    logits = {s: teachers.ensure_teacher_logits(profile, s, progress=False) for s in ("train", "transfer")}
    spec = dataclasses.replace(profile.students[1], teacher_word_vectors=True)
    kw = dict(students=(spec,), runs=("kd+transfer",), progress=False)
    trained = pipeline.distill_students(profile, teacher, prep, logits, **kw)["compact-1L-H32 kd+transfer"]
    assert trained["status"] == "trained"
    assert type(trained["model"].bert.embeddings.word_embeddings) is torch.nn.Embedding  # folded
    cached = pipeline.distill_students(profile, teacher, prep, logits, resume=True, **kw)["compact-1L-H32 kd+transfer"]
    assert cached["status"] == "cached"
    for (name, p1), p2 in zip(trained["model"].named_parameters(), cached["model"].parameters()):
        assert torch.equal(p1, p2), name
    plain = pipeline.distill_students(profile, teacher, prep, logits, resume=True,
                                      **kw | dict(students=(profile.students[1],)))["compact-1L-H32 kd+transfer"]
    assert plain["path"] != trained["path"]  # its own cache entry
    assert plain["history"].steps[-1]["loss"] != trained["history"].steps[-1]["loss"]


def test_a_student_leaves_the_device_once_its_test_logits_are_made(tmp_path, monkeypatch):
    """predict_logits left each student on the GPU, so compare (which hands each model back where it found it)
    handed them all back to the GPU: every student of every seed ended the evaluation there."""
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path))
    profile = get_profile("tiny")
    prep = artifacts.prepare(profile)
    folder = tmp_path / "run"
    folder.mkdir()
    model, moved = models.load_teacher("tiny-bert", config_overrides={"num_hidden_layers": 1}), []
    real_cpu = model.cpu
    model.cpu = lambda: moved.append("cpu") or real_cpu()
    monkeypatch.setattr(pipeline, "predict_logits", lambda m, enc, **kw: torch.zeros(len(enc), 2))
    pipeline.student_test_logits(profile, prep, {"path": str(folder), "run_hash": "0123456789ab", "model": model},
                                 device="cpu")
    assert moved == ["cpu"]


def test_a_students_corrupt_test_logits_give_a_clear_error(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path))
    prep = artifacts.prepare(get_profile("tiny"))
    folder = tmp_path / "run"
    folder.mkdir()
    item = {"path": str(folder), "run_hash": "0123456789ab"}
    path = artifacts.student_test_logits_file(prep, folder, item["run_hash"])
    path.write_bytes(b"not a tensor")
    with pytest.raises(artifacts.ArtifactError, match=f"cannot read cached logits {path}.*delete the file"):
        pipeline.student_test_logits(get_profile("tiny"), prep, item, device="cpu")
    torch.save(torch.zeros(3, 2), path)  # another test split's size
    with pytest.raises(artifacts.ArtifactError, match=f"have 3 rows for {len(prep.encoded['test'])} reviews"):
        pipeline.student_test_logits(get_profile("tiny"), prep, item, device="cpu")


def _one_cached_run():
    """``(run, item)``: ``run(resume=...)`` trains or loads the tiny profile's compact baseline (seed 0), and ``item``
    is that run as the cache holds it (tiny_run trained it)."""
    profile = get_profile("tiny")
    teacher, prep, _ = teachers.ensure_teacher(profile, progress=False)
    logits = {s: teachers.ensure_teacher_logits(profile, s, progress=False) for s in ("train", "transfer")}

    def run(resume: bool) -> dict:
        return pipeline.distill_students(profile, teacher, prep, logits, resume=resume, progress=False, workers=1,
                                         students=(profile.students[1],), runs=("baseline",))
    [item] = run(resume=True).values()
    return run, item


def test_a_finished_run_trained_again_and_stopped_is_still_reused_by_resume(tiny_run, monkeypatch, capsys):
    """A review: distill without --resume said "N runs are finished ... add --resume to reuse them"; a Ctrl-C then
    left a step-10 checkpoint beside each finished run, and --resume continued those retrainings, the finished runs
    thrown away. A run trained again keeps no checkpoint, so that the finished run stands and --resume reuses it."""
    run, before = _one_cached_run()
    real = pipeline.train

    def stopped(*args, on_step=None, **kwargs):
        def step(i, total):
            if i == 3:
                raise KeyboardInterrupt
        return real(*args, on_step=step, **kwargs)
    monkeypatch.setattr(pipeline, "train", stopped)
    with pytest.raises(KeyboardInterrupt):
        run(resume=False)
    folder = Path(before["path"])
    assert not (folder / "last.pt").exists() and artifacts.student_finished(folder)
    assert ("baseline: interrupted; the run finished before on the same settings is still in the artifact cache: "
            "run again with --resume (resume=True) to reuse it") in capsys.readouterr().err
    monkeypatch.setattr(pipeline, "train", real)
    [after] = run(resume=True).values()
    assert after["status"] == "cached" and after["run_hash"] == before["run_hash"]


def test_an_interrupted_run_started_over_without_resume_keeps_its_checkpoint_until_passed(tiny_run, monkeypatch,
                                                                                         capsys):
    """A review: after a Ctrl-C, the same command without --resume trained the run from step 0 and wrote over its
    checkpoint (steps 217 and 78 became 33 and 13), with no word at the start. The checkpoint now stands until the
    new run passes its step, so a run started over by mistake loses nothing, and one left to train replaces it (a
    second review: keeping no checkpoint at all sent a later --resume back to the old step); the start says so."""
    from kd_tutorial.train import checkpoint_step
    run, before = _one_cached_run()
    folder = Path(before["path"])
    (folder / "history.json").unlink()  # the run as an interrupted one leaves it: no finished run, then its last.pt
    real = pipeline.train
    seen = []

    def stopped_at(at):
        def train(*args, on_step=None, **kwargs):
            def step(i, total):
                seen.append(i)
                if i == at:
                    raise KeyboardInterrupt
            return real(*args, on_step=step, **kwargs)
        return train
    monkeypatch.setattr(pipeline, "train", stopped_at(3))
    with pytest.raises(KeyboardInterrupt):
        run(resume=False)
    saved = (folder / "last.pt").read_bytes()
    assert artifacts.student_interrupted(folder) and checkpoint_step(folder / "last.pt") == 3
    capsys.readouterr()
    monkeypatch.setattr(pipeline, "train", stopped_at(1))
    with pytest.raises(KeyboardInterrupt):
        run(resume=False)  # --resume forgotten, stopped again before step 3
    assert (folder / "last.pt").read_bytes() == saved
    said = capsys.readouterr()
    assert (f"baseline: interrupted at step 1; the checkpoint of an earlier run of these settings, step 3, in "
            f"{folder / 'last.pt'} stands: run again with resume=True (kd-tutorial: --resume) to continue it"
            ) in said.err
    assert ("students: 1 of these 1 runs were interrupted, and their checkpoints are in the artifact cache: they "
            "start over, and replace those checkpoints only once they pass their steps; add --resume (resume=True) "
            "to continue them") in said.out
    monkeypatch.setattr(pipeline, "train", stopped_at(5))
    with pytest.raises(KeyboardInterrupt):
        run(resume=False)  # left to train past step 3: its own step replaces the checkpoint
    assert checkpoint_step(folder / "last.pt") == 5
    seen.clear()
    monkeypatch.setattr(pipeline, "train", stopped_at(-1))
    [after] = run(resume=True).values()
    assert seen[0] == 5 and after["status"] == "trained" and artifacts.student_finished(folder)
    assert not artifacts.student_interrupted(folder)


def test_an_interrupted_run_is_counted_only_in_the_folder_its_run_trains_in(tiny_run, monkeypatch, capsys):
    """A review: the start counted a run as interrupted when either of its cache keys (the teacher's layers cached,
    or called at every step) held a checkpoint, and promised that --resume continues it; a run placed under the
    other key trains from step 0. distill_students counts each run where it is placed, and says which start over."""
    profile = get_profile("tiny")
    spec, runs = profile.students[1], ("kd+transfer+values",)
    teacher, prep, _ = teachers.ensure_teacher(profile, progress=False)
    logits = {s: teachers.ensure_teacher_logits(profile, s, progress=False) for s in ("train", "transfer")}
    chosen = pipeline.chosen_recipes(profile, (spec,), runs, teacher.config.num_attention_heads)
    [job] = pipeline._plan_jobs(profile, (spec,), chosen, (1,), teacher, prep, "pretrained")  # a seed never trained
    layers = teacher_layers.teacher_layer_cache(profile, prep, sorted(job["layer_keys"]), teacher_model=teacher)
    monkeypatch.setattr(pipeline, "_one_run", lambda *a, **k: {"model": None, "history": None, "status": "trained"})

    def start(folder) -> str:
        made = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "last.pt").write_bytes(b"an interrupted run's checkpoint")
        try:
            [item] = pipeline.distill_students(profile, teacher, prep, logits, runs=runs, students=(spec,),
                                               seeds=(1,), layers=layers, resume=True, progress=False).values()
        finally:
            (folder / "last.pt").unlink()
            if made:
                folder.rmdir()
        assert item["cached_layers"]  # the cache covers the run: it trains in its cached-layers folder
        return capsys.readouterr().out
    said = start(job["folders"][False])  # interrupted when it called the teacher
    assert "runs were interrupted, and their checkpoints are in the artifact cache" not in said
    assert ("students: 1 of these 1 runs were interrupted while they read the teacher the other way (its cached "
            "layers, or the teacher called at every step), so no checkpoint of theirs continues them: they train "
            "from step 0, and leave those checkpoints where they are") in said
    said = start(job["folders"][True])
    assert ("students: 1 of these 1 runs were interrupted, and their checkpoints are in the artifact cache: they "
            "continue from them (--resume)") in said and "the other way" not in said


def test_a_ctrl_c_while_a_run_trained_again_is_saved_waits_for_the_save(tiny_run, monkeypatch):
    """A review: saving removes the old run's history first, and a run trained again keeps no checkpoint, so a Ctrl-C
    during that save left neither run (only model/), and --resume trained it from step 0. The save now holds Ctrl-C
    until it ends: the new run is complete, then the interrupt goes on."""
    import signal
    run, before = _one_cached_run()
    real = artifacts.atomic_save_pretrained

    def pressed_during_the_save(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)
    monkeypatch.setattr(artifacts, "atomic_save_pretrained", pressed_during_the_save)
    with pytest.raises(KeyboardInterrupt):
        run(resume=False)
    assert artifacts.student_finished(Path(before["path"]))


def test_a_checkpoint_beside_a_finished_run_is_dropped_when_resume_reuses_the_run(tmp_path):
    """Older code checkpointed a run trained again: its stopped retraining left a last.pt beside the finished run.
    The finished run is reused, and the checkpoint does not stay in the folder for good."""
    from transformers import BertConfig, BertForSequenceClassification
    from kd_tutorial.profiles import TINY_BERT
    from kd_tutorial.history import History
    folder = tmp_path / "compact-1L-H32_kd-transfer-values_s0-e51c852df165"
    artifacts.save_student(folder, BertForSequenceClassification(BertConfig(vocab_size=100, **TINY_BERT)), History())
    (folder / "last.pt").write_bytes(b"the stopped retraining's step 11")
    assert artifacts.student_finished(folder)
    assert artifacts.load_student(folder) is not None and not (folder / "last.pt").exists()


def test_a_student_saved_again_is_unfinished_until_its_new_history_is_written(tmp_path, monkeypatch):
    """The old history stayed while the new model was written: a write cut short between the two left a new model
    that the cache took for finished, with the old model's history (and steps, seconds, validation)."""
    folder = tmp_path / "run"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "config.json").write_text("{}")
    (folder / "history.json").write_text("{}")
    (folder / "logits-test-0a1b2c3d-0123456789ab.pt").write_bytes(b"old")
    assert artifacts.student_finished(folder)

    def cut_short(model, directory):
        raise KeyboardInterrupt
    monkeypatch.setattr(artifacts, "atomic_save_pretrained", cut_short)
    with pytest.raises(KeyboardInterrupt):
        artifacts.save_student(folder, object(), object())
    assert not artifacts.student_finished(folder) and not list(folder.glob("logits-test-*"))


def test_a_corrupt_cached_student_gives_a_clear_error(tmp_path):
    folder = tmp_path / "distil-2L_kd_s0-abc"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "config.json").write_text("{ not json")
    (folder / "history.json").write_text("{}")
    with pytest.raises(artifacts.ArtifactError, match="cannot read the cached student.*delete the folder"):
        artifacts.load_student(folder)
    assert artifacts.load_student(tmp_path / "missing") is None  # not there: train it


# the teachers' widths and heads, known without loading them: tiny's BertConfig, all-MiniLM-L6-v2, bert-base-uncased
TEACHERS = {"tiny": (64, 4), "cpu": (384, 12), "full": (768, 12)}


@pytest.mark.parametrize("name", ["tiny", "cpu", "full"])
def test_every_profile_names_recipes_that_can_run(name):
    """Each student's recipes exist, include the baseline and the pseudo-label control, and fit its shape."""
    from kd_tutorial.profiles import PROFILES
    profile = PROFILES[name]
    width, heads = TEACHERS[name]
    for spec in profile.students:
        recipes = plan.student_recipes(profile, spec)
        names = [r.name for r in recipes]
        assert {"baseline", "kd+transfer", "pseudo-label"} <= set(names), (spec.name, names)
        assert any(r.intermediate is not None for r in recipes), f"{spec.name}: no intermediate recipe"
        for r in recipes:
            assert plan.applicable(r, spec, heads), (spec.name, r.name)
            if r.intermediate is not None and r.intermediate.value_relation:
                student_width = spec.hidden_size or width
                assert student_width % spec.relation_heads == 0 and width % spec.relation_heads == 0


def test_the_best_recipe_is_a_distillation_recipe_chosen_on_validation():
    from types import SimpleNamespace
    def run(recipe, val, seed=0):
        return {"base": f"my s {recipe}", "student": "my s", "recipe": recipe, "seed": seed,
                "history": SimpleNamespace(best_val_acc=val)}
    trained = {f"{r} {i}": run(r, v, seed) for i, (r, v, seed) in enumerate(
        [("baseline", 0.95, 0), ("pseudo-label", 0.94, 0), ("kd+transfer", 0.80, 0), ("kd+transfer", 0.90, 1),
         ("kd+transfer+cosine", 0.84, 1), ("kd+transfer+cosine", 0.84, 0)])}  # its seeds trained the other way round
    share = {"share": 0.9, "ci_low": 0.88, "ci_high": 0.92}
    rows = [{"name": "my s kd+transfer", "accuracy": 0.81, "share_of_teacher": share},
            {"name": "my s kd+transfer+cosine", "accuracy": 0.9}]
    best = pipeline.best_recipes(rows, trained)["my s"]  # a student's name may hold a space
    # kd+transfer's mean over seeds (0.85) beats cosine's 0.84; test accuracy never decides; its share comes along,
    # and every distillation recipe's validation mean, best first, so that the margin over the runner-up shows
    assert best == {"recipe": "kd+transfer", "val_accuracy": pytest.approx(0.85), "test_accuracy": 0.81,
                    "share_of_teacher": share,
                    "validation": {"kd+transfer": pytest.approx(0.85), "kd+transfer+cosine": pytest.approx(0.84)}}
    assert list(best["validation"]) == ["kd+transfer", "kd+transfer+cosine"]
    tied = {k: v for k, v in trained.items() if v["recipe"] != "kd+transfer"} | {"x": run("kd+transfer", 0.84)}
    assert pipeline.best_recipes(rows, tied)["my s"]["recipe"] == "kd+transfer+cosine"  # a tie: the first trained
    # float32 accuracies: the same right answers over the seeds can differ in the 8th digit, still a tie (it was not)
    tied["x"] = run("kd+transfer", 0.84 + 1e-8)
    assert pipeline.best_recipes(rows, tied)["my s"]["recipe"] == "kd+transfer+cosine"
    # runs that kept their answers on validation: the lead over the runner-up is tested as the comparisons are
    answers = {("kd+transfer", 0): "1111011110", ("kd+transfer", 1): "1111111110",
               ("kd+transfer+cosine", 0): "1111000110", ("kd+transfer+cosine", 1): "1011111111"}
    for item in trained.values():
        if (item["recipe"], item["seed"]) in answers:
            item["history"].best_val_correct = answers[item["recipe"], item["seed"]]
    lead = pipeline.best_recipes(rows, trained)["my s"]["validation_lead"]
    assert lead["against"] == "kd+transfer+cosine" and lead["diff"] == pytest.approx(0.1)  # 17 right of 20 vs 15
    assert lead["ci_low"] <= 0.1 <= lead["ci_high"] and lead["reviews"] == 10 and lead["seeds"] == 2
    assert lead["diff_per_seed"] == pytest.approx([0.2, 0.0])  # each seed paired with its own seed's run
    trained["kd+transfer 3"]["history"].best_val_correct = None  # one run from before answers were kept: no test
    assert "validation_lead" not in pipeline.best_recipes(rows, trained)["my s"]


def test_comparisons_pair_each_students_runs_even_when_its_name_holds_a_space():
    labels = torch.tensor([0, 1] * 20)
    right, wrong = torch.nn.functional.one_hot(labels, 2).float(), torch.nn.functional.one_hot(1 - labels, 2).float()
    trained = {f"my student {r}": {"student": "my student", "recipe": r} for r in ("baseline", "kd+transfer")}
    test_logits = {"my student baseline": wrong, "my student kd+transfer": right}
    [c] = pipeline.comparisons(trained, test_logits, labels, seeds=(0,))  # it found none before
    assert (c["student"], c["recipe"], c["against"], c["diff"]) == ("my student", "kd+transfer", "baseline", 1.0)


def test_comparisons_and_shares_of_the_teacher_pool_every_seed_and_pair_each_recipe_with_its_references():
    """Two seeds, 40 test reviews: every recipe against the baseline, the soft-target runs against the pseudo-label
    control, kd+transfer+values against kd+transfer, each difference and share pooled over both seeds. Reading the
    first seed only, comparing only kd+transfer with the control, or an added term with the baseline in place of
    kd+transfer passed every fast test (the end-to-end run has one seed)."""
    labels = torch.tensor([0, 1] * 20)

    def logits(n_right):  # right on the first n_right reviews
        right = torch.arange(40) < n_right
        return torch.nn.functional.one_hot(torch.where(right, labels, 1 - labels), 2).float()
    n_right = {("teacher", 0): 36, ("baseline", 0): 20, ("baseline", 1): 20, ("pseudo-label", 0): 24,
               ("pseudo-label", 1): 24, ("kd+transfer", 0): 30, ("kd+transfer", 1): 34,
               ("kd+transfer+values", 0): 32, ("kd+transfer+values", 1): 36}
    trained = {f"s {r} s{seed}": {"student": "s", "recipe": r} for r, seed in n_right if r != "teacher"}
    test_logits = {f"s {r} s{seed}": logits(n) for (r, seed), n in n_right.items()} | {"teacher": logits(36)}
    rows = pipeline.comparisons(trained, test_logits, labels, seeds=(0, 1))
    got = {(c["recipe"], c["against"]): (c["diff"], c["seeds"]) for c in rows}
    assert got == {("kd+transfer", "baseline"): (pytest.approx(0.8 - 0.5), 2),
                   ("kd+transfer+values", "baseline"): (pytest.approx(0.85 - 0.5), 2),
                   ("pseudo-label", "baseline"): (pytest.approx(0.6 - 0.5), 2),
                   ("kd+transfer", "pseudo-label"): (pytest.approx(0.8 - 0.6), 2),
                   ("kd+transfer+values", "pseudo-label"): (pytest.approx(0.85 - 0.6), 2),
                   ("kd+transfer+values", "kd+transfer"): (pytest.approx(0.85 - 0.8), 2)}
    shares = pipeline.teacher_shares(trained, test_logits, labels)
    assert shares["s kd+transfer"]["share"] == pytest.approx(0.8 / 0.9) and shares["s kd+transfer"]["seeds"] == 2
    assert shares["s baseline"]["share"] == pytest.approx(0.5 / 0.9)


def test_comparisons_pair_each_seeds_runs_whatever_order_they_were_trained_in():
    """Each recipe's runs were stacked in the order they entered ``trained``: with kd's seed 1 trained before its
    seed 0, every per-seed difference was taken against the other seed's baseline."""
    labels = torch.tensor([0, 1] * 20)

    def logits(n_right):  # right on the first n_right reviews
        right = torch.arange(40) < n_right
        return torch.nn.functional.one_hot(torch.where(right, labels, 1 - labels), 2).float()
    order = [("baseline", 0, 20), ("baseline", 1, 30), ("kd", 1, 30), ("kd", 0, 20)]  # per seed, no difference
    trained = {f"s {r} s{seed}": {"student": "s", "recipe": r, "seed": seed} for r, seed, _ in order}
    test_logits = {f"s {r} s{seed}": logits(n) for r, seed, n in order}
    [c] = pipeline.comparisons(trained, test_logits, labels, seeds=(0, 1))
    assert c["diff_per_seed"] == [0.0, 0.0] and c["diff"] == 0.0
    assert c["verdict"] == "no detectable difference at this size"


def test_no_share_of_a_teacher_that_gets_no_test_review_right():
    """A teacher wrong on every test review (a handful of reviews, or a broken teacher) made teacher_share raise
    after every student had trained, before results.json was written; the report prints "-" for it."""
    labels = torch.tensor([0, 1])
    trained = {"s kd": {"student": "s", "recipe": "kd", "seed": 0}}
    assert pipeline.teacher_shares(trained, {"teacher": torch.tensor([[0., 1.], [1., 0.]]),
                                             "s kd": torch.tensor([[1., 0.], [0., 1.]])}, labels) == {}


def test_results_say_which_settings_differ_from_the_profile(tiny_run):
    from kd_tutorial.report import results_markdown
    _, results = tiny_run
    assert results["run"]["profile_changes"] == {}  # the preset itself
    # and every setting, so that a preset changed later is told apart from the one that ran
    tiny = get_profile("tiny")
    assert results["run"]["settings"] == json.loads(json.dumps(results["run"]["settings"])) == tiny.settings()
    assert results["run"]["settings"]["students"][0]["recipes"] == list(tiny.students[0].recipes)
    later = tiny.replace(student_hidden_dropout=0.0, time_budget_s=1)  # a default changed, then timed again
    now, then = later.settings(), tiny.settings()
    assert {k for k in now if now[k] != then[k]} == {"student_hidden_dropout"}  # the time budget is no setting
    assert not set(tiny.shadowed()) & set(then)  # defaults every student overrides decide nothing
    assert results_markdown(results).startswith("Profile `tiny`, ")
    changed = results | {"run": results["run"] | {"profile_changes": {"max_length": 64, "student_lr": 0.001}}}
    assert results_markdown(changed).startswith("Profile `tiny` (changed: `max_length=64`, `student_lr=0.001`), ")


def test_the_rendered_results_say_when_student_runs_trained_side_by_side(tiny_run):
    from kd_tutorial.report import results_markdown
    _, results = tiny_run
    side = results | {"run": results["run"] | {"student_workers": 2, "torch_threads": 2}}
    assert ("2 threads, students 2 runs at a time with one thread each (so their train tokens/s are one thread's)"
            in results_markdown(side))
    for workers in (1, None):  # one after another, or a file from before --workers
        alone = results | {"run": results["run"] | {"student_workers": workers, "torch_threads": 2}}
        assert "2 threads, commit" in results_markdown(alone) and "at a time" not in results_markdown(alone)


def test_results_name_the_models_from_the_cache_that_trained_in_another_precision(tiny_run):
    """precision "auto" is bf16 on one machine and fp32 on another, and the cache's keys hold "auto": a model trained
    elsewhere is reused, so the results say which precision each trained in, and the summary names the others."""
    from kd_tutorial.report import results_markdown
    _, results = tiny_run
    trained_in = results["run"]["trained_in"]
    assert set(trained_in) == {"teacher", *results["run"]["student_status"]}
    assert set(trained_in.values()) == {"fp32"}  # this run trained them all, in the profile's precision
    run = results["run"]
    one_each = run["student_workers"] > 1  # side by side: one thread each; else every thread
    assert run["trained_threads"] == {name: str(1 if one_each else run["torch_threads"]) for name in trained_in
                                      if name != "teacher"}
    assert "trained in" not in results_markdown(results)
    first, second = list(results["run"]["student_status"])[:2]
    elsewhere = trained_in | {"teacher": "bf16", first: "bf16", second: "fp32, then bf16"}
    text = results_markdown(results | {"run": results["run"] | {"trained_in": elsewhere}})
    assert f"precision fp32 (teacher, {first} trained in bf16) ({second} trained in fp32, then bf16)" in text
    old = {k: v for k, v in results["run"].items() if k != "trained_in"}  # a file from before it was recorded
    assert "trained in" not in results_markdown(results | {"run": old})


def test_results_record_each_students_budget_terms_and_layer_mapping(tiny_run):
    from kd_tutorial import recipes
    _, results = tiny_run
    plans = results["run"]["students"]
    profile = get_profile("tiny")
    assert list(plans) == [spec.name for spec in profile.students]
    for spec in profile.students:
        plan = plans[spec.name]
        assert list(plan["recipes"]) == list(profile.for_student("recipes", spec))
        for name, weights in plan["recipes"].items():
            intermediate = recipes.get_recipe(name).intermediate
            assert weights == (intermediate.weights if intermediate else {})
        assert plan["steps"] == len(results["histories"][f"{spec.name} baseline"]["steps"]) > 0
        if any(plan["recipes"].values()):  # an intermediate recipe: the mapping it used, as printed
            assert plan["layer_mapping"].startswith(f"{spec.mapping}: student 1 <- teacher ")
            assert plan["layer_mapping"].count("<-") == spec.num_layers


def test_the_rendered_results_name_each_students_best_recipe(tiny_run, capsys):
    from kd_tutorial.report import results_markdown
    _, results = tiny_run
    text = results_markdown(results)
    line = next(l for l in text.splitlines() if l.startswith("Best recipe per student, chosen on validation"))
    pipeline._print_results(results, get_profile("tiny"), "cpu")  # distill ends with the table, verdicts and choice
    printed = capsys.readouterr().out
    assert "tiny profile, 1000 test reviews, cpu" in printed and "| compact-1L-H32 | kd+transfer | baseline |" in printed
    assert f"\n{line}\n" in printed and printed.index("| compact-1L-H32 | kd+transfer |") < printed.index(line)
    for student, best in results["best_recipes"].items():
        runner = list(best["validation"])[1]  # the tiny profile's students run two distillation recipes or more
        margin = 100 * (best["val_accuracy"] - best["validation"][runner])
        n_val = results["run"]["split_sizes"]["validation"]
        tested = best["validation_lead"]  # these runs kept their answers on validation: the lead is tested
        assert tested["against"] == runner and tested["diff"] == pytest.approx(margin / 100, abs=1e-6)
        test = f"[{100 * tested['ci_low']:+.2f}, {100 * tested['ci_high']:+.2f}], {tested['verdict']}"
        lead = (f"level with `{runner}` on {n_val:,} reviews {test}, and kept as the one trained first"
                if margin < 0.005 else f"{margin:.2f} points above `{runner}` on {n_val:,} reviews {test}")
        assert f"{student} `{best['recipe']}` (validation {100 * best['val_accuracy']:.2f} %, {lead}, " in line
        share = best["share_of_teacher"]
        assert (f"{100 * share['share']:.1f} % of the teacher [{100 * share['ci_low']:.1f}, "
                f"{100 * share['ci_high']:.1f}])") in line
    assert "A margin's 95 % interval and verdict are the comparisons'" in text and "A margin without" not in text
    row = next(l for l in text.splitlines() if l.startswith(f"| {student} {best['recipe']} |"))
    assert f" [{100 * share['ci_low']:.1f}, {100 * share['ci_high']:.1f}] |" in row  # the table's % of teacher
    # a results file from before the share was measured renders as it did
    older = results | {"models": [{k: v for k, v in r.items() if k != "share_of_teacher"} for r in results["models"]],
                       "best_recipes": {s: {k: v for k, v in b.items() if k != "share_of_teacher"}
                                        for s, b in results["best_recipes"].items()}}
    assert "of the teacher [" not in results_markdown(older) and "paired bootstrap 95 % interval over the" not in \
        results_markdown(older)
    # the sentence above the comparisons names the kd+transfer pairs only when the file has them
    clause = "and the recipes that add to `kd+transfer` against it"
    assert clause in text
    older = results | {"comparisons": [c for c in results["comparisons"] if c["against"] != "kd+transfer"]}
    assert clause not in results_markdown(older)


def test_the_cached_speed_footnote_names_each_row_and_when_its_seeds_were_trained():
    from kd_tutorial.report import _cached_speed_note, results_markdown
    rows = [{"name": "teacher", "train_tokens_per_s": 10.0, "train_speed_from": "an earlier run (2026-12-01 09:37)"},
            {"name": "s baseline", "train_tokens_per_s": 20.0,
             "train_speed_from": "an earlier run (2026-12-01 10:01); this run; this run"},
            {"name": "s kd+transfer", "train_tokens_per_s": 30.0, "train_speed_from": "this run"},
            {"name": "s kd", "train_tokens_per_s": 30.0, "train_speed_from": None}]
    note = _cached_speed_note(rows)
    assert note.startswith("† some or all of its seeds were taken from the artifact cache")
    assert note.rstrip().endswith(" in: teacher 2026-12-01 09:37; s baseline 2026-12-01 10:01, this run.")
    assert "kd+transfer" not in note and "s kd " not in note  # trained by this run: no footnote
    assert _cached_speed_note(rows[2:]) == ""
    # the rows the note names, and only those, carry the mark in the table
    results = {"run": {"evaluated_on": "test", "split_sizes": {"test": 10}, "device": "cpu", "seeds": [0, 1, 2],
                       "wall_seconds": 1.0, "phase_seconds": {"teacher": 0, "students": 0, "evaluation": 0},
                       "profile": "tiny"},
               "models": [r | {"accuracy": 0.8, "ece": 0.1, "params": 1e6, "latency_ms": 1.0, "reviews_per_s": 1.0}
                          for r in rows]}
    marked = [line.split(" |")[0].lstrip("| ") for line in results_markdown(results).splitlines() if "†" in line
              and line.startswith("|")]
    assert marked == ["teacher", "s baseline"]


def test_aggregated_rows_keep_one_speed_source_per_seed():
    rows = [{"name": f"s kd s{k}", "params": 1, "mb": 1, "accuracy": 0.8, "latency_samples_ms": [1.0],
             "train_speed_from": src} for k, src in enumerate(["an earlier run (d0)", "this run", "this run"])]
    trained = {r["name"]: {"base": "s kd"} for r in rows}
    assert pipeline._aggregate(rows, trained)[0]["train_speed_from"] == "an earlier run (d0); this run; this run"
    fresh = [r | {"train_speed_from": "this run"} for r in rows]
    assert pipeline._aggregate(fresh, trained)[0]["train_speed_from"] == "this run"


def test_a_runs_projections_start_the_same_whatever_ran_before_it(monkeypatch, tmp_path):
    """A run's cache key says what it is; its start must not depend on the runs before it in the process (serial,
    resumed and forked runs share one cache). The projections used to be drawn before the run was seeded."""
    from types import SimpleNamespace

    from transformers import BertConfig, BertForSequenceClassification

    from kd_tutorial.profiles import StudentSpec
    from kd_tutorial.recipes import get_recipe
    starts = []

    def fake_train(model, rows, **kw):
        torch.rand(1000)  # training draws from the global generator
        if hasattr(model, "projections"):
            starts.append(model.projections[0].weight.detach().clone())

    monkeypatch.setattr(pipeline, "train", fake_train)
    monkeypatch.setattr(pipeline, "save_student", lambda *a: None)
    monkeypatch.setattr(pipeline, "run_hash", lambda folder: "no folder")  # nothing was saved
    monkeypatch.setattr(pipeline, "fold_word_embeddings", lambda m: m)
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                       num_attention_heads=2, intermediate_size=64))
    spec = StudentSpec("s", "compact", 1, hidden_size=16, num_heads=2, intermediate_size=32)
    profile = SimpleNamespace(attention_dropout=None, freeze_word_embeddings=False, student_hidden_dropout=None)
    sets = {k: (None, None, None) for k in ("labelled", "transfer", "augmented")}

    def run(recipe, initial):
        prep = SimpleNamespace(encoded={"validation": None}, tokenizer=None)
        pipeline._one_run(profile, spec, get_recipe(recipe), SimpleNamespace(seed=0), sets, teacher, prep, tmp_path,
                          initial, resume=False, device="cpu", init="random", desc="x", progress=False)

    run("kd+transfer+hidden", [])  # alone: the first run of its seed, or one in a forked worker
    initial = []
    run("baseline", initial)
    run("kd+transfer+hidden", initial)  # the same run after another in one process
    assert len(starts) == 2 and torch.equal(starts[0], starts[1])


def test_a_prepared_configuration_is_found_again_whatever_the_environment_says_later(tmp_path, monkeypatch):
    """prep.where must lead back to the same data: it left the profile's own source to $KD_TUTORIAL_DATA_DIR, so
    setting that later (a notebook cell) sent the teacher's outputs into another configuration's folder."""
    folder = tmp_path / "other"
    folder.mkdir()
    write_parquet(folder / "train.parquet", 400)
    write_parquet(folder / "test.parquet", 100, seed=1)
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KD_TUTORIAL_DATA_DIR", raising=False)
    profile = get_profile("tiny")
    prep = artifacts.prepare(profile)
    monkeypatch.setenv("KD_TUTORIAL_DATA_DIR", str(folder))
    again = artifacts.prepare(profile, **prep.where)
    assert again.directory == prep.directory and again.data_key == "tiny"
    assert artifacts.prepare(profile).data_key == str(folder.resolve())  # a new prepare does read the variable
    monkeypatch.delenv("KD_TUTORIAL_DATA_DIR")
    from_folder = artifacts.prepare(profile, data_dir=str(folder))
    monkeypatch.setenv("KD_TUTORIAL_DATA_DIR", str(tmp_path / "elsewhere"))
    assert artifacts.prepare(profile, **from_folder.where).directory == from_folder.directory


def test_a_moved_data_folder_keeps_its_teacher_and_other_reviews_do_not(tmp_path, monkeypatch):
    """The teacher's folder was keyed on the data folder's path: an instructor's copy of the same reviews on
    another disk retrained every teacher. It is keyed on the reviews the folder holds."""
    import shutil
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KD_TUTORIAL_DATA_DIR", raising=False)
    first = tmp_path / "prefetched"
    first.mkdir()
    write_parquet(first / "train.parquet", 400)
    write_parquet(first / "test.parquet", 100, seed=1)
    moved = tmp_path / "usb" / "imdb"
    shutil.copytree(first, moved)
    profile = get_profile("tiny")
    here, there = (artifacts.prepare(profile, data_dir=str(d)) for d in (first, moved))
    assert here.data_key != there.data_key and here.directory == there.directory
    monkeypatch.chdir(tmp_path / "usb")  # the folder named by the profile instead, by a relative path too
    for named in (str(moved), "imdb"):
        assert artifacts.prepare(profile.replace(data_source=named)).directory == here.directory, named
    other = tmp_path / "other"
    other.mkdir()
    write_parquet(other / "train.parquet", 400, seed=2)  # other reviews: another teacher
    write_parquet(other / "test.parquet", 100, seed=1)
    assert artifacts.prepare(profile, data_dir=str(other)).directory != here.directory
    assert artifacts.prepare(profile).directory != here.directory  # the built-in reviews are not the folder's


def test_markup_space_reaches_every_split_and_keys_another_teacher(tmp_path, monkeypatch):
    """--set markup=space tokenizes every split the pipeline encodes (the spare reviews too) without IMDB's line
    breaks, from the same reviews, and its teacher gets a folder of its own; the default keeps the presets' keys."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KD_TUTORIAL_DATA_DIR", raising=False)
    for name, n in (("train", 6000), ("test", 100)):
        texts = [f"review {name} {i} was {'good' if i % 2 else 'bad'}.<br /><br />It ran {i % 7} hours"
                 for i in range(n)]
        pq.write_table(pa.table({"text": texts, "label": [i % 2 for i in range(n)]}), tmp_path / f"{name}.parquet")
    profile = get_profile("tiny").replace(n_train=1000)  # 1,900 train reviews left for no split: the spare ones
    kept, spaced = (artifacts.prepare(profile.replace(markup=m), data_dir=str(tmp_path)) for m in ("keep", "space"))
    br = kept.tokenizer.convert_tokens_to_ids("br")
    assert kept.spare_rows() == spaced.spare_rows() > 0
    for split in ("train", "validation", "test", "transfer", "spare"):
        assert getattr(kept.data, split).texts == getattr(spaced.data, split).texts, split  # the same reviews
        assert all(br in row for row in kept.encoded[split].input_ids), split
        assert not any(br in row for row in spaced.encoded[split].input_ids), split
    assert spaced.directory != kept.directory  # the token ids alone would part them (the data's fingerprint),
    assert profile.replace(markup="space").teacher_hash() != profile.teacher_hash()  # and the setting does too


def test_the_built_in_data_is_found_again_beside_a_folder_of_its_name(tmp_path, monkeypatch):
    """prep.where names the profile's source ("tiny"), and a folder called tiny in the working directory was taken
    for it: a run on the built-in reviews read that folder's mid-run, after its teacher had trained."""
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KD_TUTORIAL_DATA_DIR", raising=False)
    write_parquet((tmp_path / "tiny").mkdir() or tmp_path / "tiny" / "train.parquet", 400)
    monkeypatch.chdir(tmp_path)
    profile = get_profile("tiny")
    prep = artifacts.prepare(profile)
    again = artifacts.prepare(profile, **prep.where)
    assert again is prep and again.data_key == "tiny"
    assert artifacts.prepare(profile, data_dir="./tiny").data_key == str((tmp_path / "tiny").resolve())


def test_data_replaced_in_its_folder_is_read_again_in_the_same_process(tmp_path, monkeypatch):
    """This process's cache of prepared data was keyed on the folder's path: a notebook whose data files were
    replaced kept the old splits (and their teacher's folder) until the kernel restarted."""
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    folder = tmp_path / "data"
    folder.mkdir()
    write_parquet(folder / "train.parquet", 400)
    write_parquet(folder / "test.parquet", 100, seed=1)
    profile = get_profile("tiny")
    before = artifacts.prepare(profile, data_dir=str(folder))
    assert artifacts.prepare(profile, data_dir=str(folder)) is before  # nothing changed: the cache answers
    write_parquet(folder / "train.parquet", 400, seed=3)  # other reviews, same file name
    after = artifacts.prepare(profile, data_dir=str(folder))
    assert after.fingerprint != before.fingerprint and after.data.train.texts != before.data.train.texts


def test_the_teacher_folder_changes_with_the_transfer_reviews_and_with_any_label():
    """Guards against a fingerprint that leaves out the transfer split or the labels: a data folder whose
    unsupervised file, or one label, was fixed kept the teacher's folder, and the students read logits cached for
    the old reviews or a teacher trained on the wrong labels. Another test set keeps it (its files carry a hash)."""
    from kd_tutorial.data import Encoded

    def fingerprint(**changed):
        encoded = {name: Encoded([[101, 1000 + i, 102]], torch.tensor([0 if name != "transfer" else -1]), name)
                   for i, name in enumerate(("train", "validation", "transfer", "test"))}
        encoded |= {name: Encoded([[101, token, 102]], torch.tensor([label]), name)
                    for name, (token, label) in changed.items()}
        return artifacts.Prepared(None, None, None, encoded, "tiny", "tiny-bert", "pretrained", 0).fingerprint
    assert fingerprint(transfer=(2000, -1)) != fingerprint() != fingerprint(train=(1000, 1))
    assert fingerprint(test=(2000, 1)) == fingerprint()


def test_the_teacher_folder_changes_with_every_setting_that_decides_the_teacher():
    """Guards against a folder key that leaves out the seed, the init or one of the teacher's training settings:
    a teacher fine-tuned another way would be handed back from the cache, and its logits taught every student. A
    student's setting keeps the folder."""
    from kd_tutorial.data import Encoded
    encoded = {name: Encoded([[101, 1000 + i, 102]], torch.tensor([0]), name)
               for i, name in enumerate(("train", "validation", "transfer", "test"))}
    tiny = get_profile("tiny")

    def folder(profile=tiny, init="pretrained", seed=0):
        return artifacts.Prepared(profile, None, None, encoded, "tiny", "tiny-bert", init, seed).directory
    changes = {"teacher_epochs": 3, "teacher_lr": 1e-4, "max_length": 32, "truncation": "tail", "n_train": 500,
               "val_size": 100, "warmup_fraction": 0.2, "weight_decay": 0.0, "attention_dropout": 0.0,
               "freeze_word_embeddings": True, "grad_accum": 2, "precision": "fp32"}
    assert all(getattr(tiny, field) != value for field, value in changes.items())  # each one a change
    folders = [folder(seed=1), folder(init="random")] + [folder(tiny.replace(**{k: v})) for k, v in changes.items()]
    assert folder() not in folders and len(set(folders)) == len(folders)
    assert folder(tiny.replace(temperature=4.0, student_lr=1e-3)) == folder()  # students' settings: same teacher


def test_the_test_splits_files_carry_a_hash_of_its_reviews_where_the_folder_does_not():
    """Guards against a test split whose cached logits are named by the split alone: the folder's key leaves the
    test set out (another n_test keeps the teacher), so logits of the old test reviews would score the new ones."""
    from kd_tutorial.data import Encoded

    def prepared(test_token):
        encoded = {name: Encoded([[101, token, 102]], torch.tensor([0]), name)
                   for name, token in (("train", 1000), ("validation", 1001), ("transfer", 1002), ("test", test_token))}
        return artifacts.Prepared(get_profile("tiny"), None, None, encoded, "tiny", "tiny-bert", "pretrained", 0)
    old, new = prepared(2000), prepared(2001)
    assert old.directory == new.directory and old.split_file("logits", "train") == new.split_file("logits", "train")
    assert old.split_file("logits", "test") != new.split_file("logits", "test")


def test_a_teacher_folder_is_keyed_by_what_it_holds_not_by_the_path_typed(tmp_path, monkeypatch):
    """--teacher ./teacher was hashed as typed: two different checkpoints at that relative path (two course folders,
    or a folder refilled) shared one artifact folder, and the second reused the first's fine-tuned teacher."""
    from kd_tutorial import data
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    for place, layers in (("a", 1), ("b", 2)):
        folder = tmp_path / place / "teacher"
        models.load_teacher("tiny-bert", config_overrides={"num_hidden_layers": layers}).save_pretrained(folder)
        data.get_tokenizer(None).save_pretrained(folder)
    profile = get_profile("tiny")
    keys = {}
    for place in ("a", "b"):
        monkeypatch.chdir(tmp_path / place)
        keys[place] = artifacts.prepare(profile, teacher="./teacher").directory
    assert keys["a"] != keys["b"]
    monkeypatch.chdir(tmp_path / "a")
    assert artifacts.prepare(profile, teacher="./teacher").directory == keys["a"]  # the same checkpoint: found again
    assert artifacts.teacher_key("tiny-bert") == "tiny-bert" and artifacts.teacher_key("org/name") == "org/name"


def test_a_teacher_folder_keys_alike_as_teacher_and_as_set_teacher(tmp_path, monkeypatch):
    """The profile's teacher field entered the key as typed, beside the teacher's own key: the same folder given as
    --teacher and as --set teacher= trained two teachers, and a --set teacher= that --teacher replaced (unused)
    still moved the key. A preset's teacher is its name, its key: the presets' keys did not move."""
    from kd_tutorial import data
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    for name, layers in (("teacher", 1), ("other", 2)):
        models.load_teacher("tiny-bert", config_overrides={"num_hidden_layers": layers}).save_pretrained(name)
        data.get_tokenizer(None).save_pretrained(name)
    tiny = get_profile("tiny")
    by_flag = artifacts.prepare(tiny, teacher="./teacher").directory
    assert artifacts.prepare(tiny.replace(teacher=str(tmp_path / "teacher"))).directory == by_flag
    assert artifacts.prepare(tiny.replace(teacher="other"), teacher="teacher").directory == by_flag
    assert artifacts.prepare(tiny.replace(teacher="other")).directory != by_flag
    prep = artifacts.prepare(tiny)  # as the key was computed before: the field as it is
    assert prep.directory.name == tiny.teacher_hash("tiny", "tiny-bert", "pretrained", 0, prep.fingerprint)


@pytest.mark.parametrize("name", ["tiny", "cpu", "full"])
def test_setting_a_field_to_its_own_value_keeps_every_artifact_key(name):
    """--set read 8 as 8.0 for a float field whose preset holds the int 8, and 8 and 8.0 hash apart: the same
    teacher was trained again (minutes on tiny, hours on full) while changes() said nothing had changed."""
    profile = get_profile(name)
    for text in (str(profile.teacher_epochs), f"{profile.teacher_epochs}.0"):
        same = profile.with_overrides([f"teacher_epochs={text}"])
        assert same.teacher_hash() == profile.teacher_hash() and same.changes() == {}
    assert profile.with_overrides(["teacher_epochs=1.5"]).teacher_epochs == 1.5
    assert profile.with_overrides(["temperature=3"]).temperature == 3.0


def test_a_pretrained_student_numbering_tokens_otherwise_is_refused_before_the_teacher_trains(tmp_path, monkeypatch):
    """The pretrained student (the full profile's google/bert_uncased_L-2_H-128_A-2) was compared with the teacher
    by vocabulary size alone: one with the same size and other ids was trained, teacher first, on ids that meant
    other words to it. Its own tokenizer is now compared with the teacher's before any training."""
    from test_models import write_pretrained_student
    spec = write_pretrained_student(tmp_path / "student", swap=("good", "bad"))
    profile = get_profile("tiny").replace(students=(spec,))
    monkeypatch.setattr(pipeline, "ensure_teacher", lambda *a, **k: pytest.fail("the teacher trained first"))
    with pytest.raises(models.VocabularyMismatchError, match=r"same size \(30522\) but 2 token\(s\) map to other ids"):
        pipeline.run_distill(profile, out=tmp_path / "out", device="cpu", progress=False, workers=1)
    monkeypatch.setattr(pipeline, "ensure_teacher", lambda *a, **k: pytest.fail("reached"))
    with pytest.raises(pytest.fail.Exception, match="reached"):  # built from scratch, it reads the teacher's ids
        pipeline.run_distill(profile, init="random", out=tmp_path / "out", device="cpu", progress=False, workers=1)


def test_a_rerun_without_resume_says_how_many_finished_runs_it_will_train_again(tiny_run, tmp_path, monkeypatch,
                                                                                capsys):
    """A Colab review: the same command rerun after a disconnect, without --resume, trained every finished student
    again without a word (hours on a T4)."""
    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop
    monkeypatch.setattr(pipeline, "distill_students", stop)
    capsys.readouterr()
    with pytest.raises(Stop):
        pipeline.run_distill(get_profile("tiny"), out=tmp_path / "again", progress=False)
    n = len(tiny_run[1]["run"]["student_status"])
    assert (f"students: {n} of these {n} runs are finished in the artifact cache and will be trained again: add "
            "--resume (resume=True) to reuse them") in capsys.readouterr().out
    with pytest.raises(Stop):  # and --resume says what it reuses (a review: it said nothing)
        pipeline.run_distill(get_profile("tiny"), out=tmp_path / "again", progress=False, resume=True)
    assert (f"students: {n} of these {n} runs are finished in the artifact cache and are reused (--resume); 0 to "
            "train") in capsys.readouterr().out


def test_checkpoints_of_a_run_cut_short_while_writing_them_are_cleaned_by_the_next(tmp_path, monkeypatch):
    """results.json goes first, so that a write cut short never describes models it does not hold; a Ctrl-C (or a
    full disk) then left the earlier run's checkpoints with nothing naming them, and a later run of other recipes
    kept them beside its own. The names wait in a file of their own until the new results.json is written."""
    from transformers import BertConfig, BertForSequenceClassification
    from kd_tutorial.profiles import TINY_BERT
    (tmp_path / "results.json").write_text(json.dumps({"run": {"student_status": {"old kd": "trained"}}}))
    (tmp_path / "checkpoints" / "old_kd" / "model").mkdir(parents=True)
    model = BertForSequenceClassification(BertConfig(vocab_size=100, **TINY_BERT))
    real = pipeline.atomic_save_pretrained

    def cut(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(pipeline, "atomic_save_pretrained", cut)
    with pytest.raises(KeyboardInterrupt):
        pipeline.write_checkpoints({"new baseline": {"model": model}}, tmp_path)
    assert not (tmp_path / "results.json").exists() and (tmp_path / "checkpoints" / "old_kd" / "model").is_dir()
    monkeypatch.setattr(pipeline, "atomic_save_pretrained", real)
    pipeline.write_checkpoints({"other kd": {"model": model}}, tmp_path)  # the next run, of another recipe
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["other_kd"]


def test_a_run_with_nothing_to_compare_prints_no_empty_comparison_table(capsys):
    """distill --recipes baseline printed the comparisons' header with no row under it."""
    from kd_tutorial.profiles import get_profile
    results = json.loads((Path(__file__).resolve().parents[1] / "docs" / "results" / "tiny.json").read_text())
    pipeline._print_results(results, get_profile("tiny"), "cpu")
    assert "| student | recipe | against |" in capsys.readouterr().out
    results["comparisons"] = []
    pipeline._print_results(results, get_profile("tiny"), "cpu")
    assert "| student | recipe | against |" not in capsys.readouterr().out


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS", "EISDIR"])
def test_a_disk_that_refuses_the_results_says_resume_not_untouched(tmp_path, monkeypatch, code):
    """Before: a full disk when distill wrote --out's results.json (after every student was trained) said "what was
    there before is untouched", when the earlier run's results.json was already removed and its checkpoints replaced,
    and did not say that --resume finishes from the cache (measured: the rerun with --resume gave the same table)."""
    import errno
    import tempfile

    def refused(*args, **kwargs):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))
    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(store.StorageError) as caught:
        with pipeline._writing_results(tmp_path):
            store.atomic_write_json(tmp_path / "results.json", {})
    # a folder where results.json goes is not fixed by making --out writable: another --out is the fix left
    fix = {"ENOSPC": "free some space, or ", "EROFS": f"make {tmp_path} writable, or ", "EISDIR": ""}[code]
    why = store._DISK_ERRORS[getattr(errno, code)]
    assert str(caught.value) == (f"cannot write {tmp_path / 'results.json'}: {why};"
                                 f" the students are trained and kept in the artifact cache: {fix}give another "
                                 "--out, then run the same command with --resume to write the results without training "
                                 "again")
    assert "untouched" not in str(caught.value)


def test_a_file_windows_holds_open_when_distill_writes_the_results_names_the_program_that_holds_it(
        tmp_path, monkeypatch):
    """On Windows a checkpoint in --out that a notebook loaded cannot be replaced (a PermissionError): store's line
    says to close the program that holds it, which the results' line (students kept, --resume) dropped, leaving only
    "make <out> writable" of a folder that was writable."""
    import errno
    import sys
    import tempfile

    def held(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", held)
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(store.StorageError) as caught:
        with pipeline._writing_results(tmp_path):
            store.atomic_write_json(tmp_path / "results.json", {})
    assert "permission denied; the students are trained and kept in the artifact cache: close the program that has " \
           f"it open (on Windows a CSV shown in Excel, or a model a notebook loaded, cannot be replaced), or make " \
           f"{tmp_path} writable, or give another --out, then run the same command with --resume" in str(caught.value)


def test_a_student_run_trained_now_leaves_the_callers_random_state_as_a_cached_one_does(monkeypatch, tmp_path):
    """A run trained in the notebook's own process (one worker: a GPU, macOS, Windows) reseeded and drew from the
    global generators, so what the notebook drew after it differed between a cold run and Restart & Run All."""
    import random
    from kd_tutorial.recipes import get_recipe
    from kd_tutorial.history import History
    from kd_tutorial.train import TrainConfig

    def train_drawing(*args, **kwargs):
        torch.rand(7), random.random()  # what training draws
        return History()
    for name, fake in {"load_student": lambda folder: None, "train": train_drawing, "run_hash": lambda folder: "h",
                       "fold_word_embeddings": lambda model: model, "save_student": lambda *a: None}.items():
        monkeypatch.setattr(pipeline, name, fake)
    profile = get_profile("tiny")
    recipe = get_recipe("kd+transfer")
    sets, prep = {"transfer": (None, None, None)}, type("Prep", (), {"encoded": {"validation": None}})
    initial = [torch.nn.Linear(2, 2)]  # the student built before (its build draws too)
    torch.manual_seed(5)
    random.seed(5)
    expected = torch.rand(3), random.random()
    torch.manual_seed(5)
    random.seed(5)
    run = pipeline._one_run(profile, profile.students[0], recipe, TrainConfig(seed=0), sets, None, prep, tmp_path,
                            initial, resume=True, device="cpu", init="teacher", desc="", progress=False)
    assert run["status"] == "trained"
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_a_runs_config_carries_the_profiles_training_settings_and_its_own_seed():
    """Every preset keeps TrainConfig's defaults for the temperature, alpha, warmup, weight decay and grad_accum, so
    a run_config that dropped one (or the seed, which gives each seed its own run and its own cache key) trained as
    before on every profile and passed every test; --set must reach the run."""
    from kd_tutorial.recipes import get_recipe
    profile = get_profile("cpu").replace(temperature=4.0, alpha=0.25, warmup_fraction=0.2, weight_decay=0.05,
                                         batch_size=8, grad_accum=2, patience=1, evals_per_run=4)
    distil, compact = profile.students  # compact-2L-H128 keeps its own evals_per_run (30)
    config = plan.run_config(profile, distil, "kd+transfer", 100, seed=3)
    assert (config.temperature, config.alpha, config.warmup_fraction, config.weight_decay) == (4.0, 0.25, 0.2, 0.05)
    assert (config.batch_size, config.grad_accum, config.max_steps, config.seed) == (8, 2, 100, 3)
    assert config.mode == get_recipe("kd+transfer").mode and config.keep_best  # a student keeps its best pass
    assert config.lr == profile.for_student("student_lr", distil)
    assert plan.run_config(profile, distil, "kd+transfer", 100, seed=4).seed == 4
    # patience 1 of the profile's 4 passes is 7.5 of compact's 30: rounded up, it never waits less than asked
    assert plan.run_config(profile, compact, "baseline", 100, 0).patience == 8


def test_the_step_budget_is_the_epochs_over_the_effective_batch_rounded_up():
    """Steps gather grad_accum micro-batches: 2 epochs of 170 rows at 16 x 2 rows a step is 10.6, so 11 steps
    (counting micro-batches gives 22, rounding down leaves rows unseen)."""
    profile = get_profile("cpu").replace(student_epochs=2, batch_size=16, grad_accum=2)
    spec = dataclasses.replace(profile.students[0], epochs=None)
    assert plan.step_budget(profile, spec, 170) == 11
    assert plan.step_budget(profile, spec, 1) == 1  # never a run of no step


def test_aggregated_rows_take_the_sample_spread_over_seeds_and_pool_every_seeds_latency():
    """The table's ± is the sample standard deviation over the seeds (0 for one seed), and the latency quartiles
    are those of every seed's timings together, not the first seed's."""
    rows = [{"name": f"s kd s{k}", "params": 1, "mb": 1, "accuracy": acc, "latency_samples_ms": samples}
            for k, (acc, samples) in enumerate([(0.8, [1.0, 2.0]), (0.9, [3.0, 4.0, 5.0])])]
    trained = {r["name"]: {"base": "s kd"} for r in rows}
    [agg] = pipeline._aggregate(rows, trained)
    assert agg["seeds"] == 2 and agg["accuracy"] == pytest.approx(0.85)
    assert agg["accuracy_std"] == pytest.approx(0.0707107, abs=1e-6) and agg["accuracy_per_seed"] == [0.8, 0.9]
    assert agg["latency_ms"] == 3.0  # the median of 1..5
    [one] = pipeline._aggregate(rows[:1], trained)
    assert one["accuracy_std"] == 0.0 and one["latency_ms"] == 1.5
