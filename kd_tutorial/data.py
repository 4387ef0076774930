"""IMDB data: loading, splitting, tokenizing, truncating and batching.

Sources (``load_imdb(source)``):
  "tiny"   the built-in corpus (:mod:`kd_tutorial.corpus`), offline, instant;
  "hub"    ``stanfordnlp/imdb`` from the Hugging Face Hub (train / test / unsupervised), or its prepared copy
           in a Hugging Face cache that cannot be written (a read-only share);
  a folder in aclImdb layout (train/pos, train/neg, test/pos, test/neg, train/unsup)
           or with train / test / unsupervised ``.parquet`` or ``.csv`` files (columns text, label).

Splits are disjoint, and a review the source holds twice counts once: validation is carved (stratified, seeded)
from train; with no test split, the test set is a stratified *held-out* slice of train
(``ImdbData.test_is_held_out``). The transfer set, which the teacher labels for the students, has its labels hidden
(-1) so they can never reach a cross-entropy.

Data that cannot work (a file that is not parquet / UTF-8 CSV, a missing column, labels other than 0/1,
a split too small for ``val_size`` or without both classes) is refused before anything trains, with a
one-line :class:`DataSourceError` (a :class:`kd_tutorial.errors.UserError`) that names the fix.

transformers and datasets are imported lazily, inside the functions that use them.
"""
from __future__ import annotations

import csv
import errno
import json
import numbers
import os
import queue
import random
import re
import statistics
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .corpus import generate_corpus
from .errors import error_chain, model_source_error, not_utf8, NOT_UTF8_FIX, stray_quotes, stray_space, UserError
from .profiles import check_profile, MARKUPS, TRUNCATIONS


VOCAB_PATH = Path(__file__).parent / "resources" / "vocab.txt"  # bert-base-uncased WordPiece, 30,522 tokens
DATA_DIR_ENV = "KD_TUTORIAL_DATA_DIR"
HUB_DATASET = "stanfordnlp/imdb"
NAMED_SOURCES = ("tiny", "hub", HUB_DATASET)  # the sources load_imdb reads by name; any other is a folder


class DataSourceError(UserError):
    """The data could not be loaded; the message says why and what to do, in one line."""


COLUMNS_HINT = "columns text and label (0 negative, 1 positive)"


# ----------------------------------------------------------------------------- containers

@dataclass
class Reviews:
    """Parallel lists of review texts and labels (0 neg, 1 pos, -1 unlabelled), optional stars."""
    texts: list[str]
    labels: list[int]
    stars: list[int] | None = None
    name: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> "Reviews":
        """The reviews at ``indices``, in that order."""
        idx = list(indices)
        return Reviews([self.texts[i] for i in idx], [self.labels[i] for i in idx],
                       None if self.stars is None else [self.stars[i] for i in idx], self.name)

    def renamed(self, name: str) -> "Reviews":
        """The same reviews under another name."""
        return Reviews(self.texts, self.labels, self.stars, name)

    def unlabelled(self, name: str = "transfer") -> "Reviews":
        """The same texts with labels hidden (-1) and stars dropped."""
        return Reviews(self.texts, [-1] * len(self), None, name)


@dataclass
class ImdbData:
    """The four disjoint splits of one experiment and where they came from."""
    train: Reviews
    validation: Reviews
    test: Reviews
    transfer: Reviews
    source: str
    test_is_held_out: bool = False  # True: "test" is a slice of train; reports must say "held-out"
    notes: tuple[str, ...] = ()  # where the splits differ from what was asked (too few reviews, duplicates dropped)
    # the train reviews no split holds, labels hidden (:func:`spare_reviews`), for students with spare_reviews=True
    spare: Reviews = field(default_factory=lambda: Reviews([], [], name="spare"))

    def sizes(self) -> dict[str, int]:
        """Number of reviews per split."""
        return {k: len(getattr(self, k)) for k in ("train", "validation", "test", "transfer")}


# ----------------------------------------------------------------------------- splitting

# IMDB lists the reviews of one movie one after another (at most 30 of them): in the Hub's train split the
# reviews next to a review are about 3 times as similar to it (TF-IDF cosine) as a random review is, and half of
# the reviews have their most similar review of the class within 30 rows (docs/tuning.md, "A validation split of
# unseen movies"). A validation split carved at random therefore shares its movies with the training reviews, and
# flatters any model that memorises a movie's names; one carved in runs of consecutive reviews, with this many
# reviews dropped on either side of each run, shares almost none (``val_block``).
MOVIE_GUARD = 30


def _rng(seed: int, step: str) -> random.Random:
    return random.Random(f"kd_tutorial-{seed}-{step}")  # str seeds are hashed with sha512: stable everywhere


