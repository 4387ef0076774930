"""The teacher's mapped layers cached in bf16: written once, read back by row, equal to the online teacher's, and
the runs that read them learn as the runs that call the teacher do."""
import dataclasses
import os
import threading

import pytest
import torch

from kd_tutorial import layer_cache, losses, pipeline, plan, store, teacher_layers, teachers
from kd_tutorial.data import collate
from kd_tutorial.features import forward_features
from kd_tutorial.layer_cache import LayerStates, LayerWriter
from kd_tutorial.models import DistillationStudent, build_student
from kd_tutorial.recipes import get_recipe
from kd_tutorial import train as train_module
from kd_tutorial.seeding import seed_everything
from kd_tutorial.train import TrainConfig, recipe_loss, train

KEYS = [("hidden", 2), ("hidden", 4), ("values", 4)]


def _bf16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).float()


def test_layer_states_read_back_each_row_in_any_order_subset_and_concatenation(tmp_path):
    g = torch.Generator().manual_seed(0)
    lengths = [5, 3, 7, 2]
    states = {key: [torch.randn(n, 4, generator=g) for n in lengths] for key in KEYS}
    writer = LayerWriter({key: tmp_path / f"{key[0]}{key[1]}.npy" for key in KEYS}, rows=4, length=7, width=4)
    for rows in ([2, 0], [1, 3]):  # batches padded to their own longest row, as a pass writes them
        longest = max(lengths[r] for r in rows)
        for key in KEYS:
            batch = torch.zeros(len(rows), longest, 4)
            for i, r in enumerate(rows):
                batch[i, : lengths[r]] = states[key][r]
            writer.write(key, torch.tensor(rows), batch)
    writer.close()
    assert not list(tmp_path.glob(".*.tmp"))  # each file moved into place once complete
    cache = LayerStates.open({key: tmp_path / f"{key[0]}{key[1]}.npy" for key in KEYS}, depth=4)
    assert len(cache) == 4 and cache.keys == set(KEYS)
    out = cache.read(torch.tensor([3, 0]), length=6, keys=[("values", 4)])
    assert set(out) == {("values", 4)} and out[("values", 4)].shape == (2, 6, 4)
    assert out[("values", 4)].dtype == torch.bfloat16  # as stored: the step widens it on its device
    out = {key: x.float() for key, x in out.items()}
    assert torch.equal(out[("values", 4)][0, :2], _bf16(states[("values", 4)][3]))
    assert torch.equal(out[("values", 4)][1, :5], _bf16(states[("values", 4)][0]))
    assert (out[("values", 4)][0, 2:] == 0).all()  # past a review's end: zeros, which the mask ignores
    both = cache.subset([2, 1]).concat(cache.subset([0]))  # rows 2, 1, then 0 of a second part
    again = both.read(torch.tensor([2, 0]), length=7, keys=[("hidden", 2)])[("hidden", 2)].float()
    assert len(both) == 3
    assert torch.equal(again[0, :5], _bf16(states[("hidden", 2)][0])) and torch.equal(again[1], _bf16(states[("hidden", 2)][2]))


def test_cached_layers_stand_in_for_the_teacher_only_where_every_row_holds_every_layer_a_run_reads():
    """A student's rows can join splits cached with different layers (the spare reviews hold only those of the
    students that learn from them, fewer on a full disk): the keys are the layers every row has, and a run that
    misses one of its layers calls the teacher. The union of the parts' keys, or a run given some of its layers,
    passed every test and would read a layer that is not there (a KeyError, or None for a teacher layer)."""
    import numpy as np
    from kd_tutorial.recipes import Intermediate

    def split(*keys):
        return LayerStates([{key: np.zeros((2, 3, 4), dtype=np.int16) for key in keys}],
                           torch.tensor([[0, 0], [0, 1]]), depth=4)
    rows = split(*KEYS).concat(split(("hidden", 2), ("hidden", 4)))
    assert rows.keys == {("hidden", 2), ("hidden", 4)}
    hidden, values = Intermediate(hidden_mse=1.0), Intermediate(value_relation=1.0)
    assert train_module.uses_cached_layers(hidden, rows, [2, 4])
    assert not train_module.uses_cached_layers(values, rows, [4])
    assert not train_module.uses_cached_layers(hidden, split(("hidden", 4)), [2, 4])

@pytest.fixture(scope="module")
def small(cut_tiny):
    """The tiny profile cut to seconds (tests/conftest.py), with the teacher's layers cached for KEYS."""
    with cut_tiny(n_transfer=300) as (profile, teacher, prep, logits):
        states = {s: teachers.ensure_teacher_layers(profile, s, KEYS, teacher_model=teacher, progress=False)
                  for s in ("train", "transfer")}
        yield profile, teacher, prep, logits, states


def test_cached_layers_are_the_online_teachers_to_bf16_precision(small):
    profile, teacher, prep, _, states = small
    rows = prep.encoded["transfer"]
    batch = collate(rows, [5, 0, 17, 3])  # padded to its own longest row, unlike the pass's batches
    with torch.no_grad():
        live = forward_features(teacher, batch["input_ids"], batch["attention_mask"], hidden=True, values=True)
    read = states["transfer"].read(batch["index"], batch["input_ids"].shape[1], KEYS)
    real = batch["attention_mask"].bool()
    for (kind, t), cached in read.items():
        online = live.hidden[t] if kind == "hidden" else live.values[t - 1]
        assert ((cached.float() - online)[real].abs().max() / online[real].abs().max()) < 1e-2, (kind, t)


