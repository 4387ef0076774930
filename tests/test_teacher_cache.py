"""A teacher retrained in a folder that still holds what its predecessor computed (logits, [CLS] states, layers,
students): kept when the new teacher has the very same weights, set aside (never deleted) when it has not."""
import json
import shutil

import torch

from kd_tutorial import teachers


def test_a_retrained_teacher_keeps_an_identical_ones_outputs_and_sets_aside_anothers(cut_tiny, capsys):
    with cut_tiny(n_transfer=100) as (profile, teacher, prep, logits):
        folder = prep.directory
        recorded = json.loads((folder / "teacher.json").read_text())["weights"]
        assert recorded == teachers.weights_hash(teacher)
        (folder / "students" / "some-run").mkdir(parents=True)
        outputs = sorted(p.name for p in teachers.teacher_outputs(folder))
        assert {"logits-train.pt", "logits-transfer.pt", "cls-train.pt", "students"} <= set(outputs)

        shutil.rmtree(folder / "teacher")  # as the advice for a corrupt teacher says: teacher.json stays
        _, _, info = teachers.ensure_teacher(profile, progress=False)
        assert info["status"] == "trained" and info["weights"] == recorded  # same seed, same threads
        assert sorted(p.name for p in teachers.teacher_outputs(folder)) == outputs
        assert not list(folder.glob("stale-*"))

        # the same, where the outputs came from a teacher with other weights (another thread count, say)
        meta = json.loads((folder / "teacher.json").read_text())
        (folder / "teacher.json").write_text(json.dumps(meta | {"weights": "0" * 16}))
        shutil.rmtree(folder / "teacher")
        capsys.readouterr()
        teachers.ensure_teacher(profile, progress=False)
        assert teachers.teacher_outputs(folder) == []
        [aside] = folder.glob("stale-*")
        assert sorted(p.name for p in aside.iterdir()) == outputs  # moved whole, nothing deleted
        assert torch.equal(torch.load(aside / "logits-train.pt"), logits["train"])
        assert f"moved to {aside}" in capsys.readouterr().err
        again = teachers.ensure_teacher_logits(profile, "train", progress=False)  # computed from the new teacher
        assert (folder / "logits-train.pt").exists() and again.shape == logits["train"].shape


def test_outputs_of_a_teacher_that_predates_the_weights_record_are_set_aside(tmp_path, capsys):
    (tmp_path / "teacher.json").write_text(json.dumps({"val_accuracy": 0.8}))  # written before the hash existed
    (tmp_path / "logits-train.pt").write_bytes(b"x")
    (tmp_path / "hidden-2-train.npy").write_bytes(b"x")
    assert teachers._recorded_weights(tmp_path) is None  # so whatever the new teacher is, it differs
    aside = teachers.set_aside_outputs(tmp_path)
    assert sorted(p.name for p in aside.iterdir()) == ["hidden-2-train.npy", "logits-train.pt"]
    assert (tmp_path / "teacher.json").exists() and teachers.set_aside_outputs(tmp_path) is None
    assert "moved to" in capsys.readouterr().err