def _by_label(labels: list[int], n: int | None) -> tuple[dict[int, list[int]], dict[int, int]]:
    """Each class's row indices in source order, and how many of ``n`` rows each class gets (its share,
    largest remainders first)."""
    total = len(labels)
    n = total if n is None else max(0, min(n, total))
    by_label: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_label.setdefault(y, []).append(i)
    keys = sorted(by_label)
    quota = {k: n * len(by_label[k]) // total if total else 0 for k in keys}
    for k in sorted(keys, key=lambda k: -(n * len(by_label[k]) % max(total, 1)))[: n - sum(quota.values())]:
        quota[k] += 1  # largest remainders get the leftover rows
    return {k: by_label[k] for k in keys}, quota


def _stratified(labels: list[int], n: int | None, rng: random.Random) -> tuple[list[int], list[int]]:
    """Split row indices into (n chosen, rest), keeping class proportions; both lists shuffled."""
    by_label, quota = _by_label(labels, n)
    for rows in by_label.values():
        rng.shuffle(rows)
    chosen = [i for k, rows in by_label.items() for i in rows[: quota[k]]]
    rest = [i for k, rows in by_label.items() for i in rows[quota[k]:]]
    rng.shuffle(chosen)
    rng.shuffle(rest)
    return chosen, rest


def _in_blocks(labels: list[int], n: int | None, block: int, rng: random.Random,
               guard: int = MOVIE_GUARD) -> tuple[list[int], list[int]]:
    """Like :func:`_stratified`, but each class's chosen rows are runs of ``block`` consecutive rows of that
    class (in source order), and the ``guard`` rows of the class on either side of a run are in neither list.

    IMDB lists the reviews of one movie one after another, so a run with its guards around it shares
    (almost) no movie with the rest of its class: the :data:`MOVIE_GUARD` note says why this matters.
    """
    by_label, quota = _by_label(labels, n)
    chosen, rest = [], []
    for k, rows in by_label.items():
        starts = list(range(0, len(rows), block))
        rng.shuffle(starts)
        taken: list[range] = []
        for start in starts:
            need = quota[k] - sum(len(r) for r in taken)
            if need <= 0:
                break
            taken.append(range(start, min(start + block, start + need, len(rows))))
        fenced = {j for r in taken for j in range(max(0, r.start - guard), min(len(rows), r.stop + guard))}
        chosen += [rows[j] for r in taken for j in r]
        rest += [rows[j] for j in range(len(rows)) if j not in fenced]
    rng.shuffle(chosen)
    rng.shuffle(rest)
    return chosen, rest


def _carve(reviews: Reviews, n: int | None, rng: random.Random, name: str,
           block: int | None = None) -> tuple[Reviews, Reviews]:
    """``(n rows named name, the rest)``, stratified; with ``block``, in runs of that many (:func:`_in_blocks`),
    and the rest then stays in source order, so that a later carve in runs still finds each movie's reviews
    together."""
    chosen, rest = _in_blocks(reviews.labels, n, block, rng) if block else _stratified(reviews.labels, n, rng)
    return reviews.subset(chosen).renamed(name), reviews.subset(sorted(rest) if block else rest)


def _check_labels(reviews: Reviews, where: str) -> None:
    """Refuse a labelled split with labels other than 0 and 1."""
    bad = sorted(set(reviews.labels) - {0, 1}, key=str)
    if bad:
        raise DataSourceError(f"{where}: the {reviews.name or 'labelled'} split has labels {bad[:5]}; labels must be "
                              "0 (negative) or 1 (positive): map them to 0/1 in the data (e.g. neg -> 0, pos -> 1)")


def _check_classes(reviews: Reviews, where: str, role: str, fix: str) -> None:
    """Refuse a labelled split that is empty or holds only one class; ``fix`` says what to do."""
    neg, pos = reviews.labels.count(0), reviews.labels.count(1)
    if not neg or not pos:
        what = "is empty" if not len(reviews) else f"has {neg} negative and {pos} positive review(s)"
        raise DataSourceError(f"{where}: the {role} split {what}, and it needs reviews of both classes: {fix}")


@dataclass(frozen=True)
class _Rest:
    """What the labelled reviews left after validation must give: ``n_train`` to train on, and, without unlabelled
    reviews (``has_unsup`` false), at least one for the transfer set; ``reviews`` is the least that can."""
    n_train: int | None
    n_transfer: int | None
    has_unsup: bool
    seed: int

    @property
    def reviews(self) -> int:
        """The fewest reviews that can: 2 to train on, and 2 more for transfer (or ``n_train`` and one more)."""
        return 2 if self.has_unsup else max(4, (self.n_train or 0) + 1)

    def enough(self, left: Reviews, block: int | None) -> bool:
        """Whether ``left`` can: carved in runs, whose fences need not leave the classes balanced, the carves
        that follow are made here, and their train split must hold both classes."""
        if len(left) < self.reviews or not block:
            return len(left) >= self.reviews
        if not self.has_unsup:
            try:
                left = _transfer_from_train(left, self.n_train, self.n_transfer, self.seed, "", None)[1]
            except DataSourceError:  # n_transfer=0: refused by the carve itself, whatever validation leaves
                return True
        train = _carve(left, self.n_train, _rng(self.seed, "train"), "train")[0]
        return 0 in train.labels and 1 in train.labels


def _carve_validation(train: Reviews, val_size, block: int | None, rest: _Rest, where: str,
                      after: str) -> tuple[Reviews, Reviews]:
    """``(validation, the rest of train)``: ``val_size`` reviews carved from ``train`` (in runs of ``block`` when
    given), refused in one line when what is left cannot give ``rest``."""
    if isinstance(val_size, int) and not isinstance(val_size, bool) and val_size >= 2:
        validation, left = _carve(train, val_size, _rng(rest.seed, "val"), "validation", block=block)
        if len(validation) == val_size and rest.enough(left, block):
            return validation, left
    most = len(train) - rest.reviews if not block else _most_in_blocks(train, rest, block)
    fences = (f" (with val_block={block}, each run of validation{' and of the held-out slice' if after else ''} "
              f"leaves {MOVIE_GUARD} reviews of its class unused on either side)" if block else "")
    unfence = ["--set val_block=None (drawn at random)"] if block else []
    fewer = [f"a smaller --set n_train=N (it keeps {rest.n_train})"] if rest.reviews > 4 else []
    if most < 2:
        smaller = ["a smaller --set n_test=N"] if after else []  # the held-out slice took the rest
        need = f" (at least {rest.reviews + 2} needed)" if not block else fences  # the fences' share varies
        raise DataSourceError(f"{where}: {len(train)} labelled review(s){after} are too few for a validation split "
                              f"and training{need}: give "
                              f"{_either(unfence + fewer + smaller + ['more labelled reviews in the train split'])}")
    fixes = [f"--set val_size=N with 2 <= N <= {most}"] + unfence + fewer + ["more reviews"]
    raise DataSourceError(f"{where}: val_size={val_size} does not fit the {len(train)} labelled reviews{after}"
                          f"{fences}: give {_either(fixes)}")


def _either(fixes: list[str]) -> str:
    """``a, b or c``: the fixes of one message."""
    return fixes[0] if len(fixes) == 1 else ", ".join(fixes[:-1]) + " or " + fixes[-1]


def _most_in_blocks(train: Reviews, rest: _Rest, block: int) -> int:
    """The largest validation size whose runs, with their fences, leave what ``rest`` asks for (searched by
    halving: the runs taken for a size are those taken for a smaller one and more, so the reviews left shrink);
    the size returned was checked, 0 when none fits."""
    low, high = 0, len(train) - rest.reviews
    while low < high:
        mid = (low + high + 1) // 2
        left = _in_blocks(train.labels, mid, block, _rng(rest.seed, "val"))[1]
        if rest.enough(train.subset(sorted(left)), block):
            low = mid
        else:
            high = mid - 1
    return low


def _check_block(val_block) -> int | None:
    """Refuse a ``val_block`` that is not None or a positive whole number."""
    if val_block is not None and (not isinstance(val_block, int) or isinstance(val_block, bool) or val_block < 1):
        raise DataSourceError(f"val_block={val_block!r} must be a whole number of reviews, at least 1 (or none, "
                              "for a validation split drawn at random): give --set val_block=100")
    return val_block


def split_raw(raw: dict[str, Reviews | None], source: str, *, n_train=None, n_transfer=None, n_test=None,
              val_size=1000, seed=0, val_block: int | None = None) -> ImdbData:
    """Turn raw splits {"train", "test"?, "unsupervised"?} into disjoint train/validation/test/transfer, and the
    train reviews left over (``spare``, :func:`spare_reviews`).

    ``val_block`` carves validation in runs of that many consecutive reviews of each class, with
    :data:`MOVIE_GUARD` reviews on either side of each run left unused (None: rows drawn at random).

    A review the source holds more than once is kept once: in test, once; otherwise in the first of train,
    validation and transfer that drew it (so a split may hold a few reviews fewer than asked; ``notes`` says so).

    A :class:`DataSourceError` refuses labels other than 0/1, an empty train split, a ``val_size`` the
    reviews cannot hold, no reviews left for the transfer set, and any labelled split that would end up without
    both classes.
    """
    train, test, unsup = raw.get("train"), raw.get("test"), raw.get("unsupervised")
    if train is None:
        raise DataSourceError(f"{source}: no train split: give a source with labelled training reviews")
    _check_labels(train, source)
    _check_classes(train, source, "train", "add labelled reviews of both classes (label 0 and 1) to it")
    held_out = test is None or len(test) == 0
    test_rng = _rng(0, "test")  # the same test set for every seed: seeds vary train/validation/transfer only
    if held_out:  # no test split: a stratified held-out slice of train (20% unless n_test says otherwise), carved
        # in runs as validation is, when val_block says so: a slice drawn at random shares movies with training
        test, train = _carve(train, n_test if n_test is not None else len(train) // 5, test_rng, "held-out",
                             block=_check_block(val_block))
    else:
        _check_labels(test, source)
        _check_classes(test, source, "test", "add reviews of the rarer class to it (no --set n_test draws a class "
                       "it lacks)")
        test = _carve(test, n_test, test_rng, "test")[0]
    test, dropped = _without_texts(test, [train, unsup])
    test, repeats = _without_texts(test, [], itself=True)
    has_unsup = unsup is not None and len(unsup) > 0
    after = f" left after the held-out test slice of {len(test)}" if held_out else ""
    rest = _Rest(n_train, n_transfer, has_unsup, seed)
    validation, train = _carve_validation(train, val_size, _check_block(val_block), rest, source, after)
    if has_unsup:
        transfer = unsup.subset(_stratified([-1] * len(unsup), n_transfer, _rng(seed, "transfer"))[0])
    else:  # transfer = other train reviews, labels hidden
        transfer, train = _transfer_from_train(train, n_train, n_transfer, seed, source, val_block)
    train = _carve(train, n_train, _rng(seed, "train"), "train")[0]
    (train, validation, transfer), repeated = _keep_once(train, validation, transfer)
    repeated |= {"test": repeats} if repeats else {}
    notes = _notes({"train": (train, n_train), "transfer": (transfer, n_transfer),
                    "test": (test, None if held_out else n_test)}, dropped, has_unsup, repeated)
    data = ImdbData(train, validation, test.renamed("held-out" if held_out else "test"),
                    transfer.unlabelled("transfer"), source + ("; test = held-out slice of train" if held_out else ""),
                    held_out, notes)
    _check_carved(data, source, dropped, repeated)
    data.spare = spare_reviews(raw["train"], data, guard=val_block is not None)
    return data


def _transfer_from_train(train: Reviews, n_train, n_transfer, seed: int, where: str,
                         val_block) -> tuple[Reviews, Reviews]:
    """``(transfer, the rest of train)`` for a source without unlabelled reviews: other train reviews, of which
    train keeps ``n_train`` (or half of what is left); refused in one line when none are left for transfer."""
    keep = n_train if n_train is not None else len(train) // 2
    n_tf = min(n_transfer if n_transfer is not None else len(train), max(0, len(train) - keep))
    if n_tf < 1:
        why = (f"n_transfer={n_transfer} asks for none" if n_transfer is not None and n_transfer < 1 else
               f"n_train={keep} takes all {len(train)} training reviews left after validation")
        unfence = ", --set val_block=None (no reviews unused around validation's runs)" if val_block else ""
        raise DataSourceError(f"{where}: no reviews are left for the transfer set: {why}: give --set n_train=N "
                              f"below the reviews left, a smaller --set val_size=N{unfence}, or add an "
                              "unsupervised.parquet of unlabelled reviews")
    return _carve(train, n_tf, _rng(seed, "transfer"), "transfer")


def spare_reviews(raw_train: Reviews, data: ImdbData, guard: bool = True) -> Reviews:
    """The source's train reviews that no split of ``data`` holds, labels hidden: each text once and, with
    ``guard`` (validation carved in runs), none within :data:`MOVIE_GUARD` reviews of its class of a validation
    review (or of a held-out test review), so that they share no movie with what chooses or scores a run. In source
    order, negative reviews first.

    On a folder of IMDB's train and test splits the ``cpu`` profile's splits use about 11,000 of the 25,000 train
    reviews, so a student with ``spare_reviews`` learns from the teacher's answers on about 13,000 more
    (docs/tuning.md, e32); from the Hub, whose unlabelled split gives the transfer set, about 21,400."""
    splits = (data.train, data.validation, data.transfer, data.test)
    used = {t.strip() for split in splits for t in split.texts}
    guarded = {t.strip() for t in data.validation.texts} | (
        {t.strip() for t in data.test.texts} if data.test_is_held_out else set()) if guard else set()
    keep = []
    for label in sorted(set(raw_train.labels)):
        rows = [i for i, y in enumerate(raw_train.labels) if y == label]
        near = {q for p, i in enumerate(rows) if raw_train.texts[i].strip() in guarded
                for q in range(p - MOVIE_GUARD, p + MOVIE_GUARD + 1)}
        for p, i in enumerate(rows):
            text = raw_train.texts[i].strip()
            if p not in near and text not in used:
                used.add(text)  # each text once
                keep.append(i)
    return raw_train.subset(keep).unlabelled("spare")


def _check_carved(data: ImdbData, source: str, dropped: int, repeated: dict[str, int]) -> None:
    """Refuse a carved split without both classes, naming the knob to change (``dropped``: test reviews left out
    as training reviews; all of them, for a test split copied from train, which then says so; ``repeated``: split ->
    reviews left out as repeats, which a knob alone may not bring back)."""
    for split, knob, key in ((data.train, "n_train", "train"), (data.validation, "val_size", "validation"),
                             (data.test, "n_test", "test")):
        fix = f"add reviews of the rarer class, or change --set {knob}=N"
        if repeated.get(key):
            fix += (f"; {repeated[key]} of its reviews were left out as repeats (the source holds their text more "
                    "than once): give a source with more distinct reviews")
        if split is data.test and dropped and not len(split):
            other = ("a source with more distinct reviews (the slice is carved from train, whose other reviews or "
                     "the unlabelled ones hold the same texts)" if data.test_is_held_out else "a test split of other "
                     "reviews")
            fix = (f"{dropped} of its reviews are also in the source's training reviews and were left out (a review "
                   f"seen in training tests nothing): give {other}")
        _check_classes(split, source, split.name, fix)


def _notes(splits: dict, dropped: int, has_unsup: bool, repeated: dict[str, int]) -> tuple[str, ...]:
    """Where the carve differs from what was asked (``splits``: name -> (reviews, number asked or None)): a split
    the source could not fill, test reviews left out as train reviews, repeated reviews left out (``repeated``:
    split -> count), train halved to make a transfer set."""
    left_out = repeated | {"test": repeated.get("test", 0) + dropped}
    notes = [f"{name}: {len(split):,} reviews, of the {asked:,} asked (the source holds no more)"
             for name, (split, asked) in splits.items()
             if asked is not None and len(split) + left_out.get(name, 0) < asked]
    if dropped:
        notes.append(f"test: {dropped} review(s) left out, their text being in the source's training reviews too")
    if repeated:
        where = ", ".join(f"{n} from {name}" for name, n in repeated.items())
        notes.append(f"repeated reviews left out ({where}): the source holds their text more than once, and each "
                     "counts once, in the first of train, validation, transfer that drew it (test: once)")
    train, asked = splits["train"]
    if not has_unsup and asked is None:
        notes.append(f"no unlabelled split: the transfer reviews are train reviews with their labels hidden, and "
                     f"train keeps {len(train):,}")
    return tuple(notes)


def _keep_once(*splits: Reviews) -> tuple[tuple[Reviews, ...], dict[str, int]]:
    """``splits`` (train, validation, transfer) with each text (stripped) kept once, in the first split that drew
    it; the carves stay as they were, so no other review moves. Also how many each split left out (where any)."""
    kept, repeated = [], {}
    for name, split in zip(("train", "validation", "transfer"), splits):  # not split.name: transfer drawn from an
        once, n = _without_texts(split, kept, itself=True)                  # unsupervised split keeps that name
        kept.append(once)
        if n:
            repeated[name] = n
    return tuple(kept), repeated


def _without_texts(reviews: Reviews, others, itself: bool = False) -> tuple[Reviews, int]:
    """``reviews`` less those whose text (stripped) is also in one of ``others`` (None entries skipped): IMDB holds a
    few reviews twice, some in both train and test, and a test review seen in training is no test. Also the count
    left out."""
    seen = {t.strip() for other in others if other is not None for t in other.texts}
    keep = []
    for i, text in enumerate(reviews.texts):
        if text.strip() not in seen:
            keep.append(i)
            if itself:  # ``itself``: a repeat inside ``reviews`` goes too (its first place stays)
                seen.add(text.strip())
    return (reviews if len(keep) == len(reviews) else reviews.subset(keep)), len(reviews) - len(keep)


# ----------------------------------------------------------------------------- sources

def _tiny_raw() -> dict[str, Reviews]:
    c = generate_corpus(seed=0)
    return {split: Reviews([r["text"] for r in rows], [r["label"] for r in rows], [r["stars"] for r in rows], split)
            for split, rows in c.items()}


def _hub_raw(prefetch_profile: str = "cpu") -> dict[str, Reviews]:
    """The Hub's IMDB splits; offline with nothing cached, one line naming ``kd-tutorial prefetch --profile
    <prefetch_profile>``, the profile being run (the full profile's prefetch also fetches its own models; the tiny
    profile's fetches nothing, so a tiny run told to read the Hub's IMDB names the cpu profile's)."""
    prefetch_profile = "cpu" if prefetch_profile == "tiny" else prefetch_profile
    try:
        import datasets
    except ModuleNotFoundError as e:  # not a download problem: prefetch would not help
        raise DataSourceError(f"reading {HUB_DATASET} needs the datasets package, which is not installed: pip install "
                              f"\"datasets>=2.19\", or set {DATA_DIR_ENV} to a folder with train.parquet / "
                              "test.parquet or an aclImdb copy") from e
    try:
        ds = datasets.load_dataset(HUB_DATASET)
    except Exception as e:  # offline with no cache, Hub down, a cache it may not write in, ...
        copy = prepared_hub_copy() if _write_refused(e) else None
        if copy is not None:  # a read-only copy of the cache (a shared mount): load_dataset cannot take its lock
            return _read_prepared(copy)
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise DataSourceError(
            f"could not load {HUB_DATASET} from the Hugging Face Hub or its cache ({type(e).__name__}: {msg}); "
            f"run `kd-tutorial prefetch --profile {prefetch_profile}` while online, or set {DATA_DIR_ENV} to a folder "
            f"with train.parquet / test.parquet or an aclImdb copy") from e
    return {split: Reviews(list(ds[split]["text"]), [int(y) for y in ds[split]["label"]], None, split)
            for split in ("train", "test", "unsupervised") if split in ds}


def prepared_hub_copy() -> Path | None:
    """The folder of the copy of stanfordnlp/imdb that ``datasets`` prepared in its cache (``HF_DATASETS_CACHE``),
    which ``load_dataset`` reads offline: the newest of a plain configuration, as it picks it, when every split its
    ``dataset_info.json`` lists is there in full; None otherwise, or with no datasets package to have made one."""
    try:
        from datasets import config
    except ModuleNotFoundError:
        return None
    root = Path(config.HF_DATASETS_CACHE) / HUB_DATASET.replace("/", "___")
    found = [d for d in root.glob("*/*/*") if d.is_dir() and not d.name.endswith(".incomplete")
             and _arrow_files(d) is not None]
    newest = max(found, key=lambda d: d.stat().st_mtime, default=None)
    return newest if newest is not None and _arrow_files(newest) else None


def _arrow_files(folder: Path) -> dict[str, list[Path]] | None:
    """``{split: its Arrow files, in order}`` of a prepared copy, as its ``dataset_info.json`` (which ``datasets``
    writes last) lists the splits: None when that file is missing or unreadable, or names another configuration than
    the folder's (``load_dataset`` passes such a folder by); ``{}`` when a split lacks a file, or train or test is not
    there (``load_dataset`` would pick it, and fail)."""
    try:
        info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
        if info.get("config_name") != folder.parts[-3]:
            return None
        splits = dict(info.get("splits") or {})
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    files = {}
    for name, split in splits.items():
        found = sorted(folder.glob(f"*-{name}.arrow")) or sorted(folder.glob(f"*-{name}-*-of-*.arrow"))
        if not found or len(found) != len((split or {}).get("shard_lengths") or [None]):
            return {}
        files[name] = found
    return files if {"train", "test"} <= set(files) else {}


def _write_refused(err: BaseException | None) -> bool:
    """Whether ``err``, or an error it came from, is the system refusing a write (a read-only file system, a folder
    of another user): where ``load_dataset`` cannot create its lock file in the cache."""
    return any(isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) for e in error_chain(err))