def test_cached_layers_are_computed_once_and_only_the_missing_ones(small, monkeypatch):
    profile, teacher, prep, _, _ = small
    passes = []
    real = teachers._layer_pass
    monkeypatch.setattr(teachers, "_layer_pass", lambda model, enc, writer, **kw: (passes.append(set(writer.paths)),
                                                                                  real(model, enc, writer, **kw))[1])
    again = teachers.ensure_teacher_layers(profile, "train", KEYS, teacher_model=teacher, progress=False)
    assert passes == [] and again.keys == set(KEYS)
    more = teachers.ensure_teacher_layers(profile, "train", KEYS + [("hidden", 1)], teacher_model=teacher,
                                          progress=False)
    assert passes == [{("hidden", 1)}] and more.keys == set(KEYS) | {("hidden", 1)}


def test_one_teacher_pass_caches_the_layers_with_the_very_logits_and_cls_of_a_pass_of_their_own(small):
    """When a split's logits are not cached yet, the layer pass caches them too: the same numbers as the logits
    pass alone, bit for bit, and the logits are then read without another pass (the pipeline's order)."""
    profile, teacher, prep, _, _ = small
    calls = []
    hook = teacher.register_forward_hook(lambda *_: calls.append(1))
    try:
        separate = teachers.ensure_teacher_logits(profile, "validation", teacher_model=teacher, progress=False)
        separate_cls = teachers.ensure_teacher_cls(profile, "validation", teacher_model=teacher, progress=False)
        one_pass = len(calls)
        layers = teachers.ensure_teacher_layers(profile, "validation", KEYS, teacher_model=teacher, progress=False)
        assert one_pass > 0 and len(calls) == 2 * one_pass  # the logits were cached: the layers took a pass of their own
        rows, longest = torch.arange(len(layers)), max(map(len, prep.encoded["validation"].input_ids))
        before = layers.read(rows, longest, KEYS)
        del layers  # unmapped before its files go (Windows refuses to delete a mapped file)
        for kind in ("logits", "cls"):
            prep.split_file(kind, "validation").unlink()
        for key in KEYS:
            teachers.layer_file(prep, key, "validation").unlink()
        calls.clear()
        fused = teachers.ensure_teacher_layers(profile, "validation", KEYS, teacher_model=teacher, progress=False)
        logits = teachers.ensure_teacher_logits(profile, "validation", teacher_model=teacher, progress=False)
        cls = teachers.ensure_teacher_cls(profile, "validation", teacher_model=teacher, progress=False)
    finally:
        hook.remove()
    assert len(calls) == one_pass  # one pass wrote all three
    assert torch.equal(logits, separate) and torch.equal(cls, separate_cls)
    after = fused.read(rows, longest, KEYS)
    assert all(torch.equal(after[key], before[key]) for key in KEYS)


def test_the_layer_pass_never_rewrites_logits_already_cached(small):
    """Students may have been trained on cached logits: a later layer pass leaves them as they are and fills in
    only the missing [CLS] states."""
    profile, teacher, prep, _, _ = small
    path = {kind: prep.split_file(kind, "validation") for kind in ("logits", "cls")}
    planted = torch.zeros(len(prep.encoded["validation"]), 2)
    torch.save(planted, path["logits"])
    path["cls"].unlink(missing_ok=True)
    for key in KEYS:
        teachers.layer_file(prep, key, "validation").unlink(missing_ok=True)
    try:
        teachers.ensure_teacher_layers(profile, "validation", KEYS, teacher_model=teacher, progress=False)
        assert torch.equal(teachers.ensure_teacher_logits(profile, "validation", progress=False), planted)
        cls = teachers.ensure_teacher_cls(profile, "validation", progress=False)
        assert cls.shape[1] == teacher.config.num_hidden_layers + 1 and cls.abs().sum() > 0
    finally:  # the split's real outputs are made again by whoever asks next
        for file in [*path.values(), *(teachers.layer_file(prep, key, "validation") for key in KEYS)]:
            file.unlink(missing_ok=True)


def test_the_pipeline_builds_the_layer_cache_before_it_reads_the_logits(small, monkeypatch, tmp_path):
    """The order that lets one pass write both: reading the logits first would make a pass of their own."""
    profile, teacher, prep, _, _ = small
    order = []

    class Stop(Exception):
        pass

    def logits(*args, **kw):
        order.append("logits")
        raise Stop
    monkeypatch.setattr(pipeline, "ensure_teacher", lambda *args, **kw: (teacher, prep, {}))
    monkeypatch.setattr(pipeline, "teacher_layer_cache", lambda *args, **kw: order.append("layers"))
    monkeypatch.setattr(pipeline, "teacher_outputs", logits)
    with pytest.raises(Stop):
        pipeline.run_distill(profile, out=tmp_path, device="cpu", progress=False)
    assert order == ["layers", "logits"]


def _student(profile, teacher, recipe):
    seed_everything(0)
    student = build_student(profile.students[0], teacher)
    return DistillationStudent(student, teacher.config.hidden_size) if recipe.intermediate.needs_projection \
        else student


