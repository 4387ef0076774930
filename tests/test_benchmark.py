"""`kd-tutorial benchmark --report`: every phase on the CPU at the tiny profile's sizes, a valid JSON report,
its markdown, and the README splice. Structure only: no wall-clock asserts."""
import json
import math

import pytest
import torch

from kd_tutorial.benchmark import T4_ROW
from kd_tutorial.cli import main

PHASES = ("teacher_train", "worst_batch", "teacher_logits", "students", "naive_vs_optimised", "inference")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One quick CPU run through the command line (one thread: steady even on a shared, busy machine)."""
    path = tmp_path_factory.mktemp("bench") / "report.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["benchmark", "--profile", "tiny", "--report", str(path), "--quick", "--device", "cpu", "--quiet"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return path, json.loads(path.read_text())


def _records(report):
    """Every timed record of the report, by a readable name."""
    ph = report["phases"]
    out = {"teacher_train": ph["teacher_train"], "teacher_logits": ph["teacher_logits"],
           "naive": ph["naive_vs_optimised"]["naive"], "optimised": ph["naive_vs_optimised"]["optimised"]}
    out |= {f"worst {k}": r for k, r in ph["worst_batch"].items()}
    out |= {f"student {k}": r for k, r in ph["students"].items()}
    out |= {f"inference {k}": r for k, r in ph["inference"].items()}
    return out


def test_cli_writes_a_report_with_every_phase(report):
    path, data = report
    assert data["kind"] == "benchmark" and data["profile"] == "tiny" and set(PHASES) <= set(data["phases"])
    assert set(data["phases"]["students"]) == {"distil-2L", "compact-1L-H32"}
    assert set(data["phases"]["inference"]) == {"teacher", "distil-2L", "compact-1L-H32"}
    assert set(data["phases"]["worst_batch"]) == {"bf16", "fp16", "fp16, math attention", T4_ROW}
    skipped = "the memory-efficient attention kernel runs on CUDA GPUs alone"  # a T4's fp16 kernel
    assert data["phases"]["worst_batch"][T4_ROW] == {"skipped": skipped}
    assert not list(path.parent.glob(".*.tmp"))  # written atomically: no temporary file left behind


def test_every_phase_has_positive_finite_rates_and_no_mfu_or_gpu_memory_on_cpu(report):
    _, data = report
    assert data["environment"]["device"] == "cpu" and data["environment"]["peak_tflops"] is None
    assert data["environment"]["precision"] in ("bf16", "fp32")
    for name, r in _records(data).items():
        if "skipped" in r:
            continue
        for key in ("tokens_per_s", "tflops", "seconds", "flops"):
            assert math.isfinite(r[key]) and r[key] > 0, (name, key, r[key])
        assert r["mfu"] is None and r["peak_memory_gib"] is None, name
    assert data["phases"]["naive_vs_optimised"]["speedup"] > 0
    assert all(r["latency_ms_p50"] > 0 for r in data["phases"]["inference"].values())


def test_report_projects_the_profile_from_its_measured_rates(report):
    _, data = report
    p = data["projection"]
    assert p["profile"] == "tiny" and p["floor_s"] is None and p["projected_s"] > 0 and not p["fallbacks"]
    assert set(data["rates"]) >= {"train:teacher", "infer:teacher", "train:distil-2L", "infer:compact-1L-H32"}


def test_report_renders_as_markdown_and_in_the_readme_splice(report, tmp_path):
    from kd_tutorial.report import benchmark_markdown, results_markdown, splice_readme
    path, data = report
    text = benchmark_markdown(data)
    assert "teacher fine-tuning" in text and "distil-2L, naive loop" in text and "Projected wall time" in text
    n = data["phases"]["naive_vs_optimised"]  # the speed-up, and the same with the pass that cached the logits
    once = n["naive"]["seconds"] / (n["optimised"]["seconds"] + n["cache_seconds"])
    assert f"course loop ({n['speedup']:.1f}x; {once:.1f}x with its logits pass)" in text
    assert results_markdown(data) == text  # what `kd-tutorial report docs/results/*.json` renders for it
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\nrest\n")
    splice_readme(readme, [path])
    assert readme.read_text() == f"intro\n<!-- results:start -->\n{text}<!-- results:end -->\nrest\n"


def test_synthetic_rows_and_report_names():
    from kd_tutorial.benchmark import report_name, synthetic_rows
    rows = synthetic_rows(2000, 512, seed=3)
    lengths = sorted(rows.lengths)
    assert len(rows) == 2000 and max(lengths) == 512 and 200 < lengths[1000] < 260
    assert all(ids[0] == 101 and ids[-1] == 102 for ids in rows.input_ids[:50])
    assert report_name("NVIDIA H100 80GB HBM3") == "docs/results/benchmark-nvidia-h100-80gb-hbm3.json"


def test_each_loop_reports_its_own_peak_memory(monkeypatch):
    """The peak was reset once and read after both loops: the course loop's row showed the naive loop's peak (fp32,
    padded, the teacher at every step), the same GiB on both rows. Faked here: a CPU has no peak to read."""
    from kd_tutorial import benchmark as B
    from kd_tutorial.profiles import get_profile
    peak, real_train = [0.0], B.train

    def train(model, rows, **kwargs):  # each loop raises the fake device's peak to its own size
        peak[0] = max(peak[0], {"naive loop": 5.0, "course loop": 1.0}[kwargs["desc"]])
        return real_train(model, rows, **kwargs)
    real_predict = B.predict_logits

    def predict_logits(*args, **kwargs):  # the teacher's logits cache, between the loops, is neither loop's
        peak[0] = max(peak[0], 3.0)
        return real_predict(*args, **kwargs)
    monkeypatch.setattr(B, "train", train)
    monkeypatch.setattr(B, "predict_logits", predict_logits)
    monkeypatch.setattr(B, "_reset_memory", lambda device: peak.__setitem__(0, 0.0))
    monkeypatch.setattr(B, "_peak_memory_gib", lambda device: peak[0])
    bench = B._Bench(get_profile("tiny"), "cpu", dict(B.SETTINGS["quick"]), {"peak_tflops": None}, False)
    teacher = bench.teacher()
    B.freeze(teacher)
    out = bench.naive_vs_optimised(teacher)
    assert out["naive"]["peak_memory_gib"] == 5.0 and out["optimised"]["peak_memory_gib"] == 1.0


def test_inference_times_the_models_in_turns_and_counts_the_flops_it_timed(monkeypatch):
    """Before, each model's one latency pass came straight after the previous model's (a busy moment fell on one
    model alone), and the FLOP rate counted the untimed warm-up batch's reviews too."""
    from kd_tutorial import benchmark as B
    from kd_tutorial import evaluate as E
    from kd_tutorial.profiles import get_profile
    order, real_forward, counted, real_flops = [], E._forward_ms, [], B.forward_flops

    passes = []

    def forward_ms(model, batch, *args):
        # a latency call (batch 1), or a throughput call (batches of 256: a warm-up and a timed one per pass)
        (order if batch["input_ids"].shape[0] == 1 else passes).append(model.tag)
        return real_forward(model, batch, *args)

    def forward_flops(config, lengths):
        counted.append(sorted(lengths))
        return real_flops(config, lengths)
    monkeypatch.setattr(E, "_forward_ms", forward_ms)
    monkeypatch.setattr(B, "forward_flops", forward_flops)
    bench = B._Bench(get_profile("tiny"), "cpu", dict(B.SETTINGS["quick"]), {"peak_tflops": None}, False)
    teacher, other = bench.teacher().eval(), bench.teacher().eval()
    teacher.tag, other.tag = "a", "b"
    out = bench.inference({"teacher": teacher, "distil-2L": other})
    timed = order[2 * 5:]  # after 5 warm-up calls each: on the CPU, turns review by review, reversed every other one
    assert timed == [tag for k in range(len(timed) // 2) for tag in ("ab" if k % 2 == 0 else "ba")] and len(timed) > 6
    assert passes[0::2] == passes[1::2] == list("abbaab")  # 3 throughput passes each, in turns, reversed every other
    big = 256 * -(-B.SETTINGS["quick"]["throughput_batches"] // 3)  # a pass times a third of the batches
    assert [len(c) for c in counted] == [big, big]  # the timed batches' reviews only, not the warm-up batch's
    assert all(len(r["reviews_per_s_passes"]) == 3 and r["reviews_per_s"] == sorted(r["reviews_per_s_passes"])[1]
               for r in out.values())  # the median pass
    assert all(r["latency_ms_q1"] <= r["latency_ms_p50"] <= r["latency_ms_q3"] for r in out.values())



@pytest.mark.parametrize("frozen", [True, False])
def test_the_course_loop_freezes_the_word_embeddings_where_the_profile_does(monkeypatch, frozen):
    """The course loop built its student without the profile's freeze_word_embeddings (the cpu profile sets it), so
    it trained the embedding matrix that the pipeline keeps fixed. The naive loop trains it, as a naive loop would."""
    import dataclasses
    import types

    from kd_tutorial import benchmark as B
    from kd_tutorial.profiles import get_profile
    seen = {}

    def train(model, rows, **kwargs):  # stubbed: only the student each loop was given matters here
        seen[kwargs["desc"]] = model.bert.embeddings.word_embeddings.weight.requires_grad
        return types.SimpleNamespace(seconds=1.0, tokens=1)
    monkeypatch.setattr(B, "train", train)
    monkeypatch.setattr(B, "predict_logits", lambda *a, **k: torch.zeros(len(a[1]), 2))
    profile = dataclasses.replace(get_profile("tiny"), freeze_word_embeddings=frozen)
    bench = B._Bench(profile, "cpu", dict(B.SETTINGS["quick"]), {"peak_tflops": None}, False)
    teacher = B.freeze(bench.teacher())
    B.naive_vs_ours(profile, profile.students[0], teacher, bench.rows(8), steps=1, device="cpu", init="random")
    assert seen == {"naive loop": True, "course loop": not frozen}


def test_each_student_leaves_the_device_after_its_phase(monkeypatch):
    """Trained students stayed on the device, so each later phase's peak memory held the earlier students' weights
    (the pipeline moves each to the CPU). A CPU stand-in: which students were moved off (``.cpu()``) by the time
    each phase starts, and after the last."""
    from kd_tutorial import benchmark as B
    from kd_tutorial.profiles import get_profile
    moved, seen, built, real_cpu = set(), [], {}, torch.nn.Module.cpu

    def cpu(self):
        moved.add(id(self))
        return real_cpu(self)

    def train_phase(self, model, name, mode, lr):  # stubbed: where the earlier students are as this phase starts
        seen.append((name, sorted(n for n, m in built.items() if id(m) not in moved)))
        built[name] = model
        return {}
    monkeypatch.setattr(torch.nn.Module, "cpu", cpu)
    monkeypatch.setattr(B._Bench, "train_phase", train_phase)
    bench = B._Bench(get_profile("tiny"), "cpu", dict(B.SETTINGS["quick"]), {"peak_tflops": None}, False)
    teacher = B.freeze(bench.teacher())
    _, models = bench.students(teacher)
    assert seen == [("distil-2L", []), ("compact-1L-H32", [])]
    assert set(models) == set(built) and all(id(m) in moved for m in models.values())
    assert id(teacher) not in moved  # the teacher stays for the phases that read it, as in the pipeline


def test_the_t4_row_forces_the_memory_efficient_kernel_and_the_math_row_the_math_one(monkeypatch):
    """The "fp16, math attention" row was called a T4 stand-in, but a T4's fp16 runs the memory-efficient kernel
    (flash attention needs sm80), which stores no L x L attention maps: the math row is what fp32 and emulated bf16
    run. A GPU's report now has a row for each; which kernels each row allowed is read from torch's switches."""
    import types

    from kd_tutorial import benchmark as B
    b = torch.backends.cuda

    def one_worst_batch(model, dtype):  # stubbed: the kernels SDPA may pick inside the row's context
        allowed = (("flash", b.flash_sdp_enabled()), ("mem_efficient", b.mem_efficient_sdp_enabled()),
                   ("math", b.math_sdp_enabled()), ("cudnn", b.cudnn_sdp_enabled()))
        return {"kernels": [k for k, on in allowed if on], "dtype": dtype}
    monkeypatch.setattr(B, "bf16_supported", lambda device: True)
    out = B._Bench.worst_batch(types.SimpleNamespace(device="cuda", one_worst_batch=one_worst_batch),
                               torch.nn.Linear(1, 1))
    assert out[T4_ROW] == {"kernels": ["mem_efficient"], "dtype": torch.float16}
    assert out["fp16, math attention"] == {"kernels": ["math"], "dtype": torch.float16}
    assert out["fp16"]["kernels"] == ["flash", "mem_efficient", "math", "cudnn"]  # SDPA's own choice


def test_the_cpu_environment_names_the_sdpa_kernels_that_run_and_the_python_version():
    """The CPU's SDPA kernel was reported as "math" alone, while the profiler showed
    aten::_scaled_dot_product_flash_attention_for_cpu running; and the Python version was not recorded."""
    import platform

    import torch.nn.functional as F
    from torch.profiler import profile

    from kd_tutorial.benchmark import environment
    env = environment("cpu")
    q, mask = torch.randn(1, 2, 8, 16), torch.zeros(1, 1, 8, 8)
    ran = {}
    for kernel, dropout in (("flash", 0.0), ("math", 0.1)):  # BERT's call: a padding mask, its attention dropout
        with profile() as prof:
            F.scaled_dot_product_attention(q, q, q, attn_mask=mask, dropout_p=dropout)
        names = {e.name for e in prof.events()}
        ran[kernel] = {"flash": "aten::_scaled_dot_product_flash_attention_for_cpu",
                       "math": "aten::_scaled_dot_product_attention_math"}[kernel] in names
    assert ran["flash"] and env["sdpa"]["flash"] == ran["flash"] and env["sdpa"]["math"] == ran["math"]
    assert not env["sdpa"]["mem_efficient"] and not env["sdpa"]["cudnn"]
    assert env["python"] == platform.python_version()


def test_apples_gpu_is_not_reported_as_running_the_cpus_flash_kernel():
    """environment() asked torch which kernel the CPU's SDPA picks for any device but CUDA, so a report from Apple's
    GPU said flash attention (the CPU's fused kernel), which MPS cannot run (a review)."""
    from kd_tutorial.benchmark import _cpu_sdpa, environment
    assert environment("mps")["sdpa"]["flash"] is False
    assert environment("cpu")["sdpa"] == _cpu_sdpa()