def _read_prepared(folder: Path) -> dict[str, Reviews]:
    """The splits of a prepared copy of stanfordnlp/imdb, read from its Arrow files (memory-mapped; nothing is
    written), as ``load_dataset`` would give them."""
    import datasets
    out = {}
    for name, files in (_arrow_files(folder) or {}).items():
        if name in ("train", "test", "unsupervised"):
            table = datasets.concatenate_datasets([datasets.Dataset.from_file(str(f)) for f in files])
            out[name] = Reviews(list(table["text"]), [int(y) for y in table["label"]], None, name)
    return out


def _read_acl(root: Path, sub: str, label: int) -> Reviews:
    folder = root / sub
    if not folder.is_dir():
        return Reviews([], [], [], sub)
    # hidden names are not reviews: "._5_8.txt" is macOS's AppleDouble copy of 5_8.txt's metadata
    files = sorted((p for p in folder.glob("*.txt") if not p.name.startswith(".")),
                   key=lambda p: (int(p.stem.split("_")[0]) if p.stem.split("_")[0].isdigit() else 0, p.name))
    stars = []
    for p in files:
        parts = p.stem.split("_")
        stars.append(int(parts[1]) if len(parts) == 2 and parts[1].isdigit() else -1)
    return Reviews([_read_utf8(p) for p in files], [label] * len(files), stars, sub)