@pytest.mark.parametrize("name", ["kd+transfer+values", "kd+transfer+cosine"])
def test_a_batch_loss_from_cached_layers_is_the_online_teachers(small, name):
    profile, teacher, prep, logits, states = small
    recipe = get_recipe(name)
    model = _student(profile, teacher, recipe).eval()  # no dropout: the two calls see the same student
    rows = prep.encoded["transfer"]
    batch = collate(rows, [5, 0, 11, 3, 9, 1, 14, 2])  # shuffled: rows are read by index
    config = TrainConfig(mode="kd", intermediate=recipe.intermediate)
    keys = set(recipe.intermediate.layer_keys([4]))  # the 1-layer student's uniform mapping: teacher layer 4
    assert keys <= states["transfer"].keys
    targets = torch.randn_like(logits["transfer"]) * 3  # rows that differ, so a row read from the wrong place shows
    online = recipe_loss(model, batch, config, targets, teacher=teacher)
    cached = recipe_loss(model, batch, config, targets, teacher_states=states["transfer"])
    assert cached[0].item() == pytest.approx(online[0].item(), rel=1e-2)
    kd = losses.distillation_loss(cached[1], targets[batch["index"]], batch["labels"], config.temperature, config.alpha)
    weights = recipe.intermediate.weights
    assert (cached[0] - sum(weights[k] * v for k, v in cached[2].items())).item() == pytest.approx(kd.item(), rel=1e-5)
    assert set(cached[2]) == set(online[2]) and len(online[2]) == 1
    for term in online[2]:
        assert cached[2][term].item() == pytest.approx(online[2][term].item(), rel=2e-2, abs=1e-4), term


def test_training_reads_cached_layers_without_the_teacher_but_attention_needs_it(small):
    profile, teacher, prep, logits, states = small
    rows = prep.encoded["transfer"]
    recipe = get_recipe("kd+transfer+values")
    config = TrainConfig(mode="kd", intermediate=recipe.intermediate, max_steps=3, batch_size=8)
    history = train(_student(profile, teacher, recipe), rows, config=config, teacher_logits=logits["transfer"],
                    teacher_states=states["transfer"], device="cpu", progress=False)
    assert len(history.steps) > 0 and all("value_relation" in s for s in history.steps)
    attention = dataclasses.replace(config, intermediate=get_recipe("kd+transfer+attn").intermediate)
    with pytest.raises(ValueError, match="need the frozen teacher"):
        train(_student(profile, teacher, get_recipe("kd+transfer+attn")), rows, config=attention,
              teacher_logits=logits["transfer"], teacher_states=states["transfer"], device="cpu", progress=False)
    with pytest.raises(ValueError, match="teacher_states hold"):
        train(_student(profile, teacher, recipe), rows, config=config, teacher_logits=logits["transfer"],
              teacher_states=states["transfer"].subset([0, 1]), device="cpu", progress=False)


def test_a_batchs_cached_layers_are_read_where_the_batch_is_built_and_train_the_same_model(small, monkeypatch):
    """The loop's batch thread reads each batch's rows (train.layer_reader), so the step waits for no disk; read
    inside the step instead (the reader off), the run trains exactly the same weights."""
    profile, teacher, prep, logits, states = small
    rows, recipe = prep.encoded["transfer"], get_recipe("kd+transfer+values")
    config = TrainConfig(mode="kd", intermediate=recipe.intermediate, max_steps=3, batch_size=8)
    threads, real_read = [], LayerStates.read
    monkeypatch.setattr(LayerStates, "read", lambda self, *a, **k: threads.append(threading.current_thread().name)
                        or real_read(self, *a, **k))

    def run():
        threads.clear()
        model = _student(profile, teacher, recipe)
        train(model, rows, config=config, teacher_logits=logits["transfer"], teacher_states=states["transfer"],
              device="cpu", progress=False)
        for thread in threading.enumerate():  # a batch built ahead may still be reading: let it finish first
            if thread.name == "kd_tutorial-prefetch":
                thread.join(timeout=30)
        return model, set(threads)
    batched, where = run()
    assert where == {"kd_tutorial-prefetch"}
    monkeypatch.setattr(train_module, "layer_reader", lambda *args: None)
    in_step, where = run()
    assert where == {threading.main_thread().name}
    for a, b in zip(batched.state_dict().values(), in_step.state_dict().values()):
        assert torch.equal(a, b)
    monkeypatch.undo()
    reader = train_module.layer_reader
    assert reader(_student(profile, teacher, recipe), config, states["transfer"]) is not None
    assert reader(_student(profile, teacher, recipe), config, None) is None
    attention = dataclasses.replace(config, intermediate=get_recipe("kd+transfer+attn").intermediate)
    assert reader(_student(profile, teacher, recipe), attention, states["transfer"]) is None


def test_the_pipeline_trains_from_the_cache_and_keys_those_runs_apart(small):
    profile, teacher, prep, logits, _ = small
    kw = dict(runs=("kd+transfer+values",), progress=False)
    cached = pipeline.distill_students(profile, teacher, prep, logits, **kw)["compact-1L-H32 kd+transfer+values"]
    online = pipeline.distill_students(profile.replace(teacher_layers="online"), teacher, prep, logits,
                                       **kw)["compact-1L-H32 kd+transfer+values"]
    assert cached["status"] == online["status"] == "trained" and cached["path"] != online["path"]
    last = [item["history"].steps[-1]["loss"] for item in (cached, online)]
    assert last[0] == pytest.approx(last[1], rel=0.05)  # the same run, but for the targets' bf16 rounding


