"""e34, e35: does a baseline validated three times per run keep its best weights? Each of a student's runs is validated
``evals_per_run`` times and keeps its best pass. compact-2L-H128's baseline reads its 1,000 labels for 2,785 steps
(44 passes over them, the budget its transfer-set runs need), so its first validation comes after 15 passes over
its labels: a baseline that peaks before that is never seen at its best.

Usage: python docs/tuning/baseline_evals.py OUT.json STUDENT RECIPE EVALS [EVALS ...]
   (KD_TUTORIAL_DATA_DIR: the IMDB parquet files; KD_TUTORIAL_HOME: the cache holding the profile's teacher)
   e34: python docs/tuning/baseline_evals.py docs/tuning/cpu-compact-baseline-evals.json compact-2L-H128 baseline 3 30
   e35: python docs/tuning/baseline_evals.py docs/tuning/cpu-distil-baseline-evals.json distil-3L baseline 10

Trains RECIPE of STUDENT on seeds 0, 1 and 2 with each ``evals_per_run`` (the profile's own number is read back
from the cache where it ran), and scores the kept weights on validation and on test. The rule, fixed before the
runs: more passes are adopted for a recipe when the paired bootstrap interval of validation accuracy (pooled over
the seeds) lies above 0. Test is recorded, not used for the choice.
"""
import dataclasses
import json
import sys

import torch

from kd_tutorial import evaluate, parallel, pipeline, teachers
from kd_tutorial.profiles import get_profile

SEEDS = (0, 1, 2)


def correct_on(profile, item, split) -> torch.Tensor:
    """Whether the run's kept weights get each review of ``split`` right."""
    z = evaluate.predict_logits(item["model"], split, batch_size=profile.eval_batch_size, progress=False,
                                precision=profile.precision)
    return z.argmax(-1) == torch.as_tensor(split.labels)


def main(out_path: str, student: str, recipe: str, evals: list[int]) -> None:
    base = get_profile("cpu")
    spec = next(s for s in base.students if s.name == student)
    teacher, prep, info = teachers.ensure_teacher(base, progress=False)
    logits = {s: teachers.ensure_teacher_logits(base, s, progress=False) for s in ("train", "transfer")}
    out = {"student": student, "recipe": recipe, "teacher_val": info["val_accuracy"], "variants": {}}
    correct = {}
    for n in evals:
        # the student's own count: the profile's would not reach a student that sets one (the preset's compact one
        # does since e34); the runs key alike either way (plan.run_key), so e34's runs are read back as they were
        profile, own = base.replace(evals_per_run=n), dataclasses.replace(spec, evals_per_run=n)
        runs = pipeline.distill_students(profile, teacher, prep, logits, seeds=SEEDS, runs=[recipe], resume=True,
                                         progress=False, workers=parallel.default_workers("cpu"), layers={},
                                         students=(own,))
        rows = []
        for item in sorted(runs.values(), key=lambda item: item["seed"]):
            val, test = (correct_on(profile, item, prep.encoded[s]) for s in ("validation", "test"))
            correct.setdefault(n, {"val": [], "test": []})
            correct[n]["val"].append(val)
            correct[n]["test"].append(test)
            history = item["history"].to_dict()
            rows.append({"seed": item["seed"], "status": item["status"], "best_step": history.get("best_step"),
                         "val": float(val.float().mean()), "test": float(test.float().mean()),
                         "evals": [[e["step"], e["val_acc"]] for e in history["evals"]],
                         "train_s": item["history"].seconds})
        out["variants"][str(n)] = {"runs": rows}
        print(n, json.dumps(rows), flush=True)
    first = evals[0]
    for n in evals[1:]:
        for split in ("val", "test"):
            a, b = (torch.stack(correct[m][split]) for m in (n, first))
            out["variants"][str(n)][f"{split}_against_{first}"] = evaluate.compare_paired(a, b)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], [int(v) for v in sys.argv[4:]])
