"""e24, read back: the runs of `student_dropout.py` at P = 0 and P = 0.1 (BERT's own), on the same test reviews.

Usage: python docs/tuning/student_dropout_compare.py OUT.json   (after both runs; KD_TUTORIAL_DATA_DIR as for them)

Loads the six `kd+transfer` runs of each setting from the artifact cache (nothing is trained: a run missing from the
cache is an error), scores each on the profile's test split, and compares the settings per student, paired over the
same reviews and pooled over the three seeds (`evaluate.compare_paired`). Validation accuracy is each run's kept pass.

cpu-student-dropout.json was written at e708380, from runs (and a teacher) on the carve of that time. The package has
carved other splits since 7d8dd55 (a repeated text counts once: 998 validation and 4,906 test reviews), and a cache
is keyed by its splits, so at the current code this script finds neither in that cache: it fine-tunes a teacher first
(not guarded, unlike the runs), then stops, naming the runs to train. Rerunning student_dropout.py before it gives
new runs on the current splits, not the record's; to check the record, run both at e708380.
"""
import dataclasses
import json
import statistics
import sys

import torch

from kd_tutorial import evaluate, pipeline, plan, teachers
from kd_tutorial.artifacts import student_finished
from kd_tutorial.profiles import get_profile

SEEDS, RECIPE = (0, 1, 2), "kd+transfer"
profile = get_profile("cpu").replace(student_hidden_dropout=None)  # 0.1 unless patched (preset: 0 since e25)
profile = profile.replace(students=tuple(dataclasses.replace(s, spare_reviews=False)  # its runs predate e32
                                         for s in profile.students))
teacher, prep, info = teachers.ensure_teacher(profile, progress=False)
logits = {s: teachers.ensure_teacher_logits(profile, s, progress=False) for s in ("train", "transfer")}
real_key = pipeline.run_key


def runs(p: float) -> dict:
    """The six cached runs trained with the students' hidden dropout at ``p``, as distill_students loads them."""
    pipeline.run_key = lambda *a, **k: real_key(*a, **k) + ((("student hidden dropout", p),) if p != 0.1 else ())
    try:
        n_rows = len(plan.student_data(profile, prep, logits, None)["transfer"][0])  # decides the step budget
        chosen = {s.name: [pipeline.get_recipe(RECIPE)] for s in profile.students}
        jobs = pipeline._jobs(profile, profile.students, chosen, SEEDS, teacher, prep, "pretrained", n_rows)
        missing = [j["name"] for j in jobs if not student_finished(j["folder"])]
        if missing:
            sys.exit(f"not in the cache, train them first (student_dropout.py): {missing}")
        return pipeline.distill_students(profile, teacher, prep, logits, seeds=SEEDS, runs=[RECIPE], resume=True,
                                         progress=False, workers=1, layers={})
    finally:
        pipeline.run_key = real_key


test = prep.encoded["test"]
teacher_acc = evaluate.accuracy(teachers.ensure_teacher_logits(profile, "test", progress=False), test.labels)
out = {"teacher": {"val": info["val_accuracy"], "test": teacher_acc, "weights": info.get("weights")},
       "test_reviews": len(test), "data_notes": list(prep.data.notes), "students": {}}
correct = {}
for p in (0.0, 0.1):
    for name, item in runs(p).items():
        z = evaluate.predict_logits(item["model"], test, batch_size=profile.eval_batch_size, progress=False)
        correct[(p, item["student"], item["seed"])] = z.argmax(-1) == test.labels
        out["students"].setdefault(item["student"], {}).setdefault(str(p), []).append(
            {"seed": item["seed"], "val": item["history"].best_val_acc,
             "test": float(correct[(p, item["student"], item["seed"])].float().mean()), "train_s": item["history"].seconds})
for student, by_p in out["students"].items():
    for p, rows in by_p.items():
        by_p[p] = {"runs": rows, "val_mean": statistics.mean(r["val"] for r in rows),
                   "test_mean": statistics.mean(r["test"] for r in rows),
                   "share_of_teacher": statistics.mean(r["test"] for r in rows) / teacher_acc}
    a = torch.stack([correct[(0.0, student, s)] for s in SEEDS])
    b = torch.stack([correct[(0.1, student, s)] for s in SEEDS])
    by_p["0 against 0.1, test"] = evaluate.compare_paired(a, b)
json.dump(out, open(sys.argv[1], "w"), indent=1)
print(json.dumps(out, indent=1))
