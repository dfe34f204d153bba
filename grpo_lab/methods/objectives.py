"""Objectives (registry `OBJECTIVES`): the losses the update loop minimises, each with the model it
trains and how its metrics merge over micro-batches (`grpo_lab.methods.protocols.Objective`).
Trait `needs_reference(config)`: whether it needs the reference model's log-probs.

The policy loss itself is a choice (registry `POLICY_LOSSES`, key `loss.objective`): a function
``(logp, old_logp, advantages, mask, loss_config) -> core.objectives.SurrogateResult``.
"""

from __future__ import annotations

import torch

from grpo_lab.core.aggregation import aggregate, masked_fill_zero, masked_mean
from grpo_lab.core.corrections import correct
from grpo_lab.core.kl import kl_estimate
from grpo_lab.core.objectives import cispo_surrogate, clipped_surrogate, effective_sample_size, PolicyLoss, policy_loss
from grpo_lab.core.preference import dpo_pair_loss
from grpo_lab.core.supervised import supervised_loss
from grpo_lab.core.value import clipped_value_loss
from grpo_lab.methods.batch import Batch
from grpo_lab.methods.protocols import Objective
from grpo_lab.methods.rewards import KL_KEYS, never
from grpo_lab.methods.step import Step
from grpo_lab.registry import Registry
from grpo_lab.rollout.sampler import inference

OBJECTIVES: Registry = Registry("objective", traits={"needs_reference": never})
POLICY_LOSSES: Registry = Registry("policy loss")
SURROGATE_REDUCTIONS = {"actor/loss": "loss", "actor/ratio_max": "max", "actor/ratio_min": "min"}
CORRECTION_KEYS = ("offpolicy.correction", "offpolicy.cap", "offpolicy.clip_against", "offpolicy.weight_level",
                   "offpolicy.cap_mode", "offpolicy.cap_low")


@POLICY_LOSSES.register("clipped", reads=("loss.clip_low", "loss.clip_high", "loss.dual_clip", "loss.level"))
def clipped(logp, old_logp, advantages, mask, lc):
    """PPO/GRPO clipped surrogate (Clip-Higher, dual clip, GSPO's sequence ratio)."""
    return clipped_surrogate(logp, old_logp, advantages, mask, clip_low=lc.clip_low, clip_high=lc.clip_high,
                             dual_clip=lc.dual_clip, level=lc.level)


@POLICY_LOSSES.register("cispo", reads=("loss.clip_low", "loss.clip_high"))
def cispo(logp, old_logp, advantages, mask, lc):
    """CISPO: the clipped importance weight, stop-gradient, on every token's log-prob (2506.13585)."""
    return cispo_surrogate(logp, old_logp, advantages, mask, clip_low=lc.clip_low, clip_high=lc.clip_high)


def policy_needs_reference(config) -> bool:
    return config.loss.kl_beta > 0 and config.loss.kl_placement == "loss"


@OBJECTIVES.register("policy", reads=("loss.aggregation", "loss.norm", "loss.entropy_coef", "loss.objective",
                                      "rollout.mask_truncated") + KL_KEYS, needs_reference=policy_needs_reference)
class PolicyObjective(Objective):
    """The policy-gradient loss: `loss.objective` on each token weighted by its advantage, plus
    beta * KL to the reference (`loss.kl_placement: loss`) and the entropy bonus, aggregated by
    `loss.aggregation`; importance weights of an off-policy correction scale the surrogate term."""

    reductions = SURROGATE_REDUCTIONS

    def __init__(self, config):
        super().__init__(config)
        self.correction = Correction(config)

    def prepare(self, step: Step, batch: Batch) -> dict:
        """The loss mask (without truncated completions when `rollout.mask_truncated`), the ratio's
        reference log-probs and weights (the correction), and the reference's log-probs."""
        rollout = batch.rollout
        if self.config.rollout.mask_truncated:
            batch.loss_mask = rollout.completion_mask * rollout.finished[:, None].to(rollout.completion_mask.dtype)
        batch.old_logp = rollout.logprobs  # the sampler's: pi_old when the sampler is the learner
        metrics = self.correction.apply(step, batch)
        if policy_needs_reference(self.config):
            batch.ref_logp = step.ref_logprobs(rollout)
        return metrics

    def token_mask(self, batch: Batch) -> torch.Tensor:
        return batch.mask

    def loss(self, step: Step, batch: Batch, rows: torch.Tensor):
        lc = self.config.loss
        mb = batch.rollout.select(rows)
        logp, entropy = step.logprobs(mb, with_entropy=lc.entropy_coef > 0)
        return policy_loss_from_config(logp, batch.old_logp[rows], batch.advantages[rows], batch.mask[rows], lc,
                                       norm=self.norm(),
                                       ref_logp=None if batch.ref_logp is None else batch.ref_logp[rows],
                                       entropy=entropy, weights=None if batch.weights is None else batch.weights[rows])


def policy_loss_from_config(logp, old_logp, advantages, mask, lc, *, norm: float, ref_logp=None, entropy=None,
                            weights=None) -> PolicyLoss:
    """`core.objectives.policy_loss` with the hyperparameters of the loss section `lc` (a LossConfig),
    its metrics as floats."""
    surrogate = POLICY_LOSSES.get(lc.objective).obj
    result = policy_loss(logp, old_logp, advantages, mask,
                         surrogate=lambda *args: surrogate(*args, lc), aggregation=lc.aggregation, norm=norm,
                         weights=weights, ref_logp=ref_logp, kl_beta=lc.kl_beta, kl_estimator=lc.kl_kind,
                         entropy=entropy, entropy_coef=lc.entropy_coef)
    return PolicyLoss(result.loss, {k: float(v) for k, v in result.metrics.items()})


