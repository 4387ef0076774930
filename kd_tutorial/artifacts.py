"""The artifact cache: a profile's data, its fine-tuned teacher, the teacher's outputs, and the students.

Layout (``KD_TUTORIAL_HOME``, default ``~/.cache/kd-tutorial``)::

    <home>/<profile>/<config-hash>/teacher/        save_pretrained() of the fine-tuned teacher
                                   teacher.json    its history and validation accuracy
                                   logits-<split>.pt, cls-<split>.pt   its logits and [CLS] states (one pass)
                                   logits-augmented-<hash>.pt          its logits on augmented reviews
                                   students/<name>-<run-hash>/model/          a distilled student
                                                             history.json    its training history (written last)
                                                             last.pt         checkpoint while it trains
                                   .lock           held while anything above is written

Writes go through :mod:`kd_tutorial.store` (atomic, file-locked): an interrupted
run never leaves a half-written artifact behind, and two notebooks can ask for
the same teacher at once (one trains, the other waits).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .profiles import Profile, stable_hash

from .store import ArtifactError, atomic_save_pretrained, atomic_torch_save, atomic_write_json, home, locked

DATA_ENV = "KD_TUTORIAL_DATA_DIR"


# --------------------------------------------------------------------------- the prepared data


@dataclass
class Prepared:
    """A profile's data, tokenizer and tokenized splits, built once per process."""

    profile: Profile
    data: object  # data.ImdbData
    tokenizer: object
    encoded: dict  # split name -> data.Encoded
    data_key: str
    teacher_name: str
    init: str
    seed: int

    @property
    def directory(self) -> Path:
        """This configuration's artifact folder: the profile, the teacher, and a fingerprint of the data."""
        key = self.profile.teacher_hash(self.data_key, self.teacher_name, self.init, self.seed, self.fingerprint)
        return home() / self.profile.name / key

    @property
    def where(self) -> dict:
        """The keyword arguments that find this data again (``ensure_teacher_logits(profile, split, **where)``)."""
        return {"data_dir": None if self.data_key == self.profile.data_source else self.data_key,
                "teacher": self.teacher_name, "init": self.init, "seed": self.seed}

    @property
    def fingerprint(self) -> str:
        """A hash of every split's token ids and labels: changed data never meets stale logits."""
        if not hasattr(self, "_fingerprint"):
            h = hashlib.sha256()
            for name in sorted(self.encoded):
                enc = self.encoded[name]
                h.update(name.encode())
                h.update(json.dumps(enc.input_ids).encode())
                h.update(enc.labels.numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


def data_key(profile: Profile, data_dir: str | None) -> str:
    """Which data a run reads: an explicit folder, ``$KD_TUTORIAL_DATA_DIR``, or the profile's source."""
    data_dir = data_dir or os.environ.get(DATA_ENV)
    return str(Path(data_dir).expanduser().resolve()) if data_dir else profile.data_source


_PREPARED: dict[tuple, Prepared] = {}


def _prepare(profile: Profile, key: str, teacher_name: str, init: str, seed: int) -> Prepared:
    from . import data as D
    from .models import TINY_TEACHER, resolve_source
    data_dir = None if key == profile.data_source else key
    imdb = D.load_for_profile(profile, data_dir=data_dir, seed=seed)
    tok_source = None if teacher_name == TINY_TEACHER else resolve_source(teacher_name, profile.teacher_fallback)
    tokenizer = D.get_tokenizer(tok_source)
    encoded = {name: D.encode(getattr(imdb, name), tokenizer, profile.max_length, profile.truncation)
               for name in ("train", "validation", "test", "transfer")}
    return Prepared(profile, imdb, tokenizer, encoded, key, teacher_name, init, seed)


def prepare(profile: Profile, *, data_dir: str | None = None, teacher: str | None = None,
            init: str = "pretrained", seed: int = 0) -> Prepared:
    """Load and tokenize a profile's data (cached in this process)."""
    args = (profile, data_key(profile, data_dir), teacher or profile.teacher, init, seed)
    cache_key = (profile.config_hash(),) + args[1:]
    if cache_key not in _PREPARED:
        _PREPARED[cache_key] = _prepare(*args)
    return _PREPARED[cache_key]


# --------------------------------------------------------------------------- teacher and logits


def ensure_teacher(profile: Profile, *, data_dir: str | None = None, teacher: str | None = None,
                   init: str = "pretrained", seed: int = 0, device: str | None = None,
                   progress: bool = True):
    """The profile's fine-tuned teacher: trained once, then loaded from the artifact cache.

    Returns ``(teacher, prepared, info)``; ``info`` holds the training history,
    the validation accuracy and whether it was ``"trained"`` or ``"cached"``.
    The teacher comes back in ``eval()`` mode with gradients off: it is frozen.
    """
    from transformers import BertForSequenceClassification

    from .device import pick_device
    from .train import seed_everything
    from .models import check_same_vocab, teacher_for_profile
    from .train import TrainConfig, freeze, train
    prep = prepare(profile, data_dir=data_dir, teacher=teacher, init=init, seed=seed)
    device = device or pick_device()
    folder = prep.directory
    with locked(folder):
        meta_path = folder / "teacher.json"
        if meta_path.exists() and (folder / "teacher").exists():
            model = BertForSequenceClassification.from_pretrained(folder / "teacher")
            info = json.loads(meta_path.read_text()) | {"status": "cached", "path": str(folder / "teacher")}
            return freeze(model.to(device)), prep, info
        seed_everything(seed)  # the same seed gives the same teacher, run after run
        model = teacher_for_profile(profile, init=init, teacher=teacher)
        check_same_vocab(model, prep.tokenizer)  # refuse before spending any time on training
        config = TrainConfig(epochs=profile.teacher_epochs, lr=profile.teacher_lr, batch_size=profile.batch_size,
                             warmup_fraction=profile.warmup_fraction, weight_decay=profile.weight_decay,
                             seed=seed, mode="ce", grad_accum=profile.grad_accum, precision=profile.precision)
        history = train(model, prep.encoded["train"], config=config, val_data=prep.encoded["validation"],
                        device=device, checkpoint_dir=folder / "teacher-checkpoint", resume=True,
                        desc=f"teacher ({profile.name})", progress=progress)
        atomic_save_pretrained(model, folder / "teacher")
        info = {"history": history.to_dict(), "val_accuracy": history.final("val_acc"),
                "train_seconds": history.seconds, "profile": profile.name, "data": prep.data.source}
        atomic_write_json(meta_path, info)
        shutil.rmtree(folder / "teacher-checkpoint", ignore_errors=True)
        return freeze(model), prep, info | {"status": "trained", "path": str(folder / "teacher")}


def ensure_teacher_logits(profile: Profile, split: str, *, teacher_model=None, data_dir: str | None = None,
                          teacher: str | None = None, init: str = "pretrained", seed: int = 0,
                          device: str | None = None, progress: bool = True) -> torch.Tensor:
    """The teacher's logits on ``split`` (train / validation / test / transfer), computed once and cached.

    Every student and notebook reuses the same tensor instead of calling the
    teacher at every step. Row ``i`` belongs to review ``i`` of the split.
    """
    return _teacher_pass(profile, split, "logits", teacher_model=teacher_model, data_dir=data_dir, teacher=teacher,
                         init=init, seed=seed, device=device, progress=progress)


def ensure_teacher_cls(profile: Profile, split: str, *, teacher_model=None, data_dir: str | None = None,
                       teacher: str | None = None, init: str = "pretrained", seed: int = 0,
                       device: str | None = None, progress: bool = True) -> torch.Tensor:
    """The teacher's [CLS] state after every layer on ``split``, ``[N, layers + 1, H]`` in float16, cached.

    Patient KD matches these; they come from the same pass as the logits (a
    review's per-token states would be ``L`` times larger: those are computed
    online instead, see :mod:`kd_tutorial.recipes`).
    """
    return _teacher_pass(profile, split, "cls", teacher_model=teacher_model, data_dir=data_dir, teacher=teacher,
                         init=init, seed=seed, device=device, progress=progress)


def ensure_teacher_logits_on(profile: Profile, name: str, encoded, *, teacher_model, data_dir: str | None = None,
                             teacher: str | None = None, init: str = "pretrained", seed: int = 0,
                             device: str | None = None, progress: bool = True) -> torch.Tensor:
    """The teacher's logits on reviews that are not one of the profile's splits (e.g. augmented copies).

    Cached like a split's, under ``name`` and a hash of the rows themselves, so other rows never meet
    stale logits.
    """
    key = stable_hash(encoded.input_ids)
    return _teacher_pass(profile, f"{name}-{key}", "logits", teacher_model=teacher_model, data_dir=data_dir,
                         teacher=teacher, init=init, seed=seed, device=device, progress=progress, encoded=encoded)


def _teacher_pass(profile: Profile, split: str, what: str, *, teacher_model, data_dir, teacher, init, seed,
                  device, progress, encoded=None) -> torch.Tensor:
    """Load ``what`` ("logits" or "cls") of ``split`` from the cache, or run the teacher once and store both."""
    from .evaluate import predict_logits
    prep = prepare(profile, data_dir=data_dir, teacher=teacher, init=init, seed=seed)
    if encoded is None and split not in prep.encoded:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(prep.encoded)}")
    encoded = prep.encoded[split] if encoded is None else encoded
    rows = len(encoded)
    path = {k: prep.directory / f"{k}-{split}.pt" for k in ("logits", "cls")}
    if path[what].exists():
        return _load_logits(path[what], rows)
    if teacher_model is None:
        teacher_model, _, _ = ensure_teacher(profile, data_dir=data_dir, teacher=teacher, init=init, seed=seed,
                                             device=device, progress=progress)
    with locked(prep.directory):
        if path[what].exists():
            return _load_logits(path[what], rows)
        logits, cls = predict_logits(teacher_model, encoded, batch_size=profile.eval_batch_size,
                                     device=device, progress=progress, desc=f"teacher logits ({split})",
                                     cls_states=True)
        atomic_torch_save(cls, path["cls"])
        if not path["logits"].exists():  # logits already cached stay as they are: students were trained on them
            atomic_torch_save(logits, path["logits"])
        return _load_logits(path[what], rows)


