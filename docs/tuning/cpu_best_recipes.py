"""The `cpu` profile's best recipe per student (validation's choice in docs/results/cpu-3-seeds.json when this ran, at
`a09f1d4`; since `e36` the record's choice is `kd+transfer` for both students), on seeds 0-2.

Usage: python docs/tuning/cpu_best_recipes.py OUT_FOLDER   (KD_TUTORIAL_DATA_DIR: the IMDB parquet files)

Runs `kd-tutorial distill --profile cpu --seeds 0 1 2 --resume` in-process with each student's recipes cut to the
one validation chose: distil-3L `kd+transfer+cosine`, compact-2L-H128 `kd+transfer+values`. A run's cache key leaves
out the recipe list (`plan.run_key`), so these are the profile's own runs: the full command with `--resume`
reuses them. What it answers: whether the current code, on a CPU with bf16 units, trains the README block's teacher
and best students again to the same test accuracies, and each best recipe's share of its teacher with an interval.
"""
import dataclasses
import sys

from kd_tutorial import pipeline
from kd_tutorial.profiles import get_profile

BEST = {"distil-3L": "kd+transfer+cosine", "compact-2L-H128": "kd+transfer+values"}

profile = get_profile("cpu")
students = tuple(dataclasses.replace(s, recipes=(BEST[s.name],)) for s in profile.students)
pipeline.run_distill(dataclasses.replace(profile, students=students), out=sys.argv[1], seeds=(0, 1, 2),
                     resume=True, progress=False)
