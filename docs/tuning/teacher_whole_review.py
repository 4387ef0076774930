"""e29: the teacher reads the whole review when it labels the students' reviews; the students still read 256 tokens.

Usage: python docs/tuning/teacher_whole_review.py OUT.json
   (KD_TUTORIAL_DATA_DIR: the IMDB parquet files; KD_TUTORIAL_HOME: the artifact cache that holds the `cpu`
   profile's teacher and its `kd+transfer` runs, the reference)

The profile cuts every review to 256 tokens (its first 64 and its last 190: `head+tail`), for the teacher as for the
students. About 44 % of IMDB's reviews are longer (6,973 of the profile's 15,885 in cpu-teacher-whole-review.json:
42 % of validation, 44 % of train, transfer and test). Here the profile's own teacher also reads each longer review in
consecutive windows of 254 tokens that cover all of it, and its answer is the mean of its log-probabilities over the
`head+tail` window and those windows (a review of 254 tokens or fewer keeps its answer). The students learn from
these answers on their labelled and transfer reviews, in place of the `head+tail` ones; nothing else changes: the
same reviews, the same 256-token inputs, the same steps and seeds. In the literature this is distillation with
privileged information (Lopez-Paz et al. 2016): the teacher sees, while it teaches, what the student never will.

Each student's `kd+transfer` trains on seeds 0, 1 and 2, two runs at a time with one thread each; the profile's own
runs (the reference) are read back from the cache. Every run is scored on validation and on test, and the teacher
both ways. The rule, fixed before the runs, as in e26 to e28: adopt when the paired bootstrap interval of the
validation accuracy minus the profile's, pooled over the seeds, lies above 0. Test is recorded, not used.
"""
import dataclasses
import json
import statistics
import sys
import time

import torch

from kd_tutorial import data, evaluate, parallel, pipeline, plan, teachers
from kd_tutorial.artifacts import save_student
from kd_tutorial.models import build_student, fold_word_embeddings
from kd_tutorial.profiles import get_profile
from kd_tutorial.seeding import seed_everything
from kd_tutorial.train import train

SEEDS, RECIPE = (0, 1, 2), "kd+transfer"
profile = get_profile("cpu")
SPECS = {s.name: s for s in profile.students}


def windows(full: data.Encoded, width: int) -> tuple[list[list[int]], list[int]]:
    """Consecutive windows of ``width - 2`` tokens (plus [CLS] and [SEP]) over each review longer than that, and
    the row each window belongs to. A last window shorter than 32 tokens is the review's last ``width - 2`` instead."""
    rows, owner = [], []
    step = width - 2
    for i, ids in enumerate(full.input_ids):
        body = ids[1:-1]
        if len(body) <= step:
            continue
        for start in range(0, len(body), step):
            chunk = body[start:start + step]
            if start and len(chunk) < 32:
                chunk = body[-step:]
            rows.append([ids[0], *chunk, ids[-1]])
            owner.append(i)
    return rows, owner


def whole_review_logits(teacher, reviews: data.Reviews, tokenizer, base_logits: torch.Tensor) -> dict:
    """The teacher's mean log-probabilities over the `head+tail` window (``base_logits``) and every window of the
    whole review; with the windows' count and the seconds the extra pass took."""
    full = data.encode(reviews, tokenizer, None)
    assert len(full) == len(base_logits), (len(full), len(base_logits))
    rows, owner = windows(full, profile.max_length)
    start = time.perf_counter()
    z = evaluate.predict_logits(teacher, data.Encoded(rows, torch.full((len(rows),), -1), "windows"),
                                batch_size=profile.eval_batch_size, precision=profile.precision)
    seconds = time.perf_counter() - start
    owner = torch.tensor(owner, dtype=torch.long)
    total = base_logits.log_softmax(-1).clone().index_add_(0, owner, z.log_softmax(-1))
    count = torch.ones(len(base_logits)).index_add_(0, owner, torch.ones(len(owner)))
    longer = torch.zeros(len(base_logits), dtype=torch.bool)
    longer[owner] = True
    return {"logits": total / count[:, None], "windows": len(rows), "longer": longer, "seconds": seconds}


def correct_on(model, split) -> list[bool]:
    """Whether ``model`` gets each review of ``split`` right, in the profile's precision."""
    z = evaluate.predict_logits(model, split, batch_size=profile.eval_batch_size, progress=False,
                                precision=profile.precision)
    return (z.argmax(-1) == torch.as_tensor(split.labels)).tolist()


def teacher_both_ways(teacher, prep, logits) -> dict:
    """The teacher's accuracy on validation and test, from its `head+tail` answers and from the whole review."""
    out = {}
    for split in ("validation", "test"):
        base = logits.get(split)
        if base is None:
            base = evaluate.predict_logits(teacher, prep.encoded[split], batch_size=profile.eval_batch_size,
                                           precision=profile.precision)
        whole = whole_review_logits(teacher, getattr(prep.data, split), prep.tokenizer, base)
        labels = prep.encoded[split].labels
        out[split] = {"head_tail": evaluate.accuracy(base, labels), "whole": evaluate.accuracy(whole["logits"], labels),
                      "longer_reviews": int(whole["longer"].sum()), "windows": whole["windows"],
                      "head_tail_on_longer": evaluate.accuracy(base[whole["longer"]], labels[whole["longer"]]),
                      "whole_on_longer": evaluate.accuracy(whole["logits"][whole["longer"]], labels[whole["longer"]]),
                      "correct_head_tail": (base.argmax(-1) == labels).tolist(),
                      "correct_whole": (whole["logits"].argmax(-1) == labels).tolist()}
    return out


