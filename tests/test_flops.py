"""FLOP counts, peaks and time estimates (kd_tutorial.flops): hand counts, scaling, and the profiles' totals; the
benchmark reports a time is projected from are tests/test_bench_reports.py's."""
import json

import pytest
import torch

from kd_tutorial import bench_reports, flops
from kd_tutorial.profiles import get_profile

ONE_LAYER = dict(num_hidden_layers=1, hidden_size=4, num_attention_heads=2, intermediate_size=8, num_labels=2)
BERT_BASE = flops.KNOWN_CONFIGS["bert-base-uncased"]


def test_forward_flops_matches_a_hand_count_for_one_layer():
    # two reviews of 3 and 5 tokens, H = 4, I = 8, C = 2
    matmuls = (3 + 5) * (8 * 4 * 4 + 4 * 4 * 8)  # Q, K, V, output (4 H^2) and FFN (2 H I): 2 FLOPs per weight
    attention = 4 * 4 * (3 ** 2 + 5 ** 2)  # scores and weighted values: 4 L^2 H per review
    head = 2 * (2 * 4 * 4 + 2 * 4 * 2)  # pooler (2 H^2) and classifier (2 H C), once per review
    assert flops.forward_flops(ONE_LAYER, [3, 5]) == matmuls + attention + head == 2688


def test_forward_flops_agrees_with_torch_flop_counter_on_a_real_bert():
    """PyTorch's own counter over a BertForSequenceClassification forward (no padding) gives the same count.

    Eager attention: the counter has no formula for the CPU's fused SDPA kernel (it would miss 4 L^2 H)."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BertConfig, BertForSequenceClassification
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, num_labels=2, attn_implementation="eager")
    model = BertForSequenceClassification(config).eval()
    ids = torch.randint(5, 100, (3, 24))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert flops.forward_flops(config, [24] * 3) == counter.get_total_flops()


def test_attention_term_scales_with_the_square_of_the_length():
    h, layers = BERT_BASE["hidden_size"], BERT_BASE["num_hidden_layers"]
    head = 2 * h * h + 2 * h * 2
    for length in (64, 256):
        linear_and_head = 2 * flops.forward_flops(BERT_BASE, [length])
        # one review of 2L costs two of L plus the extra attention (4 (2L)^2 H - 2 * 4 L^2 H), less one head
        assert flops.forward_flops(BERT_BASE, [2 * length]) - linear_and_head == layers * 8 * h * length ** 2 - head


def test_training_is_three_forwards():
    lengths = [17, 230, 512]
    assert flops.train_flops(BERT_BASE, lengths) == 3 * flops.forward_flops(BERT_BASE, lengths)


def test_bert_base_costs_about_183_mflop_per_token_at_imdb_lengths():
    lengths = flops.imdb_lengths(20_000, 512)
    per_token = flops.forward_flops(BERT_BASE, lengths) / sum(lengths)
    assert 175e6 < per_token < 190e6  # 2 x 85M weights plus attention at IMDB's length mix
    assert flops.non_embedding_params(BERT_BASE) == pytest.approx(85e6, rel=0.01)


def test_synthetic_imdb_lengths_have_imdb_median_and_tail():
    lengths = flops.imdb_lengths(25_000)
    assert sorted(lengths)[len(lengths) // 2] == pytest.approx(230, abs=2)
    assert sum(x > 512 for x in lengths) / len(lengths) == pytest.approx(0.13, abs=0.005)
    assert max(flops.imdb_lengths(1000, 512)) == 512


def test_the_compact_student_is_far_smaller_than_two_twelfths_of_bert_base():
    """The old estimate counted compact-2L-H128 as 2/12 of BERT-base; at width 128 it is about 0.6 %."""
    full = get_profile("full")
    compact = next(s for s in full.students if s.name == "compact-2L-H128")
    lengths = flops.imdb_lengths(5000, 512)
    ratio = (flops.forward_flops(flops.student_config(compact, BERT_BASE | {"num_labels": 2}), lengths)
             / flops.forward_flops(BERT_BASE, lengths))
    assert ratio < 0.01 < 2 / 12


def test_full_profile_totals():
    """Each student's own four recipes (three with the teacher online): about 154 PFLOP. The profile's three
    default recipes (baseline, kd+transfer, pseudo-label: logits from the cache): about 96 PFLOP, the issue's
    count of about 101 (which assumed 271 tokens per review; the synthetic mix averages 262)."""
    full = get_profile("full")
    est = flops.estimate_profile(full)
    assert 140e15 < est["total_flops"] < 170e15, est["total_flops"]
    plain = flops.estimate_profile(full, recipes=full.recipes)
    assert 80e15 < plain["total_flops"] < 130e15, plain["total_flops"]
    assert est["rows"] == dict(train=23_400, validation=1000, test=25_000, transfer=50_000, spare=0)
    assert 6e15 < est["phases"]["teacher"]["flops"] < 8e15  # 2 epochs of 23.4k reviews
    online = est["phases"]["distil-6L kd+transfer+cosine"]
    assert online["online_teacher"] and online["steps"] == 6882  # 3 epochs of 73,400 reviews, 32 a step
    assert online["parts"]["infer:teacher"] > 0
    assert "infer:teacher" not in est["phases"]["distil-6L kd+transfer"]["parts"]
    three = flops.estimate_profile(full, n_seeds=3)
    assert three["phases"]["teacher"] == est["phases"]["teacher"]
    one_run = est["phases"]["distil-4L baseline"]["flops"]
    assert three["phases"]["distil-4L baseline"]["flops"] == pytest.approx(3 * one_run)


def test_cached_teacher_layers_trade_a_teacher_forward_per_step_for_nothing_more_than_the_logits_pass():
    """With teacher_layers="cache" (the cpu profile's), the intermediate runs read the teacher's mapped layers
    instead of calling it at every step; the pass that gives the teacher's logits writes them."""
    cpu = get_profile("cpu")
    cached, online = (flops.estimate_profile(cpu.replace(teacher_layers=t)) for t in ("cache", "online"))
    for run in ("distil-3L kd+transfer+cosine", "compact-2L-H128 kd+transfer+values"):
        assert not cached["phases"][run]["online_teacher"] and online["phases"][run]["online_teacher"]
        saved = online["phases"][run]["flops"] - cached["phases"][run]["flops"]
        assert saved == pytest.approx(online["phases"][run]["parts"]["infer:teacher"])
    one_pass = online["phases"]["teacher_logits"]["flops"]  # train + transfer
    assert cached["phases"]["teacher_layers"]["flops"] == pytest.approx(one_pass)  # the same pass writes the layers
    assert cached["phases"]["teacher_logits"]["flops"] == 0  # and the logits: no second pass
    assert "teacher_layers" not in online["phases"] and cached["total_flops"] < online["total_flops"]


def test_a_runs_validation_flops_count_the_passes_its_steps_allow_not_evals_per_run():
    """Before: --set evals_per_run=1000 on tiny (310 steps a run) counted 1000 validation passes a run in the time
    estimate, where each run validates after every step, 310 times: the same work as evals_per_run=310."""
    tiny = get_profile("tiny")
    asked, done = (flops.estimate_profile(tiny.replace(evals_per_run=n), lengths=[64] * 8) for n in (1000, 310))
    run = "distil-2L baseline"
    assert asked["phases"][run]["steps"] == 310
    assert asked["phases"][run]["parts"] == pytest.approx(done["phases"][run]["parts"])
    assert asked["total_flops"] == pytest.approx(done["total_flops"])


def test_given_lengths_replace_the_synthetic_mix():
    cpu = get_profile("cpu")
    short, long = flops.estimate_profile(cpu, lengths=[100] * 50), flops.estimate_profile(cpu, lengths=[256] * 50)
    assert short["lengths"] == "given" and short["mean_tokens"] == 100
    assert short["total_flops"] < long["total_flops"]


@pytest.mark.parametrize("name, precision, peak", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989), ("NVIDIA H100 PCIe", "bf16", 756), ("NVIDIA H200", "bf16", 989),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312), ("NVIDIA L4", "bf16", 121), ("Tesla T4", "fp16", 65),
    ("Tesla T4", "bf16", None), ("NVIDIA A10G", "bf16", None), ("AMD EPYC", "bf16", None)])
