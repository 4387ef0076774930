"""A teacher retrained in a folder that still holds what its predecessor computed (logits, [CLS] states, layers,
students): kept when the new teacher has the very same weights, set aside (never deleted) when it has not."""
import json
import shutil

import pytest
import torch

from kd_tutorial import teachers


def test_a_retrained_teacher_keeps_an_identical_ones_outputs_and_sets_aside_anothers(cut_tiny, capsys):
    with cut_tiny(n_transfer=300) as (profile, teacher, prep, logits):
        folder = prep.directory
        recorded = json.loads((folder / "teacher.json").read_text())["weights"]
        assert recorded == teachers.weights_hash(teacher)
        (folder / "students" / "some-run").mkdir(parents=True)
        outputs = sorted(p.name for p in teachers.files_from_the_teacher(folder))
        assert {"logits-train.pt", "logits-transfer.pt", "cls-train.pt", "students"} <= set(outputs)

        shutil.rmtree(folder / "teacher")  # as the advice for a corrupt teacher says: teacher.json stays
        _, _, info = teachers.ensure_teacher(profile, progress=False)
        assert info["status"] == "trained" and info["weights"] == recorded  # same seed, same threads
        assert sorted(p.name for p in teachers.files_from_the_teacher(folder)) == outputs
        assert not list(folder.glob("stale-*"))

        # the same, where the outputs came from a teacher with other weights (another thread count, say)
        meta = json.loads((folder / "teacher.json").read_text())
        (folder / "teacher.json").write_text(json.dumps(meta | {"weights": "0" * 16}))
        shutil.rmtree(folder / "teacher")
        capsys.readouterr()
        teachers.ensure_teacher(profile, progress=False)
        assert teachers.files_from_the_teacher(folder) == []
        [aside] = folder.glob("stale-*")
        assert sorted(p.name for p in aside.iterdir()) == outputs  # moved whole, nothing deleted
        assert torch.equal(torch.load(aside / "logits-train.pt"), logits["train"])
        assert f"moved to {aside}" in capsys.readouterr().err
        again = teachers.ensure_teacher_logits(profile, "train", progress=False)  # computed from the new teacher
        assert (folder / "logits-train.pt").exists() and again.shape == logits["train"].shape


