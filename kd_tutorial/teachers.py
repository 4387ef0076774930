"""The fine-tuned teacher and its outputs, each made once and then read from the artifact cache.

:func:`ensure_teacher` fine-tunes the profile's teacher (or loads it), and
:func:`ensure_teacher_logits` / :func:`ensure_teacher_cls` give its logits and
[CLS] states on a split, computed in one pass and cached, so that every student
and notebook distils the same targets. :func:`ensure_teacher_layers` caches the
per-token layers that intermediate recipes read, in bf16, where the profile asks, in the pass that gives the
logits when those are not cached yet. Where they live on disk is
:mod:`kd_tutorial.artifacts`'s job; how the teacher trains is :mod:`kd_tutorial.train`'s.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from .artifacts import ArtifactError, prepare
from .device import pick_device
from .errors import DISK_FULL, UserError, error_cause as _cause
from .evaluate import predict_logits
from .layer_cache import LayerStates, LayerWriter, has_room, nbytes
from .models import check_positions, check_same_vocab, name_classes, teacher_for_profile
from .profiles import check_profile, Profile, stable_hash
from .store import (atomic_save_pretrained, atomic_torch_save, atomic_write_json, disk_errors, locked,
                    move_aside, writer_tag)
from .seeding import kept_rng, seed_everything
from .train import freeze, train
from .train_config import TrainConfig


def ensure_teacher(profile: Profile, *, data_dir: str | None = None, teacher: str | None = None,
                   init: str = "pretrained", seed: int = 0, device: str | None = None,
                   progress: bool = True):
    """The profile's fine-tuned teacher: trained once, then loaded from the artifact cache.

    Returns ``(teacher, prepared, info)``; ``info`` holds the training history,
    the validation accuracy and whether it was ``"trained"`` or ``"cached"``.
    The teacher comes back in ``eval()`` mode with gradients off: it is frozen.
    """
    check_profile(profile, "ensure_teacher")
    prep = prepare(profile, data_dir=data_dir, teacher=teacher, init=init, seed=seed)
    device = device or pick_device()
    folder = prep.directory
    with locked(folder):
        cached = _cached_teacher(folder)
        if cached is not None:
            model, info = cached  # one cached before teachers named their classes is named now
            return freeze(name_classes(model).to(device)), prep, info
        before = _recorded_weights(folder)  # the teacher this folder held, if its outputs outlived it
        elsewhere = _trained_elsewhere(prep)
        if elsewhere is not None:
            return _keep_copy(folder, prep, *elsewhere, before=before, device=device)
        with kept_rng():  # the caller draws the same numbers after a teacher trained now as after a cached one
            seed_everything(seed)  # the same seed gives the same teacher, run after run (with the same threads)
            model = teacher_for_profile(profile, init=init, teacher=teacher)
            check_same_vocab(model, prep.tokenizer)  # refuse before spending any time on training
            check_positions(model.config.max_position_embeddings, profile.max_length)  # a Hub teacher's, once loaded
            config = TrainConfig(epochs=profile.teacher_epochs, lr=profile.teacher_lr, batch_size=profile.batch_size,
                                 warmup_fraction=profile.warmup_fraction, weight_decay=profile.weight_decay,
                                 seed=seed, mode="ce", grad_accum=profile.grad_accum, precision=profile.precision)
            history = train(model, prep.encoded["train"], config=config, val_data=prep.encoded["validation"],
                            device=device, checkpoint_dir=folder / "teacher-checkpoint", resume=True,
                            desc=f"teacher ({profile.name} profile)", progress=progress)
        weights = weights_hash(model)
        if before != weights:
            set_aside_outputs(folder)
        # the old teacher's record goes first: a save cut short (Ctrl-C, a full disk) never leaves the new weights
        # beside it, taken for cached with another teacher's history, accuracy and weights hash
        (folder / "teacher.json").unlink(missing_ok=True)
        atomic_save_pretrained(model, folder / "teacher")
        info = {"history": history.to_dict(), "val_accuracy": history.final("val_acc"),
                "train_seconds": history.seconds, "profile": profile.name, "data": prep.data.source,
                "weights": weights}
        atomic_write_json(folder / "teacher.json", info | {"trained_on": prep.teacher_inputs})
        shutil.rmtree(folder / "teacher-checkpoint", ignore_errors=True)
        return freeze(model), prep, info | {"status": "trained", "path": str(folder / "teacher")}


def _trained_elsewhere(prep):
    """``(model, info, its folder)`` of the same teacher fine-tuned in another folder of this profile, one whose
    data differ in the transfer set alone (:attr:`~kd_tutorial.artifacts.Prepared.teacher_inputs`), its weights
    checked against their recorded hash; None when there is none."""
    from transformers import BertForSequenceClassification
    here, wanted = prep.directory, prep.teacher_inputs
    for meta in sorted(here.parent.glob("*/teacher.json")):
        with contextlib.suppress(Exception):  # a record or a teacher being written, or unreadable: not this one
            info = json.loads(meta.read_text())
            if meta.parent != here and info.get("trained_on") == wanted:
                model = BertForSequenceClassification.from_pretrained(meta.parent / "teacher")
                if weights_hash(model) == info.get("weights"):
                    return model, info, meta.parent
    return None


def _keep_copy(folder: Path, prep, model, info: dict, source: Path, *, before: str | None, device: str):
    """Store the teacher that :func:`_trained_elsewhere` found in ``source`` in ``folder``, as
    :func:`ensure_teacher` stores one it trained, and return what that returns (``"cached"``, ``copied_from``)."""
    if before != info["weights"]:
        set_aside_outputs(folder)
    (folder / "teacher.json").unlink(missing_ok=True)
    atomic_save_pretrained(model, folder / "teacher")
    info = info | {"data": prep.data.source, "trained_on": prep.teacher_inputs, "copied_from": str(source)}
    atomic_write_json(folder / "teacher.json", info)
    print(f"teacher: fine-tuned before on the same reviews with the same settings (another transfer set), in "
          f"{source}: copied, not trained again", flush=True)
    return freeze(name_classes(model).to(device)), prep, info | {"status": "cached", "path": str(folder / "teacher")}


def _cached_teacher(folder: Path):
    """``(model, info)`` of the teacher cached in ``folder``, or None when there is none to load."""
    from transformers import BertForSequenceClassification
    meta_path = folder / "teacher.json"
    if not (meta_path.exists() and (folder / "teacher").exists()):
        return None
    try:
        info = json.loads(meta_path.read_text())
        if not isinstance(info, dict):  # JSON, but not the record this code writes ([], a number)
            raise ValueError(f"it holds a JSON {type(info).__name__}, not an object")
    except Exception as err:
        raise ArtifactError(f"cannot read {meta_path} ({_cause(err)}): delete it and run again (the "
                            "teacher is trained again; what was cached from the old one is kept if the new one has "
                            "the same weights, and set aside if not)") from err
    try:
        model = BertForSequenceClassification.from_pretrained(folder / "teacher")
    except Exception as err:
        raise ArtifactError(f"cannot read the cached teacher in {folder} ({_cause(err)}): delete "
                            f"{folder / 'teacher'} and run again (the teacher is retrained; what was cached from "
                            "the old one is kept if the new one has the same weights, and set aside if not)") from err
    return model, info | {"status": "cached", "path": str(folder / "teacher")}


def weights_hash(model) -> str:
    """A short SHA-256 of a model's parameters and buffers, name by name: equal only for bit-identical weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _recorded_weights(folder: Path) -> str | None:
    """The weights hash of the teacher whose outputs ``folder`` holds: from ``teacher.json``, or computed from a
    teacher left without it; None when neither can say (or when the teacher predates the hash)."""
    with contextlib.suppress(Exception):
        recorded = json.loads((folder / "teacher.json").read_text()).get("weights")
        if recorded:
            return recorded
    with contextlib.suppress(Exception):
        from transformers import BertForSequenceClassification
        return weights_hash(BertForSequenceClassification.from_pretrained(folder / "teacher"))
    return None