def test_dense_peaks_by_device_name(name, precision, peak):
    assert flops.peak_tflops(name, precision) == peak


def test_fp32_on_a_gpu_with_tf32_matmuls_is_estimated_at_the_tf32_peak(monkeypatch):
    """configure() lets fp32 matmuls use TF32 from capability 8.0: the floor at the plain fp32 peak (67 TFLOP/s on
    an H200, against 494) came out longer than the run."""
    from kd_tutorial import estimates
    monkeypatch.setattr(estimates, "tf32_enabled", lambda device: True)
    assert estimates.matmul_precision("cuda", "fp32") == "tf32" and estimates.matmul_precision("cuda", "bf16") == "bf16"
    gpu = ("NVIDIA H200", estimates.matmul_precision("cuda", "fp32"))
    text = estimates.estimate(get_profile("full"), "cuda", gpu=gpu)
    assert "dense tf32 peak (494 TFLOP/s)" in text
    assert text.endswith("; no benchmark report projects tf32 (`kd-tutorial benchmark` measures the precision auto "
                         "picks): leave precision to auto for a projection")  # not advice to write one more bf16 one
    monkeypatch.setattr(estimates, "tf32_enabled", lambda device: False)  # a T4, a V100: fp32 is fp32
    assert estimates.matmul_precision("cuda", "fp32") == "fp32"


