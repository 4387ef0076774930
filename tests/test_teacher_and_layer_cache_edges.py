"""Edges of the teacher's outputs and its cached layers that a mutation audit of teachers, teacher_layers and
layer_cache found untested: which model counts as the cached teacher when its record predates the weights hash,
cached logits read without the teacher, a layer pass filling in the [CLS] states beside cached logits, refusals
that are one line, the reservations of the layer cache given back split by split, an empty or fully cached request
that says nothing of disk room, rows of three splits read from the right files, and the teacher's own folder (its
training resumed from, and cleared of, its checkpoint; another teacher's outputs set aside when one is copied, and
its old record removed before the copy is saved).

Everything runs on stand-ins (a few short reviews, a two-layer BERT of width 8), so no teacher is trained here."""
import errno
import json
import types

import numpy as np
import pytest
import torch

from kd_tutorial import teacher_layers, teachers
from kd_tutorial.errors import UserError
from kd_tutorial.layer_cache import LayerStates
from kd_tutorial.profiles import get_profile
from kd_tutorial.store import ArtifactError, StorageError

pytestmark = pytest.mark.usefixtures("one_thread")

LENGTHS = {"train": [5, 3, 7], "validation": [4, 6], "transfer": [2, 5, 3, 4], "spare": [3, 3]}


def _bert(seed: int = 0):
    """A BERT classifier small enough to build and save in milliseconds."""
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=8))


class _Rows:
    """An encoded split as the cache reads it: its reviews' token ids, one list per review."""

    def __init__(self, lengths):
        self.input_ids = [list(range(1, n + 1)) for n in lengths]

    def __len__(self):
        return len(self.input_ids)


class _Prep:
    """What ``artifacts.prepare`` gives the cache functions: a folder, the encoded splits and their file names."""

    def __init__(self, directory):
        self.directory, self.where = directory, {}
        self.encoded = {split: _Rows(n) for split, n in LENGTHS.items() if split != "spare"}
        directory.mkdir(parents=True, exist_ok=True)

    def split_file(self, kind, split):
        return self.directory / f"{kind}-{split}.pt"

    def spare_rows(self):
        self.encoded["spare"] = _Rows(LENGTHS["spare"])
        return len(LENGTHS["spare"])


@pytest.fixture
def prep(tmp_path, monkeypatch):
    """A stand-in for the tiny profile's prepared data in ``tmp_path/folder``; ``teachers.prepare`` returns it."""
    made = _Prep(tmp_path / "folder")
    monkeypatch.setattr(teachers, "prepare", lambda profile, **kw: made)
    return made


FAKE_TEACHER = types.SimpleNamespace(config=types.SimpleNamespace(hidden_size=4, num_hidden_layers=2))


# ----------------------------------------------------------------------------- which model is the cached teacher


@pytest.mark.parametrize("record", ["without the weights hash", "missing"])
def test_a_teacher_whose_record_holds_no_weights_hash_is_still_told_from_another_model(tmp_path, record):
    """A teacher.json written before the hash existed, or gone (the teacher folder alone left): the hash is computed
    from the cached teacher, so another model is refused as before, and the teacher itself is accepted."""
    teacher, other = _bert(0), _bert(1)
    teacher.save_pretrained(tmp_path / "teacher")
    if record != "missing":
        (tmp_path / "teacher.json").write_text(json.dumps({"val_accuracy": 0.8}))
    with pytest.raises(UserError, match="the teacher_model given is not the teacher cached in"):
        teachers.check_given_teacher(tmp_path, other)
    teachers.check_given_teacher(tmp_path, teacher)


def test_any_model_is_the_teacher_of_a_folder_that_holds_none(tmp_path):
    """Nothing recorded, nothing to compare: a folder without teacher.json or teacher is no reason to refuse."""
    assert teachers.check_given_teacher(tmp_path, _bert(1)) is None  # no refusal
    (tmp_path / "teacher.json").write_text("{half a record")  # unreadable and no teacher beside it: none either
    assert teachers.check_given_teacher(tmp_path, _bert(1)) is None


# ----------------------------------------------------------------------------- logits and [CLS] states


