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

The GRPO++ switches (README section `variants`), each one config key:
- `loss.clip_high` (Clip-Higher), `loss.dual_clip`, `loss.level: sequence` (GSPO),
  `loss.aggregation`, `loss.norm` (Dr. GRPO's constant), `advantage.scale`, `loss.entropy_coef`,
  `optim.epochs` / `optim.minibatches` (mu and the minibatch split), `optim.micro_batch_size`
  (gradient accumulation: the same update in chunks that fit in memory);
- `rollout.dynamic_sampling` (DAPO Eq. 11): groups whose shaped rewards all agree are dropped and
  fresh prompts are drawn, up to `rollout.max_sampling_rounds` rounds, until P groups remain. The
  extra prompts of round r of step s are a pure function of (seed, s, r), so a resumed run draws
  the same ones; every sample drawn counts in the budget.
- `rollout.mask_truncated` (DAPO overlong filtering): completions without EOS get no loss (they
  still count in their group's baseline). `rollout.overlong_buffer` adds DAPO's soft overlong
  punishment (Eq. 13) to the reward, with |y| the completion length in tokens and
  L_max = rollout.max_new_tokens.
- `loss.kl_placement: reward`: the sequence's summed KL estimate sum_t k(pi_sampler, pi_ref),
  times beta, is subtracted from its reward before the group normalisation (RLOO/InstructGPT
  style; per-token placement is meaningless for an outcome advantage). `loss` (default) adds
  beta * k_t to every token's loss (DeepSeekMath Eq. 3). With beta = 0 no reference is loaded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import torch

from grpo_lab.algorithms.base import PolicyModule, Scored, _seed_of, masked_mean
from grpo_lab.core import advantages as adv_lib
from grpo_lab.core.aggregation import aggregate
from grpo_lab.core.kl import kl_estimate
from grpo_lab.core.objectives import clipped_surrogate
from grpo_lab.rollout.replay import concat_rollouts


class LossResult(NamedTuple):
    loss: torch.Tensor  # scalar
    metrics: dict  # floats, namespaced actor/...


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, loss_cfg,
              *, norm: float, ref_logp: Optional[torch.Tensor] = None, entropy: Optional[torch.Tensor] = None,
              weights: Optional[torch.Tensor] = None) -> LossResult:
    """GRPO's loss of one minibatch from per-token log-probs (all (B, T); advantages (B,) or (B, T)):

    ``l_t = w_t * clip-surrogate_t(logp, old_logp, A) + beta * k(logp, ref_logp)_t - c_ent * H_t``
    aggregated over ``mask`` with ``loss_cfg.aggregation`` (``norm``: seq_mean_token_sum_norm's constant).
    ``weights`` (detached importance weights, off-policy corrections) scale the surrogate term only.
    ``ref_logp`` None: no KL term; ``entropy`` None: no entropy bonus. ``loss_cfg`` is a LossConfig.
    """
    surrogate = clipped_surrogate(logp, old_logp, advantages, mask, clip_low=loss_cfg.clip_low,
                                  clip_high=loss_cfg.clip_high, dual_clip=loss_cfg.dual_clip, level=loss_cfg.level)
    per_token = surrogate.per_token_loss
    if weights is not None:
        per_token = per_token * weights.detach()
    metrics = {k: float(v) for k, v in surrogate.metrics.items()}
    if ref_logp is not None:
        kl = kl_estimate(logp, ref_logp, kind=loss_cfg.kl_estimator)
        per_token = per_token + loss_cfg.kl_beta * kl
        metrics["actor/kl"] = masked_mean(kl.detach(), mask)
    if entropy is not None:
        per_token = per_token - loss_cfg.entropy_coef * entropy
        metrics["actor/entropy"] = masked_mean(entropy.detach(), mask)
    loss = aggregate(per_token, mask, loss_cfg.aggregation, norm=norm)
    metrics["actor/loss"] = float(loss.detach())
    return LossResult(loss, metrics)


def overlong_punishment(lengths: torch.Tensor, max_len: int, buffer: int) -> torch.Tensor:
    """DAPO's soft overlong punishment (2503.14476 Eq. 13), (B,) lengths -> (B,) rewards in [-1, 0]:

    0 if |y| <= L_max - L_cache; ((L_max - L_cache) - |y|) / L_cache if L_max - L_cache < |y| <= L_max;
    -1 if |y| > L_max. ``buffer`` = L_cache > 0.
    """
    free = max_len - buffer
    penalty = (free - lengths.float()) / buffer
    return torch.where(lengths > max_len, -1.0, torch.where(lengths <= free, 0.0, penalty))


def kl_reward_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """The sequence's summed KL estimate ``sum_t m_t k(logp_t, ref_logp_t)``, (B, T) -> (B,), detached."""
    return (kl_estimate(logp.detach(), ref_logp.detach(), kind=kind) * mask).sum(-1)


def select_groups(scored: Scored, groups: torch.Tensor, group_size: int) -> Scored:
    """The rows of the chosen groups (indices into the P groups), groups kept contiguous."""
    rows = (groups[:, None] * group_size + torch.arange(group_size, device=groups.device)).flatten()
    picked = rows.tolist()
    return Scored(scored.rollout.select(rows), [scored.examples[i] for i in picked],
                  [scored.texts[i] for i in picked], scored.rewards[rows], scored.correct[rows])


def concat_scored(parts: list[Scored], pad_id: int) -> Scored:
    if len(parts) == 1:
        return parts[0]
    return Scored(concat_rollouts([p.rollout for p in parts], pad_id), [e for p in parts for e in p.examples],
                  [t for p in parts for t in p.texts], torch.cat([p.rewards for p in parts]),
                  torch.cat([p.correct for p in parts]))


@dataclass
class Batch:
    """One step's training data: the kept groups, everything drawn, and how it was drawn."""

    scored: Optional[Scored]  # the groups trained on (None: dynamic sampling kept none)
    drawn: Scored  # every completion sampled this step, rewards shaped
    stats: dict = field(default_factory=dict)  # rollout/... metrics of the sampling


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

    # ----- data: sampling, reward shaping, dynamic sampling ----------------------------------
    def extra_prompts(self, step: int, round_: int) -> list:
        """Dynamic sampling's prompts for round `round_` >= 1 of step `step`: P training prompts
        drawn without replacement by a generator seeded with (seed, step, round) alone."""
        n, count = len(self.train_examples), self.config.rollout.prompts_per_step
        gen = torch.Generator().manual_seed(_seed_of(self.config.seed, 5, step, round_))
        order = torch.randperm(n, generator=gen)[: min(count, n)]
        return [self.train_examples[i] for i in order.tolist()]

    def shape_rewards(self, scored: Scored) -> tuple[Scored, dict]:
        """The task's rewards plus the soft overlong punishment and the in-reward KL, where switched on."""
        ro, lc = self.config.rollout, self.config.loss
        rewards, metrics = scored.rewards, {}
        if ro.overlong_buffer > 0:
            penalty = ro.overlong_penalty * overlong_punishment(scored.rollout.lengths, ro.max_new_tokens,
                                                                 ro.overlong_buffer).to(rewards)
            rewards = rewards + penalty
            metrics["rollout/overlong_penalty"] = float(penalty.mean())
        if lc.kl_beta > 0 and lc.kl_placement == "reward":
            kl = kl_reward_penalty(scored.rollout.logprobs, self.ref_logprobs(scored.rollout),
                                   scored.rollout.completion_mask, lc.kl_estimator)
            rewards = rewards - lc.kl_beta * kl
            metrics["rollout/kl_penalty"] = float(lc.kl_beta * kl.mean())
        if rewards is scored.rewards:
            return scored, metrics
        return Scored(scored.rollout, scored.examples, scored.texts, rewards, scored.correct), metrics

    def collect(self, step: int, policy=None) -> Batch:
        """Sample, score and shape one step's groups from `policy` (default: the learner); with
        dynamic sampling, drop zero-variance groups and draw more prompts until P groups remain
        or `rollout.max_sampling_rounds` rounds are spent."""
        ro = self.config.rollout
        G, P = ro.group_size, ro.prompts_per_step
        rounds = ro.max_sampling_rounds if ro.dynamic_sampling else 1
        drawn, kept, shaping = [], [], {}
        need, dropped, prompts = P, 0, 0
        for round_ in range(rounds):
            examples = self.prompts_for_step(step) if round_ == 0 else self.extra_prompts(step, round_)
            rollout = self.generate(examples, group_size=G, policy=policy)
            self.account(rollout, len(examples))
            prompts += len(examples)
            scored, metrics = self.shape_rewards(self.score(rollout, examples, G))
            for k, v in metrics.items():
                shaping[k] = shaping.get(k, 0.0) + v
            drawn.append(scored)
            if not ro.dynamic_sampling:
                kept.append(scored)
                break
            informative = (~adv_lib.zero_std_groups(scored.rewards, G)).nonzero().flatten()
            dropped += len(examples) - len(informative)
            if len(informative):
                kept.append(select_groups(scored, informative[:need], G))
                need -= min(need, len(informative))
            if need == 0:
                break
        pad = self.tokenizer.pad_token_id
        stats = {"rollout/sampling_rounds": float(len(drawn)), "rollout/prompts_drawn": float(prompts),
                 "rollout/dropped_groups": float(dropped), **{k: v / len(drawn) for k, v in shaping.items()}}
        return Batch(concat_scored(kept, pad) if kept else None, concat_scored(drawn, pad), stats)

    def loss_mask(self, rollout) -> torch.Tensor:
        """The tokens that carry loss: the completion mask, without truncated completions if masked."""
        mask = rollout.completion_mask
        if self.config.rollout.mask_truncated:
            mask = mask * rollout.finished[:, None].to(mask.dtype)
        return mask

    # ----- updates ---------------------------------------------------------------------------
    def policy_loss(self, rollout, advantages, old_logp, ref_logp, rows, *, loss_mask=None,
                    weights=None) -> tuple[torch.Tensor, dict]:
        """The loss of one minibatch `rows` and its metrics."""
        lc = self.config.loss
        mb = rollout.select(rows)
        mask = mb.completion_mask if loss_mask is None else loss_mask[rows]
        logp, entropy = self.logprobs(mb, with_entropy=lc.entropy_coef > 0)
        return grpo_loss(logp, old_logp[rows], advantages[rows], mask, lc,
                         norm=lc.norm or self.config.rollout.max_new_tokens,
                         ref_logp=None if ref_logp is None else ref_logp[rows], entropy=entropy,
                         weights=None if weights is None else weights[rows])

    def optimize(self, rollout, advantages, old_logp, ref_logp, *, loss_mask=None, weights=None) -> dict:
        """mu epochs x minibatches of updates on one batch; the metrics averaged over the updates."""
        sums: dict[str, float] = {}
        updates = 0
        mask = rollout.completion_mask if loss_mask is None else loss_mask
        for rows in self.minibatches(rollout.completion_ids.shape[0]):
            metrics: dict[str, float] = {}
            loss_of = lambda part: self.policy_loss(rollout, advantages, old_logp, ref_logp, part,  # noqa: E731
                                                    loss_mask=loss_mask, weights=weights)
            metrics.update(self.update(self.accumulate(rows, loss_of, metrics, mask)))
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            updates += 1
        return {k: v / updates for k, v in sums.items()}

    def rl_step(self, step: int) -> dict:
        t0 = time.perf_counter()
        batch = self.collect(step)
        t1 = time.perf_counter()
        out = self.rollout_metrics(batch.drawn)
        out.update(batch.stats)
        if batch.scored is not None:
            rollout = batch.scored.rollout
            advantages = self.compute_advantages(batch.scored)
            old_logp = rollout.logprobs  # the sampler is the learner: pi_old's log-probs come for free
            lc = self.config.loss
            ref_logp = self.ref_logprobs(rollout) if lc.kl_beta > 0 and lc.kl_placement == "loss" else None
            t2 = time.perf_counter()
            out.update(self.optimize(rollout, advantages, old_logp, ref_logp, loss_mask=self.loss_mask(rollout)))
        else:
            t2 = time.perf_counter()
        t3 = time.perf_counter()
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
