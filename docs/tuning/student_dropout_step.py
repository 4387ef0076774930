"""e24's cost side: one training step of each `cpu` student with its hidden dropout at BERT's 0.1 and at 0.

One process, PyTorch's default threads (2 here), cross-entropy steps on random full-length reviews of the profile's
batch size, in the precision the profile resolves to on this CPU, from random weights (speed does not depend on
them); the two settings alternate, best of `rounds`, after one warm-up step each. Dropout draws a mask per element
(`bernoulli_`), which on a CPU not made by Intel runs one element at a time (docs/tuning.md, "The new defaults").
    python docs/tuning/student_dropout_step.py > docs/tuning/student-dropout-step.json
"""
import json
import platform
import time

import torch

from kd_tutorial.device import autocast_dtype
from kd_tutorial.models import set_hidden_dropout
from kd_tutorial.profiles import get_profile
from workers_step_cost import student_and_batch

STEPS, ROUNDS = 8, 3


def seconds_per_step(profile, spec, p: float) -> float:
    _, student, optimizer, batch = student_and_batch(profile, spec)
    set_hidden_dropout(student, p)
    dtype = autocast_dtype("cpu", profile.precision)

    def step():
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = student(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    step()
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    return (time.perf_counter() - start) / STEPS


profile = get_profile("cpu")
out = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
       "precision": str(autocast_dtype("cpu", profile.precision)), "steps": STEPS, "rounds": ROUNDS, "seconds_per_step": {}}
for spec in profile.students:
    times = {0.1: [], 0.0: []}
    for _ in range(ROUNDS):
        for p in times:
            times[p].append(seconds_per_step(profile, spec, p))
    out["seconds_per_step"][spec.name] = {f"dropout {p}": {"best": min(t), "all": t} for p, t in times.items()}
    out["seconds_per_step"][spec.name]["saving"] = 1 - min(times[0.0]) / min(times[0.1])
print(json.dumps(out, indent=1))
