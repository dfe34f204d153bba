"""Reward shaping: what is added to the task's reward before advantages are computed.

Sequence rewards are (B,); per-token rewards (B, T) follow the completion mask (1 on sampled
tokens through EOS).
"""

from __future__ import annotations

import torch

from grpo_lab.core.kl import kl_estimate


def overlong_punishment(lengths: torch.Tensor, *, max_len: int, buffer: int) -> torch.Tensor:
    """DAPO's soft overlong punishment (2503.14476 Eq. 13), (B,) lengths -> (B,) rewards in [-1, 0]:

    0 if |y| <= L_max - L_cache; ((L_max - L_cache) - |y|) / L_cache if L_max - L_cache < |y| <= L_max;
    -1 if |y| > L_max. ``buffer`` = L_cache > 0, ``max_len`` = L_max.
    """
    if buffer <= 0:
        raise ValueError(f"buffer must be > 0, got {buffer}")
    free = max_len - buffer
    penalty = (free - lengths.float()) / buffer
    return torch.where(lengths > max_len, -1.0, torch.where(lengths <= free, 0.0, penalty))


def kl_reward_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, *, kind: str = "k3") -> torch.Tensor:
    """The sequence's summed KL estimate ``sum_t m_t k(logp_t, ref_logp_t)``, (B, T) -> (B,), detached.

    Subtracted (times beta) from a sequence reward before a group baseline: KL in the reward for
    an outcome advantage (RLOO, InstructGPT's penalty summed over the sequence).
    """
    return (kl_estimate(logp.detach(), ref_logp.detach(), kind=kind) * mask).sum(-1)


def last_token_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Outcome rewards (B,) placed on each completion's last token: (B, T), 0 elsewhere."""
    lengths = mask.sum(-1)
    last = (mask.cumsum(-1) == lengths[:, None]) & (mask > 0)
    return last.to(mask.dtype) * rewards.detach()[:, None]


def token_rewards(rewards: torch.Tensor, mask: torch.Tensor, *, kl: torch.Tensor | None = None,
                  beta: float = 0.0) -> torch.Tensor:
    """Per-token rewards (B, T) for a token-level advantage (PPO's GAE; InstructGPT 2203.02155 Eq. 2):

    ``r_t = -beta * kl_t + 1[t = last] * r``, with ``kl`` the per-token KL estimate (B, T) against the
    reference, or None for no penalty; 0 where ``mask == 0``.
    """
    out = last_token_rewards(rewards, mask)
    if kl is not None:
        out = out - beta * kl.detach() * mask
    return out