def test_cached_logits_are_read_without_loading_or_training_the_teacher(prep, monkeypatch):
    """Logits cached before the teacher folder was deleted (to free space, say) are read as they are: asking for
    the teacher first would fine-tune it again for numbers already on disk."""
    planted = torch.tensor([[0.5, -0.5], [1.0, 2.0]])
    torch.save(planted, prep.split_file("logits", "validation"))
    monkeypatch.setattr(teachers, "ensure_teacher", lambda *a, **k: pytest.fail("the teacher was asked for"))
    assert torch.equal(teachers.ensure_teacher_logits(get_profile("tiny"), "validation", progress=False), planted)


def test_logits_another_process_cached_while_this_one_waited_for_the_lock_are_read_not_computed(prep, monkeypatch):
    """Two notebooks ask for the same logits at once: the one that waited on the folder's lock reads what the other
    wrote, and does not run the teacher over the split again (nor rewrite the file students already read)."""
    import contextlib
    planted = torch.tensor([[0.5, -0.5], [1.0, 2.0]])

    @contextlib.contextmanager
    def the_other_finished_first(folder):
        torch.save(planted, prep.split_file("logits", "validation"))
        yield
    monkeypatch.setattr(teachers, "locked", the_other_finished_first)
    monkeypatch.setattr(teachers, "ensure_teacher", lambda *a, **k: (FAKE_TEACHER, None, None))
    monkeypatch.setattr(teachers, "predict_logits", lambda *a, **k: pytest.fail("the teacher ran again"))
    assert torch.equal(teachers.ensure_teacher_logits(get_profile("tiny"), "validation", progress=False), planted)


def test_a_layer_pass_beside_cached_logits_writes_the_missing_cls_states_and_keeps_the_logits(prep, monkeypatch):
    """The pass that caches layers gives the [CLS] states too: missing, they are written (else another pass would
    compute them), while the logits already cached stay those that students trained on."""
    planted = torch.zeros(2, 2)
    torch.save(planted, prep.split_file("logits", "validation"))
    computed = torch.ones(2, 2), torch.full((2, 3, 4), 0.25)
    monkeypatch.setattr(teachers, "has_room", lambda folder, size: True)
    monkeypatch.setattr(teachers, "_layer_pass", lambda model, encoded, writer, **kw: computed)
    states = teachers.ensure_teacher_layers(get_profile("tiny"), "validation", [("hidden", 1)],
                                            teacher_model=FAKE_TEACHER, progress=False)
    assert len(states) == 2 and states.keys == {("hidden", 1)}
    assert torch.equal(torch.load(prep.split_file("cls", "validation")), computed[1])
    assert torch.equal(torch.load(prep.split_file("logits", "validation")), planted)


# ----------------------------------------------------------------------------- refusals in one line


