"""Which student runs read the teacher's cached layers, and the cache they read (the profile's ``teacher_layers``).

With ``teacher_layers="cache"``, a run whose per-token terms (hidden states, value vectors)
allow it reads the teacher's mapped layers from a bf16 cache (:mod:`kd_tutorial.layer_cache`,
written by :func:`kd_tutorial.teachers.ensure_teacher_layers`) instead of running the teacher at
every step. This module decides which runs those are and which (kind, layer) pairs they need,
builds the cache for the students' splits when the disk has room, and lines its rows up with the
students' training rows. :mod:`kd_tutorial.pipeline` wires it in; :mod:`kd_tutorial.flops` counts it.
"""
from __future__ import annotations

import errno

from .layer_cache import LayerStates, Reservation, has_room
from .layer_maps import layer_mapping
from .plan import reads_cached_layers
from .profiles import Profile, StudentSpec
from .recipes import Recipe
from .store import disk_errors, locked, writer_tag
from .teachers import ensure_teacher_layers, layer_file, missing_layer_bytes

SPLITS = ("train", "transfer")  # what every student's transfer set reads; "spare" too for some (spare_keys)


def run_layer_keys(spec: StudentSpec, recipe: Recipe, depth: int) -> set[tuple[str, int]]:
    """The teacher's (kind, layer) pairs that one run's per-token terms read (``depth``: the teacher's layers)."""
    return set(recipe.intermediate.layer_keys(layer_mapping(spec.mapping, spec.num_layers, depth)))


def cached_layer_keys(profile: Profile, specs, recipes_of, depth: int) -> list[tuple[str, int]]:
    """Every (kind, teacher layer) that the runs reading the cache need, over the students ``specs``
    (``recipes_of(spec)``: that student's recipes; ``depth``: the teacher's number of layers)."""
    return sorted({key for spec in specs for recipe in recipes_of(spec) if reads_cached_layers(profile, recipe)
                   for key in run_layer_keys(spec, recipe, depth)})


def teacher_layer_cache(profile: Profile, prep, keys, spare_keys=(), **kw) -> dict | None:
    """The teacher's cached ``keys`` layers on train and transfer, and ``spare_keys`` (some of ``keys``: those of
    the students that learn from the spare reviews) on the spare reviews
    (:func:`kd_tutorial.teachers.ensure_teacher_layers`).

    The missing ones' disk space is reserved on every split before any split's pass runs (a pass whose other
    split then found no room would be wasted). When they do not fit on the disk, or the space is refused (a disk
    quota, a disk that filled up meanwhile), no pass runs; when a full disk refuses a pass's last flush or rename
    instead, that pass's unfinished files are dropped (those of earlier splits stay, whole). Either way a line says so,
    and only the layers cached on every split that needs them are returned (None if none): the runs that need the
    others call the teacher.
    """
    wanted = {split: sorted(keys) for split in SPLITS} | ({"spare": sorted(spare_keys)} if spare_keys else {})
    with locked(prep.directory):  # for every pass; first its clean-up: a killed pass's files still hold their size
        wanted, held = _reserve_both(profile, prep, wanted, kw["teacher_model"])
        try:
            states = _open_both(profile, wanted, held, **kw)
        finally:
            if held is not None:
                held.release()
        if states is None and wanted["train"]:  # refused after all: the space changed hands between reservations
            wanted = _cached_on_both(prep, wanted)
            _say_no_room(f"the disk of {prep.directory} refused the space for the missing ones (a disk quota, or it "
                         "filled up meanwhile)")
            states = _open_both(profile, wanted, None, **kw)
    if states is None:
        return None
    spare = f"; {', '.join(f'{k} {t}' for k, t in wanted['spare'])} on the spare reviews too" \
        if wanted.get("spare") else ""
    print(f"teacher layers: {', '.join(f'{k} {t}' for k, t in wanted['train'])} read from a bf16 cache{spare} "
          f"({cache_gb(states):.2f} GB on disk)", flush=True)
    return states


def _reserve_both(profile: Profile, prep, wanted: dict, teacher_model) -> tuple[dict, Reservation | None]:
    """``wanted`` ({split: keys}) and the disk space of their missing layers on every split, held; when it does not
    fit (with 2 GB to spare) or is refused, a line that says so, the keys cached already (:func:`_cached_on_both`),
    and nothing held."""
    need = {s: missing_layer_bytes(profile, s, keys, teacher_model=teacher_model, **prep.where)
            for s, keys in wanted.items()}
    total = sum(need.values())
    if total and not has_room(prep.directory, total):
        _say_no_room(f"{total / 1e9:.1f} GB more do not fit on the disk of {prep.directory} (2 GB must stay free)")
        return _cached_on_both(prep, wanted), None
    try:
        return wanted, Reservation(prep.directory, need, writer_tag())
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # EFBIG: FAT32, ulimit -f
            with disk_errors(prep.directory):  # a read-only folder, another refusal: one line
                raise
        why = ("a file that large is over a limit there: FAT32's 4 GB, or ulimit -f" if err.errno == errno.EFBIG
               else "a disk quota, or it filled up meanwhile")
    _say_no_room(f"the disk of {prep.directory} refused the space for the missing ones ({total / 1e9:.1f} GB; {why}), "
                 "so no layer pass ran")
    return _cached_on_both(prep, wanted), None


def _cached_on_both(prep, wanted: dict) -> dict:
    """Of ``wanted`` ({split: keys}), the keys cached on both train and transfer, and on the spare reviews those
    cached there too."""
    both = [k for k in wanted["train"] if all(layer_file(prep, k, s).exists() for s in SPLITS)]
    spare = [k for k in wanted.get("spare", ()) if k in both and layer_file(prep, k, "spare").exists()]
    return {s: both for s in SPLITS} | ({"spare": spare} if spare else {})


def _open_both(profile: Profile, wanted: dict, held: Reservation | None, **kw) -> dict | None:
    """``{split: LayerStates}`` of ``wanted`` ({split: keys}) on every split, computing the missing ones (the space
    ``held`` for a split, if any, is given back just before its pass takes it); None when there are no keys or a
    split's missing layers found no room (the splits after it are then not computed)."""
    if not wanted["train"]:
        return None
    states = {}
    for split, keys in wanted.items():
        if not keys:
            continue
        if held is not None:
            held.release(split)
        states[split] = ensure_teacher_layers(profile, split, keys, **kw)
        if states[split] is None:
            return None
    return states


def _say_no_room(why: str) -> None:
    """The one line that says the layers not cached yet will not be: why, and what it costs."""
    print(f"teacher layers: {why}: the runs that need them call the teacher at every step (slower); free some "
          "space or point KD_TUTORIAL_HOME at a disk with room to cache them", flush=True)


def cache_gb(states: dict | None) -> float:
    """Gigabytes that the cached layers ``states`` (per split) hold on disk."""
    return sum(a.nbytes for s in (states or {}).values() for part in s.parts for a in part.values()) / 1e9


def transfer_states(states: dict, labelled, splits=("transfer",)) -> LayerStates | None:
    """The cached layers in the rows of a student's ``transfer`` set: the train rows ``labelled`` (the reviews
    whose labels the students see, :func:`kd_tutorial.plan.student_labels`), then the reviews of ``splits``
    (the transfer reviews, and the spare ones for a student that learns from them); None when a split has none."""
    if not all(split in states for split in splits):
        return None
    out = states["train"].subset(labelled)
    for split in splits:
        out = out.concat(states[split])
    return out
