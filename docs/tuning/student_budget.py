"""e26, e27 (and e37 to e40): one student's budget at the current defaults, each variant against the profile, on
validation.

Usage: python docs/tuning/student_budget.py OUT.json STUDENT FIELD=VALUE [FIELD=VALUE ...]
   (KD_TUTORIAL_DATA_DIR: the IMDB parquet files; KD_TUTORIAL_HOME: the artifact cache that holds the profile's
   teacher and its `kd+transfer` runs)
   e26: python docs/tuning/student_budget.py OUT.json compact-2L-H128 epochs=3.0 lr=1e-3
   e27: python docs/tuning/student_budget.py OUT.json distil-3L lr=5e-5
   e37: python docs/tuning/student_budget.py OUT.json distil-3L batch_size=8 lr=2e-4
   e38: python docs/tuning/student_budget.py OUT.json distil-3L "layer_map=(0, 2, 5)" "layer_map=(0, 3, 5)"
   e39: python docs/tuning/student_budget.py OUT.json distil-3L copy_head=True
   e40: python docs/tuning/student_budget.py OUT.json distil-3L freeze_word_embeddings=False

Each FIELD=VALUE is one variant: the student's StudentSpec with that field changed, or, for a field of the Profile
(batch_size, say), the profile the student trains under, its teacher unchanged. Each trains `kd+transfer` on
seeds 0, 1 and 2 into the artifact cache, two runs at a time; the profile's own runs (the reference) are read back
from there. Every run is then scored on validation and on test. The choice is made on validation only: a variant is
adopted when the paired bootstrap interval of its validation accuracy minus the reference's, pooled over the seeds
(`evaluate.compare_paired`), lies above 0. Test is recorded, not used: each variant's share of the teacher on it, with
its paired interval (`evaluate.teacher_share`), and its comparison with the reference.
"""
import ast
import dataclasses
import json
import statistics
import sys

import torch

from kd_tutorial import evaluate, parallel, pipeline, teachers
from kd_tutorial.profiles import get_profile

SEEDS, RECIPE = (0, 1, 2), "kd+transfer"
profile = get_profile("cpu")
profile = profile.replace(students=tuple(dataclasses.replace(s, spare_reviews=False)  # its runs predate e32
                                         for s in profile.students))


def variants(student: str, changes: list[str]) -> dict:
    """``{"profile": (the profile, the student's spec), "FIELD=VALUE": (profile, spec) with the field changed in
    the spec, or in the profile where it is one of the profile's, ...}``."""
    spec = next(s for s in profile.students if s.name == student)
    out = {"profile": (profile, spec)}
    spec_fields = {f.name for f in dataclasses.fields(spec)}
    for change in changes:
        field, _, value = change.partition("=")
        change_it = {field: ast.literal_eval(value)}
        out[change] = ((profile, dataclasses.replace(spec, **change_it)) if field in spec_fields
                       else (profile.replace(**change_it), spec))
    return out


def trained(teacher, prep, logits, trained_under, spec) -> dict:
    """The three seeds of ``spec``'s `kd+transfer` under the profile ``trained_under``, trained where the cache lacks
    them (two at a time)."""
    return pipeline.distill_students(trained_under, teacher, prep, logits, seeds=SEEDS, runs=[RECIPE], resume=True,
                                     progress=False, workers=parallel.default_workers("cpu"), layers={},
                                     students=(spec,))


def correct_on(item, split) -> torch.Tensor:
    """Whether the run's kept weights get each review of ``split`` right."""
    z = evaluate.predict_logits(item["model"], split, batch_size=profile.eval_batch_size, progress=False,
                                precision=profile.precision)
    return z.argmax(-1) == torch.as_tensor(split.labels)


def main(out_path: str, student: str, changes: list[str]) -> None:
    teacher, prep, info = teachers.ensure_teacher(profile, progress=False)
    logits = {s: teachers.ensure_teacher_logits(profile, s, progress=False) for s in ("train", "transfer")}
    test_logits = teachers.ensure_teacher_logits(profile, "test", progress=False)
    teacher_test = evaluate.accuracy(test_logits, prep.encoded["test"].labels)
    teacher_right = test_logits.argmax(-1) == torch.as_tensor(prep.encoded["test"].labels)
    out = {"teacher": {"val": info["val_accuracy"], "test": teacher_test, "weights": info.get("weights")},
           "validation_reviews": len(prep.encoded["validation"]), "test_reviews": len(prep.encoded["test"]),
           "variants": {}}
    correct = {}
    specs = variants(student, changes)
    for name, (trained_under, spec) in specs.items():
        runs = sorted(trained(teacher, prep, logits, trained_under, spec).values(), key=lambda item: item["seed"])
        rows = []
        for item in runs:
            val, test = (correct_on(item, prep.encoded[s]) for s in ("validation", "test"))
            correct.setdefault(name, {"val": [], "test": []})
            correct[name]["val"].append(val)
            correct[name]["test"].append(test)
            rows.append({"seed": item["seed"], "status": item["status"], "kept_val": item["history"].best_val_acc,
                         "val": float(val.float().mean()), "test": float(test.float().mean()),
                         "evals": [[e["step"], e["val_acc"]] for e in item["history"].to_dict()["evals"]],
                         "train_s": item["history"].seconds})
        test_mean = statistics.mean(r["test"] for r in rows)
        out["variants"][name] = {"student": student, "epochs": spec.epochs, "lr": spec.lr,
                                 "batch_size": trained_under.batch_size, "runs": rows,
                                 "val_mean": statistics.mean(r["val"] for r in rows), "test_mean": test_mean,
                                 "share_of_teacher": evaluate.teacher_share(torch.stack(correct[name]["test"]),
                                                                            teacher_right)}
        print(name, json.dumps(out["variants"][name]["runs"]), flush=True)
    for name in specs:
        if name != "profile":
            for split in ("val", "test"):
                a, b = (torch.stack(correct[n][split]) for n in (name, "profile"))
                out["variants"][name][f"{split}_against_profile"] = evaluate.compare_paired(a, b)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
