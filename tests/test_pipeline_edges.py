"""Edges of the distill pipeline (kd_tutorial/pipeline.py) that a mutation audit found unguarded by the fast tests:
the teacher checks read from its config and tokenizer, which recipes a student runs or leaves out (and says so), the
plan recorded per student, the results' comparisons, best recipe and aggregation on odd inputs, and what --out may
hold: the checkpoints an earlier results.json names, someone else's plots, a teacher inside the checkpoints."""
import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

from kd_tutorial import pipeline
from kd_tutorial.errors import UsageError
from kd_tutorial.profiles import get_profile
from kd_tutorial.recipes import get_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = get_profile("tiny")
DISTIL, COMPACT = TINY.students  # distil-2L (the teacher's 4 heads), compact-1L-H32 (2 heads)


# ----------------------------------------------------------------------------------- the checks before the teacher

def test_a_teacher_tokenizer_as_large_as_its_embeddings_is_accepted_and_one_token_more_is_refused(monkeypatch):
    """Ids run 0..tokens-1, so a tokenizer of exactly the model's rows fits; only one beyond them fails inside it."""
    monkeypatch.setattr(pipeline, "teacher_tokenizer", lambda profile, name: [None] * 100)
    shape = pipeline.TeacherShape(layers=2, heads=4, positions=128, width=64, vocab=100)
    pipeline.check_teacher_tokenizer(TINY, "my-teacher", shape)
    with pytest.raises(UsageError) as err:
        pipeline.check_teacher_tokenizer(TINY, "my-teacher", shape._replace(vocab=99))
    assert str(err.value) == ("teacher my-teacher: its tokenizer has 100 tokens and its model 99: save the tokenizer "
                              "the model was trained with beside it (tokenizer.save_pretrained(folder)), or give a "
                              "teacher whose tokenizer and model match")


def test_a_teacher_of_another_model_type_is_left_for_its_loading_to_refuse(monkeypatch):
    """The checks read a BERT's layers, heads, positions and width; another model's config may carry the same names
    (meaning other things), so they stay silent and loading the teacher names what is wrong."""
    gpt = SimpleNamespace(model_type="gpt2", num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=8,
                          hidden_size=8, vocab_size=50, architectures=None)
    monkeypatch.setattr(pipeline, "cached_config", lambda name, fallback=None: gpt)
    assert pipeline.teacher_shape(TINY, "org/gpt", ask_hub=False) is None
    assert pipeline.check_teacher_shape(TINY, "org/gpt", ask_hub=False) is None  # not "max_length=128 ... 8"
    monkeypatch.setattr(pipeline, "cached_config", lambda name, fallback=None: None)  # not on disk: silent too
    assert pipeline.check_teacher_shape(TINY, "org/gpt", ask_hub=False) is None


def test_max_length_beyond_the_teachers_positions_is_refused_from_its_config_alone(monkeypatch):
    """Before the teacher's weights download or it fine-tunes: its first forward pass would stop on a shape error."""
    short = TINY.replace(teacher_config={"max_position_embeddings": 32})
    with pytest.raises(UsageError) as err:
        pipeline.check_teacher_shape(short, None, ask_hub=False)
    assert str(err.value) == (f"max_length={TINY.max_length}: the tiny teacher has 32 positions; give "
                              "--set max_length=N with N <= 32")
    pipeline.check_teacher_shape(short.replace(max_length=32), None, ask_hub=False)
    bert = SimpleNamespace(model_type="bert", num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=32,
                           hidden_size=64, vocab_size=100, architectures=None)
    monkeypatch.setattr(pipeline, "cached_config", lambda name, fallback=None: bert)
    with pytest.raises(UsageError, match=f"^max_length={TINY.max_length}: the org/bert has 32 positions"):
        pipeline.check_teacher_shape(TINY, "org/bert", ask_hub=False)


# ------------------------------------------------------------------------------- the recipes each student runs

