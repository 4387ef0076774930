"""Distillation recipes: what one student run learns from, and with which weights.

A :class:`Recipe` names its data (the labelled reviews, plus the transfer reviews
or not), the target of its logit term, and the weights of its intermediate-layer
terms (:class:`Intermediate`). The named presets in :data:`RECIPES`:

=====================  ===========  ================  ==============================================
recipe                 data         logit term        intermediate terms
=====================  ===========  ================  ==============================================
``baseline``           labelled     hard labels       -
``kd``                 labelled     soft (Hinton)     -
``kd+transfer``        + transfer   soft              -
``pseudo-label``       + transfer   teacher argmax    - (the control: teacher labels, no soft targets)
``kd+transfer+pkd``    + transfer   soft              [CLS] of mapped layers (Patient KD)
``kd+transfer+cosine`` + transfer   soft              hidden-state cosine (DistilBERT)
``kd+transfer+hidden`` + transfer   soft              hidden-state MSE through a projection (TinyBERT)
``kd+transfer+attn``   + transfer   soft              hidden MSE (TinyBERT) + attention KL (MiniLM), same heads
``kd+transfer+values`` + transfer   soft              value relations (MiniLM v2: any width, any heads)
=====================  ===========  ================  ==============================================

Recipes whose name ends in ``+aug`` also train on an augmented copy of the
transfer set (:func:`kd_tutorial.data.augment`, after Tang et al. 2019).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from . import losses
from .errors import UserError
from .features import Features
from .profiles import student_field_problem

TERMS = ("hidden_mse", "hidden_cosine", "cls", "attention", "value_relation")
TOKEN_TERMS = ("hidden_mse", "hidden_cosine", "attention", "value_relation")  # means over real tokens; cls: rows


class RecipeError(UserError, ValueError):
    """A recipe that cannot train as it is written."""


@dataclass(frozen=True)
class Intermediate:
    """Weights of the intermediate-layer terms (0: off), the layer mapping, and MiniLM's relation heads."""

    hidden_mse: float = 0.0
    hidden_cosine: float = 0.0
    cls: float = 0.0
    attention: float = 0.0
    value_relation: float = 0.0
    mapping: str = "uniform"  # see kd_tutorial.layer_maps
    relation_heads: int = 2

    def __post_init__(self):
        """Refuse, in one line, a mapping :mod:`kd_tutorial.layer_maps` does not know (refused at the first step
        otherwise) and relation heads below 1 (a ZeroDivisionError in the value term), as a student refuses them."""
        for name in ("mapping", "relation_heads"):  # a student's own, checked by the student's rules
            give = student_field_problem(name, getattr(self, name))
            if give:
                raise RecipeError(f"{name}={getattr(self, name)!r}: give {give}")

    @property
    def weights(self) -> dict[str, float]:
        """The terms that are on, with their weights."""
        return {name: getattr(self, name) for name in TERMS if getattr(self, name)}

    @property
    def needs_hidden(self) -> bool:
        """Whether a term reads hidden states (MSE, cosine or PKD's [CLS])."""
        return bool(self.hidden_mse or self.hidden_cosine or self.cls)

    def internals(self) -> dict[str, bool]:
        """What a forward pass must return for these terms (:func:`kd_tutorial.features.forward_features`'s
        flags): hidden states, attention maps, value vectors."""
        return {"hidden": self.needs_hidden, "attentions": bool(self.attention), "values": bool(self.value_relation)}

    @property
    def needs_token_internals(self) -> bool:
        """Whether a term reads the teacher's per-token internals (every term but [CLS]): from the teacher called
        at every step, or (hidden states and values, see :attr:`cacheable`) from its cached layers."""
        return bool(self.hidden_mse or self.hidden_cosine or self.attention or self.value_relation)

    @property
    def cacheable(self) -> bool:
        """Whether cached layers (:mod:`kd_tutorial.layer_cache`) can stand in for the teacher: hidden states and
        value vectors can; attention maps (heads x L x L per review) cannot."""
        return self.needs_token_internals and not self.attention

    def layer_keys(self, mapping: list[int]) -> list[tuple[str, int]]:
        """The teacher's (kind, layer) pairs that the terms read from cached layers, for a layer ``mapping``: the
        [CLS] term too, when a per-token term makes the run read the cache instead of the [CLS] states."""
        keys = [("hidden", t) for t in mapping] if self.needs_hidden else []
        return keys + ([("values", t) for t in mapping] if self.value_relation else [])

    @property
    def needs_projection(self) -> bool:
        """Whether the student's states meet the teacher's width: every hidden-state term (cosine, MSE, [CLS])."""
        return self.needs_hidden


