"""The whole distillation pipeline, as one function: ``kd-tutorial distill`` and notebook 05 call it.

teacher (fine-tuned once, cached) -> its logits (and [CLS] states) on the labelled and transfer
sets (cached) -> for each student and seed, one run per recipe (:mod:`kd_tutorial.recipes`), all
from the *same* initial weights and the *same* optimizer-step budget, each keeping its best
weights on validation -> every model measured side by side, each recipe compared with the
hard-label baseline on the same test reviews (paired bootstrap, McNemar) -> results.json,
checkpoints and plots.
"""
from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

from . import __version__, plots
from .artifacts import (DamagedRun, load_student, prepare, run_hash, save_student, student_finished, student_folder,
                        student_interrupted, student_test_logits_file, teacher_tokenizer)
from .bars import progress_bar, tick
from .data import augment, n_batches
from .device import describe as describe_device, pick_device, resolve_precision
from .errors import DISK_FULL, held_open_fix, JSON_ERRORS, UsageError
from .evaluate import (choice_key, compare, compare_paired, correct_matrix, predict_logits, quartiles,
                       teacher_share)
from .layer_maps import describe as describe_mapping, layer_mapping
from .models import (DistillationStudent, TINY_TEACHER, build_student, cached_config, check_positions,
                     check_student_tokenizer, fallback_for, fold_word_embeddings, head_classes, head_error,
                     teacher_config)
from .parallel import check_workers, default_workers, report_step, run_forked, worker_threads
from .plan import (applicable, check_student_labels, evals_asked, reads_cached_layers, run_config, run_key, run_splits,
                   spare_hash, step_budget, student_data, student_labels, student_recipes, transfer_set_rows,
                   validation_passes)
from .profiles import check_profile, Profile, StudentSpec, TINY_BERT
from .provenance import git_commit, versions
from .recipes import Recipe, get_recipe
from .report import comparisons_caption, format_best_recipes, format_comparisons, format_table
from .store import atomic_save_pretrained, atomic_torch_save, atomic_write_json, locked, StorageError
from .teacher_layers import cache_gb, run_layer_keys, teacher_layer_cache, transfer_states
from .teachers import (ensure_teacher, ensure_teacher_cls, ensure_teacher_logits, ensure_teacher_logits_on,
                       load_cached_logits)
from .threads import load_average
from .seeding import kept_rng, seed_everything
from .train import ctrl_c_after, train


def check_depths(profile: Profile, teacher_layers: int, teacher_heads: int, runs=None,
                 fix: str = "give a deeper teacher") -> None:
    """Refuse, in one line, a student whose layers map onto more teacher layers than there are: a layer-copied
    student (its ``layer_map`` included) or one with an intermediate recipe among ``runs`` that will run (one
    that :func:`applicable` skips for this teacher maps nothing; a ``skip`` mapping takes every second layer)."""
    for spec in profile.students:
        copies = (max(spec.layer_map) + 1 if spec.layer_map else spec.num_layers) if spec.kind == "distil" else 0
        maps = any(r.intermediate is not None and applicable(r, spec, teacher_heads)
                   for r in student_recipes(profile, spec, runs))
        skip = maps and spec.mapping == "skip"  # every second teacher layer: 2 x its own
        needs = max(copies, spec.num_layers * (2 if skip else 1) if maps else 0)
        if needs > teacher_layers:
            uniform_fits = skip and max(copies, spec.num_layers) <= teacher_layers  # skip alone is too deep
            raise UsageError(f"student {spec.name} maps its layers onto {needs} of the teacher's, and the teacher "
                             f"has {teacher_layers}: {fix} (at least {needs} layers)"
                             + (", or map them with 'uniform' (mapping='uniform')" if uniform_fits else ""))


def check_relation_heads(profile: Profile, teacher_width: int, teacher_heads: int, runs=None,
                         fix: str = "give a teacher whose width they divide") -> None:
    """Refuse, in one line, a value-relation recipe among ``runs`` that will run for a student whose
    ``relation_heads`` do not divide its width or the teacher's (the loss splits both into that many heads)."""
    for spec in profile.students:
        recipes = [r for r in student_recipes(profile, spec, runs) if r.intermediate is not None
                   and r.intermediate.value_relation and applicable(r, spec, teacher_heads)]
        widths = {"teacher": teacher_width, f"student {spec.name}": spec.hidden_size or teacher_width}
        for who, width in widths.items():
            if recipes and width % spec.relation_heads:
                raise UsageError(f"student {spec.name}'s recipe {recipes[0].name} splits the widths into "
                                 f"relation_heads={spec.relation_heads}, which does not divide the {who}'s width "
                                 f"{width}: {fix}, or leave {recipes[0].name} out with --recipes NAME [NAME ...]")


def check_grad_accum(profile: Profile, rows: int, student_rows: dict[str, int] | None = None) -> None:
    """Refuse, in one line, a ``grad_accum`` above the micro-batches in one epoch of the smallest set a run trains on:
    the teacher's ``rows`` training reviews, or a set of ``student_rows`` ({what: rows}, :func:`students_rows`). Every
    step of that run would end at the epoch's end on fewer rows than ``batch_size x grad_accum``, so it would train on
    another batch (and fewer steps) than the run records. The line names the largest ``grad_accum`` that fits all."""
    sets = {f"the teacher's {rows} training reviews": rows} | (student_rows or {})
    which, least = min(sets.items(), key=lambda item: item[1])
    per_epoch = n_batches(least, profile.batch_size)  # as the loop counts them (train.check_step_fits)
    if profile.grad_accum > per_epoch:
        raise UsageError(f"grad_accum={profile.grad_accum}: an epoch of {which} holds "
                         f"{per_epoch} micro-batch(es) of batch_size={profile.batch_size}, so no step could gather "
                         f"{profile.grad_accum}: give --set grad_accum=N with N <= {per_epoch} (--grad-accum N)")


def check_seeds(seeds, said: str | None = None) -> None:
    """Refuse, in one line, no seed or a seed given twice (``said``: how the caller gave them, for the message): two
    runs of one seed share a model name, so the record would list two seeds and average one."""
    seeds = list(seeds)
    said = said or f"seeds={tuple(seeds)}"
    if not seeds:
        raise UsageError(f"{said} gives no seed: give at least one, as in seeds=(0,)")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"{said} repeats a seed: give each seed once")


def students_rows(profile: Profile, prep, runs=None, teacher_heads: int | None = None) -> dict[str, int]:
    """``{what: rows}``: the smallest set each student's runs train on (``runs``: the recipes named, None: each
    student's own; with ``teacher_heads``, those :func:`applicable` under that teacher), its labelled reviews when a
    recipe reads those alone (baseline, kd), else them and its transfer set's (:func:`transfer_splits`; an
    augmented set is larger still)."""
    labelled, sets = len(student_labels(profile, prep)), {}
    for spec in profile.students:
        recipes = [r for r in student_recipes(profile, spec, runs)
                   if teacher_heads is None or applicable(r, spec, teacher_heads)]
        alone = [r.name for r in recipes if not r.transfer]
        if alone:
            sets[f"the {labelled} labelled reviews that student {spec.name}'s {alone[0]} trains on"] = labelled
        elif recipes:
            both = transfer_set_rows(profile, spec, prep)
            sets[f"the {both} labelled and transfer reviews that student {spec.name}'s runs train on"] = both
    return sets


class TeacherShape(NamedTuple):
    """What the checks before a teacher is built or downloaded need from its config."""
    layers: int
    heads: int
    positions: int
    width: int
    vocab: int | None = None  # its embedding's rows (None: the built-in teacher's, built for its tokenizer)
    classes: int | None = None  # the classes of the classifier it was saved as (None: a base model, or built in)


