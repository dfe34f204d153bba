"""Rejection-sampling fine-tuning: offline RFT and online RFT (DeepSeekMath §5.2.1, Eq. 10).

Both fine-tune with the SFT loss on the policy's own correct completions (GC = I(o)); they differ
only in the data source:

- `OnlineRFT` (method: online_rft): each step samples P x G completions from the current policy
  and trains on the correct ones. A step with no correct completion makes no update and logs
  `rft/skipped = 1`.
- `RFT` (method: rft): at its first step it samples G completions for every prompt the run will
  see (the same P x G x steps samples the online arms draw) from the SFT policy once, keeps the
  correct ones deduplicated per prompt, shuffles them and trains on 1/steps of them per step, so
  each kept completion is used once in as many updates as the online arms make. The kept set is
  saved in the checkpoint, so a resumed run does not sample again.

Where it departs from the paper: the loss is averaged over the rows trained on (the correct
ones), not over all sampled rows, so the step size does not shrink with accuracy; its gradient is
GC = I(o) scaled by 1/n_correct instead of 1/B.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from grpo_lab.algorithms.base import TrainingError, _seed_of
from grpo_lab.algorithms.grpo import GRPO
from grpo_lab.algorithms.sft import SupervisedModule, pack_rows, unpack_rows


class PooledModule(SupervisedModule):
    """A method that samples its training data ahead of the steps that use it (offline RFT, DPO).

    A pool covers steps [first, last): it holds the G completions of each of those steps'
    prompts, turned into items by `make_items`, shuffled by (seed, first) and split into one
    batch per step.
    """

    pool: dict | None = None

    def pool_span(self, step: int) -> tuple[int, int]:
        return 0, self.config.train.steps

    def make_items(self, scored) -> list:
        raise NotImplementedError

    def check_pool(self, items: list, *, samples: int, correct: int, first: int) -> None:
        """Raise when a pool cannot train anything."""

    def pool_batch(self, step: int) -> tuple[list, dict]:
        """The items of step `step`, building the pool first when `step` starts a new one."""
        first, last = self.pool_span(step)
        metrics = {}
        if self.pool is None or self.pool["first"] != first:
            start = time.perf_counter()
            self.pool = self.build_pool(first, last)
            metrics = {"pool/items": float(len(self.pool["items"])), "pool/build_s": time.perf_counter() - start,
                       "pool/accuracy": self.pool["accuracy"]}
        index = self.pool["batches"][step - first]
        return [self.pool["items"][i] for i in index], metrics

    @torch.no_grad()
    def build_pool(self, first: int, last: int) -> dict:
        G = self.config.rollout.group_size
        items, correct, samples = [], 0, 0
        for s in range(first, last):
            examples = self.prompts_for_step(s)
            rollout = self.generate(examples, group_size=G)
            self.account(rollout, len(examples))
            scored = self.score(rollout, examples, G)
            items.extend(self.make_items(scored))
            correct += int(scored.correct.sum())
            samples += rollout.completion_ids.shape[0]
        self.check_pool(items, samples=samples, correct=correct, first=first)
        order = torch.randperm(len(items), generator=torch.Generator().manual_seed(_seed_of(self.config.seed, 5, first)))
        batches = [part.tolist() for part in np.array_split(order.numpy(), last - first)]
        return {"first": first, "items": items, "batches": batches, "accuracy": correct / max(samples, 1)}

    def extra_state(self) -> dict:
        return {"pool": self.pool}

    def load_extra_state(self, state: dict) -> None:
        self.pool = state.get("pool")


def distinct_rows(scored, keep: torch.Tensor) -> list[int]:
    """Indices of the rows where `keep` is True, dropping repeats of a (prompt, completion) already kept."""
    seen, out = set(), []
    rows = unpack_rows(scored.rollout)
    for i in keep.nonzero().flatten().tolist():
        key = (tuple(rows[i][0]), tuple(rows[i][1]))
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out


class RFT(PooledModule):
    def make_items(self, scored) -> list:
        rows = unpack_rows(scored.rollout)
        return [rows[i] for i in distinct_rows(scored, scored.correct)]

    def check_pool(self, items: list, *, samples: int, correct: int, first: int) -> None:
        if not items:
            raise TrainingError(f"RFT kept no correct completion out of {samples} samples of the SFT policy; "
                                "warm start longer (sft.steps) or pick an easier task")

    def rl_step(self, step: int) -> dict:
        items, metrics = self.pool_batch(step)
        metrics["rft/kept"] = float(len(items))
        if not items:
            return {**metrics, "rft/skipped": 1.0}
        batch = pack_rows([p for p, _ in items], [c for _, c in items], pad_id=self.tokenizer.pad_token_id,
                          device=self.device)
        return {**metrics, "rft/skipped": 0.0, **self.fit_rows(batch)}


class OnlineRFT(SupervisedModule):
    rollout_metrics = GRPO.rollout_metrics

    def rl_step(self, step: int) -> dict:
        G = self.config.rollout.group_size
        examples = self.prompts_for_step(step)
        rollout = self.generate(examples, group_size=G)
        scored = self.score(rollout, examples, G)
        self.account(rollout, len(examples))
        metrics = self.rollout_metrics(scored)
        keep = scored.correct.nonzero().flatten()
        metrics["rft/kept"] = float(keep.numel())
        if keep.numel() == 0:
            return {**metrics, "rft/skipped": 1.0}
        return {**metrics, "rft/skipped": 0.0, **self.fit_rows(rollout.select(keep))}