def test_an_attention_recipe_is_left_out_for_a_student_of_other_heads_and_the_line_says_why():
    chosen = pipeline.chosen_recipes(TINY, TINY.students, ("kd+transfer", "kd+transfer+attn"), 4)
    assert {name: [r.name for r in rs] for name, rs in chosen.items()} == {
        DISTIL.name: ["kd+transfer", "kd+transfer+attn"], COMPACT.name: ["kd+transfer"]}
    assert pipeline.left_out(TINY, TINY.students, ("kd+transfer", "kd+transfer+attn"), 4) == [
        f"{COMPACT.name}: kd+transfer+attn left out: attention maps need as many heads as the teacher's 4, and this "
        f"student has {COMPACT.num_heads}"]
    assert pipeline.left_out(TINY, TINY.students, ("kd+transfer",), 4) == []


def test_each_intermediate_recipe_takes_the_students_layer_mapping_and_relation_heads():
    """A choice stated per student: its runs' losses split the widths into its relation heads and map its layers."""
    import dataclasses
    spec = dataclasses.replace(COMPACT, relation_heads=4, mapping="last")
    recipes = pipeline.student_recipes(TINY, spec, ("baseline", "kd+transfer+values", "kd+transfer+hidden"))
    assert recipes[0].intermediate is None
    assert [(r.intermediate.relation_heads, r.intermediate.mapping) for r in recipes[1:]] == [(4, "last")] * 2


def test_a_run_learning_from_other_spare_reviews_keys_another_folder():
    """The spare reviews are the train reviews no split holds: other data (or other splits) leave other ones, and
    --resume must not hand back a run that learnt from those."""
    import dataclasses
    spec = dataclasses.replace(COMPACT, spare_reviews=True)
    recipe = get_recipe("kd+transfer")
    config = pipeline.run_config(TINY, spec, recipe, 10, 0)
    keys = [repr(pipeline.run_key(TINY, spec, config, "pretrained", recipe, spare=spare))
            for spare in ("aaaa1111", "bbbb2222", None)]
    assert len(set(keys)) == 3


def test_only_the_runs_reading_the_transfer_set_record_the_spare_reviews_they_learn_from():
    """A baseline or kd run of a student that learns from the spare reviews reads its labelled reviews alone: its
    key (and folder) stays that of the same run without them, so it is not trained again."""
    import dataclasses
    spec = dataclasses.replace(COMPACT, spare_reviews=True)
    prep = SimpleNamespace(spare_rows=lambda: 5, split_hash=lambda split: f"{split}-hash")
    assert [pipeline.spare_hash(spec, get_recipe(r), prep) for r in ("baseline", "kd", "kd+transfer")] == [
        None, None, "spare-hash"]
    assert pipeline.spare_hash(COMPACT, get_recipe("kd+transfer"), prep) is None  # not asked for


def test_a_run_reading_the_teachers_cached_layers_keys_apart_from_one_calling_the_teacher():
    """The cache holds the layers in bf16: such a run computes other numbers than one that calls the teacher, and
    each keeps its own folder (with --resume either is reused, but neither is taken for the other)."""
    recipe = get_recipe("kd+transfer+values")
    config = pipeline.run_config(TINY, COMPACT, recipe, 10, 0)
    cached, online = (repr(pipeline.run_key(TINY, COMPACT, config, "pretrained", recipe, cached_layers=c))
                      for c in (True, False))
    assert cached != online


def test_a_students_plan_records_its_layer_mapping_only_when_a_recipe_maps_layers():
    """results.json's run.students and the student's announced line name the mapping its intermediate terms use."""
    teacher = SimpleNamespace(config=SimpleNamespace(num_hidden_layers=2))
    recipes = [get_recipe("baseline"), get_recipe("kd+transfer+hidden")]
    plan = pipeline.student_plan(COMPACT, recipes, 10, teacher)
    assert plan == {"steps": 10, "recipes": {"baseline": {}, "kd+transfer+hidden": {"hidden_mse": 1.0}},
                    "layer_mapping": "uniform: student 1 <- teacher 2", "relation_heads": COMPACT.relation_heads}
    assert pipeline.student_plan(COMPACT, recipes[:1], 10, teacher) == {"steps": 10, "recipes": {"baseline": {}}}


