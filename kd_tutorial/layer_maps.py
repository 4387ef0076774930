"""Which teacher layer each student layer learns from: the layer mapping of intermediate-layer distillation.

Layers are numbered as in ``hidden_states``: 0 is the embeddings' output and
``i`` (1-based) the output of layer ``i``. For a student of ``S`` layers and a
teacher of ``T``, student layer ``i = 1..S`` learns from teacher layer:

* ``uniform`` (TinyBERT): ``i * T / S`` rounded half up: spread evenly, ending at the top (6 -> 3: 2, 4, 6;
  6 -> 4: 2, 3, 5, 6, where Python's ``round``, halves to even, would give 2, 3, 4, 6);
* ``skip`` (Patient KD, PKD-skip): ``2 i``: every other layer from the bottom (12 -> 4: 2, 4, 6, 8);
* ``last`` (Patient KD, PKD-last): ``T - S + i``: the top ``S`` layers (6 -> 3: 4, 5, 6).

Every student layer, its top one included, is matched here, so the three maps compare on the same number of
layers. Patient KD as published (Sun et al. 2019) matches one layer fewer and leaves the top to the logit loss:
for 12 -> 6, teacher layers 2, 4, 6, 8, 10 (skip) or 7 to 11 (last).

A mapping is a choice (correctness note 13): state it. :func:`describe` prints it.
"""
from __future__ import annotations

MAPPINGS = ("uniform", "skip", "last")


def layer_mapping(kind: str, student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer (1-based) that each student layer ``1..S`` learns from, for ``kind`` in MAPPINGS."""
    S, T = student_layers, teacher_layers
    if not 1 <= S <= T:
        raise ValueError(f"a {S}-layer student cannot map onto a {T}-layer teacher (need 1 <= S <= T)")
    if kind == "uniform":
        return [(2 * i * T + S) // (2 * S) for i in range(1, S + 1)]  # floor(i T / S + 1/2), in whole numbers
    if kind == "skip":
        if 2 * S > T:
            raise ValueError(f"mapping 'skip' needs a teacher with at least 2 x {S} layers, not {T}: use 'uniform'")
        return [2 * i for i in range(1, S + 1)]
    if kind == "last":
        return [T - S + i for i in range(1, S + 1)]
    raise ValueError(f"unknown layer mapping {kind!r}: choose one of {', '.join(MAPPINGS)}")


def describe(kind: str, mapping: list[int]) -> str:
    """One line such as ``uniform: student 1 <- teacher 2, 2 <- 4, 3 <- 6``."""
    pairs = ", ".join(f"{i} <- {t}" if i > 1 else f"student {i} <- teacher {t}" for i, t in enumerate(mapping, 1))
    return f"{kind}: {pairs}"
