"""Audit (mutation testing) of the artifact cache keys, the FLOP counts, the built-in corpus and the feature capture:
each test fails on a plausible careless edit that the rest of the suite let through (the three student-folder
tests: that only the tests built on the whole tiny pipeline, a minute and more, caught)."""
import dataclasses
import os
import random
import re

import pytest
import torch

from kd_tutorial import corpus, features, flops
from kd_tutorial.profiles import get_profile

ONE_LAYER = dict(num_hidden_layers=1, hidden_size=4, num_attention_heads=2, intermediate_size=8, num_labels=2)
SAME_LENGTHS = [64] * 8  # every review 64 tokens: a review's FLOPs are forward_flops(config, [64])


def _per_review(config) -> float:
    return flops.forward_flops(config, [64])


# --------------------------------------------------------------------------- flops


def test_non_embedding_params_matches_a_hand_count_for_one_layer():
    # H = 4, I = 8, C = 2: Q, K, V, output (4 H^2 = 64), FFN (2 H I = 64), pooler (H^2 = 16), classifier (H C = 8)
    assert flops.non_embedding_params(ONE_LAYER) == 64 + 64 + 16 + 8


def test_a_config_without_intermediate_size_counts_four_times_the_width_as_the_compact_student_is_built():
    from kd_tutorial import models
    sizes = dict(num_hidden_layers=1, hidden_size=32, num_attention_heads=2)
    built = models.compact_student(1, 32, 2, vocab_size_=100).config.intermediate_size
    assert flops.config_dict(sizes)["intermediate_size"] == built == 128


