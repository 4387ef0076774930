"""Measuring speed: the course's loop against a naive one, and a one-command benchmark of a whole GPU.

:func:`loop_speed` (``kd-tutorial benchmark``): how much faster is the course's loop than a naive one?
Measured, same data, same student, in 3 pairs whose order alternates; the medians, their ranges, the environment
and the commit.

naive: every batch padded to ``max_length``, fp32, random batches, the teacher called at every step.
ours:  dynamic padding with length-grouped batches, bf16 autocast where the device has it, the
       teacher's logits computed once and read from a cache, and the profile's ``attention_dropout``
       (0 on the cpu profile, which lets the fused attention kernel run), ``student_hidden_dropout``
       (0 on the cpu profile: no dropout masks to draw) and ``freeze_word_embeddings`` (on the cpu profile: the
       word embeddings a layer-copied student took from the teacher get no gradient and no Adam update).

Both runs use :func:`kd_tutorial.train.train` from the same initial weights; only those switches differ.
Throughput counts real (non-pad) tokens, so padding is pure cost.

:func:`run_benchmark` (``kd-tutorial benchmark --report FILE``): every phase of the pipeline on this device,
with no Hub and no ``datasets``: the profile's models at their real sizes with random weights, and reviews of
random token ids with IMDB's length distribution (:func:`kd_tutorial.flops.imdb_lengths`). Each phase reports
real tokens/s, model TFLOP/s (:mod:`kd_tutorial.flops`), MFU against the device's dense peak, peak memory and
seconds; the report ends with a projection of the profile's wall time from the measured rates. Sized for a
few minutes on one H100/H200 with ``full`` (30 timed steps per phase after 3 warm-up steps: every phase's
arithmetic is seconds there, building the models and the synthetic reviews on the host the rest); seconds on a
CPU with ``tiny --quick``. Reports measured on a GPU belong in ``docs/results/benchmark-<device>.json`` in a
checkout, else in the artifact cache's ``results`` folder (:func:`report_name`): ``kd-tutorial distill`` then
projects its time on that kind of GPU from them, and the README renders them.
"""
from __future__ import annotations

import contextlib
import math
import os
import time

from .artifacts import prepare
from .bench_reports import project, report_home
from .data import concat_encoded, Encoded
from .device import (autocast_dtype, bf16_supported, configure, device_type, pick_device, resolve_precision,
                     slow_first_calls, synchronize)
from .errors import UsageError
from .evaluate import latency_in_turns, median_pass, passes_in_turns, predict_logits, throughput
from .flops import (estimate_profile, forward_flops, imdb_lengths, peak_tflops, precision_name, student_config,
                    teacher_config, train_flops)
from .models import (build_student, fold_word_embeddings, freeze_word_embeddings, set_attention_dropout,
                     teacher_for_profile, vocab_size)
from .provenance import git_commit
from .profiles import Profile
from .store import atomic_write_json
from .seeding import seed_everything
from .train import freeze, train
from .train_config import TrainConfig


LOOP_PAIRS = 3  # timed pairs of the loop benchmark, the order alternating: naive first, course loop first, naive first
LOOP_STEPS = 14  # each loop's steps per pair: 3 pairs of 14 take about what one pair of 40 took