def test_resume_finds_a_finished_run_under_either_key_and_builds_no_cache_that_no_run_left_reads(small, monkeypatch,
                                                                                                  tmp_path):
    """Whether a run reads the cached layers depends on today's disk room: --resume must not train a finished run
    again (online) when the cache cannot be had now, nor one trained online when it can; and with every run that
    reads the cache finished, no layer pass runs (about 430 s on the cpu profile)."""
    profile, teacher, prep, logits, _ = small
    name, kw = "compact-1L-H32 kd+transfer+values", dict(runs=("kd+transfer+values",), progress=False, resume=True)
    from_cache = pipeline.distill_students(profile, teacher, prep, logits, seeds=(0,), **kw)[name]
    online = pipeline.distill_students(profile, teacher, prep, logits, seeds=(8,), layers={}, **kw)[name]
    assert from_cache["cached_layers"] and not online["cached_layers"]
    built = []
    monkeypatch.setattr(pipeline, "teacher_layer_cache",
                        lambda profile, prep, keys, spare_keys=(), **k: built.append(keys))
    for seed, before in ((0, from_cache), (8, online)):
        for layers in ({}, None):  # no room for the cache now; the cache to be built if a run needs it
            again = pipeline.distill_students(profile, teacher, prep, logits, seeds=(seed,), layers=layers, **kw)[name]
            assert again["status"] == "cached" and again["path"] == before["path"], (seed, layers)
            assert again["cached_layers"] == before["cached_layers"]
    assert all(keys == [] for keys in built), built

    class Stop(Exception):
        pass
    monkeypatch.setattr(pipeline, "ensure_teacher", lambda *args, **k: (teacher, prep, {}))
    monkeypatch.setattr(pipeline, "teacher_outputs", lambda *args, **k: (_ for _ in ()).throw(Stop()))
    for resume, keys in ((True, []), (False, [("values", 4)])):  # a run trained again reads the cache
        built.clear()
        with pytest.raises(Stop):
            pipeline.run_distill(profile, out=tmp_path, device="cpu", progress=False, resume=resume,
                                 runs=("kd+transfer+values",))
        assert built == [keys], resume


def test_a_run_planned_as_finished_but_gone_when_it_runs_is_placed_again(small, monkeypatch):
    """A finished cached-layers run, deleted (or being retrained elsewhere) between --resume's plan and its turn, was
    trained in the cached-layers folder with the teacher online and recorded as reading the cache."""
    profile, teacher, prep, logits, _ = small
    name, kw = "compact-1L-H32 kd+transfer+values", dict(runs=("kd+transfer+values",), progress=False, resume=True)
    first = pipeline.distill_students(profile, teacher, prep, logits, seeds=(3,), **kw)[name]
    assert first["cached_layers"]
    plan = pipeline._plan_jobs

    def plan_then_delete(*args, **k):
        jobs = plan(*args, **k)
        for job in jobs:
            if job["finished"] is not None:
                (job["finished"] / "history.json").unlink()  # gone after the plan found it finished
        return jobs
    monkeypatch.setattr(pipeline, "_plan_jobs", plan_then_delete)
    again = pipeline.distill_students(profile, teacher, prep, logits, seeds=(3,), layers={}, **kw)[name]
    assert again["status"] == "trained" and not again["cached_layers"] and again["path"] != first["path"]


def test_the_students_rows_read_their_own_reviews_layers(small):
    """transfer_states lines the cache up with student_data's transfer set: the labelled reviews, then transfer."""
    profile, teacher, prep, logits, states = small
    rows = pipeline.student_data(profile, prep, logits)["transfer"][0]
    aligned = teacher_layers.transfer_states(states, pipeline.student_labels(profile, prep))
    assert len(aligned) == len(rows)
    picked = [0, 7, len(rows) - 300, len(rows) - 1]  # two labelled reviews, two transfer reviews
    batch = collate(rows, picked)
    with torch.no_grad():
        live = forward_features(teacher, batch["input_ids"], batch["attention_mask"], values=True).values[3]
    read = aligned.read(batch["index"], batch["input_ids"].shape[1], [("values", 4)])[("values", 4)].float()
    real = batch["attention_mask"].bool()
    assert (read - live)[real].abs().max() < 1e-2 * live[real].abs().max()


def test_without_room_for_more_only_the_cached_layers_are_read(small, monkeypatch, capsys):
    """When the missing layers do not fit, nothing is written; runs whose layers are cached read them, the others
    call the teacher (and are keyed as online runs)."""
    profile, teacher, prep, logits, _ = small
    monkeypatch.setattr(teachers, "has_room", lambda folder, size: False)
    monkeypatch.setattr(teacher_layers, "has_room", lambda folder, size: False)
    keys = [("values", 3)]  # not cached yet, so it needs room
    assert teachers.ensure_teacher_layers(profile, "train", keys, teacher_model=teacher, progress=False) is None
    where = dict(teacher_model=teacher, progress=False, **prep.where)
    assert teacher_layers.teacher_layer_cache(profile, prep, keys, **where) is None
    assert "do not fit on the disk" in capsys.readouterr().out
    partly = teacher_layers.teacher_layer_cache(profile, prep, keys + [("values", 4)], **where)
    assert partly["train"].keys == {("values", 4)} and "do not fit" in capsys.readouterr().out
    assert not list(prep.directory.glob("*values-3-*"))  # nothing half-written
    cut = dataclasses.replace(profile.students[0], name="compact-skip", mapping="skip")  # learns from layer 2: online
    both = pipeline.distill_students(profile, teacher, prep, logits, runs=("kd+transfer+values",), progress=False,
                                     students=(profile.students[0], cut), layers=partly, seeds=(5,))
    online = pipeline.distill_students(profile.replace(teacher_layers="online"), teacher, prep, logits,
                                       runs=("kd+transfer+values",), students=(cut,), progress=False, seeds=(5,),
                                       resume=True)
    assert online[f"{cut.name} kd+transfer+values"]["status"] == "cached"  # the run without cached layers: online
    assert both[f"{cut.name} kd+transfer+values"]["path"] == online[f"{cut.name} kd+transfer+values"]["path"]
    assert both["compact-1L-H32 kd+transfer+values"]["cached_layers"]  # while the other read the cache
    assert not both[f"{cut.name} kd+transfer+values"]["cached_layers"]