def teacher_shape(profile: Profile, teacher: str | None = None, *, ask_hub: bool = True) -> TeacherShape | None:
    """The run's teacher's shape from its config alone, before any weights: the built-in teacher's from the profile,
    another's from :func:`kd_tutorial.models.teacher_config` (cached, or config.json from the Hub), or with
    ``ask_hub=False`` from :func:`kd_tutorial.models.cached_config` only (the CLI's checks, which never wait on the
    network); None where that cannot be read, or for a model other than a BERT (its loading refuses it)."""
    name = teacher or profile.teacher
    if name == TINY_TEACHER:
        config = TINY_BERT | (profile.teacher_config or {})
        return TeacherShape(config["num_hidden_layers"], config["num_attention_heads"],
                            config["max_position_embeddings"], config["hidden_size"])
    config = (teacher_config if ask_hub else cached_config)(name, fallback_for(profile, name))
    if config is None or getattr(config, "model_type", None) != "bert":
        return None
    return TeacherShape(config.num_hidden_layers, config.num_attention_heads, config.max_position_embeddings,
                        config.hidden_size, getattr(config, "vocab_size", None), head_classes(config))


def check_teacher_shape(profile: Profile, teacher: str | None, runs=None, *, ask_hub: bool = True,
                        init: str = "pretrained") -> TeacherShape | None:
    """Refuse, from the teacher's config alone (:func:`teacher_shape`), a classifier of other than two classes
    (unless ``init`` is ``"random"``, which loads no weight), a ``max_length`` beyond its positions and students it
    cannot teach (:func:`check_depths`, :func:`check_relation_heads`): before its weights download or its
    fine-tuning, after which a refusal would waste them. Silent where the config cannot be read: loading the teacher
    then says why. Returns the shape read (None: none)."""
    name = teacher or profile.teacher
    shape = teacher_shape(profile, name, ask_hub=ask_hub)
    if shape is None:
        return None
    if init != "random" and shape.classes not in (None, 2):  # the course's two classes, as load_teacher's
        raise head_error(name, "teacher", 2, shape.classes)
    tiny = name == TINY_TEACHER
    check_positions(shape.positions, profile.max_length, "tiny teacher" if tiny else name)
    check_depths(profile, shape.layers, shape.heads, runs,
                 fix=("give --set \"teacher_config={'num_hidden_layers': N}\"" if tiny else
                      "give a teacher with more layers, or students with fewer"))
    check_relation_heads(profile, shape.width, shape.heads, runs,
                         fix=("give --set \"teacher_config={'hidden_size': N}\" with N a multiple of relation_heads "
                              "and of num_attention_heads" if tiny else "give a teacher whose width they divide"))
    return shape


def _before_the_teacher(profile: Profile, *, data_dir, teacher, init: str, seed: int, runs) -> None:
    """What a run refuses or says before its teacher is downloaded or fine-tuned: students deeper than the teacher
    (from its config), a ``student_labels`` beyond the training reviews, the data's notes, and a pretrained student
    whose own tokenizer numbers tokens otherwise than the teacher's (from the tokenizers alone)."""
    shape = check_teacher_shape(profile, teacher, runs, init=init)
    check_teacher_tokenizer(profile, teacher or profile.teacher, shape)  # before the data is tokenized with it
    prep = prepare(profile, data_dir=data_dir, teacher=teacher, init=init, seed=seed)
    check_student_labels(profile, len(prep.encoded["train"]))
    check_grad_accum(profile, len(prep.encoded["train"]), students_rows(profile, prep, runs, shape and shape.heads))
    for note in prep.data.notes:
        print(f"data: {note}", flush=True)  # before the teacher's minutes: what the splits hold, if not as asked
    for spec in profile.students:
        check_student_tokenizer(spec, prep.tokenizer, init=init)


def check_teacher_tokenizer(profile: Profile, name: str, shape: TeacherShape | None) -> None:
    """Refuse a teacher whose tokenizer numbers more tokens than its model has embeddings (a folder saved with
    another model's tokenizer): the ids past them would fail inside the model. A model with spare rows is fine."""
    if shape is None or shape.vocab is None:  # the built-in teacher is built for its tokenizer
        return
    tokens = len(teacher_tokenizer(profile, name))
    if tokens > shape.vocab:
        raise UsageError(f"teacher {name}: its tokenizer has {tokens:,} tokens and its model {shape.vocab:,}: save "
                         "the tokenizer the model was trained with beside it (tokenizer.save_pretrained(folder)), "
                         "or give a teacher whose tokenizer and model match")


def augmented_transfer(profile: Profile, prep, teacher_model, *, device: str, progress: bool, **where):
    """An augmented copy of the transfer set (:func:`kd_tutorial.data.augment`) and the teacher's logits on it."""
    rows = augment(prep.encoded["transfer"], mask_id=prep.tokenizer.mask_token_id, seed=0, name="augmented")
    return rows, ensure_teacher_logits_on(profile, "augmented", rows, teacher_model=teacher_model, device=device,
                                          progress=progress, **where)


def distill_students(profile: Profile, teacher, prep, logits: dict, *, seeds=(0,), runs=None,
                     resume: bool = False, device: str = "cpu", init: str = "pretrained",
                     progress: bool = True, students: tuple[StudentSpec, ...] | None = None,
                     cls: dict | None = None, workers: int = 1, layers: dict | None = None) -> dict:
    """Train every (student, recipe, seed); return ``{model name: {"model", "history", "seed", "base", ...}}``
    (``"cached_layers"``: whether the run read the teacher's cached layers).

    ``runs`` names the recipes (None: each student's own). Model names are ``"<student> <recipe>"`` with
    ``" s<seed>"`` appended when there are several seeds. ``cls`` holds the teacher's cached [CLS] states per split,
    for recipes with a [CLS] term, and ``layers`` its cached per-token layers
    (:func:`kd_tutorial.teacher_layers.teacher_layer_cache`; built here when the profile asks for them and none are
    given, for the runs still to train; ``{}``: none). Every run is stored in the artifact cache, under its teacher.
    With ``resume=True`` a finished run is loaded from there (``status="cached"``), whether it read the cached
    layers or called the teacher (not trained again for want of room for the cache today), and an interrupted one
    continues from its last checkpoint; otherwise it is trained again. With ``workers`` > 1 (a CPU, Linux), up to
    that many train at once, one thread each (:mod:`kd_tutorial.parallel`), and are read back from the artifact
    cache; a run left to train alone trains here, in one thread too, so its numbers are those it gets beside another.
    """
    check_seeds(seeds)
    check_workers(workers, device, setting=f"workers={workers}", fix="give workers=1")
    specs = students or profile.students
    chosen = chosen_recipes(profile, specs, runs, teacher.config.num_attention_heads)
    for line in left_out(profile, specs, runs, teacher.config.num_attention_heads):
        print(line, flush=True)
    jobs = _plan_jobs(profile, specs, chosen, seeds, teacher, prep, init, resume=resume)
    caller_cached_layers = bool(layers)  # the teacher's layers, cached by the caller
    logits, cls, layers = _teacher_extras(profile, prep, teacher, chosen, logits, cls, layers, *_keys_to_train(jobs),
                                          splits=outputs_splits(prep, specs, chosen), device=device,
                                          progress=progress)
    split_sets = {job["splits"] for job in jobs}  # each student's transfer set: its splits after its labelled reviews
    sets = {splits: student_data(profile, prep, logits, cls, splits) for splits in split_sets}
    states = {splits: transfer_states(layers, student_labels(profile, prep), splits) for splits in split_sets} \
        if layers else None
    jobs = _place_jobs(jobs, states)
    todo = [job for job in jobs if not (resume and student_finished(job["folder"]))]
    for job in todo:  # finished when planned, not now (deleted, or being retrained by another process): placed again
        if job["finished"] is not None:
            _place(job | {"finished": None}, states, into=job)
    _say_placed(todo, len(jobs), resume, uncovered=caller_cached_layers)
    forked = min(workers, len(todo)) > 1  # trained in worker processes; else here (every thread only at workers=1)
    initials: dict = {}  # the (student, seed) in training's initial weights, built on first need

    def run(job, resume):  # one run, trained here or read back from the cache (resume)
        key = (job["spec"].name, job["seed"])
        if key not in initials:  # a fully cached seed needs none; the last seed's are dropped
            initials.clear()
        with locked(job["folder"]), worker_threads(workers):  # a lone run, as a worker computes it
            return _one_run(profile, job["spec"], job["recipe"], job["config"], sets[job["splits"]], teacher, prep,
                            job["folder"], initials.setdefault(key, []), resume=resume, device=device, init=init,
                            desc=job["name"], progress=progress and not forked, on_step=report_step if forked else None,
                            states=(states or {}).get(job["splits"]) if job["cached_layers"] else None)
    status = _train_side_by_side(todo, run, resume, workers, progress) if forked else {}
    trained = {}
    for job in jobs:  # every run, in order: those the workers trained (status) are read back from the cache
        item = run(job, resume=resume or job["name"] in status)
        if job["name"] in status:
            item["status"] = status[job["name"]]  # trained in a worker (or cached there by another process)
        trained[job["name"]] = item | {k: job[k] for k in ("seed", "base", "student", "plan", "cached_layers")} | {
            "recipe": job["recipe"].name, "path": str(job["folder"])}
    return trained