def check_given_teacher(folder: Path, model) -> None:
    """Refuse a model that is not the teacher ``folder`` holds (its weights hash differs from the recorded one),
    given to cache or read the teacher's outputs: cached, they would be taken as the teacher's by every student
    trained later; read, the cached teacher's would be handed to another model's run, and mixed with its own."""
    recorded = _recorded_weights(folder)
    if recorded is not None and weights_hash(model) != recorded:
        raise UserError(f"the teacher_model given is not the teacher cached in {folder} (other weights), so its "
                        "outputs and the cached teacher's would be taken for one another: pass the model "
                        "ensure_teacher returns, or leave teacher_model out")


def files_from_the_teacher(folder: Path) -> list[Path]:
    """What ``folder`` holds that was computed from its teacher: logits, [CLS] states, layers and students."""
    found = [p for pattern in ("logits-*.pt", "cls-*.pt", "*.npy") for p in sorted(folder.glob(pattern))]
    return found + ([folder / "students"] if (folder / "students").exists() else [])


def set_aside_outputs(folder: Path) -> Path | None:
    """Move ``folder``'s outputs of a teacher that is gone (:func:`files_from_the_teacher`) into
    ``folder/stale-<time>-*``, so that a different teacher never meets them, and say so; None when there were none.
    Nothing is deleted."""
    outputs = files_from_the_teacher(folder)
    if not outputs:
        return None
    aside = move_aside(folder, outputs, "stale")
    print(f"the retrained teacher differs from the one whose logits, layers and students were cached in {folder}: "
          f"they were moved to {aside} (delete it when you no longer need them)", file=sys.stderr, flush=True)
    return aside