@pytest.mark.parametrize("refusal", ["disk full", "quota", "file too large", "room gone under the lock"])
def test_space_refused_after_the_room_check_still_reads_the_layers_cached_on_both_splits(small, monkeypatch, capsys,
                                                                                         refusal):
    """A quota (which the room check cannot see), a disk that filled up since the check, or a layer file too large
    for the file system (EFBIG: FAT32, ulimit -f): the layers cached on both splits are read all the same, and a
    line says why the others are not (they were dropped, silently)."""
    import errno
    profile, teacher, prep, _, _ = small
    code = {"quota": errno.EDQUOT, "file too large": errno.EFBIG}.get(refusal, errno.ENOSPC)

    class Refused(LayerWriter):
        def __init__(self, *args, **kwargs):
            raise OSError(code, "refused")
    if refusal == "room gone under the lock":
        monkeypatch.setattr(teachers, "has_room", lambda folder, size: False)
    else:
        monkeypatch.setattr(teachers, "LayerWriter", Refused)
    where = dict(teacher_model=teacher, progress=False, **prep.where)
    partly = teacher_layers.teacher_layer_cache(profile, prep, [("values", 3), ("values", 4)], **where)
    out = capsys.readouterr().out
    assert partly is not None and partly["train"].keys == partly["transfer"].keys == {("values", 4)}
    assert "refused the space" in out and "a disk quota" in out and "call the teacher at every step" in out, out
    assert "values 4 read from a bf16 cache" in out
    assert not list(prep.directory.glob("*values-3-*")) and not list(prep.directory.glob(".*.tmp"))


def test_an_interrupted_layer_pass_leaves_nothing_behind(small, monkeypatch):
    profile, teacher, prep, _, _ = small

    def interrupted(model, encoded, writer, **kw):
        writer.write(("hidden", 3), torch.tensor([0]), torch.ones(1, 4, teacher.config.hidden_size))
        raise KeyboardInterrupt
    monkeypatch.setattr(teachers, "_layer_pass", interrupted)
    with pytest.raises(KeyboardInterrupt):
        teachers.ensure_teacher_layers(profile, "train", [("hidden", 3)], teacher_model=teacher, progress=False)
    assert not list(prep.directory.glob("*hidden-3-*")) and not list(prep.directory.glob(".*.tmp"))


def test_a_full_disk_moving_the_layer_files_into_place_falls_back_to_the_teacher_and_the_next_run_computes_the_rest(
        small, monkeypatch):
    """Before: a full disk at the final rename (or flush: the same step, LayerWriter.close) stopped the run with a
    StorageError line after the whole layer pass, though the runs could call the teacher, as for a refused
    reservation. Now the pass gives None: no temporary file stays, the file moved into place before is whole, and
    the next run computes the other."""
    import errno
    profile, teacher, prep, _, _ = small
    keys, renamed = [("hidden", 1), ("values", 2)], []
    for key in keys:  # another test may have cached them
        teachers.layer_file(prep, key, "train").unlink(missing_ok=True)

    def replace(src, dst):
        if renamed:  # the first file moved into place, the second refused
            raise OSError(errno.ENOSPC, "No space left on device")
        renamed.append(dst)
        os.rename(src, dst)
    monkeypatch.setattr(layer_cache.os, "replace", replace)
    monkeypatch.setattr(teachers, "_layer_pass", lambda model, enc, writer, **kw: (None, None))  # no pass needed
    assert teachers.ensure_teacher_layers(profile, "train", keys, teacher_model=teacher, progress=False) is None
    assert not list(prep.directory.glob(".*.tmp")) and not list(prep.directory.glob("values-2-*"))
    assert [p.name for p in renamed] == ["hidden-1-train.npy"]
    monkeypatch.undo()
    passes = []
    real = teachers._layer_pass
    monkeypatch.setattr(teachers, "_layer_pass", lambda model, enc, writer, **kw: (passes.append(set(writer.paths)),
                                                                                  real(model, enc, writer, **kw))[1])
    again = teachers.ensure_teacher_layers(profile, "train", keys, teacher_model=teacher, progress=False)
    assert again.keys == set(keys) and passes == [{("values", 2)}]
    for key in keys:
        teachers.layer_file(prep, key, "train").unlink()


def test_a_full_disk_at_the_last_flush_reads_the_layers_cached_on_both_splits_and_says_why_not_the_others(
        small, monkeypatch, capsys):
    """The run goes on: the layers cached on both splits are read, a line says the others are not, nothing
    half-written stays."""
    import errno
    profile, teacher, prep, _, _ = small
    for split in ("train", "transfer"):  # another test may have cached it
        teachers.layer_file(prep, ("values", 3), split).unlink(missing_ok=True)

    def flush(self):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    monkeypatch.setattr(layer_cache.np.memmap, "flush", flush)
    where = dict(teacher_model=teacher, progress=False, **prep.where)
    partly = teacher_layers.teacher_layer_cache(profile, prep, [("values", 3), ("values", 4)], **where)
    out = capsys.readouterr().out
    assert partly is not None and partly["train"].keys == partly["transfer"].keys == {("values", 4)}
    assert "refused the space" in out and "call the teacher at every step" in out, out
    assert not list(prep.directory.glob("*values-3-*")) and not list(prep.directory.glob(".*.tmp"))


