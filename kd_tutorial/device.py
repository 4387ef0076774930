"""The device and its precision: which device to use, which number format pays off there, and synchronising.

A leaf module: it imports nothing of the package but its error type, so the training loop,
evaluation, the benchmark and the notebook header can all use it.

The precision each device gets (:func:`precision_for`):

=====================================  ==========  =============  ==============
device                                 autocast    GradScaler     fp32 matmuls
=====================================  ==========  =============  ==============
CUDA, compute capability >= 8.0        bf16        no             TF32
(A100, L4, H100, H200)
CUDA 7.x (T4 7.5, V100 7.0)            fp16        yes            fp32
CUDA below 7.0 (P100, GTX 10xx, P40)   none (fp32) no             fp32
CPU with AVX-512 BF16 / AMX            bf16        no             fp32
(:func:`cpu_bf16_units`)
other CPUs, MPS                        none (fp32) no             fp32
=====================================  ==========  =============  ==============

A T4 *reports* bf16 as supported (``torch.cuda.is_bf16_supported()`` counts
emulation), but it has no bf16 tensor cores and PyTorch's memory-efficient
attention takes only fp16/fp32 below sm80: so the compute capability decides.
"""
from __future__ import annotations

import contextlib
import os
import platform
import sys

import torch

from .errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device() -> str:
    """``"cuda"`` when a GPU is visible, ``"mps"`` on Apple silicon, else ``"cpu"``."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def available_devices() -> list[str]:
    """The devices this machine can compute on: ``cpu``, then ``cuda:0`` ... and ``mps`` where there are."""
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    mps = getattr(torch.backends, "mps", None)
    return devices + (["mps"] if mps is not None and mps.is_available() else [])


def check_device(device: str | torch.device, what: str = "device") -> str | torch.device:
    """``device`` when this machine has it (``"cpu"`` for ``"cpu:0"``); otherwise a one-line UsageError naming the
    devices it has, or the fix for a CPU given an index. ``what`` names the argument: ``"device"`` (a function's,
    said ``device='gpu'``) or a flag (``"--device"``, said ``--device gpu``), as the command line says it."""
    have, flag = available_devices(), what.startswith("-")
    said, cpu = (f"{what} {device}", f"{what} cpu") if flag else (f"{what}={str(device)!r}", f"{what}='cpu'")
    try:
        parsed = torch.device(device)
        kind, index = parsed.type, parsed.index
    except (RuntimeError, ValueError, TypeError):  # "tpu", "cuda:x", 3: not a device torch knows
        kind, index = None, None
    if kind == "cpu" and index:  # torch takes "cpu:1", but there is one CPU device, whatever its cores
        raise UsageError(f"{said}: the CPU is one device, with no index: give {cpu}")
    if kind == "cpu":
        return "cpu"
    if (kind == "mps" and "mps" in have) or (kind == "cuda" and f"cuda:{index or 0}" in have):
        return device
    if kind not in ("cuda", "mps"):
        lower = str(device).lower()  # "CUDA", "Cpu": torch takes lower case alone ("GPU" is no device either way)
        why = "is not a device the course runs on" + (f" (its names are lower case: {lower})" if lower != str(device)
                                                       and lower.partition(":")[0] in ("cpu", "cuda", "mps") else "")
    elif kind == "mps":
        why = "needs Apple silicon with an MPS build of torch"
    elif any(d.startswith("cuda") for d in have):
        why = f"is not here: this machine has {sum(d.startswith('cuda') for d in have)} CUDA GPU(s)"
    else:
        why = (f"needs a CUDA GPU, and torch {torch.__version__} "
               + ("is built without CUDA" if torch.version.cuda is None else "sees none"))
    raise UsageError(f"{said} {why}; available here: {', '.join(have)}: give one of them, or leave {what} out for the "
                     "best one")


def device_type(device: str | torch.device) -> str:
    """``"cuda"`` for ``"cuda"``, ``"cuda:1"`` or ``torch.device("cuda", 0)``: what ``torch.autocast`` wants."""
    return torch.device(device).type


def pad_multiple(device: str | torch.device) -> int:
    """The multiple a batch's width is rounded up to: 8 tokens on a GPU, 1 elsewhere.

    A GPU chooses its kernels for a new input shape at the shape's first call, which costs far more than the call
    itself (measured on an H200: docs/gpu/README.md): fewer widths mean fewer first calls, and 8 suits its tensor
    cores. A CPU would only compute the extra padding."""
    return 8 if device_type(device) == "cuda" else 1


def slow_first_calls(device: str | torch.device) -> bool:
    """Whether a new input shape's first call is slow on ``device`` (a GPU's kernel choice, :func:`pad_multiple`):
    the timings then run every shape they time once beforehand."""
    return device_type(device) == "cuda"


def cuda_capability(device: str | torch.device = "cuda") -> tuple[int, int]:
    """The GPU's compute capability, e.g. ``(7, 5)`` for a T4 and ``(9, 0)`` for an H100."""
    index = torch.device(device).index
    return torch.cuda.get_device_capability(index if index is not None else torch.cuda.current_device())


