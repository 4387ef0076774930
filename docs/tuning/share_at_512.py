"""e30: each 512-token student's share of the teacher reading the same 512 tokens, with its paired interval.

Usage: python docs/tuning/share_at_512.py OUT.json
   (KD_TUTORIAL_DATA_DIR: the IMDB parquet files; KD_TUTORIAL_HOME: the artifact cache that holds the `cpu`
   profile's teacher and the e30 runs of student_reads_more.py)

Scores the teacher and the three seeds of each student (their kept weights, from the cache) on the test reviews cut
to 512 tokens (`head+tail`), and gives ``evaluate.teacher_share``: both models' answers on each drawn review.
"""
import json
import sys

import torch

from kd_tutorial import data, evaluate, teachers
from kd_tutorial.artifacts import load_student
from kd_tutorial.profiles import get_profile

profile = get_profile("cpu")
LENGTH, SEEDS = 512, (0, 1, 2)


def correct(model, encoded) -> torch.Tensor:
    """Whether ``model`` gets each review of ``encoded`` right, in the profile's precision."""
    z = evaluate.predict_logits(model, encoded, batch_size=profile.eval_batch_size, precision=profile.precision)
    return z.argmax(-1) == encoded.labels


def main(out_path: str) -> None:
    teacher, prep, _ = teachers.ensure_teacher(profile, progress=False)
    test = data.encode(prep.data.test, prep.tokenizer, LENGTH, profile.truncation)
    teacher_right = correct(teacher, test)
    out = {"teacher_weights": teachers.weights_hash(teacher), "tokens": LENGTH, "test_reviews": len(test),
           "teacher_test": float(teacher_right.double().mean())}
    for spec in profile.students:
        rows = []
        for seed in SEEDS:
            folder = prep.directory / "experiments" / f"e30-{spec.name}-{LENGTH}-tokens-whole-review-teacher-s{seed}"
            rows.append(correct(load_student(folder)[0], test))
        right = torch.stack(rows)
        out[spec.name] = {"test_per_seed": right.double().mean(1).tolist(),
                          "share_of_teacher": evaluate.teacher_share(right, teacher_right)}
        print(spec.name, json.dumps(out[spec.name]), flush=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