def test_another_refusal_moving_the_layer_files_into_place_is_one_line(small, monkeypatch):
    """A refusal that more room would not fix (permission) still stops the run, in one line, leaving no .tmp."""
    import errno
    profile, teacher, prep, _, _ = small
    teachers.layer_file(prep, ("hidden", 1), "train").unlink(missing_ok=True)

    def replace(src, dst):
        raise OSError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(layer_cache.os, "replace", replace)
    monkeypatch.setattr(teachers, "_layer_pass", lambda model, enc, writer, **kw: (None, None))  # no pass needed
    with pytest.raises(store.StorageError, match="permission denied") as err:
        teachers.ensure_teacher_layers(profile, "train", [("hidden", 1)], teacher_model=teacher, progress=False)
    assert "\n" not in str(err.value) and str(prep.directory) in str(err.value)
    assert not list(prep.directory.glob(".*.tmp")) and not list(prep.directory.glob("hidden-1-*"))


def test_a_pass_stopped_in_its_callback_leaves_the_teacher_in_the_mode_it_came_in(small):
    from kd_tutorial.evaluate import predict_logits
    _, teacher, prep, _, _ = small

    def stop(index, features):
        raise KeyboardInterrupt
    was = teacher.training
    teacher.train()
    try:
        with pytest.raises(KeyboardInterrupt):
            predict_logits(teacher, prep.encoded["validation"], batch_size=8, on_batch=stop)
        assert teacher.training
    finally:
        teacher.train(was)


def test_the_room_check_leaves_room_to_spare(tmp_path, monkeypatch):
    free = 10 * 1024 ** 3
    monkeypatch.setattr(layer_cache.shutil, "disk_usage", lambda path: type("Usage", (), {"free": free})())
    assert layer_cache.has_room(tmp_path, free - layer_cache.ROOM_TO_SPARE)
    assert not layer_cache.has_room(tmp_path, free - layer_cache.ROOM_TO_SPARE + 1)
    assert layer_cache.nbytes(10_000, 256, 384, [("hidden", 2)]) == 10_000 * 256 * 384 * 2


def test_a_reservation_over_the_file_size_limit_is_refused_as_efbig_and_holds_nothing(tmp_path):
    """What the EFBIG fallback above stands in for: under a file-size limit (ulimit -f; FAT32's 4 GB alike) the
    reservation's file cannot grow to its size, the system says EFBIG (Python ignores SIGXFSZ), and nothing stays."""
    import errno
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))  # this process's files only, undone below
    try:
        with pytest.raises(OSError) as refused:
            layer_cache.Reservation(tmp_path, {"train": 1024, "transfer": 1024 ** 2}, tag="pid-1")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert refused.value.errno == errno.EFBIG and not list(tmp_path.iterdir())


def test_a_cls_term_beside_a_per_token_one_reads_its_states_from_the_cache_too(small):
    """[CLS] plus value relations counts as cacheable; the run then reads the cache, not the [CLS] states, so the
    cache must hold the [CLS] term's hidden layers (it asked for none, and the term crashed on None)."""
    profile, teacher, prep, logits, states = small
    base = get_recipe("kd+transfer+values")
    recipe = base.with_(intermediate=dataclasses.replace(base.intermediate, cls=1.0))
    assert set(recipe.intermediate.layer_keys([4])) == {("hidden", 4), ("values", 4)} <= states["transfer"].keys
    model = _student(profile, teacher, recipe).eval()
    batch = collate(prep.encoded["transfer"], [5, 0, 11, 3, 9, 1, 14, 2])
    config = TrainConfig(mode="kd", intermediate=recipe.intermediate)
    online = recipe_loss(model, batch, config, logits["transfer"], teacher=teacher)[2]
    cached = recipe_loss(model, batch, config, logits["transfer"], teacher_states=states["transfer"])[2]
    assert set(cached) == {"cls", "value_relation"}
    assert cached["cls"].item() == pytest.approx(online["cls"].item(), rel=2e-2, abs=1e-4)


def test_a_killed_layer_passs_leftover_is_cleaned_before_the_room_is_judged(small, monkeypatch, capsys):
    """Its file keeps the whole reservation, which the room check counts: a rerun within the hour was told the
    layers do not fit. The check now follows the folder lock's clean-up of files whose process is gone."""
    import subprocess
    import sys
    profile, teacher, prep, _, _ = small
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a process that is gone, as a layer pass killed mid-write
    leftover = prep.directory / f".values-2-train.npy.kd-pid-{child.pid}.tmp"
    leftover.write_bytes(b"\0" * 1024)

    def room(folder, size):  # the disk is full while the leftover is there
        return not leftover.exists()
    monkeypatch.setattr(teacher_layers, "has_room", room)
    monkeypatch.setattr(teachers, "has_room", room)
    where = dict(teacher_model=teacher, progress=False, **prep.where)
    states = teacher_layers.teacher_layer_cache(profile, prep, [("values", 2)], **where)
    assert "do not fit" not in capsys.readouterr().out and not leftover.exists()
    assert states["train"].keys == states["transfer"].keys == {("values", 2)}