def _read_utf8(path: Path) -> str:
    """The text of one review file; a :class:`DataSourceError` when it cannot be read, is not UTF-8, or is blank."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataSourceError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}): save the reviews "
                              "as UTF-8") from None
    except OSError as err:  # a broken link, a folder of that name, no permission
        raise DataSourceError(f"{path} cannot be read ({err.strerror or err}): replace it with the review's text "
                              "file, or remove it") from None
    if not text.strip():
        raise DataSourceError(f"{path} has no text: remove it, or fill it in")
    return text


def _concat(*parts: Reviews, name: str) -> Reviews:
    return Reviews([t for r in parts for t in r.texts], [y for r in parts for y in r.labels],
                   [s for r in parts for s in r.stars], name)


def _acl_raw(root: Path) -> dict[str, Reviews]:
    out = {"train": _concat(_read_acl(root, "train/pos", 1), _read_acl(root, "train/neg", 0), name="train"),
           "test": _concat(_read_acl(root, "test/pos", 1), _read_acl(root, "test/neg", 0), name="test"),
           "unsupervised": _read_acl(root, "train/unsup", -1)}
    if not len(out["train"]):
        raise DataSourceError(f"{root}: aclImdb layout but train/pos and train/neg hold no .txt files: put the "
                              "training reviews there, one <id>_<stars>.txt file each")
    return out


def _read_table(path: Path, labelled: bool = True) -> Reviews:
    """One split from a ``.parquet`` or ``.csv`` file with columns text, label (0/1) and optionally stars."""
    cols, names = _read_parquet(path) if path.suffix == ".parquet" else _read_csv(path)
    if not labelled:
        cols["label"] = [-1] * len(cols.get("text", ()))
    missing = [c for c in ("text", "label") if c not in cols]
    if missing:
        found = ", ".join(repr(n) for n in names[:8]) or "none"
        hint = COLUMNS_HINT if labelled else "a column text (unlabelled reviews need no label)"
        raise DataSourceError(f"{path}: missing column(s) {', '.join(missing)} (found: {found}); give the file "
                              f"{hint}")
    texts = [_text(x, i, path) for i, x in enumerate(cols["text"])]
    labels = _labels(cols["label"], path) if labelled else cols["label"]
    return Reviews(texts, labels, _stars(cols.get("stars")), path.stem)


def _text(value, row: int, path: Path) -> str:
    """One review's text: UTF-8 bytes decoded; a :class:`DataSourceError` for a missing or blank one (a CSV writes a
    missing text as an empty field) or for bytes that are not UTF-8."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataSourceError(f"{path}: row {row + 1}'s text is not UTF-8 ({err.reason} at byte {err.start}): "
                                  "save the reviews as UTF-8") from None
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataSourceError(f"{path}: row {row + 1} has no text ({'null' if value is None else 'blank'}): drop it "
                              "or fill it in")
    if not isinstance(value, str):  # a list or a number, read as its repr ("['...']"), would train as a review
        raise DataSourceError(f"{path}: row {row + 1}'s text is a {type(value).__name__}, not a string: give the "
                              "text column as strings, one review each")
    return value


