"""A replay buffer of scored rollout groups, and joining rollouts of different widths.

Off-policy GRPO replays whole groups: the G completions of one prompt, their rewards, the
behaviour policy's log-probs and the policy version that produced them. Keeping the group whole
keeps its group-relative advantage well defined (the baseline is the behaviour policy's own group
mean, as in Mroueh et al. 2505.22257). Entries more than `eta` versions older than the learner
are evicted (AReaL's staleness bound, 2505.24298).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch
import torch.nn.functional as F

from grpo_lab.rollout.sampler import Rollout


def _pad(t: torch.Tensor, width: int, value: float, left: bool) -> torch.Tensor:
    missing = width - t.shape[1]
    if missing == 0:
        return t
    return F.pad(t, (missing, 0) if left else (0, missing), value=value)


def concat_rollouts(rollouts: list[Rollout], pad_id: int) -> Rollout:
    """Stack rollouts row-wise; prompts are left-padded and completions right-padded to common widths.

    Padding carries mask 0, so log-probs of real tokens are unchanged (positions follow the mask).
    """
    if len(rollouts) == 1:
        return rollouts[0]
    lp = max(r.prompt_ids.shape[1] for r in rollouts)
    t = max(r.completion_ids.shape[1] for r in rollouts)
    with_entropy = all(r.entropy is not None for r in rollouts)
    return Rollout(
        prompt_ids=torch.cat([_pad(r.prompt_ids, lp, pad_id, True) for r in rollouts]),
        prompt_mask=torch.cat([_pad(r.prompt_mask, lp, 0, True) for r in rollouts]),
        completion_ids=torch.cat([_pad(r.completion_ids, t, pad_id, False) for r in rollouts]),
        completion_mask=torch.cat([_pad(r.completion_mask, t, 0.0, False) for r in rollouts]),
        logprobs=torch.cat([_pad(r.logprobs, t, 0.0, False) for r in rollouts]),
        finished=torch.cat([r.finished for r in rollouts]),
        entropy=torch.cat([_pad(r.entropy, t, 0.0, False) for r in rollouts]) if with_entropy else None,
    )


@dataclass
class ReplayGroup:
    rollout: Rollout  # (G, ...) one prompt's completions; logprobs are the behaviour policy's
    example_index: int  # the prompt's index in the task's training examples
    texts: list[str]
    rewards: torch.Tensor  # (G,) the rewards the advantages are computed from
    correct: torch.Tensor  # (G,) bool
    version: int  # the policy version (RL steps taken) whose weights sampled the group

    def state(self) -> dict:
        ro = {f.name: getattr(self.rollout, f.name) for f in fields(Rollout) if getattr(self.rollout, f.name) is not None}
        return {"rollout": ro, "example_index": self.example_index, "texts": list(self.texts),
                "rewards": self.rewards, "correct": self.correct, "version": self.version}

    @classmethod
    def from_state(cls, state: dict) -> "ReplayGroup":
        return cls(Rollout(**state["rollout"]), state["example_index"], list(state["texts"]), state["rewards"],
                   state["correct"], state["version"])


class ReplayBuffer:
    """Groups tagged with their policy version; `evict` enforces the staleness bound eta."""

    def __init__(self, eta: int):
        self.eta = eta
        self.groups: list[ReplayGroup] = []

    def __len__(self) -> int:
        return len(self.groups)

    def add(self, group: ReplayGroup) -> None:
        self.groups.append(group)

    def evict(self, version: int) -> int:
        """Drop groups more than eta versions older than `version`; returns how many were dropped."""
        before = len(self.groups)
        self.groups = [g for g in self.groups if version - g.version <= self.eta]
        return before - len(self.groups)

    def sample(self, count: int, generator: torch.Generator, *, version: Optional[int] = None) -> list[ReplayGroup]:
        """Up to `count` distinct groups, uniformly at random; only those within eta of `version` if given."""
        pool = [g for g in self.groups if version is None or version - g.version <= self.eta]
        if not pool or count <= 0:
            return []
        order = torch.randperm(len(pool), generator=generator)[:count].tolist()
        return [pool[i] for i in order]

    def state_dict(self) -> dict:
        return {"eta": self.eta, "groups": [g.state() for g in self.groups]}

    def load_state_dict(self, state: dict) -> None:
        self.eta = state["eta"]
        self.groups = [ReplayGroup.from_state(g) for g in state["groups"]]