@pytest.mark.parametrize("refusal", ["ENOSPC", "EDQUOT", "EFBIG"])  # EFBIG: a reservation too large (FAT32, ulimit -f)
def test_space_refused_for_the_transfer_split_runs_no_pass_on_train(small, monkeypatch, capsys, refusal):
    """The train split's layers were computed and written, then the transfer split's space was refused: a wasted
    pass (only layers cached on both splits are read). Both splits' space is now reserved before either pass."""
    import errno
    profile, teacher, prep, _, _ = small
    reserve, passes = layer_cache._reserve, []

    def refuse_transfer(path):  # the disk gives the train split its space, then refuses the transfer split's
        if "transfer" in path.name:
            raise OSError(getattr(errno, refusal), "refused")
        reserve(path)

    def layer_pass(*args, desc, **kw):
        passes.append(desc)
        return real_pass(*args, desc=desc, **kw)
    real_pass = teachers._layer_pass
    monkeypatch.setattr(layer_cache, "_reserve", refuse_transfer)
    monkeypatch.setattr(teachers, "_layer_pass", layer_pass)
    where = dict(teacher_model=teacher, progress=False, **prep.where)
    assert not list(prep.directory.glob("*values-1-*"))  # no other test caches it: missing on both splits
    partly = teacher_layers.teacher_layer_cache(profile, prep, [("values", 1), ("values", 4)], **where)
    out = capsys.readouterr().out
    assert passes == []  # no teacher pass on either split
    assert partly["train"].keys == partly["transfer"].keys == {("values", 4)}
    assert "refused the space" in out and "no layer pass ran" in out and "call the teacher at every step" in out, out
    assert ("ulimit -f" in out) == (refusal == "EFBIG") != ("quota" in out), out  # the cause it names
    assert not list(prep.directory.glob("*values-1-*")) and not list(prep.directory.glob(".*.tmp"))


def _dead_pid() -> int:
    """The PID of a process that has just ended."""
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _partial_of(path, monkeypatch, pid, host=None, namespace=None):
    """The temporary name a layer writer of process ``pid`` on ``host`` in PID namespace ``namespace`` (these
    defaulting to this process's) gives ``path``."""
    import socket
    with monkeypatch.context() as m:
        m.setattr(os, "getpid", lambda: pid)
        if host is not None:
            m.setattr(socket, "gethostname", lambda: host)
        if namespace is not None:
            m.setattr(os, "readlink", lambda p: f"pid:[{namespace}]")
        return layer_cache._partial(path, store.writer_tag())


def test_a_temporary_layer_file_names_its_writers_host_and_pid_namespace(tmp_path, monkeypatch):
    here = store._BY_PROCESS.match(layer_cache._partial(tmp_path / "hidden-3-train.npy", store.writer_tag()).name)
    assert here.group(1) == str(os.getpid()) and here.group(2, 3) == store._process_space()
    dotted = _partial_of(tmp_path / "hidden-3-train.npy", monkeypatch, 12, host="node1.cluster.local")
    assert store._LEFTOVER.match(dotted.name) and store._BY_PROCESS.match(dotted.name).group(1, 2) == (
        "12", "node1-cluster-local")
    held = layer_cache.Reservation(tmp_path, {"train": 4096, "transfer": 0}, store.writer_tag())
    assert [p.name for p in held.paths.values()] == [
        layer_cache._partial(tmp_path / "layers-train.reserved", store.writer_tag()).name]
    held.release()
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(os.name != "posix", reason="process IDs are asked after on POSIX only")
def test_a_dead_writers_file_is_removed_at_once_only_when_written_on_this_host_and_pid_namespace(tmp_path,
                                                                                                 monkeypatch):
    """A file's PID was judged under the folder's lock, which a share without working locks (NFS nolock) or a writer
    in another container (another PID namespace) does not exclude: a live writer there lost its file."""
    import time
    dead, layer = _dead_pid(), tmp_path / "hidden-2-train.npy"
    mine = _partial_of(layer, monkeypatch, dead)
    elsewhere = _partial_of(layer, monkeypatch, dead, host="another-host")
    other_ns = _partial_of(layer, monkeypatch, dead, namespace=1)  # no real namespace's inode (they are ~4e9)
    old_format = tmp_path / f".hidden-4-train.npy.kd-pid-{dead}.tmp"  # written before names held a host
    for path in (mine, elsewhere, other_ns, old_format):
        path.write_bytes(b"x")
    with store.locked(tmp_path):
        pass
    assert not mine.exists() and not old_format.exists()  # this host and namespace: its writer is gone
    assert elsewhere.exists() and other_ns.exists()  # its PID may be a live writer's there
    hour_ago = time.time() - store.STALE_AFTER_S - 60
    os.utime(elsewhere, (hour_ago, hour_ago))
    with store.locked(tmp_path):
        pass
    assert not elsewhere.exists()  # from elsewhere: removed once old, as before