# ------------------------------------------------------------------------------------------------- the results

def _logits(labels, n_right):
    """One-hot logits right on the first ``n_right`` reviews, wrong on the others."""
    right = torch.arange(len(labels)) < n_right
    return torch.nn.functional.one_hot(torch.where(right, labels, 1 - labels), 2).float()


def test_kd_on_the_labelled_reviews_alone_is_not_set_against_the_pseudo_label_control():
    """The control isolates the soft targets on the transfer set: only the kd+transfer recipes share its data."""
    labels = torch.tensor([0, 1] * 10)
    runs = {"baseline": 10, "kd": 12, "pseudo-label": 14, "kd+transfer": 16}
    trained = {f"s {r}": {"student": "s", "recipe": r, "seed": 0} for r in runs}
    test_logits = {f"s {r}": _logits(labels, n) for r, n in runs.items()}
    pairs = {(c["recipe"], c["against"]) for c in pipeline.comparisons(trained, test_logits, labels, seeds=(0,))}
    assert pairs == {("kd", "baseline"), ("pseudo-label", "baseline"), ("kd+transfer", "baseline"),
                     ("kd+transfer", "pseudo-label")}


def _run(recipe, seed, val, answers=None):
    return {"student": "s", "recipe": recipe, "seed": seed,
            "history": SimpleNamespace(best_val_acc=val, best_val_correct=answers)}


def test_no_validation_lead_between_recipes_run_on_other_seeds_or_other_reviews():
    """The lead pairs each seed's runs review by review: runs of other seeds, or answers on another number of
    reviews, have nothing to pair, so the best recipe is given without a lead (and without a traceback)."""
    rows = [{"name": "s kd+transfer", "accuracy": 0.8}]
    paired = {"a": _run("kd+transfer", 0, 0.9, "1101"), "b": _run("kd", 0, 0.5, "0101")}
    assert pipeline.best_recipes(rows, paired)["s"]["validation_lead"]["against"] == "kd"
    other_seed = paired | {"b": _run("kd", 1, 0.5, "0101")}
    other_reviews = paired | {"b": _run("kd", 0, 0.5, "01010")}
    for trained in (other_seed, other_reviews):
        best = pipeline.best_recipes(rows, trained)["s"]
        assert best["recipe"] == "kd+transfer" and "validation_lead" not in best


def test_a_run_that_never_validated_counts_as_no_right_answer_in_the_best_recipe():
    """A history without a best validation accuracy (None) weighs as 0 in its recipe's mean over seeds."""
    trained = {"a0": _run("kd+transfer", 0, 0.8), "a1": _run("kd+transfer", 1, None), "b0": _run("kd", 0, 0.5),
               "b1": _run("kd", 1, 0.5)}
    best = pipeline.best_recipes([], trained)["s"]
    assert best["recipe"] == "kd" and best["validation"] == {"kd": 0.5, "kd+transfer": pytest.approx(0.4)}


def test_throughput_passes_are_recorded_only_when_every_seed_measured_them():
    """A seed from an earlier run may lack its three passes: the aggregated row then has none (no KeyError)."""
    rows = [{"name": f"s kd s{k}", "params": 1, "mb": 1, "accuracy": 0.8, "latency_samples_ms": [1.0]}
            for k in range(2)]
    rows[0]["reviews_per_s_passes"] = [1.0, 2.0, 3.0]
    trained = {r["name"]: {"base": "s kd"} for r in rows}
    [agg] = pipeline._aggregate(rows, trained)
    assert "reviews_per_s_passes" not in agg and agg["seeds"] == 2
    rows[1]["reviews_per_s_passes"] = [4.0, 5.0, 6.0]
    [agg] = pipeline._aggregate(rows, trained)
    assert agg["reviews_per_s_passes"] == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


