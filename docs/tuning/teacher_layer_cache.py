"""The online teacher against a cache of its mapped layers, measured on the cpu profile's shapes.

Issue 8 asks to compute the teacher's per-token internals online or to cache the mapped layers in bf16, to measure
the trade-off, and to say which was chosen. The course computed them online when this script ran (09b49ba; the
package caches them since ad285b3, kd_tutorial/layer_cache.py). This script prototypes the cache, here only, to
measure what it would cost and save:

1. Building it: one teacher pass over N reviews (batch 64, length-grouped, as the logits pass), first plain, then
   also copying the mapped layers to a bf16 memmap on disk: distil-3L's hidden states (teacher layers 2, 4, 6) and
   compact-2L-H128's value vectors (layers 3, 6). Alternating, best of 2.
2. A training step: each student's ``kd+transfer`` (logits from the cache), its intermediate recipe with the online
   teacher (as the course does), and the same recipe reading the mapped layers from the memmap (the loop's
   ``teacher_outputs`` replaced here, nothing else). Alternating, best of 2.

The rows are synthetic reviews with IMDB's lengths, at most 256 tokens; the teacher is the pretrained
all-MiniLM-L6-v2, not fine-tuned (a cost does not depend on the weights). The memmap is read back from the page
cache: at the profile's size (10,000 reviews, 5 layers, about 9.8 GB) it would also fit in this machine's 24 GB.

    python docs/tuning/teacher_layer_cache.py docs/tuning/teacher-layer-cache.json
"""
import copy
import dataclasses
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

from kd_tutorial import pipeline, plan
from kd_tutorial import train as train_module
from kd_tutorial.benchmark import synthetic_rows
from kd_tutorial.data import batch_groups, collate
from kd_tutorial.evaluate import predict_logits
from kd_tutorial.features import Features, forward_features
from kd_tutorial.layer_maps import layer_mapping
from kd_tutorial.models import DistillationStudent, build_student, teacher_for_profile
from kd_tutorial.profiles import get_profile
from kd_tutorial.seeding import seed_everything
from kd_tutorial.train import freeze, train

N, STEPS, REPEATS = (64, 2, 1) if os.environ.get("SMOKE") else (1024, 24, 2)  # SMOKE=1: a quick check
profile = get_profile("cpu")
torch.set_num_threads(2)
teacher = freeze(teacher_for_profile(profile))
rows = synthetic_rows(N, profile.max_length)
specs = {s.name: s for s in profile.students}
RECIPE = {"distil-3L": "kd+transfer+cosine", "compact-2L-H128": "kd+transfer+values"}
KIND = {"distil-3L": "hidden", "compact-2L-H128": "values"}
width, layers = teacher.config.hidden_size, teacher.config.num_hidden_layers
recipes = {name: {r.name: r for r in plan.student_recipes(profile, specs[name], ["kd+transfer", RECIPE[name]])}
           for name in RECIPE}  # with the student's own layer mapping and relation heads
mapped = {name: layer_mapping(recipes[name][RECIPE[name]].intermediate.mapping, specs[name].num_layers, layers)
          for name in RECIPE}
folder = tempfile.mkdtemp(prefix="teacher-layers-")
store = {(KIND[name], t): np.lib.format.open_memmap(os.path.join(folder, f"{KIND[name]}-{t}.npy"), mode="w+",
                                                    dtype=np.int16, shape=(N, profile.max_length, width))
         for name in RECIPE for t in mapped[name]}


def bf16_rows(x: torch.Tensor) -> np.ndarray:
    """bf16 values stored as int16 (numpy has no bf16)."""
    return x.to(torch.bfloat16).view(torch.int16).numpy()


@torch.no_grad()
def capture_pass() -> None:
    """One teacher pass that also writes the mapped layers of every row to the memmaps."""
    for group in batch_groups(rows, profile.eval_batch_size, shuffle=False, group_by_length=True):
        batch = collate(rows, group)
        out = forward_features(teacher, batch["input_ids"], batch["attention_mask"], hidden=True, values=True)
        idx, length = batch["index"].numpy(), batch["input_ids"].shape[1]
        for (kind, t), memmap in store.items():
            layer = out.hidden[t] if kind == "hidden" else out.values[t - 1]
            memmap[idx, :length] = bf16_rows(layer)
    for memmap in store.values():
        memmap.flush()


def cached_teacher_outputs(batch, config, teacher_logits=None, teacher=None, teacher_cls=None, teacher_states=None,
                           mapping=None) -> Features:
    """The loop's teacher side read from the memmaps: logits from the logits cache, mapped layers from disk (the
    package's own cache, ``teacher_states`` and ``mapping``, is not given here)."""
    idx, length = batch["index"].numpy(), batch["input_ids"].shape[1]
    read = {key: torch.from_numpy(m[idx, :length]).view(torch.bfloat16).float() for key, m in store.items()}
    hidden = [read.get(("hidden", t)) for t in range(layers + 1)]
    values = [read.get(("values", t)) for t in range(1, layers + 1)]
    return Features(logits=teacher_logits[batch["index"]], hidden=tuple(hidden), values=values)


