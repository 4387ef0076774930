"""The plan of the students' runs, decided before any model is built: each student's step budget
(:func:`step_budget`), its recipes (:func:`student_recipes`, :func:`applicable`), the
:class:`~kd_tutorial.train_config.TrainConfig` of one run (:func:`run_config`) and its validation passes
(:func:`validation_passes`), the key of its folder in the artifact cache (:func:`run_key`), and the data sets it
trains on (:func:`transfer_splits`, :func:`student_data`).

:mod:`kd_tutorial.pipeline` runs this plan; :mod:`kd_tutorial.flops` counts it and :mod:`kd_tutorial.search` trains
one run of it, neither through the pipeline. Nothing here trains, builds a model or calls the teacher.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from .artifacts import teacher_key
from .data import AUGMENT, concat_encoded, labelled_subset, subset_encoded
from .errors import UsageError
from .layer_maps import layer_mapping
from .profiles import Profile, StudentSpec
from .recipes import Recipe, get_recipe
from .train_config import TrainConfig


def step_budget(profile: Profile, spec: StudentSpec, n_rows: int) -> int:
    """Optimizer steps every run of one student gets: its epochs over the labelled + transfer reviews."""
    return max(1, math.ceil(profile.for_student("student_epochs", spec) * n_rows / profile.effective_batch))


def check_student_labels(profile: Profile, rows: int) -> None:
    """Refuse, in one line, a ``student_labels`` above the ``rows`` labelled training reviews there are: the students
    would see all of them (:func:`kd_tutorial.data.labelled_subset`), as with None, while results.json and the cache
    key record the number asked. The line names the largest value that fits."""
    asked = profile.student_labels
    if asked is None or asked <= rows:
        return
    larger = [f"a larger --set n_train=N (it keeps {profile.n_train})"] if profile.n_train is not None else []
    fixes = [f"--set student_labels=N with 2 <= N <= {rows}", "--set student_labels=None (all of them)"] + larger
    raise UsageError(f"student_labels={asked} is more than the {rows} labelled training reviews there are: give "
                     + (", ".join(fixes[:-1]) + " or " + fixes[-1]))


def student_recipes(profile: Profile, spec: StudentSpec, names=None) -> list[Recipe]:
    """The recipes one student runs: ``names`` if given, else the student's own, else the profile's.

    Each recipe's layer mapping and relation heads are the student's (a choice stated per student).
    """
    recipes = [get_recipe(name) for name in (names or profile.for_student("recipes", spec))]
    return [r.with_(intermediate=dataclasses.replace(r.intermediate, mapping=spec.mapping,
                                                     relation_heads=spec.relation_heads))
            if r.intermediate is not None else r for r in recipes]


def applicable(recipe: Recipe, spec: StudentSpec, teacher_heads: int) -> bool:
    """Whether ``recipe`` can run for this student under a teacher of ``teacher_heads`` attention heads:
    attention maps need as many heads as the teacher's."""
    if recipe.intermediate is not None and recipe.intermediate.attention:
        return (spec.num_heads or teacher_heads) == teacher_heads
    return True


def run_config(profile: Profile, spec: StudentSpec, recipe: Recipe | str, steps: int, seed: int):
    """The :class:`~kd_tutorial.train_config.TrainConfig` of one student run."""
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    return TrainConfig(lr=profile.for_student("student_lr", spec), batch_size=profile.batch_size, max_steps=steps,
                       grad_accum=profile.grad_accum,
                       warmup_fraction=profile.warmup_fraction, weight_decay=profile.weight_decay,
                       mode=recipe.mode, temperature=profile.temperature, alpha=profile.alpha,
                       intermediate=recipe.intermediate, seed=seed, precision=profile.precision,
                       eval_every=validation_passes(profile, steps, spec)[0], keep_best=True,
                       patience=student_patience(profile, spec))


def validation_passes(profile: Profile, steps: int, spec: StudentSpec | None = None) -> tuple[int, int]:
    """``(eval_every, passes)`` of a run of ``steps`` steps: it validates every ``eval_every`` steps and after its
    last, ``passes`` times in all (fewer if patience stops it). That is ``evals_per_run`` (the student's own where
    ``spec`` sets one, else the profile's: :func:`evals_asked`) or fewer: at most one a step, and a whole number of
    steps apart (10 steps at evals_per_run=7: every 2nd, 5 passes)."""
    every = max(1, math.ceil(steps / evals_asked(profile, spec)))
    return every, math.ceil(steps / every)