@pytest.mark.parametrize("damage", ["shorter", "float16", "narrower"])
def test_a_cached_layer_of_another_shape_or_type_is_refused_naming_its_file(small, damage):
    """Only the row count was checked: a file cut to 20 positions gave zeros as targets past them, a float16 one
    was read as bf16 bits (garbage), a narrower one a narrower target; none said a word."""
    import numpy as np

    from kd_tutorial.artifacts import ArtifactError
    profile, teacher, prep, _, _ = small
    path = teachers.layer_file(prep, KEYS[0], "train")
    kept = path.read_bytes()
    array = np.load(path)
    try:
        np.save(path, {"shorter": array[:, :20], "float16": array.astype(np.float16),
                       "narrower": array[:, :, :-1]}[damage])
        with pytest.raises(ArtifactError, match=f"the cached teacher layer {path} holds .*: delete that file and "
                                                "run again"):
            teachers.ensure_teacher_layers(profile, "train", KEYS, teacher_model=teacher, progress=False)
    finally:
        path.write_bytes(kept)


def test_cached_cls_states_must_be_a_table_of_layers(tmp_path):
    """A [CLS] file of two dimensions (rows, hidden) was accepted: the teacher's depth was then read off its shape."""
    from kd_tutorial.artifacts import ArtifactError
    torch.save(torch.zeros(5, 8), tmp_path / "cls.pt")
    with pytest.raises(ArtifactError, match=r"hold Tensor\(5, 8\), not \(rows, layers, hidden\)"):
        teachers.load_cached_logits(tmp_path / "cls.pt", 5)
    torch.save(torch.zeros(5, 3, 8), tmp_path / "cls.pt")
    assert teachers.load_cached_logits(tmp_path / "cls.pt", 5).shape == (5, 3, 8)


def test_a_recipe_a_student_cannot_run_is_named_not_left_out_in_silence(small, capsys):
    """`distill --recipes kd+transfer+attn` (or `--recipes all`) left compact-1L-H32 (2 heads; its teacher has 4) out
    of the run without a word, where the README and `--help` said every student runs the recipes named."""
    profile, teacher, prep, logits, _ = small
    compact = next(s for s in profile.students if s.kind == "compact")
    capsys.readouterr()
    trained = pipeline.distill_students(profile, teacher, prep, logits, runs=("kd+transfer+attn",),
                                        students=(compact,), progress=False)
    assert trained == {}
    assert (f"{compact.name}: kd+transfer+attn left out: attention maps need as many heads as the teacher's "
            f"{teacher.config.num_attention_heads}, and this student has {compact.num_heads}\n"
            in capsys.readouterr().out)


def test_only_transfer_set_runs_of_per_token_terms_without_augmentation_read_the_cache():
    """The cache holds the rows of train and transfer in the students' order: a run whose rows are the labelled
    reviews alone, or that adds augmented copies (rows no pass cached), must call the teacher; so must attention
    maps, and every run of a profile that caches nothing."""
    from kd_tutorial.profiles import get_profile
    cache, online = get_profile("tiny").replace(teacher_layers="cache"), get_profile("tiny").replace(
        teacher_layers="online")
    values = get_recipe("kd+transfer+values")
    assert plan.reads_cached_layers(cache, values) and plan.reads_cached_layers(
        cache, get_recipe("kd+transfer+hidden"))
    assert not plan.reads_cached_layers(online, values)
    for recipe in (values.with_(name="kd+values+aug", augment=True), values.with_(name="kd+values", transfer=False),
                   get_recipe("kd+transfer+attn"), get_recipe("kd+transfer+pkd"), get_recipe("kd+transfer")):
        assert not plan.reads_cached_layers(cache, recipe), recipe.name


def test_a_students_rows_read_no_cache_where_one_of_its_splits_has_none_and_the_size_is_in_gigabytes():
    """A student learning from the spare reviews whose layers were not cached there reads none (its rows past the
    transfer reviews would have no layers); the printed size is in GB (10^9 bytes)."""
    import numpy as np

    def split(rows):
        return LayerStates([{("values", 4): np.zeros((rows, 5, 100), dtype=np.int16)}],
                           torch.stack([torch.zeros(rows, dtype=torch.long), torch.arange(rows)], 1), depth=4)
    states = {"train": split(10), "transfer": split(20)}
    assert teacher_layers.transfer_states(states, [3, 1], splits=("transfer", "spare")) is None
    rows = teacher_layers.transfer_states(states, [3, 1], splits=("transfer",))
    assert len(rows) == 22
    assert teacher_layers.cache_gb(states) == pytest.approx(30 * 5 * 100 * 2 / 1e9)


def test_cached_layer_files_of_one_split_must_hold_as_many_rows(tmp_path):
    """Files of one split written by passes over other reviews (a folder edited by hand) would line row i of one
    layer up with another review's row i of the other."""
    import numpy as np
    np.save(tmp_path / "a.npy", np.zeros((3, 2, 4), dtype=np.int16))
    np.save(tmp_path / "b.npy", np.zeros((4, 2, 4), dtype=np.int16))
    with pytest.raises(ValueError, match=r"different numbers of rows: \[3, 4\]"):
        LayerStates.open({("hidden", 1): tmp_path / "a.npy", ("hidden", 2): tmp_path / "b.npy"}, depth=4)


def test_a_layer_cached_on_one_split_only_is_not_read_on_either(small):
    """Where no room is left, the layers read are those cached on both train and transfer: one cached on train
    alone would leave the transfer reviews without targets."""
    _, _, prep, _, _ = small
    lonely = teachers.layer_file(prep, ("values", 1), "train")
    lonely.touch()
    try:
        wanted = {"train": sorted(KEYS) + [("values", 1)], "transfer": sorted(KEYS) + [("values", 1)]}
        got = teacher_layers._cached_on_both(prep, wanted)
        assert got["train"] == got["transfer"] == sorted(KEYS)
    finally:
        lonely.unlink()