TARGETS = {"labels": "ce", "soft": "kd", "pseudo": "pseudo"}  # a recipe's logit target: the training loop's mode


@dataclass(frozen=True)
class Recipe:
    """One kind of student run: its data, its logit target, its intermediate terms."""

    name: str
    targets: str = "soft"  # "labels" (hard-label baseline) | "soft" (Hinton KD) | "pseudo" (teacher argmax)
    transfer: bool = True  # also train on the transfer reviews, which only the teacher labels
    intermediate: Intermediate | None = None
    augment: bool = False  # add an augmented copy of the transfer set (token masking, n-gram sampling)

    def __post_init__(self):
        """Refuse, in one line, a logit target the loop does not know, and intermediate terms in a run on the labels
        alone, which reads no teacher (the loop refuses them too, but only once the teacher is fine-tuned)."""
        if not isinstance(self.targets, str) or self.targets not in TARGETS:
            raise RecipeError(f"recipe {self.name!r}: targets={self.targets!r}: give one of "
                              f"{', '.join(map(repr, TARGETS))}")
        if self.targets == "labels" and self.intermediate is not None:
            raise RecipeError(f"recipe {self.name!r} trains on the labels alone and reads no intermediate terms: "
                              "give targets='soft' (or 'pseudo') to distil with them, or intermediate=None")

    @property
    def mode(self) -> str:
        """The training loop's mode: ``ce`` for hard labels, ``kd`` for soft targets, ``pseudo``."""
        return TARGETS[self.targets]

    @property
    def needs_token_internals(self) -> bool:
        """True when a run of this recipe needs the teacher's per-token internals: the teacher at every step
        (an online teacher: such runs cost the most) unless its layers are cached (:mod:`kd_tutorial.layer_cache`)."""
        return self.intermediate is not None and self.intermediate.needs_token_internals

    def with_(self, **changes) -> "Recipe":
        """A copy with some fields changed (as :func:`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("baseline", targets="labels", transfer=False),
    Recipe("kd", transfer=False),
    Recipe("kd+transfer"),
    Recipe("pseudo-label", targets="pseudo"),
    Recipe("kd+transfer+pkd", intermediate=Intermediate(cls=1.0)),
    Recipe("kd+transfer+cosine", intermediate=Intermediate(hidden_cosine=1.0)),
    Recipe("kd+transfer+hidden", intermediate=Intermediate(hidden_mse=1.0)),
    Recipe("kd+transfer+attn", intermediate=Intermediate(hidden_mse=1.0, attention=1.0)),
    Recipe("kd+transfer+values", intermediate=Intermediate(value_relation=1.0)),
    Recipe("kd+transfer+aug", augment=True),
)}


class UnknownRecipeError(RecipeError):
    """A recipe name that is not in :data:`RECIPES`."""


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; an :class:`UnknownRecipeError` naming the choices otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UnknownRecipeError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}") from None


def intermediate_terms(spec: Intermediate, student: Features, teacher: Features, attention_mask: torch.Tensor,
                       mapping: list[int], projections=None) -> dict[str, torch.Tensor]:
    """Each intermediate term of ``spec``, averaged over the mapped layers (student layer i <- ``mapping[i-1]``).

    ``projections[i-1]`` maps student layer ``i``'s states to the teacher's width
    (identity when the widths agree). ``teacher.hidden`` may hold only [CLS]
    states, shape (B, H), for the ``cls`` term (as cached by the pipeline).
    """
    terms: dict[str, torch.Tensor] = {}

    def add(name: str, value: torch.Tensor) -> None:
        terms[name] = terms.get(name, 0.0) + value / len(mapping)

    for i, t_layer in enumerate(mapping, start=1):
        project = projections[i - 1] if projections is not None else (lambda x: x)
        if spec.hidden_mse or spec.hidden_cosine:
            s_h, t_h = project(student.hidden[i]), teacher.hidden[t_layer]
            if spec.hidden_mse:
                add("hidden_mse", losses.hidden_mse(s_h, t_h, attention_mask))
            if spec.hidden_cosine:
                add("hidden_cosine", losses.hidden_cosine(s_h, t_h, attention_mask))
        if spec.cls:
            t_cls = teacher.hidden[t_layer]
            add("cls", losses.cls_mse(project(student.hidden[i][:, 0]), t_cls[:, 0] if t_cls.dim() == 3 else t_cls))
        if spec.attention:
            add("attention", losses.attention_kl(student.attentions[i - 1], teacher.attentions[t_layer - 1],
                                                 attention_mask))
        if spec.value_relation:
            add("value_relation", losses.value_relation_kl(student.values[i - 1], teacher.values[t_layer - 1],
                                                           attention_mask, spec.relation_heads))
    return terms