def check_correction(config) -> None:
    from grpo_lab.config import ConfigError

    off = config.offpolicy
    if off.axes == ("proximal", "token", "none") and config.loss.level == "sequence":
        raise ConfigError("offpolicy.correction decoupled (AReaL) weighs tokens by pi_prox/pi_behav and clips the "
                          "token ratio; it cannot run with loss.level: sequence, use offpolicy.correction: "
                          "sequence_tis instead")


class Correction:
    """Importance correction for rows a behaviour policy sampled (core.corrections): pi_prox, the
    learner before this step's updates, is recomputed when the behaviour policy can differ from the
    learner, the correction needs it, or the sampler computes the learner's log-probs in other
    arithmetic (`Step.sampler_matches_learner`; the ratio is then taken against pi_prox and the
    difference logged as a mismatch); then the ratio's reference and the weights, and diagnostics."""

    reads = CORRECTION_KEYS
    check = staticmethod(check_correction)

    def __init__(self, config):
        self.config = config

    def apply(self, step: Step, batch: Batch) -> dict:
        off = self.config.offpolicy
        numeric = not step.sampler_matches_learner  # the learner's weights in other arithmetic
        if not (off.mismatched or off.corrects or numeric):
            return {}
        behav_logp, mask = batch.rollout.logprobs, batch.mask
        prox_logp = inference(step.logprobs)(batch.rollout)[0]
        clip_against, level, cap_mode = off.axes
        if numeric and not off.mismatched:  # the sampler is the learner: pi_old is the learner's own log-probs
            clip_against = "proximal"
        batch.old_logp, batch.weights = correct(prox_logp, behav_logp, mask, clip_against=clip_against, level=level,
                                                cap_mode=cap_mode, cap=off.cap, cap_low=off.resolved_cap_low)
        raw = masked_fill_zero(torch.exp(prox_logp - behav_logp), mask)
        valid = mask > 0
        metrics = {
            "offpolicy/ess": float(effective_sample_size(raw, mask)),
            "offpolicy/ratio_mean": float(masked_mean(raw, mask)),
            "offpolicy/ratio_max": float(raw[valid].max()) if valid.any() else 0.0,
            "offpolicy/beyond_cap_frac": float(masked_mean((raw > off.cap).float(), mask)),
            "offpolicy/below_cap_low_frac": float(masked_mean((raw < off.resolved_cap_low).float(), mask)),
            "offpolicy/kl_behaviour": float(masked_mean(kl_estimate(behav_logp, prox_logp, kind="k3"), mask)),
        }
        if batch.weights is not None:
            metrics["offpolicy/weight_mean"] = float(masked_mean(batch.weights, mask))
        return metrics


@OBJECTIVES.register("supervised", reads=("loss.aggregation", "loss.norm"))
class SupervisedObjective(Objective):
    """The SFT loss, -log pi_theta(o_t | q, o_<t) aggregated by `loss.aggregation`, on every row of the batch;
    pi_theta is the model itself (T = 1, no top-p), whatever the sampler's temperature."""

    def loss(self, step: Step, batch: Batch, rows: torch.Tensor):
        mb = batch.rollout.select(rows)
        loss = batch.loss_scale * supervised_loss(step.logprobs(mb, sampling=False)[0], mb.completion_mask,
                                                  aggregation=self.config.loss.aggregation, norm=self.norm())
        return loss, {"actor/loss": float(loss.detach())}


@OBJECTIVES.register("dpo", reads=("dpo.beta", "dpo.label_smoothing"), needs_reference=lambda config: True)
class DPOObjective(Objective):
    """DPO's loss on (chosen, rejected) pairs against the frozen reference (Rafailov et al., Eq. 7), with the
    log-probs of the policy and the reference themselves (T = 1, no top-p), whatever the sampler's temperature."""

    def prepare(self, step: Step, batch: Batch) -> dict:
        batch.ref_logp = step.ref_logprobs(batch.rollout, sampling=False)
        return {}

    def token_mask(self, batch: Batch) -> None:
        return None  # pairs weigh equally

    def loss(self, step: Step, batch: Batch, pairs: torch.Tensor):
        d, n = self.config.dpo, batch.pairs
        rows = torch.cat([pairs, pairs + n])
        mb = batch.rollout.select(rows)
        loss, metrics = dpo_pair_loss(step.logprobs(mb, sampling=False)[0], batch.ref_logp[rows], mb.completion_mask,
                                      beta=d.beta, label_smoothing=d.label_smoothing)
        return loss, {"actor/loss": float(loss.detach()), **{k: float(v) for k, v in metrics.items()}}


@OBJECTIVES.register("value", reads=("critic.lr", "critic.value_clip", "critic.warmup", "loss.aggregation",
                                     "loss.norm"))
class ValueObjective(Objective):
    """The critic's clipped value loss around the old values (its own optimizer, `critic.lr`); the
    policy waits for the first `critic.warmup` steps."""

    model, prefix, counts_updates = "critic", "critic", False
    reductions = {"critic/value_loss": "loss"}

    def holds_policy(self, step: Step) -> bool:
        return step.index < self.config.critic.warmup

    def learning_rate(self) -> float:
        return self.config.critic.lr

    def prepare(self, step: Step, batch: Batch) -> dict:
        return {"actor/trained": float(not self.holds_policy(step))}

    def loss(self, step: Step, batch: Batch, rows: torch.Tensor):
        mb = batch.rollout.select(rows)
        mask = mb.completion_mask
        per_token = clipped_value_loss(step.values(mb), batch.old_values[rows], batch.returns[rows], mask,
                                       clip=self.config.critic.value_clip)
        v_loss = aggregate(per_token, mask, self.config.loss.aggregation, norm=self.norm())
        return v_loss, {"critic/value_loss": float(v_loss.detach())}