def loop_speed(profile: Profile, *, data_dir: str | None = None, student: int = 0, steps: int = LOOP_STEPS,
               init: str = "pretrained", device: str | None = None, progress: bool = False) -> dict:
    """Train the profile's ``student``-th student for ``steps`` KD steps each way, in :data:`LOOP_PAIRS` pairs whose
    order alternates (a busy moment or a warming machine then falls on both loops); return each loop's median
    tokens/s and range over the pairs, the speed-up of the medians, and the environment and commit measured on."""
    if not 0 <= student < len(profile.students):
        names = ", ".join(f"{i} ({s.name})" for i, s in enumerate(profile.students))
        raise UsageError(f"--student {student} is not a student of profile {profile.name}: give one of {names}")
    device = device or pick_device()
    configure(device)  # as distill and --report set the GPU up: TF32 for the naive loop's fp32, from sm80
    prep = prepare(profile, data_dir=data_dir, init=init)
    both = concat_encoded(prep.encoded["train"], prep.encoded["transfer"], "train+transfer")
    n = min(len(both), steps * profile.batch_size)  # one pass: both loops read the same rows, and the cache is theirs
    rows = Encoded(both.input_ids[:n], both.labels[:n], "benchmark rows")
    teacher = freeze(teacher_for_profile(profile, init=init)).to(device)
    spec = profile.students[student]
    results = {"profile": profile.name, "device": device, "student": spec.name, "steps": steps,
               "max_length": profile.max_length, "batch_size": profile.batch_size,
               "precision": resolve_precision(device, "auto"), "attention_dropout": profile.attention_dropout,
               "student_hidden_dropout": profile.student_hidden_dropout,
               "freeze_word_embeddings": profile.freeze_word_embeddings}

    if slow_first_calls(device):  # on a GPU, the timed rows and steps themselves: every timed shape's first call
        warm_rows, warm = rows, steps
    else:  # untimed, as run_benchmark does: the first loop would otherwise pay the start-up costs
        warm = min(3, steps)
        warm_rows = Encoded(rows.input_ids[: warm * profile.batch_size], rows.labels[: warm * profile.batch_size],
                            "warm-up rows")
    naive_vs_ours(profile, spec, teacher, warm_rows, steps=warm, device=device, init=init)
    pairs = [naive_vs_ours(profile, spec, teacher, rows, steps=steps, device=device, init=init, progress=progress,
                           ours_first=i % 2 == 1) for i in range(LOOP_PAIRS)]
    return results | loop_summary(pairs, sum(rows.lengths)) | {"environment": environment(device),
                                                                "git_commit": git_commit()}


def loop_summary(pairs: list[tuple], tokens: int) -> dict:
    """Each loop's median tokens/s and seconds over ``pairs`` (:func:`naive_vs_ours`'s results, in the order run,
    which alternates), its range (min, max) and every pair's, and the speed-up of the medians; ``tokens``: the real
    tokens the teacher's cache read."""
    import statistics

    def spread(values: list[float]) -> list[float]:
        return [min(values), max(values)]
    naive, ours = [p[0].tokens_per_s for p in pairs], [p[1].tokens_per_s for p in pairs]
    cache = statistics.median(p[2] for p in pairs)
    return {"pairs": len(pairs), "order": ["course loop first" if i % 2 else "naive first" for i in range(len(pairs))],
            "naive_tokens_per_s": statistics.median(naive), "naive_tokens_per_s_range": spread(naive),
            "naive_tokens_per_s_per_pair": naive,
            "ours_tokens_per_s": statistics.median(ours), "ours_tokens_per_s_range": spread(ours),
            "ours_tokens_per_s_per_pair": ours,
            "speedup": statistics.median(ours) / statistics.median(naive),
            "speedup_per_pair": [o / n for o, n in zip(ours, naive)],
            "naive_seconds": statistics.median(p[0].seconds for p in pairs),
            "ours_seconds": statistics.median(p[1].seconds for p in pairs), "cache_seconds": cache,
            "cache_tokens_per_s": tokens / cache}


