"""The whole distillation pipeline, as one function: ``kd-tutorial distill`` and notebook 05 call it.

teacher (fine-tuned once, cached) -> its logits on the labelled and transfer sets (cached)
-> for each student and seed, three runs from the *same* initial weights and the *same*
optimizer-step budget: ``kd`` (labelled set), ``kd+transfer`` (labelled + unlabelled
transfer set, which only the teacher labels) and ``baseline`` (hard labels only)
-> every model measured side by side -> results.json, checkpoints and plots.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from .profiles import Profile, StudentSpec

RUNS = ("kd", "kd+transfer", "baseline")


def concat_encoded(a, b, name: str):
    """Rows of ``a`` followed by rows of ``b`` (e.g. labelled train + unlabelled transfer)."""
    from .data import Encoded
    return Encoded(input_ids=list(a.input_ids) + list(b.input_ids), labels=torch.cat([a.labels, b.labels]),
                   name=name)


def labelled_subset(encoded, n: int | None, seed: int = 0) -> torch.Tensor:
    """Row indices of a stratified, seeded subset of ``n`` labelled rows (all rows when ``n`` is None)."""
    if n is None or n >= len(encoded):
        return torch.arange(len(encoded))
    g = torch.Generator().manual_seed(seed)
    classes = encoded.labels.unique()
    picked = []
    for i, c in enumerate(classes):
        rows = (encoded.labels == c).nonzero().flatten()
        take = n // len(classes) + (1 if i < n % len(classes) else 0)
        picked.append(rows[torch.randperm(len(rows), generator=g)[:take]])
    return torch.cat(picked).sort().values


def step_budget(profile: Profile, spec: StudentSpec, n_rows: int) -> int:
    """Optimizer steps every run of one student gets: its epochs over the largest run's data."""
    epochs = spec.epochs if spec.epochs is not None else profile.student_epochs
    return max(1, math.ceil(epochs * n_rows / profile.batch_size))


def run_config(profile: Profile, spec: StudentSpec, run: str, steps: int, seed: int, precision: str = "auto"):
    """The :class:`~kd_tutorial.train.TrainConfig` of one student run."""
    from .train import TrainConfig
    return TrainConfig(lr=spec.lr or profile.student_lr, batch_size=profile.batch_size, max_steps=steps,
                       warmup_fraction=profile.warmup_fraction, weight_decay=profile.weight_decay,
                       mode="ce" if run == "baseline" else "kd", temperature=profile.temperature,
                       alpha=profile.alpha, seed=seed, precision=precision)


def run_key(profile: Profile, spec: StudentSpec, config, init: str) -> tuple:
    """Everything that decides one student run (the key of its folder in the artifact cache)."""
    return (dataclasses.asdict(spec), dataclasses.asdict(config), init, profile.student_labels,
            profile.attention_dropout)


