"""Whole-step statistics when a step is split over processes (Lightning's ddp and fsdp strategies).

Each process samples and trains on its slice of a step's rows. What depends on the whole step is
computed over every process's rows, so that N processes compute the step one process would:
the sampling rounds of dynamic sampling (each round's rows are gathered and every process makes the
same choice of groups), batch-level advantage statistics (the rewards are gathered), PPO's
whitening (global sums), and the loss normalisers (each micro-batch's share of the global
minibatch's tokens or rows). With one process every function here returns its input.
"""

from __future__ import annotations

from dataclasses import fields

import torch

from grpo_lab.methods.batch import Batch, concat
from grpo_lab.rollout import Rollout


class Collective:
    """The processes of one step: `strategy` is the Lightning strategy (None: one process)."""

    def __init__(self, strategy=None, rank: int = 0, world: int = 1, device=None):
        self.strategy, self.rank, self.world, self.device = strategy, rank, world, device

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """`value` summed over the processes."""
        if self.world == 1:
            return value
        return self.strategy.reduce(value.to(self.device), reduce_op="sum")

    def objects(self, item) -> list:
        """`item` of every process, in rank order."""
        if self.world == 1:
            return [item]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, item)
        return out

    def rows(self, values: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Every process's rows of `values` (dim 0) in rank order, and where this process's start."""
        if self.world == 1:
            return values, 0
        parts = [p.to(values.device) for p in self.objects(values.detach().cpu())]
        return torch.cat(parts), sum(len(p) for p in parts[: self.rank])

    def batch(self, batch: Batch, pad_id: int) -> Batch:
        """Every process's rows of a sampled batch, in rank order (the step's whole round)."""
        if self.world == 1:
            return batch
        device = batch.rollout.completion_ids.device
        parts = [_to(p, device) for p in self.objects(_to(batch, "cpu"))]
        return concat(parts, pad_id)

    def mean_metrics(self, metrics: dict) -> dict:
        """Metrics averaged over the processes (every process holds as many rows)."""
        if self.world == 1 or not metrics:
            return metrics
        keys = sorted(metrics)
        total = self.sum(torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64))
        return {k: float(v) / self.world for k, v in zip(keys, total.cpu().tolist())}


def _to(batch: Batch, device) -> Batch:
    moved = {f.name: getattr(batch, f.name) for f in fields(batch)}
    moved["rollout"] = Rollout(*(None if t is None else t.to(device) for t in
                                 (getattr(batch.rollout, f.name) for f in fields(Rollout))))
    for name, value in moved.items():
        if isinstance(value, torch.Tensor):
            moved[name] = value.to(device)
    return Batch(**moved)