def test_the_weights_hash_tells_apart_weights_that_differ_in_one_value_only():
    """The hash decides whether a retrained teacher keeps its predecessor's logits and layers: it must read every
    value (a hash of the names and shapes would keep another teacher's outputs)."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    before = teachers.weights_hash(model)
    assert teachers.weights_hash(model) == before and len(before) == 16
    with torch.no_grad():
        model[0].weight[1, 2] += 1e-6
    assert teachers.weights_hash(model) != before


def test_outputs_of_a_teacher_that_predates_the_weights_record_are_set_aside(tmp_path, capsys):
    (tmp_path / "teacher.json").write_text(json.dumps({"val_accuracy": 0.8}))  # written before the hash existed
    (tmp_path / "logits-train.pt").write_bytes(b"x")
    (tmp_path / "hidden-2-train.npy").write_bytes(b"x")
    assert teachers._recorded_weights(tmp_path) is None  # so whatever the new teacher is, it differs
    aside = teachers.set_aside_outputs(tmp_path)
    assert sorted(p.name for p in aside.iterdir()) == ["hidden-2-train.npy", "logits-train.pt"]
    assert (tmp_path / "teacher.json").exists() and teachers.set_aside_outputs(tmp_path) is None
    assert "moved to" in capsys.readouterr().err


def test_a_teacher_saved_again_is_not_cached_until_its_new_record_is_written(tmp_path, monkeypatch):
    """The new teacher was saved before its teacher.json was written: a save cut short between the two left the new
    weights beside the old record, and the next run took them for cached, with the old history and accuracy."""
    from kd_tutorial import artifacts, teachers
    from kd_tutorial.profiles import get_profile
    from kd_tutorial.history import History
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path))
    profile = get_profile("tiny")
    folder = artifacts.prepare(profile).directory
    folder.mkdir(parents=True)
    (folder / "teacher.json").write_text('{"weights": "0123456789abcdef", "val_accuracy": 0.5}')  # an older teacher
    monkeypatch.setattr(teachers, "train", lambda *a, **k: History())  # no time spent training here

    def cut_short(model, directory):
        (directory / "config.json").parent.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text("{}")  # the new weights reached the disk, then the process stopped
        raise KeyboardInterrupt
    monkeypatch.setattr(teachers, "atomic_save_pretrained", cut_short)
    with pytest.raises(KeyboardInterrupt):
        teachers.ensure_teacher(profile, progress=False)
    assert not (folder / "teacher.json").exists() and teachers._cached_teacher(folder) is None


def test_outputs_of_a_model_that_is_not_the_cached_teacher_are_refused_and_nothing_is_written(cut_tiny):
    """A notebook that passes the wrong model as ``teacher_model`` (a student, a teacher trained in the notebook)
    once had its logits cached as the teacher's for good, and every later run learned from them; and a model handed
    over where the outputs were cached already got the cached teacher's back without a word."""
    from kd_tutorial import models
    from kd_tutorial.errors import UserError
    with cut_tiny(n_transfer=300) as (profile, teacher, prep, logits):
        folder = prep.directory
        student = models.build_student(profile.students[0], teacher, teacher_tokenizer=prep.tokenizer)
        before = sorted(p.name for p in folder.iterdir())
        with pytest.raises(UserError, match="is not the teacher cached in .*: pass the model ensure_teacher returns, "
                                            "or leave teacher_model out"):
            teachers.ensure_teacher_logits(profile, "validation", teacher_model=student, progress=False)
        with pytest.raises(UserError, match="is not the teacher cached in"):
            teachers.ensure_teacher_layers(profile, "validation", [("hidden", 1)], teacher_model=student,
                                           progress=False)
        assert sorted(p.name for p in folder.iterdir()) == before  # nothing cached from the wrong model
        # what is cached already is refused to another model too: it read the cached teacher's logits back, and a
        # run calling the teacher online for its attention maps (+attn) mixed two teachers in one loss
        with pytest.raises(UserError, match="is not the teacher cached in"):
            teachers.ensure_teacher_logits(profile, "train", teacher_model=student)
        assert torch.equal(teachers.ensure_teacher_logits(profile, "train", teacher_model=teacher), logits["train"])
        given = teachers.ensure_teacher_logits(profile, "validation", teacher_model=teacher, progress=False)
        assert torch.equal(given, teachers.ensure_teacher_logits(profile, "validation"))


@pytest.mark.parametrize("text", ["[1, 2]", "0.85", "null"])
def test_a_teacher_record_that_is_json_but_no_object_is_one_line(tmp_path, text):
    """Before: teacher.json holding a JSON list or number (a hand edit, another tool's file) was a TypeError
    traceback (``list | dict``) in the cache lookup; now it is the ArtifactError of a corrupt record."""
    from kd_tutorial.store import ArtifactError
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher.json").write_text(text)
    with pytest.raises(ArtifactError, match=r"cannot read .*teacher.json \(ValueError: it holds a JSON \w+, not an "
                                            r"object\): delete it and run again"):
        teachers._cached_teacher(tmp_path)


