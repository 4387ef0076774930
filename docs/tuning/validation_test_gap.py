"""Does validation flatter an intermediate recipe more than `kd+transfer`, beyond noise? (docs/tuning.md)

For one student of the `cpu` profile, every cached run of the three-seed block
(docs/results/earlier/cpu-compact-3-seeds.json, docs/results/earlier/cpu-distil-3-seeds.json) is scored review by review on
validation and on test, and each recipe's *excess gap* over `kd+transfer` is
[val(recipe) - val(kd+transfer)] - [test(recipe) - test(kd+transfer)], in points, averaged over the seeds. Its 95 %
intervals resample validation reviews or validation's carve runs (the runs of 100 reviews that keep a movie's reviews
together, `val_block`; 5 per class, drawn per class), and test reviews, with the trained runs fixed; the validation
difference alone gets the same two intervals. Over seeds, with
only three, the record gives each seed's value and a t interval (2 degrees of freedom), not a bootstrap.

    # the runs' artifact cache and the shared IMDB folder
    export KD_TUTORIAL_HOME=... KD_TUTORIAL_DATA_DIR=../shared/data/imdb HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    python docs/tuning/validation_test_gap.py predict distil-3L /tmp/gap-distil.npz   # reads the cache, trains nothing
    python docs/tuning/validation_test_gap.py stats distil-3L /tmp/gap-distil.npz \
        > docs/tuning/validation-test-gap-distil-3L.json

The runs were scored with the code of commit dc95d96, which evaluated the three-seed block (docs/tuning.md says at
which commits they were trained). Neither step runs against those runs at the current code: the package has carved
other splits since (c4ee0ca: other train and transfer reviews around validation's runs; 3d4a0c9: 4,915 test
reviews, then 7d8dd55: 4,906, and 998 validation reviews, two runs of 99), and the cached runs are keyed by their
splits, so `predict` cannot find them (it refuses to train) and `stats`' carve check fails (AssertionError: a
run of 99). To check the records, run this file as committed at 82f0a33 in a worktree of dc95d96.
"""
import dataclasses
import json
import os
import sys
import time

import numpy as np

SEEDS = (0, 1, 2)
T_975_DF2 = 4.3027  # Student's t, 97.5 % quantile, 2 degrees of freedom (three seeds)


def predict(student: str, out: str) -> None:
    """Per-review correctness of every cached run of ``student`` on validation and test, saved to ``out`` (.npz)."""
    from kd_tutorial.cli import configure
    from kd_tutorial.env import quiet
    from kd_tutorial.evaluate import predict_logits
    from kd_tutorial.pipeline import distill_students, teacher_outputs
    from kd_tutorial.profiles import get_profile
    from kd_tutorial.teachers import ensure_teacher
    from kd_tutorial import pipeline, teachers

    def refuse(*_args, **_kw):
        raise SystemExit("a run or the teacher is not in KD_TUTORIAL_HOME's cache: point it at the three-seed runs")
    pipeline.train = teachers.train = refuse  # read the cache only: a missing run stops here instead of training
    quiet()
    configure("cpu")
    p = get_profile("cpu").replace(student_hidden_dropout=None)  # those runs kept BERT's 0.1
    p = p.replace(students=tuple(dataclasses.replace(s, spare_reviews=False)  # its runs predate e32
                                 for s in p.students))
    # the three-seed runs called the teacher at every step: they are cached under the online teacher's keys
    p = p.replace(students=tuple(s for s in p.students if s.name == student), teacher_layers="online")
    kw = dict(data_dir=None, teacher=None, init="pretrained", seed=0, device="cpu", progress=False)
    teacher, prep, _ = ensure_teacher(p, **kw)
    logits, cls = teacher_outputs(p, prep, None, teacher_model=teacher, **kw)
    trained = distill_students(p, teacher, prep, logits, seeds=SEEDS, resume=True, device="cpu", progress=False,
                               cls=cls)
    assert {i["status"] for i in trained.values()} == {"cached"}, {n: i["status"] for n, i in trained.items()}
    res = {}
    for split in ("validation", "test"):
        enc = prep.encoded[split]
        res[f"labels_{split}"] = np.asarray(enc.labels)
        for run, item in trained.items():
            t = time.perf_counter()
            lg = predict_logits(item["model"], enc, batch_size=p.eval_batch_size, device="cpu")
            res[f"{split}|{run}"] = lg.argmax(-1).numpy() == np.asarray(enc.labels)
            print(split, run, round(float(res[f"{split}|{run}"].mean()) * 100, 2), f"{time.perf_counter() - t:.0f} s",
                  flush=True)
    np.savez(out, **res)


