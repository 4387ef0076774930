"""kd_tutorial.data: behaviours a careless edit could break without the rest of the suite noticing (found by
mutation testing). Small hand-made data, offline and fast."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from kd_tutorial import data
from kd_tutorial.data import DataSourceError, Encoded, Reviews, load_imdb, make_batches


def write_hub_folder(folder, n_train=60, n_test=0, stars=False):
    """A folder in the Hub's schema (columns text and label) whose every text says its label: "pos ..." is 1."""
    for split, n in (("train", n_train), ("test", n_test)):
        if n:
            labels = [i % 3 % 2 for i in range(n)]  # imbalanced, so that flipped labels change the counts too
            rows = {"text": [f"{'pos' if y else 'neg'} {split} review {i}" for i, y in enumerate(labels)],
                    "label": labels}
            if stars:
                rows["stars"] = [8 + i % 3 if y else 1 + i % 4 for i, y in enumerate(labels)]
            pq.write_table(pa.table(rows), folder / f"{split}.parquet")
    return folder


def _reviews(texts, name, labelled=True):
    return Reviews(list(texts), [i % 2 if labelled else -1 for i in range(len(texts))], None, name)


# ----------------------------------------------------------------------------- reading a source

def test_a_parquet_folders_labels_and_stars_are_read_as_written(tmp_path):
    d = load_imdb(str(write_hub_folder(tmp_path, n_train=60, n_test=30, stars=True)), val_size=6)
    for split in (d.train, d.validation, d.test):
        assert split.labels == [int(t.startswith("pos")) for t in split.texts]
    assert d.train.stars == [8 + int(t.split()[-1]) % 3 if t.startswith("pos") else 1 + int(t.split()[-1]) % 4
                             for t in d.train.texts]


def test_blank_lines_in_a_csv_are_not_rows(tmp_path):
    rows = "".join(f"{'pos' if i % 2 else 'neg'} review {i},{i % 2}\n" + "\n" * (i % 5 == 0) for i in range(30))
    (tmp_path / "train.csv").write_text(f"text,label\n\n{rows}\n\n")
    d = load_imdb(str(tmp_path), val_size=4)
    assert sum(d.sizes().values()) == 30
    assert d.validation.labels == [int(t.startswith("pos")) for t in d.validation.texts]


def test_a_test_parquet_that_is_not_parquet_is_named_and_told_to_give_a_test_csv(tmp_path):
    write_hub_folder(tmp_path)
    (tmp_path / "test.parquet").write_text("text,label\nnot really parquet,1\n")
    with pytest.raises(DataSourceError) as caught:
        load_imdb(str(tmp_path), val_size=6)
    line = str(caught.value)
    assert line.startswith(f"{tmp_path / 'test.parquet'} is not a readable parquet file (")
    assert line.endswith("or give a test.csv instead")


def test_an_aclimdb_review_that_is_not_utf8_is_named_by_its_file(tmp_path):
    folder = tmp_path / "aclImdb" / "train" / "pos"
    folder.mkdir(parents=True)
    (folder / "0_8.txt").write_text("fine")
    (folder / "1_9.txt").write_bytes("tr\u00e8s bien".encode("latin-1"))
    with pytest.raises(DataSourceError) as caught:
        load_imdb(str(tmp_path), val_size=2)
    assert str(caught.value).startswith(f"{folder / '1_9.txt'} is not UTF-8 text (")
    assert str(caught.value).endswith("save the reviews as UTF-8")


def test_the_hubs_labels_are_read_as_given(monkeypatch):
    import datasets
    splits = {"train": {"text": ["good", "bad", "great"], "label": [1, 0, 1]},
              "test": {"text": ["dull"], "label": [0]}, "unsupervised": {"text": ["meh"], "label": [-1]}}
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: splits)
    raw = data._hub_raw()
    assert {name: (r.texts, r.labels) for name, r in raw.items()} == {
        "train": (["good", "bad", "great"], [1, 0, 1]), "test": (["dull"], [0]), "unsupervised": (["meh"], [-1])}


