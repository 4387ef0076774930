"""The GPU code path, checked on a CPU: precision per device, device strings, memory fit, prefetching,
4D masks, and a training loop that never waits for the device between logging steps."""
import collections
import dataclasses

import pytest
import torch

from kd_tutorial import data, device as dev, features, models
from kd_tutorial.profiles import PROFILES, ProfileOverrideError
from kd_tutorial.train import TeacherSide, TrainConfig, _Run, train

SMALL = {"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}

# (name, compute capability): what torch reports for each GPU
# Pascal (P100 6.0, GTX 1080 and P40 6.1): no tensor cores, fp16 at 1/64 of fp32 on 6.1, so fp32 without a scaler
GPUS = {"P100": (6, 0), "GTX 1080": (6, 1), "T4": (7, 5), "V100": (7, 0), "A100": (8, 0), "L4": (8, 9),
        "H100": (9, 0), "H200": (9, 0)}
EXPECTED = {"P100": ("fp32", False, False), "GTX 1080": ("fp32", False, False), "T4": ("fp16", True, False),
            "V100": ("fp16", True, False), "A100": ("bf16", False, True), "L4": ("bf16", False, True),
            "H100": ("bf16", False, True), "H200": ("bf16", False, True)}


@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend to have one GPU of a given capability that, like a real T4, reports emulated bf16 as supported."""
    def install(capability):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    return install


@pytest.mark.parametrize("gpu", list(GPUS))
def test_precision_follows_the_compute_capability_not_emulated_bf16(fake_gpu, gpu):
    fake_gpu(GPUS[gpu])
    precision, scaler, tf32 = EXPECTED[gpu]
    for name in ("cuda", "cuda:0", torch.device("cuda", 0)):
        assert dev.precision_for(name) == precision
        assert dev.autocast_dtype(name) == {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        assert dev.describe(name) | {"device": None} == {
            "device": None, "capability": "{}.{}".format(*GPUS[gpu]), "precision": precision,
            "grad_scaler": scaler, "tf32": tf32}


def test_explicit_precision_wins_and_bad_names_are_refused(fake_gpu):
    fake_gpu((7, 5))
    assert dev.autocast_dtype("cuda", "fp32") is None
    assert dev.autocast_dtype("cuda", "bf16") is torch.bfloat16  # asked for: emulated, but the user's call
    with pytest.raises(ValueError, match="use one of auto, fp32, bf16, fp16"):
        dev.resolve_precision("cuda", "half")


def test_cpu_precision_depends_on_bf16_units(monkeypatch):
    monkeypatch.setattr(dev, "bf16_supported", lambda device: False)
    assert dev.precision_for("cpu") == "fp32" and dev.autocast_dtype("cpu") is None
    monkeypatch.setattr(dev, "bf16_supported", lambda device: True)
    assert dev.precision_for("cpu") == "bf16"
    assert dev.describe("cpu") == {"device": "cpu", "capability": None, "precision": "bf16",
                                   "grad_scaler": False, "tf32": False}


@pytest.fixture
def tf32_restored():
    """Both TF32 flags as they were before the test, whatever configure() set (on a GPU, the later "fp32" tests
    would otherwise run in TF32)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("capability, tf32", [((7, 5), False), ((9, 0), True)])
def test_configure_sets_tf32_and_the_allocator_only_on_cuda(fake_gpu, monkeypatch, tf32_restored, capability, tf32):
    fake_gpu(capability)
    for key in ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF"):
        monkeypatch.delenv(key, raising=False)
    torch.backends.cuda.matmul.allow_tf32 = False
    chosen = dev.configure("cuda:0")
    assert chosen["tf32"] is tf32 and torch.backends.cuda.matmul.allow_tf32 is tf32
    import os
    assert os.environ["PYTORCH_ALLOC_CONF"] == "expandable_segments:True"
    monkeypatch.setenv("PYTORCH_ALLOC_CONF", "max_split_size_mb:128")
    dev.configure("cuda")
    assert os.environ["PYTORCH_ALLOC_CONF"] == "max_split_size_mb:128"  # a user's own setting is kept


def test_the_full_profile_fits_16_gb_with_the_same_effective_batch():
    full = PROFILES["full"]
    t4 = full.fit_memory("fp16", 15.0)
    assert (t4.batch_size, t4.grad_accum) == (16, 2) and t4.effective_batch == full.effective_batch
    math_kernel = full.fit_memory("fp32", 15.0)
    assert (math_kernel.batch_size, math_kernel.grad_accum) == (8, 4)
    assert full.fit_memory("bf16", 80.0) is full  # an H100 keeps the profile as it is
    assert PROFILES["cpu"].fit_memory("fp16", 15.0) is PROFILES["cpu"]  # 16 x 256 already fits
    assert t4.teacher_hash() != full.teacher_hash()  # a different batch is a different teacher
    assert full.replace(grad_accum=1, precision="auto").teacher_hash() == full.teacher_hash()


@pytest.mark.parametrize("memory, rows", [(14.7, 16), (11.0, 8), (7.8, 4), (3.8, 1), (2.0, 1)])
def test_a_gpu_smaller_than_a_t4_gets_fewer_rows_per_step_and_the_same_effective_batch(memory, rows):
    """Every card under 24 GiB got the T4's 16 rows of 512 tokens: an 8 GiB card's fit line said so, and a 4 GiB
    card cannot hold them (bert-base's weights, gradients and Adam state alone take 1.6 GiB)."""
    full = PROFILES["full"]
    fitted = full.fit_memory("fp16", memory)
    assert fitted.batch_size == rows and fitted.effective_batch == full.effective_batch
    assert PROFILES["cpu"].fit_memory("fp16", memory) is PROFILES["cpu"]  # MiniLM at 16 x 256: the T4's batch


@pytest.mark.parametrize("field, value", [("grad_accum", 0), ("batch_size", -2), ("precision", "half")])
def test_profile_refuses_impossible_batches_and_precisions(field, value):
    with pytest.raises(ProfileOverrideError, match=field):
        PROFILES["tiny"].replace(**{field: value})


def test_batch_groups_and_collate_rebuild_make_batches_and_count_by_arithmetic():
    enc = data.Encoded([[101] + [7] * n + [102] for n in (3, 9, 1, 5, 4, 8, 2)], torch.arange(7) % 2, "x")
    groups = data.batch_groups(enc, 3, seed=4)
    assert len(groups) == data.n_batches(len(enc), 3) == 3
    assert sorted(i for g in groups for i in g) == list(range(7))
    built = data.make_batches(enc, 3, seed=4)
    for g, b in zip(groups, built):
        again = data.collate(enc, g)
        assert all(torch.equal(again[k], b[k]) for k in b)
        assert b["attention_mask"].sum(1).tolist() == [len(enc.input_ids[i]) for i in g]


def test_prefetch_keeps_order_raises_errors_and_stops_early():
    assert list(data.prefetch(lambda x: x * x, range(20), depth=2)) == [x * x for x in range(20)]

    def boom(x):
        if x == 3:
            raise KeyError("row 3")
        return x
    with pytest.raises(KeyError, match="row 3"):
        list(data.prefetch(boom, range(10)))
    import threading
    seen, before = [], set(threading.enumerate())
    stream = data.prefetch(lambda x: seen.append(x) or x, range(10_000), depth=2)
    assert next(stream) == 0
    workers = [t for t in threading.enumerate() if t not in before and t.name == "kd_tutorial-prefetch"]
    stream.close()  # the consumer left: the worker stops instead of building 10,000 items
    for worker in workers:
        worker.join(timeout=10)  # returns as soon as the worker ends (within one 0.05 s put retry when it works)
    assert not any(w.is_alive() for w in workers), "the prefetch thread kept running after the consumer left"
    assert len(seen) <= 2 + 2, len(seen)  # depth items queued, one being put, one handed over: no run-ahead


def test_device_mask_gives_the_same_outputs_as_the_2d_mask_for_sdpa_and_eager():
    torch.manual_seed(0)
    model = models.compact_student(2, 32, 2, 64).eval()
    ids = torch.randint(5, 100, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, 7:], mask[2, 3:] = 0, 0
    for eager in (False, True):
        if eager:
            features.use_eager_attention(model)
        ref = model(input_ids=ids, attention_mask=mask, output_attentions=eager)
        ours = features.forward_features(model, ids, mask, attentions=eager)
        assert torch.allclose(ref.logits, ours.logits, atol=1e-6)
        if eager:
            assert torch.allclose(ref.attentions[1], ours.attentions[1], atol=1e-6)
    assert features.device_mask(model, mask).shape == (3, 1, 1, 12)


HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "nonzero")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_the_loop_reads_device_values_only_when_it_logs(monkeypatch, precision):
    """Every host read of a tensor (what makes a CPU wait for a GPU) happens inside a flush, or in the checks of the
    host-side rows before the first step (the labels of an Encoded live on the CPU); on CPU we count them, on a GPU
    torch.cuda.set_sync_debug_mode("warn") would."""
    from kd_tutorial import train as train_module
    torch.manual_seed(0)
    enc = data.Encoded([[101] + [(5 * i + j) % 90 + 5 for j in range(4 + i % 9)] + [102] for i in range(96)],
                       torch.tensor([i % 2 if i < 48 else -1 for i in range(96)]), "rows")
    logits = torch.randn(96, 2)
    reads, where = collections.Counter(), {"flush": 0, "checks": 0}

    def counted(function, place):
        def call(*args, **kwargs):
            where[place] += 1
            try:
                return function(*args, **kwargs)
            finally:
                where[place] -= 1
        return call
    monkeypatch.setattr(_Run, "flush", counted(_Run.flush, "flush"))
    monkeypatch.setattr(train_module, "_check_inputs", counted(train_module._check_inputs, "checks"))
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def read(self, *args, _name=name, _original=original, **kwargs):
            reads["in flush" if where["flush"] else "before the loop" if where["checks"] else _name] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, read)
    model = models.load_teacher("tiny-bert", config_overrides=SMALL)
    config = TrainConfig(mode="kd", max_steps=12, batch_size=8, grad_accum=2, precision=precision)
    history = train(model, enc, config=config, teacher_logits=logits, device="cpu", progress=False, log_every=5)
    outside = {k: v for k, v in reads.items() if k not in ("in flush", "before the loop")}
    assert outside == {}, f"host reads outside the logging flush: {outside}"
    # the labels' largest class id, whether validation has a label, and how often the cached logits agree with the
    # labels (one read for two counts: train._check_logit_order)
    assert reads["before the loop"] <= 3
    assert reads["in flush"] > 0 and [s["step"] for s in history.steps] == list(range(1, 13))
    assert all(torch.isfinite(torch.tensor(s["loss"])) for s in history.steps)