def carve_runs(val_labels) -> np.ndarray:
    """Which carve run each validation review came from, in the splits' order: the carve takes runs of ``val_block``
    consecutive rows of one class, starting at multiples of ``val_block`` in that class's source order."""
    import pandas as pd

    from kd_tutorial.data import DATA_DIR_ENV, load_for_profile
    from kd_tutorial.profiles import get_profile
    if not os.environ.get(DATA_DIR_ENV):
        raise SystemExit(f"set {DATA_DIR_ENV} to the IMDB folder the runs used (../shared/data/imdb)")
    profile = get_profile("cpu").replace(student_hidden_dropout=None)
    data = load_for_profile(profile, seed=0)  # the pipeline carves with the first seed, 0, for every seed
    assert list(data.validation.labels) == list(val_labels), "not the validation split the runs were scored on"
    src = pd.read_parquet(os.path.join(os.environ[DATA_DIR_ENV], "train.parquet"))
    places = {}  # text -> every (class, run) it sits in (a few texts occur twice)
    for k in (0, 1):
        for r, text in enumerate(src.text[src.label == k]):
            places.setdefault(text, []).append((k, r // profile.val_block))
    # a repeated text is put in the run that holds validation reviews whose text is not repeated
    sure = {places[t][0] for t in data.validation.texts if len(places[t]) == 1}
    run_of = [next((c for c in places[t] if c in sure), places[t][0]) for t in data.validation.texts]
    ids = {c: i for i, c in enumerate(sorted(set(run_of)))}
    carve_ids = np.array([ids[c] for c in run_of])
    sizes = np.bincount(carve_ids)
    assert len(sizes) == profile.val_size // profile.val_block and (sizes == profile.val_block).all(), sizes
    return carve_ids


def stats(student: str, npz: str, draws: int = 4000) -> dict:
    """Each recipe's accuracies and gap, and its excess gap over kd+transfer with its intervals."""
    z, rng = np.load(npz), np.random.default_rng(0)
    carve_ids = carve_runs(z["labels_validation"])
    recipes = sorted({k.split("|")[1][len(student) + 1:].rsplit(" s", 1)[0] for k in z.files
                      if k.startswith(f"validation|{student} ")})
    V = {r: np.stack([z[f"validation|{student} {r} s{s}"] for s in SEEDS]).astype(float) for r in recipes}
    T = {r: np.stack([z[f"test|{student} {r} s{s}"] for s in SEEDS]).astype(float) for r in recipes}
    nv, nt = V[recipes[0]].shape[1], T[recipes[0]].shape[1]
    labels = z["labels_validation"]
    by_class = [[np.flatnonzero(carve_ids == c) for c in np.unique(carve_ids[labels == k])] for k in (0, 1)]

    def val_idx(by_run: bool):
        if not by_run:
            return rng.integers(0, nv, nv)
        return np.concatenate([runs[i] for runs in by_class for i in rng.integers(0, len(runs), len(runs))])
    out = {"student": student, "validation_reviews": int(nv), "test_reviews": int(nt),
           "validation_carve_runs": int(len(np.unique(carve_ids))), "draws": draws, "recipes": {}}
    ref = "kd+transfer"
    for r in recipes:
        row = {"validation": round(V[r].mean() * 100, 2), "test": round(T[r].mean() * 100, 2),
               "gap": round((V[r].mean() - T[r].mean()) * 100, 2),
               "validation_per_seed": [round(x * 100, 1) for x in V[r].mean(1)],
               "test_per_seed": [round(x * 100, 2) for x in T[r].mean(1)]}
        if r != ref:
            per_seed = ((V[r] - V[ref]).mean(1) - (T[r] - T[ref]).mean(1)) * 100
            row["validation_difference"] = round((V[r] - V[ref]).mean() * 100, 2)
            row["test_difference"] = round((T[r] - T[ref]).mean() * 100, 2)
            row["excess_gap"] = round(per_seed.mean(), 2)
            row["excess_gap_per_seed"] = [round(x, 2) for x in per_seed]
            half = T_975_DF2 * per_seed.std(ddof=1) / np.sqrt(len(SEEDS))
            mean = per_seed.mean()
            row["excess_gap_t_interval_over_seeds"] = [round(mean - half, 2), round(mean + half, 2)]
            for scheme, by_run in (("reviews", False), ("carve runs", True)):
                excess, vdiff = [], []
                for _ in range(draws):
                    vi, ti = val_idx(by_run), rng.integers(0, nt, nt)
                    dv = (V[r][:, vi] - V[ref][:, vi]).mean()
                    excess.append((dv - (T[r][:, ti] - T[ref][:, ti]).mean()) * 100)
                    vdiff.append(dv * 100)
                row[f"excess_gap_ci95 ({scheme})"] = [round(x, 2) for x in np.percentile(excess, [2.5, 97.5])]
                row[f"validation_difference_ci95 ({scheme})"] = [round(x, 2) for x in np.percentile(vdiff, [2.5, 97.5])]
        out["recipes"][r] = row
    return out


if __name__ == "__main__":
    command, student, path = sys.argv[1:4]
    if command == "predict":
        predict(student, path)
    else:
        print(json.dumps(stats(student, path), indent=1))