timing = {"plain pass": [], "pass + capture": []}
for _ in range(REPEATS):
    for what in timing:
        start = time.perf_counter()
        predict_logits(teacher, rows, batch_size=profile.eval_batch_size, device="cpu") if what == "plain pass" \
            else capture_pass()
        timing[what].append(time.perf_counter() - start)
        print(what, f"{timing[what][-1]:.1f} s", flush=True)
t_logits = predict_logits(teacher, rows, batch_size=profile.eval_batch_size, device="cpu")

# The cache must give the online teacher's numbers, to bf16's precision, on a training batch (16 rows, padded to
# their own longest row, unlike the pass's batches of 64).
check = collate(rows, list(range(profile.batch_size)))
with torch.no_grad():
    live = forward_features(teacher, check["input_ids"], check["attention_mask"], hidden=True, values=True)
read_back = cached_teacher_outputs(check, None, t_logits)
real = check["attention_mask"].bool()
largest_error = max(float(((read_back.hidden[t] if kind == "hidden" else read_back.values[t - 1])
                           - (live.hidden[t] if kind == "hidden" else live.values[t - 1]))[real].abs().max()
                          / (live.hidden[t] if kind == "hidden" else live.values[t - 1])[real].abs().max())
                    for kind, t in store)
assert largest_error < 1e-2, f"the cached layers differ from the online teacher's by {largest_error:.2%}"
print(f"cached layers against the online teacher: largest error {largest_error:.2e} of the largest value")

online_outputs = train_module.teacher_outputs
per_step = {}
for name, spec in specs.items():
    seed_everything(0)
    base = build_student(spec, teacher, attention_dropout=profile.attention_dropout,
                         freeze_embeddings=profile.freeze_word_embeddings)
    variants = {"kd+transfer": ("kd+transfer", online_outputs), RECIPE[name] + ", online teacher":
                (RECIPE[name], online_outputs), RECIPE[name] + ", cached layers": (RECIPE[name], cached_teacher_outputs)}
    best: dict = {}
    for _ in range(REPEATS):
        for label, (recipe_name, outputs) in variants.items():
            recipe = recipes[name][recipe_name]
            config = dataclasses.replace(plan.run_config(profile, spec, recipe, STEPS, 0), eval_every=None,
                                         keep_best=False, patience=None)
            student = copy.deepcopy(base)
            needs = recipe.intermediate is not None and recipe.intermediate.needs_projection
            model = DistillationStudent(student, width) if needs else student
            train_module.teacher_outputs = outputs
            start = time.perf_counter()
            train(model, rows, config=config, teacher_logits=t_logits, teacher=teacher if recipe.needs_token_internals
                  else None, device="cpu", progress=False)
            train_module.teacher_outputs = online_outputs
            seconds = (time.perf_counter() - start) / STEPS
            best[label] = min(best.get(label, float("inf")), seconds)
            print(name, label, f"{seconds:.3f} s/step", flush=True)
    per_step[name] = best

# What it would mean for one seed of the cpu profile: the logits pass covers the 2,000 train and 8,000 transfer
# reviews; each student's intermediate run takes its step budget over labelled + transfer reviews.
reviews = 10_000
bytes_per_layer = profile.max_length * width * 2 * reviews
capture_extra = (min(timing["pass + capture"]) - min(timing["plain pass"])) / N * reviews
projection = {}
for name, spec in specs.items():
    steps = plan.step_budget(profile, spec, profile.student_labels + 8_000)
    online, cached = (per_step[name][RECIPE[name] + s] for s in (", online teacher", ", cached layers"))
    projection[name] = {"recipe": RECIPE[name], "mapped_teacher_layers": mapped[name], "kind": KIND[name],
                        "steps": steps, "online_seconds": online * steps, "cached_seconds": cached * steps,
                        "saved_seconds_per_run": (online - cached) * steps,
                        "cache_gb": len(mapped[name]) * bytes_per_layer / 1e9}
out = {"script": "docs/tuning/teacher_layer_cache.py", "git_commit": pipeline.git_commit(),
       "when": time.strftime("%Y-%m-%d %H:%M"), "reviews": N, "steps": STEPS, "repeats": REPEATS,
       "batch_size": profile.batch_size, "eval_batch_size": profile.eval_batch_size,
       "max_length": profile.max_length, "precision": "fp32", "torch_threads": torch.get_num_threads(),
       "pass_seconds": timing, "seconds_per_step_best": per_step,
       "largest_error_of_cached_layers": largest_error,
       "cache_bytes_per_review_per_layer": profile.max_length * width * 2,
       "for_one_cpu_seed": {"reviews_cached": reviews, "extra_seconds_to_capture_in_the_logits_pass": capture_extra,
                            "students": projection}}
json.dump(out, open(sys.argv[1], "w"), indent=1)
print(json.dumps(out, indent=1))
