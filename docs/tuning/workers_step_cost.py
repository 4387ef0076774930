"""Training steps of each student, one run with every core against two runs side by side with one thread each.

"Alone": one process, PyTorch's default threads (2 on a 2-core machine), `steps` AdamW steps. "Side by side": two
forked workers of one thread each (kd_tutorial.parallel.run_forked, as `kd-tutorial distill` trains its students).
Each worker builds its model and takes one warm-up step, then both wait at a barrier and time the same `steps` at
once; side by side, two steps finish in the slower worker's time per step. The steps are cross-entropy steps on
random reviews of the profile's batch size and length, with the profile's attention dropout and frozen embeddings, from
random weights (speed does not depend on the weights). The students' other dropouts stay BERT's 0.1, as in every record
this script wrote (the `cpu` profile trains them at 0 since 137a549; its timed seed took as long as at 0.1). With "online teacher", every step also runs the teacher's forward
pass with its hidden states, as the intermediate recipes (+cosine, +values) do. Each step runs in the precision the
profile resolves to on this CPU, under autocast as the training loop does (bf16 on a CPU with bf16 units, else fp32).
Run from the repository root on otherwise idle cores (by default the tiny and cpu profiles; name them to choose):
    python docs/tuning/workers_step_cost.py [PROFILE ...] > docs/tuning/workers-step-cost.json
Records: workers-step-cost.json (fp32, a CPU without bf16 units), workers-step-cost-bf16.json (the machine of the
`cpu` profile's timed seed), workers-step-cost-no-bf16.json (`cpu` only, fp32, another CPU without bf16 units, at
71ee8c0: the factor of `kd_tutorial.estimates.CPU_FP32_SLOWDOWN`).
"""
import json
import multiprocessing
import os
import sys
import time

import torch

from kd_tutorial import models, parallel
from kd_tutorial.device import autocast_dtype, resolve_precision
from kd_tutorial.profiles import get_profile

STEPS = {"tiny": 40, "cpu": 8}


def student_and_batch(profile, spec):
    """The teacher and a student of ``spec`` (random weights), its optimizer, and one batch of random reviews."""
    teacher = models.teacher_for_profile(profile, init="random").eval()
    student = models.build_student(spec, teacher, init="random", attention_dropout=profile.attention_dropout,
                                   freeze_embeddings=profile.freeze_word_embeddings)
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (profile.batch_size, profile.max_length), generator=generator)
    labels = torch.randint(0, 2, (profile.batch_size,), generator=generator)
    return teacher, student.train(), optimizer, {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                                 "labels": labels}


def seconds_for(profile, spec, steps: int, online: bool, barrier=None) -> float:
    """Wall seconds of ``steps`` training steps, after one warm-up step (and the ``barrier``, when given)."""
    teacher, student, optimizer, batch = student_and_batch(profile, spec)

    dtype = autocast_dtype("cpu", profile.precision)

    def step():
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            if online:
                with torch.no_grad():
                    teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            output_hidden_states=True)
            loss = student(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    step()
    if barrier is not None:
        barrier.wait()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def measure(profile_name: str, spec, online: bool = False) -> dict:
    """Seconds per step alone (all threads) and side by side (2 workers, 1 thread each, timed together)."""
    profile, steps = get_profile(profile_name), STEPS[profile_name]
    alone = seconds_for(profile, spec, steps, online) / steps
    barrier = multiprocessing.get_context("fork").Barrier(2)  # inherited by both workers
    per_worker = parallel.run_forked(lambda _: seconds_for(profile, spec, steps, online, barrier), 2, workers=2)
    side = max(per_worker) / steps / 2  # two steps finish in the slower worker's time per step
    return {"profile": profile_name, "student": spec.name, "online_teacher": online, "steps": steps,
            "precision": resolve_precision("cpu", profile.precision),
            "threads_alone": torch.get_num_threads(), "seconds_per_step_alone": round(alone, 4),
            "seconds_per_step_each_worker": [round(s / steps, 4) for s in per_worker],
            "seconds_per_step_side_by_side": round(side, 4), "speed_up": round(alone / side, 2)}


def main(names=("tiny", "cpu")) -> None:
    """Every student of the profiles ``names``, and cpu's with an online teacher too; the JSON record on stdout."""
    rows = [measure(name, spec) for name in names for spec in get_profile(name).students]
    if "cpu" in names:
        rows += [measure("cpu", spec, online=True) for spec in get_profile("cpu").students]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown")
    print(json.dumps({"what": __doc__.split("\n")[0], "cpu": cpu, "cores": os.cpu_count(),
                      "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main(tuple(sys.argv[1:]) or ("tiny", "cpu"))