def test_checkpoint_holds_cuda_rng_states_when_there_is_a_gpu(tmp_path):
    enc = data.Encoded([[101, 5 + i % 50, 102] for i in range(32)], torch.arange(32) % 2, "rows")
    model = models.load_teacher("tiny-bert", config_overrides=SMALL)
    train(model, enc, config=TrainConfig(max_steps=2, batch_size=16), device="cpu", checkpoint_dir=tmp_path,
          progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=False, map_location="cpu")
    assert "cuda_rng" in state and state["cuda_rng"] is None  # no GPU here; a list of byte tensors on one
    assert dataclasses.asdict(TrainConfig(max_steps=2, batch_size=16)) == state["config"]


def _resume_case(tmp_path, fail_at_call, error, every_s):
    """A 12-step run (grad_accum 2, dropout on) that fails at micro-batch ``fail_at_call``, then resumes."""
    from kd_tutorial.seeding import seed_everything
    enc = data.Encoded([[101] + [(3 * i + j) % 90 + 5 for j in range(3 + i % 7)] + [102] for i in range(128)],
                       torch.arange(128) % 2, "rows")  # 16 micro-batches, 8 steps per epoch
    config = TrainConfig(max_steps=12, batch_size=8, grad_accum=2, lr=1e-3, precision="fp32")

    def run(folder, resume=False, fail=None):
        seed_everything(0)
        model = models.load_teacher("tiny-bert", config_overrides=SMALL)
        seed_everything(1)
        calls = {"n": 0}
        real = _Run.micro_batch

        def micro_batch(self, batch, weight=1.0, token_share=None):
            calls["n"] += 1
            out = real(self, batch, weight, token_share)  # the failure comes after the forward and backward: dropout's RNG has moved on
            if fail is not None and calls["n"] == fail:
                raise error
            return out
        _Run.micro_batch = micro_batch
        try:
            history = train(model, enc, config=config, device="cpu", progress=False, checkpoint_dir=folder,
                            resume=resume, checkpoint_every_s=every_s)
        finally:
            _Run.micro_batch = real
        return model, history

    reference, ref_history = run(tmp_path / "ref")
    with pytest.raises(type(error)):
        run(tmp_path / "cut", fail=fail_at_call)
    saved = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    resumed, history = run(tmp_path / "cut", resume=True)
    return reference, ref_history, resumed, history, saved


