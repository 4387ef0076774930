"""Does torch.compile speed up distil-3L's training step on this CPU? (docs/tuning.md, "Twenty minutes")

    python docs/tuning/bench_compile.py eager      # bf16 autocast, as the course loop
    python docs/tuning/bench_compile.py compile    # the same step under torch.compile (inductor)
    python docs/tuning/bench_compile.py fp32       # no autocast

One step: 16 reviews x 256 tokens through a 3-layer, 384-wide BERT (random weights, word embeddings frozen as in the
cpu profile), cross-entropy, AdamW. Prints the warm-up time (two steps, compiling included) and the mean of 10 steps.
Run each mode alone on idle cores.
"""
import sys
import time

import torch
from transformers import BertConfig, BertForSequenceClassification
torch.manual_seed(0)
mode = sys.argv[1]
cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=3, num_attention_heads=12, intermediate_size=1536,
                 attention_probs_dropout_prob=0.0, num_labels=2)
cfg._attn_implementation = "sdpa"
m = BertForSequenceClassification(cfg)
m.bert.embeddings.word_embeddings.weight.requires_grad_(False)
opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
ids, y = torch.randint(1000, 30000, (16, 256)), torch.randint(0, 2, (16,))
mask = torch.ones_like(ids)


def step():
    """One optimizer step on the fixed batch."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=(mode != "fp32")):
        out = m(input_ids=ids, attention_mask=mask).logits
    loss = torch.nn.functional.cross_entropy(out.float(), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


if mode == "compile":
    step = torch.compile(step)
t = time.time()
step()
step()
print(mode, "warmup", round(time.time() - t, 1), flush=True)
t = time.time()
for _ in range(10): step()
print(mode, "s/step", round((time.time() - t) / 10, 3), flush=True)
