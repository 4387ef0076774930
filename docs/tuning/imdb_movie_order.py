"""Does IMDB's train split list a movie's reviews together, and does carving validation in runs undo the overlap?

Needs scikit-learn and the Hub's train.parquet (KD_TUTORIAL_DATA_DIR, e.g. ../shared/data/imdb). Writes
docs/tuning/imdb-movie-order.json. TF-IDF (words in at least 2 reviews and at most half of them, sublinear tf),
cosine similarity. One core, about a minute.

1. Order: the mean similarity of each review to the review k rows later, against random pairs; for 300 negative
   reviews, where the most similar other negative (and the most similar positive) review sits.
2. Carves: for the cpu profile's seed 0 splits, carved at random and in runs (val_block), how close each validation
   review comes to any training review (teacher's labels + transfer set), against the same for 1,000 test reviews.

The record was written at commit efa0aa3, and this script rewrites it unchanged there. Part 1 reads only the
parquet file and reproduces at any commit; part 2 reads the package's carve, which has changed three times since:
carved in runs, train and transfer hold other reviews (c4ee0ca), test leaves out the texts of train reviews
(3d4a0c9), and a text IMDB repeats counts once (7d8dd55: validation holds 999, 998 and 997 reviews). So at later
commits part 2 differs from the record (at 58b71b3, validation at random / in runs of 100 / of 250: mean highest
similarity 0.201 / 0.167 / 0.166, share above 0.25 22.0 / 8.1 / 6.3 %; test 0.151 to 0.153, 1.2 to 2.0 %).
To check the record, run it in a worktree of efa0aa3.
"""
import json, os, sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer

from kd_tutorial.data import load_for_profile
from kd_tutorial.profiles import get_profile

root = Path(os.environ["KD_TUTORIAL_DATA_DIR"])
out = {}
texts = pd.read_parquet(root / "train.parquet")["text"]
X = TfidfVectorizer(min_df=2, max_df=0.5, sublinear_tf=True).fit_transform(texts).tocsr()
pairs = lambda a, b: np.asarray(X[a].multiply(X[b]).sum(1)).ravel()  # noqa: E731
n = X.shape[0]
perm = np.random.default_rng(0).permutation(n)
out["random_pair_cosine"] = float(pairs(perm[:-1], perm[1:]).mean())
out["cosine_at_lag"] = {k: float(pairs(np.arange(n - k), np.arange(k, n)).mean()) for k in (1, 2, 5, 10, 30, 50, 200)}
neg, pos = X[:12500], X[12500:]  # the Hub lists the 12,500 negative reviews first
rows = np.random.default_rng(0).choice(12500, 300, replace=False)
same = (neg[rows] @ neg.T).toarray()
same[np.arange(300), rows] = 0
other = (neg[rows] @ pos.T).toarray()
out["nearest_negative_within_30_rows"] = float(np.mean(abs(same.argmax(1) - rows) <= 30))
out["nearest_positive_within_30_rows_of_the_same_position"] = float(np.mean(abs(other.argmax(1) - rows) <= 30))
out["chance_within_30_rows"] = 61 / 12500

profile = get_profile("cpu")
out["carves"] = {}
for block in (None, 100, 250):
    d = load_for_profile(profile.replace(val_block=block), root, seed=0)
    seen = d.train.texts + d.transfer.texts
    vec = TfidfVectorizer(min_df=2, max_df=0.5, sublinear_tf=True).fit(seen)
    S = vec.transform(seen)
    closest = {name: (vec.transform(split) @ S.T).max(1).toarray().ravel()
               for name, split in (("validation", d.validation.texts), ("test", d.test.texts[:1000]))}
    out["carves"][str(block)] = {name: {"mean_max_cosine": float(c.mean()), "share_above_0.25": float((c > 0.25).mean())}
                                 for name, c in closest.items()}
    print(block, out["carves"][str(block)], file=sys.stderr)
json.dump(out, open(Path(__file__).with_name("imdb-movie-order.json"), "w"), indent=1)
print(json.dumps(out, indent=1))