def student_patience(profile: Profile, spec: StudentSpec | None = None) -> int | None:
    """``profile.patience`` in this student's passes: as long a share of its run as that many of the profile's
    ``evals_per_run`` passes (patience 2 of 3 passes is 20 of a student's own 30), so one ``--set patience=`` waits
    alike for every student; None: no early stop."""
    if profile.patience is None:
        return None
    return math.ceil(profile.patience * evals_asked(profile, spec) / profile.evals_per_run)


def evals_asked(profile: Profile, spec: StudentSpec | None = None) -> int:
    """The validation passes a run of ``spec`` asks for: its own ``evals_per_run``, else the profile's."""
    return profile.for_student("evals_per_run", spec)


# What a finished student run computes, for given settings, changes with the code now and then. Bump this when a change
# does (not for messages or speed), so that `--resume` never hands back a run trained by the older code.
# 2: an attention term trains without attention dropout, projections are drawn after the run's seed, micro-batches
#    weigh per-token terms by their share of the tokens, the labelled subset keeps each class's share.
RUN_REVISION = 2


def run_key(profile: Profile, spec: StudentSpec, config, init: str, recipe: Recipe | None = None,
            cached_layers: bool = False, spare: str | None = None, teacher_layers: int | None = None) -> tuple:
    """Everything that decides one student run (the key of its folder in the artifact cache): ``cached_layers``
    when its per-token targets come from the teacher's cached layers (bf16) instead of the teacher, ``spare`` (the
    hash of the spare reviews it learns from, :func:`spare_hash`; None: none), the code's :data:`RUN_REVISION`, and
    (``teacher_layers``: the teacher's depth) the rounding of a ``uniform`` mapping where it changed
    (:func:`_rounding_changed`)."""
    # the recipes decide no run, and a student's own evals_per_run enters as the config's eval_every, as the
    # profile's does: a run validated as often keys alike whichever asked (and keys from before the field stay)
    student = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("recipes", "evals_per_run")}
    if spec.pretrained:  # a folder by the files it holds, as a teacher folder is (a Hub name as it is): other weights
        student["pretrained"] = teacher_key(spec.pretrained)  # saved there are another start, not this run's
    if recipe is None or recipe.intermediate is None:  # which layers map weighs only the intermediate terms: a
        # baseline's key is the same whatever it is (no preset sets it, so theirs are unchanged; the relation heads
        # stay in every key, since the full profile's compact student sets them)
        student["mapping"] = StudentSpec.mapping
    for option in ("teacher_word_vectors", "spare_reviews"):
        if not student[option]:
            del student[option]  # keys from before the option existed stay valid
    if not spare:  # asked for, but not read by this run (no transfer set) or none in the source: as if off
        student.pop("spare_reviews", None)
    trained = dataclasses.asdict(config)
    if config.mode != "kd":  # T and alpha weigh only soft targets: a baseline or pseudo-label run reads neither
        trained |= {name: getattr(TrainConfig, name) for name in ("temperature", "alpha")}
    key = (student, trained, init, profile.student_labels, profile.attention_dropout, profile.freeze_word_embeddings)
    if recipe is not None:
        key += (dataclasses.asdict(recipe),) + ((AUGMENT,) if recipe.augment else ())
    key += (("teacher layers: bf16 cache",) if cached_layers else ()) + (("revision", RUN_REVISION),)
    key += (("spare reviews", spare),) if spare else ()
    if recipe is not None and recipe.intermediate is not None and _rounding_changed(spec, teacher_layers):
        key += (("uniform mapping", "rounded half up"),)
    if profile.student_hidden_dropout is not None:  # last, as docs/tuning/student_dropout.py keyed its runs (e24)
        key += (("student hidden dropout", float(profile.student_hidden_dropout)),)
    return key


