"""`train.precision: auto`: the fastest precision that passed the learning-quality check
(analysis/precision_quality.py, results/precision/README.md) on the hardware a run lands on.

- bf16-mixed where the hardware computes in bf16: a CPU with AVX-512 BF16 or AMX, a GPU that
  supports bf16. The weights and the optimizer state stay float32; forward passes run in bf16
  under autocast (the engine's, see `Engine.autocast`).
- 32-true everywhere else.

Reading the CPU's flags needs no torch; asking about a GPU imports it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true")
# the precisions the learning-quality check found not worse than float32 (results/precision/README.md)
QUALITY_CHECKED = ("bf16-mixed",)
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU's feature flags from /proc/cpuinfo; empty where there is none (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (AVX-512 BF16 or AMX)."""
    return any(flag in cpu_flags() for flag in CPU_BF16_FLAGS)


def cuda_has_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def device_kind(device: str) -> str:
    """"cpu" or "cuda": where a run with `train.device: device` computes."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_precision(precision: str, device: str) -> str:
    """The precision a run computes in: `precision` itself unless it is "auto", which becomes
    bf16-mixed where the hardware has bf16 and the quality check passed, else 32-true."""
    if precision != "auto":
        return precision
    has_bf16 = cuda_has_bf16() if device_kind(device) == "cuda" else cpu_has_bf16()
    return "bf16-mixed" if has_bf16 and "bf16-mixed" in QUALITY_CHECKED else "32-true"


def lightning_precision(precision: str) -> str:
    """What Lightning's Trainer is given: bf16-mixed is the engine's own autocast (scoped to each
    forward pass, so that casts of the weights are made once per pass and dropped before an
    optimizer step), so Lightning runs 32-true under it; the rest are Lightning's plugins."""
    return "32-true" if precision == "bf16-mixed" else precision
