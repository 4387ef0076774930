"""Exercises for notebook 06 (evaluation): measuring a speed-up honestly.

The checks time the learner's code against :class:`FakeModel`, whose latency
is known: ``base + per_item * batch_size`` seconds per call, ten times slower
for the first few calls (warm-up: lazy initialisation, autotuning, caches),
and *asynchronous* like a GPU: a call only queues the work, which finishes
later; ``sync()`` waits for it (``torch.cuda.synchronize()`` on a GPU).

The fakes run on a :class:`VirtualClock`: waiting for queued work advances the
clock instead of sleeping, and while a check runs, ``time.perf_counter()`` (and
``time.monotonic``, ``time.time``, their ``_ns`` forms and ``time.sleep``) read
that clock in the checking thread. A correct measurement is therefore exact,
costs no real time, and does not depend on how busy the machine is.
"""
from __future__ import annotations

import math
import sys
import threading
import time
from contextlib import contextmanager
from types import FunctionType, SimpleNamespace

import torch

from .core import Exercise, LearnerCrash, Wrong, as_float, wrong_return

CLOCKS = ("perf_counter", "monotonic", "time")  # float seconds; each also has an ``_ns`` form


class RealClock:
    """The machine's clock: waiting really sleeps (for trying the fakes out in a notebook)."""

    @staticmethod
    def now() -> float:
        """The machine's clock, in seconds."""
        return time.perf_counter()

    @staticmethod
    def advance_to(when: float) -> None:
        """Sleep until the clock reads ``when``."""
        delay = when - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


class VirtualClock:
    """Seconds that pass only when the fake device waits (or the code under check sleeps)."""

    def __init__(self):
        self.elapsed = 0.0

    def now(self) -> float:
        """The seconds that have passed so far."""
        return self.elapsed

    def advance_to(self, when: float) -> None:
        """Move the clock on to ``when`` (never back)."""
        self.elapsed = max(self.elapsed, when)

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass, without waiting."""
        self.elapsed += max(0.0, float(seconds))


def _patched_clocks(clock: VirtualClock, real: dict, on_read=None, live=(True,)) -> dict:
    """The ``time`` functions that read ``clock`` in the calling thread while ``live[0]`` (the real ones elsewhere,
    and after the check: a module first imported during the check may have kept one)."""
    me = threading.get_ident()
    start = {c: real[c]() for c in CLOCKS}
    start0 = clock.elapsed

    def seconds(c):
        return lambda: start[c] + (clock.elapsed - start0)

    def nanoseconds(c):
        return lambda: int(round((start[c] + (clock.elapsed - start0)) * 1e9))

    virtual = {c: seconds(c) for c in CLOCKS} | {f"{c}_ns": nanoseconds(c) for c in CLOCKS}
    virtual["sleep"] = clock.sleep

    def per_thread(name):
        fake, original = virtual[name], real[name]
        reads = on_read is not None and name != "sleep"

        def fn(*args):
            if not live[0] or threading.get_ident() != me:
                return original(*args)
            if reads:
                on_read()
            return fake(*args)
        fn.__name__ = fn.__qualname__ = name
        return fn

    return {name: per_thread(name) for name in real}


def _redirect_defaults(fn, swap, undo: list) -> None:
    """Point ``fn``'s default arguments that hold a real clock (``clock=time.perf_counter``) at the virtual one."""
    for attr in ("__defaults__", "__kwdefaults__"):
        old = getattr(fn, attr, None)
        if not old:
            continue
        values = old.values() if isinstance(old, dict) else old
        if any(swap(v) is not None for v in values):
            new = {k: swap(v) or v for k, v in old.items()} if isinstance(old, dict) else \
                tuple(swap(v) or v for v in old)
            setattr(fn, attr, new)
            undo.append((fn, attr, old))


