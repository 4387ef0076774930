"""A CPU rehearsal of the ``full`` profile's GPU run: the same code path, at a size a CPU finishes in seconds.

What stays as on a GPU: a 12-layer teacher (narrow), reviews of up to 512 tokens with head+tail truncation,
IMDB's three splits with the unlabelled ``unsupervised`` one (label -1) as the transfer set, all three
students with their recipes (DistilBERT cosine, TinyBERT attention on layers 2, 5, 8, 11, MiniLM value
relations), fp16 autocast with its GradScaler (forced on the CPU, as a T4 would run) and gradient
accumulation (batch 4 x 2).

What shrinks, besides the data and the feed-forward sizes, is the width. The teacher is 16 wide with 4 heads,
and the compact student 8 wide with 2 heads: narrower than its teacher, with another head count, as the real
128-wide, 2-head student is beside a 768-wide, 12-head teacher (value relations across both differences,
relation_heads still 4). A CPU without fp16 units emulates fp16 matrix products, about 20 times slower than fp32
at width 128 (2 threads): with the real width this one test took 134 s of the suite on such a CPU, and 100 to
107 s with these.
"""
import csv
import dataclasses
import math
import random

import pytest
import torch

from kd_tutorial import models, pipeline, plan, teachers
from kd_tutorial.artifacts import prepare
from kd_tutorial.profiles import PROFILES

WORDS = ["the", "film", "plot", "acting", "scene", "story", "director", "music", "cast", "ending", "movie", "role"]
GOOD, BAD = ["great", "wonderful", "moving", "superb"], ["awful", "boring", "dull", "terrible"]


def _reviews(rng: random.Random, n: int, label_of, tag: str) -> list[dict]:
    rows = []
    for i in range(n):
        label = label_of(i)
        tone = GOOD if label == 1 else BAD if label == 0 else GOOD + BAD
        n_words = rng.randint(700, 900) if i % 10 == 0 else rng.randint(15, 60)  # 1 in 10 past 512 word pieces
        words = [rng.choice(tone) if rng.random() < 0.2 else rng.choice(WORDS) for _ in range(n_words)]
        rows.append({"text": f"{tag} number {i}: " + " ".join(words), "label": label})
    return rows