def naive_vs_ours(profile: Profile, spec, teacher, rows, *, steps: int, device: str, init: str = "pretrained",
                  progress: bool = False, between=None, ours_first: bool = False):
    """Train one student ``steps`` KD steps the naive way, then (from the same weights) the course's way, or the
    course's first with ``ours_first``; ``between(phase)``, if given, is called after the naive loop ("naive") and
    after caching the teacher's logits ("cache"), the naive student off the device by then: the benchmark reads each
    loop's own peak memory so. Each student leaves the device after its loop.

    Returns ``(naive history, course history, seconds to cache the teacher's logits on rows)``.
    """
    common = dict(max_steps=steps, mode="kd", batch_size=profile.batch_size, lr=profile.student_lr,
                  temperature=profile.temperature, alpha=profile.alpha)
    seed_everything(0)
    naive_student = build_student(spec, teacher, init=init)
    ours_student = build_student(spec, teacher, init=init, attention_dropout=profile.attention_dropout,
                                 freeze_embeddings=profile.freeze_word_embeddings,
                                 hidden_dropout=profile.student_hidden_dropout)  # the student the profile trains
    ours_student.load_state_dict(naive_student.state_dict())
    between = between or (lambda phase: None)

    def naive():
        history = train(naive_student, rows, teacher=teacher, device=device, progress=progress, desc="naive loop",
                        config=TrainConfig(precision="fp32", group_by_length=False, pad_to_max=profile.max_length,
                                           **common))
        naive_student.cpu()
        between("naive")
        return history

    def ours():
        start = time.perf_counter()  # the cache is paid once, for every student, run and epoch
        cached = predict_logits(teacher, rows, batch_size=profile.eval_batch_size, device=device)
        cache_seconds = time.perf_counter() - start
        between("cache")
        history = train(ours_student, rows, teacher_logits=cached, device=device, progress=progress,
                        desc="course loop", config=TrainConfig(precision="auto", group_by_length=True, **common))
        ours_student.cpu()
        return history, cache_seconds
    if ours_first:
        (course, cache_seconds), plain = ours(), naive()
    else:
        plain = naive()
        course, cache_seconds = ours()
    return plain, course, cache_seconds


# --------------------------------------------------------------------------- the one-command benchmark

SETTINGS = {"full": dict(steps=30, warmup=3, latency_n=30, throughput_batches=8),
            "quick": dict(steps=3, warmup=1, latency_n=5, throughput_batches=2)}
T4_ROW = "fp16, memory-efficient attention (a T4's kernel)"  # the worst batch as a T4 runs its attention
CLS_ID, SEP_ID, FIRST_WORD_ID = 101, 102, 1996  # bert-base-uncased: [CLS], [SEP], the first whole word ("the")


def report_name(device_name: str) -> str:
    """Where a GPU's report belongs, so that ``distill`` projects from it: ``docs/results/benchmark-<device>.json``
    in a checkout (e.g. ``benchmark-nvidia-h200.json``), else in the artifact cache's ``results`` folder
    (:func:`kd_tutorial.bench_reports.report_home`)."""
    slug = "-".join(w for w in "".join(c if c.isalnum() else " " for c in device_name.lower()).split())
    return report_home(f"benchmark-{slug or 'device'}.json")