def _say_placed(todo: list[dict], n_jobs: int, resume: bool, *, uncovered: bool) -> None:
    """What the runs still to train (``todo``, placed by :func:`_place`) start from: the interrupted ones, whose
    checkpoint lies in the folder they train in (:func:`_say_interrupted`); with ``uncovered``, those that lack
    some of the cached layers given (:func:`_say_uncovered`)."""
    _say_interrupted(todo, n_jobs, resume)
    if uncovered:
        _say_uncovered(todo)


def _say_interrupted(todo: list[dict], n_jobs: int, resume: bool) -> None:
    """How many of the runs still to train hold an interrupted run's checkpoint in the folder they train in, which
    ``resume`` continues (without it they start over, and replace it only once they pass its step); and how many
    hold one only under their other cache key (the teacher's layers cached, or called at every step), which they
    cannot continue: they train from step 0, and leave it where it is."""
    stopped = sum(student_interrupted(job["folder"]) for job in todo)
    elsewhere = sum(not student_interrupted(job["folder"]) and any(map(student_interrupted, job["folders"].values()))
                    for job in todo)
    if stopped:
        print(f"students: {stopped} of these {n_jobs} runs were interrupted, and their checkpoints are in the "
              "artifact cache: " + ("they continue from them (--resume)" if resume else "they start over, and "
              "replace those checkpoints only once they pass their steps; add --resume (resume=True) to continue "
              "them"), flush=True)
    if elsewhere:
        print(f"students: {elsewhere} of these {n_jobs} runs were interrupted while they read the teacher the other "
              "way (its cached layers, or the teacher called at every step), so no checkpoint of theirs continues "
              "them: they train from step 0, and leave those checkpoints where they are", flush=True)


def _say_uncovered(todo: list[dict]) -> None:
    """One line when runs still to train (``todo``, placed by :func:`_place`) would read the teacher's cached layers
    but the cache given to :func:`distill_students` lacks some of theirs (a layer, or any on the spare reviews):
    they call the teacher at every step instead."""
    short = [job["name"] for job in todo if job["reads"] and not job["cached_layers"]]
    if short:
        print(f"teacher layers: the cache given lacks layers that {', '.join(short)} read on its reviews (built for "
              f"other runs, or no room on the disk for them), so {'they call' if len(short) > 1 else 'it calls'} the "
              "teacher at every step (slower)", flush=True)


PENDING = ".kd-checkpoints-pending.json"  # in --out: the checkpoints there that no results.json names yet


def write_checkpoints(trained: dict, out: Path, tokenizer=None) -> None:
    """Each final model, with ``tokenizer``, into ``out/checkpoints/<name>/model``, once the run is evaluated. An
    earlier run's ``out/results.json`` is removed first, so that a write cut short never leaves it describing these
    models; then the checkpoints it named that this run does not write, so that none is left beside the new ones.
    Until the new results.json is written, :data:`PENDING` names the earlier run's and
    these: a run cut short meanwhile (Ctrl-C, a full disk) leaves the next one those to clean up."""
    written = {name.replace(" ", "_") for name in trained}
    earlier = _checkpoints_named(out / "results.json") | _checkpoints_named(out / PENDING)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / PENDING, {"run": {"student_status": {n: "pending" for n in sorted(earlier | written)}}})
    (out / "results.json").unlink(missing_ok=True)
    for name, item in trained.items():
        atomic_save_pretrained(item["model"], out / "checkpoints" / name.replace(" ", "_") / "model", tokenizer)
    # a file system that ignores case sees Foo_kd and foo_kd as one folder
    written = {name.lower() for name in written}
    for name in sorted(n for n in earlier if n.lower() not in written):
        folder = out / "checkpoints" / name
        shutil.rmtree(folder / "model", ignore_errors=True)  # what kd-tutorial wrote there, and only that
        with contextlib.suppress(OSError):
            folder.rmdir()  # kept when it holds anything else


def refuse_foreign_plots(out: Path) -> None:
    """A UsageError when ``out`` holds a file of a plot's name (:data:`plots.PIPELINE_PLOTS`) and is no kd-tutorial
    run's folder (no results.json of a run, nor the :data:`PENDING` file of one cut short): the run would replace a
    file of someone else's."""
    foreign = [name for name in plots.PIPELINE_PLOTS if (out / name).exists()]
    if foreign and not (_is_run_results(out / "results.json") or (out / PENDING).exists()):
        raise UsageError(f"--out {out} holds {' and '.join(foreign)}, which no kd-tutorial run there wrote, and the "
                         "run would replace it: move it away, or give another --out")


def is_run_record(data) -> bool:
    """Whether ``data`` (a results.json, read) is one that ``distill`` wrote: "run" and "models"."""
    return isinstance(data, dict) and "run" in data and "models" in data


def _is_run_results(path: Path) -> bool:
    """Whether the file ``path`` is a results.json that ``distill`` wrote (:func:`is_run_record`)."""
    try:
        return is_run_record(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, *JSON_ERRORS):
        return False


def _checkpoints_named(results: Path) -> set[str]:
    """The checkpoint folders of the run that wrote ``results`` (its ``student_status`` names), none when it is
    missing or not a kd-tutorial run's; only plain folder names, never a path."""
    try:
        names = json.loads(results.read_text(encoding="utf-8"))["run"]["student_status"]
    except (OSError, *JSON_ERRORS, KeyError, TypeError):
        return set()
    if not isinstance(names, dict):
        return set()
    return {n.replace(" ", "_") for n in names if isinstance(n, str) and n not in ("", ".", "..")
            and "\0" not in n and "/" not in n and "\\" not in n}


