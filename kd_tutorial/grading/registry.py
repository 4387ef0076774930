"""Which exercises belong to which course notebook (no heavy imports)."""
from __future__ import annotations

import importlib

# exercise set -> (course notebook stem, exercise labels in order)
SETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ex01": ("01_bert_anatomy", ("q1", "q2")),
    "ex02": ("02_soft_targets_temperature", ("q1", "q2")),
    "ex03": ("03_kd_losses", ("q1", "q2", "q3", "q4")),
    "ex04": ("04_teacher", ("q1", "q2", "q3", "q4")),
    "ex05": ("05_distillation", ("q1", "q2")),
    "ex06": ("06_evaluation", ("q1", "q2")),
    "ex07": ("07_intermediate_layers", ("q1", "q2", "q3")),
    "ex08": ("08_kd_in_practice", ("q1",)),
    "ex09": ("09_distilling_generative_lms", ("q1", "q2")),
}

# the function an exercise asked for in an earlier version of the course, where it was another task: a notebook of
# that version defines the old name, and is told so rather than "not attempted" (kd_tutorial.grading.runner)
FORMER_NAMES: dict[str, tuple[str, ...]] = {
    "ex01.q1": ("scaled_dot_product_attention",),
    "ex01.q2": ("count_bert_parameters",),
    "ex04.q2": ("padding_waste",),
}


def set_for_name(text: str) -> str | None:
    """The exercise set whose notebook stem (or ``exNN`` id) appears in ``text``, if any."""
    for set_id, (stem, _) in SETS.items():
        if stem in text or f"kd_tutorial.grading.{set_id}" in text:
            return set_id
    return None


def exercises(set_id: str) -> list:
    """The :class:`~kd_tutorial.grading.core.Exercise` objects of a set (imports the set's module)."""
    module = importlib.import_module(f"kd_tutorial.grading.{set_id}")
    return [getattr(module, label) for label in SETS[set_id][1]]


def all_exercises() -> list:
    """Every exercise of the course, in order."""
    return [ex for set_id in SETS for ex in exercises(set_id)]