def synthetic_rows(n: int, max_length: int, *, seed: int = 0, vocab: int = 30522, name: str = "synthetic"):
    """``n`` reviews of random token ids between [CLS] and [SEP], with IMDB's lengths capped at ``max_length``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    lengths = [max(2, x) for x in imdb_lengths(n, max_length, seed=seed)]
    words = torch.randint(FIRST_WORD_ID, vocab, (sum(lengths),), generator=g).tolist()
    rows, at = [], 0
    for length in lengths:
        rows.append([CLS_ID, *words[at:at + length - 2], SEP_ID])
        at += length - 2
    return Encoded(rows, torch.randint(0, 2, (n,), generator=g), name)


def environment(device: str) -> dict:
    """The device, its compute capability, the precision the course picks there, the SDPA kernels (on the CPU, the
    ones torch picks: :func:`_cpu_sdpa`), and the versions of Python, torch, CUDA and transformers."""
    import platform

    import torch
    import transformers

    cuda = device.startswith("cuda")
    name = torch.cuda.get_device_name(torch.device(device)) if cuda else _cpu_name()
    capability = torch.cuda.get_device_capability(torch.device(device)) if cuda else None
    precision = precision_name(autocast_dtype(device))
    b = torch.backends.cuda
    compiled = getattr(b, "is_flash_attention_available", lambda: True)()  # torch >= 2.3 can tell
    sdpa = {"flash": bool(cuda and b.flash_sdp_enabled() and compiled and capability >= (8, 0)),
            "mem_efficient": cuda and b.mem_efficient_sdp_enabled(), "math": b.math_sdp_enabled(),
            "cudnn": cuda and getattr(b, "cudnn_sdp_enabled", lambda: False)()}
    if device_type(device) == "cpu":  # torch's own pick there; Apple's GPU has kernels of its own, not probed
        sdpa = _cpu_sdpa()
    return {"device": device, "device_name": name, "compute_capability": ".".join(map(str, capability or ())) or None,
            "precision": precision, "tf32_matmuls": b.matmul.allow_tf32,
            "peak_tflops": peak_tflops(name, precision) if cuda else None, "sdpa": sdpa,
            "memory_gib": torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30 if cuda else None,
            "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": transformers.__version__,
            "cpu_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "platform": platform.platform()}


def _cpu_sdpa() -> dict:
    """The kernels SDPA runs on the CPU for a BERT-shaped call (a padding mask), as torch picks them: its fused
    flash kernel (``_scaled_dot_product_flash_attention_for_cpu``) where the attention has no dropout (inference,
    and training at ``attention_dropout`` 0), the math kernel where it has; math alone where torch cannot say."""
    import torch
    from torch.nn.attention import SDPBackend

    q, mask = torch.zeros(1, 2, 8, 16), torch.zeros(1, 1, 8, 8)
    choose = getattr(torch, "_fused_sdp_choice", None)  # private: what F.scaled_dot_product_attention dispatches to
    try:
        picked = {int(choose(q, q, q, mask, p, False)) for p in (0.0, 0.1)}
    except (TypeError, RuntimeError):  # missing or changed in this torch
        picked = {int(SDPBackend.MATH)}
    return {"flash": int(SDPBackend.FLASH_ATTENTION) in picked, "mem_efficient": False,
            "math": int(SDPBackend.MATH) in picked, "cudnn": False}


def _cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the machine type."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _reset_memory(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))
        torch.cuda.reset_peak_memory_stats(torch.device(device))


def _peak_memory_gib(device: str) -> float | None:
    import torch
    return torch.cuda.max_memory_allocated(torch.device(device)) / 2**30 if device.startswith("cuda") else None


class _Bench:
    """One benchmark run: the profile, the device, the step counts, and the models built so far."""

    def __init__(self, profile: Profile, device: str, settings: dict, env: dict, progress: bool):
        self.profile, self.device, self.s, self.env, self.progress = profile, device, settings, env, progress
        self.configs = {"teacher": teacher_config(profile)}
        self.configs |= {spec.name: student_config(spec, self.configs["teacher"]) for spec in profile.students}
        self.seed = 0

    def rows(self, n: int, name: str = "synthetic"):
        """Fresh synthetic reviews (a new seed each call: no two phases read the same rows)."""
        self.seed += 1
        return synthetic_rows(n, self.profile.max_length, seed=self.seed, name=name)

    def record(self, *, seconds: float, tokens: int, flops: float, **extra) -> dict:
        """One phase's numbers: tokens/s, model TFLOP/s, MFU against the device's peak, peak memory, seconds."""
        tflops = flops / seconds / 1e12 if seconds > 0 else None
        peak = self.env["peak_tflops"]
        return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds if seconds > 0 else None,
                "flops": flops, "tflops": tflops, "mfu": tflops / peak if peak and tflops else None,
                "peak_memory_gib": _peak_memory_gib(self.device)} | extra

    def teacher(self):
        """The profile's teacher at its real size, random weights, no Hub (BertConfig from kd_tutorial.flops)."""
        from transformers import BertConfig, BertForSequenceClassification

        seed_everything(0)
        config = BertConfig(vocab_size=vocab_size(), max_position_embeddings=max(512, self.profile.max_length),
                            **self.configs["teacher"])
        model = BertForSequenceClassification(config)
        if self.profile.freeze_word_embeddings:
            freeze_word_embeddings(model)
        return set_attention_dropout(model, self.profile.attention_dropout).to(self.device)

    def train_phase(self, model, name: str, mode: str, lr: float) -> dict:
        """Warm-up steps, then ``steps`` timed steps of :func:`kd_tutorial.train.train` on fresh rows. On a GPU the
        warm-up is the timed steps themselves, every batch's shape once (:func:`kd_tutorial.device.slow_first_calls`):
        the rate of a long run, in which every width recurs, not that of each width's first call."""
        import torch

        bs = self.profile.batch_size

        def run(steps: int, rows):
            logits = torch.randn(len(rows), 2) if mode == "kd" else None  # stands in for the cached teacher logits
            config = TrainConfig(mode=mode, max_steps=steps, batch_size=bs, lr=lr, temperature=self.profile.temperature,
                                 alpha=self.profile.alpha, precision=getattr(self.profile, "precision", "auto"))
            return train(model, rows, config=config, teacher_logits=logits, device=self.device, progress=self.progress,
                         desc=f"benchmark {name}")
        rows = self.rows(self.s["steps"] * bs)  # one epoch of exactly ``steps`` batches: every row once
        if slow_first_calls(self.device):
            run(self.s["steps"], rows)
        else:
            run(self.s["warmup"], self.rows(self.s["warmup"] * bs))
        _reset_memory(self.device)
        history = run(self.s["steps"], rows)
        return self.record(seconds=history.seconds, tokens=history.tokens, steps=self.s["steps"], batch_size=bs,
                           flops=train_flops(self.configs[name], rows.lengths), mode=mode)

    def worst_batch(self, model) -> dict:
        """Peak memory of one forward + backward at ``batch_size x max_length`` (every row full): in bf16, in
        fp16, in fp16 with the math attention kernel forced (the L x L attention maps of every layer stored: what
        runs where no fused kernel does, fp32 or bf16 emulated below sm80, FITS_16GB's rows for those), and in fp16
        with the memory-efficient kernel forced (a T4's fp16 kernel: flash attention needs sm80; CUDA only).
        Dtypes or kernels the device cannot run are skipped, with the reason."""
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel

        out, cuda = {}, self.device.startswith("cuda")
        for label, dtype, backend in (("bf16", torch.bfloat16, None), ("fp16", torch.float16, None),
                                      ("fp16, math attention", torch.float16, SDPBackend.MATH),
                                      (T4_ROW, torch.float16, SDPBackend.EFFICIENT_ATTENTION)):
            if dtype == torch.bfloat16 and not bf16_supported(self.device) and cuda:
                out[label] = {"skipped": "no native bf16 on this GPU (compute capability below 8.0)"}
                continue
            if backend == SDPBackend.EFFICIENT_ATTENTION and not cuda:
                out[label] = {"skipped": "the memory-efficient attention kernel runs on CUDA GPUs alone"}
                continue
            kernel = sdpa_kernel(backend) if backend is not None else contextlib.nullcontext()
            try:
                with kernel:
                    out[label] = self.one_worst_batch(model, dtype)
            # out of memory, or a dtype this build cannot run (MPS before macOS 14 refuses bf16 with a TypeError)
            except (RuntimeError, NotImplementedError, TypeError) as err:
                if isinstance(err, TypeError) and not self.device.startswith("mps"):
                    raise  # elsewhere a TypeError is a bug, not a dtype the device refuses
                out[label] = {"skipped": f"{err.__class__.__name__}: {str(err).splitlines()[0][:200]}"}
                model.zero_grad(set_to_none=True)
                if self.device.startswith("cuda"):
                    torch.cuda.empty_cache()
        return out

    def one_worst_batch(self, model, dtype) -> dict:
        """Two forward + backward passes of a full batch (the first warms up); the second is timed."""
        import torch

        bs, length = self.profile.batch_size, self.profile.max_length
        ids = torch.randint(FIRST_WORD_ID, 30522, (bs, length), device=self.device)
        mask, labels = torch.ones_like(ids), torch.randint(0, 2, (bs,), device=self.device)
        model.train()
        _reset_memory(self.device)
        for _ in range(2):
            start = time.perf_counter()
            with torch.autocast(device_type=torch.device(self.device).type, dtype=dtype):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            synchronize(self.device)
            seconds = time.perf_counter() - start
            model.zero_grad(set_to_none=True)
        return self.record(seconds=seconds, tokens=bs * length, batch_size=bs, max_length=length,
                           flops=train_flops(self.configs["teacher"], [length] * bs))

    def teacher_logits(self, teacher) -> dict:
        """:func:`kd_tutorial.evaluate.predict_logits` over ``steps`` batches of ``eval_batch_size`` reviews."""
        bs = self.profile.eval_batch_size
        rows = self.rows(self.s["steps"] * bs)
        warm = rows if slow_first_calls(self.device) else self.rows(bs)  # on a GPU, every timed shape once
        predict_logits(teacher, warm, batch_size=bs, device=self.device)
        _reset_memory(self.device)
        start = time.perf_counter()
        predict_logits(teacher, rows, batch_size=bs, device=self.device)  # returns on the host: synchronised
        return self.record(seconds=time.perf_counter() - start, tokens=sum(rows.lengths), batch_size=bs,
                           flops=forward_flops(self.configs["teacher"], rows.lengths), reviews=len(rows))

    def students(self, teacher) -> tuple[dict, dict]:
        """Each student's distillation (KD from cached logits); returns the records and the students, on the CPU:
        each leaves the device after its phase, as in the pipeline, so that the next phase's peak memory holds no
        earlier student's weights (the inference phase moves each model over itself)."""
        records, models = {}, {}
        for spec in self.profile.students:
            models[spec.name] = build_student(spec, teacher, init="random",
                                              attention_dropout=self.profile.attention_dropout,
                                              freeze_embeddings=self.profile.freeze_word_embeddings,
                                              hidden_dropout=self.profile.student_hidden_dropout)
            records[spec.name] = self.train_phase(models[spec.name], spec.name, "kd",
                                                  self.profile.for_student("student_lr", spec))
            models[spec.name] = fold_word_embeddings(models[spec.name]).cpu()  # inference is timed on what ships
        return records, models

    def naive_vs_optimised(self, teacher) -> dict:
        """:func:`naive_vs_ours` on the first student: fp32, padded, teacher every step against the course loop."""
        spec = self.profile.students[0]
        bs, steps = self.profile.batch_size, self.s["steps"]
        rows, peaks = self.rows(steps * bs), {}
        warm = (rows, steps) if slow_first_calls(self.device) else (self.rows(self.s["warmup"] * bs), self.s["warmup"])
        naive_vs_ours(self.profile, spec, teacher, warm[0], steps=warm[1], device=self.device,
                      init="random")  # warm-up of both loops

        def phase_done(phase):  # each loop's own peak: read after each phase, and reset for the next
            peaks[phase] = _peak_memory_gib(self.device)
            _reset_memory(self.device)
        _reset_memory(self.device)
        naive, ours, cache_seconds = naive_vs_ours(self.profile, spec, teacher, rows, steps=steps, device=self.device,
                                                   init="random", between=phase_done)
        student = train_flops(self.configs[spec.name], rows.lengths)
        online = forward_flops(self.configs["teacher"], rows.lengths)
        common = dict(steps=steps, batch_size=bs)
        return {"student": spec.name,
                "naive": self.record(seconds=naive.seconds, tokens=naive.tokens, flops=student + online,
                                     precision="fp32", padded_to=self.profile.max_length, peak_memory_gib=peaks["naive"],
                                     **common),
                "optimised": self.record(seconds=ours.seconds, tokens=ours.tokens, flops=student, **common),
                "cache_seconds": cache_seconds, "speedup": naive.seconds / ours.seconds if ours.seconds else None}

    def inference(self, models: dict) -> dict:
        """Each model's latency at batch 1 and its throughput at batch 256, each taken in turns with the other models'
        (:func:`kd_tutorial.evaluate.latency_in_turns`, :func:`~kd_tutorial.evaluate.passes_in_turns`: three passes of
        a third of the batches each, the median pass kept)."""
        n, batches = self.s["latency_n"], self.s["throughput_batches"]
        short, big = self.rows(n + 5), self.rows(256 * (batches + 1))
        timings, out = latency_in_turns(models, short, device=self.device, n=n, repeats=3), {}

        def one_pass(model):  # each pass's own peak memory
            _reset_memory(self.device)
            speed = throughput(model, big, device=self.device, batch_size=256, max_batches=math.ceil(batches / 3))
            return speed | {"peak_memory_gib": _peak_memory_gib(self.device)}
        for name, runs in passes_in_turns(models, 3, one_pass).items():
            lat, speed = timings[name], median_pass(runs)
            timed = speed["lengths"]  # the pass's timed batches' reviews: the warm-up batch's are not in the rate
            per_token = forward_flops(self.configs[name], timed) / sum(timed)
            seconds = len(timed) / speed["reviews_per_s"]
            out[name] = self.record(seconds=seconds, tokens=round(speed["tokens_per_s"] * seconds),
                                    flops=per_token * speed["tokens_per_s"] * seconds, batch_size=256,
                                    reviews_per_s=speed["reviews_per_s"], reviews_per_s_passes=speed["passes"],
                                    latency_ms_p50=lat["p50"], latency_ms_q1=lat["q1"], latency_ms_q3=lat["q3"],
                                    peak_memory_gib=speed["peak_memory_gib"])
        return out