def check_teacher_outside(teacher: str | None, out: str | Path) -> None:
    """Refuse a teacher folder inside ``out/checkpoints``, which the run's own checkpoints replace or remove."""
    if not teacher or not Path(teacher).expanduser().is_dir():
        return
    inside = Path(teacher).expanduser().resolve()
    outs = Path(out).expanduser().resolve() / "checkpoints"
    if inside == outs or outs in inside.parents:
        raise UsageError(f"teacher {teacher} lies in the checkpoints of --out {out}, which this run replaces or "
                         "removes: copy it elsewhere first (cp -r), or give another --out")


def left_out(profile: Profile, specs, runs, teacher_heads: int) -> list[str]:
    """One line per student for the recipes asked of it that :func:`applicable` leaves out under a teacher of
    ``teacher_heads`` attention heads (``--recipes all`` or a named attention recipe), so that none goes unsaid."""
    lines = []
    for spec in specs:
        skipped = [r.name for r in student_recipes(profile, spec, runs) if not applicable(r, spec, teacher_heads)]
        if skipped:
            lines.append(f"{spec.name}: {', '.join(skipped)} left out: attention maps need as many heads as the "
                         f"teacher's {teacher_heads}, and this student has {spec.num_heads}")
    return lines


def chosen_recipes(profile: Profile, specs, runs, teacher_heads: int) -> dict:
    """``{student name: the recipes it runs}`` (:func:`student_recipes`), less those that cannot run under a
    teacher of ``teacher_heads`` attention heads (:func:`applicable`)."""
    return {spec.name: [r for r in student_recipes(profile, spec, runs) if applicable(r, spec, teacher_heads)]
            for spec in specs}


def _teacher_extras(profile: Profile, prep, teacher, chosen: dict, logits: dict, cls, layers, keys, spare_keys=(),
                    *, splits=("train", "transfer"), device: str, progress: bool):
    """What the ``chosen`` recipes need of the teacher beyond what is given: its logits on every one of ``splits``
    (:func:`outputs_splits`), [CLS] states, the augmented copies' logits, the cached per-token layers ``keys``
    (those that runs still to train read; ``spare_keys`` on the spare reviews too). Returns
    ``(logits, cls, layers)``."""
    wanted = [r for rs in chosen.values() for r in rs]
    where = dict(teacher_model=teacher, device=device, progress=progress, **prep.where)
    if layers is None and profile.teacher_layers == "cache":  # first: its pass gives the logits too
        layers = teacher_layer_cache(profile, prep, keys, spare_keys, **where)
    if any(r.intermediate is not None and r.intermediate.cls for r in wanted):
        cls = (cls or {}) | {s: ensure_teacher_cls(profile, s, **where) for s in splits if s not in (cls or {})}
    logits = logits | {s: ensure_teacher_logits(profile, s, **where) for s in splits if s not in logits}
    if "augmented" not in logits and any(r.augment for r in wanted):
        logits = logits | {"augmented": augmented_transfer(profile, prep, teacher, device=device, progress=progress,
                                                           **prep.where)}
    return logits, cls, layers


def outputs_splits(prep, specs, chosen: dict) -> tuple[str, ...]:
    """The splits whose teacher outputs the students ``specs`` read: train and transfer, and the spare reviews
    where a run reads them (:func:`run_splits`, the rule each planned run's rows follow; ``chosen``: each student's
    recipes)."""
    read = {split for spec in specs for r in chosen.get(spec.name, ()) for split in run_splits(spec, r, prep)}
    return ("train", "transfer") + (("spare",) if "spare" in read else ())


def _jobs(profile: Profile, specs, chosen: dict, seeds, teacher, prep, init: str, n_rows: int | None = None,
          states=None, *, resume: bool = False) -> list[dict]:
    """Every (student, seed, recipe) run in training order (:func:`_plan_jobs`), each in the cache folder it
    reads or trains in (:func:`_place_jobs`, ``states``: the teacher's cached layers); announces each student's
    plan. ``n_rows``: the students' transfer rows, which the step budget counts (None: the profile's). Kept for
    docs/tuning/student_dropout_compare.py, which finds cached runs with it."""
    return _place_jobs(_plan_jobs(profile, specs, chosen, seeds, teacher, prep, init, n_rows, resume=resume), states)


def _plan_jobs(profile: Profile, specs, chosen: dict, seeds, teacher, prep, init: str, n_rows: int | None = None, *,
               resume: bool = False) -> list[dict]:
    """Every (student, seed, recipe) run in training order, with its name, config and cache folders: ``folders``
    maps whether it reads the teacher's cached layers to that key's folder (``False`` alone for a run that cannot).
    With ``resume``, ``finished`` is the folder of a finished run under either key (the cached layers' first), so
    that a run is not trained again because today's disk has no room for the cache; else None."""
    jobs = []
    for spec in specs:
        recipes = chosen[spec.name]
        rows = n_rows or transfer_set_rows(profile, spec, prep)
        steps = step_budget(profile, spec, rows)
        plan = student_plan(spec, recipes, steps, teacher) | _spare_plan(spec, prep) | _evals_plan(profile, steps, spec)
        for seed in seeds:
            for recipe in recipes:
                config = run_config(profile, spec, recipe, plan["steps"], seed)
                reads = reads_cached_layers(profile, recipe)
                folders = {c: student_folder(prep, f"{spec.name} {recipe.name} s{seed}",
                                             *run_key(profile, spec, config, init, recipe, cached_layers=c,
                                                      spare=spare_hash(spec, recipe, prep),
                                                      teacher_layers=teacher.config.num_hidden_layers))
                           for c in ((True, False) if reads else (False,))}
                jobs.append({"spec": spec, "recipe": recipe, "seed": seed, "config": config, "folders": folders,
                             "splits": run_splits(spec, recipe, prep),  # what its rows come from
                             "finished": next((f for f in folders.values() if student_finished(f)), None)
                             if resume else None, "reads": reads,
                             "layer_keys": run_layer_keys(spec, recipe, teacher.config.num_hidden_layers)
                             if reads else set(), "plan": plan, "student": spec.name,
                             "base": f"{spec.name} {recipe.name}",
                             "name": f"{spec.name} {recipe.name}" + (f" s{seed}" if len(seeds) > 1 else "")})
    return jobs


def _keys_to_train(jobs: list[dict]) -> tuple[list, list]:
    """The teacher's (kind, layer) pairs that the runs still to train would read from the cache: on train and
    transfer, and on the spare reviews (those of the runs that learn from them)."""
    todo = [job for job in jobs if job["finished"] is None]
    return (sorted({key for job in todo for key in job["layer_keys"]}),
            sorted({key for job in todo if "spare" in job["splits"] for key in job["layer_keys"]}))


def _place_jobs(jobs: list[dict], states=None) -> list[dict]:
    """Give each planned job its ``folder``, ``cached_layers`` and ``online_teacher``: a finished run's own, else
    whether ``states`` (the teacher's cached layers, or None) hold every layer it reads; announce each student."""
    for job in jobs:
        _place(job, states)
    for student, plan in {job["student"]: job["plan"] for job in jobs}.items():
        _announce(student, plan)
    return jobs


def _place(job: dict, states, into: dict | None = None) -> None:
    """Set ``folder``, ``cached_layers`` and ``online_teacher`` of ``into`` (``job`` itself by default) from
    ``job``: its finished run's, else the cached-layers key's when ``states`` hold every layer it reads."""
    states = states.get(job["splits"]) if states else None  # the cached layers in the rows of its transfer set
    if job["finished"] is not None:
        cached = job["finished"] == job["folders"].get(True)
    else:
        cached = states is not None and job["reads"] and job["layer_keys"] <= states.keys
    (job if into is None else into).update({
        "folder": job["finished"] or job["folders"][cached], "cached_layers": cached, "finished": job["finished"],
        "online_teacher": job["recipe"].needs_token_internals and not cached})