def _write(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def imdb_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("imdb-like")
    rng = random.Random(0)
    _write(root / "train.csv", _reviews(rng, 64, lambda i: i % 2, "train"))
    # 12 test reviews, 2 of them past 512 word pieces (CPU time of one run each: 76 s with 24, 65 s with 12): they are
    # only evaluated (one batch padded to 512, and batch-1 timings on a fake clock, for each of the 13 models), and no
    # check here reads a test score or a timing
    _write(root / "test.csv", _reviews(rng, 12, lambda i: i % 2, "test"))
    _write(root / "unsupervised.csv", _reviews(rng, 32, lambda i: -1, "unlabelled"))
    return root


def rehearsal_profile():
    full = PROFILES["full"]
    teacher = dict(hidden_size=16, num_hidden_layers=12, num_attention_heads=4, intermediate_size=32,
                   max_position_embeddings=512, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    narrow = {"compact": dict(hidden_size=8, num_heads=2, intermediate_size=32)}  # the names stay the profile's
    students = tuple(dataclasses.replace(s, **narrow.get(s.kind, {})) for s in full.students)
    return full.replace(
        name="full-rehearsal", teacher="tiny-bert", teacher_config=teacher, students=students,
        n_transfer=None, val_size=16, batch_size=4, grad_accum=2, eval_batch_size=32, precision="fp16",
        teacher_epochs=1, student_epochs=1, teacher_lr=1e-3, student_lr=1e-3, evals_per_run=2,
        val_block=None)  # runs of 100 with their 30-review fences would use up this small folder (tests/test_data.py)


def test_the_full_profile_path_runs_on_cpu_in_fp16_with_accumulation(imdb_like, tmp_path, monkeypatch, capsys):
    # a cache of its own: one that outlives the run (a KD_TUTORIAL_HOME of the developer's, which conftest keeps) held
    # this teacher on a second run, which then failed below (12 trainings, not 13)
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "kd-home"))
    profile = rehearsal_profile()
    assert [s.name for s in profile.students] == ["distil-6L", "distil-4L", "compact-2L-H128"]
    assert profile.max_length == 512 and profile.truncation == "head+tail"
    compact, teacher_config = profile.students[2], profile.teacher_config  # narrower, other heads, as 128 beside 768
    assert compact.hidden_size < teacher_config["hidden_size"]
    assert compact.num_heads != teacher_config["num_attention_heads"] and compact.relation_heads == 4
    seen, scaler = [], {"enabled_steps": 0, "growth": []}
    real_train = pipeline.train

    def spying_train(model, train_data, *, config, val_data=None, **kw):
        seen.append((kw.get("desc"), config, train_data, val_data))
        return real_train(model, train_data, config=config, val_data=val_data, **kw)
    for module in (pipeline, teachers):  # the students' and the teacher's training
        monkeypatch.setattr(module, "train", spying_train)
    real_update = torch.amp.GradScaler.update

    def spying_update(self, *args, **kwargs):
        real_update(self, *args, **kwargs)
        if self.is_enabled():
            scaler["enabled_steps"] += 1
            scaler["growth"].append(self._get_growth_tracker())
    monkeypatch.setattr(torch.amp.GradScaler, "update", spying_update)
    # a fake clock for the evaluation's timings (every timed forward pass 1 ms; their batching and quartiles still
    # run): no check here reads a timing, and each model's fp16 forward pass at 512 tokens still runs on the test
    # reviews for its logits. The real passes were a fifth of this test's CPU time (batch-1 latency, 13 models)
    from kd_tutorial import evaluate
    monkeypatch.setattr(evaluate, "_forward_ms", lambda model, batch, device, precision: 1.0)

    results = pipeline.run_distill(profile, data_dir=str(imdb_like), init="random", out=tmp_path / "run",
                                   device="cpu", progress=False)

    prep = prepare(profile, data_dir=str(imdb_like), init="random")
    lengths = prep.encoded["train"].lengths + prep.encoded["transfer"].lengths
    assert max(lengths) == 512 and min(lengths) < 100  # truncated reviews and short ones, as in IMDB
    assert (prep.encoded["transfer"].labels == -1).all() and len(prep.encoded["transfer"]) == 32
    assert results["run"]["precision"]["training"] == "fp16"
    assert results["run"]["precision"]["grad_accum"] == 2

    # every loss finite, every run its step budget, accumulation on
    runs = {desc: (config, data) for desc, config, data, _ in seen}
    assert len(runs) == 1 + 3 * 4  # the teacher, and 4 recipes for each of the 3 students
    for name, history in results["histories"].items():
        steps = history["steps"]
        assert steps and all(math.isfinite(s["loss"]) for s in steps), name
    for desc, (config, data) in runs.items():
        assert config.grad_accum == 2 and config.precision == "fp16" and config.batch_size == 4
        if desc.startswith("teacher"):
            continue
        spec = next(s for s in profile.students if desc.startswith(s.name + " "))
        budget = plan.step_budget(profile, spec, len(prep.encoded["train"]) + len(prep.encoded["transfer"]))
        assert config.max_steps == budget and results["histories"][desc]["steps"][-1]["step"] == budget, desc

    # the GradScaler ran at every optimizer step, and stepped (a skipped step resets its growth tracker)
    assert scaler["enabled_steps"] == sum(len(h["steps"]) for h in results["histories"].values())
    assert max(scaler["growth"]) >= 2

    # the teacher's cached logits: fp32, one row of 2 per review
    for split in ("train", "transfer", "test"):
        logits = torch.load(prep.split_file("logits", split))
        assert logits.dtype == torch.float32 and logits.shape == (len(prep.encoded[split]), 2)

    # the test reviews never reached training or validation
    test_rows = {tuple(ids) for ids in prep.encoded["test"].input_ids}
    for desc, _config, data, val in seen:
        for split in (data, val):
            assert not test_rows & {tuple(ids) for ids in split.input_ids}, desc

    # the 4L student starts from teacher layers 2, 5, 8, 11 (0-based) and learns from layers 3, 6, 9, 12
    printed = capsys.readouterr().out
    assert "distil-4L: " in printed and "student 1 <- teacher 3, 2 <- 6, 3 <- 9, 4 <- 12" in printed
    spec = profile.students[1]
    teacher = models.teacher_for_profile(profile, init="random")
    student = models.build_student(spec, teacher, init="random")
    for i, t in enumerate((2, 5, 8, 11)):
        assert torch.equal(student.bert.encoder.layer[i].output.dense.weight,
                           teacher.bert.encoder.layer[t].output.dense.weight)
    assert {r["name"] for r in results["models"]} >= {"distil-4L kd+transfer+attn", "compact-2L-H128 "
                                                      "kd+transfer+values", "distil-6L kd+transfer+cosine"}