def git_commit() -> str | None:
    """The current git commit of the course checkout, when there is one."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def distill_students(profile: Profile, teacher, prep, logits: dict, *, seeds=(0,), runs=RUNS,
                     out: Path | None = None, resume: bool = False, device: str = "cpu", init: str = "pretrained",
                     progress: bool = True, students: tuple[StudentSpec, ...] | None = None) -> dict:
    """Train every (student, run, seed); return ``{model name: {"model", "history", "seed", "base", "status"}}``.

    Model names are ``"<student> <run>"`` with ``" s<seed>"`` appended when there are several seeds.
    Every run is stored in the artifact cache, under its teacher. With ``resume=True`` a finished run
    is loaded from there (``status="cached"``) and an interrupted one continues from its last epoch
    checkpoint; otherwise it is trained again. With ``out``, each final model is also saved into
    ``out/checkpoints/<name>/model``.
    """
    from .artifacts import atomic_save_pretrained, load_student, locked, save_student, student_folder
    from .env import seed_everything
    from .models import build_student
    from .train import train
    from .data import Encoded
    keep = labelled_subset(prep.encoded["train"], profile.student_labels)
    full = prep.encoded["train"]
    train_set = Encoded([full.input_ids[i] for i in keep.tolist()], full.labels[keep], "student labels")
    train_logits, transfer = logits["train"][keep], prep.encoded["transfer"]
    with_transfer = concat_encoded(train_set, transfer, "train+transfer")
    data = {"kd": (train_set, train_logits), "baseline": (train_set, None),
            "kd+transfer": (with_transfer, torch.cat([train_logits, logits["transfer"]]))}
    trained = {}
    for spec in students or profile.students:
        steps = step_budget(profile, spec, len(with_transfer) if "kd+transfer" in runs else len(train_set))
        for seed in seeds:
            initial = None  # built on first need: a fully cached student needs no initialisation
            for run in runs:
                name = f"{spec.name} {run}" + (f" s{seed}" if len(seeds) > 1 else "")
                config = run_config(profile, spec, run, steps, seed)
                folder = student_folder(prep, f"{spec.name} {run} s{seed}", *run_key(profile, spec, config, init))
                with locked(folder):
                    cached = load_student(folder) if resume else None
                    if cached is not None:
                        student, history = cached
                    else:
                        if initial is None:
                            seed_everything(seed)
                            initial = build_student(spec, teacher, init=init,  # shared by all runs of this seed
                                                    attention_dropout=profile.attention_dropout)
                        student = copy.deepcopy(initial)
                        rows, t_logits = data[run]
                        seed_everything(seed)
                        history = train(student, rows, config=config, val_data=prep.encoded["validation"],
                                        teacher_logits=t_logits, device=device, checkpoint_dir=folder,
                                        resume=resume, desc=name, progress=progress)
                        save_student(folder, student, history)
                if out is not None:
                    atomic_save_pretrained(student, Path(out) / "checkpoints" / name.replace(" ", "_") / "model")
                trained[name] = {"model": student, "history": history, "seed": seed, "base": f"{spec.name} {run}",
                                 "status": "cached" if cached is not None else "trained", "path": str(folder)}
    return trained


def _aggregate(rows: list[dict], trained: dict) -> list[dict]:
    """Mean and std over seeds for each (student, run); a single row per model when one seed."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        base = trained[row["name"]]["base"] if row["name"] in trained else row["name"]
        groups.setdefault(base, []).append(row)
    out = []
    for base, group in groups.items():
        agg = dict(group[0], name=base, seeds=len(group))
        for key in ("accuracy", "agreement", "ece"):
            values = [g[key] for g in group if g.get(key) is not None]
            if values:
                agg[key] = statistics.mean(values)
                agg[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
                agg[key + "_per_seed"] = values
        out.append(agg)
    return out


def run_distill(profile: Profile, *, data_dir: str | None = None, teacher: str | None = None,
                init: str = "pretrained", out: str | Path = "runs/latest", resume: bool = False,
                seeds=(0,), device: str | None = None, progress: bool = True) -> dict:
    """Run the whole pipeline and write ``results.json``, checkpoints and plots into ``out``."""
    from . import __version__, plots
    from .artifacts import atomic_write_json, ensure_teacher, ensure_teacher_logits
    from .env import pick_device, versions
    from .evaluate import compare, format_table, predict_logits
    device = device or pick_device()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = tuple(seeds)
    phases, t_start = {}, time.perf_counter()

    t = time.perf_counter()
    teacher_model, prep, info = ensure_teacher(profile, data_dir=data_dir, teacher=teacher, init=init,
                                               seed=seeds[0], device=device, progress=progress)
    phases["teacher"] = time.perf_counter() - t
    t = time.perf_counter()
    kw = dict(teacher_model=teacher_model, data_dir=data_dir, teacher=teacher, init=init, seed=seeds[0],
              device=device, progress=progress)
    logits = {split: ensure_teacher_logits(profile, split, **kw) for split in ("train", "transfer")}
    phases["teacher_logits"] = time.perf_counter() - t

    t = time.perf_counter()
    trained = distill_students(profile, teacher_model, prep, logits, seeds=seeds, out=out, resume=resume,
                               device=device, init=init, progress=progress)
    phases["students"] = time.perf_counter() - t

    t = time.perf_counter()
    test = prep.encoded["test"]
    test_logits = {"teacher": ensure_teacher_logits(profile, "test", **kw)}
    for name, item in trained.items():
        test_logits[name] = predict_logits(item["model"], test, batch_size=profile.eval_batch_size, device=device)
    models = {"teacher": teacher_model} | {n: item["model"] for n, item in trained.items()}
    train_speed = {"teacher": info["history"].get("tokens_per_s") if info.get("history") else None}
    train_speed |= {n: item["history"].tokens_per_s for n, item in trained.items() if item["history"]}
    rows = compare(models, test, device=device, batch_size=profile.eval_batch_size, logits=test_logits,
                   train_tokens_per_s=train_speed)
    rows = _aggregate(rows, trained)
    phases["evaluation"] = time.perf_counter() - t

    split_name = "held-out" if prep.data.test_is_held_out else "test"
    results = {
        "run": {
            "profile": profile.name, "data_source": prep.data.source, "split_sizes": prep.data.sizes(),
            "evaluated_on": split_name, "device": device, "init": init, "seeds": list(seeds),
            "teacher": teacher or profile.teacher, "teacher_status": info["status"],
            "student_status": {name: item["status"] for name, item in trained.items()},
            "versions": versions() | {"kd_tutorial": __version__}, "platform": platform.platform(),
            "git_commit": git_commit(), "wall_seconds": time.perf_counter() - t_start, "phase_seconds": phases,
            "temperature": profile.temperature, "alpha": profile.alpha,
            "student_labels": min(profile.student_labels or len(prep.encoded["train"]), len(prep.encoded["train"])),
        },
        "models": rows,
        "histories": {"teacher": info.get("history")} |
                     {n: item["history"].to_dict() for n, item in trained.items() if item["history"]},
    }
    atomic_write_json(out / "results.json", results)
    results["plots"] = plots.save_pipeline_plots(results, out)
    atomic_write_json(out / "results.json", results)
    print(format_table(rows, title=f"{profile.name} profile, {len(test)} {split_name} reviews, {device}"))
    return results
