"""How far the `cpu` profile's timed seed is from 20 minutes, in model arithmetic (docs/tuning.md, "Twenty minutes").

Reads the timed seed (cpu-1-seed-bf16-cache-137a549.json: 2 cores with bf16 units, students two at a time with one
thread each), counts each phase's FLOPs with kd_tutorial.flops at that seed's split sizes (IMDB's length
distribution, 256 tokens) for the profile as that seed ran it (compact-2L-H128 without the spare reviews) and the
data folder it read (25,000 train reviews, no unlabelled ones), and writes the rate each phase reached and what 20
minutes would need to cpu-time-floor.json. Runs in a second; trains nothing.

    python docs/tuning/time_floor.py
"""
import dataclasses
import json
from pathlib import Path

from kd_tutorial.flops import estimate_profile
from kd_tutorial.plan import step_budget
from kd_tutorial.profiles import get_profile

HERE = Path(__file__).resolve().parent
TARGET_S = 20 * 60


def main():
    run = json.loads((HERE / "cpu-1-seed-bf16-cache-137a549.json").read_text())["run"]
    sizes, threads = run["split_sizes"], run["torch_threads"]
    now = get_profile("cpu")  # as that seed ran it: no student read the spare reviews before fefbc34
    cpu = now.replace(students=tuple(dataclasses.replace(s, spare_reviews=False) for s in now.students))
    rows = cpu.student_labels + cpu.n_transfer  # the record's runs and step budgets, or another preset than its
    assert {s.name: (list(s.recipes), step_budget(cpu, s, rows)) for s in cpu.students} == {
        name: (list(plan["recipes"]), plan["steps"]) for name, plan in run["students"].items()}, "not the record's runs"
    # the shared data folder: validation, its guards, train and transfer are all carved from its train reviews
    source = {"train": 25_000, "test": sizes["test"], "unsupervised": 0}
    estimate = estimate_profile(cpu, source=source)
    phases, splits = estimate["phases"], ("train", "validation", "test", "transfer")
    assert {k: estimate["rows"][k] for k in splits} == {k: sizes[k] for k in splits}, "not the record's carve"
    out = {"record": "cpu-1-seed-bf16-cache-137a549.json", "target_s": TARGET_S, "phases": {}, "runs": {}}
    for name in ("teacher", "teacher_layers", "evaluation"):  # one process, all the threads
        seconds = run["phase_seconds"][name]
        out["phases"][name] = {"tflop": phases[name]["flops"] / 1e12, "seconds": seconds, "threads": threads,
                               "gflops_per_thread": phases[name]["flops"] / seconds / threads / 1e9}
    for name, train_s in run["train_seconds"].items():  # one thread each, two runs at a time
        seconds = train_s + run["validation_seconds"][name]
        out["runs"][name] = {"tflop": phases[name]["flops"] / 1e12, "seconds": seconds, "threads": 1,
                             "gflops_per_thread": phases[name]["flops"] / seconds / 1e9}
    students_tflop = sum(r["tflop"] for r in out["runs"].values())
    students_thread_s = sum(r["seconds"] for r in out["runs"].values())
    out["phases"]["students"] = {"tflop": students_tflop, "seconds": run["phase_seconds"]["students"],
                                 "threads": threads, "thread_seconds_of_the_runs": students_thread_s,
                                 "gflops_per_thread": students_tflop * 1e3 / run["phase_seconds"]["students"]
                                 / threads}
    total = sum(p["tflop"] for p in out["phases"].values())
    out["seed"] = {"tflop": total, "seconds": run["wall_seconds"], "gflops": total / run["wall_seconds"] * 1e3,
                   "gflops_needed_for_target": total / TARGET_S * 1e3,
                   "speedup_needed": run["wall_seconds"] / TARGET_S,
                   # the runs alone, even if teacher, its pass and evaluation cost nothing, at their own rates
                   "students_floor_s": students_thread_s / threads,
                   # the arithmetic that fits 20 minutes at the rate this seed reached as a whole
                   "tflop_that_fits_target": total * TARGET_S / run["wall_seconds"]}
    (HERE / "cpu-time-floor.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["seed"], indent=1))


if __name__ == "__main__":
    main()
