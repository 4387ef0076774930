"""Exercises for notebook 06 (evaluation): measuring a speed-up honestly.

The checks time the learner's code against :class:`FakeModel`, whose latency
is known: ``base + per_item * batch_size`` seconds per call, ten times slower
for the first few calls (warm-up: lazy initialisation, autotuning, caches),
and *asynchronous* like a GPU: a call only queues the work, which finishes
later; ``sync()`` waits for it (``torch.cuda.synchronize()`` on a GPU).
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import torch

from .core import Exercise, Wrong, as_float


class FakeDevice:
    """A fake accelerator queue shared by fake models: ``sync()`` waits for all queued work."""

    def __init__(self):
        self.busy_until = 0.0

    def sync(self) -> None:
        """Wait until every queued call has finished (like ``torch.cuda.synchronize()``)."""
        delay = self.busy_until - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


class FakeModel:
    """A stand-in model with known latency, asynchronous execution and slow first calls."""

    def __init__(self, base_s: float = 0.010, per_item_s: float = 0.0, cold_calls: int = 3,
                 cold_factor: float = 8.0, num_labels: int = 2, device: FakeDevice | None = None):
        self.base_s, self.per_item_s = base_s, per_item_s
        self.cold_calls, self.cold_factor = cold_calls, cold_factor
        self.num_labels = num_labels
        self.calls = 0
        self.device = device or FakeDevice()
        self.sync = self.device.sync

    def latency(self, batch_size: int) -> float:
        """Steady-state seconds per call for ``batch_size`` inputs."""
        return self.base_s + self.per_item_s * batch_size

    def __call__(self, input_ids=None, attention_mask=None, **_):
        bs = int(input_ids.shape[0])
        cost = self.latency(bs) * (self.cold_factor if self.calls < self.cold_calls else 1.0)
        self.calls += 1
        dev = self.device
        dev.busy_until = max(time.perf_counter(), dev.busy_until) + cost  # queued, like a CUDA launch
        return SimpleNamespace(logits=torch.zeros(bs, self.num_labels))

    def eval(self):
        return self

    def to(self, *_, **__):
        return self


def make_batch(batch_size: int, length: int = 16) -> dict:
    """A dummy batch of ``batch_size`` sequences (for the fake models)."""
    ids = torch.ones(batch_size, length, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _check_latency(call):
    model = FakeModel(base_s=0.010, cold_calls=3, cold_factor=8.0)
    expected = model.latency(4)
    got = as_float(call(model, make_batch(4), model.sync, 5, 10), "measure_latency")
    ms = lambda x: f"{x * 1e3:.1f} ms"  # noqa: E731
    if model.calls < 10:
        raise Wrong(f"with repeats=10 the model should be called at least 10 times, it was called "
                    f"{model.calls} times")
    if 0.7 * expected <= got <= 1.35 * expected + 0.002:
        return
    if 0.7 * expected * 1000 <= got <= 1.35 * expected * 1000 + 2:
        raise Wrong("return seconds, not milliseconds")
    if 0.7 * expected * 10 <= got <= 1.35 * expected * 10 + 0.01:
        raise Wrong(f"you returned the total time of all repeats ({ms(got)}): divide by repeats")
    if got < 0.3 * expected:
        raise Wrong(f"you measured {ms(got)} per call, but the work takes {ms(expected)}: calls return before "
                    "the work is done (asynchronous, as on a GPU). Call sync() before starting the clock "
                    "and again before stopping it")
    if got > 1.35 * expected:
        raise Wrong(f"you measured {ms(got)} per call, but a warm call takes {ms(expected)}: the slow "
                    "warm-up calls ended up inside your timed region. Run `warmup` calls first, then "
                    "sync() before starting the clock")
    raise Wrong(f"you measured {ms(got)} per call; expected about {ms(expected)}")


def _check_speedups(call):
    device = FakeDevice()
    teacher = FakeModel(base_s=0.004, per_item_s=0.001, device=device)
    student = FakeModel(base_s=0.004, per_item_s=0.0002, device=device)
    sizes = [1, 8, 32]
    res = call(teacher, student, make_batch, list(sizes), device.sync)
    if not isinstance(res, dict) or sorted(int(k) for k in res) != sizes:
        raise Wrong(f"return a dict {{batch_size: speed-up}} with the keys {sizes}")
    got = {int(k): as_float(v, "a speed-up") for k, v in res.items()}
    expected = {b: teacher.latency(b) / student.latency(b) for b in sizes}
    if student.calls == 0:
        raise Wrong("the student was never called: time both models")
    if all(0.75 * expected[b] <= got[b] <= 1.3 * expected[b] for b in sizes):
        return
    if all(0.75 / expected[b] <= got[b] <= 1.3 / expected[b] for b in sizes):
        raise Wrong("you computed student time / teacher time: the speed-up is teacher latency / student latency")
    if max(got.values()) < 1.3 * min(got.values()):
        raise Wrong(f"your speed-ups barely change with the batch size ({got}): time a batch of each size "
                    "(make_batch(batch_size)); fixed per-call overheads make small batches look worse")
    raise Wrong(f"your speed-ups {({b: round(v, 2) for b, v in got.items()})} differ from the true ones "
                f"{({b: round(v, 2) for b, v in expected.items()})}: warm up, sync() around the timed region")


q1 = Exercise(
    "ex06.q1", "Measuring latency honestly", "measure_latency", _check_latency,
    hint="""Call the model `warmup` times, then sync(); start the clock (time.perf_counter()); call it
    `repeats` times; sync() again; stop the clock; return elapsed / repeats (seconds per call).""",
    solution='''
def measure_latency(model, batch, sync=lambda: None, warmup=3, repeats=10):
    """Seconds per call of model(**batch), after warm-up, with the device synchronised."""
    ### BEGIN SOLUTION
    with torch.inference_mode():
        for _ in range(warmup):
            model(**batch)
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            model(**batch)
        sync()
        elapsed = time.perf_counter() - start
    return elapsed / repeats
    ### END SOLUTION
''',
    success="Correct! Warm-up and synchronisation: the two classic benchmark traps.",
)

q2 = Exercise(
    "ex06.q2", "Speed-up across batch sizes", "speedups", _check_speedups,
    hint="""For each batch size b: batch = make_batch(b); speed-up = measure_latency(teacher, batch, sync) /
    measure_latency(student, batch, sync). Use your measure_latency from q1.""",
    solution='''
def speedups(teacher, student, make_batch, batch_sizes, sync=lambda: None):
    """{batch_size: teacher latency / student latency}."""
    ### BEGIN SOLUTION
    result = {}
    for b in batch_sizes:
        batch = make_batch(b)
        result[b] = measure_latency(teacher, batch, sync) / measure_latency(student, batch, sync)
    return result
    ### END SOLUTION
''',
    success="Correct! Report the speed-up per batch size: fixed overheads dominate small batches.",
)

__all__ = ["q1", "q2", "FakeModel", "FakeDevice", "make_batch"]
