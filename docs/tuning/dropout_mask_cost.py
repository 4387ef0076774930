"""What one dropout mask costs on this CPU, per element: PyTorch's dropout, its Bernoulli draw, and a uniform draw.

PyTorch draws a dropout mask with ``Tensor.bernoulli_(1 - p)``. With MKL, on a CPU whose vendor is Intel, that is
MKL's vectorised, multi-threaded generator; on every other CPU (AMD's included) it falls back to one Mersenne-twister
draw per element, in one thread, behind the generator's lock (``bernoulli_scalar_kernel`` in
aten/src/ATen/native/cpu/DistributionKernels.cpp, then ``cpu_serial_kernel`` in DistributionTemplates.h). This script
measures the consequence on the machine it runs on.
Run from the repository root on idle cores: python docs/tuning/dropout_mask_cost.py > docs/tuning/dropout-mask-cost.json
The shapes are the `tiny` profile's: attention probabilities of a batch (32 reviews, 4 heads, 64 x 64 tokens) and
the hidden states of a layer (32 x 64 x 64).
"""
import json
import time

import torch
import torch.nn.functional as F

from tiny_step_share import cpu_model

SHAPES = {"attention probabilities (32, 4, 64, 64)": (32, 4, 64, 64), "hidden states (32, 64, 64)": (32, 64, 64)}


def vendor() -> str:
    """The CPU vendor string of /proc/cpuinfo (GenuineIntel, AuthenticAMD, ...), or "unknown"."""
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("vendor_id"))
    except (OSError, StopIteration):
        return "unknown"


def ns_per_element(fn, x: torch.Tensor, repeats: int = 100) -> float:
    """Median nanoseconds per element of ``fn(x)`` over ``repeats`` calls, after 3 warm-up calls."""
    for _ in range(3):
        fn(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return 1e9 * sorted(times)[repeats // 2] / x.numel()


def main() -> dict:
    """Measure each operation at 1 and 2 threads on both shapes; the record to print."""
    ops = {"F.dropout(x, 0.1, training=True)": lambda x: F.dropout(x, 0.1, training=True),
           "torch.empty_like(x).bernoulli_(0.9)": lambda x: torch.empty_like(x).bernoulli_(0.9),
           "torch.rand_like(x)": torch.rand_like,
           "x * x (one elementwise product, for scale)": lambda x: x * x}
    torch.manual_seed(0)
    record = {"cpu": cpu_model(), "vendor": vendor(), "torch": torch.__version__,
              "mkl": torch.backends.mkl.is_available(),
              "mkl_bernoulli_path": torch.backends.mkl.is_available() and vendor() == "GenuineIntel",
              "unit": "nanoseconds per element, median of 100 calls", "results": {}}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for shape_name, shape in SHAPES.items():
            x = torch.randn(shape)
            record["results"][f"{threads} thread(s), {shape_name}"] = {
                name: round(ns_per_element(fn, x), 2) for name, fn in ops.items()}
    return record


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
