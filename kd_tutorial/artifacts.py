"""The artifact cache: where each artifact of a configuration lives, its tokenized data, and its students.

Layout (``KD_TUTORIAL_HOME``, default ``$XDG_CACHE_HOME/kd-tutorial``, else ``~/.cache/kd-tutorial``)::

    <home>/<profile>/<config-hash>/teacher/        save_pretrained() of the fine-tuned teacher
                                   teacher.json    its history, validation accuracy, weights hash and what
                                                   it was fine-tuned on (a folder whose data differ in the
                                                   transfer set alone copies that teacher, not retrains it)
                                   logits-<split>.pt, cls-<split>.pt   its logits and [CLS] states (one pass;
                                                                       the test split's names add a hash of its reviews)
                                   logits-augmented-<hash>.pt          its logits on augmented reviews
                                   hidden-<t>-<split>.npy, values-<t>-<split>.npy   its mapped layers (bf16)
                                   students/<name>-<run-hash>/model/          a distilled student
                                                             history.json    its training history (written last)
                                                             logits-test-<hash>-<run>.pt   its logits on the test split
                                                             last.pt         checkpoint while it trains
                                   .lock           held while anything above is written
                                   stale-<time>-*/ what a teacher retrained with other weights found
                                                   here (set aside, never deleted)

This module names the folders (keyed by everything that decides what is in
them), memoises a profile's tokenized data per process, and stores and loads
students. What fills the teacher's part is :mod:`kd_tutorial.teachers`. Writes go
through :mod:`kd_tutorial.store` (atomic, file-locked): an interrupted run never
leaves a half-written artifact behind, and two notebooks can ask for the same
teacher at once (one trains, the other waits).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .data import (check_data_readable, DATA_DIR_ENV, DataSourceError, encode, get_tokenizer, HUB_DATASET,
                   load_for_profile, NAMED_SOURCES, prepared_hub_copy)
from .errors import error_cause as _cause, ModelSourceError, SETUP_MIRRORS
from .history import History
from .models import fallback_for, fallback_path, name_classes, prefetch_hint, resolve_source, TINY_TEACHER
from .profiles import check_profile, Profile, stable_hash
from .store import ArtifactError, atomic_save_pretrained, atomic_write_json, home


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
    teacher_id: str = ""  # teacher_key(teacher_name), taken once when prepared: a folder's files may change later

    @property
    def directory(self) -> Path:
        """This configuration's artifact folder: the profile, the teacher, and a fingerprint of the data.

        A local folder is keyed by what it holds, not where it lies: a data folder moved or copied elsewhere (an
        instructor's prefetched copy) finds the teacher already trained from it, however it was named (a
        ``--data-dir``, ``$KD_TUTORIAL_DATA_DIR``, or a profile's ``data_source``)."""
        return home() / self.profile.name / self._key(self.profile, self.fingerprint)

    @property
    def teacher_inputs(self) -> str:
        """A hash of what the teacher's fine-tuning reads: the same settings as :attr:`directory`'s key but the
        transfer set's size, and the train and validation reviews. Two folders with equal ``teacher_inputs`` (they
        differ in the transfer set alone: ``--set n_transfer=N`` on a source with unlabelled reviews) hold the same
        teacher, which :func:`kd_tutorial.teachers.ensure_teacher` copies instead of fine-tuning it again."""
        return self._key(self.profile.replace(n_transfer=None), _split_hash(self.encoded, ("train", "validation")))

    def _key(self, profile: Profile, fingerprint: str) -> str:
        """The teacher's settings in ``profile``, the data's source, the teacher, init, seed and ``fingerprint``. The
        teacher enters by its key alone, not by the profile's field as typed: a folder given as ``--teacher`` and as
        ``--set teacher=``, or the name a ``--teacher`` replaced, key alike."""
        source = self.data_key
        if Path(self.data_key).is_absolute():  # data_key resolves a folder's path; the named sources stay names
            profile, source = profile.replace(data_source="local folder"), "local folder"
        teacher = self.teacher_id or teacher_key(self.teacher_name)  # a preset's own is its name: keys stay
        # the package that may stand in for this teacher, none for one set in place of a preset's: a folder filed
        # when the preset's package stood in for any teacher is never found again under the teacher's own key
        profile = profile.replace(teacher_fallback=fallback_for(profile, self.teacher_name))
        return profile.teacher_hash(source, teacher, self.init, self.seed, fingerprint, teacher=teacher)

    @property
    def where(self) -> dict:
        """The keyword arguments that find this data again (``ensure_teacher_logits(profile, split, **where)``),
        whatever ``$KD_TUTORIAL_DATA_DIR`` says by then: the data is named, never left to the environment."""
        return {"data_dir": self.data_key,
                "teacher": self.teacher_name, "init": self.init, "seed": self.seed}

    @property
    def fingerprint(self) -> str:
        """A hash of the token ids and labels of the splits that train the teacher and the students (train,
        validation, transfer): changed data never meets stale logits, while another test set (``n_test``)
        keeps the fine-tuned teacher and every student trained from it."""
        if not hasattr(self, "_fingerprint"):
            self._fingerprint = _split_hash(self.encoded, ("train", "validation", "transfer"))
        return self._fingerprint

    def split_file(self, kind: str, split: str) -> Path:
        """Where the teacher's ``kind`` ("logits" or "cls") of ``split`` is cached; the test and spare splits'
        names carry a hash of their reviews, since the folder's key does not."""
        suffix = f"-{self.split_hash(split)}" if split in UNKEYED_SPLITS else ""
        return self.directory / f"{kind}-{split}{suffix}.pt"

    def spare_rows(self) -> int:
        """How many spare train reviews there are (``data.spare``), tokenized into ``encoded["spare"]`` on first
        call: only the students that learn from them need them."""
        if "spare" not in self.encoded:
            spare = self.data.spare
            self.encoded["spare"] = encode(spare, self.tokenizer, self.profile.max_length, self.profile.truncation,
                                          self.profile.markup)
        return len(self.encoded["spare"])

    def split_hash(self, split: str) -> str:
        """A short hash of one split's token ids (computed once)."""
        if not hasattr(self, "_split_hashes"):
            self._split_hashes = {}
        if split not in self._split_hashes:
            self._split_hashes[split] = _split_hash(self.encoded, (split,))[:8]
        return self._split_hashes[split]


def teacher_key(name: str) -> str:
    """What keys a teacher's artifact folder: the built-in or a Hub name as it is; a folder by its files' names,
    sizes and times, not by the path typed (``./teacher`` run from two places, or another checkpoint saved into the
    same folder, is another teacher, whose fine-tuning and logits must not be taken for this one's)."""
    folder = Path(name).expanduser()
    if name == TINY_TEACHER or not folder.is_dir():
        return name
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return "folder " + stable_hash([(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files])


def _split_hash(encoded: dict, names) -> str:
    """A short hash of the named splits' token ids and labels."""
    h = hashlib.sha256()
    for name in sorted(names):
        enc = encoded[name]
        h.update(name.encode())
        h.update(json.dumps(enc.input_ids).encode())
        h.update(enc.labels.numpy().tobytes())
    return h.hexdigest()[:16]


def data_key(profile: Profile, data_dir: str | None) -> str:
    """Which data a run reads: an explicit folder, ``$KD_TUTORIAL_DATA_DIR``, or the profile's source; a folder as
    its resolved path. The profile's own source, by its name ("tiny", "hub", as :attr:`Prepared.where` passes it),
    is that source even where a folder of that name lies in the working directory (as ``load_imdb`` reads names)."""
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    if not data_dir:
        if profile.data_source in NAMED_SOURCES:
            return profile.data_source
        data_dir = profile.data_source  # a folder the profile names (--set data_source=PATH)
    elif data_dir == profile.data_source and data_dir in NAMED_SOURCES:
        return profile.data_source
    return str(Path(data_dir).expanduser().resolve())


# splits that the folder's key (Prepared.fingerprint) leaves out: the files made from them carry their own hash
UNKEYED_SPLITS = ("test", "spare")

_PREPARED: dict[tuple, tuple[tuple, Prepared]] = {}  # the configuration -> (its folder's stamp, its data)


# what a data folder's loader reads (data._table_raw, data._acl_raw): stamped, so that data replaced there is read again
STAMPED = tuple(f"{stem}{ext}" for stem in ("train", "test", "unsupervised", "unsup") for ext in (".parquet", ".csv")) \
    + ("train/pos", "train/neg", "train/unsup", "test/pos", "test/neg")


def _folder_stamp(key: str) -> tuple:
    """The sizes and times of what a data folder's loader reads (:data:`STAMPED`, in the folder or its aclImdb):
    data replaced in a folder is read again, where this process's cache kept the old splits. Empty for a named
    source. Reads no file and lists no folder (an aclImdb folder's time changes when a review file comes or goes)."""
    root = Path(key)
    if not root.is_absolute() or not root.is_dir():
        return ()
    stamps = []
    for path in (base / name for base in (root, root / "aclImdb") for name in STAMPED):
        try:
            stat = path.stat()
        except OSError:  # not there: nothing to stamp
            continue
        stamps.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(stamps)


def _prepare(profile: Profile, key: str, teacher_name: str, init: str, seed: int) -> Prepared:
    imdb = load_for_profile(profile, data_dir=key, seed=seed)  # the key names the source: no second look at the env
    tokenizer = teacher_tokenizer(profile, teacher_name)
    encoded = {name: encode(getattr(imdb, name), tokenizer, profile.max_length, profile.truncation, profile.markup)
               for name in ("train", "validation", "test", "transfer")}  # and "spare", on first need (spare_rows)
    return Prepared(profile, imdb, tokenizer, encoded, key, teacher_name, init, seed, teacher_key(teacher_name))


def teacher_tokenizer(profile: Profile, teacher_name: str):
    """The teacher's tokenizer, falling back to the profile's offline package as :func:`~kd_tutorial.models.
    load_teacher` does: when the Hub cannot give it, online too (the weights fell back and the tokenizer did not)."""
    if teacher_name == TINY_TEACHER:
        return get_tokenizer(None)
    fallback = fallback_for(profile, teacher_name)
    source, local = resolve_source(teacher_name, fallback), fallback_path(fallback)
    try:
        return get_tokenizer(source, hint=prefetch_hint(profile, teacher_name))
    except ModelSourceError:
        if local is None or source == str(local):
            raise
        return get_tokenizer(str(local))


def prepare(profile: Profile, *, data_dir: str | None = None, teacher: str | None = None,
            init: str = "pretrained", seed: int = 0) -> Prepared:
    """Load and tokenize a profile's data (cached in this process)."""
    check_profile(profile, "prepare")
    name = teacher or profile.teacher
    if name != TINY_TEACHER and Path(name).expanduser().is_dir():  # a folder: by where it lies, not how it is typed
        name = str(Path(name).expanduser().resolve())
    args = (profile, data_key(profile, data_dir), name, init, seed)
    same = (profile.config_hash(),) + args[1:]
    stamp = _folder_stamp(args[1]) + (teacher_key(name),)  # a checkpoint replaced in a teacher folder: reload
    if _PREPARED.get(same, (None,))[0] != stamp:  # new, or its folder's files changed since: (re)load
        _PREPARED[same] = (stamp, _prepare(*args))
    return _PREPARED[same][1]


# --------------------------------------------------------------------------- students


def student_folder(prep: Prepared, name: str, *key_parts) -> Path:
    """The cache folder of one student run, under its teacher's folder.

    ``key_parts`` are everything that decides the run (its spec, training
    configuration, initialisation...): another setting gets another folder.
    """
    slug = name.replace(" ", "_").replace("+", "-")
    return prep.directory / "students" / f"{slug}-{stable_hash(*key_parts)}"


def student_finished(folder: Path) -> bool:
    """Whether ``folder`` holds a finished student run: its model, and the history written after it. A run trained
    again (without ``--resume``) keeps no checkpoint there, so that the finished run stands until the new one
    replaces it, and a Ctrl-C leaves it for ``--resume`` to reuse."""
    return (folder / "history.json").exists() and (folder / "model" / "config.json").exists()


def student_interrupted(folder: Path) -> bool:
    """Whether ``folder`` holds the checkpoint of a run stopped before it finished (``last.pt``, and no finished
    run): what ``--resume`` continues, and what a run trained again without it leaves as it is."""
    return (folder / "last.pt").exists() and not student_finished(folder)


class DamagedRun(ArtifactError):
    """A finished student run in the cache that cannot be read (``cause``: why, in a few words)."""

    def __init__(self, message: str, cause: str):
        super().__init__(message)
        self.cause = cause


def load_student(folder: Path):
    """``(model, history)`` of a finished student in ``folder``, or None when it is not (fully) there. A checkpoint
    beside it (a retraining stopped by older code, which checkpointed it) is dropped: the finished run is reused."""
    from transformers import BertForSequenceClassification
    if not student_finished(folder):
        return None
    try:
        history = History.from_dict(json.loads((folder / "history.json").read_text()))
        model = BertForSequenceClassification.from_pretrained(folder / "model")
    except Exception as err:
        raise DamagedRun(f"cannot read the cached student in {folder} ({_cause(err)}): delete the folder and run "
                         "again", cause=_cause(err)) from err
    (folder / "last.pt").unlink(missing_ok=True)
    return name_classes(model), history  # one cached before students named their classes is named now


def save_student(folder: Path, model, history) -> None:
    """Store a finished student: the model, then its history (the marker that it is complete). A model trained
    here before loses its marker first, so that a write cut short never pairs the new model with the old history,
    and its test logits, which are not this model's."""
    for stale in (folder / "history.json", *folder.glob("logits-test-*.pt")):
        stale.unlink(missing_ok=True)
    atomic_save_pretrained(model, folder / "model")
    atomic_write_json(folder / "history.json", history.to_dict())
    with contextlib.suppress(FileNotFoundError):
        (folder / "last.pt").unlink()  # the epoch checkpoint is not needed once the run is finished


def run_hash(folder: Path) -> str:
    """A short hash of a finished run's ``history.json``: which training of ``folder`` a loaded model came from
    (read under the folder's lock, with the model)."""
    return hashlib.sha256((folder / "history.json").read_bytes()).hexdigest()[:12]


def student_test_logits_file(prep: Prepared, folder: Path, trained: str) -> Path:
    """Where a finished student's logits on ``prep``'s test split are kept: beside its model, named as the
    teacher's are (with a hash of the test reviews) and by the training they belong to (``trained``, its
    :func:`run_hash`), so that a model trained again in the folder never meets another training's logits."""
    return folder / f"{prep.split_file('logits', 'test').stem}-{trained}.pt"


def cache_status(profile: Profile, also=()) -> dict:
    """What the profile needs from the Hub, and whether each piece is cached locally (or built in); ``also``:
    more Hub models to look for (notebook 09's, :func:`kd_tutorial.lm.hub_models`)."""
    needs = {}
    if profile.teacher == TINY_TEACHER:
        needs[profile.teacher] = "built in"
    else:
        needs[profile.teacher] = _hub_cached(profile.teacher, "model", profile.name)
        package = fallback_for(profile, profile.teacher)  # none for a teacher set in place of the preset's
        if needs[profile.teacher] != "cached" and fallback_path(package):
            needs[profile.teacher] = f"offline copy from {package}"
        elif needs[profile.teacher] != "cached" and package:  # the fix that works with no network
            needs[profile.teacher] += (f", or install its offline copy (pip install \"kd-tutorial[offline]\", or "
                                       f"{package})")
    for name in [spec.pretrained for spec in profile.students if spec.pretrained] + list(also):
        needs[name] = _hub_cached(name, "model", profile.name)
    if os.environ.get(DATA_DIR_ENV):  # read before the profile's own source, as data_key does
        needs["data"] = _folder_status(os.environ[DATA_DIR_ENV])
    elif profile.data_source == "tiny":
        needs["data"] = "built in"
    else:
        needs[HUB_DATASET] = ("cached" if prepared_hub_copy() else  # and the fix that works with no network:
                              f"missing (run `kd-tutorial prefetch --profile {profile.name}`), or set {DATA_DIR_ENV} "
                              f"to a local copy of IMDB (train.parquet and test.parquet, or aclImdb: {SETUP_MIRRORS})")
    return needs


def _folder_status(data_dir: str) -> str:
    """A data folder as ``distill`` would judge it: "local folder X", or why it cannot be read and the fix."""
    if data_dir in NAMED_SOURCES:  # distill reads these as sources, never as folders (cli._check_data_folder)
        return (f"unusable: {data_dir!r} names a data source, not a folder: give ./{data_dir} for a folder of that "
                "name")
    try:
        check_data_readable(data_dir)
    except DataSourceError as err:
        return f"unusable: {err}"
    return f"local folder {data_dir}"


def _hub_cached(repo_id: str, repo_type: str, profile: str) -> str:
    """"cached" when the Hugging Face cache holds ``repo_id`` (a model: with its weights, not only the config and
    tokenizer that ``--init random`` or a cut prefetch leave), else what is missing and the fix (a prefetch of
    ``profile``: without ``--profile``, prefetch fetches the default profile's, which may be another)."""
    fix = f"kd-tutorial prefetch --profile {profile}"
    try:
        from huggingface_hub import scan_cache_dir
        repos = [r for r in scan_cache_dir().repos if r.repo_id == repo_id and r.repo_type == repo_type]
    except Exception:  # an empty or missing cache folder
        repos = []
    if not repos:
        return f"missing (run `{fix}`)"
    names = [f.file_name for r in repos for rev in r.revisions for f in rev.files]
    if repo_type == "model" and not any(n.endswith((".safetensors", ".bin")) for n in names):
        return f"missing its weights (only its config or tokenizer is cached): run `{fix}`"
    cut = next((Path(f.file_path) for r in repos for rev in r.revisions for f in rev.files
                if f.file_name.endswith(".safetensors") and not _whole_safetensors(Path(f.file_path))), None)
    if cut is not None:  # the Hub's client hands back a cached file as it is: prefetching again would not mend it
        return (f"unusable: its {cut.name} is cut short (a download or a copy that stopped early): delete "
                f"{repos[0].repo_path} and run `{fix}` again")
    return "cached"


def _whole_safetensors(path: Path) -> bool:
    """Whether a .safetensors file holds every byte its header promises: an 8-byte length, that many bytes of JSON,
    then the tensors up to the largest ``data_offsets`` end."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size >= 8 + size + end
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):  # no header, or not one
        return False
