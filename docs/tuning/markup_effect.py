"""What replacing IMDB's HTML line breaks with a space (``--set markup=space``) does to the `cpu` profile's teacher
and to its students' `kd+transfer` runs, one seed, paired on the same test reviews.

Usage: python docs/tuning/markup_effect.py OUT.json
   after, with the same KD_TUTORIAL_HOME and KD_TUTORIAL_DATA_DIR (the IMDB parquet files),
   kd-tutorial distill --profile cpu --seeds 0 --recipes kd+transfer --set markup=keep
   kd-tutorial distill --profile cpu --seeds 0 --recipes kd+transfer --set markup=space

Reads each configuration's cached test logits (the teacher's, and each student run's, as `distill` evaluated them)
and each run's answers on validation at the pass it kept, and compares "space" with "keep" per model
(``evaluate.compare_paired``: paired bootstrap and McNemar over the reviews), and each side's share of its own
teacher (``evaluate.teacher_share``). One seed: the intervals say whether these models differ on new reviews, not
how much the difference moves with the training seed.
"""
import json
import sys
from pathlib import Path

import torch

from kd_tutorial import artifacts, evaluate, teachers
from kd_tutorial.profiles import get_profile

MARKUPS = ("keep", "space")
RUN = "kd+transfer"


def student_folder(prep, student: str) -> Path:
    """The folder of ``student``'s one ``kd+transfer`` run of seed 0 in this configuration."""
    slug = f"{student} {RUN}_s0".replace(" ", "_").replace("+", "-")
    found = sorted(prep.directory.glob(f"students/{slug}-*/logits-test-*.pt"))
    if len(found) != 1:
        raise SystemExit(f"{student}: {len(found)} test-logit files under {prep.directory}: run distill as above")
    return found[0].parent


def answers(prep, profile, name: str) -> dict:
    """Whether model ``name`` ("teacher" or a student) got each review right: on test from the logits `distill`
    cached, on validation from the pass its run kept (``best_val_correct``)."""
    labels = prep.encoded["test"].labels
    if name == "teacher":
        logits = teachers.ensure_teacher_logits(profile, "test", progress=False)
        history = json.loads((prep.directory / "teacher.json").read_text())["history"]
    else:
        folder = student_folder(prep, name)
        logits = torch.load(next(folder.glob("logits-test-*.pt")), weights_only=True)
        history = json.loads((folder / "history.json").read_text())
    return {"test": logits.argmax(-1) == labels,
            "validation": torch.tensor([c == "1" for c in history["best_val_correct"]])}


def main(out_path: str) -> None:
    """Compare the two configurations' models on validation and test; print the comparison and write it to
    ``out_path``."""
    profiles = {m: get_profile("cpu").replace(markup=m) for m in MARKUPS}
    preps = {m: artifacts.prepare(p) for m, p in profiles.items()}
    for split in ("validation", "test"):  # the same reviews, encoded two ways
        assert getattr(preps["keep"].data, split).texts == getattr(preps["space"].data, split).texts
    names = ["teacher", *(s.name for s in profiles["keep"].students)]
    right = {m: {name: answers(preps[m], profiles[m], name) for name in names} for m in MARKUPS}
    out = {"what": __doc__.split("\n\n")[0], "recipe": RUN, "seed": 0,
           "reviews": {split: len(preps["keep"].encoded[split]) for split in ("validation", "test")},
           "folders": {m: str(prep.directory) for m, prep in preps.items()}}
    for name in names:
        out[name] = {}
        for split in ("validation", "test"):
            a, b = right["space"][name][split], right["keep"][name][split]
            out[name] |= {f"{split}_keep": float(b.double().mean()), f"{split}_space": float(a.double().mean()),
                          f"{split}_space_against_keep": evaluate.compare_paired(a, b)}
        if name != "teacher":
            out[name] |= {f"{m}_share_of_teacher": evaluate.teacher_share(right[m][name]["test"],
                                                                         right[m]["teacher"]["test"]) for m in MARKUPS}
    print(json.dumps(out, indent=1), flush=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.split("\n\n")[1])  # the usage lines
    main(sys.argv[1])
