"""The `tiny` pipeline with its student runs one after another (--workers 1) and side by side (the default).

Each run starts from an empty artifact cache, so it fine-tunes the teacher too. `cpu` is /proc/cpuinfo's model name. The two settings alternate, and
the one that goes first alternates from pair to pair. Seconds are results.json's `wall_seconds` and
`phase_seconds`, and the process's own time from start to exit (imports included).
Run from the repository root on otherwise idle cores:
    python docs/tuning/tiny_workers.py > docs/tuning/tiny-workers.json
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAIRS = 3
SETTINGS = {"one after another": ["--workers", "1"], "side by side (the default)": []}


def one_run(extra: list[str]) -> dict:
    """One `kd-tutorial distill --profile tiny` from an empty cache: its seconds, workers and test accuracies."""
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, KD_TUTORIAL_HOME=home, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        command = [sys.executable, "-m", "kd_tutorial.cli", "distill", "--profile", "tiny", "--quiet", "--out", out,
                   *extra]
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        results = json.loads((Path(out) / "results.json").read_text())
    run = results["run"]
    return {"command": "kd-tutorial distill --profile tiny --quiet" + "".join(" " + e for e in extra),
            "process_seconds": round(seconds, 1), "wall_seconds": round(run["wall_seconds"], 1),
            "phase_seconds": {k: round(v, 1) for k, v in run["phase_seconds"].items()},
            "student_workers": run["student_workers"], "torch_threads": run["torch_threads"],
            "precision": run["precision"]["training"], "git_commit": run["git_commit"],
            "test_accuracy": {r["name"]: r["accuracy"] for r in results["models"]}}


def main() -> None:
    """Three pairs, alternating which setting goes first; the JSON record on stdout."""
    names = list(SETTINGS)
    pairs = []
    for pair in range(1, PAIRS + 1):
        order = names if pair % 2 else names[::-1]
        for name in order:
            pairs.append({"pair": pair, "students": name, **one_run(SETTINGS[name])})
            print(f"pair {pair}, {name}: {pairs[-1]['wall_seconds']} s", file=sys.stderr, flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown")
    print(json.dumps({"what": __doc__.split("\n")[0], "cpu": cpu, "cores": os.cpu_count(), "runs": pairs}, indent=1))


if __name__ == "__main__":
    main()
