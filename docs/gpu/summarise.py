"""Summarise the GPU checks' output folders (what docs/gpu/h200_check.sh wrote under $OUT) into one record without
per-step logs, as docs/gpu/h200-checks.json was made.

    python docs/gpu/summarise.py OUT.json NAME=FOLDER:TREE ...

TREE is the commit whose working tree the folder's run used (a copy of a working tree records the commit it was
copied from, with "+dirty" where it had changes, which need not be the one its files hold).
"""
import datetime
import json
import sys
from pathlib import Path


def cpu_seed(path: Path) -> dict:
    """A `distill --profile cpu --seeds 0` record, less its histories and plots."""
    r = json.loads(path.read_text())
    run = r["run"]
    models = {m["name"]: {k: m[k] for k in ("accuracy", "agreement", "ece", "latency_ms", "latency_q1_ms",
                                            "latency_q3_ms", "reviews_per_s")} for m in r["models"]}
    keep = ("diff", "ci_low", "ci_high", "p_mcnemar", "verdict", "reviews")
    comparisons = [{k: c[k] for k in ("student", "recipe", "against") + keep} for c in r["comparisons"]]
    return {"wall_seconds": run["wall_seconds"], "phase_seconds": run["phase_seconds"],
            "train_seconds": run["train_seconds"], "split_sizes": run["split_sizes"], "precision": run["precision"],
            "git_commit_as_recorded": run["git_commit"], "models": models, "comparisons": comparisons,
            "best_recipes": r["best_recipes"]}


def folder(path: Path, tree: str) -> dict:
    out = {"tree": tree, "env": (path / "env.txt").read_text().splitlines()[:3],
           "steps": [line for line in (path / "env.txt").read_text().splitlines() if line.startswith("step ")]}
    if (path / "first-calls.json").exists():
        out["first_calls"] = json.loads((path / "first-calls.json").read_text())
    if (path / "benchmark-h200.json").exists():
        bench = json.loads((path / "benchmark-h200.json").read_text())
        out["benchmark_full"] = {"projection": bench["projection"], "rates": bench["rates"],
                                 "settings": bench["settings"]}
    if (path / "cpu-seed-0.json").exists():
        out["cpu_seed_0"] = cpu_seed(path / "cpu-seed-0.json")
    return out


def main(out: str, *runs: str) -> None:
    record = {"what": f"docs/gpu/h200_check.sh, summarised {datetime.date.today()} (docs/gpu/README.md)", "runs": {}}
    for spec in runs:
        name, rest = spec.split("=", 1)
        path, tree = rest.rsplit(":", 1)
        record["runs"][name] = folder(Path(path), tree)
    Path(out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