def test_ctrl_c_mid_step_saves_the_last_step_and_resume_equals_an_uninterrupted_run(tmp_path):
    # micro-batch 10 is the second half of step 5 (the first half is done): the checkpoint holds step 4,
    # mid-epoch (after batch 8 of 16), without the half-accumulated gradient
    reference, ref_h, resumed, h, saved = _resume_case(tmp_path, 10, KeyboardInterrupt(), every_s=1e9)
    assert (saved["progress"]["step"], saved["progress"]["epoch"], saved["progress"]["batch"]) == (4, 0, 8)
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert [s["loss"] for s in h.steps] == [s["loss"] for s in ref_h.steps]


def test_a_killed_run_resumes_mid_epoch_from_its_periodic_checkpoint(tmp_path):
    # every_s=0: the checkpoint is rewritten after every step, so a hard failure in step 6 loses only that step
    reference, ref_h, resumed, h, saved = _resume_case(tmp_path, 11, RuntimeError("power cut"), every_s=0)
    assert (saved["progress"]["step"], saved["progress"]["epoch"], saved["progress"]["batch"]) == (5, 0, 10)
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert h.tokens == ref_h.tokens and [s["step"] for s in h.steps] == list(range(1, 13))


def test_a_short_last_step_weighs_its_micro_batches_by_their_rows():
    """28 rows, micro-batches of 8, 2 per step: steps of 8 + 8 and 8 + 4 rows. Each micro-batch's loss (a mean
    over its rows) is weighted by rows / rows of its step, so the step's gradient is that of one batch of its
    rows: 1/2 and 1/2, then 8/12 and 4/12 (dividing by grad_accum would give the last step 1/2 and 1/2). Its
    share of the step's real tokens weighs its per-token terms: the same here, every row being 3 tokens long."""
    enc = data.Encoded([[101, 5 + i, 102] for i in range(28)], torch.arange(28) % 2, "rows")
    model = models.load_teacher("tiny-bert", config_overrides=SMALL)
    run = _Run(model, enc, TrainConfig(batch_size=8, grad_accum=2, group_by_length=False, max_steps=2), None,
               TeacherSide(None, None, None, None), "cpu", None, "test")
    got = [(len(batch["index"]), weight) for batch, _tokens, (weight, token_share) in run.batches(0, 0)
           if token_share == pytest.approx(weight)]
    assert sorted(got[:2]) == [(8, 0.5), (8, 0.5)] and sorted(got[2:]) == [(4, 4 / 12), (8, 8 / 12)]
    assert [(len(b["index"]), w) for b, _t, (w, _share) in run.batches(0, 3)] == got[3:]


