"""Advantage estimators. Outputs are detached: advantages are constants of the objective.

Group layout: ``B = P * G`` rows, the G completions of one prompt contiguous.

A group whose rewards all agree carries no signal, and every estimator here gives its rows an
advantage of exactly 0. Rewards agree when they are equal to within ``AGREE_TOL`` of their size
(``max - min <= AGREE_TOL * max(1, max |r|)``): weighted rewards such as eight rewards of 0.7 are
equal but not exact in binary, and the rounding of their mean leaves a spread of ~1e-8 that a
division by ``std + eps`` would turn into advantages of ~0.06 for every row of the group.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from grpo_lab.core.aggregation import masked_fill_zero, masked_mean
from grpo_lab.core.choices import GROUP_SCALES

AGREE_TOL = 1e-6  # rewards this close (relative to max(1, |r|)) agree: their differences are rounding


class GAEResult(NamedTuple):
    advantages: torch.Tensor  # (B, T), 0 where mask == 0
    returns: torch.Tensor  # (B, T), advantages + values, 0 where mask == 0


def _grouped(rewards: torch.Tensor, group_size: int, *, min_size: int) -> torch.Tensor:
    """View (B,) rewards as (P, G), with clear errors."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (B,), got shape {tuple(rewards.shape)}")
    if group_size < min_size:
        raise ValueError(
            f"group_size must be >= {min_size}, got {group_size}: a group-relative baseline needs "
            "at least 2 completions per prompt"
        )
    if rewards.numel() % group_size:
        raise ValueError(
            f"rewards length {rewards.numel()} is not divisible by group_size {group_size} "
            "(expected B = P * G with each prompt's G completions contiguous)"
        )
    return rewards.detach().reshape(-1, group_size)


def agreeing(grouped: torch.Tensor) -> torch.Tensor:
    """(P, G) -> (P, 1) bool: True where a group's values all agree (see the module docstring)."""
    spread = grouped.amax(dim=1, keepdim=True) - grouped.amin(dim=1, keepdim=True)
    return spread <= AGREE_TOL * grouped.abs().amax(dim=1, keepdim=True).clamp(min=1.0)


def _centered(grouped: torch.Tensor) -> torch.Tensor:
    """``r - mean_group(r)``, (P, G), exactly 0 in groups whose rewards agree."""
    return torch.where(agreeing(grouped), 0.0, grouped - grouped.mean(dim=1, keepdim=True))


def group_relative(
    rewards: torch.Tensor, group_size: int, *, scale: str = "group", eps: float = 1e-6
) -> torch.Tensor:
    """GRPO outcome advantage, (B,) -> (B,). DeepSeekMath (2402.03300) §4.1.2:

    ``A_i = (r_i - mean_group(r)) / (std_group(r) + eps)`` for ``scale="group"`` (std with Bessel's
    correction), ``/ (std(r over the whole batch) + eps)`` for ``"batch"``, no division for
    ``"none"`` (Dr. GRPO 2503.20783, which removes the difficulty bias of the per-group std).
    ``A_i = 0`` exactly in a group whose rewards agree (module docstring).
    """
    if scale not in GROUP_SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(GROUP_SCALES)}")
    grouped = _grouped(rewards, group_size, min_size=2)  # (P, G)
    centered = _centered(grouped)
    if scale == "group":
        centered = centered / (grouped.std(dim=1, keepdim=True) + eps)
    elif scale == "batch":
        centered = centered / (grouped.std() + eps)
    return centered.reshape(-1)


def reinforce_plus_plus(rewards: torch.Tensor, group_size: int = 1, *, eps: float = 1e-6) -> torch.Tensor:
    """REINFORCE++ outcome advantage with a global baseline normalisation, (B,) -> (B,).
    Hu et al. (2501.03262), papers.md §7:

    ``A~_i = r_i - mean_group(r)`` (REINFORCE++-baseline, G > 1) or ``r_i - mean_batch(r)`` (G = 1),
    then ``A_i = A~_i / (std_batch(A~) + eps)`` over every sample of the batch (std with Bessel's
    correction). Unlike GRPO's group std, one scale for the whole batch: a group whose rewards
    barely differ keeps small advantages, and one whose rewards agree gets exactly 0.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if group_size == 1:
        centered = _centered(rewards.detach().reshape(1, -1)).reshape(-1)
    else:
        centered = _centered(_grouped(rewards, group_size, min_size=2)).reshape(-1)  # (B,)
    if centered.numel() < 2:
        return centered
    return centered / (centered.std() + eps)


def zero_std_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B,) rewards -> (P,) bool, True where all G rewards of a prompt are equal (zero advantage).

    DAPO's dynamic sampling (2503.14476 Eq. 11) drops these groups; they carry no gradient. Equal
    means agreeing as every estimator here takes it (module docstring).
    """
    return agreeing(_grouped(rewards, group_size, min_size=1)).squeeze(1)