def folder_rows(folder: str | os.PathLike) -> dict[str, int] | None:
    """Reviews in a data folder's train, test and unsupervised splits, read from parquet metadata without loading
    them (0 for a split it does not have), under the names :func:`load_imdb` reads (``unsup.parquet`` too); None
    where that cannot tell: no train or no test split (the test is then carved from train), a split in a CSV file
    (whose rows no metadata gives: all three sizes are then unknown, not a wrong count of one), two files for one
    split, other layouts, an unreadable file."""
    import pyarrow.parquet as pq
    try:
        files = _split_files(Path(folder).expanduser())
        if any(path.suffix != ".parquet" for path in files.values()):
            return None
        rows = {split: pq.read_metadata(files[split]).num_rows if split in files else 0
                for split in ("train", "test", "unsupervised")}
    except (OSError, ValueError, DataSourceError):
        return None
    return rows if rows["train"] and rows["test"] else None


def _read_parquet(path: Path) -> tuple[dict[str, list], list[str]]:
    """The text, label and stars columns of a parquet file (those it has), and the names of all its columns."""
    import pyarrow.parquet as pq
    try:
        names = pq.read_schema(path).names
        wanted = [n for n in names if n in ("text", "label", "stars")]
        table = pq.read_table(path, columns=wanted)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise DataSourceError(f"{path} is not a readable parquet file ({reason}): write it with pandas "
                              f"DataFrame.to_parquet, {COLUMNS_HINT}, or give a {path.stem}.csv instead") from None
    return {name: table.column(name).to_pylist() for name in wanted}, names


def _read_csv(path: Path) -> tuple[dict[str, list], list[str]]:
    """The columns of a UTF-8 CSV file with a header line, and their names; a :class:`DataSourceError` names
    a malformed line."""
    fix = f"write it with pandas DataFrame.to_csv(index=False), {COLUMNS_HINT}, or give a {path.stem}.parquet"
    with _CSV_LIMIT:  # the limit is the process's: one read at a time sets it and puts it back
        return _read_csv_rows(path, fix)


_CSV_LIMIT = threading.Lock()


def _read_csv_rows(path: Path, fix: str) -> tuple[dict[str, list], list[str]]:
    """:func:`_read_csv` under its lock."""
    rows, lines = [], []
    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(2**31 - 1)  # csv's own limit, 131,072 characters, refused a long review as "not CSV"
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's UTF-8 byte-order mark is fine
            reader = csv.reader(f, strict=True)
            for row in reader:
                if row:
                    rows.append(row)
                    lines.append(reader.line_num)
    except UnicodeDecodeError as err:
        raise DataSourceError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8; "
                              f"{fix}") from None
    except csv.Error as err:
        raise DataSourceError(f"{path} is not valid CSV (line {reader.line_num}: {err}): {fix}") from None
    except OSError as err:
        raise DataSourceError(f"cannot read {path} ({err.strerror or err}): check that it is a file you can "
                              "read") from None
    finally:
        csv.field_size_limit(limit)
    if not rows:
        raise DataSourceError(f"{path} is empty: {fix}")
    header = rows[0]
    twice = sorted({name for name in header if header.count(name) > 1 and name in ("text", "label", "stars")})
    if twice:  # the last would be read, without a word
        raise DataSourceError(f"{path}: the header names column {', '.join(map(repr, twice))} more than once: keep "
                              "one")
    bad = next((i for i, row in enumerate(rows) if len(row) != len(header)), None)
    if bad is not None:
        raise DataSourceError(f"{path} is not valid CSV: line {lines[bad]} has {len(rows[bad])} field(s) where the "
                              f"header has {len(header)} (quote texts holding commas or newlines): {fix}")
    return {name: [row[j] for row in rows[1:]] for j, name in enumerate(header)}, header


def _labels(values: list, path: Path) -> list[int]:
    """A column of labels as ints 0/1 (``1``, ``"1"`` and ``1.0`` all count); a DataSourceError names a bad one."""
    out = []
    for i, value in enumerate(values):
        text = str(value).strip()
        number = (int(float(text)) if text.isascii() and text.replace(".", "", 1).isdigit()
                  and float(text).is_integer() else None)
        if number not in (0, 1):
            raise DataSourceError(f"{path}: row {i + 1} has label {value!r}; labels must be 0 (negative) or 1 "
                                  "(positive): map them to 0/1 (e.g. neg -> 0, pos -> 1)")
        out.append(number)
    return out


def _stars(values: list | None) -> list[int] | None:
    """The optional stars column as ints, or None when it is absent or not all whole numbers."""
    try:
        return None if values is None else [int(s) for s in values]
    except (TypeError, ValueError):
        return None


def _split_files(root: Path) -> dict[str, Path]:
    """Each split's file in a folder of tables: ``train``, ``test`` and ``unsupervised`` (or ``unsup``), ``.parquet``
    or ``.csv``; a DataSourceError where a split has two, of which one would be read and the other ignored (perhaps
    the one just fixed). Names only: no file is read."""
    files = {}
    for split, stems in (("train", ["train"]), ("test", ["test"]), ("unsupervised", ["unsupervised", "unsup"])):
        found = [root / f"{stem}{ext}" for stem in stems for ext in (".parquet", ".csv")
                 if (root / f"{stem}{ext}").is_file()]
        if len(found) > 1:
            raise DataSourceError(f"{root} holds {' and '.join(p.name for p in found)} for the {split} split: keep "
                                  "one of them (move the other away)")
        files.update({split: found[0]} if found else {})
    return files