def ensure_teacher_logits(profile: Profile, split: str, *, teacher_model=None, data_dir: str | None = None,
                          teacher: str | None = None, init: str = "pretrained", seed: int = 0,
                          device: str | None = None, progress: bool = True) -> torch.Tensor:
    """The teacher's logits on ``split`` (train / validation / test / transfer), computed once and cached.

    Every student and notebook reuses the same tensor instead of calling the
    teacher at every step. Row ``i`` belongs to review ``i`` of the split.
    """
    check_profile(profile, "ensure_teacher_logits")
    return _teacher_pass(profile, split, "logits", teacher_model=teacher_model, data_dir=data_dir, teacher=teacher,
                         init=init, seed=seed, device=device, progress=progress)


def ensure_teacher_cls(profile: Profile, split: str, *, teacher_model=None, data_dir: str | None = None,
                       teacher: str | None = None, init: str = "pretrained", seed: int = 0,
                       device: str | None = None, progress: bool = True) -> torch.Tensor:
    """The teacher's [CLS] state after every layer on ``split``, ``[N, layers + 1, H]`` in float16, cached.

    Patient KD matches these; they come from the same pass as the logits (a
    review's per-token states are ``L`` times larger: those are computed online,
    or cached only for the mapped layers, see :func:`ensure_teacher_layers`).
    """
    check_profile(profile, "ensure_teacher_cls")
    return _teacher_pass(profile, split, "cls", teacher_model=teacher_model, data_dir=data_dir, teacher=teacher,
                         init=init, seed=seed, device=device, progress=progress)


def ensure_teacher_logits_on(profile: Profile, name: str, encoded, *, teacher_model, data_dir: str | None = None,
                             teacher: str | None = None, init: str = "pretrained", seed: int = 0,
                             device: str | None = None, progress: bool = True) -> torch.Tensor:
    """The teacher's logits on reviews that are not one of the profile's splits (e.g. augmented copies).

    Cached like a split's, under ``name`` and a hash of the rows themselves, so other rows never meet
    stale logits.
    """
    check_profile(profile, "ensure_teacher_logits_on")
    key = stable_hash(encoded.input_ids)
    return _teacher_pass(profile, f"{name}-{key}", "logits", teacher_model=teacher_model, data_dir=data_dir,
                         teacher=teacher, init=init, seed=seed, device=device, progress=progress, encoded=encoded)


def _split_of(prep, split: str):
    """``prep``'s encoded ``split`` (the spare reviews tokenized on first need), refused in one line, naming the
    splits it has, when it has no such split."""
    if split == "spare":
        prep.spare_rows()
    if split not in prep.encoded:  # spare is named before it is first tokenized too: the message never varies
        names = list(prep.encoded) + ["spare"] * ("spare" not in prep.encoded)
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(names)}")
    return prep.encoded[split]


def _teacher_pass(profile: Profile, split: str, what: str, *, teacher_model, data_dir, teacher, init, seed,
                  device, progress, encoded=None) -> torch.Tensor:
    """Load ``what`` ("logits" or "cls") of ``split`` from the cache, or run the teacher once and store both."""
    prep = prepare(profile, data_dir=data_dir, teacher=teacher, init=init, seed=seed)
    encoded = _split_of(prep, split) if encoded is None else encoded  # given: reviews that are no split of prep's
    rows = len(encoded)
    path = _output_files(prep, split)
    width = 2 if what == "logits" else None  # the course's two classes
    given = teacher_model is not None
    if given:  # cached or not: another model's outputs, or the cached teacher's handed to another model, are refused
        check_given_teacher(prep.directory, teacher_model)
    if path[what].exists():
        return load_cached_logits(path[what], rows, width)
    if not given:
        teacher_model, _, _ = ensure_teacher(profile, data_dir=data_dir, teacher=teacher, init=init, seed=seed,
                                             device=device, progress=progress)
    with locked(prep.directory):
        if path[what].exists():
            return load_cached_logits(path[what], rows, width)
        _store_outputs(path, *predict_logits(teacher_model, encoded, batch_size=profile.eval_batch_size,
                                             device=device, precision=profile.precision, progress=progress,
                                             desc=f"teacher logits ({split})", cls_states=True))
        return load_cached_logits(path[what], rows, width)


