"""The cpu teacher's outputs on train + transfer in two passes (logits, then mapped layers) or in one.

``time ORDER``: times ``cpu``'s teacher phases as :func:`kd_tutorial.pipeline.run_distill` runs them, in ``ORDER``:
``logits-first`` (the logits pass, then a layer pass: the order before the fused pass, and what it gives on any
commit) or ``layers-first`` (the order of ``run_distill`` now: the layer pass also caches the logits). Prints
the seconds of each phase as JSON. ``compare A B``: whether two artifact folders hold the same teacher outputs,
logits and [CLS] states by ``torch.equal``, layer files byte for byte.

Run with ``KD_TUTORIAL_HOME`` (an empty cache, or one holding only the teacher) and ``KD_TUTORIAL_DATA_DIR``
pointing at the real IMDB files; see docs/tuning.md, "One teacher pass for its logits and its layers".
"""
import filecmp
import json
import sys
import time
from pathlib import Path

import torch

from kd_tutorial import pipeline, plan, teacher_layers
from kd_tutorial.profiles import get_profile


def time_phases(order: str) -> dict:
    """Seconds of the teacher, its logits and its layers, with the two passes in ``order``."""
    profile, seconds, start = get_profile("cpu"), {}, time.perf_counter()

    def lap(name):
        nonlocal start
        now = time.perf_counter()
        seconds[name], start = round(now - start, 1), now
    teacher, prep, _ = pipeline.ensure_teacher(profile, seed=0, device="cpu", progress=False)
    lap("teacher")
    kw = dict(teacher_model=teacher, data_dir=None, teacher=None, init="pretrained", seed=0, device="cpu",
              progress=False)
    keys = teacher_layers.cached_layer_keys(profile, profile.students, lambda spec: [
        r for r in plan.student_recipes(profile, spec, None) if plan.applicable(r, spec, teacher.config.num_attention_heads)],
        teacher.config.num_hidden_layers)
    steps = {"teacher_logits": lambda: pipeline.teacher_outputs(profile, prep, None, **kw),
             "teacher_layers": lambda: pipeline.teacher_layer_cache(profile, prep, keys, **kw)}
    for name in (("teacher_logits", "teacher_layers") if order == "logits-first" else
                 ("teacher_layers", "teacher_logits")):
        steps[name]()
        lap(name)
    return {"order": order, "seconds": seconds, "directory": str(prep.directory)}


def same_outputs(a: Path, b: Path) -> dict:
    """``{file: equal}`` for every cached teacher output in folder ``a``."""
    out = {}
    for name in sorted(p.name for p in a.iterdir() if p.suffix in (".pt", ".npy")):
        out[name] = (bool(torch.equal(torch.load(a / name), torch.load(b / name))) if name.endswith(".pt")
                     else filecmp.cmp(a / name, b / name, shallow=False))
    return out


if __name__ == "__main__":
    if sys.argv[1] == "time":
        print(json.dumps(time_phases(sys.argv[2]), indent=1))
    else:
        print(json.dumps(same_outputs(Path(sys.argv[2]), Path(sys.argv[3])), indent=1))
