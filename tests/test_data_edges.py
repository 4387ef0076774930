"""kd_tutorial.data: the split arithmetic, the refusals and the fixes their one-line messages name, and the folder
readers that the earlier audit (tests/test_data_sources_and_batches.py) did not reach; found by mutation testing.
Small in-memory or tmp_path data, offline (no test reaches the Hub) and fast. The last test pins a defect found on
the way, fixed: folder_rows sized a folder by unsupervised.parquet alone."""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kd_tutorial import data
from kd_tutorial.data import DataSourceError, Reviews, load_imdb


def _reviews(texts, name, labelled=True):
    return Reviews(list(texts), [i % 2 if labelled else -1 for i in range(len(texts))], None, name)


def _raw(n_train=60, n_test=20):
    return {"train": _reviews([f"r{i}" for i in range(n_train)], "train"),
            "test": _reviews([f"t{i}" for i in range(n_test)], "test")}


def _parquet(path, n, prefix="review"):
    pq.write_table(pa.table({"text": [f"{prefix} {i}" for i in range(n)], "label": [i % 2 for i in range(n)]}), path)


# ----------------------------------------------------------------------------- refusals and their fixes

def test_an_unlabelled_row_in_a_labelled_train_split_is_refused():
    """-1 marks an unlabelled review: in train it would be carved into validation and train as a class of its own."""
    raw = {"train": Reviews(["a", "b", "c", "d"], [0, 1, -1, 1], None, "train")}
    with pytest.raises(DataSourceError, match=r"^mem: the train split has labels \[-1\]; labels must be 0"):
        data.split_raw(raw, "mem", val_size=2)


def test_no_transfer_reviews_with_validation_in_runs_names_the_transfer_set_and_val_block():
    """n_transfer=0 with val_block: the refusal is the transfer set's (not a val_size that does not fit), and names
    both fixes for the reviews validation's fences leave unused."""
    with pytest.raises(DataSourceError) as caught:
        data.split_raw(_raw(200), "mem", val_size=10, n_transfer=0, val_block=5)
    assert str(caught.value) == (
        "mem: no reviews are left for the transfer set: n_transfer=0 asks for none: give --set n_train=N below the "
        "reviews left, a smaller --set val_size=N, --set val_block=None (no reviews unused around validation's "
        "runs), or add an unsupervised.parquet of unlabelled reviews")


def test_a_val_size_below_two_is_refused_with_the_sizes_that_fit():
    """A validation split of one review cannot hold both classes: refused as a val_size, naming the range."""
    with pytest.raises(DataSourceError, match=r"^mem: val_size=1 does not fit the 60 labelled reviews: give --set "
                                              r"val_size=N with 2 <= N <= 56 or more reviews$"):
        data.split_raw(_raw(60), "mem", val_size=1)


def test_a_train_split_one_review_short_of_any_validation_is_told_so_not_offered_an_empty_range():
    """5 reviews, 4 of which training and the transfer set need: no val_size of 2 or more fits, so the line says
    they are too few (and how many are needed), not "val_size=N with 2 <= N <= 1"."""
    with pytest.raises(DataSourceError, match=r"^mem: 5 labelled review\(s\) are too few for a validation split and "
                                              r"training \(at least 6 needed\): give more labelled reviews in the "
                                              r"train split$"):
        data.split_raw(_raw(5), "mem", val_size=2)


def test_an_n_train_that_asks_one_review_more_than_the_least_is_named_among_the_fixes():
    """Without unlabelled reviews, validation must leave n_train reviews and one for transfer: at n_train=4 that is
    5, one more than the least any carve needs, so a smaller n_train is a fix the message names."""
    with pytest.raises(DataSourceError, match=r"^mem: val_size=9 does not fit the 12 labelled reviews: give --set "
                                              r"val_size=N with 2 <= N <= 7, a smaller --set n_train=N \(it keeps 4\) "
                                              r"or more reviews$"):
        data.split_raw(_raw(12), "mem", val_size=9, n_train=4)


