"""Direct preference optimisation (Rafailov et al. 2305.18290, Eq. 7; DeepSeekMath Table 10, Eq. 13-14)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from grpo_lab.core.aggregation import masked_fill_zero


class DPOResult(NamedTuple):
    loss: torch.Tensor  # (B,) loss per pair
    metrics: dict[str, torch.Tensor]  # detached scalars


def dpo_loss(
    chosen_logp: torch.Tensor,
    rejected_logp: torch.Tensor,
    ref_chosen_logp: torch.Tensor,
    ref_rejected_logp: torch.Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> DPOResult:
    """DPO loss per preference pair, shape (B,).

    Inputs are per-sequence summed log-probs (B,): c = chosen_logp, r = rejected_logp and
    rc, rr their reference counterparts. With ``h = (c - rc) - (r - rr)`` and ``ls = label_smoothing``:

    ``loss = -(1 - ls) * log sigmoid(beta * h) - ls * log sigmoid(-beta * h)``

    (ls > 0 is the conservative DPO of Mitchell 2023: labels flipped with probability ls.)
    Metrics: ``dpo/chosen_reward`` = mean beta (c - rc), ``dpo/rejected_reward`` = mean beta (r - rr),
    ``dpo/reward_margin`` = their mean difference, ``dpo/reward_accuracy`` = fraction of pairs with
    chosen reward > rejected reward.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_logratio = chosen_logp - ref_chosen_logp
    rejected_logratio = rejected_logp - ref_rejected_logp
    logits = beta * (chosen_logratio - rejected_logratio)  # (B,)
    loss = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    with torch.no_grad():
        chosen_reward = beta * chosen_logratio
        rejected_reward = beta * rejected_logratio
        metrics = {
            "dpo/chosen_reward": chosen_reward.mean(),
            "dpo/rejected_reward": rejected_reward.mean(),
            "dpo/reward_margin": (chosen_reward - rejected_reward).mean(),
            "dpo/reward_accuracy": (chosen_reward > rejected_reward).float().mean(),
        }
    return DPOResult(loss, metrics)


def dpo_pair_loss(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, *, beta: float = 0.1,
                  label_smoothing: float = 0.0) -> DPOResult:
    """DPO loss of N pairs stacked as 2N rows: rows [0, N) chosen, rows [N, 2N) rejected (row i paired
    with row N + i). ``logp``, ``ref_logp``, ``mask``: (2N, T). Sequence log-probs are the masked
    sums over tokens (Rafailov). Returns the mean loss over pairs (a scalar) and `dpo_loss`'s
    metrics. The layout of `core.paradigm.dpo_coefficient`."""
    if mask.shape[0] % 2:
        raise ValueError(f"DPO rows must be 2N (chosen then rejected), got {mask.shape[0]}")
    policy = masked_fill_zero(logp, mask).sum(-1)  # (2N,)
    ref = masked_fill_zero(ref_logp, mask).sum(-1)
    chosen, rejected = policy.chunk(2)
    ref_chosen, ref_rejected = ref.chunk(2)
    result = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=beta, label_smoothing=label_smoothing)
    return DPOResult(result.loss.mean(), result.metrics)


class PairLossResult(NamedTuple):
    loss: torch.Tensor  # (N,) loss per pair
    metrics: dict[str, torch.Tensor]  # detached scalars


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> PairLossResult:
    """Bradley-Terry loss of a reward model per preference pair, shape (N,).

    ``chosen_rewards`` and ``rejected_rewards`` are the scalar rewards r(x, y+) and r(x, y-) of the
    N pairs, (N,) each. Under the Bradley-Terry model P(y+ > y-) = sigmoid(r(x, y+) - r(x, y-)), and
    the loss is its negative log-likelihood (InstructGPT 2203.02155, Eq. 1; DeepSeekMath's reward
    model):

    ``loss = -log sigmoid(r(x, y+) - r(x, y-))``

    Metrics: ``reward_model/accuracy`` = fraction of pairs with r(x, y+) > r(x, y-), a tie counting
    half (a model that tells nothing apart, like a zero head, scores the chance level 0.5),
    ``reward_model/margin`` = mean of r(x, y+) - r(x, y-).
    """
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(f"chosen and rejected rewards differ in shape: {tuple(chosen_rewards.shape)} vs "
                         f"{tuple(rejected_rewards.shape)}")
    margin = chosen_rewards - rejected_rewards
    loss = -F.logsigmoid(margin)
    with torch.no_grad():
        correct = (margin > 0).float() + 0.5 * (margin == 0).float()
        metrics = {"reward_model/accuracy": correct.mean(), "reward_model/margin": margin.mean()}
    return PairLossResult(loss, metrics)
