"""kd_tutorial.data: sources, splits, tokenizer, truncation and batching. Offline and fast."""
import os
import random
import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from kd_tutorial import data
from kd_tutorial.data import (DataSourceError, Encoded, Reviews, encode, get_tokenizer, load_for_profile, load_imdb,
                              make_batches, padding_waste, token_stats, truncate_ids)
from kd_tutorial.errors import SETUP_MIRRORS
from kd_tutorial.profiles import get_profile


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


@pytest.fixture(scope="module")
def tiny():
    return load_imdb("tiny", val_size=200, seed=0)


def texts(reviews):
    return set(reviews.texts)


def assert_disjoint(d):
    splits = [d.train, d.validation, d.test, d.transfer]
    assert sum(len(texts(s)) for s in splits) == len(set().union(*map(texts, splits)))


def write_parquet(path, n, seed=0, label_col="label"):
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    rows = {"text": [f"review {seed}-{i} was {'good' if y else 'bad'} " + "word " * rng.randrange(3, 30)
                     for i, y in enumerate(labels)], label_col: labels}
    pq.write_table(pa.table(rows), path)


# ----------------------------------------------------------------------------- import, tokenizer

def test_import_does_not_load_transformers():
    code = ("import sys, kd_tutorial.data, kd_tutorial.corpus; "
            "print([m for m in ('transformers', 'datasets', 'tokenizers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_vocab_file():
    lines = data.VOCAB_PATH.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 30522 and lines[0] == "[PAD]" and lines[100] == "[UNK]"


def test_tokenizer_full_vocab_and_low_unk_rate(tok, tiny):
    assert len(tok) == 30522 and tok.vocab_size == 30522
    assert tok("Great MOVIE")["input_ids"] == tok("great movie")["input_ids"]  # lower-cased
    enc = encode(tiny.train, tok, max_length=None)
    n_unk = sum(i == tok.unk_token_id for ids in enc.input_ids for i in ids)
    assert n_unk / sum(enc.lengths) < 0.01
    assert get_tokenizer("tiny-bert").get_vocab() == tok.get_vocab()


# ----------------------------------------------------------------------------- splits

def test_tiny_splits(tiny):
    assert tiny.sizes() == {"train": 1000, "validation": 200, "test": 1000, "transfer": 4000}
    assert not tiny.test_is_held_out
    assert_disjoint(tiny)
    for split in (tiny.train, tiny.validation, tiny.test):
        assert set(split.labels) == {0, 1}
    assert sum(tiny.validation.labels) == 100  # stratified: half positive
    assert set(tiny.transfer.labels) == {-1} and tiny.transfer.stars is None  # hidden
    assert tiny.train.stars is not None and len(tiny.train.stars) == len(tiny.train)


def test_splits_are_seeded(tiny):
    again = load_imdb("tiny", val_size=200, seed=0)
    assert again.validation.texts == tiny.validation.texts and again.train.texts == tiny.train.texts
    other = load_imdb("tiny", val_size=200, seed=1)
    assert other.validation.texts != tiny.validation.texts
    assert texts(other.test) == texts(tiny.test)  # the test set never depends on the seed
    a, b = (load_imdb("tiny", n_test=300, val_size=200, seed=s) for s in (0, 1))
    assert a.test.texts == b.test.texts and a.validation.texts != b.validation.texts


def test_subsampling_is_stratified():
    d = load_imdb("tiny", n_train=300, n_transfer=500, n_test=400, val_size=100, seed=3)
    assert d.sizes() == {"train": 300, "validation": 100, "test": 400, "transfer": 500}
    assert sum(d.train.labels) == 150 and sum(d.test.labels) == 200 and sum(d.validation.labels) == 50
    assert_disjoint(d)


def test_the_random_carve_is_the_one_every_cache_was_made_with():
    # pinned: the validation carve decides the teacher's training reviews, so a change here would silently
    # orphan every cached teacher and student
    assert data._stratified([0, 1, 1, 0, 1] * 6, 7, data._rng(0, "val")) == (
        [18, 3, 6, 12, 19, 1, 25],
        [20, 16, 10, 11, 14, 23, 5, 21, 7, 15, 26, 22, 13, 2, 9, 29, 8, 17, 4, 27, 0, 24, 28])


def test_split_raw_draws_each_split_with_the_generator_every_cache_was_made_with():
    """Pinned as the carve above, through split_raw: a validation drawn with another step's generator (the train
    one), or train and transfer with each other's, is as random, and orphans every cached teacher and student."""
    raw = {"train": _reviews([f"r{i}" for i in range(40)], "train"), "test": _reviews(["t0", "t1"], "test"),
           "unsupervised": _reviews([f"u{i}" for i in range(30)], "unsupervised", labelled=False)}
    d = data.split_raw(raw, "mem", n_train=10, n_transfer=10, val_size=6, seed=0)
    assert d.validation.texts == ["r21", "r0", "r1", "r24", "r31", "r14"]
    assert d.train.texts == ["r5", "r8", "r16", "r10", "r33", "r27", "r29", "r7", "r36", "r26"]
    assert d.transfer.texts == ["u20", "u23", "u16", "u13", "u18", "u10", "u17", "u21", "u1", "u28"]


def test_each_class_gets_its_share_of_a_carve_to_one_row():
    """Guards against quotas that miss a row or give the leftover rows to the smallest remainders: for every
    size, the quotas add up to n and each is its class's exact share rounded down or up."""
    for negatives in range(0, 13):
        for positives in range(1, 13):
            labels = [0] * negatives + [1] * positives
            total = len(labels)
            for n in range(total + 1):
                quota = data._by_label(labels, n)[1]
                exact = {k: n * labels.count(k) / total for k in quota}
                assert sum(quota.values()) == n and all(abs(quota[k] - exact[k]) < 1 for k in quota)
                up, down = [k for k in quota if quota[k] > exact[k]], [k for k in quota if quota[k] < exact[k]]
                assert all(exact[u] % 1 >= exact[d] % 1 for u in up for d in down)  # largest remainders first


def movie_reviews(movies_per_class=100, per_movie=7, prefix="movie"):
    """A train split laid out as the Hub's IMDB: negatives then positives, each movie's reviews together."""
    texts, labels = [], []
    for y in (0, 1):
        for m in range(movies_per_class):
            texts += [f"{prefix}{y}x{m} review {j} {'good' if y else 'bad'}" for j in range(per_movie)]
            labels += [y] * per_movie
    return Reviews(texts, labels, None, "train")


def movies(reviews):
    return {t.split()[0] for t in reviews.texts}


@pytest.mark.parametrize("block", [1, 7, 20, 1000])
def test_in_blocks_takes_runs_of_each_class_and_fences_them(block):
    labels = [0] * 300 + [1] * 200
    chosen, rest = data._in_blocks(labels, 100, block, data._rng(0, "val"), guard=5)
    assert sorted(labels[i] for i in chosen) == [0] * 60 + [1] * 40  # stratified, as the random carve
    assert not set(chosen) & set(rest)
    # the chosen rows fill whole cells of the grid of runs (rows b*block .. b*block + block - 1 of the class),
    # all but at most one: the cell the quota cut short
    for y, (first, size) in enumerate(((0, 300), (300, 200))):
        cells: dict[int, int] = {}
        for i in chosen:
            if labels[i] == y:
                cells[(i - first) // block] = cells.get((i - first) // block, 0) + 1
        short = [b for b, n in cells.items() if n < min(block, size - b * block)]
        assert len(short) <= 1
    fenced = set(range(500)) - set(chosen) - set(rest)
    for i in fenced:  # a row in neither list is within the guard of a chosen row of its class
        assert any(labels[j] == labels[i] and abs(j - i) <= 5 for j in chosen)
    for i in rest:
        assert not any(labels[j] == labels[i] and abs(j - i) <= 5 for j in chosen)


def test_validation_in_blocks_shares_no_movie_with_training():
    raw = {"train": movie_reviews(), "test": movie_reviews(5, 4, prefix="unseen")}
    drawn = data.split_raw(raw, "movies", n_train=200, n_transfer=200, val_size=100, seed=0)
    blocks = data.split_raw(raw, "movies", n_train=200, n_transfer=200, val_size=100, seed=0, val_block=20)
    seen = lambda d: movies(d.train) | movies(d.transfer)  # noqa: E731
    assert movies(drawn.validation) & seen(drawn)  # drawn at random, validation shares movies with training
    assert not movies(blocks.validation) & seen(blocks)
    assert blocks.sizes() == {"train": 200, "validation": 100, "test": 40, "transfer": 200}
    assert sum(blocks.validation.labels) == 50
    assert_disjoint(blocks)
    again = data.split_raw(raw, "movies", n_train=200, n_transfer=200, val_size=100, seed=0, val_block=20)
    other = data.split_raw(raw, "movies", n_train=200, n_transfer=200, val_size=100, seed=1, val_block=20)
    assert again.validation.texts == blocks.validation.texts != other.validation.texts


def test_the_spare_reviews_are_the_train_reviews_no_split_holds_outside_validations_movies():
    """``ImdbData.spare``: what the carve leaves of train, labels hidden, each text once, in source order, and none
    of a validation movie (within MOVIE_GUARD of a validation review of its class), so that a student learning from
    them is not chosen by reviews of movies it saw."""
    train = movie_reviews()
    train.texts[700] = train.texts[3]  # a text held twice: one spare review at most
    raw = {"train": train, "test": movie_reviews(5, 4, prefix="unseen")}
    d = data.split_raw(raw, "movies", n_train=200, n_transfer=200, val_size=100, seed=0, val_block=20)
    spare = d.spare
    assert spare.name == "spare" and set(spare.labels) == {-1} and spare.stars is None
    assert not texts(spare) & (texts(d.train) | texts(d.validation) | texts(d.transfer) | texts(d.test))
    assert len(texts(spare)) == len(spare)  # each text once
    rows = {t: i for i, t in reversed(list(enumerate(train.texts)))}  # a text's first row
    assert [rows[t] for t in spare.texts] == sorted(rows[t] for t in spare.texts)  # source order
    assert not movies(spare) & movies(d.validation)
    for t in spare.texts:  # outside the guard of every validation review of its class
        assert all(abs(rows[t] - rows[v]) > data.MOVIE_GUARD for v in d.validation.texts
                   if train.labels[rows[v]] == train.labels[rows[t]])
    used = len(d.train) + len(d.validation) + len(d.transfer)
    assert 0 < len(spare) < len(train) - used  # the guards drop some of what is left
    # validation drawn at random has no movies to keep apart: everything left over is spare
    drawn = data.split_raw(raw, "movies", n_train=200, n_transfer=200, val_size=100, seed=0)
    assert len(drawn.spare) == len(train) - len(drawn.train) - len(drawn.validation) - len(drawn.transfer) - 1
    # a carve that uses every train review leaves none
    assert len(data.split_raw(raw, "movies", val_size=100, seed=0).spare) == 0


def test_the_students_labels_keep_each_class_share():
    """A stratified subset keeps an imbalanced split's proportions, and always holds n rows; on a balanced split it
    is the subset the course's students were trained on (the same rows as the half-and-half rule it replaced)."""
    labels = torch.tensor([0] * 900 + [1] * 100)
    enc = data.Encoded([[101, 102]] * 1000, labels, "train")
    keep = data.labelled_subset(enc, 400, seed=3)
    assert len(keep) == 400 and int(labels[keep].sum()) == 40
    balanced = data.Encoded([[101, 102]] * 1000, torch.tensor([0, 1] * 500), "train")
    g, old = torch.Generator().manual_seed(3), []
    for c in (0, 1):  # the rule before: n // classes per class, drawn with the same generator
        rows = (balanced.labels == c).nonzero().flatten()
        old.append(rows[torch.randperm(len(rows), generator=g)[:150]])
    assert torch.equal(data.labelled_subset(balanced, 300, seed=3), torch.cat(old).sort().values)


def test_without_a_test_split_the_held_out_slice_and_validation_share_no_movie_with_training():
    """With no test split the held-out test is carved from train first: in runs too, and leaving train in its
    order, or the validation carve after it finds no movie's reviews together (both used to share every movie)."""
    raw = {"train": movie_reviews(200, 7)}
    blocks = data.split_raw(raw, "movies", n_train=300, n_transfer=300, n_test=140, val_size=100, seed=0,
                            val_block=20)
    seen = movies(blocks.train) | movies(blocks.transfer)
    assert blocks.test.name == "held-out" and len(blocks.test) == 140 and sum(blocks.test.labels) == 70
    assert not movies(blocks.test) & seen and not movies(blocks.validation) & seen
    assert not movies(blocks.test) & movies(blocks.validation)
    assert_disjoint(blocks)
    drawn = data.split_raw(raw, "movies", n_train=300, n_transfer=300, n_test=140, val_size=100, seed=0)
    assert movies(drawn.test) & (movies(drawn.train) | movies(drawn.transfer))  # without runs: shared


def test_without_a_test_split_the_spare_reviews_share_no_movie_with_the_held_out_test():
    """Guards against spare reviews that keep apart only validation's movies: with no test split the held-out test
    is carved from train too, and a spare review of one of its movies would teach the student the movies it is
    scored on."""
    train = movie_reviews(200, 7)
    d = data.split_raw({"train": train}, "movies", n_train=300, n_transfer=300, n_test=140, val_size=100, seed=0,
                       val_block=20)
    assert d.test_is_held_out and len(d.spare) > 0
    assert not movies(d.spare) & movies(d.test) and not movies(d.spare) & movies(d.validation)
    rows = {t: i for i, t in enumerate(train.texts)}
    for t in d.spare.texts:  # outside the guard of every held-out review of its class
        assert all(abs(rows[t] - rows[v]) > data.MOVIE_GUARD for v in d.test.texts
                   if train.labels[rows[v]] == train.labels[rows[t]])


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "100"])
def test_a_bad_val_block_is_refused_with_the_fix(bad):
    with pytest.raises(DataSourceError, match=r"val_block=.* must be a whole number of reviews.*--set val_block=100"):
        load_imdb("tiny", val_size=200, val_block=bad)