# ----------------------------------------------------------------------------- aclImdb copies

def _acl(root, n=12, unsup=0):
    for sub, stars in (("pos", 8), ("neg", 2)):
        (root / "train" / sub).mkdir(parents=True)
        for i in range(n):
            (root / "train" / sub / f"{i}_{stars}.txt").write_text(f"{sub} review {i}")
    if unsup:
        (root / "train" / "unsup").mkdir()
        for i in range(unsup):
            (root / "train" / "unsup" / f"{i}_0.txt").write_text(f"unsup review {i}")
    return root


def test_an_aclimdb_copy_of_train_only_holds_out_a_test_slice_and_hides_other_train_reviews_for_transfer(tmp_path):
    """No test/ folder: the test set is a held-out slice of train (not refused as an empty test split), and no
    train/unsup folder: the transfer set is other train reviews (not an empty unlabelled split)."""
    d = load_imdb(str(_acl(tmp_path / "aclImdb", n=30)), val_size=6)
    assert d.test_is_held_out and d.test.name == "held-out" and len(d.test) == 12
    assert d.sizes() == {"train": 21, "validation": 6, "test": 12, "transfer": 21}
    assert set(d.transfer.labels) == {-1} and not set(d.transfer.texts) & set(d.train.texts)


def test_aclimdb_reviews_are_read_in_the_order_of_their_numbers(tmp_path):
    """IMDB lists a movie's reviews under consecutive numbers: 10_8.txt comes after 9_8.txt, not after 1_8.txt
    (val_block's runs and fences rely on it)."""
    reviews = data._read_acl(_acl(tmp_path, n=12), "train/pos", 1)
    assert reviews.texts == [f"pos review {i}" for i in range(12)] and reviews.stars == [8] * 12


def test_an_aclimdb_copy_with_empty_train_folders_is_told_where_the_reviews_go(tmp_path):
    for sub in ("pos", "neg"):
        (tmp_path / "aclImdb" / "train" / sub).mkdir(parents=True)
    with pytest.raises(DataSourceError, match=r"aclImdb: aclImdb layout but train/pos and train/neg hold no "
                                              r"\.txt files: put the training reviews there, one <id>_<stars>\.txt "
                                              r"file each$"):
        load_imdb(str(tmp_path), val_size=2)


# ----------------------------------------------------------------------------- table folders

def test_a_csv_with_trailing_empty_columns_is_read(tmp_path):
    """A spreadsheet's export often ends each line with empty, unnamed columns ("text,label,,"): only a repeated
    text, label or stars column is ambiguous."""
    rows = "".join(f"review {i},{i % 2},,\n" for i in range(20))
    (tmp_path / "train.csv").write_text(f"text,label,,\n{rows}")
    d = load_imdb(str(tmp_path), val_size=2)
    assert sum(d.sizes().values()) == 20


@pytest.mark.parametrize("label", ["0.5", "1.5"])
def test_a_fractional_label_is_refused_not_rounded_down(tmp_path, label):
    (tmp_path / "train.csv").write_text(f"text,label\ngood film,1\nbad film,0\nso-so film,{label}\n")
    with pytest.raises(DataSourceError, match=rf"train.csv: row 3 has label '{label}'; labels must be 0 \(negative\) "
                                              r"or 1 \(positive\)"):
        load_imdb(str(tmp_path), val_size=2)


def test_an_empty_csv_file_is_called_empty(tmp_path):
    (tmp_path / "train.csv").write_text("")
    with pytest.raises(DataSourceError, match=r"train.csv is empty: write it with pandas DataFrame.to_csv"):
        load_imdb(str(tmp_path), val_size=2)


def test_an_empty_data_folder_is_told_what_it_should_hold(tmp_path):
    with pytest.raises(DataSourceError, match=r": expected train.parquet or train.csv .*; found: nothing$"):
        data.check_data_source(tmp_path)