def test_a_teacher_trained_now_leaves_the_callers_random_state_as_a_cached_one_does(tmp_path, monkeypatch):
    """Notebooks 04, 05 and 07 printed other numbers on a cold run (teacher trained in the kernel) than on Restart &
    Run All (teacher from the cache): training reseeded and drew from the global generators, so every later draw
    (a dropout check, a student's new head, a projection) moved with whether the teacher had been cached."""
    import random

    from kd_tutorial import artifacts
    from kd_tutorial.profiles import get_profile
    from kd_tutorial.history import History

    def train_drawing(*args, **kwargs):
        torch.rand(7), random.random()  # what training draws
        return History()
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path))
    monkeypatch.setattr(teachers, "train", train_drawing)
    monkeypatch.setattr(teachers, "atomic_save_pretrained", lambda model, directory: directory.mkdir(parents=True))
    profile = get_profile("tiny")
    artifacts.prepare(profile).directory.mkdir(parents=True)
    torch.manual_seed(123)
    random.seed(123)
    expected = torch.rand(3), random.random()
    torch.manual_seed(123)
    random.seed(123)
    teachers.ensure_teacher(profile, progress=False)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_a_transfer_set_of_another_size_copies_the_teacher_instead_of_fine_tuning_it_again(cut_tiny, capsys):
    """``--set n_transfer=N`` alone keyed another folder, so the teacher was fine-tuned again on the same reviews
    (bit-identical weights; on ``full``, a BERT-base). A source with unlabelled reviews draws the transfer set from
    them, so train and validation stay; the teacher trained on them is copied. Other train reviews still train."""
    from kd_tutorial.artifacts import prepare
    with cut_tiny(n_transfer=300) as (profile, teacher, prep, _):
        other = profile.replace(n_transfer=200)
        there = prepare(other)
        assert there.directory != prep.directory and there.teacher_inputs == prep.teacher_inputs
        assert prepare(profile.replace(n_train=200)).teacher_inputs != prep.teacher_inputs  # other train reviews
        assert prepare(profile.replace(teacher_lr=1e-4)).teacher_inputs != prep.teacher_inputs
        capsys.readouterr()
        model, _, info = teachers.ensure_teacher(other, progress=False)
        assert info["status"] == "cached" and info["copied_from"] == str(prep.directory)
        assert teachers.weights_hash(model) == teachers.weights_hash(teacher) == info["weights"]
        assert f"in {prep.directory}: copied, not trained again" in capsys.readouterr().out
        record = json.loads((there.directory / "teacher.json").read_text())
        assert record["trained_on"] == prep.teacher_inputs and record["weights"] == info["weights"]
        assert teachers.ensure_teacher(other, progress=False)[2].get("copied_from") == str(prep.directory)
        logits = teachers.ensure_teacher_logits(other, "transfer", progress=False)  # its own transfer set's
        assert logits.shape[0] == len(there.encoded["transfer"]) == 200

        shutil.rmtree(there.directory)  # a source whose weights are not those recorded is not copied
        meta = json.loads((prep.directory / "teacher.json").read_text())
        (prep.directory / "teacher.json").write_text(json.dumps(meta | {"weights": "0" * 16}))
        assert teachers._trained_elsewhere(prepare(other)) is None


def test_a_teacher_fine_tuned_on_other_reviews_is_never_copied_from_a_sibling_folder(cut_tiny):
    """Only a folder whose teacher read the same train and validation reviews with the same settings is copied:
    one fine-tuned on other train reviews, or with another learning rate, is trained again."""
    from kd_tutorial.artifacts import prepare
    with cut_tiny(n_transfer=300) as (profile, teacher, prep, _):
        assert teachers._trained_elsewhere(prepare(profile.replace(n_transfer=200))) is not None  # the same teacher
        assert teachers._trained_elsewhere(prepare(profile.replace(n_train=200))) is None
        assert teachers._trained_elsewhere(prepare(profile.replace(teacher_lr=1e-4))) is None


def test_logits_on_reviews_outside_the_splits_are_cached_under_the_rows_themselves(cut_tiny):
    """Augmented copies of other reviews (another augmentation seed) under the same name, and as many rows, get
    their own logits, never those cached for the first rows."""
    from kd_tutorial.data import subset_encoded
    with cut_tiny(n_transfer=300) as (profile, teacher, prep, logits):
        rows = subset_encoded(prep.encoded["transfer"], list(range(8)), "augmented")
        flipped = subset_encoded(prep.encoded["transfer"], list(range(7, -1, -1)), "augmented")
        first = teachers.ensure_teacher_logits_on(profile, "augmented", rows, teacher_model=teacher, progress=False)
        assert not torch.allclose(first, first.flip(0))  # reviews the teacher tells apart
        again = teachers.ensure_teacher_logits_on(profile, "augmented", flipped, teacher_model=teacher,
                                                  progress=False)
        assert torch.allclose(again, first.flip(0), atol=1e-3)
        assert torch.equal(teachers.ensure_teacher_logits_on(profile, "augmented", rows, teacher_model=teacher,
                                                             progress=False), first)  # read back from the cache