def test_the_notebooks_search_and_distill_fit_a_small_gpus_batch_alike(monkeypatch, capsys, tmp_path):
    """On a T4, distill trained the full profile's teacher at batch 16 x 2, while the notebooks (env.setup) and
    search asked for one at 32 x 1: the batch is in the teacher's cache key, so they trained it again, at twice the
    batch that fits 16 GB in fp16. (The GPU is faked: its memory, precision and set-up.)"""
    import argparse

    from kd_tutorial import cli, env
    monkeypatch.setattr(env, "memory_gb", lambda device: 14.74 if device.startswith("cuda") else None)  # a T4
    for module in (env, cli):
        monkeypatch.setattr(module, "resolve_precision", lambda device, precision="auto": "fp16")
    monkeypatch.setattr(env, "pick_device", lambda: "cuda")
    configured = []
    for module in (env, cli):
        monkeypatch.setattr(module, "configure", lambda device: configured.append(device) or {"tf32": False})
    full = PROFILES["full"]
    notebook = env.setup("full", offline=True).profile
    assert configured == ["cuda"]  # the notebooks set up the GPU as distill does (TF32, the allocator)
    distill = cli._fit_device(full, "cuda", argparse.Namespace(batch_size=None, grad_accum=None))
    assert (notebook.batch_size, notebook.grad_accum) == (distill.batch_size, distill.grad_accum) == (16, 2)
    assert notebook.teacher_hash() == distill.teacher_hash() != full.teacher_hash()
    assert "14.7 GiB GPU in fp16: batch 16 x 2 accumulation steps" in capsys.readouterr().out
    searched = {}
    monkeypatch.setattr(cli, "check_device", lambda device: device)
    monkeypatch.setattr(cli, "run_search", lambda profile, **kw: searched.update(profile=profile))
    assert cli.main(["search", "--profile", "full", "--device", "cuda", "--out", str(tmp_path / "s")]) == 0
    assert searched["profile"].teacher_hash() == distill.teacher_hash()
    assert env.fit_to_device(full, "cpu") == (full, None)  # only a GPU's memory is fitted