def _load_logits(path: Path, rows: int) -> torch.Tensor:
    try:
        logits = torch.load(path)
    except Exception as err:
        raise ArtifactError(f"cannot read cached logits {path} ({err.__class__.__name__}): delete the file "
                            "and run again") from err
    if logits.shape[0] != rows:
        raise ArtifactError(f"cached logits {path} have {logits.shape[0]} rows for {rows} reviews: delete the "
                            "file and run again")
    return logits


# --------------------------------------------------------------------------- students


def student_folder(prep: Prepared, name: str, *key_parts) -> Path:
    """The cache folder of one student run, under its teacher's folder.

    ``key_parts`` are everything that decides the run (its spec, training
    configuration, initialisation...): another setting gets another folder.
    """
    slug = name.replace(" ", "_").replace("+", "-")
    return prep.directory / "students" / f"{slug}-{stable_hash(*key_parts)}"


def load_student(folder: Path):
    """``(model, history)`` of a finished student in ``folder``, or None when it is not (fully) there."""
    from transformers import BertForSequenceClassification

    from .train import History
    if not (folder / "history.json").exists() or not (folder / "model" / "config.json").exists():
        return None
    try:
        history = History.from_dict(json.loads((folder / "history.json").read_text()))
        return BertForSequenceClassification.from_pretrained(folder / "model"), history
    except Exception as err:
        raise ArtifactError(f"cannot read the cached student in {folder} ({err.__class__.__name__}): delete the "
                            "folder and run again") from err


