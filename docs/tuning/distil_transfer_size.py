"""e28 (and e32): a student's `kd+transfer` over a transfer set enlarged with the train reviews no split uses.

Usage: python docs/tuning/distil_transfer_size.py OUT.json [STUDENT [SEEDS [RECIPE]]]
   (KD_TUTORIAL_DATA_DIR: the IMDB parquet files; KD_TUTORIAL_HOME: the artifact cache that holds the `cpu`
   profile's teacher and the student's `kd+transfer` runs, the reference; STUDENT: distil-3L by default, as in
   e28, and compact-2L-H128 in e32; SEEDS: 0,1,2 by default, and 3,4 for e32's confirmation; RECIPE: kd+transfer
   by default, and pseudo-label for e32's control, against the profile's runs of the same recipe)

The profile's transfer set is 8,000 of IMDB's 25,000 train reviews. The extra reviews are the train reviews that no
split holds, that no validation run's guard fences (:data:`kd_tutorial.data.MOVIE_GUARD` rows on either side of a
run, in each class's source order) and whose text no split holds; each text once. The teacher is the profile's own
(its 2,000 reviews are unchanged), run over them. Each seed trains the student's epochs (distil-3L 1,
compact-2L-H128 2) over labelled + transfer + extra reviews (the profile's rule for the step budget, so about 2.5
times its steps), two runs at a time with one thread each.
Every run is scored on validation and on test. The rule, fixed before the runs, as in e26 and e27: adopt when the
paired bootstrap interval of the validation accuracy minus the profile's, pooled over the seeds, lies above 0. Test
is recorded, not used.
"""
import json
import sys
from pathlib import Path

import torch

from kd_tutorial import data, evaluate, parallel, plan, teachers
from teacher_whole_review import profile, run_student, scored_reference, SPECS, summary


def extra_reviews(prep) -> data.Reviews:
    """The train reviews no split holds, unfenced by validation's runs, each text once, labels hidden."""
    raw = data._table_raw(Path(prep.data_key))["train"]
    used = {t for split in (prep.data.train, prep.data.validation, prep.data.transfer, prep.data.test)
            for t in split.texts}
    val = set(prep.data.validation.texts)
    keep, seen = [], set()
    for label in (0, 1):
        rows = [i for i, y in enumerate(raw.labels) if y == label]
        in_val = [p for p, i in enumerate(rows) if raw.texts[i] in val]
        fenced = {q for p in in_val for q in range(p - data.MOVIE_GUARD, p + data.MOVIE_GUARD + 1)}
        for p, i in enumerate(rows):
            text = raw.texts[i]
            if p not in fenced and text not in used and text not in seen:
                seen.add(text)
                keep.append(i)
    return raw.subset(keep).unlabelled("extra")


def main(out_path: str, student_name: str = "distil-3L", seeds: str = "0,1,2", recipe: str = "kd+transfer") -> None:
    spec, seeds = SPECS[student_name], tuple(sorted(int(s) for s in seeds.split(",")))  # as reference() sorts them
    run_name = student_name if recipe == "kd+transfer" else f"{student_name}-{recipe}"  # e28's folders unchanged
    teacher, prep, info = teachers.ensure_teacher(profile, progress=False)
    logits = {s: teachers.ensure_teacher_logits(profile, s, progress=False) for s in ("train", "transfer", "test")}
    extra = data.encode(extra_reviews(prep), prep.tokenizer, profile.max_length, profile.truncation)
    extra_logits = teachers.ensure_teacher_logits_on(profile, "extra", extra, teacher_model=teacher, progress=False)
    rows, t_logits, _ = plan.student_data(profile, prep, logits)["transfer"]
    rows, t_logits = data.concat_encoded(rows, extra, "train+transfer+extra"), torch.cat([t_logits, extra_logits])
    steps = plan.step_budget(profile, spec, len(rows))
    print(f"{len(extra)} extra reviews; {len(rows)} rows; {steps} steps per run", flush=True)
    teacher_test = evaluate.accuracy(logits["test"], prep.encoded["test"].labels)

    def job(k: int) -> dict:
        config = plan.run_config(profile, spec, recipe, steps, seeds[k])
        folder = prep.directory / "experiments" / f"e28-{run_name}-extra-transfer-s{seeds[k]}"
        return run_student(spec, config, teacher, prep, rows, t_logits, folder, val=prep.encoded["validation"],
                           test=prep.encoded["test"])[0]

    variant = parallel.run_forked(job, len(seeds), parallel.default_workers("cpu"))
    ref = scored_reference(teacher, prep, logits, spec, seeds, recipe)
    out = {"teacher": {"val": info["val_accuracy"], "test": teacher_test, "weights": info.get("weights")},
           "extra_reviews": len(extra), "rows": len(rows), "steps": steps,
           "validation_reviews": len(prep.encoded["validation"]), "test_reviews": len(prep.encoded["test"])}
    epochs = "1 epoch" if spec.epochs == 1 else f"{spec.epochs:g} epochs"
    out["student"], out["recipe"] = student_name, recipe
    for name, runs in (("profile", ref), (f"extra transfer, {epochs}", variant)):
        out[name] = summary(runs, teacher_test)
        print(name, json.dumps(out[name]), flush=True)
    for split in ("val", "test"):
        a, b = (torch.tensor([r[split] for r in runs]) for runs in (variant, ref))
        out[f"{split}_against_profile"] = evaluate.compare_paired(a, b)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:5])
