"""kd_tutorial.data, the parts earlier audits (test_data_edges.py, test_data_sources_and_batches.py) did not reach:
the spare reviews, the notes a load records, the refusals of carved splits, the prepared Arrow copy of the Hub's
IMDB, the table readers and the folder layouts, found by mutation testing.

Each test pins a value, a refusal and the fix its one-line message names, or a file read as written, that a small
change of the code left every other test passing. Small in-memory or tmp_path data, offline (the Hub's loader is
monkeypatched) and fast. The last test pins a defect found on the way, fixed.
"""
import errno
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from kd_tutorial import data
from kd_tutorial.data import DataSourceError, ImdbData, Reviews, load_imdb


def _reviews(texts, name, labelled=True):
    return Reviews(list(texts), [i % 2 if labelled else -1 for i in range(len(texts))], None, name)


def _parquet(path, n, prefix="review", **columns):
    rows = {"text": [f"{prefix} {i}" for i in range(n)], "label": [i % 2 for i in range(n)]} | columns
    pq.write_table(pa.table(rows), path)
    return path


# ----------------------------------------------------------------------------- the spare reviews

def test_a_spare_review_is_no_repeat_of_a_used_one_whichever_copy_has_the_spaces():
    """A review a split holds as "c " (a trailing space) is the review "c": the source's other copy is no spare
    review, or the student learns the teacher's answer on a training review; likewise the other way round."""
    none = Reviews([], [], None, "")
    raw = Reviews(["a", "c ", "c", " d", "d"], [0, 0, 0, 1, 1], None, "train")
    d = ImdbData(Reviews(["c "], [0], None, "train"), none, Reviews(["d"], [1], None, "test"), none, "mem")
    assert data.spare_reviews(raw, d, guard=False).texts == ["a"]


# ----------------------------------------------------------------------------- notes and refusals of the carve

def test_a_test_split_that_lost_reviews_to_training_is_not_said_to_be_one_the_source_cannot_fill():
    """n_test=30 of a test split of 60, one of the 30 drawn also a training review: the notes say that review was
    left out (one is enough to say so), not that the source holds no more than 29."""
    train = [f"train review {i}" for i in range(100)]
    test = [f"test review {i}" for i in range(60)]
    # which test review n_test draws depends on the carve alone: find one, then make it a copy of a training review
    drawn = data.split_raw({"train": _reviews(train, "train"), "test": _reviews(test, "test")}, "mem", val_size=10,
                           n_test=30)
    test[test.index(drawn.test.texts[0])] = train[0]
    d = data.split_raw({"train": _reviews(train, "train"), "test": _reviews(test, "test")}, "mem", val_size=10,
                       n_test=30)
    assert len(d.test) == 29
    assert d.notes[:1] == ("test: 1 review(s) left out, their text being in the source's training reviews too",)
    assert not any("asked" in note for note in d.notes), d.notes


def test_a_train_split_of_one_class_after_the_carve_names_n_train():
    """The refusal of a carved split names the knob that changes it: n_train for train (not n_test)."""
    raw = {"train": Reviews([f"r{i}" for i in range(60)], [0] * 55 + [1] * 5, None, "train"),
           "test": _reviews(["t0", "t1"], "test")}
    with pytest.raises(DataSourceError, match=r"^mem: the train split has 2 negative and 0 positive review\(s\), and "
                                              r"it needs reviews of both classes: add reviews of the rarer class, or "
                                              r"change --set n_train=N$"):
        data.split_raw(raw, "mem", val_size=10, n_train=2, seed=0)


def test_a_test_split_left_one_class_by_reviews_shared_with_training_names_n_test():
    """A test split left with one class by the reviews it shares with training is told to change n_test (or add
    reviews): not n_train, which carves nothing of the test split."""
    train = [f"train review {i}" for i in range(60)]
    raw = {"train": _reviews(train, "train"), "test": Reviews(["own 0", train[1], train[3]], [0, 1, 1], None, "test")}
    with pytest.raises(DataSourceError, match=r"^mem: the test split has 1 negative and 0 positive review\(s\), and "
                                              r"it needs reviews of both classes: add reviews of the rarer class, or "
                                              r"change --set n_test=N$"):
        data.split_raw(raw, "mem", val_size=10)