def test_val_block_reaches_the_split_from_the_profile():
    p = get_profile("tiny")
    assert p.val_block is None
    with pytest.raises(DataSourceError, match=r"val_block=0 must be a whole number.*--set val_block=100"):
        load_for_profile(p.with_overrides(["val_block=0"]))  # one check, where the carve happens
    blocks = load_for_profile(p.with_overrides(["val_block=50"]))
    assert blocks.validation.texts != load_for_profile(p).validation.texts
    assert len(blocks.validation) == p.val_size and sum(blocks.validation.labels) == p.val_size // 2


def test_load_for_profile_tiny():
    p = get_profile("tiny")
    d = load_for_profile(p)
    assert d.sizes() == {"train": 1200 - p.val_size, "validation": p.val_size, "test": 1000,
                         "transfer": min(p.n_transfer, 4000)}


def test_reviews_subset():
    r = Reviews(["a", "b", "c"], [0, 1, 0], [1, 9, 2], "x")
    s = r.subset([2, 0])
    assert (s.texts, s.labels, s.stars, s.name, len(s)) == (["c", "a"], [0, 0], [2, 1], "x", 2)


# ----------------------------------------------------------------------------- folders

def test_parquet_train_only_gives_held_out_test(tmp_path):
    write_parquet(tmp_path / "train.parquet", 400)
    d = load_imdb(str(tmp_path), n_train=100, n_transfer=120, n_test=80, val_size=40, seed=0)
    assert d.test_is_held_out and d.test.name == "held-out" and "held-out" in d.source
    assert d.sizes() == {"train": 100, "validation": 40, "test": 80, "transfer": 120}
    assert_disjoint(d)
    assert sum(d.test.labels) == 40 and sum(d.train.labels) == 50
    assert set(d.transfer.labels) == {-1}
    d2 = load_imdb(str(tmp_path), val_size=40, seed=0)  # defaults: 20% held out, the rest split train/transfer
    assert d2.sizes() == {"train": 140, "validation": 40, "test": 80, "transfer": 140}
    assert_disjoint(d2)