def save_student(folder: Path, model, history) -> None:
    """Store a finished student: the model, then its history (the marker that it is complete)."""
    atomic_save_pretrained(model, folder / "model")
    atomic_write_json(folder / "history.json", history.to_dict())
    with contextlib.suppress(FileNotFoundError):
        (folder / "last.pt").unlink()  # the epoch checkpoint is not needed once the run is finished


def cache_status(profile: Profile) -> dict:
    """What the profile needs from the Hub, and whether each piece is cached locally (or built in)."""
    from .models import TINY_TEACHER, fallback_path
    needs = {}
    if profile.teacher == TINY_TEACHER:
        needs[profile.teacher] = "built in"
    else:
        needs[profile.teacher] = _hub_cached(profile.teacher, "model")
        if needs[profile.teacher] != "cached" and fallback_path(profile.teacher_fallback):
            needs[profile.teacher] = f"offline copy from {profile.teacher_fallback}"
    for spec in profile.students:
        if spec.pretrained:
            needs[spec.pretrained] = _hub_cached(spec.pretrained, "model")
    if profile.data_source == "tiny":
        needs["data"] = "built in"
    elif os.environ.get(DATA_ENV):
        needs["data"] = f"local folder {os.environ[DATA_ENV]}"
    else:
        needs["stanfordnlp/imdb"] = _hub_cached("stanfordnlp/imdb", "dataset")
    return needs


def _hub_cached(repo_id: str, repo_type: str) -> str:
    try:
        from huggingface_hub import scan_cache_dir
        for repo in scan_cache_dir().repos:
            if repo.repo_id == repo_id and repo.repo_type == repo_type:
                return "cached"
    except Exception:  # an empty or missing cache folder
        pass
    return "missing (run `kd-tutorial prefetch`)"