def reference(teacher, prep, logits, spec, seeds=SEEDS, recipe: str = RECIPE) -> list[dict]:
    """The profile's own runs of ``spec`` and ``recipe``, read back from the artifact cache (trained into it, two at
    a time, for a seed it lacks), as they were before e32's spare reviews (which the experiments compare against)."""
    runs = pipeline.distill_students(profile, teacher, prep, logits, seeds=seeds, runs=[recipe], resume=True,
                                     progress=False, workers=parallel.default_workers("cpu"), layers={},
                                     students=(dataclasses.replace(spec, spare_reviews=False),))
    return sorted(runs.values(), key=lambda item: item["seed"])


def scored_reference(teacher, prep, logits, spec, seeds=SEEDS, recipe: str = RECIPE) -> list[dict]:
    """The profile's runs (:func:`reference`), each scored on validation and test as the profile encodes them."""
    return [{"seed": item["seed"], "val": correct_on(item["model"], prep.encoded["validation"]),
             "test": correct_on(item["model"], prep.encoded["test"]), "train_s": item["history"].seconds,
             "kept_val": item["history"].best_val_acc,
             "evals": [[e["step"], e["val_acc"]] for e in item["history"].evals]}
            for item in reference(teacher, prep, logits, spec, seeds, recipe)]


def run_student(spec, config, teacher, prep, rows, t_logits, folder, *, val, test, resume: bool = True):
    """One student run on ``rows`` and the teacher's ``t_logits``, built and seeded as ``pipeline._one_run`` does,
    stored in ``folder`` and scored on ``val`` and ``test``; returns ``(its record, its history)``."""
    seed_everything(config.seed)
    student = build_student(spec, teacher, attention_dropout=profile.attention_dropout,
                            freeze_embeddings=profile.freeze_word_embeddings,
                            hidden_dropout=profile.student_hidden_dropout, teacher_tokenizer=prep.tokenizer)
    seed_everything(config.seed)
    history = train(student, rows, config=config, val_data=val, teacher_logits=t_logits, device="cpu",
                    checkpoint_dir=folder, resume=resume, progress=False)
    student = fold_word_embeddings(student)
    save_student(folder, student, history)
    return {"seed": config.seed, "val": correct_on(student, val), "test": correct_on(student, test),
            "train_s": history.seconds, "steps": config.max_steps, "kept_val": history.best_val_acc,
            "evals": [[e["step"], e["val_acc"]] for e in history.evals]}, history


def summary(runs: list[dict], teacher_test: float) -> dict:
    """Per-seed accuracies and the means, without the per-review answers."""
    test_mean = statistics.mean(statistics.mean(r["test"]) for r in runs)
    return {"runs": [{k: v for k, v in r.items() if k not in ("val", "test")}
                     | {"val": statistics.mean(r["val"]), "test": statistics.mean(r["test"])} for r in runs],
            "val_mean": statistics.mean(statistics.mean(r["val"]) for r in runs), "test_mean": test_mean,
            "share_of_teacher": test_mean / teacher_test}


def main(out_path: str) -> None:
    teacher, prep, info = teachers.ensure_teacher(profile, progress=False)
    logits = {s: teachers.ensure_teacher_logits(profile, s, progress=False) for s in ("train", "transfer", "test")}
    whole = {s: whole_review_logits(teacher, getattr(prep.data, s), prep.tokenizer, logits[s])
             for s in ("train", "transfer")}
    rows, t_logits, _ = plan.student_data(profile, prep, {s: whole[s]["logits"] for s in whole})["transfer"]
    jobs = [(name, seed) for name in SPECS for seed in SEEDS]
    print({s: (whole[s]["windows"], round(whole[s]["seconds"])) for s in whole}, len(rows), "rows", flush=True)

    def job(k: int) -> dict:
        name, seed = jobs[k]
        spec = SPECS[name]
        config = plan.run_config(profile, spec, RECIPE, plan.step_budget(profile, spec, len(rows)), seed)
        folder = prep.directory / "experiments" / f"e29-{name}-whole-review-teacher-s{seed}"
        return run_student(spec, config, teacher, prep, rows, t_logits, folder, val=prep.encoded["validation"],
                           test=prep.encoded["test"])[0]

    done = parallel.run_forked(job, len(jobs), parallel.default_workers("cpu"))
    both = teacher_both_ways(teacher, prep, logits)
    teacher_test = both["test"]["head_tail"]
    out = {"teacher": {"val": info["val_accuracy"], "weights": info.get("weights")}
           | {s: {k: v for k, v in both[s].items() if not k.startswith("correct")} for s in both},
           "labelling_pass": {s: {"windows": whole[s]["windows"], "longer_reviews": int(whole[s]["longer"].sum()),
                                  "seconds": whole[s]["seconds"]} for s in whole},
           "validation_reviews": len(prep.encoded["validation"]), "test_reviews": len(prep.encoded["test"]),
           "students": {}}
    for name, spec in SPECS.items():
        ref = scored_reference(teacher, prep, logits, spec)
        variant = [r for (n, _), r in zip(jobs, done) if n == name]
        entry = {"profile": summary(ref, teacher_test), "whole-review teacher": summary(variant, teacher_test)}
        for split in ("val", "test"):
            a, b = (torch.tensor([r[split] for r in runs]) for runs in (variant, ref))
            entry[f"{split}_against_profile"] = evaluate.compare_paired(a, b)
        whole_test = torch.tensor([both["test"]["correct_whole"]] * len(variant))
        entry["test_against_whole_review_teacher"] = evaluate.compare_paired(
            torch.tensor([r["test"] for r in variant]), whole_test)
        out["students"][name] = entry
        print(name, json.dumps(entry), flush=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