# ---------------------------------------------------------------------------------------------- what --out holds

@pytest.mark.parametrize("name", [".", "..", "a\\..\\..", "..\\model"])
def test_an_earlier_results_json_naming_a_dot_folder_or_a_windows_path_removes_nothing(tmp_path, name):
    """checkpoints/. is the checkpoints folder and checkpoints/.. is --out itself: the "model" folders there (a
    learner's own) are not an earlier run's checkpoint; nor is a name with a backslash, a path on Windows."""
    out = tmp_path / "out"
    (out / "results.json").parent.mkdir()
    (out / "results.json").write_text(json.dumps({"run": {"student_status": {name: "trained"}}}))
    for folder in (out / "model", out / "checkpoints" / "model", out / "checkpoints" / name / "model"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "mine.txt").write_text("mine")
    pipeline.write_checkpoints({}, out)
    assert (out / "model" / "mine.txt").is_file() and (out / "checkpoints" / "model" / "mine.txt").is_file()
    assert (out / "checkpoints" / name / "model" / "mine.txt").is_file()


def test_an_earlier_checkpoint_in_lower_case_is_kept_when_the_new_name_has_capitals(tmp_path, monkeypatch):
    """On a file system that ignores case, foo_kd is the Foo_kd just written: removing the stale one would take it.
    (The other way round is tests/test_pipeline.py's.)"""
    def save(model, folder, tokenizer=None):  # a model's files, without building a model
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
    monkeypatch.setattr(pipeline, "atomic_save_pretrained", save)
    (tmp_path / "results.json").write_text(json.dumps({"run": {"student_status": {"foo kd": "trained"}}}))
    (tmp_path / "checkpoints" / "foo_kd" / "model").mkdir(parents=True)
    pipeline.write_checkpoints({"Foo kd": {"model": None}}, tmp_path)
    assert (tmp_path / "checkpoints" / "Foo_kd" / "model" / "config.json").is_file()
    assert (tmp_path / "checkpoints" / "foo_kd" / "model").is_dir()


@pytest.mark.parametrize("plot", ["training_curves.png", "accuracy_vs_latency.png"])
def test_a_plot_of_someone_elses_is_refused_unless_a_run_there_wrote_or_was_writing_it(tmp_path, plot):
    """A run cut short before its results.json leaves only the file naming its pending checkpoints: its folder is
    still a run's, and the next run may replace its plots."""
    (tmp_path / plot).write_bytes(b"my own plot")
    with pytest.raises(UsageError, match=f"holds {plot}, which no kd-tutorial run there wrote"):
        pipeline.refuse_foreign_plots(tmp_path)
    (tmp_path / pipeline.PENDING).write_text('{"run": {"student_status": {}}}')
    pipeline.refuse_foreign_plots(tmp_path)


def test_a_results_json_without_models_is_not_a_runs_record():
    assert pipeline.is_run_record({"run": {}, "models": []})
    for data in ({"run": {}}, {"models": []}, [], "run models", None):
        assert not pipeline.is_run_record(data), data