# ----------------------------------------------------------------------------- sources by name, profiles

def test_the_hub_datasets_full_name_is_read_from_the_hub_not_as_a_folder(monkeypatch):
    import datasets
    splits = {"train": {"text": [f"r{i}" for i in range(40)], "label": [i % 2 for i in range(40)]},
              "test": {"text": ["t0", "t1"], "label": [0, 1]}}
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: splits)
    d = load_imdb("stanfordnlp/imdb", val_size=4)
    assert d.source == "stanfordnlp/imdb (Hugging Face Hub)" and sorted(d.test.texts) == ["t0", "t1"]


def test_a_data_dir_given_to_load_for_profile_wins_over_the_environment_variable(tmp_path, monkeypatch):
    from kd_tutorial.profiles import get_profile
    (tmp_path / "given").mkdir()
    (tmp_path / "env").mkdir()
    _parquet(tmp_path / "given" / "train.parquet", 60, prefix="given")
    _parquet(tmp_path / "env" / "train.parquet", 60, prefix="env")
    monkeypatch.setenv("KD_TUTORIAL_DATA_DIR", str(tmp_path / "env"))
    d = data.load_for_profile(get_profile("tiny").replace(val_size=4, n_train=10, n_transfer=10),
                              data_dir=tmp_path / "given")
    assert all(t.startswith("given") for t in d.train.texts) and str(tmp_path / "given") in d.source


def test_load_for_profile_carves_with_the_seed_given(tmp_path):
    from kd_tutorial.profiles import get_profile
    _parquet(tmp_path / "train.parquet", 100)
    profile = get_profile("tiny").replace(val_size=10, n_train=20, n_transfer=20)
    a, b = (data.load_for_profile(profile, data_dir=tmp_path, seed=s) for s in (0, 1))
    assert a.validation.texts != b.validation.texts and a.test.texts == b.test.texts
    again = load_imdb(str(tmp_path), val_size=10, n_train=20, n_transfer=20, seed=0)
    assert a.validation.texts == again.validation.texts


# ------------------------------------------------------------------------ folder_rows (a defect, fixed)

@pytest.mark.parametrize("name", ["unsup.parquet", "unsupervised.csv"])
def test_folder_rows_counts_an_unlabelled_split_under_any_name_load_imdb_reads(tmp_path, name):
    """folder_rows read only unsupervised.parquet: a folder whose unlabelled split is unsup.parquet or
    unsupervised.csv (both read by load_imdb) was sized with 0 unlabelled reviews, and the estimates carved the
    transfer set from train."""
    _parquet(tmp_path / "train.parquet", 20)
    _parquet(tmp_path / "test.parquet", 4, prefix="test review")
    if name.endswith(".csv"):
        (tmp_path / name).write_text("text\n" + "".join(f"unlabelled {i}\n" for i in range(5)))
    else:
        _parquet(tmp_path / name, 5, prefix="unlabelled")
    assert len(load_imdb(str(tmp_path), val_size=2).transfer) == 5  # the loader reads it
    rows = data.folder_rows(tmp_path)
    assert rows == ({"train": 20, "test": 4, "unsupervised": 5} if name.endswith(".parquet") else None)  # a CSV
    # has no metadata that gives its rows: None, as for a train.csv (the estimates fall back on the profile's source)


def test_folder_rows_of_a_folder_with_two_files_for_one_split_is_unknown(tmp_path):
    """load_imdb refuses such a folder (which file is meant?): its sizes are not guessed from either."""
    for name, n in (("train.parquet", 20), ("test.parquet", 4), ("unsup.parquet", 5), ("unsupervised.parquet", 6)):
        _parquet(tmp_path / name, n)
    assert data.folder_rows(tmp_path) is None
    (tmp_path / "unsupervised.parquet").unlink()
    assert data.folder_rows(tmp_path) == {"train": 20, "test": 4, "unsupervised": 5}