@pytest.mark.parametrize("native, batch", [(True, (16, 2)), (False, (8, 4))])
def test_a_gpu_with_native_bf16_fits_the_batch_of_the_fused_attention_kernels(monkeypatch, native, batch):
    """FITS_16GB's bf16 row (8 reviews of 512 tokens) is for emulated bf16, which runs the math attention kernel;
    an L4 (22 GiB, sm89) runs bf16 natively with the fused kernels, as fp16 does (16), and was given 8 x 4."""
    from kd_tutorial import env
    monkeypatch.setattr(env, "memory_gb", lambda device: 22.49)
    monkeypatch.setattr(env, "resolve_precision", lambda device, precision="auto": "bf16")
    monkeypatch.setattr(env, "bf16_supported", lambda device: native)
    fitted, said = env.fit_to_device(PROFILES["full"], "cuda")
    assert (fitted.batch_size, fitted.grad_accum) == batch and f"batch {batch[0]} x {batch[1]}" in said
    assert "GPU in bf16" in said


def test_timers_wait_for_apples_mps_as_for_cuda(monkeypatch):
    """MPS queues work as CUDA does: a timer that does not wait for it measures the queueing, not the work."""
    from kd_tutorial import device
    calls = []
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append("mps"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(f"cuda {device}"))
    for name in ("mps", "cuda:1", "cpu"):
        device.synchronize(name)
    assert calls == ["mps", "cuda cuda:1"]


# A GPU picks kernels at each input shape's first call (docs/gpu/README.md): it pads to multiples of 8, and times
# known shapes. These run the same code on a CPU with the device's answers patched.

@pytest.mark.parametrize("device, multiple, slow", [("cpu", 1, False), ("cuda", 8, True), ("cuda:1", 8, True),
                                                    (torch.device("cuda", 0), 8, True)])
def test_a_gpu_pads_to_multiples_of_8_and_times_known_shapes(device, multiple, slow):
    assert dev.pad_multiple(device) == multiple and dev.slow_first_calls(device) is slow


def test_collate_rounds_the_width_up_to_the_multiple_but_never_past_the_limit():
    enc = data.Encoded([[101] + [7] * n + [102] for n in (3, 9, 15)], torch.tensor([0, 1, 0]), "x")
    width = {rows: data.collate(enc, list(rows), multiple=8, limit=17)["input_ids"].shape[1]
             for rows in ((0,), (1,), (2,), (0, 1))}
    assert width == {(0,): 8, (1,): 16, (2,): 17, (0, 1): 16}  # 5 -> 8, 11 -> 16, 17 stays: the limit is 17
    batch = data.collate(enc, [0, 1], multiple=8, limit=17)
    assert batch["attention_mask"].sum(1).tolist() == [5, 11]  # the padding is masked
    assert batch["input_ids"][0, 5:].eq(0).all()
    assert data.collate(enc, [0, 1])["input_ids"].shape[1] == 11  # a CPU's multiple, 1: the longest row
    assert data.collate(enc, [0], multiple=8)["input_ids"].shape[1] == 8  # no limit given: the multiple alone
    assert data.collate(enc, [0], pad_to_max=12, multiple=8, limit=17)["input_ids"].shape[1] == 12  # the naive loop's