def memory_gb(device: str) -> float | None:
    """A CUDA device's total memory in GiB, as ``torch.cuda`` reports it; None for any other device."""
    if device_type(device) != "cuda":
        return None
    return torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30


def bf16_supported(device: str) -> bool:
    """Whether bf16 runs natively (not emulated) on ``device``: CUDA capability >= 8.0, or a CPU with bf16 units
    (:func:`cpu_bf16_units`)."""
    kind = device_type(device)
    if kind == "cuda":
        return cuda_capability(device) >= (8, 0)
    return kind == "cpu" and cpu_bf16_units()


def cpu_bf16_units() -> bool:
    """Whether this x86 CPU has bf16 units (AVX-512 BF16 or AMX): the flags of Linux's /proc/cpuinfo there, and
    elsewhere (Windows, which has no such file) the same two features as torch's copy of cpuinfo reads them from the
    CPU (``torch.cpu._is_avx512_bf16_supported``, ``_is_amx_tile_supported``; False where this torch has neither).

    Not counted: AVX-512 without BF16, where ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is True for oneDNN's
    emulated bf16 (slower than fp32), and Arm CPUs. Apple's M2 and later have Arm's BF16 instructions (``sysctl -n
    hw.optional.arm.FEAT_BF16`` prints 1), but whether torch's bf16 autocast runs faster than fp32 on them was never
    measured (there is no Mac here), so ``"auto"`` stays fp32 on a Mac's CPU; ``--set precision=bf16`` tries it."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo") as f:
                flags = f.read()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(bool(probe()) for probe in probes if probe is not None)
    except (RuntimeError, AttributeError):  # a private function that this torch's build lacks underneath
        return False


def precision_for(device: str) -> str:
    """The precision ``"auto"`` means on ``device``: ``"bf16"``, ``"fp16"`` (CUDA 7.x, whose tensor cores run it) or
    ``"fp32"`` (CUDA below 7.0 too: Pascal's GTX 10xx and P40 run fp16 at 1/64 of their fp32 rate, without tensor
    cores, and a P100's fp16 would pay a GradScaler for no tensor core either)."""
    if bf16_supported(device):
        return "bf16"
    return "fp16" if device_type(device) == "cuda" and cuda_capability(device) >= (7, 0) else "fp32"


def resolve_precision(device: str, precision: str = "auto") -> str:
    """``precision`` with ``"auto"`` replaced by :func:`precision_for`; a ValueError names the choices, and a
    :class:`~kd_tutorial.errors.UsageError` a 16-bit precision that Apple's GPU cannot run here
    (:func:`check_mps_precision`)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    check_mps_precision(device, precision)
    return precision_for(device) if precision == "auto" else precision


# The torch release from which Apple's GPU (MPS) runs each 16-bit precision of the training loop: fp16 autocast came
# in 2.5, but its GradScaler's unscale_ raised there until 2.8 ("Cannot convert a MPS Tensor to float64 dtype",
# pytorch/pytorch#142397, fixed by #150255); bf16 autocast came in 2.6 (#139390), on macOS 14 or newer only.
MPS_TORCH = {"fp16": (2, 8), "bf16": (2, 6)}


def _release(version: str) -> tuple[int, int]:
    """``(2, 5)`` for ``"2.5.1+cpu"`` or ``"2.5.0a0"``."""
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in version.split("+")[0].split(".")[:2]]
    return tuple(parts + [0] * (2 - len(parts)))


def check_mps_precision(device: str, precision: str) -> None:
    """A one-line UsageError when ``precision`` (fp16 or bf16) cannot run on Apple's GPU ``device`` here: a torch
    older than :data:`MPS_TORCH` says (before 2.5 every step raised "unsupported autocast device_type 'mps'"), or
    bf16 before macOS 14 (MPS refuses bf16 tensors). Nothing for other devices, or for fp32 and auto (fp32 on MPS)."""
    if device_type(device) != "mps" or precision not in MPS_TORCH:
        return
    fix = "or set precision to fp32 or auto (--set precision=auto), which runs fp32 on MPS"
    mac = platform.mac_ver()[0]
    if precision == "bf16" and mac and _release(mac) < (14, 0):
        raise UsageError(f"precision=bf16 on Apple's GPU (MPS) needs macOS 14 or newer (this is macOS {mac}): "
                         f"use precision=fp16 (torch 2.8 or newer), {fix}")
    least = MPS_TORCH[precision]
    if _release(torch.__version__) < least:
        wanted = ".".join(map(str, least))
        raise UsageError(f"precision={precision} on Apple's GPU (MPS) needs torch {wanted} or newer (this is torch "
                         f'{torch.__version__}): pip install -U "torch>={wanted}", {fix}')


def autocast_dtype(device: str, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device`` (None means fp32): bf16 from capability 8.0, fp16 below, on CUDA."""
    return DTYPES[resolve_precision(device, precision)]


def autocast(device: str | torch.device, dtype: torch.dtype | None = None):
    """``torch.autocast`` to ``dtype`` on ``device``'s type; with ``dtype`` None (fp32), a region with autocast off
    (inside an autocast one, for what needs fp32). Where torch has no autocast for the device at all, an fp32 region
    is no context: torch before 2.5 refuses even a disabled autocast on Apple's MPS ("User specified an unsupported
    autocast device_type 'mps'"), and autocast cannot be on there to turn off."""
    try:
        return torch.autocast(device_type=device_type(device), dtype=dtype or torch.float32, enabled=dtype is not None)
    except RuntimeError:
        if dtype is not None:  # asked for a 16-bit precision that this torch cannot give on this device
            raise
        return contextlib.nullcontext()


def tf32_enabled(device: str) -> bool:
    """Whether fp32 matmuls may use TF32 tensor cores on ``device`` (CUDA capability >= 8.0)."""
    return device_type(device) == "cuda" and cuda_capability(device) >= (8, 0)


@contextlib.contextmanager
def exact_fp32():
    """fp32 matrix products in full fp32 inside the block, whatever :func:`configure` chose: TF32 (from capability
    8.0) keeps 10 bits of mantissa, so two attention kernels that agree to 1e-6 in fp32 differ by about 1e-3."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def configure(device: str) -> dict:
    """Set up ``device`` for training; return what was chosen (for results.json).

    On CUDA: the caching allocator's ``expandable_segments`` (less fragmentation
    with variable-length batches; only before the first CUDA allocation, and never
    over a user's own setting), and TF32 for fp32 matmuls from capability 8.0, so
    that an "fp32" baseline is the fast fp32 that a user would actually run.
    """
    if device_type(device) == "cuda":
        if "PYTORCH_ALLOC_CONF" not in os.environ and "PYTORCH_CUDA_ALLOC_CONF" not in os.environ:
            os.environ["PYTORCH_ALLOC_CONF"] = "expandable_segments:True"  # read at the first allocation
            os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"  # its name before torch 2.9
        if tf32_enabled(device):
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
    return describe(device)


def describe(device: str) -> dict:
    """The device's precision choices: capability, autocast dtype, GradScaler and TF32."""
    precision = precision_for(device)
    return {"device": str(device), "capability": ".".join(map(str, cuda_capability(device)))
            if device_type(device) == "cuda" else None,
            "precision": precision, "grad_scaler": precision == "fp16", "tf32": tf32_enabled(device)}


def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA and Apple's MPS run asynchronously), so that a timer measures it."""
    kind = device_type(device)
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()