def rates(phases: dict) -> dict[str, float]:
    """Measured FLOP/s per :func:`kd_tutorial.bench_reports.project` key: ``train:<model>`` from the training phases,
    ``infer:teacher`` from the teacher-logits pass, ``infer:<student>`` from the batch-256 throughput."""
    def rate(record):
        return record["flops"] / record["seconds"] if record.get("seconds") else None
    out = {"train:teacher": rate(phases["teacher_train"]), "infer:teacher": rate(phases["teacher_logits"])}
    out |= {f"train:{name}": rate(r) for name, r in phases["students"].items()}
    out |= {f"infer:{name}": rate(r) for name, r in phases["inference"].items() if name != "teacher"}
    return {k: v for k, v in out.items() if v}


def projection(profile: Profile, measured: dict[str, float], peak: float | None) -> dict:
    """The profile's wall time (one seed, every run of every student) from the measured rates, and the floor at
    the device's peak. Not counted: loading and tokenizing data, checkpoints, latency timing, and the slower eager
    attention of the attention-map recipes (timed here with SDPA)."""
    est = estimate_profile(profile)
    projected = project(est, measured)
    return {"profile": profile.name, "total_flops": est["total_flops"], "mean_tokens": est["mean_tokens"],
            "floor_s": est["total_flops"] / (peak * 1e12) if peak else None, "projected_s": projected["seconds"],
            "phase_seconds": projected["phase_seconds"], "fallbacks": projected["fallbacks"]}


