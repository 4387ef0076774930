"""Where things live on disk: a per-profile, per-configuration cache of the teacher and its logits.

Layout (``KD_TUTORIAL_HOME``, default ``~/.cache/kd-tutorial``)::

    <home>/<profile>/<config-hash>/teacher/        save_pretrained() of the fine-tuned teacher
                                   teacher.json    its history and validation accuracy
                                   logits-<split>.pt
                                   students/<name>-<run-hash>/model/          a distilled student
                                                             history.json    its training history (written last)
                                                             last.pt         epoch checkpoint while it trains
                                   .lock           held while anything above is written

Everything is written to a temporary name and renamed into place, so an
interrupted run never leaves a half-written artifact behind; a file lock lets
two notebooks ask for the same teacher at once (one trains, the other waits).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .profiles import Profile, stable_hash

HOME_ENV = "KD_TUTORIAL_HOME"


class ArtifactError(RuntimeError):
    """A cached artifact cannot be read (for example a corrupt file)."""
DATA_ENV = "KD_TUTORIAL_DATA_DIR"


def home() -> Path:
    """The artifact root: ``$KD_TUTORIAL_HOME``, else ``$XDG_CACHE_HOME/kd-tutorial``, else ``~/.cache/kd-tutorial``."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "kd-tutorial"


@contextlib.contextmanager
def locked(directory: Path):
    """Hold ``directory/.lock`` (a cross-process file lock) for the duration of the block."""
    from filelock import FileLock
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory / ".lock")):
        yield


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj) -> None:
    """:func:`atomic_write_text` of ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_save_pretrained(model, directory: Path) -> None:
    """``model.save_pretrained`` into a temporary folder, then swap it into ``directory``."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        model.save_pretrained(tmp)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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

    from .env import pick_device, seed_everything
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
                             seed=seed, mode="ce")
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
    from .evaluate import predict_logits
    prep = prepare(profile, data_dir=data_dir, teacher=teacher, init=init, seed=seed)
    if split not in prep.encoded:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(prep.encoded)}")
    path = prep.directory / f"logits-{split}.pt"
    if path.exists():
        return _load_logits(path, len(prep.encoded[split]))
    if teacher_model is None:
        teacher_model, _, _ = ensure_teacher(profile, data_dir=data_dir, teacher=teacher, init=init, seed=seed,
                                             device=device, progress=progress)
    with locked(prep.directory):
        if path.exists():
            return _load_logits(path, len(prep.encoded[split]))
        logits = predict_logits(teacher_model, prep.encoded[split], batch_size=profile.eval_batch_size,
                                device=device, progress=progress, desc=f"teacher logits ({split})")
        atomic_torch_save(logits, path)
        return logits


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