def test_a_layer_file_the_disk_refuses_for_another_reason_than_room_is_one_line(prep, monkeypatch):
    """A read-only folder or a permission refused when the layer files are made: not a full disk, so the runs do
    not fall back on the teacher, but the refusal is the StorageError line that names the fix, not an OSError."""
    def refused(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(teachers, "has_room", lambda folder, size: True)
    monkeypatch.setattr(teachers, "LayerWriter", refused)
    with pytest.raises(StorageError, match="permission denied") as err:
        teachers.ensure_teacher_layers(get_profile("tiny"), "train", [("values", 2)], teacher_model=FAKE_TEACHER,
                                       progress=False)
    assert "\n" not in str(err.value) and str(prep.directory) in str(err.value)


def test_a_reservation_the_disk_refuses_for_another_reason_than_room_is_one_line(prep, monkeypatch):
    def refused(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(teacher_layers, "missing_layer_bytes", lambda *a, **k: 4096)
    monkeypatch.setattr(teacher_layers, "has_room", lambda folder, size: True)
    monkeypatch.setattr(teacher_layers, "Reservation", refused)
    monkeypatch.setattr(teacher_layers, "ensure_teacher_layers", lambda *a, **k: pytest.fail("a pass ran"))
    with pytest.raises(StorageError, match="permission denied") as err:
        teacher_layers.teacher_layer_cache(get_profile("tiny"), prep, [("values", 2)], teacher_model=FAKE_TEACHER)
    assert "\n" not in str(err.value) and str(prep.directory) in str(err.value)


def test_a_cached_layer_file_that_cannot_be_read_names_the_files_to_delete(prep):
    path = teachers.layer_file(prep, ("hidden", 1), "validation")
    path.write_bytes(b"half a layer file")
    with pytest.raises(ArtifactError, match=rf"cannot read the cached teacher layers in {prep.directory} \(.*\): "
                                            r"delete its .npy files and run again$"):
        teachers.ensure_teacher_layers(get_profile("tiny"), "validation", [("hidden", 1)],
                                       teacher_model=FAKE_TEACHER, progress=False)


def test_logits_on_a_split_that_does_not_exist_name_the_splits(prep):
    """The spare reviews are a split before they are first tokenized too: the list never depends on what ran."""
    for _ in range(2):
        with pytest.raises(ValueError, match=r"^unknown split 'val': choose one of train, validation, transfer, "
                                             r"spare$"):
            teachers.ensure_teacher_logits(get_profile("tiny"), "val", progress=False)
        prep.spare_rows()


def test_the_layer_functions_tokenize_the_spare_reviews_on_first_need(prep):
    """A spare-reviews student asks how much its spare layers take before anything tokenized those reviews: two
    reviews of up to 3 tokens, one layer 4 wide, in bf16."""
    assert "spare" not in prep.encoded
    got = teachers.missing_layer_bytes(get_profile("tiny"), "spare", [("hidden", 1)], teacher_model=FAKE_TEACHER)
    assert got == 2 * 3 * 4 * 2 and len(prep.encoded["spare"]) == 2


@pytest.mark.parametrize("function", ["ensure_teacher_layers", "missing_layer_bytes"])
def test_layers_on_a_split_that_does_not_exist_name_the_splits(prep, function):
    """ensure_teacher_logits answers ``unknown split 'val': choose one of ...``; its public sibling for the layers
    (docs/tuning.md calls it) stopped with ``KeyError: 'val'``."""
    with pytest.raises(ValueError, match="unknown split 'val': choose one of"):
        getattr(teachers, function)(get_profile("tiny"), "val", [("hidden", 1)], teacher_model=FAKE_TEACHER)


# ----------------------------------------------------------------------------- the layer cache over the splits


def _states(split, keys):
    """Cached layers of ``split`` as the pass leaves them (zeros), for a stand-in pass."""
    rows, longest = len(LENGTHS[split]), max(LENGTHS[split])
    arrays = {key: np.zeros((rows, longest, 4), dtype=np.int16) for key in keys}
    return LayerStates([arrays], torch.stack([torch.zeros(rows, dtype=torch.long), torch.arange(rows)], 1), depth=2)


def test_each_splits_reserved_space_is_given_back_just_before_its_own_pass(prep, monkeypatch, capsys):
    """The space of every split is held before the first pass and handed back split by split: a pass that found
    its own split's space still held would judge the disk full. The spare reviews get their keys only."""
    held_at = {}

    def layer_pass(profile, split, keys, **kw):
        held_at[split] = sorted(p.name.split(".")[1] for p in prep.directory.glob(".layers-*.reserved*"))
        return _states(split, keys)
    monkeypatch.setattr(teacher_layers, "missing_layer_bytes", lambda *a, **k: 4096)
    monkeypatch.setattr(teacher_layers, "has_room", lambda folder, size: True)
    monkeypatch.setattr(teacher_layers, "ensure_teacher_layers", layer_pass)
    keys = [("hidden", 2), ("values", 2)]
    states = teacher_layers.teacher_layer_cache(get_profile("tiny"), prep, keys, [("values", 2)],
                                                teacher_model=FAKE_TEACHER)
    assert held_at == {"train": ["layers-spare", "layers-transfer"], "transfer": ["layers-spare"], "spare": []}
    assert states["spare"].keys == {("values", 2)} and states["train"].keys == states["transfer"].keys == set(keys)
    assert not list(prep.directory.glob(".layers-*"))  # nothing held once the passes are done
    assert "hidden 2, values 2 read from a bf16 cache; values 2 on the spare reviews too" in capsys.readouterr().out


def test_no_layers_asked_for_is_none_without_a_word(prep, monkeypatch, capsys):
    """`distill` asks for the layers of the runs still to train: none (no intermediate recipe, every run finished)
    builds nothing and says nothing, least of all that the disk refused the space."""
    monkeypatch.setattr(teacher_layers, "missing_layer_bytes", lambda *a, **k: 0)
    monkeypatch.setattr(teacher_layers, "ensure_teacher_layers", lambda *a, **k: pytest.fail("a pass ran"))
    assert teacher_layers.teacher_layer_cache(get_profile("tiny"), prep, [], teacher_model=FAKE_TEACHER) is None
    assert capsys.readouterr().out == ""


def test_layers_all_cached_already_are_read_on_a_full_disk_without_a_word_of_room(prep, monkeypatch, capsys):
    """Nothing to write: a full disk costs nothing, so no line says the layers do not fit or the runs go slower."""
    keys = [("values", 2)]
    monkeypatch.setattr(teacher_layers, "missing_layer_bytes", lambda *a, **k: 0)
    monkeypatch.setattr(teacher_layers, "has_room", lambda folder, size: False)
    monkeypatch.setattr(teacher_layers, "ensure_teacher_layers",
                        lambda profile, split, keys, **kw: _states(split, keys))
    states = teacher_layers.teacher_layer_cache(get_profile("tiny"), prep, keys, teacher_model=FAKE_TEACHER)
    assert states["train"].keys == states["transfer"].keys == set(keys)
    out = capsys.readouterr().out
    assert "do not fit" not in out and "call the teacher" not in out and "values 2 read from a bf16 cache" in out


def test_rows_joined_from_three_splits_are_read_from_their_own_files(tmp_path):
    """A spare-reviews student's rows: some train rows, then transfer, then spare. Each split's rows must point at
    its own file (the third's not at the second's), whatever its number of rows."""
    parts = []
    for value, n in ((1.0, 2), (2.0, 4), (3.0, 3)):  # each split's file holds its own value everywhere
        path = tmp_path / f"hidden-1-{value}.npy"
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.int16, shape=(n, 3, 4))
        array[:] = torch.full((n, 3, 4), value, dtype=torch.bfloat16).view(torch.int16).numpy()
        array.flush()
        del array
        parts.append(LayerStates.open({("hidden", 1): path}, depth=2))
    rows = parts[0].subset([1]).concat(parts[1]).concat(parts[2])
    read = rows.read(torch.arange(8), 3, [("hidden", 1)])[("hidden", 1)].float()
    assert read[:, 0, 0].tolist() == [1.0] + [2.0] * 4 + [3.0] * 3


# ----------------------------------------------------------------------------- the teacher's own folder


def _tiny_folder(tmp_path, monkeypatch):
    """The tiny profile's prepared data in a private artifact cache."""
    from kd_tutorial.artifacts import prepare
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path))
    profile = get_profile("tiny")
    return profile, prepare(profile)