def test_csv_folder_with_test_and_unsupervised(tmp_path):
    import csv
    for name, n in (("train", 60), ("test", 30), ("unsupervised", 50)):
        with open(tmp_path / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            labelled = name != "unsupervised"  # an unlabelled file may have no label column
            w.writerow(["text", "label"] if labelled else ["text"])
            w.writerows([[f"{name} review {i}, with a comma", i % 2][: 2 if labelled else 1] for i in range(n)])
    d = load_imdb(str(tmp_path), val_size=10)
    assert not d.test_is_held_out
    assert d.sizes() == {"train": 50, "validation": 10, "test": 30, "transfer": 50}
    assert d.train.texts[0].endswith("with a comma") and set(d.transfer.labels) == {-1}


def test_aclimdb_folder(tmp_path):
    root = tmp_path / "aclImdb"
    for split, n in (("train", 12), ("test", 8)):
        for sub, stars in (("pos", 8), ("neg", 2)):
            (root / split / sub).mkdir(parents=True)
            for i in range(n):
                (root / split / sub / f"{i}_{stars + i % 2}.txt").write_text(f"{split} {sub} {i}<br />fine")
    (root / "train" / "unsup").mkdir()
    for i in range(15):
        (root / "train" / "unsup" / f"{i}_0.txt").write_text(f"unsup {i}")
    d = load_imdb(str(tmp_path), val_size=4)  # the parent of aclImdb/ works too
    assert d.sizes() == {"train": 20, "validation": 4, "test": 16, "transfer": 15}
    assert not d.test_is_held_out and "aclImdb" in d.source
    for split in (d.train, d.test):
        for text, y, s in zip(split.texts, split.labels, split.stars):
            assert ("pos" in text) == (y == 1) and s in ((8, 9) if y else (2, 3))
    assert set(d.transfer.labels) == {-1}
    assert load_imdb(str(root), val_size=4).sizes() == d.sizes()


def test_env_var_overrides_profile_source(tmp_path, monkeypatch):
    write_parquet(tmp_path / "train.parquet", 300)
    monkeypatch.setenv("KD_TUTORIAL_DATA_DIR", str(tmp_path))
    d = load_for_profile(get_profile("tiny").replace(n_transfer=50, val_size=20))
    assert d.test_is_held_out and str(tmp_path) in d.source
    assert d.sizes()["transfer"] == 50 and d.sizes()["validation"] == 20


def test_missing_folder_error(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist") as e:
        load_imdb(str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(e.value) and "\n" not in str(e.value)


def test_malformed_folder_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataSourceError) as e:
        load_imdb(str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path) in msg and "train.parquet" in msg and "aclImdb" in msg and "notes.txt" in msg


def test_missing_column_error(tmp_path):
    write_parquet(tmp_path / "train.parquet", 10, label_col="sentiment")
    with pytest.raises(DataSourceError, match="missing column.*label"):
        load_imdb(str(tmp_path))


def test_hub_offline_without_cache_is_actionable(tmp_path):
    code = ("from kd_tutorial.data import load_imdb, DataSourceError\n"
            "try:\n    load_imdb('hub')\nexcept DataSourceError as e:\n    print('DSE', e)\n")
    env = dict(os.environ, HF_HOME=str(tmp_path), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert out.startswith("DSE") and "kd-tutorial prefetch" in out and "KD_TUTORIAL_DATA_DIR" in out


# ----------------------------------------------------------------------------- truncation and encoding

def test_truncation_strategies():
    ids = list(range(100, 120))  # 20 tokens, budget 8 at max_length 10
    assert truncate_ids(ids, 10, "head", 1, 2) == [1, *range(100, 108), 2]
    assert truncate_ids(ids, 10, "tail", 1, 2) == [1, *range(112, 120), 2]
    assert truncate_ids(ids, 10, "head+tail", 1, 2) == [1, 100, 101, *range(114, 120), 2]
    for s in ("head", "tail", "head+tail"):
        assert truncate_ids(ids[:5], 10, s, 1, 2) == [1, *ids[:5], 2]  # short: untouched
        assert truncate_ids(ids, None, s, 1, 2) == [1, *ids, 2]
    long = list(range(1000))
    out = truncate_ids(long, 512, "head+tail", -1, -2)
    assert len(out) == 512 and out[1:129] == long[:128] and out[129:-1] == long[-382:]  # Sun et al. 2019
    with pytest.raises(ValueError, match="truncation"):
        truncate_ids(ids, 10, "middle", 1, 2)
    with pytest.raises(ValueError):
        truncate_ids(ids, 2, "head", 1, 2)


def test_encode_lengths_and_specials(tok, tiny):
    enc = encode(tiny.test, tok, max_length=32, truncation="head+tail")
    assert len(enc) == len(tiny.test) and enc.labels.dtype == torch.long and enc.labels.tolist() == tiny.test.labels
    assert max(enc.lengths) == 32 and all(x[0] == tok.cls_token_id and x[-1] == tok.sep_token_id for x in enc.input_ids)
    r = Reviews(["alpha " + "movie " * 100 + "omega"], [1], None, "one")
    for strategy, first, last in (("head", "alpha", "movie"), ("tail", "movie", "omega"), ("head+tail", "alpha", "omega")):
        words = tok.convert_ids_to_tokens(encode(r, tok, 16, strategy).input_ids[0])
        assert len(words) == 16 and (words[1], words[-2]) == (first, last)
    full = encode(r, tok, max_length=None)
    assert full.lengths == [104]  # 102 words + [CLS] + [SEP]


def test_markup_space_tokenizes_a_space_where_a_line_break_was(tok):
    """IMDB's `<br />` is four word pieces that take about 5 % of the cpu profile's tokens: markup="space" gives
    them back to the words, in each spelling the reviews use, and leaves the rest of the text as it was."""
    r = Reviews(["Great film.<br /><br />Loved it<br>really<BR/>so a < b / c > d"], [1], None, "one")
    kept = tok.convert_ids_to_tokens(encode(r, tok, 64).input_ids[0])
    spaced = tok.convert_ids_to_tokens(encode(r, tok, 64, markup="space").input_ids[0])
    assert kept.count("br") == 4 and "br" not in spaced
    assert spaced == ["[CLS]", "great", "film", ".", "loved", "it", "really", "so", "a", "<", "b", "/", "c", ">", "d",
                      "[SEP]"]
    assert encode(r, tok, 8, markup="space").lengths == [8]  # truncated after the markup is gone
    with pytest.raises(ValueError, match="markup='html': give one of keep, space"):
        encode(r, tok, 64, markup="html")


# ----------------------------------------------------------------------------- batching

def fake_encoded(n=2000, seed=0):
    rng = random.Random(seed)
    lengths = [min(256, max(3, int(rng.lognormvariate(4.8, 0.6)))) for _ in range(n)]  # IMDB-like spread
    return Encoded([[101] + [7] * (L - 2) + [102] for L in lengths], torch.tensor([i % 2 for i in range(n)]), "fake")


def test_make_batches_cover_rows_and_masks():
    enc = fake_encoded(203)
    for kw in (dict(), dict(group_by_length=False), dict(shuffle=False), dict(pad_to_max=256)):
        batches = make_batches(enc, 16, **kw)
        index = torch.cat([b["index"] for b in batches]).tolist()
        assert sorted(index) == list(range(203))  # every row exactly once
        for b in batches:
            ids, mask = b["input_ids"], b["attention_mask"]
            assert ids.shape == mask.shape and ids.dtype == mask.dtype == torch.long and len(b["labels"]) <= 16
            assert mask.sum(1).tolist() == [enc.lengths[i] for i in b["index"]]
            assert (ids[mask == 0] == 0).all() and b["labels"].tolist() == enc.labels[b["index"]].tolist()
            assert ids.shape[1] == (256 if "pad_to_max" in kw else max(enc.lengths[i] for i in b["index"]))
    ordered = make_batches(enc, 16, shuffle=False, group_by_length=False)
    assert torch.cat([b["index"] for b in ordered]).tolist() == list(range(203))


def test_make_batches_is_seeded():
    enc = fake_encoded(300)
    a, b, c = (make_batches(enc, 16, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(x["index"], y["index"]) for x, y in zip(a, b))
    assert not all(torch.equal(x["index"], y["index"]) for x, y in zip(a, c))


def test_grouping_reduces_padding_waste():
    enc = fake_encoded(2000)
    random_waste = padding_waste(make_batches(enc, 16, group_by_length=False))
    grouped_waste = padding_waste(make_batches(enc, 16, group_by_length=True))
    assert random_waste > 0.3 and grouped_waste < 0.05 and grouped_waste < random_waste / 5
    assert padding_waste(make_batches(enc, 16, pad_to_max=256)) > random_waste


def test_padding_waste_and_token_stats_by_hand():
    batch = {"attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])}
    assert padding_waste([batch]) == pytest.approx(0.25)
    s = token_stats([100, 200, 300, 600, 800])
    assert s == pytest.approx(dict(mean=400, median=300, p90=720, frac_over_256=0.6, frac_over_512=0.4))
    enc = Encoded([[1] * 10, [1] * 20], torch.tensor([0, 1]))
    assert token_stats(enc)["mean"] == 15


# --------------------------------------------------------------------------- transfer-set augmentation

def _reviews_for_augmenting(n=400, length=60):
    ids = [[101, *range(1000 + i, 1000 + i + length), 102] for i in range(n)]
    return Encoded(ids, torch.tensor([i % 2 for i in range(n)]), "transfer")


def test_augment_masks_at_its_rate_and_keeps_cls_and_sep():
    src = _reviews_for_augmenting()
    out = data.augment(src, mask_id=103, p_mask=0.2, p_window=0.0, seed=1)
    assert len(out) == len(src) and out.name == "augmented"
    assert (out.labels == -1).all()  # the teacher labels them; their own labels are hidden
    masked = total = 0
    for new, old in zip(out.input_ids, src.input_ids):
        assert new[0] == 101 and new[-1] == 102 and len(new) == len(old)
        assert all(t == o or t == 103 for t, o in zip(new[1:-1], old[1:-1]))
        masked += sum(t == 103 for t in new[1:-1])
        total += len(new) - 2
    assert masked / total == pytest.approx(0.2, abs=0.01)


def test_augment_windows_are_contiguous_and_at_least_min_window_long():
    src = _reviews_for_augmenting()
    out = data.augment(src, mask_id=103, p_mask=0.0, p_window=1.0, min_window=0.5, seed=2)
    shorter = 0
    for new, old in zip(out.input_ids, src.input_ids):
        body, old_body = new[1:-1], old[1:-1]
        assert new[0] == 101 and new[-1] == 102
        assert len(body) >= round(0.5 * len(old_body))
        start = old_body.index(body[0])
        assert old_body[start:start + len(body)] == body  # one contiguous window of the review
        shorter += len(body) < len(old_body)
    assert shorter > 0.9 * len(src)


def test_augment_is_reproducible_makes_copies_and_keeps_rates_apart():
    src = _reviews_for_augmenting(n=50)
    a = data.augment(src, mask_id=103, seed=5, copies=2)
    assert a.input_ids == data.augment(src, mask_id=103, seed=5, copies=2).input_ids
    assert a.input_ids != data.augment(src, mask_id=103, seed=6, copies=2).input_ids
    assert len(a) == 100 and a.input_ids[:50] != a.input_ids[50:]  # the second copy is drawn afresh
    untouched = data.augment(src, mask_id=103, p_mask=0.0, p_window=0.0)
    assert untouched.input_ids == src.input_ids


def _reviews(texts, name, labelled=True):
    return Reviews(list(texts), [i % 2 if labelled else -1 for i in range(len(texts))], None, name)


def test_test_reviews_whose_text_is_also_a_training_review_are_left_out_and_said_so():
    """IMDB holds 19 of the shared copy's test reviews in its train split too: such a review is no test."""
    train = [f"train review {i}" for i in range(200)]
    unsup = [f"unlabelled review {i}" for i in range(100)]
    test = [f"test review {i}" for i in range(60)] + [train[5], " " + unsup[7] + " "]  # exact copies, padded
    raw = {"train": _reviews(train, "train"), "test": _reviews(test, "test"),
           "unsupervised": _reviews(unsup, "unsupervised", labelled=False)}
    d = data.split_raw(raw, "mem", val_size=20, n_train=50, n_transfer=40)
    assert len(d.test) == 60 and not (texts(d.test) & (set(train) | set(unsup)))
    assert d.notes == ("test: 2 review(s) left out, their text being in the source's training reviews too",)
    assert_disjoint(d)


def test_a_review_held_twice_is_kept_once_in_one_split():
    """IMDB's train split holds 96 reviews twice and its test split 9: a repeat could land in validation or the
    transfer set beside its copy in train, and a test review held twice weighed double in the accuracy. The carves
    themselves stay as they were (the committed results' splits, but for the repeats)."""
    train = [f"train review {i}" for i in range(300)]
    raw = {"train": _reviews(train + [" " + t for t in train[:40]], "train"),  # 40 repeats, whitespace-padded
           "test": _reviews([f"test review {i}" for i in range(60)] * 2, "test")}
    d = data.split_raw(raw, "mem", val_size=60, n_train=100)
    every = [t.strip() for split in (d.train, d.validation, d.test, d.transfer) for t in split.texts]
    assert len(every) == len(set(every))  # no text twice, in one split or across two
    left = {"train": 100 - len(d.train), "validation": 60 - len(d.validation), "transfer": 180 - len(d.transfer)}
    assert len(d.test) == 60 and sum(left.values()) == 40  # each repeat left out once
    where = ", ".join(f"{n} from {name}" for name, n in left.items() if n)
    assert d.notes[-1] == (f"repeated reviews left out ({where}, 60 from test): the source holds their text more "
                           "than once, and each counts once, in the first of train, validation, transfer that drew "
                           "it (test: once)")


def test_repeats_in_an_unlabelled_split_are_counted_as_the_transfer_sets():
    """The transfer set drawn from an unsupervised split kept that split's name, so its repeats were filed under
    'unsupervised' and the note said the source could not fill the transfer set."""
    unsup = [f"unlabelled review {i}" for i in range(15)]
    raw = {"train": _reviews([f"r{i}" for i in range(100)], "train"),
           "test": _reviews([f"t{i}" for i in range(20)], "test"),
           "unsupervised": _reviews(unsup + unsup[:5], "unsupervised", labelled=False)}
    d = data.split_raw(raw, "mem", val_size=10, n_transfer=20)
    assert len(d.transfer) == 15 and not any("of the 20 asked" in note for note in d.notes), d.notes
    assert d.notes[-1].startswith("repeated reviews left out (5 from transfer)")


def test_no_transfer_reviews_left_is_refused_with_the_fix():
    """With no unlabelled split, an n_train that took every training review left an empty transfer set: accepted,
    then a traceback once the teacher had trained."""
    raw = {"train": _reviews([f"r{i}" for i in range(60)], "train"),
           "test": _reviews([f"t{i}" for i in range(20)], "test")}
    with pytest.raises(DataSourceError, match=r"mem: val_size=10 does not fit the 60 labelled reviews: give --set "
                                              r"val_size=N with 2 <= N <= 9, a smaller --set n_train=N \(it keeps "
                                              r"50\) or more reviews$"):
        data.split_raw(raw, "mem", val_size=10, n_train=50)
    assert data.split_raw(raw, "mem", val_size=9, n_train=50).sizes()["transfer"] == 1  # either advice works
    assert data.split_raw(raw, "mem", val_size=10, n_train=49).sizes()["transfer"] == 1
    with pytest.raises(DataSourceError, match=r"mem: no reviews are left for the transfer set: n_transfer=0 asks "
                                              r"for none: give --set n_train=N"):
        data.split_raw(raw, "mem", val_size=10, n_transfer=0)


@pytest.mark.parametrize("split", ["test", "unsupervised"])
def test_an_empty_test_or_unsupervised_file_is_refused_not_replaced(tmp_path, split):
    """A header-only test.csv became a held-out slice of train (2 to 3 points flattering) without a word."""
    write_parquet(tmp_path / "train.parquet", 200)
    (tmp_path / f"{split}.csv").write_text("text,label\n")
    with pytest.raises(DataSourceError, match=rf"{split}.csv holds no reviews: add them, or remove the file"):
        load_imdb(str(tmp_path), val_size=20)


@pytest.mark.parametrize("text, says", [("", "row 2 has no text (blank)"), ("   ", "row 2 has no text (blank)")])
def test_a_blank_review_in_a_csv_is_refused_like_a_null_one(tmp_path, text, says):
    """A CSV writes a missing text as an empty field: it trained as an empty review, where parquet's null was
    refused."""
    (tmp_path / "train.csv").write_text(f"text,label\ngood film,1\n{text},0\n")
    with pytest.raises(DataSourceError, match=re.escape(says) + ": drop it or fill it in"):
        load_imdb(str(tmp_path), val_size=2)


def test_a_parquet_text_column_of_bytes_is_decoded(tmp_path):
    """Binary texts became reviews reading "b'Arguably this is...'"."""
    pq.write_table(pa.table({"text": [f"review {i} fine".encode() for i in range(40)],
                             "label": [i % 2 for i in range(40)]}), tmp_path / "train.parquet")
    d = load_imdb(str(tmp_path), val_size=4)
    assert all(t.startswith("review ") for t in d.train.texts + d.test.texts)


def test_two_files_for_one_split_are_refused_before_any_work_not_one_ignored(tmp_path):
    """A review: with train.parquet and train.csv in the folder, the parquet file was read and the csv, perhaps the
    one just fixed, ignored without a word; unsupervised.csv beside unsup.csv likewise."""
    write_parquet(tmp_path / "train.parquet", 40)
    (tmp_path / "train.csv").write_text("text,label\ngood film,1\n")
    with pytest.raises(DataSourceError, match="holds train.parquet and train.csv for the train split: keep one of "
                                              r"them \(move the other away\)"):
        data.check_data_source(tmp_path)
    (tmp_path / "train.csv").unlink()
    (tmp_path / "unsupervised.csv").write_text("text\nfine\n")
    (tmp_path / "unsup.csv").write_text("text\nfine too\n")
    with pytest.raises(DataSourceError, match="unsupervised.csv and unsup.csv for the unsupervised split"):
        load_imdb(str(tmp_path), val_size=4)


def test_a_text_column_that_is_not_strings_is_refused_not_read_as_its_repr(tmp_path):
    """A review: a list<string> text column became reviews reading "['r review number 400 ...']", an int column
    reviews reading "400"."""
    for values, kind in (([[f"review {i}"] for i in range(40)], "list"), (list(range(40)), "int")):
        pq.write_table(pa.table({"text": values, "label": [i % 2 for i in range(40)]}), tmp_path / "train.parquet")
        with pytest.raises(DataSourceError, match=f"row 1's text is a {kind}, not a string: give the text column as "
                                                  "strings, one review each"):
            load_imdb(str(tmp_path), val_size=4)


def test_a_csv_naming_a_column_twice_or_holding_a_long_review(tmp_path):
    """A review: `text,text,label` read the last text column without a word; a review over 131,072 characters, valid
    CSV, was refused as "not valid CSV" (csv's default field limit)."""
    (tmp_path / "train.csv").write_text("text,text,label\na,b,1\n")
    with pytest.raises(DataSourceError, match="the header names column 'text' more than once: keep one"):
        load_imdb(str(tmp_path), val_size=2)
    long = "a long review " * 12_000  # 168,000 characters
    rows = "".join(f"review {i} fine,{i % 2}\n" for i in range(39))
    (tmp_path / "train.csv").write_text(f"text,label\n{rows}{long},1\n")
    d = load_imdb(str(tmp_path), val_size=4)
    assert long in d.train.texts + d.validation.texts + d.test.texts + d.transfer.texts
    import csv
    import threading
    assert csv.field_size_limit() == 131_072  # the process's own limit, as it was
    failed = []  # a second review: two reads at once, and one set the limit back under the other's long review

    def read():
        try:
            data._read_csv(tmp_path / "train.csv")
        except DataSourceError as err:
            failed.append(err)
    readers = [threading.Thread(target=read) for _ in range(4)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join()
    assert not failed and csv.field_size_limit() == 131_072


def test_an_unlabelled_file_without_text_is_told_it_needs_no_label(tmp_path):
    """A review: an unsup.csv with no text column was told to "give the file columns text and label"."""
    write_parquet(tmp_path / "train.parquet", 40)
    (tmp_path / "unsup.csv").write_text("review\nfine\n")
    with pytest.raises(DataSourceError, match=r"missing column\(s\) text \(found: 'review'\); give the "
                                              r"file a column text \(unlabelled reviews need no label\)"):
        load_imdb(str(tmp_path), val_size=4)


def test_a_label_of_a_digit_python_cannot_read_is_refused_in_one_line(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\ngood film,1\nbad film,\u00b2\n", encoding="utf-8")
    with pytest.raises(DataSourceError, match=r"row 2 has label '\u00b2'; labels must be 0 \(negative\) or 1"):
        load_imdb(str(tmp_path), val_size=2)


def test_splits_the_source_cannot_fill_are_said_so():
    raw = {"train": _reviews([f"r{i}" for i in range(100)], "train"),
           "test": _reviews([f"t{i}" for i in range(30)], "test")}
    d = data.split_raw(raw, "mem", val_size=10, n_train=20, n_transfer=500, n_test=50)
    assert d.notes == ("transfer: 70 reviews, of the 500 asked (the source holds no more)",
                       "test: 30 reviews, of the 50 asked (the source holds no more)")
    d = data.split_raw(raw, "mem", val_size=10)  # no unlabelled split, no n_train: train is halved, and says so
    assert d.notes == ("no unlabelled split: the transfer reviews are train reviews with their labels hidden, and "
                       "train keeps 45",)
    assert load_imdb("tiny", val_size=200, seed=0).notes == ()  # the built-in corpus fills what tiny asks


def test_a_held_out_slice_that_leaves_too_few_reviews_names_n_test(tmp_path):
    write_parquet(tmp_path / "train.parquet", 40)
    with pytest.raises(DataSourceError) as caught:
        load_imdb(str(tmp_path), n_test=38, val_size=10)
    assert str(caught.value).endswith("give a smaller --set n_test=N or more labelled reviews in the train split")


def test_a_validation_carved_in_runs_names_the_reviews_its_fences_leave_unused_and_a_size_that_fits(tmp_path):
    """val_block's fences (MOVIE_GUARD reviews on either side of each run) leave reviews unused: the largest
    val_size the message offered once did not fit, and no message named val_block."""
    write_parquet(tmp_path / "train.parquet", 400)
    with pytest.raises(DataSourceError) as caught:
        load_imdb(str(tmp_path), val_size=256, val_block=100)
    line = str(caught.value)
    assert re.search(r"val_size=256 does not fit the 260 labelled reviews left after the held-out test slice of 80 "
                     r"\(with val_block=100, each run of validation and of the held-out slice leaves 30 reviews of its "
                     r"class unused on either side\): give --set val_size=N with 2 <= N <= \d+, --set val_block=None "
                     r"\(drawn at random\) or more reviews$", line)
    most = int(re.search(r"N <= (\d+)", line).group(1))
    assert most < 256 and load_imdb(str(tmp_path), val_size=most, val_block=100).sizes()["validation"] == most
    with pytest.raises(DataSourceError, match=f"val_size={most + 1} does not fit"):  # the largest that fits
        load_imdb(str(tmp_path), val_size=most + 1, val_block=100)
    assert load_imdb(str(tmp_path), val_size=256).sizes()["validation"] == 256  # the other advice
    write_parquet(tmp_path / "train.parquet", 40)  # a held-out slice's runs and fences take every review
    with pytest.raises(DataSourceError, match=r"are too few .* give --set val_block=None \(drawn at random\), a "
                                              r"smaller --set n_test=N or more labelled reviews in the train split$"):
        load_imdb(str(tmp_path), n_test=2, val_size=10, val_block=100)
    assert load_imdb(str(tmp_path), n_test=2, val_size=10).sizes()["validation"] == 10


def test_special_tokens_written_in_a_review_are_text(tok):
    """A review (a user's CSV) that says "[SEP]" got the separator's id in the middle of its sequence."""
    enc = encode(Reviews(["fine [SEP] then [CLS] worse"], [1], None, "r"), tok, 64)
    ids = enc.input_ids[0]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.sep_token_id not in ids[1:-1] and tok.cls_token_id not in ids[1:-1]


def test_the_val_size_offered_leaves_n_train_and_a_transfer_set_and_runs_need_only_both_classes_left():
    """Without unlabelled reviews, validation must leave n_train reviews and at least one for the transfer set:
    the largest val_size once offered then failed at the transfer carve. Carved in runs, what is left needs both
    classes, not two of each (that refused a carve that had worked)."""
    test = data.Reviews([f"t{i}" for i in range(10)], [i % 2 for i in range(10)], None, "test")
    train = data.Reviews([f"r{i}" for i in range(100)], [i % 2 for i in range(100)], None, "train")
    with pytest.raises(DataSourceError, match=r"val_size=80 does not fit the 100 labelled reviews: give --set "
                                              r"val_size=N with 2 <= N <= 49, a smaller --set n_train=N \(it keeps "
                                              r"50\) or more reviews$") as caught:
        data.split_raw({"train": train, "test": test}, "src", val_size=80, n_train=50)
    most = int(re.search(r"N <= (\d+)", str(caught.value)).group(1))
    carved = data.split_raw({"train": train, "test": test}, "src", val_size=most, n_train=50)
    assert carved.sizes()["validation"] == most and carved.sizes()["train"] == 50 and carved.sizes()["transfer"] >= 1
    bits = ("0100111100111010100101110000100001010000101110111101101000111000000110101100000110011001001110000000"
            "10111000111010")
    lopsided = data.Reviews([f"r{i}" for i in range(len(bits))], [int(b) for b in bits], None, "train")
    carved = data.split_raw({"train": lopsided, "test": test}, "src", val_size=2, seed=4, val_block=20)
    assert sorted(set(carved.train.labels)) == [0, 1] and carved.sizes()["validation"] == 2


def test_a_missing_datasets_package_names_pip_not_prefetch(monkeypatch):
    """Without the datasets package, reading IMDB from the Hub said to run prefetch, which needs the same package."""
    import sys

    from kd_tutorial import data
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ModuleNotFoundError
    with pytest.raises(data.DataSourceError, match=r"needs the datasets package, which is not installed: pip install "
                                                   r'"datasets>=2.19", or set KD_TUTORIAL_DATA_DIR'):
        data._hub_raw()


def _prepared_imdb(cache, rows: dict, shards: dict | None = None, folder: str = "plain_text/0.0.0/" + "a" * 40):
    """A copy of stanfordnlp/imdb in the datasets cache ``cache`` as ``load_dataset`` prepares it (and reads it
    offline): each split's Arrow file(s), ``imdb-SPLIT.arrow`` or ``imdb-SPLIT-0000i-of-0000n.arrow``, and the
    dataset_info.json that lists them. ``rows``: split -> (texts, labels); ``shards``: split -> number of files."""
    import datasets
    from datasets.arrow_writer import ArrowWriter
    target = cache / "stanfordnlp___imdb" / folder
    target.mkdir(parents=True)
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.Value("int64")})
    splits = datasets.SplitDict()
    for name, (texts, labels) in rows.items():
        n = (shards or {}).get(name, 1)
        cuts = [len(texts) * i // n for i in range(n + 1)]
        for i in range(n):
            file = target / (f"imdb-{name}.arrow" if n == 1 else f"imdb-{name}-{i:05d}-of-{n:05d}.arrow")
            with ArrowWriter(features=features, path=str(file)) as writer:
                writer.write_batch({"text": texts[cuts[i]:cuts[i + 1]], "label": labels[cuts[i]:cuts[i + 1]]})
                writer.finalize()
        lengths = [cuts[i + 1] - cuts[i] for i in range(n)] if n > 1 else None
        splits.add(datasets.SplitInfo(name=name, num_examples=len(texts), shard_lengths=lengths))
    datasets.DatasetInfo(config_name=folder.split("/")[0], features=features, splits=splits).write_to_directory(
        str(target))
    return target


IMDB_ROWS = {"train": (["good", "bad", "fine", "awful", "great"], [1, 0, 1, 0, 1]),
             "test": (["nice", "dull"], [1, 0]), "unsupervised": (["meh"], [-1])}


@pytest.mark.parametrize("refusal", [OSError(30, "Read-only file system"), PermissionError(13, "Permission denied")])
def test_imdb_is_read_from_a_hugging_face_cache_that_cannot_be_written(tmp_path, monkeypatch, refusal):
    """A workshop's Hugging Face cache on a read-only share (or another user's folder): load_dataset, offline,
    could not create its lock file there, and distill said to run prefetch, which had been run."""
    import datasets
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    _prepared_imdb(tmp_path, IMDB_ROWS, shards={"train": 2})

    def load_dataset(path, *args, **kwargs):
        try:
            raise refusal
        except OSError as err:  # datasets lets filelock's error through as it is; wrapped here to check the chain
            raise RuntimeError("while preparing") from err
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    raw = data._hub_raw()
    assert {name: (r.texts, r.labels) for name, r in raw.items()} == {k: (t, y) for k, (t, y) in IMDB_ROWS.items()}
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(DataSourceError, match="run `kd-tutorial prefetch"):  # not a refused write: as before
        data._hub_raw()


def test_env_says_imdb_is_cached_only_where_load_dataset_finds_it_offline(tmp_path, monkeypatch):
    """A prefetch cut while IMDB downloaded leaves some of its files in the Hub's cache, and nothing prepared:
    env and notebook 00 said "cached", and distill failed offline in the workshop."""
    import datasets
    from huggingface_hub.utils import _cache_manager

    from kd_tutorial.artifacts import cache_status
    cpu = get_profile("cpu")
    monkeypatch.delenv("KD_TUTORIAL_DATA_DIR", raising=False)
    hub = tmp_path / "hub" / "datasets--stanfordnlp--imdb"
    (hub / "snapshots" / ("a" * 40) / "plain_text").mkdir(parents=True)
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text("a" * 40)
    (hub / "snapshots" / ("a" * 40) / "plain_text" / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
    monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    # and the fix that needs no network, as the teacher's line gives one (an offline room: an instructor's walkthrough)
    missing = ("missing (run `kd-tutorial prefetch --profile cpu`), or set KD_TUTORIAL_DATA_DIR to a local copy of "
               f"IMDB (train.parquet and test.parquet, or aclImdb: {SETUP_MIRRORS})")
    assert cache_status(cpu)["stanfordnlp/imdb"] == missing
    cut = _prepared_imdb(tmp_path / "datasets", IMDB_ROWS, folder="plain_text/0.0.0/" + "b" * 40 + ".incomplete")
    assert cache_status(cpu)["stanfordnlp/imdb"] == missing  # still being prepared when it was cut
    shared = _prepared_imdb(tmp_path / "datasets", IMDB_ROWS, shards={"train": 2})
    (shared / "imdb-train-00001-of-00002.arrow").rename(cut / "moved.arrow")  # a copy that lost a file
    assert cache_status(cpu)["stanfordnlp/imdb"] == missing
    (cut / "moved.arrow").rename(shared / "imdb-train-00001-of-00002.arrow")
    assert cache_status(cpu)["stanfordnlp/imdb"] == "cached"


@pytest.mark.parametrize("labels", [[0, 2, -1], torch.tensor([0.0, 2.0, 1.0]), torch.tensor([0, 1])])
def test_encoded_refuses_labels_no_batch_could_read(labels):
    """Labels given as a Python list (or floats, or one short) built an Encoded, and training then stopped in the
    batch thread on "only integer tensors of a single element can be converted to an index"."""
    with pytest.raises(ValueError, match=r"labels must be a torch.long tensor of shape \(3,\).*torch.tensor\(labels"):
        Encoded([[101, 7, 102]] * 3, labels, "mine")
    three = Encoded([[101, 7, 102]] * 3, torch.tensor([0, 2, -1]), "mine")  # three classes, one unlabelled row
    assert data.collate(three, [0, 1, 2])["labels"].tolist() == [0, 2, -1]


def test_augment_windows_start_anywhere_in_the_review():
    """Guards against a window that always keeps a review's first tokens (or always its last): Tang et al.'s n-gram
    sampling draws where the window starts, so the teacher labels every part of a long review. Also that
    ``p_window`` is the share of reviews cut to a window."""
    src = _reviews_for_augmenting()
    out = data.augment(src, mask_id=103, p_mask=0.0, p_window=1.0, min_window=0.5, seed=2)
    starts = [old.index(new[1]) - 1 for new, old in zip(out.input_ids, src.input_ids)]
    ends = [s + len(new) - 2 for s, new in zip(starts, out.input_ids)]
    assert sum(s == 0 for s in starts) < 0.2 * len(src) and sum(e == 60 for e in ends) < 0.2 * len(src)
    assert max(starts) > 20  # up to 30 tokens of 60 can be cut before a window of half the review
    quarter = data.augment(src, mask_id=103, p_mask=0.0, p_window=0.25, seed=2)
    cut = sum(len(new) < len(old) for new, old in zip(quarter.input_ids, src.input_ids)) / len(src)
    assert cut == pytest.approx(0.25, abs=0.06)


def test_the_seed_draws_the_transfer_set_too():
    """Guards against a transfer set drawn from the unlabelled split with a fixed seed: the seed varies train,
    validation and transfer (only the test set stays), so seeds averaged in a table differ in their transfer set."""
    raw = {"train": _reviews([f"r{i}" for i in range(200)], "train"), "test": _reviews(["t0", "t1"], "test"),
           "unsupervised": _reviews([f"u{i}" for i in range(300)], "unsupervised", labelled=False)}
    a, again, b = (data.split_raw(raw, "mem", n_train=100, n_transfer=100, val_size=20, seed=s) for s in (0, 0, 1))
    assert a.transfer.texts == again.transfer.texts and texts(a.transfer) != texts(b.transfer)


def test_a_spare_review_the_source_holds_twice_is_spare_once():
    """Guards against spare reviews that keep a repeated text twice (once as " b " with spaces): the student would
    learn the teacher's answer on it twice. Each text once, in source order, negatives first; used texts never."""
    raw = Reviews(["a", "b", "a", " b ", "c", "d"], [0, 1, 0, 1, 0, 1], None, "train")
    none = Reviews([], [], None, "")
    d = data.ImdbData(Reviews(["c"], [0], None, "train"), none, Reviews(["d"], [1], None, "test"), none, "mem")
    spare = data.spare_reviews(raw, d, guard=False)
    assert spare.texts == ["a", "b"] and spare.labels == [-1, -1]


@pytest.mark.parametrize("name, prefetch", [("cpu", "cpu"), ("full", "full"), ("tiny", "cpu")])
def test_imdb_offline_names_the_prefetch_of_the_profile_being_run(monkeypatch, name, prefetch):
    """`kd-tutorial distill --profile full` offline said to run `kd-tutorial prefetch --profile cpu`, which fetches
    IMDB but not bert-base-uncased or BERT-tiny: the next run failed again, on the first of those."""
    import datasets
    monkeypatch.delenv("KD_TUTORIAL_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(DataSourceError, match=rf"run `kd-tutorial prefetch --profile {prefetch}` while online"):
        data.load_for_profile(get_profile(name), data_dir="hub")  # tiny's prefetch fetches nothing: cpu's


def test_notebook_09s_imdb_offline_names_the_full_profiles_prefetch(monkeypatch):
    """Notebook 09 on `full` (gpt2 on IMDB) offline was told to prefetch the cpu profile, which fetches no gpt2."""
    import datasets

    from kd_tutorial import lm
    monkeypatch.delenv("KD_TUTORIAL_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(DataSourceError, match=r"run `kd-tutorial prefetch --profile full` while online"):
        lm.load_texts(lm.LM_PROFILES["full"])


def test_prefetch_builds_ahead_in_order_raises_builds_errors_and_waits_for_its_thread_when_closed():
    """A run that ended on an error left the prefetch thread inside a batch as the interpreter exited, which now and
    then aborted the process ("terminate called without an active exception", status 134 for 2). Closing the
    generator now waits for the item being built."""
    import threading
    import time

    from kd_tutorial.data import prefetch

    def alive():
        return [t for t in threading.enumerate() if t.name == "kd_tutorial-prefetch"]
    assert list(prefetch(lambda i: i * i, range(5))) == [0, 1, 4, 9, 16]

    def slow(i):
        time.sleep(0.3)
        return i
    batches = prefetch(slow, range(100))
    assert next(batches) == 0
    batches.close()  # left early, its thread inside slow()
    assert not alive()

    def broken(i):
        raise ValueError(f"row {i}")
    with pytest.raises(ValueError, match="row 0"):
        list(prefetch(broken, range(3)))


def test_length_grouped_batches_come_in_a_shuffled_order_not_longest_first():
    """Rows are sorted by length within a chunk, then the batches are shuffled: without that last shuffle every
    epoch opened on the longest batch and ended on the shortest (and the shuffle of the rows did nothing)."""
    enc = Encoded([[1] * n for n in range(3, 43)], torch.zeros(40, dtype=torch.long), "lengths")
    for seed in range(3):
        groups = data.batch_groups(enc, 4, shuffle=True, group_by_length=True, seed=seed)
        widths = [max(enc.lengths[i] for i in g) for g in groups]
        assert sorted(sorted(len(enc.input_ids[i]) for i in g) for g in groups) == \
            [list(range(n, n + 4)) for n in range(3, 43, 4)]  # each batch: 4 neighbouring lengths
        assert widths != sorted(widths, reverse=True) and widths != sorted(widths)