def test_halving_the_batch_and_doubling_grad_accum_keeps_every_runs_flops():
    """The step budgets count optimizer steps of the effective batch: a run of half the micro-batch and twice the
    accumulation trains on as many reviews, so it costs as much."""
    tiny = get_profile("tiny")
    one, accumulated = (flops.estimate_profile(p, lengths=SAME_LENGTHS)
                        for p in (tiny, tiny.replace(batch_size=tiny.batch_size // 2, grad_accum=2)))
    run = "distil-2L baseline"
    assert accumulated["phases"][run]["reviews"] == one["phases"][run]["reviews"]
    assert accumulated["total_flops"] == pytest.approx(one["total_flops"])


def test_the_teacher_is_validated_once_per_begun_epoch():
    tiny = get_profile("tiny").replace(teacher_epochs=2.5)
    est = flops.estimate_profile(tiny, lengths=SAME_LENGTHS)
    per = _per_review(flops.teacher_config(tiny))
    parts = est["phases"]["teacher"]["parts"]
    assert parts["infer:teacher"] == pytest.approx(3 * est["rows"]["validation"] * per)
    assert parts["train:teacher"] == pytest.approx(3 * 2.5 * est["rows"]["train"] * per)


def _one_student(profile, **changes):
    return profile.replace(students=(dataclasses.replace(profile.students[0], **changes),))


def test_the_teachers_logits_pass_covers_the_spare_reviews_a_student_learns_from():
    tiny = _one_student(get_profile("tiny").replace(n_train=500), spare_reviews=True)
    est = flops.estimate_profile(tiny, lengths=SAME_LENGTHS, recipes=("kd+transfer",))
    rows, per = est["rows"], _per_review(flops.teacher_config(tiny))
    assert rows["spare"] > 0
    passes = sum(est["phases"][p]["flops"] for p in ("teacher_layers", "teacher_logits") if p in est["phases"])
    assert passes == pytest.approx((rows["train"] + rows["transfer"] + rows["spare"]) * per)


def test_an_augmenting_recipe_adds_one_teacher_pass_over_the_transfer_set():
    tiny = get_profile("tiny")
    plain, augmented = (flops.estimate_profile(tiny, lengths=SAME_LENGTHS, recipes=(r,))
                        for r in ("kd+transfer", "kd+transfer+aug"))
    extra = augmented["phases"]["teacher_logits"]["flops"] - plain["phases"]["teacher_logits"]["flops"]
    assert extra == pytest.approx(plain["rows"]["transfer"] * _per_review(flops.teacher_config(tiny)))


def test_every_seeds_student_is_evaluated_on_the_test_split():
    tiny = get_profile("tiny")
    est = flops.estimate_profile(tiny, lengths=SAME_LENGTHS, n_seeds=3, recipes=("baseline",))
    spec = tiny.students[0]
    per = _per_review(flops.student_config(spec, flops.teacher_config(tiny)))
    assert est["phases"]["evaluation"]["parts"][f"infer:{spec.name}"] == pytest.approx(3 * est["rows"]["test"] * per)


# --------------------------------------------------------------------------- corpus

ADJ_POLARITY = {w: q for q, (mild, strong) in corpus.ADJ.items() for w in mild + strong}
NEGATED = re.compile(r"\b(not|never|hardly|far from|by no means|in no way|wasn't|weren't)\b")


def _sentences(text):
    return re.split(r"(?<=\.) ", text)


def _clause_polarity(clause):
    """The polarity a clause states: its adjective's, turned over by a negation."""
    adjectives = [ADJ_POLARITY[w] for w in re.findall(r"[a-z']+", clause) if w in ADJ_POLARITY]
    assert len(adjectives) == 1, clause
    return 1 - adjectives[0] if NEGATED.search(clause) else adjectives[0]


def _contrasted(sentence):
    """The deciding clause of a contrasted sentence ("X, but Y", "Although X, Y", "X; however, Y"), else None."""
    m = re.fullmatch(r"(?:Although .+?, |.+?, but |.+?; however, )(.+)\.", sentence)
    return m.group(1) if m else None


def _reviews(n=1500, **kwargs):
    r = random.Random(0)
    return [corpus.make_review(r, i % 2, **kwargs) for i in range(n)]


def test_the_clause_after_the_contrast_decides_the_label():
    decided = [(_contrasted(s), row["label"]) for row in _reviews(p_contrast=1.0) for s in _sentences(row["text"])]
    decided = [(clause, label) for clause, label in decided if clause]
    assert len(decided) > 1000
    assert all(_clause_polarity(clause) == label for clause, label in decided)


def test_a_verdict_negated_or_not_states_the_label():
    def polarity(sentence):
        q = next(q for q, phrases in corpus.VERDICT.items() if any(sentence.endswith(p + ".") for p in phrases))
        negated = any(f" {n} " in sentence for level in corpus.VERDICT_NEG for n in level)
        return 1 - q if negated else q
    verdicts = [(s, row["label"]) for row in _reviews() for s in _sentences(row["text"])
                if s.startswith(tuple(corpus.VERDICT_OPEN))]
    assert len(verdicts) > 300 and all(polarity(s) == label for s, label in verdicts)


def test_a_style_that_never_negates_writes_no_negation():
    rows = _reviews(300, styles={"plain": (1.0, 0.0)})
    assert not any(NEGATED.search(row["text"]) for row in rows)


def test_given_stars_are_kept():
    r = random.Random(0)
    assert [corpus.make_review(r, 1, stars)["stars"] for stars in (7, 8, 9, 10)] == [7, 8, 9, 10]
    assert [corpus.make_review(r, 0, stars)["stars"] for stars in (4, 3, 2, 1)] == [4, 3, 2, 1]


def test_mild_reviews_are_more_often_mixed_than_extreme_ones():
    def mixed(stars):
        r = random.Random(0)
        rows = [corpus.make_review(r, int(stars > 5), stars) for _ in range(600)]
        return sum(any(_contrasted(s) for s in _sentences(row["text"])) for row in rows)
    assert mixed(4) > 1.5 * mixed(1) and mixed(7) > 1.5 * mixed(10)


def test_texts_stay_unique_across_splits_when_the_generator_repeats_itself(monkeypatch):
    """The built-in generator rarely repeats a review, so the duplicate filter went untested: a generator that
    gives every text twice, once in train and once more in the next split, must still leave every text once."""
    count = iter(range(10**6))
    monkeypatch.setattr(corpus, "make_review",
                        lambda r, label, **kw: {"text": f"review {next(count) // 3}", "label": label, "stars": 1})
    out = corpus.generate_corpus(n_train=10, n_unsupervised=10, n_test=10)
    texts = [row["text"] for split in out.values() for row in split]
    assert len(texts) == 30 and len(set(texts)) == 30


def test_a_splits_labels_are_shuffled_not_alternating():
    labels = [row["label"] for row in corpus.generate_corpus(n_train=200, n_unsupervised=0, n_test=0)["train"]]
    assert sum(labels) == 100 and labels != [i % 2 for i in range(200)]
    assert any(a == b for a, b in zip(labels, labels[1:]))


# --------------------------------------------------------------------------- features


def _tiny_bert(layers=2):
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    return BertForSequenceClassification(config).eval()


def test_recorded_values_are_each_layers_value_projection_of_its_input():
    model = _tiny_bert()
    ids = torch.randint(5, 100, (2, 7))
    with torch.no_grad():
        out = features.forward_features(model, ids, torch.ones_like(ids), hidden=True, values=True)
        for i, layer in enumerate(model.bert.encoder.layer):
            assert torch.allclose(out.values[i], layer.attention.self.value(out.hidden[i]), atol=1e-6), i


def test_recording_values_leaves_no_hook_behind():
    """A hook left on the value projections keeps writing later forwards' tensors into an earlier call's list."""
    model = _tiny_bert()
    ids = torch.randint(5, 100, (2, 7))
    with torch.no_grad():
        first = features.forward_features(model, ids, torch.ones_like(ids), values=True).values
        kept = list(first)
        model(input_ids=torch.randint(5, 100, (2, 7)))
    assert all(a is b for a, b in zip(first, kept))
    assert not any(layer.attention.self.value._forward_hooks for layer in model.bert.encoder.layer)


# --------------------------------------------------------------------------- artifacts


def _refill(path, content: bytes, ns: int):
    """Write ``content`` over ``path`` and give it the modification time ``ns`` (a checkpoint saved again)."""
    path.write_bytes(content)
    os.utime(path, ns=(ns, ns))


def _fake_teacher(folder, weights=b"weights one"):
    folder.mkdir(parents=True, exist_ok=True)
    _refill(folder / "model.safetensors", weights, 1_000_000_000_000_000_000)
    _refill(folder / "config.json", b"{}", 1_000_000_000_000_000_000)
    return folder


@pytest.fixture
def tiny_tokenizer_for_any_teacher(tmp_path, monkeypatch):
    """A private artifact cache, and the built-in tokenizer for a teacher folder (no weights are loaded)."""
    from kd_tutorial import artifacts, data
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KD_TUTORIAL_DATA_DIR", raising=False)
    monkeypatch.setattr(artifacts, "teacher_tokenizer", lambda profile, name: data.get_tokenizer(None))
    return artifacts


def test_a_checkpoint_of_the_same_size_saved_again_into_a_teacher_folder_is_another_teacher(tmp_path):
    """Another fine-tuning of the same architecture saved into the folder has files of the same names and sizes:
    only their times tell it apart, and it must not be taken for the teacher that was there."""
    from kd_tutorial import artifacts
    folder = _fake_teacher(tmp_path / "teacher")
    before = artifacts.teacher_key(str(folder))
    _refill(folder / "model.safetensors", b"weights two", 2_000_000_000_000_000_000)
    assert artifacts.teacher_key(str(folder)) != before
    assert artifacts.teacher_key(str(folder)) == artifacts.teacher_key(str(folder))  # nothing changed: the same key


def test_a_teacher_folder_refilled_in_the_same_process_gets_another_artifact_folder(tiny_tokenizer_for_any_teacher,
                                                                                     tmp_path):
    artifacts = tiny_tokenizer_for_any_teacher
    tiny = get_profile("tiny")
    folder = _fake_teacher(tmp_path / "teacher")
    before = artifacts.prepare(tiny, teacher=str(folder))
    assert artifacts.prepare(tiny, teacher=str(folder)).directory == before.directory
    _refill(folder / "model.safetensors", b"weights two", 2_000_000_000_000_000_000)
    assert artifacts.prepare(tiny, teacher=str(folder)).directory != before.directory


def test_a_teacher_folder_typed_relative_is_found_again_from_another_working_directory(
        tiny_tokenizer_for_any_teacher, tmp_path, monkeypatch):
    """prep.where names the teacher as prepare resolved it: a relative ./teacher passed on from elsewhere (a worker
    or a later cell in another directory) must lead to the same folder, not to whatever ./teacher is there."""
    artifacts = tiny_tokenizer_for_any_teacher
    tiny = get_profile("tiny")
    _fake_teacher(tmp_path / "a" / "teacher")
    _fake_teacher(tmp_path / "b" / "teacher", weights=b"another teacher")
    monkeypatch.chdir(tmp_path / "a")
    prep = artifacts.prepare(tiny, teacher="./teacher")
    monkeypatch.chdir(tmp_path / "b")
    assert artifacts.prepare(tiny, **prep.where).directory == prep.directory


def _stamp_changes(root, name, is_dir=False):
    """Whether :func:`_folder_stamp` of ``root`` sees ``name`` (under ``root``) replaced by other content."""
    from kd_tutorial import artifacts
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        path.mkdir()
        os.utime(path, ns=(10**18, 10**18))
    else:
        _refill(path, b"1234", 10**18)
    before = artifacts._folder_stamp(str(root))
    if is_dir:
        (path / "1_10.txt").write_text("a review")
        os.utime(path, ns=(2 * 10**18, 2 * 10**18))
    else:
        _refill(path, b"5678", 2 * 10**18)  # the same size: only the time tells
    return artifacts._folder_stamp(str(root)) != before


@pytest.mark.parametrize("name", ["train.parquet", "train.csv", "unsupervised.csv", "test.csv"])
def test_a_data_file_replaced_by_one_of_the_same_size_is_read_again(tmp_path, name):
    assert _stamp_changes(tmp_path, name)


@pytest.mark.parametrize("name", ["train/pos", "test/neg", "train/unsup"])
def test_a_review_added_to_an_aclimdb_copy_is_read_again(tmp_path, name):
    assert _stamp_changes(tmp_path, f"aclImdb/{name}", is_dir=True)


def test_the_spare_splits_files_carry_a_hash_of_its_reviews_where_the_folder_does_not():
    """The folder's key leaves the spare train reviews out, as it does the test set: the teacher's logits on other
    spare reviews must not be read for these."""
    from kd_tutorial import artifacts
    from kd_tutorial.data import Encoded

    def prepared(spare_token):
        encoded = {name: Encoded([[101, token, 102]], torch.tensor([0]), name)
                   for name, token in (("train", 1000), ("validation", 1001), ("transfer", 1002), ("test", 1003),
                                       ("spare", spare_token))}
        return artifacts.Prepared(get_profile("tiny"), None, None, encoded, "tiny", "tiny-bert", "pretrained", 0)
    old, new = prepared(2000), prepared(2001)
    assert old.directory == new.directory
    assert old.split_file("logits", "spare") != new.split_file("logits", "spare")


def test_what_the_teacher_is_fine_tuned_on_changes_with_its_train_and_validation_reviews_not_the_transfer_set():
    """A sibling folder's teacher is copied where ``teacher_inputs`` match: one validated on other reviews (which
    its recorded accuracy and kept epoch come from) is another teacher."""
    from kd_tutorial import artifacts
    from kd_tutorial.data import Encoded

    def inputs(**tokens):
        encoded = {name: Encoded([[101, tokens.get(name, 1000 + i), 102]], torch.tensor([0]), name)
                   for i, name in enumerate(("train", "validation", "transfer", "test"))}
        return artifacts.Prepared(get_profile("tiny"), None, None, encoded, "tiny", "tiny-bert", "pretrained",
                                  0).teacher_inputs
    assert inputs(validation=2000) != inputs() != inputs(train=2000)
    assert inputs(transfer=2000) == inputs() == inputs(test=2000)


def test_the_teacher_folder_changes_with_the_validation_reviews():
    """The teacher's kept epoch and recorded accuracy come from its validation reviews: other ones, another folder."""
    from kd_tutorial import artifacts
    from kd_tutorial.data import Encoded

    def folder(validation_token):
        encoded = {name: Encoded([[101, token, 102]], torch.tensor([0]), name)
                   for name, token in (("train", 1000), ("validation", validation_token), ("transfer", 1002),
                                       ("test", 1003))}
        return artifacts.Prepared(get_profile("tiny"), None, None, encoded, "tiny", "tiny-bert", "pretrained",
                                  0).directory
    assert folder(2000) != folder(2001)


def test_a_data_dir_named_after_another_source_is_a_folder_not_the_profiles_source(tmp_path, monkeypatch):
    """Only the profile's own source's name, passed back by prep.where, stands for that source: another source's
    name given as the data folder is a folder of that name, never quietly the profile's reviews."""
    from kd_tutorial import artifacts
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KD_TUTORIAL_DATA_DIR", raising=False)
    tiny = get_profile("tiny")
    assert artifacts.data_key(tiny, "tiny") == "tiny"
    assert artifacts.data_key(tiny, "hub") == str((tmp_path / "hub").resolve())


def _prepared():
    from kd_tutorial import artifacts
    from kd_tutorial.data import Encoded
    encoded = {name: Encoded([[101, 1000 + i, 102]], torch.tensor([0]), name)
               for i, name in enumerate(("train", "validation", "transfer", "test"))}
    return artifacts.Prepared(get_profile("tiny"), None, None, encoded, "tiny", "tiny-bert", "pretrained", 0)


def test_a_students_folder_changes_with_each_part_of_its_key():
    from kd_tutorial import artifacts
    prep = _prepared()
    keys = (("spec", "config", 0), ("other", "config", 0), ("spec", "other", 0), ("spec", "config", 1))
    folders = {artifacts.student_folder(prep, "distil-2L kd s0", *parts) for parts in keys}
    assert len(folders) == 4
    assert artifacts.student_folder(prep, "distil-2L kd s0", "spec", "config", 0) in folders  # the same run: found


def test_a_finished_run_beside_a_checkpoint_is_not_interrupted(tmp_path):
    from kd_tutorial import artifacts
    (tmp_path / "last.pt").write_bytes(b"checkpoint")
    assert artifacts.student_interrupted(tmp_path) and not artifacts.student_finished(tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "history.json").write_text("{}")
    assert artifacts.student_finished(tmp_path) and not artifacts.student_interrupted(tmp_path)


def test_a_students_test_logits_are_named_by_the_training_they_belong_to(tmp_path):
    from kd_tutorial import artifacts
    prep = _prepared()
    first, second = (artifacts.student_test_logits_file(prep, tmp_path, run)
                     for run in ("0123456789ab", "ba9876543210"))
    assert first != second and first.parent == second.parent == tmp_path
    assert first.name.startswith(prep.split_file("logits", "test").stem)


@pytest.mark.parametrize("cut", [1, 8])
def test_a_safetensors_file_missing_its_last_bytes_is_not_whole(tmp_path, cut):
    """The header's 8-byte length counts: a file short by as many bytes as that is cut, not whole."""
    from safetensors.torch import save_file
    from kd_tutorial import artifacts
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(4, 4)}, str(path))
    assert artifacts._whole_safetensors(path)
    path.write_bytes(path.read_bytes()[:-cut])
    assert not artifacts._whole_safetensors(path)