def test_a_teacher_that_is_the_checkpoints_folder_itself_or_given_with_a_tilde_is_refused(tmp_path, monkeypatch):
    """The run replaces or removes what out/checkpoints holds: the folder itself too, however its path is typed."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "out" / "checkpoints" / "s_kd" / "model").mkdir(parents=True)
    for teacher in (str(tmp_path / "out" / "checkpoints"), "~/out/checkpoints/s_kd/model"):
        with pytest.raises(UsageError, match=f"^teacher {teacher} lies in the checkpoints of --out"):
            pipeline.check_teacher_outside(teacher, tmp_path / "out")
    pipeline.check_teacher_outside(str(tmp_path / "out" / "checkpoints"), tmp_path / "other")


def test_a_skip_mapping_deeper_than_half_the_teacher_is_refused_before_the_teacher():
    """It was counted as needing its own depth: the teacher was fine-tuned, then student_plan's ValueError came as a
    traceback."""
    import dataclasses
    skip = TINY.replace(students=(dataclasses.replace(COMPACT, num_layers=2, mapping="skip"),))
    with pytest.raises(UsageError, match=rf"^student {COMPACT.name} maps its layers onto 4 of the teacher's, and the "
                                         r"teacher has 2: give a deeper teacher \(at least 4 layers\), or map them "
                                         r"with 'uniform' \(mapping='uniform'\)$"):
        pipeline.check_depths(skip, 2, 4, runs=("kd+transfer+hidden",))
    pipeline.check_depths(skip, 4, 4, runs=("kd+transfer+hidden",))  # every second of four layers: two
    deeper = TINY.replace(students=(dataclasses.replace(COMPACT, num_layers=3, mapping="skip"),))
    with pytest.raises(UsageError, match=r"the teacher has 2: give a deeper teacher \(at least 6 layers\)$"):
        pipeline.check_depths(deeper, 2, 4, runs=("kd+transfer+hidden",))  # 'uniform' needs 3: not named as a fix
    pipeline.check_depths(skip, 2, 4, runs=("kd+transfer",))  # logits alone map no layer


@pytest.mark.parametrize("seeds, line", [((0, 0), "seeds=(0, 0) repeats a seed: give each seed once"),
                                         ((), "seeds=() gives no seed: give at least one, as in seeds=(0,)")])
def test_a_notebooks_repeated_or_missing_seed_is_refused_before_the_teacher(tmp_path, seeds, line, monkeypatch):
    """A review: only the command line refused `--seeds 0 0`; `run_distill(..., seeds=(0, 0))` from a notebook trained
    one run per recipe under one name and wrote a results.json listing two seeds, each model averaged over one."""
    monkeypatch.setattr(pipeline, "ensure_teacher", lambda *a, **k: pytest.fail("the teacher came first"))
    with pytest.raises(UsageError) as err:
        pipeline.run_distill(get_profile("tiny"), out=tmp_path / "run", seeds=seeds, device="cpu", workers=1)
    assert str(err.value) == line and not (tmp_path / "run").exists()
    with pytest.raises(UsageError, match="repeats a seed"):  # the notebooks' own call, before any planning
        pipeline.distill_students(get_profile("tiny"), None, None, {}, seeds=(1, 1))


def test_a_profile_given_by_name_where_a_profile_goes_is_refused_in_one_line_naming_get_profile():
    """A bad-input sweep: env.setup("tiny") takes a name, and prepare("tiny"), ensure_teacher("tiny"),
    load_for_profile("tiny") stopped on "'str' object has no attribute 'teacher'"; build_student("distil-2L", ...)
    and profile.replace(students=(1,)) on AttributeErrors too."""
    from kd_tutorial import artifacts, data, models, teachers
    from kd_tutorial.errors import UserError
    for call, where in ((lambda: artifacts.prepare("tiny"), "prepare"),
                        (lambda: teachers.ensure_teacher("tiny"), "ensure_teacher"),
                        (lambda: teachers.ensure_teacher_logits("tiny", "test"), "ensure_teacher_logits"),
                        (lambda: data.load_for_profile("tiny"), "load_for_profile"),
                        (lambda: pipeline.run_distill("tiny", out="never"), "run_distill")):
        with pytest.raises(UserError) as err:
            call()
        assert str(err.value) == (f"{where} takes a Profile, not str 'tiny': give get_profile('tiny') "
                                  "(kd_tutorial.profiles), or a notebook's session.profile")
    with pytest.raises(UserError, match=r"^build_student takes a StudentSpec, not str 'distil-2L': give one of "):
        models.build_student("distil-2L", None)
    with pytest.raises(UserError, match=r"^students=\(1,\): give a tuple of StudentSpec, as profile.students holds"):
        get_profile("tiny").replace(students=(1,))


def _run_parts():
    """The tiny profile, its data, its (untrained, frozen) teacher and the data sets one student run reads."""
    from kd_tutorial import artifacts, models
    from kd_tutorial.train import freeze
    profile = get_profile("tiny")
    prep = artifacts.prepare(profile)
    rows = prep.encoded["train"]
    sets = {k: (rows, torch.randn(len(rows), 2), None) for k in ("labelled", "transfer", "augmented")}
    return profile, prep, freeze(models.teacher_for_profile(profile)), sets


def test_every_recipe_of_a_student_and_seed_starts_from_the_same_weights(tmp_path, monkeypatch):
    """Correctness note 12, a fair baseline, asserted directly (a practitioner's review found it checked only through
    a cached run's reproducibility): the student is built once per (student, seed) and each run trains a deep copy,
    so the baseline, kd+transfer and a recipe with an intermediate term all start from the weights the first one
    started from, though that one trained before them."""
    from kd_tutorial import plan
    from kd_tutorial.train import train as real_train
    profile, prep, teacher, sets = _run_parts()
    spec, started = profile.students[0], []

    def recording(model, *args, config, **kwargs):
        started.append({k: v.clone() for k, v in getattr(model, "student", model).state_dict().items()})
        return real_train(model, *args, config=dataclasses.replace(config, max_steps=2), **kwargs)
    monkeypatch.setattr(pipeline, "train", recording)
    initial: list = []
    for recipe in ("baseline", "kd+transfer", "kd+transfer+hidden"):
        config = plan.run_config(profile, spec, recipe, steps=2, seed=0)
        pipeline._one_run(profile, spec, get_recipe(recipe), config, sets, teacher, prep, tmp_path / recipe, initial,
                          resume=False, device="cpu", init="pretrained", desc=recipe, progress=False)
    assert len(initial) == 1 and len(started) == 3
    for later in started[1:]:
        assert later.keys() == started[0].keys() and all(torch.equal(later[k], started[0][k]) for k in later)
    assert all(torch.equal(v, started[0][k]) for k, v in initial[0].state_dict().items())  # untouched by training


def test_a_finished_run_whose_cached_history_is_damaged_is_trained_again_not_left_to_delete(tmp_path, capsys):
    """A bad-input sweep: a finished student's history.json cut to 100 bytes made `distill --resume` stop with "cannot
    read the cached student ...: delete the folder and run again", after counting the run as reused. The run is
    deterministic: it is trained again, with a line that says why."""
    from kd_tutorial import artifacts, plan
    profile, prep, teacher, sets = _run_parts()
    spec, folder = profile.students[0], tmp_path / "run"
    config = plan.run_config(profile, spec, "baseline", steps=2, seed=0)

    def run(resume):
        return pipeline._one_run(profile, spec, get_recipe("baseline"), config, sets, teacher, prep, folder, [],
                                 resume=resume, device="cpu", init="pretrained", desc="distil-2L baseline",
                                 progress=False)
    first = run(resume=False)
    history = folder / "history.json"
    history.write_text(history.read_text()[:100])
    with pytest.raises(artifacts.DamagedRun):
        artifacts.load_student(folder)
    again = run(resume=True)
    assert again["status"] == "trained" and artifacts.load_student(folder) is not None
    assert [s["loss"] for s in again["history"].steps] == [s["loss"] for s in first["history"].steps]
    said = capsys.readouterr().out
    assert f"distil-2L baseline: the finished run cached in {folder} cannot be read (JSONDecodeError" in said
    assert said.rstrip().endswith("training it again")
