"""GRPO (DeepSeekMath §4.1, Eq. 3) and its variants as one LightningModule.

Per step: P prompts x G completions from the current policy; outcome rewards from the task's
verifier (or step rewards for process supervision, §4.1.3); group-relative advantages; mu epochs
of minibatch updates of the clipped surrogate plus beta * KL(pi || pi_ref) in the loss, aggregated
with the configured mode.

Where it departs from the paper:
- The sampler's log-probs are used as pi_old: the sampler is the learner's own weights, so a
  second forward pass would compute the same numbers (to float rounding).
- The default aggregation is the paper's seq_mean_token_mean; token_mean (DAPO) and the Dr. GRPO
  modes are one switch away (`loss.aggregation`), as is the advantage scale (`advantage.scale`).
- Rewards are rule-based (the task's verifier), not a learned reward model.
"""

from __future__ import annotations

import time

import torch

from grpo_lab.algorithms.base import PolicyModule, masked_mean
from grpo_lab.core import advantages as adv_lib
from grpo_lab.core.aggregation import aggregate
from grpo_lab.core.kl import kl_estimate
from grpo_lab.core.objectives import clipped_surrogate


class GRPO(PolicyModule):
    def compute_advantages(self, scored) -> torch.Tensor:
        """(B,) outcome advantages or (B, T) process-supervised ones."""
        a, G = self.config.advantage, self.config.rollout.group_size
        if a.estimator == "group":
            return adv_lib.group_relative(scored.rewards, G, scale=a.scale, eps=a.eps)
        if a.estimator == "rloo":
            return adv_lib.rloo(scored.rewards, G)
        if a.estimator == "process":
            step_rewards, step_mask = self.step_reward_tensors(scored)
            return adv_lib.process_supervised(step_rewards, step_mask, scored.rollout.completion_mask, G, eps=a.eps)
        raise ValueError(f"GRPO cannot use advantage.estimator={a.estimator!r}")

    def policy_loss(self, rollout, advantages, old_logp, ref_logp, rows) -> tuple[torch.Tensor, dict]:
        """The loss of one minibatch `rows` and its metrics."""
        lc = self.config.loss
        mb = rollout.select(rows)
        mask = mb.completion_mask
        need_entropy = lc.entropy_coef > 0
        logp, entropy = self.logprobs(mb, with_entropy=need_entropy)
        surrogate = clipped_surrogate(logp, old_logp[rows], advantages[rows], mask, clip_low=lc.clip_low,
                                      clip_high=lc.clip_high, dual_clip=lc.dual_clip, level=lc.level)
        per_token = surrogate.per_token_loss
        metrics = {k: float(v) for k, v in surrogate.metrics.items()}
        if ref_logp is not None:
            kl = kl_estimate(logp, ref_logp[rows], kind=lc.kl_estimator)
            per_token = per_token + lc.kl_beta * kl
            metrics["actor/kl"] = masked_mean(kl.detach(), mask)
        if need_entropy:
            per_token = per_token - lc.entropy_coef * entropy
            metrics["actor/entropy"] = masked_mean(entropy.detach(), mask)
        norm = lc.norm or self.config.rollout.max_new_tokens
        loss = aggregate(per_token, mask, lc.aggregation, norm=norm)
        metrics["actor/loss"] = float(loss.detach())
        return loss, metrics

    def rl_step(self, step: int) -> dict:
        G = self.config.rollout.group_size
        examples = self.prompts_for_step(step)
        t0 = time.perf_counter()
        rollout = self.generate(examples, group_size=G)
        t1 = time.perf_counter()
        scored = self.score(rollout, examples, G)
        self.account(rollout, len(examples))
        advantages = self.compute_advantages(scored)
        old_logp = rollout.logprobs  # the sampler is the learner: pi_old's log-probs come for free
        ref_logp = self.ref_logprobs(rollout) if self.config.loss.kl_beta > 0 else None
        t2 = time.perf_counter()
        sums: dict[str, float] = {}
        updates = 0
        for rows in self.minibatches(rollout.completion_ids.shape[0]):
            loss, metrics = self.policy_loss(rollout, advantages, old_logp, ref_logp, rows)
            metrics.update(self.update(loss))
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            updates += 1
        t3 = time.perf_counter()
        out = {k: v / updates for k, v in sums.items()}
        out.update(self.rollout_metrics(scored))
        out.update({"perf/gen_s": t1 - t0, "perf/logprob_s": t2 - t1, "perf/update_s": t3 - t2})
        return out

    def rollout_metrics(self, scored) -> dict:
        r, ro, G = scored.rewards, scored.rollout, self.config.rollout.group_size
        return {
            "rollout/reward_mean": float(r.mean()),
            "rollout/reward_std": float(r.std()) if r.numel() > 1 else 0.0,
            "rollout/accuracy": float(scored.correct.float().mean()),
            "rollout/zero_std_frac": float(adv_lib.zero_std_groups(r, G).float().mean()),
            "rollout/len_mean": float(ro.lengths.mean()),
            "rollout/finished_frac": float(ro.finished.float().mean()),
        }