def _redirect_namespace(namespace: dict, real: dict, patched: dict, undo: list) -> None:
    """Redirect the learner's saved references to the real clocks: ``from time import perf_counter``, a default
    argument ``clock=time.perf_counter`` and a class attribute ``now = staticmethod(time.perf_counter)``."""
    by_id = {id(f): name for name, f in real.items()}

    def swap(value):
        name = by_id.get(id(value))
        return patched[name] if name is not None and value is real[name] else None

    for key, value in list(namespace.items()):
        if swap(value) is not None:
            namespace[key] = swap(value)
            undo.append((namespace, key, value))
        elif isinstance(value, FunctionType):
            _redirect_defaults(value, swap, undo)
        elif isinstance(value, type):
            _redirect_class(value, swap, undo)


def _redirect_class(cls: type, swap, undo: list) -> None:
    """Class attributes holding a clock (``now = time.perf_counter``, or in a staticmethod) read the virtual one."""
    for attr, held in list(vars(cls).items()):
        inner = held.__func__ if isinstance(held, staticmethod) else held
        if swap(inner) is None:
            continue
        try:  # a staticmethod either way: the patched clock is a Python function, which would bind as a method
            setattr(cls, attr, staticmethod(swap(inner)))
        except Exception:  # a metaclass that refuses setattr: that class keeps the machine's clock
            continue
        undo.append((cls, attr, held))


def _redirect_timeit(real: dict, patched: dict, undo: list) -> None:
    """``timeit.default_timer``, and timeit's functions that bound it as a default when timeit was imported."""
    timeit = sys.modules.get("timeit")
    if timeit is None:
        return
    if timeit.default_timer is real["perf_counter"]:
        timeit.default_timer = patched["perf_counter"]
        undo.append((timeit, "default_timer", real["perf_counter"]))
    for fn in (timeit.timeit, timeit.repeat, timeit.Timer.__init__):  # timer=default_timer (Jupyter imports early)
        _redirect_defaults(fn, lambda v: patched["perf_counter"] if v is real["perf_counter"] else None, undo)


@contextmanager
def virtual_time(clock: VirtualClock, namespace: dict | None = None, on_read=None):
    """Let the calling thread's ``time`` functions read ``clock`` (other threads keep the real ones).

    Each virtual reading is the real reading at entry plus ``clock``'s elapsed seconds, so values look
    like the real clock's. ``namespace`` (the learner's globals) may hold saved references to the clocks
    (``from time import perf_counter``, a default argument, a class attribute): they are redirected too, as is
    ``timeit.default_timer``. ``on_read()`` is called at each reading of a virtual clock.
    """
    real = {name: getattr(time, name) for name in (*CLOCKS, *(f"{c}_ns" for c in CLOCKS), "sleep")}
    live = [True]
    patched = _patched_clocks(clock, real, on_read, live)
    undo = []  # (mapping, module, class or function; name; original value), each added once its change is made
    try:  # from the first change on: a failure while redirecting must not leave the time module patched
        for name, fn in patched.items():
            setattr(time, name, fn)
            undo.append((time, name, real[name]))
        _redirect_timeit(real, patched, undo)
        _redirect_namespace(namespace or {}, real, patched, undo)
        yield clock
    finally:
        live[0] = False
        _restore(undo)


def _restore(undo: list) -> None:
    """Undo the changes in ``undo``, latest first; each is tried even when one fails (the first failure is raised)."""
    failed = None
    for target, name, value in reversed(undo):
        try:
            if isinstance(target, dict):
                target[name] = value
            else:
                setattr(target, name, value)
        except Exception as exc:  # a learner's class that refuses to be given its attribute back
            failed = failed or exc
    if failed is not None:
        raise failed