def _train_side_by_side(jobs: list[dict], run, resume: bool, workers: int, progress: bool) -> dict:
    """Train ``jobs`` ``workers`` at a time in forked processes (:func:`kd_tutorial.parallel.run_forked`), the
    runs that call the teacher at every step (the costliest) first; return each run's status (``"trained"``, or
    ``"cached"`` when ``resume`` found it finished). The bar counts finished runs, plus the share of their steps the
    runs training have done, and shows those steps (their own bars are off: side by side they would overwrite each
    other)."""
    print(f"students: {min(workers, len(jobs))} runs at a time, one thread each (--workers, or workers=)", flush=True)
    order = sorted(range(len(jobs)), key=lambda i: not jobs[i]["online_teacher"])
    with progress_bar(total=len(jobs), desc="student runs", unit="run", disable=not progress,
                      bar_format=RUNS_BAR_FORMAT) as bar:
        on_done, on_progress = _runs_bar_callbacks(bar)
        statuses = run_forked(lambda k: run(jobs[order[k]], resume)["status"], len(jobs), workers,
                              on_done=on_done, on_progress=on_progress if progress else None)
    return {jobs[i]["name"]: s for i, s in zip(order, statuses)}


RUNS_BAR_FORMAT = "{l_bar}{bar}| {n:.3g}/{total} runs [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def _runs_bar_callbacks(bar):
    """``on_done`` and ``on_progress`` for :func:`kd_tutorial.parallel.run_forked` that move ``bar`` by finished
    runs plus the share of their steps the running runs have done (3 of 7 steps counts 3/7 of a run), so its
    time left moves between two finished runs, and show the running runs' steps after the bar."""
    runs = {"finished": 0, "running": 0.0}

    def move() -> None:  # never backwards: a run that just ended leaves `running` a moment before `finished` counts it
        ahead = runs["finished"] + runs["running"] - bar.n
        if ahead > 0:
            bar.update(ahead)
        else:
            tick(bar)  # the elapsed time moves even when the count does not

    def on_done(_index: int) -> None:
        runs["finished"] += 1
        move()

    def on_progress(steps: dict) -> None:  # {job: (done, total)} of the runs training
        runs["running"] = sum(done / total for done, total in steps.values())
        bar.set_postfix_str("steps " + ", ".join(f"{done}/{total}" for done, total in steps.values())
                            if steps else "", refresh=False)
        move()
    return on_done, on_progress


def student_plan(spec: StudentSpec, recipes: list[Recipe], steps: int, teacher) -> dict:
    """What a student's runs do: the step budget, each recipe's intermediate terms with their weights and, when
    a recipe has any, the layer mapping (``results["run"]["students"]``)."""
    plan = {"steps": steps, "recipes": {r.name: r.intermediate.weights if r.intermediate else {} for r in recipes}}
    if any(r.intermediate is not None for r in recipes):
        mapping = layer_mapping(spec.mapping, spec.num_layers, teacher.config.num_hidden_layers)
        plan["layer_mapping"] = describe_mapping(spec.mapping, mapping)
        plan["relation_heads"] = spec.relation_heads
    return plan


def _spare_plan(spec: StudentSpec, prep) -> dict:
    """For a student that asks for the spare reviews (``spare_reviews``), how many its transfer set holds."""
    return {"spare_reviews": prep.spare_rows()} if spec.spare_reviews else {}


def _evals_plan(profile: Profile, steps: int, spec: StudentSpec | None = None) -> dict:
    """Where a run of ``steps`` steps validates fewer times than ``evals_per_run`` asks
    (:func:`validation_passes`): how often and how many times it does (``results["run"]["students"]``); and a
    student's own ``evals_per_run`` where it sets one."""
    every, passes = validation_passes(profile, steps, spec)
    own = {"evals_per_run": spec.evals_per_run} if spec is not None and spec.evals_per_run is not None else {}
    return own | ({"validation_passes": passes, "validation_every": every} if passes < evals_asked(profile, spec)
                  else {})


def _announce(name: str, plan: dict) -> None:
    """One line per student: its step budget, its recipes, the spare reviews it learns from where it asks for them,
    when a recipe needs one, its layer mapping and, where they are its own or fewer than ``evals_per_run``, its
    validation passes (:func:`_evals_plan`)."""
    line = f"{name}: {plan['steps']} steps per run; recipes {', '.join(plan['recipes'])}"
    if "spare_reviews" in plan:
        line += (f"; the transfer-set runs also learn from {plan['spare_reviews']:,} spare train reviews"
                 if plan["spare_reviews"] else "; no spare train reviews in this data (every one is in a split), so "
                 "its transfer set is the labelled and transfer reviews")
    if "layer_mapping" in plan:
        line += f"; layer mapping {plan['layer_mapping']}"
    if "evals_per_run" in plan and "validation_passes" not in plan:
        line += f"; validated {plan['evals_per_run']} times a run (its own evals_per_run)"
    if "validation_passes" in plan:
        every, passes = plan["validation_every"], plan["validation_passes"]
        line += (f"; validated after every step: {passes} passes per run, fewer than evals_per_run asks (at most one "
                 "a step)" if every == 1 else f"; validated every {every} steps and after the last: {passes} passes "
                 "per run, fewer than evals_per_run asks (passes are a whole number of steps apart)")
    print(line, flush=True)


def _one_run(profile, spec, recipe, config, sets, teacher, prep, folder, initial: list, *, resume, device, init,
             desc, progress, states=None, on_step=None) -> dict:
    """One student run: from the cache when ``resume`` finds it finished, else trained (and stored); ``states``:
    the teacher's cached layers, in the transfer set's rows, for a run that reads them; ``on_step``: :func:`train`'s."""
    try:
        cached = load_student(folder) if resume else None
    except DamagedRun as damaged:  # the run is deterministic: trained again, it is the run that was lost
        print(f"{desc}: the finished run cached in {folder} cannot be read ({damaged.cause}): training it again",
              flush=True)
        cached = None
    if cached is not None:
        return {"model": cached[0], "history": cached[1], "status": "cached", "run_hash": run_hash(folder)}
    again = student_finished(folder)  # trained before on these settings: no checkpoint, so that a Ctrl-C keeps it
    with kept_rng():  # the caller draws the same numbers after a run trained now as after a cached one
        if not initial:
            seed_everything(config.seed)
            initial.append(build_student(spec, teacher, init=init, attention_dropout=profile.attention_dropout,
                                         freeze_embeddings=profile.freeze_word_embeddings,
                                         hidden_dropout=profile.student_hidden_dropout,
                                         teacher_tokenizer=prep.tokenizer))
        student = copy.deepcopy(initial[0])
        spec_i = recipe.intermediate
        seed_everything(config.seed)  # the projections' start, too, must not depend on the runs before this one
        model = (DistillationStudent(student, teacher.config.hidden_size) if spec_i is not None
                 and spec_i.needs_projection else student)
        rows, t_logits, t_cls = sets["augmented" if recipe.augment else "transfer" if recipe.transfer else "labelled"]
        online = recipe.needs_token_internals and states is None
        seed_everything(config.seed)
        with _keeps_finished_run(desc, again):
            history = train(model, rows, config=config, val_data=prep.encoded["validation"],
                            teacher_logits=t_logits if recipe.mode != "ce" else None,
                            teacher=teacher if online else None,
                            teacher_cls=t_cls if spec_i is not None and spec_i.cls else None, teacher_states=states,
                            device=device, checkpoint_dir=None if again else folder, resume=resume, desc=desc,
                            progress=progress, on_step=on_step)
    student = fold_word_embeddings(student)  # a plain BERT again (a no-op unless spec.teacher_word_vectors)
    with ctrl_c_after() if again else contextlib.nullcontext():  # cut short, it would leave neither run: no checkpoint
        save_student(folder, student, history)
    # back on the CPU, as a student from the cache comes: a GPU keeps room for the next run (a T4 running the full
    # profile's seeds would otherwise hold every finished student), and evaluation moves each one over in turn
    return {"model": student.cpu(), "history": history, "status": "trained", "run_hash": run_hash(folder)}