def _recording_collate():
    """``(widths, collate)``: :func:`kd_tutorial.data.collate`, noting each batch's width in ``widths``."""
    widths, collate = [], data.collate

    def seen(*args, **kwargs):
        batch = collate(*args, **kwargs)
        widths.append(batch["input_ids"].shape[1])
        return batch
    return widths, seen


def test_padding_to_a_multiple_changes_no_prediction(monkeypatch):
    from kd_tutorial import evaluate
    torch.manual_seed(0)
    enc = data.Encoded([[101] + [(3 * i + j) % 90 + 5 for j in range(2 + i)] + [102] for i in range(12)],
                       torch.arange(12) % 2, "rows")
    model = models.load_teacher("tiny-bert", config_overrides=SMALL)
    exact = evaluate.predict_logits(model, enc, batch_size=4, device="cpu", precision="fp32")
    widths, seen = _recording_collate()
    monkeypatch.setattr(evaluate, "pad_multiple", lambda device: 8)
    monkeypatch.setattr(evaluate, "collate", seen)
    padded = evaluate.predict_logits(model, enc, batch_size=4, device="cpu", precision="fp32")
    assert sorted(widths) == [8, 15, 15]  # rows of 4-7, 8-11 and 12-15 tokens: 8, then 16 capped at the longest row
    torch.testing.assert_close(padded, exact, atol=1e-5, rtol=1e-5)


def test_the_training_loop_pads_to_the_devices_multiple(monkeypatch):
    import kd_tutorial.train as train_module
    enc = data.Encoded([[101] + [7] * (2 + i % 11) + [102] for i in range(40)], torch.arange(40) % 2, "rows")
    widths, seen = _recording_collate()
    monkeypatch.setattr(train_module, "pad_multiple", lambda device: 8)
    monkeypatch.setattr(train_module, "collate", seen)
    model = models.load_teacher("tiny-bert", config_overrides=SMALL)
    train(model, enc, config=TrainConfig(mode="ce", max_steps=5, batch_size=8), device="cpu", progress=False)
    assert len(widths) >= 5 and set(widths) <= {8, 14}  # rows of 4 to 14 tokens: 8, or 16 capped at 14
    assert 8 in widths and 14 in widths


def _first_calls_cost_100_ms(monkeypatch, slow: bool):
    """A fake clock for :mod:`kd_tutorial.evaluate`: a shape's first call takes 100 ms, later ones 1 ms; and whether
    the device says first calls are slow."""
    from kd_tutorial import evaluate
    seen = set()

    def fake_ms(model, batch, device, precision):
        shape = tuple(batch["input_ids"].shape)
        first = shape not in seen
        seen.add(shape)
        return 100.0 if first else 1.0
    monkeypatch.setattr(evaluate, "_forward_ms", fake_ms)
    monkeypatch.setattr(evaluate, "slow_first_calls", lambda device: slow)
    return evaluate, models.load_teacher("tiny-bert", config_overrides=SMALL)


@pytest.mark.parametrize("slow", [True, False])
def test_throughput_times_known_shapes_where_first_calls_are_slow(monkeypatch, slow):
    evaluate, model = _first_calls_cost_100_ms(monkeypatch, slow)
    enc = data.Encoded([[101] + [7] * (2 + i) + [102] for i in range(32)], torch.arange(32) % 2, "rows")
    rate = evaluate.throughput(model, enc, device="cpu", batch_size=4, max_batches=4)["reviews_per_s"]
    assert rate == pytest.approx(16 / 0.004 if slow else 16 / 0.4)  # 4 batches of 4: 1 ms each, or 100
    evaluate, model = _first_calls_cost_100_ms(monkeypatch, slow)  # a fresh clock: no shape seen yet
    one_batch = data.Encoded(enc.input_ids[:4], enc.labels[:4], "one batch")  # its only batch is the timed one
    rate = evaluate.throughput(model, one_batch, device="cpu", batch_size=4)["reviews_per_s"]
    assert rate == pytest.approx(4 / 0.001 if slow else 4 / 0.1)


