"""How many of the cpu profile's training, transfer and spare reviews lie within data.MOVIE_GUARD reviews of their
class of another copy of a validation review (IMDB lists some movies twice: the same reviews at two places).

Validation's fences (val_block) work on row positions, so a second listing of a validation run's movie is not fenced;
spare_reviews fences around every copy. Seeds 0-9 on a folder of IMDB's train and test splits:

    python docs/tuning/copies_near_validation.py /path/to/imdb docs/tuning/copies-near-validation.json
"""
import json
import sys
from pathlib import Path

from kd_tutorial import data
from kd_tutorial.profiles import PROFILES


def near_copies(raw: data.Reviews, validation: data.Reviews) -> set[str]:
    """Texts within MOVIE_GUARD reviews of their class (source order) of a copy of a validation text, less those."""
    val, near_texts, guard = {t.strip() for t in validation.texts}, set(), data.MOVIE_GUARD
    for label in sorted(set(raw.labels)):
        rows = [i for i, y in enumerate(raw.labels) if y == label]
        near = {q for p, i in enumerate(rows) if raw.texts[i].strip() in val for q in range(p - guard, p + guard + 1)}
        near_texts |= {raw.texts[rows[q]].strip() for q in near if 0 <= q < len(rows)}
    return near_texts - val


def main(folder: str, out: str) -> None:
    """Count, per seed, the reviews of train, transfer and spare that share a listing with a validation review."""
    profile, raw = PROFILES["cpu"], data._folder_raw(Path(folder))[0]["train"]
    counts = {}
    for seed in range(10):
        d = data.load_for_profile(profile, folder, seed=seed)
        near = near_copies(raw, d.validation)
        counts[seed] = {name: sum(t.strip() in near for t in split.texts)
                        for name, split in (("train", d.train), ("transfer", d.transfer), ("spare", d.spare))}
        print(seed, counts[seed], flush=True)
    Path(out).write_text(json.dumps({"what": __doc__.split("\n\n")[0], "profile": "cpu", "folder": folder,
                                     "guard": data.MOVIE_GUARD, "counts_by_seed": counts}, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
