"""e24: the students' hidden-state dropout, 0 against BERT's 0.1, for `kd+transfer` on the `cpu` profile.

Usage: python docs/tuning/student_dropout.py OUT_FOLDER P [train-only]   (KD_TUTORIAL_DATA_DIR: the IMDB parquet files)

Runs `kd-tutorial distill --profile cpu --recipes kd+transfer --seeds 0 1 2 --resume` in-process, with every
non-attention dropout of each student (embeddings, the two per layer, the classifier's) set to P. The profile has
no such setting, so the script patches `pipeline.build_student`, and adds P to each run's cache key unless it is
BERT's own 0.1 (so those runs stay the profile's). Forked workers inherit both patches. Choose on validation only.
With "train-only", the runs are trained (two at a time) into the artifact cache and not evaluated:
`student_dropout_compare.py` scores both settings on the same test reviews.
"""
import dataclasses
import sys

from kd_tutorial import pipeline
from kd_tutorial.models import set_hidden_dropout
from kd_tutorial.profiles import get_profile

OUT, P = sys.argv[1], float(sys.argv[2])
real_build, real_key = pipeline.build_student, pipeline.run_key


def build(*args, **kwargs):
    return set_hidden_dropout(real_build(*args, **kwargs), P)  # the package's student_hidden_dropout since e25


def key(*args, **kwargs):
    return real_key(*args, **kwargs) + ((("student hidden dropout", P),) if P != 0.1 else ())


pipeline.build_student, pipeline.run_key = build, key
profile = get_profile("cpu").replace(student_hidden_dropout=None)  # 0.1 unless patched (preset: 0 since e25)
profile = profile.replace(students=tuple(dataclasses.replace(s, spare_reviews=False)  # its runs predate e32
                                         for s in profile.students))
if sys.argv[3:] == ["train-only"]:
    from kd_tutorial import parallel, teachers
    teacher, prep, _ = teachers.ensure_teacher(profile, progress=False)
    logits = {s: teachers.ensure_teacher_logits(profile, s, progress=False) for s in ("train", "transfer")}
    pipeline.distill_students(profile, teacher, prep, logits, seeds=(0, 1, 2), runs=["kd+transfer"], resume=True,
                              progress=False, workers=parallel.default_workers("cpu"), layers={})
else:
    pipeline.run_distill(profile, out=OUT, seeds=(0, 1, 2), runs=["kd+transfer"], resume=True, progress=False)
