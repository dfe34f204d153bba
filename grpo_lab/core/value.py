"""Critic loss for PPO (InstructGPT / Secrets of RLHF, papers.md §7)."""

from __future__ import annotations

import torch

from grpo_lab.core.aggregation import masked_fill_zero, masked_mean


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float = 0.2,
) -> torch.Tensor:
    """Clipped value loss per token, shape (B, T), 0 where ``mask == 0``:

    ``0.5 * max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)``

    with V = ``values`` (B, T) (requires grad), V_old = ``old_values`` and R = ``returns`` (B, T),
    the GAE returns ``A + V_old`` (papers.md §7). Reduce with ``aggregation.aggregate``.
    """
    if clip < 0:
        raise ValueError(f"clip must be >= 0, got {clip}")
    old_values = old_values.detach()
    returns = returns.detach()
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    loss = 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return masked_fill_zero(loss, mask)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1 - Var(R - V) / Var(R)`` over the masked tokens (population variances), a float64 scalar:
    1 for a perfect critic, <= 0 for a useless one, NaN when the returns do not vary."""
    var_returns = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask).double()
    residual = returns - values
    var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask).double()
    if var_returns <= 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    return 1.0 - var_residual / var_returns