def test_cli_estimate_on_a_gpu_prints_pflop_and_the_floor(monkeypatch, tmp_path):
    from kd_tutorial.estimates import estimate
    h100 = ("NVIDIA H100 80GB HBM3", "bf16")
    monkeypatch.setattr(bench_reports, "RESULTS_DIR", tmp_path)  # no measured report
    text = estimate(get_profile("full"), "cuda", gpu=h100)
    assert "154 PFLOP" in text and "2.6 min" in text and "989 TFLOP/s" in text and "benchmark --report" in text
    report = {"environment": {"device_name": "NVIDIA H100 80GB HBM3"}, "rates": {"train:teacher": 300e12}}
    (tmp_path / "benchmark-h100.json").write_text(json.dumps(report))
    assert "min at the rates measured in" in estimate(get_profile("full"), "cuda", gpu=h100)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_estimated_train_split_leaves_out_the_reviews_around_the_validation_runs(seed):
    """The estimate counted every train review not in validation: `full` carves validation in runs
    (val_block), leaving MOVIE_GUARD reviews unused on either side of each, and the estimate trained the teacher
    on up to 600 of the Hub's reviews that the carve drops."""
    from kd_tutorial import data
    full = get_profile("full")
    n = 25_000  # the Hub's train split: 12,500 negative reviews, then 12,500 positive
    hub = data.Reviews([f"review {i}" for i in range(n)], [0] * (n // 2) + [1] * (n // 2))
    other = {"test": data.Reviews([f"t{i}" for i in range(4)], [0, 1] * 2),
             "unsupervised": data.Reviews([f"u{i}" for i in range(4)], [-1] * 4)}
    carved = data.split_raw({"train": hub} | other, "hub layout", val_size=full.val_size, seed=seed,
                            val_block=full.val_block)
    estimated = flops.split_rows(full)["train"]
    assert len(carved.validation) == full.val_size and estimated < n - full.val_size
    assert len(carved.train) == estimated  # the Hub's two classes of 12,500: the count is exact
    assert flops.validation_guards(full.replace(val_block=None)) == 0  # drawn at random: nothing dropped


def test_a_data_folders_sizes_replace_the_hubs_and_without_unlabelled_reviews_train_is_halved(tmp_path):
    """The GPU estimate assumed the Hub's 24k / 50k / 25k reviews whatever --data-dir held: the shared copy (25k
    train, 4,934 test, no unlabelled reviews) was estimated at 3.1 times its arithmetic."""
    from test_data import write_parquet
    from kd_tutorial import data
    from kd_tutorial.profiles import get_profile
    write_parquet(tmp_path / "train.parquet", 400)
    write_parquet(tmp_path / "test.parquet", 90, seed=1)
    rows = data.folder_rows(tmp_path)
    assert rows == {"train": 400, "test": 90, "unsupervised": 0}
    full = get_profile("full").replace(val_size=40)
    assert flops.split_rows(full, rows) == {"train": 120, "validation": 40, "test": 90, "transfer": 120, "spare": 0}
    carved = data.load_for_profile(full, data_dir=str(tmp_path))  # 135 and 135: a run at the start of its class
    assert 120 <= len(carved.train) <= 120 + data.MOVIE_GUARD  # drops 30 fewer than estimated
    assert flops.estimate_profile(full, source=rows)["total_flops"] < flops.estimate_profile(full)["total_flops"] / 20
    assert data.folder_rows(tmp_path / "nowhere") is None
    from kd_tutorial import estimates
    gpu = ("NVIDIA H200", "bf16")
    assert "(on the data folder's reviews)" in estimates.estimate(full, "cuda", gpu=gpu, data_dir=str(tmp_path))
    # what the folder holds, not n_test
    assert estimates.test_reviews_of(full.replace(n_test=1000), str(tmp_path)) == 90
    (tmp_path / "test.parquet").unlink()  # no test split: carved from train later, so the sizes cannot be told here
    assert data.folder_rows(tmp_path) is None
    assert "(on the Hub's IMDB sizes: the data folder's are not known before it is read)" in \
        estimates.estimate(full, "cuda", gpu=gpu, data_dir=str(tmp_path))


def test_a_known_gpu_without_the_precisions_units_is_named_not_given_an_arbitrary_peak(monkeypatch, tmp_path):
    """Before, `--set precision=bf16` on a T4 printed "no dense peak known for Tesla T4" and a time at 100 TFLOP/s,
    above the T4's fp16 peak, for a precision it emulates."""
    from kd_tutorial.estimates import estimate
    monkeypatch.setattr(bench_reports, "RESULTS_DIR", tmp_path)
    text = estimate(get_profile("full"), "cuda", gpu=("Tesla T4", "bf16"))
    assert "Tesla T4 has no bf16 units: emulated, far slower than its fp16; leave precision to auto" in text
    assert "100 TFLOP/s" not in text
    assert "no dense peak known for Some GPU" in estimate(get_profile("full"), "cuda", gpu=("Some GPU", "bf16"))