class FakeDevice:
    """A fake accelerator queue shared by fake models: ``sync()`` waits for all queued work.

    ``clock``: a :class:`VirtualClock` in the checks; by default the real clock, so that a learner can
    try ``measure_latency(FakeModel(), make_batch(4), ...)`` in the notebook.
    """

    def __init__(self, clock: VirtualClock | RealClock | None = None):
        self.clock = clock or RealClock()
        self.busy_until = 0.0
        self.idle = True  # no queued call since the last sync()
        self.syncs = 0    # how many times sync() was called (the checks tell "never synchronised" apart)

    def sync(self) -> None:
        """Wait until every queued call has finished (like ``torch.cuda.synchronize()``)."""
        self.clock.advance_to(self.busy_until)
        self.idle = True
        self.syncs += 1


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
        dev.busy_until = max(dev.clock.now(), dev.busy_until) + cost  # queued, like a CUDA launch
        dev.idle = False
        return SimpleNamespace(logits=torch.zeros(bs, self.num_labels))

    def eval(self):
        """As ``nn.Module.eval``: nothing to switch."""
        return self

    def to(self, *_, **__):
        """As ``nn.Module.to``: the fake model stays where it is."""
        return self


def make_batch(batch_size: int, length: int = 16) -> dict:
    """A dummy batch of ``batch_size`` sequences (for the fake models)."""
    ids = torch.ones(batch_size, length, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _close(got: float, want: float) -> bool:
    """Equal up to rounding: on the virtual clock a correct measurement is exact."""
    return abs(got - want) <= 1e-3 * abs(want)


def _measure(call, clock: VirtualClock, *args, on_read=None):
    """Call the learner's function with the ``time`` functions reading ``clock``."""
    learner = getattr(call, "__wrapped__", None)
    with virtual_time(clock, getattr(learner, "__globals__", None), on_read):
        return call(*args)


_FIXED = "use the `warmup` and `repeats` arguments, not fixed counts"


def _check_latency(call):
    # two settings, each with exactly `warmup` slow first calls: fixed warm-up or repeat counts fail one of them, and
    # repeats - warmup differs between them, so a warm-up of `repeats` calls shows (the clock starts repeats - warmup
    # calls late in one, by another number in the other), as does a fixed warm-up
    settings = ((4, 0.010, 0.0, 5, 10), (8, 0.006, 0.00075, 2, 9))
    starts = [_check_latency_at(call, *setting) for setting in settings]
    if None in starts or len({a - s[3] for a, s in zip(starts, settings)}) == 1:
        return
    (a1, w1, r1), (a2, w2, r2) = ((a, s[3], s[4]) for a, s in zip(starts, settings))
    if (a1, a2) == (r1, r2):
        raise Wrong(f"your warm-up ran `repeats` calls: your clock started after {a1} model calls with repeats={r1} "
                    f"and after {a2} with repeats={r2}, whatever warmup was ({w1}, then {w2}): warm up with "
                    "for _ in range(warmup)")
    if a1 == a2:
        raise Wrong(f"your clock started after {a1} model calls both with warmup={w1} and with warmup={w2}: make "
                    f"`warmup` untimed calls (for _ in range(warmup)), then time `repeats` calls; {_FIXED}")
    raise Wrong(f"your clock started after {a1} model calls with warmup={w1} and after {a2} with warmup={w2}: the "
                f"untimed calls before it should follow `warmup`; {_FIXED}")


def _timed_start(reads: list, calls: int, warmup: int, repeats: int) -> int | None:
    """For a right value: how many model calls were made before the clock first timed one (None when the clock was
    never read around a call). ``reads``: the calls made at each reading of the clock."""
    spans = [b - a for a, b in zip(reads, reads[1:]) if b > a]  # model calls between consecutive readings
    if not spans:
        if calls == warmup + repeats:
            return None
        raise Wrong(f"with warmup={warmup} and repeats={repeats} the model should be called {warmup + repeats} "
                    f"times (warmup untimed calls, then repeats timed ones); it was called {calls} times: {_FIXED}")
    first = next(a for a, b in zip(reads, reads[1:]) if b > a)
    if first < warmup:
        raise Wrong(f"with warmup={warmup} your clock started after only {first} model calls: make the `warmup` "
                    "warm-up calls before starting the clock (timing them and keeping the fastest run, as "
                    "timeit.repeat does, is not a warm-up)")
    # `repeats` calls in one span (timeit.repeat, torch.utils.benchmark time more spans), or each timed on its own
    if repeats in spans or sum(spans) == repeats:
        return first
    n, sizes = len(spans), sorted(set(spans))
    seen = (f"{n} calls, each on its own" if sizes == [1] else f"one span of {spans[0]} calls" if n == 1 else
            f"{n} spans of {', '.join(map(str, sizes[:4]))}{', ...' if len(sizes) > 4 else ''} calls, "
            f"{sum(spans)} in all")
    raise Wrong(f"with repeats={repeats} your clock timed {seen}: time `repeats` calls (in one span, or each on "
                f"its own); {_FIXED}")


def _check_synced_end(reads: list, idle: list, timed: int) -> None:
    """Refuse a clock stopped with work still queued: once the ``timed`` calls (warm-up and repeats) are made, or at
    the last reading if fewer were, at least one reading must find the device idle (``reads``: the calls made at
    each reading; ``idle``: whether sync() had been called since the last call). Readings inside the loop with a
    sync() after it are fine, and so are an untimed call and a clock read after the measurement (a log line)."""
    end = min(reads[-1], timed) if reads else 0
    if reads and reads[-1] > reads[0] and not any(ok for n, ok in zip(reads, idle) if n >= end and n > reads[0]):
        raise Wrong("your clock stopped while the last timed call was still running: your last sync() came before "
                    "the last model call (at the top of the loop, say), so that call's work was not waited for. Call "
                    "sync() after the timing loop, before reading the clock")


def _check_latency_at(call, batch_size, base_s, per_item_s, warmup, repeats) -> int | None:
    """Check the learner's latency in one setting; the calls made before the clock started (see _timed_start)."""
    clock, reads, idle = VirtualClock(), [], []
    model = FakeModel(base_s=base_s, per_item_s=per_item_s, cold_calls=warmup, cold_factor=8.0,
                      device=FakeDevice(clock))
    expected = model.latency(batch_size)
    got = as_float(_measure(call, clock, model, make_batch(batch_size), model.sync, warmup, repeats,
                            on_read=lambda: (reads.append(model.calls), idle.append(model.device.idle))),
                   "measure_latency")
    ms = lambda x: f"{x * 1e3:.1f} ms"  # noqa: E731
    calls = model.calls
    if calls < repeats:
        raise Wrong(f"with repeats={repeats} the model should be called at least {repeats} times, it was called "
                    f"{calls} times")
    # a right value with warmup + repeats calls left the cold calls out of the result (one would show: it is 8
    # times slower), however the clock was read; extra calls (timeit.repeat, torch.utils.benchmark, a call to look
    # at the output) are fine when the warm-up came first and `repeats` calls were timed
    if _close(got, expected):
        _check_synced_end(reads, idle, warmup + repeats)
        return warmup if calls == warmup + repeats else _timed_start(reads, calls, warmup, repeats)
    if abs(calls - (warmup + repeats)) == 1:  # range(warmup - 1), range(repeats + 1), ...
        raise Wrong(f"with warmup={warmup} and repeats={repeats} the model was called {calls} times, one "
                    f"{'too many' if calls > warmup + repeats else 'too few'}: make range(warmup) untimed calls, "
                    f"then range(repeats) timed ones; {_FIXED}")
    if calls not in (warmup + repeats, repeats):  # `repeats` calls only: no warm-up, diagnosed below
        raise Wrong(f"with warmup={warmup} and repeats={repeats} the model should be called {warmup + repeats} "
                    f"times (warmup untimed calls, then repeats timed ones); it was called {calls} times, and you "
                    f"measured {ms(got)} per call, not {ms(expected)}: {_FIXED}")
    if _close(got, expected * 1000):
        raise Wrong("return seconds, not milliseconds")
    if _close(got, expected * 1e9):
        raise Wrong("return seconds, not nanoseconds: time.perf_counter_ns() counts nanoseconds, so divide by 1e9 "
                    "(or use time.perf_counter())")
    if _close(got, expected * repeats):
        raise Wrong(f"you returned the total time of all repeats ({ms(got)}): divide by repeats")
    if _close(got * batch_size, expected) and batch_size > 1:
        raise Wrong(f"you measured {ms(got)}, the time per review: return the seconds per call of model(**batch) "
                    f"(all {batch_size} reviews of the batch), {ms(expected)}; do not divide by the batch size")
    if got < 0.3 * expected and model.device.idle and reads and not all(idle):  # a reading with work still queued
        raise Wrong(f"you measured {ms(got)} per call, but the work takes {ms(expected)}: your clock was read while "
                    "the work was still queued, and the sync() after the reading came too late. Call sync() before "
                    "each reading of the clock (before starting it and before stopping it)")
    if got < 0.3 * expected and model.device.idle and not reads:
        raise Wrong(f"you measured {ms(got)} per call, but the work takes {ms(expected)} and you waited for it "
                    "with sync(): your clock did not see the wait. Call time.perf_counter() inside the function (a "
                    "reference saved elsewhere may keep the machine's clock, which the check cannot see)")
    if got < 0.3 * expected and not model.device.idle:
        raise Wrong(f"you measured {ms(got)} per call, but the work takes {ms(expected)}: calls return before "
                    "the work is done (asynchronous, as on a GPU). Call sync() before starting the clock "
                    "and again before stopping it")
    if got > 1.35 * expected:
        raise Wrong(f"you measured {ms(got)} per call, but a warm call takes {ms(expected)}: the slow "
                    "warm-up calls ended up inside your timed region. Run `warmup` calls first, then "
                    "sync() before starting the clock")
    _check_synced_end(reads, idle, warmup + repeats)
    raise Wrong(f"you measured {ms(got)} per call; expected {ms(expected)}")


def _zero_latency(device: FakeDevice) -> Wrong:
    """A latency of 0 s (nothing to divide by): on the fakes, only a clock that stopped before the work did."""
    if device.syncs == 0:
        return Wrong("a latency came out as 0 s, so the speed-up divides by zero: pass `sync` to `measure_latency`"
                     ", as in measure_latency(teacher, batch, sync) (without it the clock stops before the work is "
                     "done)")
    return Wrong("a latency came out as 0 s, so the speed-up divides by zero: time each model with your "
                 "measure_latency(model, batch, sync), which syncs before it stops the clock")


def _check_speedups(call):
    clock = VirtualClock()
    device = FakeDevice(clock)
    teacher = FakeModel(base_s=0.004, per_item_s=0.001, device=device)
    # the student's first calls are slow by another factor than the teacher's: unwarmed timings then do not cancel
    student = FakeModel(base_s=0.004, per_item_s=0.0002, cold_factor=3.0, device=device)
    sizes = [1, 8, 32]
    try:
        res = _measure(call, clock, teacher, student, make_batch, list(sizes), device.sync)
    except LearnerCrash as crash:
        if isinstance(crash.exc, (ZeroDivisionError, OverflowError)):
            raise _zero_latency(device) from None
        raise
    want = f"a dict {{batch_size: speed-up}} with the keys {sizes}"
    if not isinstance(res, dict):
        raise wrong_return(res, want, "speedups")
    try:
        keys = {k: int(k) for k in res}
    except (TypeError, ValueError, OverflowError, RuntimeError):
        raise wrong_return(res, want, "speedups") from None
    if sorted(keys.values()) != sizes:
        raise wrong_return(res, want, "speedups")
    got = {keys[k]: as_float(v, f"your speed-up for batch size {keys[k]}") for k, v in res.items()}
    expected = {b: teacher.latency(b) / student.latency(b) for b in sizes}
    if student.calls == 0:
        raise Wrong("the student was never called: time both models")
    if any(not math.isfinite(v) or v <= 0 for v in got.values()):  # numpy / torch: 0 / 0 is nan, x / 0 is inf
        raise _zero_latency(device)
    if all(_close(got[b], expected[b]) for b in sizes):
        return
    raise Wrong(_speedup_mistake(got, teacher.latency, student.latency, sizes))


def _speedup_mistake(got: dict, t, s, sizes: list) -> str:
    """What is wrong with speed-ups ``got`` that differ from ``t(b) / s(b)`` (``t``, ``s``: the true latencies)."""
    shown = lambda d: "{" + ", ".join(f"{b}: {v:.3g}" for b, v in d.items()) + "}"  # noqa: E731
    expected = {b: t(b) / s(b) for b in sizes}
    first, rest = sizes[0], sizes[1:]
    variants = {
        "you computed student time / teacher time: the speed-up is teacher latency / student latency":
            {b: s(b) / t(b) for b in sizes},
        f"you timed the teacher once, at batch size {first}, and divided that by the student's latency at each "
        "size: time both models on the same batch of each size":
            {b: t(first) / s(b) for b in sizes},
        f"you timed the student once, at batch size {first}, and divided the teacher's latency at each size by it: "
        "time both models on the same batch of each size":
            {b: t(b) / s(first) for b in sizes},
        "you divided the teacher's time per review (latency / batch size) by the student's time per batch: "
        "compare like with like, the two latencies of the same batch":
            {b: t(b) / b / s(b) for b in sizes},
        "you divided the teacher's time per batch by the student's time per review (latency / batch size): "
        "compare like with like, the two latencies of the same batch":
            {b: t(b) * b / s(b) for b in sizes},
        "you returned the percentage of time saved, 100 x (1 - student / teacher): the speed-up is the ratio "
        "teacher latency / student latency":
            {b: 100 * (1 - s(b) / t(b)) for b in sizes},
        "you computed how much faster the student is, (teacher - student) / student, which is the speed-up - 1: "
        "the speed-up is the plain ratio teacher latency / student latency":
            {b: t(b) / s(b) - 1 for b in sizes},
    }
    for message, values in variants.items():
        if all(_close(got[b], values[b]) for b in sizes):
            return message
    if max(got.values()) < 1.3 * min(got.values()):
        return (f"your speed-ups barely change with the batch size ({shown(got)}): time a batch of each size "
                "(make_batch(batch_size)); fixed per-call overheads make small batches look worse")
    if rest and all(_close(got[b], expected[b]) for b in rest):
        return (f"only your speed-up for batch size {first}, the first one measured, is off ({got[first]:.2f}, not "
                f"{expected[first]:.2f}): the first calls of a model are slow (warm-up), so time each model only "
                "after `warmup` untimed calls, as measure_latency does")
    return (f"your speed-ups {shown(got)} differ from teacher latency / student latency, {shown(expected)}. Likely "
            "causes: timings without warm-up or sync(), the models timed on batches of different sizes, another "
            "formula than the ratio")


q1 = Exercise(
    "ex06.q1", "Measuring latency honestly", "measure_latency", _check_latency,
    hints=(
        'An honest latency is the steady-state time of one call: the first calls pay one-off costs '
        '(allocation, kernel selection, caches), and on a GPU a call returns before the work is done, so the '
        'clock must only stop once the device has finished.',
        'time.perf_counter() is the clock for intervals; call sync() (torch.cuda.synchronize on a GPU) before'
        ' starting and before stopping it; torch.inference_mode() avoids autograd bookkeeping.',
        'Call the model warmup times without timing; sync(); read the clock; call it repeats times; sync() '
        'again; read the clock; return the elapsed time divided by repeats, in seconds per call (not the '
        'total, not milliseconds).',
    ),
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
    hints=(
        'A speed-up is a ratio of latencies measured on the same input: teacher time over student time. It '
        'depends on the batch size (fixed overheads dominate small batches), so measure it separately for '
        'each size.',
        'Reuse your measure_latency(model, batch, sync) from q1; make_batch(b) builds a batch of size b; '
        'return a dict keyed by batch size.',
        'For each b in batch_sizes: build one batch with make_batch(b), time the teacher and the student on '
        'that same batch with the same sync, and store teacher latency / student latency (not the inverse) '
        'under the key b.',
    ),
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

__all__ = ["q1", "q2", "FakeModel", "FakeDevice", "RealClock", "VirtualClock", "make_batch", "virtual_time"]