def test_the_teacher_resumes_its_checkpoint_clears_it_once_saved_and_comes_back_frozen(tmp_path, monkeypatch):
    """An interrupted fine-tuning goes on from the folder's teacher-checkpoint; once the teacher is saved the
    checkpoint (an optimizer state, three times the weights) is removed; the cached teacher comes back in eval()
    mode with no gradients, as the one just trained does."""
    from kd_tutorial.history import History
    profile, prep = _tiny_folder(tmp_path, monkeypatch)
    folder, asked = prep.directory, []

    def train(model, data, *, checkpoint_dir, resume, **kw):
        asked.append((checkpoint_dir, resume))
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        (checkpoint_dir / "last.pt").write_bytes(b"an optimizer state")
        return History()
    monkeypatch.setattr(teachers, "train", train)
    _, _, info = teachers.ensure_teacher(profile, device="cpu", progress=False)
    assert info["status"] == "trained" and asked == [(folder / "teacher-checkpoint", True)]
    assert not (folder / "teacher-checkpoint").exists()
    model, _, info = teachers.ensure_teacher(profile, device="cpu", progress=False)
    assert info["status"] == "cached" and not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_a_teacher_copied_from_a_sibling_folder_sets_aside_what_another_teacher_left_here(tmp_path, monkeypatch,
                                                                                         capsys):
    """The folder held the logits of a teacher with other weights (its weights folder deleted); the same teacher is
    found fine-tuned next door and copied in: those logits are set aside as a retrained teacher's would be."""
    profile, prep = _tiny_folder(tmp_path, monkeypatch)
    folder, sibling, model = prep.directory, prep.directory.parent / "sibling", _bert(0)
    model.save_pretrained(sibling / "teacher")
    (sibling / "teacher.json").write_text(json.dumps({"trained_on": prep.teacher_inputs, "val_accuracy": 0.9,
                                                      "weights": teachers.weights_hash(model)}))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "teacher.json").write_text(json.dumps({"weights": "0" * 16}))  # another teacher, its folder gone
    torch.save(torch.zeros(3, 2), folder / "logits-train.pt")
    monkeypatch.setattr(teachers, "train", lambda *a, **k: pytest.fail("trained again"))
    _, _, info = teachers.ensure_teacher(profile, device="cpu", progress=False)
    assert info["copied_from"] == str(sibling) and not (folder / "logits-train.pt").exists()
    [aside] = folder.glob("stale-*")
    assert [p.name for p in aside.iterdir()] == ["logits-train.pt"]
    assert f"moved to {aside}" in capsys.readouterr().err