def _rounding_changed(spec: StudentSpec, teacher_layers: int | None) -> bool:
    """Whether ``spec``'s ``uniform`` mapping onto ``teacher_layers`` layers rounds i T / S half up otherwise than
    Python's round (halves to even), which it used at :data:`RUN_REVISION` 2 (6 -> 4: 2, 3, 5, 6 against 2, 3, 4,
    6): such a run was trained on other layers and keys apart. Every preset maps without a half (6 -> 3, 6 -> 2,
    12 -> 6, 12 -> 4), so their keys stay as they were."""
    if spec.mapping != "uniform" or not teacher_layers or not 1 <= spec.num_layers <= teacher_layers:
        return False
    S, T = spec.num_layers, teacher_layers
    return layer_mapping("uniform", S, T) != [round(i * T / S) for i in range(1, S + 1)]


def student_labels(profile: Profile, prep) -> list[int]:
    """The rows of train whose labels the students see (:func:`kd_tutorial.data.labelled_subset`), in order."""
    return labelled_subset(prep.encoded["train"], profile.student_labels)


def uses_spare(spec: StudentSpec, prep) -> bool:
    """Whether ``spec``'s transfer set holds the spare train reviews: it asks for them and the source has some."""
    return spec.spare_reviews and prep.spare_rows() > 0


def transfer_splits(spec: StudentSpec, prep) -> tuple[str, ...]:
    """The splits whose reviews, after its labelled ones, make up ``spec``'s transfer set."""
    return ("transfer", "spare") if uses_spare(spec, prep) else ("transfer",)


def transfer_set_rows(profile: Profile, spec: StudentSpec, prep) -> int:
    """The rows a transfer-set run of ``spec`` trains on: its labelled reviews and its transfer set's
    (:func:`transfer_splits`). Every run of the student has the step budget of this many rows."""
    return len(student_labels(profile, prep)) + sum(len(prep.encoded[s]) for s in transfer_splits(spec, prep))


def run_splits(spec: StudentSpec, recipe: Recipe, prep) -> tuple[str, ...]:
    """The splits whose reviews follow the labelled ones in the rows a run of ``recipe`` trains ``spec`` on
    (:func:`transfer_splits`); ``("transfer",)`` for a recipe that reads its labelled reviews alone, which names
    the same data set (:func:`student_data`) as any run without the spare reviews."""
    return transfer_splits(spec, prep) if recipe.transfer else ("transfer",)


def spare_hash(spec: StudentSpec, recipe: Recipe, prep) -> str | None:
    """What :func:`run_key` records of the spare reviews: their hash where ``recipe`` reads the transfer set and
    ``spec`` learns from them, else None."""
    return prep.split_hash("spare") if recipe.transfer and uses_spare(spec, prep) else None


def student_data(profile: Profile, prep, logits: dict, cls: dict | None = None, splits=("transfer",)) -> dict:
    """The students' data sets: ``labelled``, ``transfer`` (labelled reviews, then those of ``splits``: the
    transfer reviews, and the spare ones for a student that learns from them) and, when ``logits`` holds
    ``"augmented"``, ``augmented`` (that transfer set + augmented copies of the transfer reviews).

    Each is ``(rows, teacher logits, teacher [CLS] states or None)``, aligned row by row.
    """
    keep = student_labels(profile, prep)
    labelled = subset_encoded(prep.encoded["train"], keep, "student labels")
    both = labelled
    for split in splits:
        both = concat_encoded(both, prep.encoded[split], "+".join(("train",) + tuple(splits)))
    both_logits = torch.cat([logits["train"][keep]] + [logits[s] for s in splits])
    cls = cls or {}
    l_cls = cls["train"][keep] if "train" in cls else None
    t_cls = torch.cat([l_cls] + [cls[s] for s in splits]) if l_cls is not None and all(s in cls for s in splits) \
        else None
    sets = {"labelled": (labelled, logits["train"][keep], l_cls), "transfer": (both, both_logits, t_cls)}
    if "augmented" in logits:
        rows, aug_logits = logits["augmented"]
        sets["augmented"] = (concat_encoded(both, rows, f"{both.name}+augmented"),
                             torch.cat([both_logits, aug_logits]), None)
    return sets


def reads_cached_layers(profile: Profile, recipe: Recipe) -> bool:
    """Whether a run of ``recipe`` reads the teacher's per-token layers from the cache (``teacher_layers="cache"``)
    rather than from the teacher at every step: its terms must allow it, and its rows be the transfer set's."""
    spec = recipe.intermediate
    return (profile.teacher_layers == "cache" and spec is not None and spec.cacheable and recipe.transfer
            and not recipe.augment)