def rloo(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out advantage, (B,) -> (B,). Ahmadian et al. (2402.14740) Eq. 6:

    ``A_i = r_i - (1 / (G - 1)) * sum_{j != i} r_j`` within each group of G; exactly 0 in a group
    whose rewards agree.
    """
    grouped = _grouped(rewards, group_size, min_size=2)
    others_mean = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return torch.where(agreeing(grouped), 0.0, grouped - others_mean).reshape(-1)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
    whiten: bool = False,
) -> GAEResult:
    """Generalised advantage estimation over the completion tokens (Schulman 1506.02438 Eq. 16;
    papers.md §7, InstructGPT-style PPO):

    ``delta_t = r_t + gamma * V_{t+1} - V_t``,  ``A_t = delta_t + gamma * lam * A_{t+1}``,
    ``R_t = A_t + V_t``.

    ``rewards``, ``values``, ``mask``: (B, T). The recursion runs over masked positions only: t+1
    means the next position with ``mask == 1`` (prompt tokens, padding and any masked holes are
    skipped), and the value after the last completion token is 0. ``whiten`` standardises the
    advantages over all masked tokens ``(A - mean) / sqrt(var + 1e-8)`` (var unbiased); returns are
    computed before whitening. Outputs are 0 where ``mask == 0``.
    """
    rewards, values, mask = rewards.detach(), values.detach(), mask.detach()
    valid = mask > 0
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])  # (B,)
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage_t = delta + gamma * lam * next_advantage
        keep = valid[:, t]
        advantages[:, t] = torch.where(keep, advantage_t, 0.0)
        next_value = torch.where(keep, values[:, t], next_value)
        next_advantage = torch.where(keep, advantage_t, next_advantage)
    returns = masked_fill_zero(advantages + values, mask)
    if whiten:
        advantages = whitened(advantages, mask)
    return GAEResult(advantages, returns)


def whitened(values: torch.Tensor, mask: torch.Tensor, *, mean: torch.Tensor | None = None,
             var: torch.Tensor | None = None) -> torch.Tensor:
    """``(x - mean) / sqrt(var + 1e-8)`` on the masked entries, 0 elsewhere; (B, T) -> (B, T).

    ``mean`` and ``var`` (unbiased, over the masked entries) default to those of ``values``; pass
    them when the batch is split over processes and they are the whole batch's.
    """
    if mean is None:
        mean = masked_mean(values, mask)
    if var is None:
        var = masked_fill_zero((values - mean) ** 2, mask).sum() / (mask.sum() - 1).clamp(min=1.0)
    return masked_fill_zero((values - mean) * torch.rsqrt(var + 1e-8), mask)


def process_supervised(
    step_rewards: torch.Tensor,
    step_mask: torch.Tensor,
    mask: torch.Tensor,
    group_size: int,
    *,
    eps: float = 1e-6,
) -> torch.Tensor:
    """GRPO with process supervision, DeepSeekMath (2402.03300) §4.1.3. Returns (B, T).

    ``step_rewards`` (B, T) holds the reward of step j at the token ``index(j)`` where step j ends;
    ``step_mask`` (B, T) is 1 at those tokens (only positions with ``mask == 1`` count). Over all
    steps of all G outputs of a group (the set R):

    ``r~ = (r - mean(R)) / (std(R) + eps)`` (std with Bessel's correction, 0 if |R| = 1),
    ``A_{i,t} = sum_{index(j) >= t} r~_i^{index(j)}``, then multiplied by ``mask``; exactly 0 in a
    group whose step rewards all agree.
    """
    batch, length = mask.shape
    if batch % group_size:
        raise ValueError(f"batch size {batch} is not divisible by group_size {group_size}")
    is_step = ((step_mask > 0) & (mask > 0)).detach()
    steps = is_step.float().reshape(-1, group_size * length)  # (P, G*T)
    r = torch.where(is_step, step_rewards.detach(), 0.0).reshape(-1, group_size * length)
    count = steps.sum(dim=1, keepdim=True)  # (P, 1)
    mean = r.sum(dim=1, keepdim=True) / count.clamp(min=1.0)
    sq_dev = ((r - mean) ** 2 * steps).sum(dim=1, keepdim=True)
    std = torch.where(count > 1, (sq_dev / (count - 1).clamp(min=1.0)).sqrt(), 0.0)
    highest = torch.where(steps > 0, r, -torch.inf).amax(dim=1, keepdim=True)
    lowest = torch.where(steps > 0, r, torch.inf).amin(dim=1, keepdim=True)
    agree = (count == 0) | (highest - lowest <= AGREE_TOL * torch.maximum(highest.abs(), lowest.abs()).clamp(min=1.0))
    normalised = torch.where(agree, 0.0, (r - mean) / (std + eps) * steps).reshape(batch, length)  # (B, T)
    to_go = normalised.flip(-1).cumsum(-1).flip(-1)  # sum over step ends at or after t
    return masked_fill_zero(to_go, mask)