def _table_raw(root: Path) -> dict[str, Reviews]:
    out = {}
    for split, path in _split_files(root).items():
        out[split] = _read_table(path, labelled=split != "unsupervised")
        if split != "train" and not len(out[split]):  # not quietly a held-out slice, or train reviews
            raise DataSourceError(f"{path} holds no reviews: add them, or remove the file (without a test file the "
                                  "test split is a held-out slice of train; without an unsupervised file the "
                                  "transfer reviews are other train reviews)")
    if "unsupervised" in out:
        out["unsupervised"] = out["unsupervised"].unlabelled("unsupervised")
    return out


def _folder_layout(path: Path) -> tuple[str, Path]:
    """("acl", root) for an aclImdb copy, ("tables", path) for train.parquet / train.csv; a DataSourceError for
    anything else. Looks at names only and reads no file, so a wrong folder is refused before any work starts."""
    if not path.exists():
        raise DataSourceError(f"data folder {path} does not exist: give a folder with train.parquet / train.csv "
                              "or an aclImdb copy")
    root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
    if (root / "train" / "pos").is_dir() or (root / "train" / "neg").is_dir():
        return "acl", root
    if path.is_file():
        raise DataSourceError(f"{path} is a file: give the folder that holds train.parquet or train.csv "
                              "(and optionally test / unsupervised), or an aclImdb copy")
    has = {stem: any((path / f"{stem}{ext}").is_file() for ext in (".parquet", ".csv")) for stem in ("train", "test")}
    if has["train"]:
        _split_files(path)  # two files for one split: refused now, before any work
        return "tables", path
    for name in ("train.parquet", "train.csv"):  # a name the listing below would show, yet no file to read
        target = path / name
        if os.path.lexists(target):  # there, and not a file (has["train"] says so)
            what = ("a folder" if target.is_dir() else "a link to nothing" if not target.exists() else
                    "a device or a pipe")
            raise DataSourceError(f"{target} is {what}, not a file: put the {name} file itself there")
    if has["test"] or (root / "test" / "pos").is_dir() or (root / "test" / "neg").is_dir():
        raise DataSourceError(f"{path} holds a test split but no train split: add train.parquet or train.csv "
                              f"with {COLUMNS_HINT}, or train/pos and train/neg of an aclImdb copy")
    found = ", ".join(sorted(p.name for p in path.iterdir())[:8])
    raise DataSourceError(f"{path}: expected train.parquet or train.csv (columns text, label) or an aclImdb layout "
                          f"(train/pos, train/neg, test/pos, test/neg); found: {found or 'nothing'}")


def check_data_source(data_dir: str | os.PathLike | None) -> None:
    """Refuse a data folder that cannot be read (missing, a file, no train split) with a one-line DataSourceError,
    from its file names alone; None (the profile's own source) passes. The CLI calls it before loading any model."""
    if data_dir:
        meant = stray_quotes(str(data_dir))
        if meant:
            raise DataSourceError(f"data folder {data_dir} holds the quote marks typed around the path (cmd keeps "
                                  f"them, and a backslash before a closing quote escapes it): give the path alone: "
                                  f"{meant}")
        shown, meant = not_utf8(data_dir), stray_space(str(data_dir))
        if shown:
            raise DataSourceError(f"data folder {shown} {NOT_UTF8_FIX}")
        if meant:
            raise DataSourceError(f"data folder {str(data_dir)!r} starts or ends with a space, and names no folder: "
                                  f"give the path alone: {meant}")
        _folder_layout(Path(data_dir).expanduser())


def check_data_readable(data_dir: str | os.PathLike | None) -> None:
    """:func:`check_data_source`, then, for a folder of parquet / csv files, read them as ``distill`` would (their
    columns, labels and texts), so that ``kd-tutorial env`` calls a folder usable only when it is. An aclImdb copy
    is judged by its layout: reading its 100,000 files would make the check slow."""
    check_data_source(data_dir)
    if data_dir:
        layout, root = _folder_layout(Path(data_dir).expanduser())
        if layout == "tables":
            _table_raw(root)


def _folder_raw(path: Path) -> tuple[dict[str, Reviews], str]:
    layout, root = _folder_layout(path)
    if layout == "acl":
        return _acl_raw(root), f"folder {root} (aclImdb layout)"
    return _table_raw(root), f"folder {root} (parquet/csv files)"


def load_imdb(source: str = "hub", *, n_train: int | None = None, n_transfer: int | None = None,
              n_test: int | None = None, val_size: int = 1000, seed: int = 0,
              val_block: int | None = None, prefetch_profile: str = "cpu") -> ImdbData:
    """Load IMDB-style reviews from ``source`` ("tiny", "hub" or a folder) as disjoint, seeded splits.

    Validation (``val_size``) is carved from train, stratified, in runs of ``val_block`` reviews when given
    (:func:`split_raw`). ``n_train``/``n_transfer``/``n_test`` subsample (stratified, seeded; ``None`` keeps all);
    the test set does not depend on ``seed``. With no test split, the test set is a held-out slice of train; with no
    unsupervised split, the transfer set is other train reviews. ``prefetch_profile``: the profile whose
    ``kd-tutorial prefetch`` the Hub's offline error names.
    """
    source = str(source)
    if source == "tiny":
        raw, desc = _tiny_raw(), "built-in tiny movie-review corpus (kd_tutorial.corpus)"
    elif source in NAMED_SOURCES:  # the Hub's, by either name
        raw, desc = _hub_raw(prefetch_profile), f"{HUB_DATASET} (Hugging Face Hub)"
    elif not Path(source).expanduser().exists():  # neither a name nor a folder
        raise DataSourceError(f"data source {source!r} does not exist: give 'tiny', 'hub' or a folder with "
                              "train.parquet / train.csv or an aclImdb copy")
    else:
        raw, desc = _folder_raw(Path(source).expanduser())
    return split_raw(raw, desc, n_train=n_train, n_transfer=n_transfer, n_test=n_test, val_size=val_size, seed=seed,
                     val_block=val_block)


def load_for_profile(profile, data_dir: str | os.PathLike | None = None, seed: int = 0) -> ImdbData:
    """Load the data a :class:`~kd_tutorial.profiles.Profile` asks for; ``data_dir`` or $KD_TUTORIAL_DATA_DIR
    override its source."""
    check_profile(profile, "load_for_profile")
    source = data_dir or os.environ.get(DATA_DIR_ENV) or profile.data_source
    return load_imdb(str(source), n_train=profile.n_train, n_transfer=profile.n_transfer, n_test=profile.n_test,
                     val_size=profile.val_size, seed=seed, val_block=profile.val_block, prefetch_profile=profile.name)


# ----------------------------------------------------------------------------- tokenizing

