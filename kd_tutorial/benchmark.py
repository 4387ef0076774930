"""How much faster is the course's loop than a naive one? Measured, same data, same student, one run.

naive: every batch padded to ``max_length``, fp32, random batches, the teacher called at every step.
ours:  dynamic padding with length-grouped batches, bf16 autocast where the device has it, the
       teacher's logits computed once and read from a cache, and the profile's ``attention_dropout``
       (0 on the cpu profile, which lets the fused attention kernel run).

Both runs use :func:`kd_tutorial.train.train` from the same initial weights; only those switches differ.
Throughput counts real (non-pad) tokens, so padding is pure cost.
"""
from __future__ import annotations

import time

from .profiles import Profile


def loop_speed(profile: Profile, *, data_dir: str | None = None, student: int = 0, steps: int = 40,
               init: str = "pretrained", device: str | None = None, progress: bool = False) -> dict:
    """Train the profile's ``student``-th student for ``steps`` KD steps each way; return both speeds."""
    from .artifacts import prepare
    from .data import Encoded, concat_encoded
    from .device import autocast_dtype, pick_device
    from .train import seed_everything
    from .evaluate import predict_logits
    from .models import build_student, teacher_for_profile
    from .train import TrainConfig, freeze, train
    device = device or pick_device()
    prep = prepare(profile, data_dir=data_dir, init=init)
    both = concat_encoded(prep.encoded["train"], prep.encoded["transfer"], "train+transfer")
    n = min(len(both), 2 * steps * profile.batch_size)  # the rows a run of ``steps`` steps reads
    rows = Encoded(both.input_ids[:n], both.labels[:n], "benchmark rows")
    teacher = freeze(teacher_for_profile(profile, init=init)).to(device)
    spec = profile.students[student]
    common = dict(max_steps=steps, mode="kd", batch_size=profile.batch_size, lr=profile.student_lr,
                  temperature=profile.temperature, alpha=profile.alpha)
    results = {"profile": profile.name, "device": device, "student": spec.name, "steps": steps,
               "max_length": profile.max_length, "batch_size": profile.batch_size,
               "bf16": autocast_dtype(device) is not None, "attention_dropout": profile.attention_dropout}

    seed_everything(0)
    naive_student = build_student(spec, teacher, init=init)
    ours_student = build_student(spec, teacher, init=init, attention_dropout=profile.attention_dropout)
    ours_student.load_state_dict(naive_student.state_dict())

    naive = train(naive_student, rows, teacher=teacher, device=device, progress=progress, desc="naive loop",
                  config=TrainConfig(precision="fp32", group_by_length=False, pad_to_max=profile.max_length,
                                     **common))
    start = time.perf_counter()  # the cache is paid once, for every student, run and epoch
    cached = predict_logits(teacher, rows, batch_size=profile.eval_batch_size, device=device)
    cache_seconds = time.perf_counter() - start
    ours = train(ours_student, rows, teacher_logits=cached, device=device, progress=progress,
                 desc="course loop", config=TrainConfig(precision="auto", group_by_length=True, **common))
    results |= {
        "naive_tokens_per_s": naive.tokens_per_s, "ours_tokens_per_s": ours.tokens_per_s,
        "speedup": ours.tokens_per_s / naive.tokens_per_s,
        "naive_seconds": naive.seconds, "ours_seconds": ours.seconds, "cache_seconds": cache_seconds,
        "cache_tokens_per_s": sum(rows.lengths) / cache_seconds,
    }
    return results
