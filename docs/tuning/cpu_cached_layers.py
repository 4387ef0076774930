"""Each cpu student's intermediate recipe, seed 0, reading the teacher's mapped layers from the bf16 cache.

The same runs as seed 0 of docs/results/earlier/cpu-distil-3-seeds.json (`kd+transfer+cosine`) and
docs/results/earlier/cpu-compact-3-seeds.json (`kd+transfer+values`), which called the teacher at every step: the same
profile, seed, initial weights and data order, so only the source of the teacher's layers (and its bf16 rounding)
differs. One run after another, all threads, as those were timed; evaluated on the 4,934 test reviews.
Given seeds after the output file, it runs those instead, two at a time (``workers=2``: the same models).

    KD_TUTORIAL_DATA_DIR=../shared/data/imdb python docs/tuning/cpu_cached_layers.py docs/tuning/cpu-cached-layers.json
    KD_TUTORIAL_DATA_DIR=../shared/data/imdb python docs/tuning/cpu_cached_layers.py out.json 1 2
"""
import dataclasses
import json
import sys
import time

from kd_tutorial import pipeline, plan, teacher_layers, teachers
from kd_tutorial.device import resolve_precision
from kd_tutorial.evaluate import accuracy, predict_logits
from kd_tutorial.profiles import get_profile

commit = pipeline.git_commit()  # read first: the docs may change while this runs
profile = get_profile("cpu").replace(student_hidden_dropout=None)  # those runs kept BERT's 0.1
profile = profile.replace(students=tuple(dataclasses.replace(s, spare_reviews=False)  # its runs predate e32
                                         for s in profile.students))
RUNS = {"compact-2L-H128": "kd+transfer+values", "distil-3L": "kd+transfer+cosine"}
SEEDS = tuple(int(seed) for seed in sys.argv[2:]) or (0,)
WORKERS = 1 if SEEDS == (0,) else 2
seconds = {}
start = time.perf_counter()
teacher, prep, info = teachers.ensure_teacher(profile, device="cpu")
seconds["teacher"] = time.perf_counter() - start
kw = dict(teacher_model=teacher, device="cpu", progress=True, **prep.where)
start = time.perf_counter()
logits, _ = pipeline.teacher_outputs(profile, prep, None, **kw)
test_logits = {"teacher": teachers.ensure_teacher_logits(profile, "test", **kw)}
seconds["teacher_logits"] = time.perf_counter() - start
specs = {s.name: s for s in profile.students}
runs_of = {name: [r for r in plan.student_recipes(profile, specs[name], [RUNS[name]])] for name in RUNS}
keys = teacher_layers.cached_layer_keys(profile, [specs[n] for n in RUNS], lambda spec: runs_of[spec.name],
                                        teacher.config.num_hidden_layers)
start = time.perf_counter()
layers = teacher_layers.teacher_layer_cache(profile, prep, keys, **kw)
seconds["teacher_layers"] = time.perf_counter() - start
assert layers is not None and set(keys) <= layers["train"].keys, "the cache did not fit on the disk"
runs = {}
for name, recipe in RUNS.items():
    trained = pipeline.distill_students(profile, teacher, prep, logits, runs=(recipe,), students=(specs[name],),
                                        device="cpu", workers=WORKERS, layers=layers, seeds=SEEDS)
    for seed in SEEDS:
        item = trained[f"{name} {recipe}" + (f" s{seed}" if len(SEEDS) > 1 else "")]
        predicted = predict_logits(item["model"], prep.encoded["test"], batch_size=profile.eval_batch_size,
                                   device="cpu")
        runs[f"{name} {recipe} s{seed}"] = {"train_seconds": item["history"].seconds, "status": item["status"],
                                            "val_accuracy": item["history"].best_val_acc,
                                            "test_accuracy": accuracy(predicted, prep.encoded["test"].labels)}
        print(name, recipe, seed, runs[f"{name} {recipe} s{seed}"], flush=True)
online = {}  # seed 0 of the committed three-seed results: the same runs with the online teacher
for name, recipe in RUNS.items():
    kind = "distil" if name.startswith("distil") else "compact"
    recorded = json.load(open(f"docs/results/earlier/cpu-{kind}-3-seeds.json"))
    row = next(r for r in recorded["models"] if r["name"] == f"{name} {recipe}")
    for seed in SEEDS:
        online[f"{name} {recipe} s{seed}"] = {
            "train_seconds": recorded["run"]["train_seconds"][f"{name} {recipe} s{seed}"],
            "test_accuracy": row["accuracy_per_seed"][recorded["run"]["seeds"].index(seed)],
            "git_commit": recorded["run"]["git_commit"]}
out = {"script": "docs/tuning/cpu_cached_layers.py", "git_commit": commit,
       "when": time.strftime("%Y-%m-%d %H:%M"), "precision": resolve_precision("cpu", profile.precision), "workers": WORKERS, "seeds": SEEDS,
       "teacher_test_accuracy": accuracy(test_logits["teacher"], prep.encoded["test"].labels),
       "teacher_status": info.get("status"), "cached_layers": [f"{k} {t}" for k, t in keys],
       "cache_gb": teacher_layers.cache_gb(layers), "phase_seconds": seconds, "cached": runs, "online": online}
json.dump(out, open(sys.argv[1], "w"), indent=1)
print(json.dumps(out, indent=1))