def get_tokenizer(name_or_path: str | None = None, hint: str = ""):
    """A fast WordPiece tokenizer: the committed bert-base-uncased vocab for None / "tiny-bert", else
    from_pretrained (a ModelSourceError, one line, when that cannot load; ``hint`` is added to its advice)."""
    if name_or_path in (None, "tiny-bert"):
        from transformers import BertTokenizerFast
        # the path must be POSITIONAL: vocab_file= is silently ignored in transformers 5 (5-token vocab)
        tok = BertTokenizerFast(str(VOCAB_PATH), do_lower_case=True, model_max_length=512)
        assert len(tok) > 30000, f"tokenizer did not load {VOCAB_PATH} ({len(tok)} tokens)"
        return tok
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as err:  # no such folder, one without tokenizer files, or offline and not cached
        said = " ".join(str(err).split()) or type(err).__name__
        said = said if len(said) <= 160 else said[:159] + "…"
        raise model_source_error(str(name_or_path), "tokenizer", hint, cause=said) from err
    if set(tok.get_vocab()) <= set(tok.all_special_tokens):  # a model folder without vocab.txt / tokenizer.json
        raise model_source_error(str(name_or_path), "tokenizer", hint, cause=f"it loads with only the {len(tok)} "
                                 "special tokens, so every word would be [UNK]")
    return tok


def truncate_ids(ids: list[int], max_length: int | None, strategy: str, cls_id: int, sep_id: int) -> list[int]:
    """Cut token ids (no specials) to fit ``max_length`` with [CLS] and [SEP], then add them.

    "head" keeps the start, "tail" the end, "head+tail" the first ``max_length // 4`` tokens and the
    rest of the ``max_length - 2`` from the end (Sun et al. 2019: 128 + 382 tokens at 512).
    """
    if strategy not in TRUNCATIONS:
        raise ValueError(f"unknown truncation {strategy!r}; choose one of {', '.join(TRUNCATIONS)}")
    if max_length is not None:
        if max_length < 3:
            raise ValueError(f"max_length must leave room for [CLS] and [SEP] and one token, got {max_length}")
        budget = max_length - 2
        if len(ids) > budget:
            if strategy == "head":
                ids = ids[:budget]
            elif strategy == "tail":
                ids = ids[len(ids) - budget:]
            else:
                n_head = max_length // 4
                ids = ids[:n_head] + ids[len(ids) - (budget - n_head):]
    return [cls_id, *ids, sep_id]


@dataclass
class Encoded:
    """Token ids (with [CLS]/[SEP], unpadded) and labels of one split."""
    input_ids: list[list[int]]
    labels: torch.Tensor  # LongTensor [N], -1 = unlabelled
    name: str = ""

    def __post_init__(self):
        """Refuse labels that every batch would fail on: a list stopped in :func:`collate`'s thread, far from here."""
        labels = self.labels
        if not (torch.is_tensor(labels) and labels.dtype == torch.long and labels.shape == (len(self.input_ids),)):
            got = (f"a {labels.dtype} tensor of shape {tuple(labels.shape)}" if torch.is_tensor(labels)
                   else f"a {type(labels).__name__}")
            raise ValueError(f"Encoded {self.name!r}: labels must be a torch.long tensor of shape "
                             f"({len(self.input_ids)},), one per row of input_ids (-1: unlabelled), e.g. "
                             f"torch.tensor(labels, dtype=torch.long); got {got}")

    @property
    def lengths(self) -> list[int]:
        """Each review's length in tokens."""
        return [len(x) for x in self.input_ids]

    def __len__(self) -> int:
        return len(self.input_ids)


# an HTML line break as IMDB's reviews write it (`<br />`, `<br/>`, `<br>`), which WordPiece cuts into 3 or 4 pieces
MARKUP = re.compile(r"<br\s*/?>", re.IGNORECASE)


def without_markup(text: str) -> str:
    """``text`` with a space in place of each HTML line break (:data:`MARKUP`)."""
    return MARKUP.sub(" ", text)


def encode(reviews: Reviews, tokenizer, max_length: int | None, truncation: str = "head+tail",
           markup: str = "keep") -> Encoded:
    """Tokenize all reviews in one batched fast call, then truncate to ``max_length`` (None: keep all).
    ``markup``: "keep" tokenizes the reviews' HTML line breaks as text, "space" a space in their place."""
    if markup not in MARKUPS:
        raise ValueError(f"markup={markup!r}: give one of {', '.join(MARKUPS)}")
    texts = list(reviews.texts) if markup == "keep" else [without_markup(t) for t in reviews.texts]
    ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False,
                    return_token_type_ids=False, verbose=False,
                    split_special_tokens=True)["input_ids"] if len(reviews) else []  # a review's "[SEP]" is text
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    return Encoded([truncate_ids(x, max_length, truncation, cls_id, sep_id) for x in ids],
                   torch.tensor(reviews.labels, dtype=torch.long), reviews.name)


# ----------------------------------------------------------------------------- batching

def batch_groups(encoded: Encoded, batch_size: int, *, shuffle: bool = True, group_by_length: bool = True,
                 seed: int = 0) -> list[list[int]]:
    """The row indices of each batch, in the order the loop reads them (cheap: no tensors built).

    ``group_by_length`` sorts rows by length within shuffled chunks of 50 batches (the whole set
    when ``shuffle=False``) and then shuffles the batch order, so batches hold similar lengths.
    There are always ``ceil(len(encoded) / batch_size)`` groups (:func:`n_batches`).
    """
    check_batch_size(batch_size)
    if not hasattr(encoded, "lengths"):  # a list of texts or ids: "'list' object has no attribute 'lengths'"
        raise TypeError(f"batches are made of encoded rows, not a {type(encoded).__name__}: give "
                        "data.encode(reviews, tokenizer, max_length) (an Encoded)")
    rng = random.Random(seed)
    order = list(range(len(encoded)))
    if shuffle:
        rng.shuffle(order)
    lengths = encoded.lengths
    if group_by_length:
        chunk = 50 * batch_size if shuffle else max(len(order), 1)
        order = [i for c in range(0, len(order), chunk)
                 for i in sorted(order[c:c + chunk], key=lambda i: -lengths[i])]
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle and group_by_length:
        rng.shuffle(groups)
    return groups