def _output_files(prep, split: str) -> dict:
    """Where the teacher's logits and [CLS] states on ``split`` are cached: ``{"logits": path, "cls": path}``."""
    return {k: prep.split_file(k, split) for k in ("logits", "cls")}


def _store_outputs(path: dict, logits: torch.Tensor, cls: torch.Tensor) -> None:
    """Cache one pass's logits and [CLS] states (``path``: their files); logits already cached stay as they are,
    since students were trained on them."""
    atomic_torch_save(cls, path["cls"])
    if not path["logits"].exists():
        atomic_torch_save(logits, path["logits"])


def ensure_teacher_layers(profile: Profile, split: str, keys, *, teacher_model, data_dir: str | None = None,
                          teacher: str | None = None, init: str = "pretrained", seed: int = 0,
                          device: str | None = None, progress: bool = True) -> LayerStates | None:
    """The teacher's ``keys`` layers on ``split`` (``("hidden", t)``, ``("values", t)``), in bf16, computed in
    one pass and cached (:mod:`kd_tutorial.layer_cache`); row ``i`` belongs to review ``i`` of the split.

    The same pass gives the teacher's logits and [CLS] states: when the split's are not cached yet, they are
    cached too (:func:`ensure_teacher_logits` then reads them, with no pass of its own). ``None``, with nothing
    written, when the missing layers would not fit on the cache's disk or their space is refused (a full disk, a
    quota), or with only whole files written when the disk refuses the pass's last flush or a rename for want of
    room (:func:`_closed`): :func:`kd_tutorial.teacher_layers.teacher_layer_cache` then says so and reads those
    cached.
    """
    check_profile(profile, "ensure_teacher_layers")
    prep = prepare(profile, data_dir=data_dir, teacher=teacher, init=init, seed=seed)
    encoded = _split_of(prep, split)
    paths = {key: layer_file(prep, key, split) for key in sorted(set(keys))}
    with locked(prep.directory):
        check_given_teacher(prep.directory, teacher_model)  # also when every layer is cached: they are its own
        missing, shape = _missing_layers(prep, split, keys, teacher_model.config.hidden_size)
        if missing:
            if not has_room(prep.directory, nbytes(*shape, missing)):
                return None
            try:
                writer = LayerWriter(missing, *shape, tag=writer_tag())
            except OSError as err:  # the space could not be reserved after all: the runs call the teacher
                if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    return None
                with disk_errors(prep.directory):  # a read-only folder, another refusal: one line
                    raise
            try:
                outputs = _layer_pass(teacher_model, encoded, writer, batch_size=profile.eval_batch_size,
                                      device=device or pick_device(), precision=profile.precision, progress=progress,
                                      desc=f"teacher layers ({split})")
                if not _closed(writer, prep.directory):
                    return None
            except BaseException:  # an error or Ctrl-C: no half-written file stays behind (those renamed are whole)
                writer.discard()
                raise
            path = _output_files(prep, split)
            if not all(p.exists() for p in path.values()):
                _store_outputs(path, *outputs)
        states = _open_layers(prep, paths, teacher_model.config.num_hidden_layers)
        _check_layer_files(states, paths, (len(encoded), max(map(len, encoded.input_ids), default=0),
                                           teacher_model.config.hidden_size))
    if len(states) != len(encoded):
        raise ArtifactError(f"the cached teacher layers in {prep.directory} have {len(states)} rows for "
                            f"{len(encoded)} reviews: delete its .npy files and run again")
    return states


def _closed(writer: LayerWriter, folder: Path) -> bool:
    """Close ``writer`` (its last flush and renames): False when a full disk or a quota refused that (where its space
    was not reserved up front, as on macOS, or a copy-on-write file system needs new blocks), its unfinished files
    removed and those moved into place before kept (whole: every one is flushed first), so that the runs that need
    the rest call the teacher; any other refusal is one StorageError line."""
    try:
        writer.close()
    except OSError as err:
        if err.errno not in DISK_FULL:
            with disk_errors(folder):
                raise
        writer.discard()
        return False
    return True