@pytest.mark.parametrize("slow", [True, False])
def test_latency_times_known_shapes_where_first_calls_are_slow(monkeypatch, slow):
    evaluate, model = _first_calls_cost_100_ms(monkeypatch, slow)
    enc = data.Encoded([[101] + [7] * (2 + i) + [102] for i in range(12)], torch.arange(12) % 2, "rows")
    samples = evaluate.latency(model, enc, device="cpu", n=6, warmup=2, repeats=3)["samples"]
    assert len(samples) == 18
    assert samples.count(100.0) == (0 if slow else 6)  # each of the 6 timed reviews' first pass, unless warmed


@pytest.mark.parametrize("slow", [True, False])
def test_the_benchmark_warms_a_gpu_on_the_rows_it_times(monkeypatch, slow):
    """Every training call of ``benchmark --report --quick``: on a GPU each timed one follows the same rows and steps
    untimed; elsewhere a shorter warm-up on other rows."""
    from kd_tutorial import benchmark

    def recorded(model, rows, *, config, **kwargs):
        calls[kwargs["desc"]].append((tuple(map(len, rows.input_ids)), config.max_steps))
        return train(model, rows, config=config, **kwargs)
    calls, train = collections.defaultdict(list), benchmark.train
    monkeypatch.setattr(benchmark, "train", recorded)
    monkeypatch.setattr(benchmark, "slow_first_calls", lambda device: slow)
    # the phases that never train: the same work whatever ``slow`` says, and timed in tests/test_benchmark.py (two
    # thirds of this test's time: fp16 emulated on a CPU, and batch-256 throughput)
    for phase in ("worst_batch", "inference"):
        monkeypatch.setattr(benchmark._Bench, phase, lambda self, model: {})
    report = benchmark.run_benchmark(PROFILES["tiny"], device="cpu", quick=True)
    assert report["settings"]["warm_every_shape"] is slow
    assert set(calls) == {"benchmark teacher", "benchmark distil-2L", "benchmark compact-1L-H32", "naive loop",
                          "course loop"}
    for loop, (warm, timed) in calls.items():  # each loop runs twice: untimed, then timed
        assert timed[1] == report["settings"]["steps"] and (warm == timed) is slow, loop


def test_the_benchmark_says_what_ran_untimed_before_each_phase():
    import json
    from pathlib import Path

    from kd_tutorial.report import benchmark_markdown
    gpu = json.loads((Path(__file__).parents[1] / "docs/results/benchmark-nvidia-h200.json").read_text())
    assert gpu["settings"]["warm_every_shape"] is True
    assert "30 timed steps per phase after the same steps untimed" in benchmark_markdown(gpu)
    cpu = gpu | {"settings": gpu["settings"] | {"warm_every_shape": False}}
    assert "30 timed steps per phase after 3 warm-up step(s)" in benchmark_markdown(cpu)


def test_exact_fp32_turns_tf32_off_inside_and_puts_it_back():
    """A review: notebook 07 asserts that the eager copy of the teacher gives SDPA's logits to 1e-4; with TF32, which
    configure() turns on from capability 8.0, eager's matmuls keep 10 bits of mantissa and differed by ~1e-3 (emulated
    on the CPU), so the assert would fail on an A100, L4 or H100. The comparison runs inside exact_fp32()."""
    from kd_tutorial.device import exact_fp32
    flags = torch.backends.cuda.matmul
    before = flags.allow_tf32
    try:
        flags.allow_tf32 = True
        with exact_fp32():
            assert flags.allow_tf32 is False
        assert flags.allow_tf32 is True
        with pytest.raises(RuntimeError), exact_fp32():
            raise RuntimeError("a failed comparison")
        assert flags.allow_tf32 is True
    finally:
        flags.allow_tf32 = before
