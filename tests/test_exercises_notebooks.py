"""Solution notebooks run clean with every check passing; untouched exercise notebooks fail only as 'not attempted'.

Driven by nbclient (nbval cannot assert that an error happened), in a kernel
of this interpreter, one notebook per test (xdist-friendly).
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from kd_tutorial.grading import registry
from kd_tutorial.grading.execute import kernel_manager_class

ROOT = Path(__file__).resolve().parents[1]
STEMS = [stem for stem, _ in registry.SETS.values()]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# What would make an exercise notebook slow: real checkpoints, datasets or the pipeline (the exercises use toys)
HEAVY = ("from_pretrained(", "load_dataset(", "get_profile(", "kd_tutorial.pipeline", "kd_tutorial.artifacts",
         "kd_tutorial.data", "ensure_teacher")


def execute(path: Path, tmp_path: Path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=120, allow_errors=True, kernel_name="kd-tutorial-grader",
                            kernel_manager_class=kernel_manager_class(), shutdown_kernel="immediate",
                            resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel(env=ENV):
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
    return nb


def outputs(nb, kind):
    return [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.get("outputs", []) if o.output_type == kind]


@pytest.mark.parametrize("stem", STEMS)
def test_solution_notebook_runs_clean_and_passes(stem, tmp_path):
    nb = execute(ROOT / "solutions" / f"{stem}.ipynb", tmp_path)
    assert outputs(nb, "error") == []
    text = "".join(o.get("text", "") for _, o in outputs(nb, "stream"))
    labels = registry.SETS[nb.metadata["kd_tutorial"]["exercise_set"]][1]
    for label in labels:
        assert f"\N{WHITE HEAVY CHECK MARK} {label}: Correct!" in text, text
    # small by construction (about 30 s on an idle 2-core machine), not by a stopwatch: toy models only
    heavy = [(i, h) for i, c in enumerate(nb.cells) if c.cell_type == "code" for h in HEAVY if h in c.source]
    assert heavy == [], heavy


@pytest.mark.parametrize("stem", STEMS)
def test_untouched_exercise_fails_only_as_not_attempted(stem, tmp_path):
    nb = execute(ROOT / "exercises" / f"{stem}.ipynb", tmp_path)
    errors = outputs(nb, "error")
    labels = registry.SETS[nb.metadata["kd_tutorial"]["exercise_set"]][1]
    assert len(errors) == len(labels)  # one per check cell, nothing else
    for (index, err), label in zip(errors, labels):
        assert err.ename == "NotAttempted", (index, err.ename, err.evalue)
        assert err.evalue.startswith(f"{label}: not attempted yet")
        assert "check(" in nb.cells[index].source
        assert len(err.traceback) == 1  # _render_traceback_: one short line, no traceback wall
