"""Iterative RL and reference updates: how much old reward-model data to replay, and the reference
model moved towards the policy (DeepSeekMath Algorithm 1; TR-DPO 2404.09656)."""

from __future__ import annotations

from typing import Iterable

import torch


def replay_count(new: int, *, fraction: float) -> int:
    """How many earlier pairs join `new` fresh ones so that the replayed share of the mixture is
    `fraction`: the integer n nearest to f * new / (1 - f), so that n / (new + n) ~= f
    (DeepSeekMath Algorithm 1 replays 10% historical data, f = 0.1).

    Exact when f * new / (1 - f) is an integer: new = 90, f = 0.1 gives n = 10 and 10 / 100 = 0.1.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the replayed fraction must be in [0, 1), got {fraction}")
    if new < 0:
        raise ValueError(f"the number of new pairs must be >= 0, got {new}")
    return int(round(fraction * new / (1.0 - fraction)))


@torch.no_grad()
def mix_into(target: Iterable[torch.Tensor], source: Iterable[torch.Tensor], *, alpha: float) -> None:
    """Moves each tensor of `target` towards the matching one of `source`, in place:

    ``target <- alpha * source + (1 - alpha) * target``

    (TR-DPO's soft reference update, TRL's `ref_model_mixup_alpha`; alpha = 1 copies `source`
    exactly, a hard reset of the reference to the policy.)
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    for t, s in zip(target, source, strict=True):
        if t.shape != s.shape:
            raise ValueError(f"tensor shapes differ: {tuple(t.shape)} vs {tuple(s.shape)}")
        if alpha == 1.0:
            t.copy_(s)
        else:
            t.lerp_(s.to(t.dtype), alpha)
