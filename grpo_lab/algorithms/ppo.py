"""PPO with a learned critic (InstructGPT, Ouyang et al. 2203.02155; DeepSeekMath §4.1.1 Eq. 1;
papers.md §7).

Per step: P prompts x G completions from the current policy (G is only a batch shape here: no
group baseline); the outcome reward on each completion's last token; values V_psi(s_t) from the
critic, a scalar head on its own copy of the SFT trunk (`models.critic.ValueModel`); GAE with
`critic.gamma` and `critic.lam`, advantages whitened over the batch's tokens (`critic.whiten`);
then mu epochs x minibatches of two updates each: the actor (GRPO's clipped surrogate with the
per-token GAE advantage, the entropy bonus, and beta * KL in the loss when `loss.kl_placement:
loss`) with its optimizer, and the critic (`core.value.clipped_value_loss` around the old values,
clip `critic.value_clip`) with its own AdamW at `critic.lr`. The first `critic.warmup` steps train
the critic alone.

With `loss.kl_placement: reward` the KL is the InstructGPT per-token penalty in the reward,
``r_t = -beta * k(pi_old, pi_ref)_t + 1[t = last] * r`` (k = `loss.kl_estimator`; InstructGPT's is
k1), and no KL term enters the loss.

Where it departs from InstructGPT: the reward is the task's verifier, not a reward model; no
pretraining-mix term (PPO-ptx); the two losses take separate optimizers, so there is no value
coefficient (Adam makes it moot).
"""

from __future__ import annotations

import time

import torch

from grpo_lab.algorithms.grpo import GRPO
from grpo_lab.algorithms.base import masked_mean
from grpo_lab.core.advantages import gae
from grpo_lab.core.aggregation import aggregate
from grpo_lab.core.kl import kl_estimate
from grpo_lab.core.value import clipped_value_loss
from grpo_lab.models.critic import ValueModel
from grpo_lab.rollout.sampler import inference


def last_token_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Outcome rewards (B,) placed on each completion's last token: (B, T), 0 elsewhere."""
    lengths = mask.sum(-1)
    last = (mask.cumsum(-1) == lengths[:, None]) & (mask > 0)
    return last.to(mask.dtype) * rewards.detach()[:, None]


def ppo_token_rewards(rewards: torch.Tensor, mask: torch.Tensor, *, kl: torch.Tensor | None = None,
                      beta: float = 0.0) -> torch.Tensor:
    """PPO's per-token rewards (B, T): ``r_t = -beta * kl_t + 1[t = last] * r`` (InstructGPT), with
    ``kl`` the per-token KL estimate (B, T) or None for no penalty; 0 where ``mask == 0``."""
    token_rewards = last_token_rewards(rewards, mask)
    if kl is not None:
        token_rewards = token_rewards - beta * kl.detach() * mask
    return token_rewards


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, *,
               clip: float, aggregation: str, norm: float | None = None) -> torch.Tensor:
    """The critic's loss: `clipped_value_loss` per token, aggregated like the actor's loss. Scalar."""
    return aggregate(clipped_value_loss(values, old_values, returns, mask, clip=clip), mask, aggregation, norm=norm)


class PPO(GRPO):
    def __init__(self, config, policy, tokenizer, task, ref_policy=None):
        super().__init__(config, policy, tokenizer, task, ref_policy=ref_policy)
        self.critic = ValueModel.from_policy(policy)

    def configure_optimizers(self):
        (actor,), (actor_schedule,) = super().configure_optimizers()
        o, c = self.config.optim, self.config.critic
        critic = torch.optim.AdamW(self.critic.parameters(), lr=c.lr, betas=(o.beta1, o.beta2),
                                   weight_decay=o.weight_decay)
        return [actor, critic], [actor_schedule, torch.optim.lr_scheduler.LambdaLR(critic, lambda n: 1.0)]

    def values(self, rollout) -> torch.Tensor:
        return self.critic(rollout.input_ids, rollout.attention_mask, rollout.completion_ids.shape[1])

    def rl_step(self, step: int) -> dict:
        G, lc, cc = self.config.rollout.group_size, self.config.loss, self.config.critic
        norm = lc.norm or self.config.rollout.max_new_tokens
        examples = self.prompts_for_step(step)
        t0 = time.perf_counter()
        rollout = self.generate(examples, group_size=G)
        t1 = time.perf_counter()
        scored = self.score(rollout, examples, G)
        self.account(rollout, len(examples))
        mask = rollout.completion_mask
        old_logp = rollout.logprobs  # the sampler is the learner
        ref_logp = self.ref_logprobs(rollout) if lc.kl_beta > 0 else None
        in_reward = ref_logp is not None and lc.kl_placement == "reward"
        kl = kl_estimate(old_logp, ref_logp, kind=lc.kl_estimator) if in_reward else None
        token_rewards = ppo_token_rewards(scored.rewards, mask, kl=kl, beta=lc.kl_beta)
        old_values = inference(self.values)(rollout)
        advantages, returns = gae(token_rewards, old_values, mask, gamma=cc.gamma, lam=cc.lam, whiten=cc.whiten)
        t2 = time.perf_counter()
        opts, schedules = self.optimizers(), self.lr_schedulers()
        critic_params = list(self.critic.parameters())
        train_actor = step >= cc.warmup
        sums: dict[str, float] = {}
        updates = 0
        for rows in self.minibatches(rollout.completion_ids.shape[0]):
            metrics: dict[str, float] = {}
            if train_actor:
                actor_loss = lambda part: self.policy_loss(rollout, advantages, old_logp,  # noqa: E731
                                                           None if in_reward else ref_logp, part)
                metrics.update(self.update(self.accumulate(rows, actor_loss, metrics, mask), optimizer=opts[0],
                                           scheduler=schedules[0]))

            def critic_loss(part):
                mb = rollout.select(part)
                v_loss = value_loss(self.values(mb), old_values[part], returns[part], mb.completion_mask,
                                    clip=cc.value_clip, aggregation=lc.aggregation, norm=norm)
                return v_loss, {"critic/value_loss": float(v_loss.detach())}

            metrics.update(self.update(self.accumulate(rows, critic_loss, metrics, mask), optimizer=opts[1],
                                       scheduler=schedules[1], params=critic_params, prefix="critic"))
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            updates += 1
        t3 = time.perf_counter()
        out = {k: v / updates for k, v in sums.items()}
        out.update(self.rollout_metrics(scored))
        out.update({
            "critic/value_mean": masked_mean(old_values, mask),
            "critic/return_mean": masked_mean(returns, mask),
            "critic/explained_variance": explained_variance(old_values, returns, mask),
            "actor/trained": float(train_actor),
            "perf/gen_s": t1 - t0, "perf/logprob_s": t2 - t1, "perf/update_s": t3 - t2,
        })
        if kl is not None:
            out["rollout/kl_penalty"] = float(lc.kl_beta * (kl * mask).sum(-1).mean())
        return out


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over the masked tokens: 1 for a perfect critic, <= 0 for a useless one."""
    var_returns = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    residual = returns - values
    var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
    return 1.0 - var_residual / var_returns if var_returns > 0 else float("nan")
