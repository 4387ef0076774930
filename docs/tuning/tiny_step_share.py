"""Where a `tiny` training step spends its time on this CPU: matrix products, dropout masks, the rest.

The `tiny` pipeline took 2.5 times as long on a 2-core CPU without bf16 units (fp32) as on the 2-core CPU with them
(bf16). bf16 autocast pays mostly in matrix products, so their share of a step bounds, roughly, what the precision
can explain.
Run from the repository root on idle cores: python docs/tuning/tiny_step_share.py > docs/tuning/tiny-step-share.json
The model is the `tiny` profile's distil-2L student (two layers of TINY_BERT), in fp32, at the profile's batch of
32 reviews of up to 64 tokens (a quarter of them padded from token 50), every weight trained (the `tiny` profile does
not freeze the word embeddings), with fused AdamW as the course loop uses on a CPU.
"""
import collections
import json
import platform
import time

import torch
from transformers import BertConfig, BertForSequenceClassification

from kd_tutorial.device import bf16_supported
from kd_tutorial.profiles import TINY_BERT

MATRIX = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
          "aten::_scaled_dot_product_flash_attention_for_cpu_backward"}


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (else what the platform module says)."""
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def main(steps: int = 30) -> dict:
    """Time ``steps`` training steps after 10 warm-up ones, then profile as many; the record to print."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = BertConfig(vocab_size=30522, **{**TINY_BERT, "num_hidden_layers": 2}, num_labels=2)
    model = BertForSequenceClassification(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    ids = torch.randint(1000, 30000, (32, 64))
    mask = torch.ones(32, 64, dtype=torch.long)
    mask[::4, 50:] = 0
    labels = torch.randint(0, 2, (32,))

    def step():
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    for _ in range(10):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    wall_ms = (time.perf_counter() - start) * 1000 / steps
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    shares = collections.Counter()
    for e in prof.key_averages():
        kind = "matrix products" if e.key in MATRIX else "dropout masks" if "bernoulli" in e.key else "other"
        shares[kind] += e.self_cpu_time_total
    total = sum(shares.values())
    return {"cpu": cpu_model(), "bf16_units": bf16_supported("cpu"), "torch": torch.__version__, "threads": 2,
            "precision": "fp32", "ms_per_step": round(wall_ms, 1),
            "share_of_op_time": {k: round(v / total, 3) for k, v in shares.most_common()}}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
