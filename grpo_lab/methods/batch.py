"""The data of one RL step as it moves through the engine's stages.

A data source fills a `Batch` (the rollout, and for sampled data the examples, texts, rewards
and correctness of each row); the stages after it add what they compute (advantages, the
log-probs the ratio is taken against, importance weights, the loss mask, reference log-probs).
Rows of one prompt's group are contiguous.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Optional

import torch
import torch.nn.functional as F

from grpo_lab.core import advantages as adv_lib
from grpo_lab.rollout import Rollout
from grpo_lab.rollout.replay import concat_rollouts

ROW_TENSORS = ("rewards", "correct", "versions", "replayed")  # (B,)
TOKEN_TENSORS = ("token_kl", "advantages", "returns", "old_values", "old_logp", "ref_logp", "weights", "loss_mask")


@dataclass
class Batch:
    rollout: Rollout
    examples: list = field(default_factory=list)  # the Example of each row
    texts: list = field(default_factory=list)  # each completion's text
    rewards: Optional[torch.Tensor] = None  # (B,) what the advantages are computed from: task reward plus shaping
    correct: Optional[torch.Tensor] = None  # (B,) bool: the task's verifier
    token_kl: Optional[torch.Tensor] = None  # (B, T) KL to the reference per token, kept for token-level rewards
    versions: Optional[torch.Tensor] = None  # (B,) the policy version that sampled each row
    replayed: Optional[torch.Tensor] = None  # (B,) bool: the row came from the replay buffer
    pairs: Optional[int] = None  # preference data: N pairs stacked as 2N rows (chosen, then rejected)
    reward_parts: Optional[dict] = None  # name -> (B,): each reward function's value (task.rewards)
    # filled by the stages after collection
    advantages: Optional[torch.Tensor] = None  # (B,) or (B, T)
    returns: Optional[torch.Tensor] = None  # (B, T) value targets (GAE)
    old_values: Optional[torch.Tensor] = None  # (B, T)
    old_logp: Optional[torch.Tensor] = None  # (B, T) the log-probs the surrogate's ratio is taken against
    ref_logp: Optional[torch.Tensor] = None  # (B, T)
    weights: Optional[torch.Tensor] = None  # (B, T) detached importance weights on the surrogate
    loss_mask: Optional[torch.Tensor] = None  # (B, T) tokens that carry the policy loss
    loss_scale: float = 1.0  # a factor on the loss: the kept rows' share of the step (online RFT, Eq. 10)

    @property
    def rows(self) -> int:
        return self.rollout.completion_ids.shape[0]

    @property
    def units(self) -> int:
        """What the update loop splits into minibatches: rows, or pairs of preference data."""
        return self.pairs if self.pairs is not None else self.rows

    @property
    def mask(self) -> torch.Tensor:
        """The tokens of the policy loss: `loss_mask` where set, else every completion token."""
        return self.rollout.completion_mask if self.loss_mask is None else self.loss_mask

    def select(self, rows: torch.Tensor) -> "Batch":
        """The batch of the given rows (a 1-D index tensor), in that order."""
        picked = rows.tolist()
        out = {"rollout": self.rollout.select(rows), "pairs": None,
               "examples": [self.examples[i] for i in picked] if self.examples else [],
               "texts": [self.texts[i] for i in picked] if self.texts else []}
        for name in ROW_TENSORS + TOKEN_TENSORS:
            value = getattr(self, name)
            out[name] = None if value is None else value[rows]
        if self.reward_parts is not None:
            out["reward_parts"] = {k: v[rows] for k, v in self.reward_parts.items()}
        return Batch(**out)


def select_groups(batch: Batch, groups: torch.Tensor, group_size: int) -> Batch:
    """The rows of the chosen groups (indices into the P groups), groups kept contiguous."""
    rows = (groups[:, None] * group_size + torch.arange(group_size, device=groups.device)).flatten()
    return batch.select(rows)


def concat(parts: list[Batch], pad_id: int) -> Batch:
    """Row-wise concatenation of sampled batches; completions are padded to a common width."""
    if len(parts) == 1:
        return parts[0]
    rollout = concat_rollouts([p.rollout for p in parts], pad_id)
    width = rollout.completion_ids.shape[1]
    out = {"rollout": rollout, "examples": [e for p in parts for e in p.examples],
           "texts": [t for p in parts for t in p.texts]}
    for name in ROW_TENSORS + TOKEN_TENSORS:
        values = [getattr(p, name) for p in parts]
        if any(v is None for v in values):
            continue
        if name in TOKEN_TENSORS and values[0].dim() == 2:
            values = [F.pad(v, (0, width - v.shape[1])) for v in values]
        out[name] = torch.cat(values)
    if all(p.reward_parts is not None for p in parts):
        out["reward_parts"] = {k: torch.cat([p.reward_parts[k] for p in parts]) for k in parts[0].reward_parts}
    return Batch(**out)


def with_rewards(batch: Batch, rewards: torch.Tensor, **changes) -> Batch:
    return replace(batch, rewards=rewards, **changes)


def rollout_metrics(batch: Batch, group_size: int) -> dict:
    """`rollout/...` metrics of sampled rows, and `reward/<name>`, the mean of each reward function."""
    r, ro = batch.rewards, batch.rollout
    parts = {f"reward/{k}": float(v.mean()) for k, v in (batch.reward_parts or {}).items()}
    return {**parts,
        "rollout/reward_mean": float(r.mean()),
        "rollout/reward_std": float(r.std()) if r.numel() > 1 else 0.0,
        "rollout/accuracy": float(batch.correct.float().mean()),
        "rollout/zero_std_frac": float(adv_lib.zero_std_groups(r, group_size).float().mean()),
        "rollout/len_mean": float(ro.lengths.mean()),
        "rollout/finished_frac": float(ro.finished.float().mean()),
    }


@dataclass
class StepData:
    """What a data source hands the engine for one step: the batch to train on (None: nothing to
    train on this step), the metrics of how it was drawn, and what drawing it spent (`budget`:
    prompts, samples, tokens of this process, which the engine sums over the processes and adds to
    the run's `budget/*`)."""

    batch: Optional[Batch]
    metrics: dict = field(default_factory=dict)
    budget: dict = field(default_factory=dict)


__all__ = ["Batch", "StepData", "concat", "rollout_metrics", "select_groups", "with_rewards", "fields"]