def n_batches(n_rows: int, batch_size: int) -> int:
    """How many batches :func:`batch_groups` makes of ``n_rows`` rows: arithmetic, nothing is built."""
    return -(-n_rows // check_batch_size(batch_size))


def check_batch_size(batch_size) -> int:
    """``batch_size``, refused in one line unless it is a whole number >= 1 (NumPy's too): 0 stopped in ``range()``
    ("arg 3 must not be zero"), and -1 made no batch at all, in silence."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: give a whole number of rows >= 1")
    return batch_size


def collate(encoded: Encoded, rows: list[int], *, pad_to_max: int | None = None, pad_id: int = 0,
            pin: bool = False, multiple: int = 1, limit: int | None = None) -> dict:
    """One padded batch of ``rows``: input_ids, attention_mask, labels, index (row in ``encoded``).

    Padded to its longest row rounded up to a multiple of ``multiple`` but not past ``limit`` (a GPU's
    :func:`kd_tutorial.device.pad_multiple`, capped at the split's longest row), or to ``pad_to_max`` (the naive
    baseline). ``pin=True`` puts the tensors in page-locked memory, so that a ``non_blocking`` copy to a GPU
    overlaps with compute.
    """
    lengths = [len(encoded.input_ids[i]) for i in rows]
    width = max(lengths)
    if multiple > 1 and pad_to_max is None:
        rounded = -(-width // multiple) * multiple
        width = rounded if limit is None else max(width, min(rounded, limit))
    if pad_to_max is not None:
        if width > pad_to_max:
            raise ValueError(f"a row has {width} tokens, more than pad_to_max={pad_to_max}")
        width = pad_to_max
    ids = torch.tensor([encoded.input_ids[i] + [pad_id] * (width - n) for i, n in zip(rows, lengths)],
                       dtype=torch.long)
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths], dtype=torch.long)
    index = torch.tensor(rows, dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": encoded.labels[index], "index": index}
    return {k: v.pin_memory() for k, v in batch.items()} if pin else batch


def make_batches(encoded: Encoded, batch_size: int, *, shuffle: bool = True, group_by_length: bool = True,
                 seed: int = 0, pad_to_max: int | None = None, pad_id: int = 0) -> list[dict]:
    """All batches at once (:func:`batch_groups`, each :func:`collate`-d): dicts of input_ids,
    attention_mask, labels and index. The training loop builds them ahead instead (:func:`prefetch`)."""
    return [collate(encoded, g, pad_to_max=pad_to_max, pad_id=pad_id)
            for g in batch_groups(encoded, batch_size, shuffle=shuffle, group_by_length=group_by_length, seed=seed)]


def prefetch(build, items, depth: int = 3):
    """Yield ``build(item)`` for each item, computed in a background thread ``depth`` items ahead.

    The loop then never waits for Python to pad a batch: it is ready (and pinned) when the
    device is. An exception in ``build`` is raised here; leaving the loop early (closing the generator) stops the
    thread, and waits for the item it is building.
    """
    out, stop = queue.Queue(maxsize=depth), threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in items:
                if not put((True, build(item))):
                    return
            put((False, None))
        except BaseException as err:  # handed to the consumer, which raises it
            put((False, err))

    worker = threading.Thread(target=work, daemon=True, name="kd_tutorial-prefetch")
    worker.start()
    try:
        while True:
            ok, value = out.get()
            if not ok:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        # wait for the batch it is building: a thread left inside a torch op as the interpreter exits (an error
        # that ends a run) now and then aborted the process ("terminate called without an active exception")
        worker.join(timeout=10)


def padding_waste(batches: list[dict]) -> float:
    """Fraction of all batch positions that are padding (0 = none wasted)."""
    total = sum(b["attention_mask"].numel() for b in batches)
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    return 1 - real / total if total else 0.0


def token_stats(encoded_or_lengths) -> dict[str, float]:
    """Length statistics (tokens incl. specials): mean, median, p90, frac_over_256, frac_over_512."""
    lengths = encoded_or_lengths.lengths if isinstance(encoded_or_lengths, Encoded) else list(encoded_or_lengths)
    if not lengths:
        return dict(mean=0.0, median=0.0, p90=0.0, frac_over_256=0.0, frac_over_512=0.0)
    n = len(lengths)
    return dict(mean=sum(lengths) / n, median=float(statistics.median(lengths)),
                p90=float(torch.tensor(lengths, dtype=torch.float64).quantile(0.9)),
                frac_over_256=sum(x > 256 for x in lengths) / n, frac_over_512=sum(x > 512 for x in lengths) / n)


def concat_encoded(a: Encoded, b: Encoded, name: str) -> Encoded:
    """Rows of ``a`` followed by rows of ``b`` (e.g. labelled train + unlabelled transfer)."""
    return Encoded(input_ids=list(a.input_ids) + list(b.input_ids), labels=torch.cat([a.labels, b.labels]),
                   name=name)


def subset_encoded(encoded: Encoded, rows, name: str | None = None) -> Encoded:
    """The rows ``rows`` (indices) of ``encoded``, in that order; an index past its rows, or not a whole number, is
    refused in one line."""
    given = torch.as_tensor(rows)
    if given.numel() and given.dtype == torch.bool:  # a mask: True, False read as rows 1 and 0, in silence
        raise TypeError("subset_encoded: rows is a mask of booleans, not row indices: give "
                        "mask.nonzero().flatten() (or [i for i, keep in enumerate(mask) if keep])")
    if given.numel() and (given.is_floating_point() or given.is_complex()):  # 1.5 became row 1, in silence
        raise TypeError(f"subset_encoded: row indices are whole numbers, not {given.flatten()[0].item()!r}: give "
                        "int row indices (e.g. list(range(10)))")
    rows = given.to(torch.long)
    n = len(encoded)
    outside = rows[(rows >= n) | (rows < -n)]
    if len(outside):
        raise IndexError(f"subset_encoded: row {int(outside[0])} of {encoded.name or 'the rows'!r}, which has {n:,} "
                         f"rows; give row indices from 0 to {n - 1}" if n else
                         f"subset_encoded: row {int(outside[0])} of {encoded.name or 'the rows'!r}, which has no rows")
    return Encoded([encoded.input_ids[i] for i in rows.tolist()], encoded.labels[rows], name or encoded.name)


def labelled_subset(encoded: Encoded, n: int | None, seed: int = 0) -> torch.Tensor:
    """Row indices of a stratified, seeded subset of ``n`` labelled rows (all rows when ``n`` is None): each class
    keeps its share of the rows (largest remainders first), so an imbalanced split stays as imbalanced."""
    if n is None or n >= len(encoded):
        return torch.arange(len(encoded))
    g = torch.Generator().manual_seed(seed)
    _, quota = _by_label(encoded.labels.tolist(), n)
    picked = []
    for c in encoded.labels.unique():
        rows = (encoded.labels == c).nonzero().flatten()
        picked.append(rows[torch.randperm(len(rows), generator=g)[:quota[int(c)]]])
    return torch.cat(picked).sort().values


AUGMENT = dict(p_mask=0.1, p_window=0.25, min_window=0.5, copies=1)  # the course's augmentation settings


def augment(encoded: Encoded, *, mask_id: int, p_mask: float = AUGMENT["p_mask"],
            p_window: float = AUGMENT["p_window"], min_window: float = AUGMENT["min_window"],
            copies: int = AUGMENT["copies"], seed: int = 0, name: str = "augmented") -> Encoded:
    """New unlabelled reviews made from ``encoded`` (after Tang et al. 2019, "Distilling task-specific
    knowledge from BERT into simple neural networks", section 3.2).

    For each copy of each review: every token (not [CLS] / [SEP]) becomes ``mask_id``
    with probability ``p_mask``; then, with probability ``p_window``, only a random
    contiguous window of ``min_window`` to all of the tokens is kept. The window is
    Tang et al.'s n-gram sampling stretched to documents: their 1-5-gram of a short
    sentence would be a few words of a 200-token review. (Their third operation,
    part-of-speech-guided word replacement, needs a tagger and is left out.) The
    teacher labels the new reviews; their own labels are hidden (-1).
    """
    rng = random.Random(f"kd_tutorial-augment-{seed}")
    rows = []
    for _ in range(copies):
        for ids in encoded.input_ids:
            cls_id, body, sep_id = ids[0], list(ids[1:-1]), ids[-1]
            body = [mask_id if rng.random() < p_mask else t for t in body]
            if body and rng.random() < p_window:
                size = max(1, round(len(body) * rng.uniform(min_window, 1.0)))
                start = rng.randrange(0, len(body) - size + 1)
                body = body[start:start + size]
            rows.append([cls_id, *body, sep_id])
    return Encoded(rows, torch.full((len(rows),), -1, dtype=torch.long), name)
