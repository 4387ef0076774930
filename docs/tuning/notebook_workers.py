"""Notebooks 04 to 07 on `tiny`, their student runs side by side (as committed) and one after another.

Each setting runs the four notebooks in order in a fresh artifact cache, with the kernel's default threads (no
OMP_NUM_THREADS), as a learner would. "One after another" is the same notebooks with
`parallel.default_workers(device)` replaced by 1. Seconds are each notebook's, kernel start included, and those of
its cells that call `pipeline.distill_students`, with the last lines those cells printed.
Run from the repository root on otherwise idle cores:
    python docs/tuning/notebook_workers.py > docs/tuning/notebook-workers.json
With `--every-notebook`, every notebook (00 to 09) in order, as committed, once: the `tiny` column of notebook 00's
run-time table.
    python docs/tuning/notebook_workers.py --every-notebook > docs/tuning/notebook-times.json
"""
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = ("04_teacher", "05_distillation", "06_evaluation", "07_intermediate_layers")
SETTINGS = {"side by side (as committed)": None, "one after another (workers=1)": "1"}


def run_notebooks(workers: str | None, notebooks=NOTEBOOKS) -> dict:
    """``notebooks`` in order in a fresh cache; ``workers`` replaces ``parallel.default_workers(device)`` when given."""
    env = dict(os.environ, KD_TUTORIAL_HOME=tempfile.mkdtemp(prefix="kd-notebooks-"), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", KD_TUTORIAL_PROFILE="tiny", MPLBACKEND="Agg")
    env.pop("OMP_NUM_THREADS", None)
    record = {}
    for name in notebooks:
        nb = nbformat.read(f"notebooks/{name}.ipynb", as_version=4)
        for cell in nb.cells:
            if workers is not None and cell.cell_type == "code":
                cell.source = cell.source.replace("parallel.default_workers(device)", workers)
        client = NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": "notebooks"}})
        seconds, start = {}, time.perf_counter()
        with client.setup_kernel(env=env):
            for index, cell in enumerate(nb.cells):
                if cell.cell_type == "code":
                    t = time.perf_counter()
                    client.execute_cell(cell, index)
                    seconds[index] = time.perf_counter() - t
        training = [i for i in seconds if "distill_students" in nb.cells[i].source]
        record[name] = {
            "notebook_seconds": round(time.perf_counter() - start, 1),
            "training_cells": {i: {"seconds": round(seconds[i], 1), "printed": "".join(
                o.get("text", "") for o in nb.cells[i].outputs if o.get("output_type") == "stream")[-400:]}
                for i in training}}
        print(f"{name}: {record[name]['notebook_seconds']} s", file=sys.stderr, flush=True)
    return record


def main() -> None:
    """Each setting once, side by side first; the JSON record on stdout."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True).stdout.strip())
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown")
    if "--every-notebook" in sys.argv[1:]:
        every = tuple(sorted(p.rsplit("/", 1)[-1][:-len(".ipynb")] for p in glob.glob("notebooks/[0-9]*.ipynb")))
        what, runs = "Every notebook on `tiny`, in order, as committed.", {"as committed": run_notebooks(None, every)}
    else:
        what, runs = __doc__.split("\n")[0], {name: run_notebooks(workers) for name, workers in SETTINGS.items()}
    print(json.dumps({"what": what, "cpu": cpu, "cores": os.cpu_count(), "git_commit": commit,
                      "uncommitted_changes": dirty, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