def run_benchmark(profile: Profile, *, device: str | None = None, quick: bool = False, steps: int | None = None,
                  progress: bool = False) -> dict:
    """Every phase of ``profile``'s pipeline on ``device``, timed (see the module docstring); returns the report.

    ``quick``: 3 timed steps after 1 warm-up and a few latency samples (seconds on a CPU with ``tiny``);
    otherwise 30 timed steps after 3 warm-up steps per phase; on a GPU, after the timed steps themselves, untimed
    (``settings["warm_every_shape"]``). ``steps`` overrides the timed steps.
    """
    device = device or pick_device()
    configure(device)
    settings = dict(SETTINGS["quick" if quick else "full"]) | ({"steps": steps} if steps else {})
    settings["warm_every_shape"] = slow_first_calls(device)
    started = time.perf_counter()
    bench = _Bench(profile, device, settings, environment(device), progress)
    teacher = bench.teacher()
    phases = {"teacher_train": bench.train_phase(teacher, "teacher", "ce", profile.teacher_lr),
              "worst_batch": bench.worst_batch(teacher)}
    freeze(teacher)
    phases["teacher_logits"] = bench.teacher_logits(teacher)
    phases["students"], students = bench.students(teacher)
    phases["naive_vs_optimised"] = bench.naive_vs_optimised(teacher)
    phases["inference"] = bench.inference({"teacher": teacher} | students)
    measured = rates(phases)
    return {"kind": "benchmark", "profile": profile.name, "settings": settings | {"quick": quick},
            "batch_size": profile.batch_size, "max_length": profile.max_length,
            "eval_batch_size": profile.eval_batch_size,
            "environment": bench.env, "git_commit": git_commit(), "models": bench.configs, "phases": phases,
            "rates": measured, "projection": projection(profile, measured, bench.env["peak_tflops"]),
            "seconds": time.perf_counter() - started}


def write_report(report: dict, path) -> None:
    """Write ``report`` as JSON to ``path``, atomically (:func:`kd_tutorial.store.atomic_write_json`)."""
    from pathlib import Path

    atomic_write_json(Path(path), report)