def test_a_copy_of_a_siblings_teacher_cut_short_is_not_taken_for_cached_with_the_old_record(tmp_path, monkeypatch):
    """As for a teacher trained here: the old record goes before the copied weights are saved, so a copy stopped
    between the two never leaves them beside another teacher's record (its weights hash, accuracy, history)."""
    profile, prep = _tiny_folder(tmp_path, monkeypatch)
    folder, sibling, model = prep.directory, prep.directory.parent / "sibling", _bert(0)
    model.save_pretrained(sibling / "teacher")
    (sibling / "teacher.json").write_text(json.dumps({"trained_on": prep.teacher_inputs,
                                                      "weights": teachers.weights_hash(model)}))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "teacher.json").write_text(json.dumps({"weights": "0" * 16, "val_accuracy": 0.5}))

    def cut_short(model, directory):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text("{}")  # the weights reached the disk, then the process stopped
        raise KeyboardInterrupt
    monkeypatch.setattr(teachers, "atomic_save_pretrained", cut_short)
    with pytest.raises(KeyboardInterrupt):
        teachers.ensure_teacher(profile, device="cpu", progress=False)
    assert not (folder / "teacher.json").exists() and teachers._cached_teacher(folder) is None


# ----------------------------------------------------------------------------- the writer's reserved space


def _allocated_with_posix_fallocate(folder) -> bool:
    """Whether this file system allocates blocks with posix_fallocate (not every one does; Windows has none)."""
    import os
    if not hasattr(os, "posix_fallocate"):
        return False
    probe = folder / "probe"
    with open(probe, "wb") as f:
        f.truncate(1 << 16)
    try:
        with open(probe, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, 1 << 16)
        return getattr(os.stat(probe), "st_blocks", 0) * 512 >= 1 << 16
    except OSError:
        return False
    finally:
        probe.unlink()


def test_the_writer_holds_every_files_blocks_before_the_pass_writes_into_them(tmp_path):
    """A memory map gets its blocks on first write, where a full disk kills the process (SIGBUS) instead of raising:
    the writer allocates each whole file up front, so a full disk is an OSError before any pass."""
    import os
    from kd_tutorial.layer_cache import LayerWriter
    if not _allocated_with_posix_fallocate(tmp_path):
        pytest.skip("this file system does not allocate blocks with posix_fallocate")
    writer = LayerWriter({("hidden", 1): tmp_path / "h1.npy", ("hidden", 2): tmp_path / "h2.npy"},
                         rows=8, length=64, width=32)
    for partial in writer.partial.values():
        assert os.stat(partial).st_blocks * 512 >= 8 * 64 * 32 * 2  # the whole array, in bf16
    writer.discard()


def test_a_writer_refused_the_space_of_its_second_file_leaves_no_file_behind(tmp_path, monkeypatch):
    """The first file's space was granted, the second's refused: the error is raised and nothing is left in the
    cache folder (the first partial file would otherwise hold its space until a later clean-up)."""
    from kd_tutorial import layer_cache
    granted = []

    def refuse_the_second(path):
        if granted:
            raise OSError(errno.ENOSPC, "No space left on device")
        granted.append(path)
    monkeypatch.setattr(layer_cache, "_reserve", refuse_the_second)
    with pytest.raises(OSError, match="No space left"):
        layer_cache.LayerWriter({("hidden", 1): tmp_path / "h1.npy", ("hidden", 2): tmp_path / "h2.npy"},
                                rows=2, length=3, width=4)
    assert granted and list(tmp_path.iterdir()) == []
