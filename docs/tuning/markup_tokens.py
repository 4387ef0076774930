"""How much of the cpu profile's token budget IMDB's HTML line breaks take: each ``<br />`` in a review becomes the
word pieces ``<``, ``br``, ``/``, ``>``, which the package keeps (it never strips markup).

    python docs/tuning/markup_tokens.py /path/to/imdb docs/tuning/markup-tokens.json
"""
import json
import sys
from pathlib import Path

from kd_tutorial import data
from kd_tutorial.profiles import PROFILES


def main(folder: str, out: str, n: int = 3000) -> None:
    """Count the kept tokens and the markup's among them on the first ``n`` test reviews, as the profile encodes."""
    profile = PROFILES["cpu"]
    test = data.load_for_profile(profile, folder, seed=0).test
    texts = test.texts[:n]
    tok = data.get_tokenizer(None)  # bert-base-uncased's WordPiece vocabulary, all-MiniLM-L6-v2's too
    kept = data.encode(data.Reviews(texts, test.labels[:n], name="test"), tok, profile.max_length, profile.truncation)
    markup = tok.convert_tokens_to_ids(tok.tokenize("<br />"))
    kept_tokens = sum(len(row) for row in kept.input_ids)
    markup_tokens = 0
    for row in kept.input_ids:
        for i in range(len(row) - len(markup) + 1):
            markup_tokens += row[i:i + len(markup)] == markup
    result = {"what": __doc__.split("\n\n")[0], "reviews": len(texts), "max_length": profile.max_length,
              "truncation": profile.truncation, "markup_pieces": tok.convert_ids_to_tokens(markup),
              "reviews_with_markup": sum("<br" in t for t in texts), "kept_tokens": kept_tokens,
              "markup_tokens": markup_tokens * len(markup),
              "share": round(markup_tokens * len(markup) / kept_tokens, 4)}
    print(result)
    Path(out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