def test_the_newest_prepared_copy_of_the_hubs_imdb_is_the_one_read(tmp_path, monkeypatch):
    import os

    import datasets
    from test_data import _prepared_imdb
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    old = _prepared_imdb(tmp_path, {"train": (["old"], [0]), "test": (["old test"], [1])},
                         folder="plain_text/0.0.0/" + "a" * 40)
    new = _prepared_imdb(tmp_path, {"train": (["new"], [1]), "test": (["new test"], [0])},
                         folder="plain_text/0.0.0/" + "b" * 40)
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(new, (2_000_000, 2_000_000))
    assert data.prepared_hub_copy() == new
    assert data._read_prepared(new)["train"].texts == ["new"]


# ----------------------------------------------------------------------------- splits

def test_a_test_split_with_labels_other_than_0_and_1_is_refused():
    raw = {"train": _reviews([f"r{i}" for i in range(40)], "train"),
           "test": Reviews(["t0", "t1", "t2"], [0, 1, 2], None, "test")}
    with pytest.raises(DataSourceError, match=r"mem: the test split has labels \[2\]; labels must be 0 \(negative\)"):
        data.split_raw(raw, "mem", val_size=6)


def test_load_for_profile_passes_the_profiles_n_test():
    from kd_tutorial.profiles import get_profile
    d = data.load_for_profile(get_profile("tiny").replace(n_test=100))
    assert d.sizes()["test"] == 100 and sum(d.test.labels) == 50


def test_split_raw_without_unlabelled_reviews_draws_train_and_transfer_with_the_seeds_generators():
    """Pinned, as test_data's carve through split_raw with an unlabelled split: without one the transfer set is
    carved from train; drawn with a fixed generator (not the seed's), or train so, the carve is as random (validation
    already shuffled what is left) but another one, and orphans every cached teacher and student."""
    raw = {"train": _reviews([f"r{i}" for i in range(40)], "train"), "test": _reviews(["t0", "t1"], "test")}
    d = data.split_raw(raw, "mem", n_train=8, n_transfer=8, val_size=6, seed=1)
    assert d.train.texts == ["r7", "r27", "r4", "r23", "r2", "r36", "r24", "r9"]
    assert d.transfer.texts == ["r31", "r18", "r28", "r29", "r32", "r30", "r11", "r39"]


# ----------------------------------------------------------------------------- batching

def test_make_batches_pads_with_the_pad_id_given():
    enc = Encoded([[101, 7, 102], [101, 102], [101, 7, 7, 7, 102]], torch.tensor([0, 1, 0]), "three")
    for kw in (dict(), dict(pad_to_max=6)):
        (batch,) = make_batches(enc, 3, shuffle=False, group_by_length=False, pad_id=9, **kw)
        width = batch["input_ids"].shape[1]
        assert batch["input_ids"].tolist() == [row + [9] * (width - len(row)) for row in enc.input_ids]
        assert batch["attention_mask"].tolist() == [[1] * len(row) + [0] * (width - len(row)) for row in enc.input_ids]


def test_shuffled_batches_mix_their_rows_not_only_their_order():
    """shuffle=True shuffles the rows before grouping: with every row of one length (nothing to sort), the batches
    of two seeds hold other rows, and without grouping they are not the source order cut in slices."""
    enc = Encoded([[101, 7, 102]] * 40, torch.zeros(40, dtype=torch.long), "same length")
    for group in (True, False):
        a, b = (data.batch_groups(enc, 4, shuffle=True, group_by_length=group, seed=s) for s in (0, 1))
        assert {frozenset(g) for g in a} != {frozenset(g) for g in b}
        assert {frozenset(g) for g in a} != {frozenset(range(i, i + 4)) for i in range(0, 40, 4)}
        assert sorted(i for g in a for i in g) == list(range(40))


def test_token_stats_counts_only_reviews_longer_than_256_and_512():
    s = data.token_stats([256, 257, 512, 513])
    assert (s["frac_over_256"], s["frac_over_512"]) == (0.75, 0.25)


