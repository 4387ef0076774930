"""Reading the teacher's cached layers in the loop's batch thread (overlapping the step) against inside the step.

The cpu profile's two runs that read the cache, distil-3L `kd+transfer+cosine` and compact-2L-H128
`kd+transfer+values`: STEPS optimizer steps each from the same initial weights, validation off, with the
layer rows read either where the batch is built (`kd_tutorial.train.layer_reader`, a background thread: the
default) or inside the step (the reader switched off, as before). Each pair runs with the page cache dropped for
the layer files first (os.posix_fadvise DONTNEED, with every memory map of them closed: every row then comes from
the disk, as when the 9.8 GB do not all fit in memory beside the runs), alternating which goes first, then once
with the files in memory. All threads, one run at a time, in the precision the profile resolves to here. With
``side-by-side`` after the output file, the distil-3L run instead runs twice at once in two forked workers of one
thread each (kd_tutorial.parallel, as `kd-tutorial distill` trains its students), the page cache dropped before
each pair, and each worker's seconds per step are recorded.

    KD_TUTORIAL_DATA_DIR=../shared/data/imdb python docs/tuning/cached_read_overlap.py docs/tuning/cached-read-overlap.json
    KD_TUTORIAL_DATA_DIR=../shared/data/imdb python docs/tuning/cached_read_overlap.py out.json side-by-side
"""
import dataclasses
import gc
import json
import os
import sys
import time

import torch

from kd_tutorial import parallel, pipeline, plan, teacher_layers, teachers, train as train_module
from kd_tutorial.device import resolve_precision
from kd_tutorial.models import DistillationStudent, build_student
from kd_tutorial.profiles import get_profile

STEPS = 30
RUNS = {"distil-3L": "kd+transfer+cosine", "compact-2L-H128": "kd+transfer+values"}
commit = pipeline.git_commit()  # read first: the docs may change while this runs
profile = get_profile("cpu")
teacher, prep, _ = teachers.ensure_teacher(profile, device="cpu", progress=False)
kw = dict(teacher_model=teacher, device="cpu", progress=False, **prep.where)
logits, _ = pipeline.teacher_outputs(profile, prep, None, **kw)
rows, t_logits, _ = plan.student_data(profile, prep, logits)["transfer"]
specs = {s.name: s for s in profile.students}
recipes = {name: plan.student_recipes(profile, specs[name], [RUNS[name]])[0] for name in RUNS}
keys = teacher_layers.cached_layer_keys(profile, [specs[n] for n in RUNS], lambda spec: [recipes[spec.name]],
                                        teacher.config.num_hidden_layers)
files = [prep.directory / f"{k}-{t}-{split}.npy" for k, t in keys for split in teacher_layers.SPLITS]
real_reader = train_module.layer_reader


def open_states():
    """The cached layers in the students' rows, mapped afresh (pages mapped by an earlier run stay in memory)."""
    layers = teacher_layers.teacher_layer_cache(profile, prep, keys, **kw)
    return teacher_layers.transfer_states(layers, plan.student_labels(profile, prep))


def drop_page_cache() -> None:
    """Evict the layer files from the page cache (no memory map of them may be open)."""
    gc.collect()
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def warm_page_cache() -> None:
    for path in files:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def one_run(name: str, background: bool) -> dict:
    """Seconds per step of STEPS steps of ``name``'s recipe, and its last loss (the same in both ways)."""
    spec, recipe = specs[name], recipes[name]
    config = dataclasses.replace(plan.run_config(profile, spec, recipe, STEPS, 0), eval_every=None,
                                 keep_best=False, patience=None)
    torch.manual_seed(0)
    student = build_student(spec, teacher, init="pretrained", attention_dropout=profile.attention_dropout,
                            freeze_embeddings=profile.freeze_word_embeddings)
    model = DistillationStudent(student, teacher.config.hidden_size) if recipe.intermediate.needs_projection \
        else student
    train_module.layer_reader = real_reader if background else (lambda *args: None)
    try:
        start = time.perf_counter()
        history = train_module.train(model, rows, config=config, teacher_logits=t_logits,
                                     teacher_states=open_states(), device="cpu", progress=False)
        seconds = time.perf_counter() - start
    finally:
        train_module.layer_reader = real_reader
    return {"seconds_per_step": round(seconds / STEPS, 4), "last_loss": history.steps[-1]["loss"]}


def side_by_side() -> list:
    """Two distil-3L runs at once, the reader on and off, alternating which goes first: each worker's s/step."""
    rows_out = []
    for background in (True, False, False, True):
        drop_page_cache()
        per_worker = parallel.run_forked(lambda _: one_run("distil-3L", background)["seconds_per_step"], 2, 2)
        rows_out.append({"run": "distil-3L, two workers", "page_cache": "dropped",
                         "read": "batch thread" if background else "in step", "seconds_per_step": per_worker})
        print(rows_out[-1], flush=True)
    return rows_out


one_run("compact-2L-H128", True)  # warm-up: the first run in a process pays for setting up its kernels
results = side_by_side() if sys.argv[2:] == ["side-by-side"] else []
for name in RUNS if not results else ():
    for pair in range(2):
        order = (True, False) if pair == 0 else (False, True)
        for background in order:
            drop_page_cache()
            results.append({"run": name, "page_cache": "dropped", "read": "batch thread" if background else "in step",
                            **one_run(name, background)})
            print(results[-1], flush=True)
    warm_page_cache()
    for background in (True, False):
        results.append({"run": name, "page_cache": "warm", "read": "batch thread" if background else "in step",
                        **one_run(name, background)})
        print(results[-1], flush=True)
out = {"script": "docs/tuning/cached_read_overlap.py", "git_commit": commit, "when": time.strftime("%Y-%m-%d %H:%M"),
       "precision": resolve_precision("cpu", profile.precision), "threads": torch.get_num_threads(),
       "steps": STEPS, "cached_layers": [f"{k} {t}" for k, t in keys], "runs": results}
json.dump(out, open(sys.argv[1], "w"), indent=1)
