"""Direct preference optimisation on the policy's own (correct, wrong) pairs (DeepSeekMath §5.2.1,
Eq. 13-14; Rafailov et al. 2305.18290).

At its first step the module samples G completions for every prompt the run will see from the SFT
policy (P x G x steps samples, the online arms' budget), pairs each distinct wrong completion of a
prompt with a distinct correct one of the same prompt (cycling through the correct ones), shuffles
the pairs and trains on 1/steps of them per step with `preference.dpo_loss`, the frozen SFT model as
reference. `dpo.refresh_every: N` rebuilds the pairs from the current policy every N steps (for the
next N steps' prompts; iterative DPO), the reference staying the SFT model.

The run stops at the start with a `TrainingError` when the SFT policy yields no pair (every
completion correct, or none).

Where it departs from the paper: log-ratios are summed over tokens (Rafailov), not averaged
(DeepSeekMath Eq. 13); GC is Eq. 14 without the 1/|o|.
"""

from __future__ import annotations

import copy
from itertools import cycle

import torch

from grpo_lab.algorithms.base import TrainingError
from grpo_lab.algorithms.rft import PooledModule, distinct_rows
from grpo_lab.algorithms.sft import pack_rows, unpack_rows
from grpo_lab.core.aggregation import masked_fill_zero
from grpo_lab.core.preference import DPOResult, dpo_loss


def dpo_pair_loss(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, *, beta: float,
                  label_smoothing: float = 0.0) -> DPOResult:
    """DPO loss of N pairs stacked as 2N rows: rows [0, N) chosen, rows [N, 2N) rejected (row i paired
    with row N + i). ``logp``, ``ref_logp``, ``mask``: (2N, T). Returns the mean loss over pairs (a
    scalar) and `dpo_loss`'s metrics. The layout of `core.paradigm.dpo_coefficient`."""
    if mask.shape[0] % 2:
        raise ValueError(f"DPO rows must be 2N (chosen then rejected), got {mask.shape[0]}")
    policy = masked_fill_zero(logp, mask).sum(-1)  # (2N,)
    ref = masked_fill_zero(ref_logp, mask).sum(-1)
    chosen, rejected = policy.chunk(2)
    ref_chosen, ref_rejected = ref.chunk(2)
    result = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=beta, label_smoothing=label_smoothing)
    return DPOResult(result.loss.mean(), result.metrics)


class DPO(PooledModule):
    def __init__(self, config, policy, tokenizer, task, ref_policy=None):
        # the reference is the SFT policy, whatever loss.kl_beta says (it is 0 for DPO)
        ref_policy = copy.deepcopy(policy) if ref_policy is None else ref_policy
        super().__init__(config, policy, tokenizer, task, ref_policy=ref_policy)

    def pool_span(self, step: int) -> tuple[int, int]:
        steps = self.config.train.steps
        every = self.config.dpo.refresh_every or steps
        first = step // every * every
        return first, min(first + every, steps)

    def make_items(self, scored) -> list:
        G = self.config.rollout.group_size
        rows = unpack_rows(scored.rollout)
        items = []
        for start in range(0, len(rows), G):
            group = torch.zeros_like(scored.correct)
            group[start:start + G] = True
            correct = distinct_rows(scored, scored.correct & group)
            wrong = distinct_rows(scored, ~scored.correct & group)
            if correct:
                items.extend((rows[c][0], rows[c][1], rows[w][1]) for c, w in zip(cycle(correct), wrong))
        return items

    def check_pool(self, items: list, *, samples: int, correct: int, first: int) -> None:
        if items or first > 0:
            return
        if correct == samples:
            why = "every one was correct, so there is no wrong answer to prefer against"
        elif correct == 0:
            why = "none was correct, so there is no correct answer to prefer"
        else:
            why = "no prompt had both a correct and a wrong one"
        raise TrainingError(f"DPO found no (correct, wrong) pair in {samples} samples of the SFT policy: {why}; "
                            "DPO needs a task and warm start that give both")

    def rl_step(self, step: int) -> dict:
        items, metrics = self.pool_batch(step)
        metrics["dpo/pairs"] = float(len(items))
        if not items:
            return {**metrics, "dpo/skipped": 1.0}
        prompts = [p for p, _, _ in items] * 2
        completions = [c for _, c, _ in items] + [r for _, _, r in items]
        batch = pack_rows(prompts, completions, pad_id=self.tokenizer.pad_token_id, device=self.device)
        ref_logp = self.ref_logprobs(batch)
        n, d = len(items), self.config.dpo
        sums: dict[str, float] = {}
        updates = 0

        def loss_of(pairs):
            rows = torch.cat([pairs, pairs + n])
            mb = batch.select(rows)
            loss, dpo_metrics = dpo_pair_loss(self.logprobs(mb)[0], ref_logp[rows], mb.completion_mask, beta=d.beta,
                                              label_smoothing=d.label_smoothing)
            return loss, {"actor/loss": float(loss.detach()), **{k: float(v) for k, v in dpo_metrics.items()}}

        for pairs in self.minibatches(n):
            step_metrics: dict[str, float] = {}
            step_metrics.update(self.update(self.accumulate(pairs, loss_of, step_metrics)))
            for k, v in step_metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            updates += 1
        return {**metrics, "dpo/skipped": 0.0, **{k: v / updates for k, v in sums.items()}}
