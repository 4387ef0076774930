"""How long a run takes to save on Ctrl-C or SIGTERM, for the ``full`` profile's largest student and its teacher.

A stopped run writes its one checkpoint (weights, AdamW state, the best weights kept so far, RNG states: what
``kd_tutorial.train`` saves on Ctrl-C) before it exits; a container or scheduler that sends SIGKILL first cuts that
save short (the previous checkpoint stands: the write is atomic, but the steps since it are lost). No Hub here: the
student (distil-6L, the largest the ``full`` profile trains) is built from bert-base-uncased's configuration with
random weights, as the teacher is; the checkpoint's size does not depend on the weights. Each model trains two steps
on 8 short rows, one thread (as a worker does), then a KeyboardInterrupt lands in its third step; every checkpoint
write is timed (the student validates each step, so it keeps best weights as a distill run does; the teacher saves
at its stop and, here, once at its epoch's end). With ``pair``, two students run in two processes at once, as two
workers side by side save together.

    python docs/tuning/stop_save.py docs/tuning/stop-save-times.json
"""
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

import torch
from transformers import BertConfig, BertForSequenceClassification

import kd_tutorial.train as T
from kd_tutorial import models, profiles
from kd_tutorial.data import Encoded


def timed_saves(which: str) -> dict:
    """Train ``which`` (student or teacher) two steps, stop it in its third, and time every checkpoint it wrote."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(num_labels=2))  # bert-base-uncased's shape
    spec = max(profiles.PROFILES["full"].students, key=lambda s: (s.num_layers, s.hidden_size or 768))
    model = models.build_student(spec, teacher, init="random") if which == "student" else teacher
    rows = Encoded([[101] + [1000 + i] * 30 + [102] for i in range(8)], torch.tensor([0, 1] * 4))
    times, calls, real_save, real_step = [], [], T._Run.checkpoint, T._Run.micro_batch

    def checkpoint(self, rng=None):
        start = time.perf_counter()
        real_save(self, rng)
        times.append(round(time.perf_counter() - start, 2))

    def micro_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)
    T._Run.checkpoint, T._Run.micro_batch = checkpoint, micro_batch
    folder = tempfile.mkdtemp(dir=os.environ.get("TMPDIR", "/tmp"))
    keep_best = which == "student"
    config = T.TrainConfig(max_steps=10, batch_size=4, seed=0, keep_best=keep_best, eval_every=1 if keep_best else None)
    try:
        T.train(model, rows, config=config, val_data=rows if keep_best else None, checkpoint_dir=folder, progress=False)
    except KeyboardInterrupt:
        pass
    finally:
        T._Run.checkpoint, T._Run.micro_batch = real_save, real_step
    size = os.path.getsize(os.path.join(folder, "last.pt"))
    shutil.rmtree(folder)
    name = spec.name if which == "student" else "bert-base-uncased (teacher)"
    return {"model": name, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
            "checkpoint_GB": round(size / 1e9, 2), "save_seconds": times, "the_last_is_the_save_on_stop": True}


def main(out: str) -> None:
    """Write the record: one student, the teacher, then two students at once."""
    record = {"cpu_count": os.cpu_count(), "load_average_before": os.getloadavg(), "alone": [], "pair": []}
    for which in ("student", "teacher"):
        record["alone"].append(timed_saves(which))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        record["pair"] = pool.map(timed_saves, ["student", "student"])
    record["load_average_after"] = os.getloadavg()
    with open(out, "w") as f:
        json.dump(record, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
