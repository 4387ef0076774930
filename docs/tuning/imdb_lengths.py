"""How long IMDB's reviews are in WordPiece tokens: every review of a data folder's train.parquet and test.parquet,
tokenized whole (no truncation, [CLS] and [SEP] counted) with the course's tokenizer (the committed bert-base-uncased
vocabulary, which every BERT teacher of the course shares), as notebook 01 counts its profile's reviews. These are
the reference numbers notebook 01 prints beside its own run's (tests/test_docs_snippets.py checks the two agree).

    python docs/tuning/imdb_lengths.py /path/to/imdb docs/tuning/imdb-lengths.json

The record was made on the shared copy (/work/shared/data/imdb): IMDB's 25,000 train reviews and a fixed sample of
4,934 of its 25,000 test reviews (the Hub's whole test split may give slightly other test figures). One core, about
20 seconds.
"""
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

from kd_tutorial import data


def main(folder: str, out: str) -> None:
    """Token-length statistics (kd_tutorial.data.token_stats) of each split's reviews, all of them."""
    tok = data.get_tokenizer(None)
    result = {"what": __doc__.split("\n\n")[0], "tokenizer": "the package's bert-base-uncased vocabulary "
              "(data.get_tokenizer()), no truncation, [CLS] and [SEP] counted", "splits": {}}
    for split in ("train", "test"):
        path = Path(folder) / f"{split}.parquet"
        texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
        encoded = data.encode(data.Reviews(texts, [0] * len(texts), name=split), tok, max_length=None)
        stats = data.token_stats(encoded)
        result["splits"][split] = {"file": path.name, "reviews": len(texts), "max": max(encoded.lengths), **stats,
                                   "over_256": sum(n > 256 for n in encoded.lengths),
                                   "over_512": sum(n > 512 for n in encoded.lengths)}
        print(split, result["splits"][split], flush=True)
    Path(out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