def _check_layer_files(states: LayerStates, paths: dict, shape: tuple[int, int, int]) -> None:
    """An ArtifactError naming the one file to delete when a cached layer is not the int16 (bf16 bits) array of
    ``shape`` (reviews, longest review, the teacher's width) this code writes: read as it is, a shorter one gives
    zeros as targets past its end, a float16 one garbage."""
    for key, path in paths.items():
        array = states.parts[0][key]
        if array.dtype != np.int16 or array.shape != shape:
            raise ArtifactError(f"the cached teacher layer {path} holds {array.dtype} {tuple(array.shape)}, not "
                                f"int16 {shape}: delete that file and run again (the next run computes it)")


def layer_file(prep, key, split: str) -> Path:
    """Where the teacher's cached layer ``key`` (``("hidden", 4)``) of ``split`` lives: ``hidden-4-<split>.npy``."""
    return prep.split_file(f"{key[0]}-{key[1]}", split).with_suffix(".npy")


def missing_layer_bytes(profile: Profile, split: str, keys, *, teacher_model, data_dir: str | None = None,
                        teacher: str | None = None, init: str = "pretrained", seed: int = 0) -> int:
    """Bytes on disk that the layers ``keys`` of ``split`` not cached yet would take."""
    prep = prepare(profile, data_dir=data_dir, teacher=teacher, init=init, seed=seed)
    _split_of(prep, split)
    missing, shape = _missing_layers(prep, split, keys, teacher_model.config.hidden_size)
    return nbytes(*shape, missing)


def _missing_layers(prep, split: str, keys, width: int) -> tuple[dict, tuple[int, int, int]]:
    """The layers ``keys`` of ``split`` not cached yet, ``{key: file}``, and the shape of each one's array:
    (reviews, longest review or 0 when none is missing, ``width``)."""
    encoded = prep.encoded[split]
    missing = {key: path for key in sorted(set(keys)) if not (path := layer_file(prep, key, split)).exists()}
    return missing, (len(encoded), max(map(len, encoded.input_ids)) if missing else 0, width)


def _open_layers(prep, paths: dict, depth: int) -> LayerStates:
    try:
        return LayerStates.open(paths, depth)
    except Exception as err:
        raise ArtifactError(f"cannot read the cached teacher layers in {prep.directory} "
                            f"({_cause(err)}): delete its .npy files and run again") from err


def _layer_pass(teacher_model, encoded, writer: LayerWriter, *, batch_size: int, device: str, precision: str,
                progress: bool, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass of the frozen teacher over ``encoded`` (in the training loop's precision), writing the layers
    ``writer`` asks for; returns the pass's logits and [CLS] states (:func:`kd_tutorial.evaluate.predict_logits`)."""
    def write(index, out):
        for what, t in writer.paths:
            writer.write((what, t), index, out.hidden[t] if what == "hidden" else out.values[t - 1])
    return predict_logits(teacher_model, encoded, batch_size=batch_size, device=device, precision=precision,
                          progress=progress, desc=desc, cls_states=True,
                          values=any(what == "values" for what, _ in writer.paths), on_batch=write)


def load_cached_logits(path: Path, rows: int, width: int | None = None) -> torch.Tensor:
    """A cached output (a teacher's logits or [CLS] states, a student's test logits), checked by
    :func:`_wrong_output`; an ArtifactError that names the file to delete otherwise (the next run computes it
    again)."""
    try:
        logits = torch.load(path)
    except Exception as err:
        raise ArtifactError(f"cannot read cached logits {path} ({_cause(err)}): delete the file "
                            "and run again") from err
    wrong = _wrong_output(logits, rows, width)
    if wrong:
        raise ArtifactError(f"cached logits {path} {wrong}: delete the file and run again")
    return logits


def _wrong_output(value, rows: int, width: int | None) -> str:
    """What is wrong with a cached teacher output, in a few words; "" when it is a finite tensor of ``rows`` rows,
    ``(rows, width)`` when a width is given (logits; [CLS] states are ``(rows, layers, hidden)``)."""
    if not isinstance(value, torch.Tensor) or value.dim() != (2 if width is not None else 3):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else ""
        wanted = f"a table of {rows} rows" if width is not None else "(rows, layers, hidden)"
        return f"hold {type(value).__name__}{shape}, not {wanted}"
    if value.shape[0] != rows:
        return f"have {value.shape[0]} rows for {rows} reviews"
    if width is not None and value.shape[1] != width:
        return f"have {value.shape[1]} columns for {width} classes"
    if not torch.isfinite(value).all():
        return "hold NaN or infinite values"
    return ""
