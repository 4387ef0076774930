"""An experiment's runs against the `cpu` profile's own `kd+transfer` runs (or another experiment's), on any seeds:
the paired comparisons on validation and test, and each side's share of the teacher on test with its paired interval.

Usage: python docs/tuning/experiment_share.py OUT.json STUDENT FOLDER SEEDS [OTHER]
   FOLDER: the runs' folder under the teacher's ``experiments/``, with ``{seed}`` where the seed goes (e32:
   ``e28-compact-2L-H128-extra-transfer-s{seed}``); SEEDS: as ``0,1,2,3,4``; OTHER: another experiment's folder,
   the same way, to compare with instead of the profile (e32's control: ``e28-compact-2L-H128-pseudo-label-…``)
   (KD_TUTORIAL_DATA_DIR: the IMDB parquet files; KD_TUTORIAL_HOME: the artifact cache that holds them and the
   profile's runs of those seeds)

Scores each seed's kept weights, the experiment's and the profile's, on validation and test as the profile encodes
them, in its precision. ``evaluate.compare_paired`` and ``evaluate.teacher_share`` pool the seeds, as the profile's
results do; the teacher's answers on test are its cached logits.
"""
import json
import sys

import torch

from kd_tutorial import evaluate, teachers
from kd_tutorial.artifacts import load_student
from teacher_whole_review import correct_on, profile, reference, SPECS


def main(out_path: str, student_name: str, folder: str, seeds: str, other: str | None = None) -> None:
    seeds = tuple(sorted(int(s) for s in seeds.split(",")))  # the order reference() returns the profile's in
    teacher, prep, info = teachers.ensure_teacher(profile, progress=False)
    logits = {s: teachers.ensure_teacher_logits(profile, s, progress=False) for s in ("train", "transfer", "test")}
    teacher_right = logits["test"].argmax(-1) == prep.encoded["test"].labels
    runs = {"experiment": [load_student(prep.directory / "experiments" / folder.format(seed=s))[0] for s in seeds]}
    if other is None:
        runs["profile"] = [item["model"] for item in reference(teacher, prep, logits, SPECS[student_name], seeds)]
    else:
        runs["other"] = [load_student(prep.directory / "experiments" / other.format(seed=s))[0] for s in seeds]
    ref = "profile" if other is None else "other"
    right = {name: {split: torch.tensor([correct_on(m, prep.encoded[split]) for m in models])
                    for split in ("validation", "test")} for name, models in runs.items()}
    out = {"teacher_weights": info.get("weights"), "student": student_name, "folder": folder, "other": other,
           "seeds": seeds, "teacher_test": float(teacher_right.double().mean())}
    for name, r in right.items():
        out[name] = {f"{split}_per_seed": r[split].double().mean(1).tolist() for split in r} | {
            "share_of_teacher": evaluate.teacher_share(r["test"], teacher_right)}
    for split in ("validation", "test"):
        out[f"{split}_against_{ref}"] = evaluate.compare_paired(right["experiment"][split], right[ref][split])
    print(json.dumps(out), flush=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:6])
