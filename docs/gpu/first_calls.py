"""What a new input shape's first call costs on this GPU, and what rounding widths to 8 tokens saves.

Random-weight BERTs at the `cpu` teacher's size (all-MiniLM-L6-v2: 6 layers, 384 wide) and the `full` teacher's
(bert-base), training steps (forward, backward, AdamW) in bf16 autocast at batch 16, each step synchronised:
* `cold`: 20 steps at 20 widths never seen (131 to 150 tokens);
* `warm`: the same 20 widths again;
* `cold, rounded to 8`: 20 steps at 20 other widths (171 to 190) rounded up to multiples of 8 (3 widths);
* `cold, cuDNN attention off`: 20 new widths (211 to 230) with PyTorch's cuDNN SDPA kernel disabled.
Then the same for forward passes alone (eval, batch 64). Writes the JSON report to argv[1].

    python docs/gpu/first_calls.py OUT.json
"""
import json
import sys
import time

import torch
from transformers import BertConfig, BertForSequenceClassification

SIZES = {"cpu teacher (6L, 384)": dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12,
                                       intermediate_size=1536),
         "full teacher (12L, 768)": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12,
                                         intermediate_size=3072)}


def step_ms(model, optimizer, width: int, batch: int, train: bool) -> float:
    """One synchronised step (train) or forward pass (eval) at ``batch x width``, in ms."""
    ids = torch.randint(1000, 30522, (batch, width), device="cuda")
    mask = torch.ones_like(ids)
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        if train:
            loss = model(input_ids=ids, attention_mask=mask, labels=torch.zeros(batch, dtype=torch.long,
                                                                               device="cuda")).loss
        else:
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask)
    if train:
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000


def conditions(model, optimizer, train: bool, offset: int) -> dict:
    batch = 16 if train else 64
    exact = list(range(131 + offset, 151 + offset))
    rounded = [-(-w // 8) * 8 for w in range(171 + offset, 191 + offset)]
    out = {}
    for name, widths, cudnn in (("cold", exact, True), ("warm", exact, True), ("cold, rounded to 8", rounded, True),
                                ("cold, cuDNN attention off", range(211 + offset, 231 + offset), False)):
        torch.backends.cuda.enable_cudnn_sdp(cudnn)
        times = [step_ms(model, optimizer, w, batch, train) for w in widths]
        out[name] = {"mean_ms": sum(times) / len(times), "median_ms": sorted(times)[len(times) // 2],
                     "max_ms": max(times), "widths": len(set(widths))}
    torch.backends.cuda.enable_cudnn_sdp(True)
    return out


def main(path: str) -> None:
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "cudnn_sdp_enabled": torch.backends.cuda.cudnn_sdp_enabled(), "models": {}}
    for i, (name, size) in enumerate(SIZES.items()):
        torch.manual_seed(0)
        model = BertForSequenceClassification(BertConfig(**size)).cuda()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        step_ms(model, optimizer, 64, 16, True)  # the first call of all: CUDA context, cuBLAS handles
        report["models"][name] = {"train step": conditions(model.train(), optimizer, True, 100 * i),
                                  "forward": conditions(model.eval(), optimizer, False, 100 * i + 50)}
        print(name, json.dumps(report["models"][name], indent=1), flush=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
