"""How often timer noise alone changes a search's Pareto front: one tiny study, its students re-timed again and
again as `kd-tutorial search` re-times them when it writes its results, the front chosen each time from the p50s.
Two ways of taking turns, alternating: one pass of each student at a time (before), and review by review (now, on
the CPU: evaluate.latency_in_turns). Beside one busy process, as a shared machine has. The first run recorded (code at
dcdb0b3) also chose a front whose "faster" needed a paired sign test over the reviews: tried, and not adopted.
Record: docs/tuning/search-front-stability.json. Run from the repository:

    KD_TUTORIAL_HOME=/tmp/sfs python docs/tuning/search_front_stability.py
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kd_tutorial import evaluate, search
from kd_tutorial.profiles import get_profile
from kd_tutorial.threads import load_average

RETIMES = int(os.environ.get("RETIMES", "10"))
out = Path(tempfile.mkdtemp(prefix="sfs-"))
profile = get_profile("tiny")
study = search.run_search(profile, trials=6, steps=60, out=out, device="cpu", progress=False, margin=1.0)
ctx = search.make_context(profile, out, device="cpu", steps=60, progress=False, margin=1.0, min_finished=5, seed=0,
                          latency_n=30)
busy = subprocess.Popen([sys.executable, "-c", "while 1: pass"])  # another process wanting a core
time.sleep(20)
fronts = {"turns by pass, p50": [], "turns by review, p50": []}
loads = []


def by_pass(models, encoded, *, device, n, repeats, precision):
    """latency_in_turns as it was: one pass of each model at a time."""
    samples = evaluate._turns_by_pass(models, encoded, device=device, n=n, repeats=repeats, precision=precision)
    return {name: dict(zip(("q1", "p50", "q3"), evaluate.quartiles(t))) | {"samples": t} for name, t in samples.items()}


def front(records):
    return sorted(r["number"] for r in search.pareto_front(records))


try:
    for _ in range(RETIMES):
        loads.append(load_average())
        records = [dict(r) for r in study["trials"]]
        search.latency_in_turns = by_pass
        search.retime(ctx, records)
        fronts["turns by pass, p50"].append(front(records))
        records = [dict(r) for r in study["trials"]]
        search.latency_in_turns = evaluate.latency_in_turns
        search.retime(ctx, records)
        fronts["turns by review, p50"].append(front(records))
finally:
    busy.kill()
done = [r for r in study["trials"] if r["state"] == "COMPLETE"]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
record = {"what": "tiny study, 6 trials of 60 steps, students re-timed RETIMES times beside one busy process",
          "commit": commit,
          "retimes": RETIMES, "load_average_1min": loads,
          "trials": [{"number": r["number"], "student": r["params"]["student"], "val_accuracy": r["val_accuracy"]}
                     for r in done],
          "fronts": fronts,
          "distinct_fronts": {k: sorted({tuple(f) for f in v}) for k, v in fronts.items()},
          "runs_with_the_most_common_front": {k: max(v.count(f) for f in v) for k, v in fronts.items()}}
print(json.dumps(record, indent=1))
path = Path("docs/tuning/search-front-stability.json")  # one run per entry, appended
runs = json.loads(path.read_text())["runs"] if path.exists() else []
path.write_text(json.dumps({"runs": runs + [record]}, indent=1) + "\n")