def test_concat_encoded_keeps_each_rows_label():
    a = Encoded([[101, 5, 102], [101, 6, 102]], torch.tensor([0, 1]), "train")
    b = Encoded([[101, 7, 7, 102]], torch.tensor([-1]), "transfer")
    both = data.concat_encoded(a, b, "train+transfer")
    assert both.input_ids == a.input_ids + b.input_ids and both.labels.tolist() == [0, 1, -1]
    assert both.name == "train+transfer"


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "8"])
def test_a_batch_size_that_is_no_whole_number_from_one_is_refused_in_one_line(batch_size):
    """0 stopped in range() ("arg 3 must not be zero"), in make_batches and in evaluate.predict_logits alike, and -1
    made no batch at all, in silence."""
    enc = Encoded([[101, 7, 102], [101, 8, 9, 102], [101, 5, 102]], torch.tensor([0, 1, 0]), "rows")
    for call in (lambda: make_batches(enc, batch_size), lambda: data.batch_groups(enc, batch_size),
                 lambda: data.n_batches(len(enc), batch_size)):
        with pytest.raises(ValueError, match=rf"^batch_size={batch_size!r}: give a whole number of rows >= 1$"):
            call()
    assert len(make_batches(enc, np.int64(2))) == 2 == data.n_batches(3, 2)


def test_subset_encoded_refuses_a_row_past_the_end_naming_how_many_rows_there_are():
    """An index past the rows gave a bare IndexError ("list index out of range")."""
    enc = Encoded([[101, 7, 102], [101, 8, 9, 102], [101, 5, 102]], torch.tensor([0, 1, 0]), "rows")
    for rows in ([1000], [0, 3], [-4]):
        with pytest.raises(IndexError, match=r"^subset_encoded: row -?\d+ of 'rows', which has 3 rows; give row "
                                             r"indices from 0 to 2$"):
            data.subset_encoded(enc, rows)
    with pytest.raises(IndexError, match="which has no rows"):
        data.subset_encoded(data.subset_encoded(enc, []), [0])
    picked = data.subset_encoded(enc, [2, -3])
    assert picked.input_ids == [[101, 5, 102], [101, 7, 102]] and picked.labels.tolist() == [0, 0]


def test_subset_encoded_refuses_a_mask_or_fractional_rows_that_it_read_as_other_rows():
    """A bad-input sweep: row 1.5 became row 1, and a mask [True, False, True] rows 1, 0, 1, in silence."""
    enc = Encoded([[101, 7, 102], [101, 8, 9, 102], [101, 5, 102]], torch.tensor([0, 1, 0]), "rows")
    with pytest.raises(TypeError, match=r"^subset_encoded: row indices are whole numbers, not 1\.5: give int row"):
        data.subset_encoded(enc, [1.5])
    mask = torch.tensor([True, False, True])
    with pytest.raises(TypeError, match=r"^subset_encoded: rows is a mask of booleans, not row indices: give "):
        data.subset_encoded(enc, mask.tolist())
    assert data.subset_encoded(enc, mask.nonzero().flatten()).input_ids == [[101, 7, 102], [101, 5, 102]]
    assert len(data.subset_encoded(enc, [])) == 0 and len(data.subset_encoded(enc, np.array([0, 2]))) == 2


def test_batches_of_rows_that_are_no_encoded_set_and_text_labels_are_refused_in_one_line():
    """A bad-input sweep: make_batches([...], 4) stopped on "'list' object has no attribute 'lengths'", and
    evaluate.accuracy on text labels on torch's "too many dimensions 'str'"; labels of 0.2 and 0.9 (probabilities)
    were compared with class ids in silence."""
    from kd_tutorial import evaluate
    with pytest.raises(TypeError, match=r"^batches are made of encoded rows, not a list: give data\.encode\("):
        make_batches([[101, 7, 102]], 4)
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(TypeError, match=r"^accuracy takes labels as class ids \(0 to C - 1, -1 unlabelled\), not "
                                        r"list that torch cannot read"):
        evaluate.accuracy(logits, ["neg", "pos"])
    with pytest.raises(TypeError, match=r"not fractions such as 0\.2: give the labels, not probabilities$"):
        evaluate.accuracy(logits, [0.2, 0.9])
    assert evaluate.accuracy(logits, [0.0, 1.0]) == 1.0 == evaluate.accuracy(logits, torch.tensor([False, True]))
