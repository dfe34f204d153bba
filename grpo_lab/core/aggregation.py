"""Loss aggregation: how per-token losses become one scalar.

The choice of normaliser is its own axis (STYLE.md §2), separate from the objective:

- ``token_mean``              sum_{i,t} m_{i,t} l_{i,t} / sum_{i,t} m_{i,t}         DAPO (2503.14476) Eq. 8
- ``seq_mean_token_mean``     (1/B) sum_i (1/|o_i|) sum_t m_{i,t} l_{i,t}           DeepSeekMath (2402.03300) Eq. 3
- ``seq_mean_token_sum``      (1/B) sum_i sum_t m_{i,t} l_{i,t}
- ``seq_mean_token_sum_norm`` (1/B) sum_i sum_t m_{i,t} l_{i,t} / norm               Dr. GRPO (2503.20783), norm = MAX_TOKENS (required)

``|o_i| = sum_t m_{i,t}``. A sequence with no completion token contributes 0 (never NaN).
"""

from __future__ import annotations

import torch

from grpo_lab.core.choices import AGGREGATION_MODES


def masked_fill_zero(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``m * x`` with exact zeros where ``m == 0``, even when ``x`` holds huge values there. Shapes (B, T)."""
    return torch.where(mask > 0, x * mask, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scalar ``sum(m * x) / sum(m)`` over all masked entries; 0 when the mask is empty."""
    return masked_fill_zero(x, mask).sum() / mask.sum().clamp(min=1.0)


def _token_mean(masked: torch.Tensor, mask: torch.Tensor, norm: float | None) -> torch.Tensor:
    return masked.sum() / mask.sum().clamp(min=1.0)


def _seq_mean_token_mean(masked: torch.Tensor, mask: torch.Tensor, norm: float | None) -> torch.Tensor:
    return (masked.sum(dim=-1) / mask.sum(dim=-1).clamp(min=1.0)).mean()


def _seq_mean_token_sum(masked: torch.Tensor, mask: torch.Tensor, norm: float | None) -> torch.Tensor:
    return masked.sum(dim=-1).mean()


def _seq_mean_token_sum_norm(masked: torch.Tensor, mask: torch.Tensor, norm: float | None) -> torch.Tensor:
    if norm is None:
        raise ValueError("seq_mean_token_sum_norm needs norm, Dr. GRPO's constant: the generation budget "
                         "(rollout.max_new_tokens), not a batch's padded width, which changes from batch to batch")
    if norm <= 0:
        raise ValueError(f"norm must be positive, got {norm}")
    return (masked.sum(dim=-1) / norm).mean()


AGGREGATIONS = dict(zip(AGGREGATION_MODES, (  # mode -> reduction of the masked per-token loss (B, T) to a scalar
    _token_mean, _seq_mean_token_mean, _seq_mean_token_sum, _seq_mean_token_sum_norm)))


def aggregate(
    per_token: torch.Tensor, mask: torch.Tensor, mode: str, *, norm: float | None = None
) -> torch.Tensor:
    """Reduce a per-token loss ``(B, T)`` to a scalar with ``mask`` ``(B, T)``; see the module docstring.

    ``norm`` is used only by ``seq_mean_token_sum_norm``, which needs it: the generation budget, as in
    Dr. GRPO's ``(loss * mask).sum(-1) / MAX_TOKENS`` (a batch's padded width is not a constant).
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation mode {mode!r}; choose one of {', '.join(AGGREGATION_MODES)}")
    return AGGREGATIONS[mode](masked_fill_zero(per_token, mask), mask, norm)
