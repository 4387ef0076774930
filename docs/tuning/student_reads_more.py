"""e30: a student reads 512 tokens of each review, taught by the teacher that reads the whole review (e29).

Usage: python docs/tuning/student_reads_more.py OUT.json STUDENT
   (KD_TUTORIAL_DATA_DIR: the IMDB parquet files; KD_TUTORIAL_HOME: the artifact cache that holds the `cpu`
   profile's teacher and its `kd+transfer` runs, the reference)

`e29` found that the teacher answers better when it reads the whole review, and that students reading 256 tokens do
not follow it. Here the student reads more: each review cut to 512 tokens (`head+tail`, its first 128 and its
last 382), in training, validation and test, on the teacher's whole-review answers
(``teacher_whole_review.whole_review_logits``). compact-2L-H128's steps are a seventh of the students' arithmetic
at 256 tokens, so it can afford the longer input; distil-3L's runs took 1.54 times as long (2,645.8 s against
1,715.2 s over the three seeds, cpu-distil-reads-512.json). The same reviews, steps and seeds as the profile's
`kd+transfer`; two runs at a time with one thread each.

Its share is given against the teacher on the same reviews read whole (what taught it) as well as against the
profile's 256-token teacher; teacher_lengths.py measures the teacher reading 512 tokens. The rule, fixed before the
runs, as in e26 to e29: adopt when the paired bootstrap interval of the validation accuracy minus the profile's,
pooled over the seeds, lies above 0. Test is recorded.
"""
import json
import sys

import torch

from kd_tutorial import data, evaluate, parallel, plan, teachers
from teacher_whole_review import (profile, RECIPE, run_student, scored_reference, SEEDS, SPECS,
                                  summary, teacher_both_ways, whole_review_logits)

LENGTH = 512


def read_longer(prep, split: str) -> data.Encoded:
    """``split`` encoded as the profile does, but cut to :data:`LENGTH` tokens."""
    return data.encode(getattr(prep.data, split), prep.tokenizer, LENGTH, profile.truncation)


def main(out_path: str, student_name: str) -> None:
    spec = SPECS[student_name]
    teacher, prep, info = teachers.ensure_teacher(profile, progress=False)
    logits = {s: teachers.ensure_teacher_logits(profile, s, progress=False) for s in ("train", "transfer", "test")}
    whole = {s: whole_review_logits(teacher, getattr(prep.data, s), prep.tokenizer, logits[s])["logits"]
             for s in ("train", "transfer")}
    longer = {s: read_longer(prep, s) for s in ("train", "transfer", "validation", "test")}
    keep = plan.student_labels(profile, prep)
    rows = data.concat_encoded(data.subset_encoded(longer["train"], keep, "student labels"), longer["transfer"],
                               "train+transfer")
    t_logits = torch.cat([whole["train"][keep], whole["transfer"]])
    steps = plan.step_budget(profile, spec, len(rows))
    print(len(rows), "rows,", steps, "steps;", "mean tokens", sum(rows.lengths) / len(rows), flush=True)

    def job(k: int) -> dict:
        seed = SEEDS[k]
        config = plan.run_config(profile, spec, RECIPE, steps, seed)
        folder = prep.directory / "experiments" / f"e30-{student_name}-{LENGTH}-tokens-whole-review-teacher-s{seed}"
        return run_student(spec, config, teacher, prep, rows, t_logits, folder, val=longer["validation"],
                           test=longer["test"])[0]

    variant = parallel.run_forked(job, len(SEEDS), parallel.default_workers("cpu"))
    both = teacher_both_ways(teacher, prep, logits)
    ref = scored_reference(teacher, prep, logits, spec)
    out = {"teacher": {"val": info["val_accuracy"], "weights": info.get("weights")}
           | {s: {k: v for k, v in both[s].items() if not k.startswith("correct")} for s in both},
           "student": student_name, "tokens": LENGTH, "steps": steps,
           "validation_reviews": len(prep.encoded["validation"]), "test_reviews": len(prep.encoded["test"]),
           "profile": summary(ref, both["test"]["head_tail"]),
           f"{LENGTH} tokens, whole-review teacher": summary(variant, both["test"]["head_tail"])}
    out[f"{LENGTH} tokens, whole-review teacher"]["share_of_whole_review_teacher"] = (
        out[f"{LENGTH} tokens, whole-review teacher"]["test_mean"] / both["test"]["whole"])
    for split in ("val", "test"):
        a, b = (torch.tensor([r[split] for r in runs]) for runs in (variant, ref))
        out[f"{split}_against_profile"] = evaluate.compare_paired(a, b)
    out["test_against_whole_review_teacher"] = evaluate.compare_paired(
        torch.tensor([r["test"] for r in variant]), torch.tensor([both["test"]["correct_whole"]] * len(variant)))
    print(json.dumps({k: v for k, v in out.items() if k != "teacher"}), flush=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
