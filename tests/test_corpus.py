"""The built-in tiny corpus: deterministic, balanced, held out, and not solvable by a bag of words alone."""
import collections
import json
import re
import subprocess
import sys
import time

import pytest

from kd_tutorial.corpus import ADJ, STARS, generate_corpus


@pytest.fixture(scope="module")
def corpus():
    return generate_corpus()


def words(text):
    return re.findall(r"[a-z']+", text.lower())


def test_sizes_balance_and_labels(corpus):
    assert {k: len(v) for k, v in corpus.items()} == {"train": 1200, "unsupervised": 4000, "test": 1000}
    for split in ("train", "test"):
        labels = collections.Counter(r["label"] for r in corpus[split])
        assert labels[0] == labels[1] == len(corpus[split]) // 2
        for r in corpus[split]:
            assert r["stars"] in STARS[r["label"]]  # 1-4 negative, 7-10 positive
    assert {r["label"] for r in corpus["unsupervised"]} == {-1}
    assert {r["stars"] for r in corpus["unsupervised"]} == {1, 2, 3, 4, 7, 8, 9, 10}


def test_texts_unique_and_test_held_out(corpus):
    texts = [r["text"] for rows in corpus.values() for r in rows]
    assert len(set(texts)) == len(texts)


def test_review_lengths(corpus):
    n = [len(r["text"].split()) for r in corpus["train"]]
    assert max(n) <= 45 and min(n) >= 8
    assert 20 <= sum(n) / len(n) <= 40


def test_deterministic_across_processes(corpus):
    code = "import json; from kd_tutorial.corpus import generate_corpus; print(json.dumps(generate_corpus()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout
    assert json.loads(out) == corpus
    assert generate_corpus(seed=1)["train"] != corpus["train"]


def test_fast():
    t = time.process_time()  # CPU time: robust to a busy machine
    generate_corpus(seed=7)
    assert time.process_time() - t < 1.0


def test_sentiment_words_appear_in_both_classes(corpus):
    """Polar adjectives are not giveaways: each class also uses the other's words (negated or conceded)."""
    count = {0: collections.Counter(), 1: collections.Counter()}
    for r in corpus["train"] + corpus["test"]:
        count[r["label"]].update(words(r["text"]))
    for polarity in (0, 1):
        vocab = set(ADJ[polarity][0] + ADJ[polarity][1])
        own = sum(count[polarity][w] for w in vocab)
        other = sum(count[1 - polarity][w] for w in vocab)
        assert other > 0.25 * own, (polarity, own, other)
    for w in ("not", "never", "but", "although"):
        assert count[0][w] > 20 and count[1][w] > 20
        assert 0.5 < count[0][w] / count[1][w] < 2.0, w  # negation and contrast are not class cues


def test_stars_follow_intensity(corpus):
    """Strong degree words are more frequent in 1- and 10-star reviews than in 4- and 7-star ones."""
    strong = {"absolutely", "truly", "incredibly", "utterly", "extremely", "remarkably", "totally"}
    rate = collections.defaultdict(list)
    for r in corpus["train"] + corpus["test"]:
        rate[r["stars"] in (1, 10)].append(sum(w in strong for w in words(r["text"])))
    extreme, mild = (sum(v) / len(v) for v in (rate[True], rate[False]))
    assert extreme > 2 * mild
