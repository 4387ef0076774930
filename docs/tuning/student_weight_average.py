"""e31: a student keeps an exponential moving average (EMA) of its weights, and validation chooses among the averages.

Usage: python docs/tuning/student_weight_average.py OUT.json STUDENT
   (KD_TUTORIAL_DATA_DIR: the IMDB parquet files; KD_TUTORIAL_HOME: the artifact cache that holds the `cpu`
   profile's teacher and its `kd+transfer` runs, the reference)

After every optimizer step, ``ema = decay * ema + (1 - decay) * weights``, in fp32, starting from the student's
initial weights (buffers are copied). The decay is fixed before the runs: ``1 - 6 / steps``, an average over about
the last sixth of the run (0.989 for distil-3L's 562 steps, 0.995 for compact-2L-H128's 1,123). At each of the
profile's validation passes the averaged weights are scored, and the best of them is kept (``keep_best``, as the
profile keeps the best raw weights). The raw weights are scored too, for the record: they train exactly as the
profile's run does, since the average draws no random numbers, so their scores check the setup. The averages are
not in the checkpoint, so the runs do not resume. The same reviews, steps and seeds as the profile's
`kd+transfer`; two runs at a time with one thread each. Averaging costs no arithmetic beyond one weighted sum per
step, so it would fit the 20-minute target.

The rule, fixed before the runs, as in e26 to e30: adopt when the paired bootstrap interval of the validation
accuracy minus the profile's, pooled over the seeds, lies above 0. Test is recorded.
"""
import json
import sys

import torch

from kd_tutorial import evaluate, parallel, plan, teachers
from kd_tutorial import train as train_module
from teacher_whole_review import profile, RECIPE, run_student, scored_reference, SEEDS, SPECS, summary


class AveragedRun(train_module._Run):
    """The training loop with an EMA of the weights, which validation scores and ``keep_best`` keeps."""
    decay = None  # set before the runs start

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.average = {k: v.detach().clone().float() for k, v in self.model.state_dict().items()}
        self.raw_evals = []

    def optimizer_step(self) -> None:
        super().optimizer_step()
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                if v.is_floating_point():
                    self.average[k].lerp_(v.float(), 1 - self.decay)
                else:
                    self.average[k].copy_(v)

    def validate(self) -> bool:
        self.flush()
        raw_acc, _ = train_module._validate(self.model, self.val_data, self.config, self.device)  # and its answers
        self.raw_evals.append([self.at.step, raw_acc])
        raw = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.average)
        try:
            return super().validate()  # scores the average; keep_best copies it
        finally:
            self.model.load_state_dict(raw)
            self.history.raw_evals = self.raw_evals


def main(out_path: str, student_name: str) -> None:
    spec = SPECS[student_name]
    teacher, prep, info = teachers.ensure_teacher(profile, progress=False)
    logits = {s: teachers.ensure_teacher_logits(profile, s, progress=False) for s in ("train", "transfer", "test")}
    rows, t_logits, _ = plan.student_data(profile, prep, logits)["transfer"]
    steps = plan.step_budget(profile, spec, len(rows))
    AveragedRun.decay, plain = 1 - 6 / steps, train_module._Run
    print(len(rows), "rows,", steps, "steps; decay", AveragedRun.decay, flush=True)

    def job(k: int) -> dict:
        seed = SEEDS[k]
        config = plan.run_config(profile, spec, RECIPE, steps, seed)
        folder = prep.directory / "experiments" / f"e31-{student_name}-ema-s{seed}"
        record, history = run_student(spec, config, teacher, prep, rows, t_logits, folder,
                                      val=prep.encoded["validation"], test=prep.encoded["test"], resume=False)
        return record | {"raw_evals": history.raw_evals}

    train_module._Run = AveragedRun  # the forked workers inherit it
    try:
        variant = parallel.run_forked(job, len(SEEDS), parallel.default_workers("cpu"))
    finally:
        train_module._Run = plain  # the reference is read back, never trained with the average
    teacher_test = evaluate.accuracy(logits["test"], prep.encoded["test"].labels)
    ref = scored_reference(teacher, prep, logits, spec)
    out = {"teacher": {"val": info["val_accuracy"], "test": teacher_test, "weights": info.get("weights")},
           "student": student_name, "steps": steps, "decay": AveragedRun.decay,
           "validation_reviews": len(prep.encoded["validation"]), "test_reviews": len(prep.encoded["test"]),
           "profile": summary(ref, teacher_test), "weight average": summary(variant, teacher_test)}
    for split in ("val", "test"):
        a, b = (torch.tensor([r[split] for r in runs]) for runs in (variant, ref))
        out[f"{split}_against_profile"] = evaluate.compare_paired(a, b)
    print(json.dumps({k: v for k, v in out.items() if k != "teacher"}), flush=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
