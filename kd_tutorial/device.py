"""The device and its precision: which device to use, which autocast dtype pays off there, and synchronising.

A leaf module: it imports nothing of the package, so the training loop,
evaluation and the notebook header can all use it.
"""
from __future__ import annotations

import torch


def pick_device() -> str:
    """``"cuda"`` when a GPU is visible, ``"mps"`` on Apple silicon, else ``"cpu"``."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def bf16_supported(device: str) -> bool:
    """Whether bf16 autocast is worth using on ``device`` (CUDA with bf16, or a CPU with AVX-512 BF16/AMX)."""
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    if device == "cpu":
        try:
            with open("/proc/cpuinfo") as f:
                flags = f.read()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def autocast_dtype(device: str, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device`` (None means fp32): bf16 where supported, else fp16 on CUDA."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "cpu" and bf16_supported("cpu"):
        return torch.bfloat16
    return None


def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so that a timer measures it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