def test_a_validation_split_of_one_class_after_its_repeats_went_counts_its_own_repeats():
    """Every positive review is one text, which train holds: validation keeps only negatives, and the line says how
    many of validation's reviews were left out as repeats (train has none), and the fix for them."""
    raw = {"train": Reviews([f"bad film {i}" for i in range(50)] + ["a good film"] * 50, [0] * 50 + [1] * 50, None,
                            "train"),
           "test": _reviews(["t0", "t1"], "test"), "unsupervised": _reviews(["u0", "u1"], "u", labelled=False)}
    with pytest.raises(DataSourceError, match=r"^mem: the validation split has 5 negative and 0 positive review\(s\), "
                                              r"and it needs reviews of both classes: add reviews of the rarer class, "
                                              r"or change --set val_size=N; 5 of its reviews were left out as repeats "
                                              r"\(the source holds their text more than once\): give a source with "
                                              r"more distinct reviews$"):
        data.split_raw(raw, "mem", val_size=10, n_train=2)


# ----------------------------------------------------------------------------- the prepared copy of the Hub's IMDB

ROWS = {"train": (["good", "bad", "fine", "awful"], [1, 0, 1, 0]), "test": (["nice", "dull"], [1, 0])}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty datasets cache, and the Hub's loader refused a write there (EPERM): ``_hub_raw`` falls back on a
    prepared copy, where there is one."""
    import datasets

    def refused(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", refused)
    return tmp_path


def test_a_cache_the_system_does_not_permit_writing_in_is_read_like_a_read_only_one(hub_cache):
    """EPERM (a mount that permits no lock file) is a refused write like EROFS and EACCES."""
    from test_data import _prepared_imdb
    _prepared_imdb(hub_cache, ROWS)
    assert data._hub_raw()["train"].texts == ["good", "bad", "fine", "awful"]


def test_a_prepared_copy_of_another_configuration_is_passed_by(hub_cache):
    """A folder whose dataset_info.json names another configuration than its own is not read (load_dataset passes
    it by), even when it is the newest."""
    import os

    from test_data import _prepared_imdb
    plain = _prepared_imdb(hub_cache, ROWS)
    other = _prepared_imdb(hub_cache, {"train": (["other"], [1]), "test": (["other test"], [0])},
                           folder="plain_text/0.0.0/" + "b" * 40)
    info = json.loads((other / "dataset_info.json").read_text())
    (other / "dataset_info.json").write_text(json.dumps(info | {"config_name": "another"}))
    os.utime(plain, (1_000_000, 1_000_000))
    assert data.prepared_hub_copy() == plain


def test_a_prepared_copy_without_a_test_split_is_not_read(hub_cache):
    """load_dataset would pick such a copy and fail: the refusal names prefetch instead."""
    from test_data import _prepared_imdb
    _prepared_imdb(hub_cache, {"train": ROWS["train"]})
    assert data.prepared_hub_copy() is None
    with pytest.raises(DataSourceError, match=r"run `kd-tutorial prefetch --profile cpu` while online"):
        data._hub_raw()


@pytest.mark.parametrize("info", ["[]", '{"config_name": "plain_text", "splits": [1]}'])
def test_a_prepared_copy_whose_dataset_info_is_no_mapping_is_no_copy(hub_cache, info):
    """A dataset_info.json that is not the object datasets writes: no copy, not a traceback."""
    folder = hub_cache / "stanfordnlp___imdb" / "plain_text" / "0.0.0" / ("a" * 40)
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text(info)
    assert data.prepared_hub_copy() is None


# ----------------------------------------------------------------------------- table readers

@pytest.mark.parametrize("stars", [[None, 7] * 10, ["8", "n/a"] * 10])
def test_a_stars_column_with_a_missing_or_wordy_value_is_dropped_not_a_traceback(tmp_path, stars):
    """stars is optional: a null (parquet) or a word in it leaves the reviews without stars."""
    _parquet(tmp_path / "train.parquet", 20, stars=stars)
    reviews = data._read_table(tmp_path / "train.parquet")
    assert reviews.stars is None and len(reviews) == 20


def test_a_blank_stars_field_in_a_csv_drops_the_stars(tmp_path):
    (tmp_path / "train.csv").write_text("text,label,stars\n" + "".join(f"review {i},{i % 2},\n" for i in range(20)))
    d = load_imdb(str(tmp_path), val_size=2)
    assert sum(d.sizes().values()) == 20 and d.train.stars is None


def test_a_text_of_bytes_that_are_not_utf8_names_its_row(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"text": [b"fine film", b"tr\xe8s bien"], "label": [1, 1]}), path)
    with pytest.raises(DataSourceError, match=r"train.parquet: row 2's text is not UTF-8 \(invalid continuation "
                                              r"byte at byte 2\): save the reviews as UTF-8$"):
        data._read_table(path)


def test_a_null_text_in_a_parquet_file_is_called_null_and_told_the_fix(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"text": ["fine film", None], "label": [1, 0]}), path)
    with pytest.raises(DataSourceError, match=r"train.parquet: row 2 has no text \(null\): drop it or fill it in$"):
        data._read_table(path)


def test_a_csv_row_of_too_many_fields_is_named_by_its_line_in_the_file(tmp_path):
    """Blank lines are no rows, but they are lines: the message names the line an editor shows."""
    (tmp_path / "train.csv").write_text("text,label\n\ngood film,1\n\nfine, really fine,1\n")
    with pytest.raises(DataSourceError, match=r"is not valid CSV: line 5 has 3 field\(s\) where the header has 2"):
        data._read_table(tmp_path / "train.csv")


# ----------------------------------------------------------------------------- folder layouts

def test_an_aclimdb_copy_with_train_neg_alone_is_read_as_one_and_told_it_lacks_positive_reviews(tmp_path):
    folder = tmp_path / "aclImdb" / "train" / "neg"
    folder.mkdir(parents=True)
    for i in range(10):
        (folder / f"{i}_2.txt").write_text(f"bad film {i}")
    with pytest.raises(DataSourceError, match=r"aclImdb \(aclImdb layout\): the train split has 10 negative and 0 "
                                              r"positive review\(s\), and it needs reviews of both classes"):
        load_imdb(str(tmp_path), val_size=2)


def test_an_aclimdb_copy_with_test_neg_alone_is_told_it_lacks_a_train_split(tmp_path):
    (tmp_path / "aclImdb" / "test" / "neg").mkdir(parents=True)
    (tmp_path / "aclImdb" / "test" / "neg" / "0_2.txt").write_text("bad film")
    with pytest.raises(DataSourceError, match=r"holds a test split but no train split: add train.parquet or "
                                              r"train.csv .*, or train/pos and train/neg of an aclImdb copy$"):
        data.check_data_source(tmp_path)


def test_a_data_folder_under_the_home_folder_may_be_given_with_a_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "imdb").mkdir()
    _parquet(tmp_path / "imdb" / "train.parquet", 40)
    data.check_data_source("~/imdb")
    assert sum(load_imdb("~/imdb", val_size=4).sizes().values()) == 40


# ----------------------------------------------------------------------------- truncation

def test_a_max_length_of_zero_is_refused_not_read_as_no_limit():
    with pytest.raises(ValueError, match=r"max_length must leave room for \[CLS\] and \[SEP\] and one token, got 0"):
        data.truncate_ids(list(range(10)), 0, "head", 1, 2)


# ----------------------------------------------------------------------------- batching

def test_collate_rounds_up_to_any_multiple_never_cuts_a_row_and_pads_to_max_as_asked():
    """A width rounded to ``multiple`` (2 too, not only a GPU's 8), never below the longest row whatever ``limit``
    says, and with ``pad_to_max`` exactly that width: the multiple is not applied first and refused."""
    enc = data.Encoded([[101] + [7] * n + [102] for n in (3, 9)], torch.tensor([0, 1]), "x")
    assert data.collate(enc, [0, 1], multiple=2)["input_ids"].shape[1] == 12  # 11 -> 12
    batch = data.collate(enc, [0, 1], multiple=8, limit=6)  # a limit below the longest row cuts nothing
    assert batch["input_ids"].shape[1] == 11 and batch["attention_mask"].sum(1).tolist() == [5, 11]
    assert data.collate(enc, [1], pad_to_max=12, multiple=8, limit=17)["input_ids"].shape[1] == 12


# ------------------------------------------------------------------------------------ a defect, fixed

def test_a_held_out_slice_emptied_by_repeats_of_training_reviews_says_they_were_left_out():
    """A held-out slice whose every review the remaining train reviews repeat was told to add reviews of the rarer
    class or change n_test, neither of which helps."""
    texts = [f"review {i}" for i in range(50)]
    raw = {"train": Reviews(texts * 2, [i % 2 for i in range(50)] * 2, None, "train")}
    with pytest.raises(DataSourceError) as caught:
        data.split_raw(raw, "mem", val_size=20, n_train=2, n_test=10)
    assert str(caught.value) == ("mem: the held-out split is empty, and it needs reviews of both classes: 10 of its "
                                 "reviews are also in the source's training reviews and were left out (a review seen "
                                 "in training tests nothing): give a source with more distinct reviews (the slice is "
                                 "carved from train, whose other reviews or the unlabelled ones hold the same texts)")
    unlabelled = {"train": Reviews(texts, [i % 2 for i in range(50)], None, "train"),
                  "unsupervised": Reviews(texts, [-1] * 50, None, "unsupervised")}  # train's texts once, again here
    with pytest.raises(DataSourceError, match="whose other reviews or the unlabelled ones hold the same texts"):
        data.split_raw(unlabelled, "mem", val_size=20, n_train=2, n_test=10)