@contextlib.contextmanager
def _keeps_finished_run(desc: str, again: bool):
    """On Ctrl-C in a run trained again (``again``: its folder holds the run finished before on the same settings,
    and the new training keeps no checkpoint), say that ``--resume`` reuses that run. (An interrupted run's
    checkpoint stands until the new run passes its step: :meth:`kd_tutorial.train._Run.behind_earlier`.)"""
    try:
        yield
    except KeyboardInterrupt:
        if again:
            print(f"\n{desc}: interrupted; the run finished before on the same settings is still in the artifact "
                  "cache: run again with --resume (resume=True) to reuse it", file=sys.stderr, flush=True)
        raise


# --------------------------------------------------------------------------- evaluation and results

def _aggregate(rows: list[dict], trained: dict) -> list[dict]:
    """Mean and std over seeds for each (student, recipe), speeds included; latency pooled over the seeds' timings."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        base = trained[row["name"]]["base"] if row["name"] in trained else row["name"]
        groups.setdefault(base, []).append(row)
    out = []
    for base, group in groups.items():
        sources = [g.get("train_speed_from") or "this run" for g in group]  # one per seed, in seed order
        agg = {"name": base, "seeds": len(group), "params": group[0]["params"], "mb": group[0]["mb"],
               "precision": group[0].get("precision"),
               "train_speed_from": "this run" if set(sources) == {"this run"} else "; ".join(sources)}
        for key in ("accuracy", "agreement", "ece", "reviews_per_s", "tokens_per_s", "train_tokens_per_s"):
            values = [g[key] for g in group if g.get(key) is not None]
            if values:
                agg[key] = statistics.mean(values)
                agg[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
                agg[key + "_per_seed"] = values
        if all("reviews_per_s_passes" in g for g in group):  # each seed's three throughput passes
            agg["reviews_per_s_passes"] = [g["reviews_per_s_passes"] for g in group]
        timings = sorted(t for g in group for t in g["latency_samples_ms"])
        q1, p50, q3 = quartiles(timings)
        agg |= {"latency_ms": p50, "latency_q1_ms": q1, "latency_q3_ms": q3}
        out.append(agg)
    return out


def comparisons(trained: dict, test_logits: dict, labels, seeds) -> list[dict]:
    """Every recipe against its student's baseline, the soft-target runs against the pseudo-label control, and each
    recipe that adds to logit KD (``kd+transfer+...``: an intermediate term or augmentation) against ``kd+transfer``.

    Paired over the same test reviews and pooled over ``seeds``, each recipe's runs taken in that order, so that
    row ``i`` of either side is the same seed's run (:func:`kd_tutorial.evaluate.compare_paired`).
    """
    runs = _runs_per_recipe(trained, seeds)
    correct = {key: correct_matrix([test_logits[n] for n in names], labels) for key, names in runs.items()}
    out = []
    for student in dict.fromkeys(s for s, _ in runs):
        recipes = [r for s, r in runs if s == student]
        pairs = [(r, "baseline") for r in recipes if r != "baseline" and "baseline" in recipes]
        pairs += [(r, "pseudo-label") for r in recipes
                  if r.startswith("kd+transfer") and "pseudo-label" in recipes]
        pairs += [(r, "kd+transfer") for r in recipes if r.startswith("kd+transfer+") and "kd+transfer" in recipes]
        for a, b in pairs:
            stats = compare_paired(correct[(student, a)], correct[(student, b)])
            out.append({"student": student, "recipe": a, "against": b} | stats)
    return out


def _runs_per_recipe(trained: dict, seeds=None) -> dict[tuple[str, str], list[str]]:
    """(student, recipe) -> the names of its runs, one per seed, in the order of ``seeds`` (a seed not among them,
    or with ``seeds`` None, after those, in training order)."""
    order = {seed: i for i, seed in enumerate(seeds or [])}
    runs: dict[tuple[str, str], list[str]] = {}
    for name, item in sorted(trained.items(), key=lambda kv: order.get(kv[1].get("seed"), len(order))):
        runs.setdefault((item["student"], item["recipe"]), []).append(name)
    return runs


def teacher_shares(trained: dict, test_logits: dict, labels) -> dict[str, dict]:
    """Each recipe's test accuracy as a share of the teacher's, pooled over seeds, with a paired bootstrap interval
    over reviews (:func:`kd_tutorial.evaluate.teacher_share`), keyed by the row name ``"student recipe"``; none
    where the teacher gets no review right (there is no share of nothing: the report prints "-")."""
    teacher = correct_matrix([test_logits["teacher"]], labels)
    if not teacher.any():
        return {}
    return {f"{student} {recipe}": teacher_share(correct_matrix([test_logits[n] for n in names], labels), teacher)
            for (student, recipe), names in _runs_per_recipe(trained).items()}


def best_recipes(rows: list[dict], trained: dict) -> dict:
    """Per student, the distillation recipe (soft targets) whose runs scored best on *validation* (mean over
    seeds), and its test accuracy; ``validation`` holds every such recipe's mean, best first, so that the margin
    over the runner-up shows. Means within float rounding of each other (the same right answers over the seeds)
    are a tie, which the recipe trained first wins. The baseline and the pseudo-label control are references, never
    chosen."""
    val: dict[str, dict[str, list[float]]] = {}
    for item in trained.values():
        if get_recipe(item["recipe"]).targets == "soft":
            val.setdefault(item["student"], {}).setdefault(item["recipe"], []).append(
                item["history"].best_val_acc or 0.0)
    test = {r["name"]: r["accuracy"] for r in rows}
    share = {r["name"]: r.get("share_of_teacher") for r in rows}
    out = {}
    for student, recipes in val.items():
        means = dict(sorted(((r, statistics.mean(a)) for r, a in recipes.items()), key=lambda kv: -choice_key(kv[1])))
        recipe, mean = next(iter(means.items()))  # the first of a tie, in training order (a stable sort)
        out[student] = {"recipe": recipe, "val_accuracy": mean, "test_accuracy": test.get(f"{student} {recipe}"),
                        "share_of_teacher": share.get(f"{student} {recipe}"), "validation": means}
        lead = _validation_lead(trained, student, *list(means)[:2]) if len(means) > 1 else None
        if lead is not None:
            out[student]["validation_lead"] = lead
    return out


def _validation_lead(trained: dict, student: str, recipe: str, runner: str) -> dict | None:
    """``recipe`` against ``runner`` on validation (:func:`kd_tutorial.evaluate.compare_paired`: the kept passes'
    answers review by review, each seed's runs paired, seeds pooled), with ``against``; None where a run kept no
    answers (trained before they were kept), or the two ran other seeds or answered on different reviews."""
    answers = [{item["seed"]: getattr(item["history"], "best_val_correct", None) for item in trained.values()
                if item["student"] == student and item["recipe"] == r} for r in (recipe, runner)]
    flat = list(answers[0].values()) + list(answers[1].values())
    if not all(flat) or answers[0].keys() != answers[1].keys() or len({len(a) for a in flat}) != 1:
        return None
    a, b = (torch.tensor([[c == "1" for c in runs[seed]] for seed in sorted(runs)]) for runs in answers)
    return {"against": runner} | compare_paired(a, b)


def run_distill(profile: Profile, *, data_dir: str | None = None, teacher: str | None = None,
                init: str = "pretrained", out: str | Path = "runs/latest", resume: bool = False,
                seeds=(0,), device: str | None = None, progress: bool = True, runs=None,
                workers: int | None = None) -> dict:
    """Run the whole pipeline and write ``results.json``, checkpoints and plots into ``out``.

    ``runs``: recipe names for every student (None: each student's own; ``kd-tutorial distill --recipes``).
    ``workers``: student runs trained at once (None: :func:`kd_tutorial.parallel.default_workers`).
    The steps, each timed into ``results["run"]["phase_seconds"]``: the teacher, its outputs, the students,
    the evaluation. When runs read the teacher's cached layers, one teacher pass over train + transfer (and the
    spare reviews, for a student that learns from them) writes them with its logits and [CLS] states
    (``teacher_layers``); ``teacher_logits`` then reads those back. ``out`` is locked for the whole run
    (:func:`kd_tutorial.store.locked`): a second run into it waits, saying for which process, until this one ends.
    """
    check_profile(profile, "run_distill")
    device = device or pick_device()
    check_seeds(seeds)  # before the teacher, as the two below
    check_workers(workers or 1, device, setting=f"workers={workers}", fix="give workers=1")
    check_teacher_outside(teacher or profile.teacher, out)
    out = Path(out)
    with locked(out, instead="give another --out", leave_none=True):  # another run there would mix its files
        seeds, clock = tuple(seeds), _Phases()
        with clock("teacher"):
            _before_the_teacher(profile, data_dir=data_dir, teacher=teacher, init=init, seed=seeds[0], runs=runs)
            teacher_model, prep, info = ensure_teacher(profile, data_dir=data_dir, teacher=teacher, init=init,
                                                       seed=seeds[0], device=device, progress=progress)
        config = teacher_model.config  # the teacher is cached: a refusal here loses nothing
        check_depths(profile, config.num_hidden_layers, config.num_attention_heads, runs)
        check_relation_heads(profile, config.hidden_size, config.num_attention_heads, runs)
        kw = dict(teacher_model=teacher_model, data_dir=data_dir, teacher=teacher, init=init, seed=seeds[0],
                  device=device, progress=progress)
        keys, spare_keys = _layers_to_cache(profile, prep, teacher_model, runs, seeds, init, resume)
        with clock("teacher_layers"):  # first: the same pass caches the logits (none when no run reads layers)
            layers = teacher_layer_cache(profile, prep, keys, spare_keys, **kw)
        with clock("teacher_logits"):
            logits, cls = teacher_outputs(profile, prep, runs, **kw)
        workers = workers or default_workers(device)
        with clock("students"):
            trained = distill_students(profile, teacher_model, prep, logits, seeds=seeds, resume=resume,
                                       device=device, init=init, progress=progress, cls=cls, runs=runs, workers=workers,
                                       layers=layers or {})  # {}: none cached, and none to build again
        n_trained = sum(item["status"] == "trained" for item in trained.values())
        workers = max(1, min(workers, n_trained))  # what ran side by side, for the record
        with clock("evaluation"):
            rows, stats = evaluate_all(profile, prep, info, trained, seeds, **kw)
        # not before: a run cut short leaves the earlier run's files as they were
        with _writing_results(out):
            results = _write_results(trained, out, prep, profile, info, seeds, rows, stats, layers, clock,
                                     device=device, init=init, teacher=teacher, workers=workers)
        _print_results(results, profile, device)
        return results


def _write_results(trained, out: Path, prep, profile: Profile, info, seeds, rows, stats, layers, clock, *, device: str,
                   init: str, teacher, workers: int) -> dict:
    """Write ``out``'s checkpoints, results.json and plots (in that order: results.json names the checkpoints, and
    is written again with the plots' names); return the results."""
    write_checkpoints(trained, out, prep.tokenizer)
    record = run_record(profile, prep, info, trained, seeds, device=device, init=init, teacher=teacher,
                        phases=clock.seconds, wall=clock.wall(), workers=workers)
    record["load_at_start"] = clock.load  # other processes' demand on the cores: times on a busy machine are slower
    record["teacher_layers"] = _layers_record(profile, layers, trained)
    results = {"run": record,
               "models": rows, "comparisons": stats, "best_recipes": best_recipes(rows, trained),
               "histories": {"teacher": info.get("history")} |
                            {n: item["history"].to_dict() for n, item in trained.items() if item["history"]}}
    atomic_write_json(out / "results.json", results)
    (out / PENDING).unlink(missing_ok=True)  # results.json names the checkpoints now
    results["plots"] = plots.save_pipeline_plots(results, out)
    atomic_write_json(out / "results.json", results)
    return results


# the disk errors that making --out writable fixes (not a folder where a file goes, a path through a file...)
_WRITE_REFUSALS = (errno.EACCES, errno.EPERM, errno.EROFS)


@contextlib.contextmanager
def _writing_results(out: Path):
    """A disk that refuses ``out``'s checkpoints, results.json or plots: store's StorageError said "what was there
    before is untouched", but by then the earlier run's results.json is removed and its checkpoints may be replaced.
    Say instead what is kept (every student, in the artifact cache) and how to finish without training again."""
    try:
        yield
    except StorageError as err:  # on Windows a checkpoint a notebook loaded is held open: store's fix says so
        cause = getattr(err.__cause__, "errno", None)
        fix = ("free some space, or " if cause in DISK_FULL else
               f"{held_open_fix(err.__cause__)}make {out} writable, or " if cause in _WRITE_REFUSALS else "")
        raise StorageError(f"{str(err).split('; ')[0]}; the students are trained and kept in the artifact cache: "
                           f"{fix}give another --out, then run the same command with --resume to write the "
                           "results without training again") from err.__cause__


def _print_results(results: dict, profile: Profile, device: str) -> None:
    """The table, each recipe against its references, and each student's best recipe with its lead on
    validation, as ``kd-tutorial distill`` ends."""
    split = results["run"]["evaluated_on"]
    print(format_table(results["models"], title=f"{profile.name} profile, {results['run']['split_sizes']['test']} "
                                                f"{split} reviews, {device}"))
    if results["comparisons"]:  # a run of baselines alone compares nothing: no table of no rows
        print("\n" + comparisons_caption(results["comparisons"], split, len(results["run"]["seeds"])))
        print(format_comparisons(results["comparisons"], results["models"]))
    print("\n" + format_best_recipes(results, split).rstrip())


def _layers_record(profile: Profile, layers: dict | None, trained: dict) -> dict:
    """``results["run"]["teacher_layers"]``: the setting, the cache's size and keys (on the spare reviews too), and
    the runs that read it."""
    def keys(split):
        return [f"{k} {t}" for k, t in sorted(layers[split].keys)] if layers and split in layers else []
    return {"setting": profile.teacher_layers, "gb": cache_gb(layers), "cached": keys("train"),
            "cached_on_spare": keys("spare"),
            # with --resume a run may come from either key: which ones read the cache
            "runs_reading_it": sorted(n for n, item in trained.items() if item["cached_layers"])}


def _layers_to_cache(profile: Profile, prep, teacher_model, runs, seeds, init: str, resume: bool) -> tuple:
    """The teacher's (kind, layer) pairs that :func:`run_distill`'s runs read from the cache, on train and transfer
    and on the spare reviews (:func:`_keys_to_train`): with ``resume``, only those that runs still to train read
    (none when all of those are finished: no layer pass). Without it, says how many runs the artifact cache holds
    finished, which are trained again."""
    chosen = chosen_recipes(profile, profile.students, runs, teacher_model.config.num_attention_heads)
    jobs = _plan_jobs(profile, profile.students, chosen, seeds, teacher_model, prep, init, resume=True)
    _say_finished(jobs, resume)
    if not resume:
        jobs = [job | {"finished": None} for job in jobs]  # every run trains
    return _keys_to_train(jobs)


def _say_finished(jobs: list[dict], resume: bool) -> None:
    """Say how many of ``jobs`` the artifact cache holds finished: which a run without ``resume`` trains again (a
    command rerun after a disconnect, on a GPU's hours, would otherwise spend them without a word), and with it
    reuses. The interrupted ones are counted once each run is placed (:func:`_say_interrupted`, in
    :func:`distill_students`): after the teacher's layers and logits, since where a run trains depends on them."""
    done = sum(job["finished"] is not None for job in jobs)
    if done and not resume:
        print(f"students: {done} of these {len(jobs)} runs are finished in the artifact cache and will be trained "
              "again: add --resume (resume=True) to reuse them", flush=True)
    elif done:
        print(f"students: {done} of these {len(jobs)} runs are finished in the artifact cache and are reused "
              f"(--resume); {len(jobs) - done} to train", flush=True)


class _Phases:
    """Wall time per named step: ``with clock("teacher"): ...`` adds to ``clock.seconds["teacher"]``."""

    def __init__(self):
        self.seconds, self.start, self.load = {}, time.perf_counter(), load_average()  # the load before the run

    @contextlib.contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t

    def wall(self) -> float:
        """Seconds since the clock was made."""
        return time.perf_counter() - self.start


def teacher_outputs(profile: Profile, prep, runs, **kw) -> tuple[dict, dict | None]:
    """The teacher's cached logits on train and transfer (the spare reviews too, for a student that learns from
    them; augmented copies, when a recipe needs them), and its [CLS] states when a recipe has a [CLS] term: computed
    once, then read from the artifact cache."""
    chosen = chosen_recipes(profile, profile.students, runs, kw["teacher_model"].config.num_attention_heads)
    splits = outputs_splits(prep, profile.students, chosen)
    logits = {split: ensure_teacher_logits(profile, split, **kw) for split in splits}
    recipes = [r for rs in chosen.values() for r in rs]
    needs_cls = any(r.intermediate is not None and r.intermediate.cls for r in recipes)
    cls = {split: ensure_teacher_cls(profile, split, **kw) for split in splits} if needs_cls else None
    if any(r.augment for r in recipes):
        logits["augmented"] = augmented_transfer(profile, prep, kw["teacher_model"], device=kw["device"],
                                                 progress=kw["progress"], **prep.where)
    return logits, cls


def evaluate_all(profile: Profile, prep, info: dict, trained: dict, seeds, **kw):
    """Every model on the test split, side by side (one device, one run), aggregated over seeds, and every
    recipe compared with its baseline: ``(rows, comparisons)``."""
    test, device = prep.encoded["test"], kw["device"]
    test_logits = {"teacher": ensure_teacher_logits(profile, "test", **kw)}
    test_logits |= {name: student_test_logits(profile, prep, item, device=device) for name, item in trained.items()}
    models = {"teacher": kw["teacher_model"]} | {n: item["model"] for n, item in trained.items()}
    train_speed = {"teacher": info["history"].get("tokens_per_s") if info.get("history") else None}
    train_speed |= {n: item["history"].tokens_per_s for n, item in trained.items() if item["history"]}
    rows = compare(models, test, device=device, batch_size=profile.eval_batch_size, logits=test_logits,
                   train_tokens_per_s=train_speed, precision=profile.precision)
    for row in rows:
        row["train_speed_from"] = _speed_source(info if row["name"] == "teacher" else trained[row["name"]])
    rows = _aggregate(rows, trained)
    shares = teacher_shares(trained, test_logits, test.labels)
    for row in rows:
        if row["name"] in shares:
            row["share_of_teacher"] = shares[row["name"]]
    return rows, comparisons(trained, test_logits, test.labels, seeds)


def student_test_logits(profile: Profile, prep, item: dict, *, device: str) -> torch.Tensor:
    """A trained student's logits on the test split, in the profile's precision (as validation chose it, and as the
    teacher's): read back from its run folder when that training of the run was evaluated on these reviews before
    (``--resume``, more seeds), else computed and kept there. Like the teacher's, they are computed once, on the
    device of that first evaluation."""
    path, test = student_test_logits_file(prep, Path(item["path"]), item["run_hash"]), prep.encoded["test"]
    if path.exists():
        return load_cached_logits(path, len(test), width=2)
    logits = predict_logits(item["model"], test, batch_size=profile.eval_batch_size, device=device,
                            precision=profile.precision)
    item["model"].cpu()  # predict_logits left it on the device: compare then moves each student over in turn
    atomic_torch_save(logits, path)
    return logits


def _speed_source(item: dict) -> str:
    """Which run measured a model's training speed: this one, or (a model from the cache) an earlier one."""
    if item.get("status") != "cached":
        return "this run"
    history = item.get("history")
    when = history.get("finished_at") if isinstance(history, dict) else getattr(history, "finished_at", None)
    return f"an earlier run ({when or 'date not recorded'})"


def run_record(profile: Profile, prep, info: dict, trained: dict, seeds, *, device: str, init: str,
               teacher: str | None, phases: dict, wall: float, workers: int = 1) -> dict:
    """``results["run"]``: what ran, on what, from which code and data, and how long each step took."""
    split_name = "held-out" if prep.data.test_is_held_out else "test"
    return {
        "profile": profile.name, "profile_changes": profile.changes(), "settings": profile.settings(),
        "data_source": prep.data.source,
        "split_sizes": prep.data.sizes(), "data_notes": list(prep.data.notes),
        "evaluated_on": split_name, "device": device, "init": init, "seeds": list(seeds),
        "precision": describe_device(device) | {"training": resolve_precision(device, profile.precision),
                                                "batch_size": profile.batch_size, "grad_accum": profile.grad_accum},
        "torch_threads": torch.get_num_threads(), "student_workers": workers,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),  # PASSIVE: threads slept, on a busy machine (threads)
        "teacher": teacher or profile.teacher, "teacher_status": info["status"],
        "students": {item["student"]: item["plan"] for item in trained.values()},
        "student_status": {name: item["status"] for name, item in trained.items()},
        "versions": versions() | {"kd_tutorial": __version__}, "platform": platform.platform(),
        "git_commit": git_commit(), "wall_seconds": wall, "phase_seconds": phases,
        "temperature": profile.temperature, "alpha": profile.alpha,
        "student_labels": len(student_labels(profile, prep)),
        "train_seconds": {name: item["history"].seconds for name, item in trained.items()},
        "validation_seconds": {name: item["history"].eval_seconds for name, item in trained.items()},
        "trained_in": trained_precisions(info, trained),
        "trained_threads": {name: item["history"].threads for name, item in trained.items()},
    }


def trained_precisions(info: dict, trained: dict) -> dict:
    """The precision each model trained in, as its history recorded it (None: not fine-tuned here, or cached before
    histories recorded it): a model from the artifact cache may have trained on a machine where "auto" meant
    another precision than this one's."""
    history = info.get("history") or {}
    teacher = history.get("precision") if isinstance(history, dict) else history.precision
    return {"teacher": teacher} | {name: item["history"].precision for name, item in trained.items()}
