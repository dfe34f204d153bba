"""The advantage stage (registry `ADVANTAGES`): one estimator per recipe, from the rewards of the
batch to the per-row or per-token advantage the policy objective weighs each token with.

An estimator is called as ``estimate(step, batch) -> Estimate``. `Estimate.keep` (indices of rows)
drops the other rows from the update: RFT's indicator trains on the correct rows only. Traits:
`whole_batch` (it reads only `batch.rewards`, so that when a step is split over processes the
engine gives it the whole step's rewards and batch-level statistics stay the step's) and
`token_level` (it takes per-token rewards: KL in the reward is then placed per token).
"""

from __future__ import annotations

import torch

from grpo_lab.config import ConfigError
from grpo_lab.core import advantages as adv_lib
from grpo_lab.core.aggregation import masked_mean
from grpo_lab.core.shaping import token_rewards
from grpo_lab.core.value import explained_variance
from grpo_lab.methods.batch import Batch
from grpo_lab.methods.protocols import Estimate
from grpo_lab.methods.step import Step
from grpo_lab.registry import Registry
from grpo_lab.rollout.encode import token_char_ends
from grpo_lab.rollout.sampler import inference

ADVANTAGES: Registry = Registry("advantage estimator", traits={"whole_batch": False, "token_level": False})


def check_groups(config) -> None:
    if config.rollout.group_size < 2:
        raise ConfigError(f"rollout.group_size is {config.rollout.group_size}; advantage.estimator "
                          f"{config.advantage.estimator} (method {config.method}) needs at least 2 completions per "
                          "prompt to compute a group baseline")


@ADVANTAGES.register("group", reads=("advantage.scale", "advantage.eps"), check=check_groups, whole_batch=True)
def group(step: Step, batch: Batch) -> Estimate:
    """A_i = (r_i - mean_group(r)) / std (DeepSeekMath §4.1.2); advantage.scale: group | batch | none."""
    a = step.config.advantage
    return Estimate(adv_lib.group_relative(batch.rewards, step.config.rollout.group_size, scale=a.scale, eps=a.eps))


@ADVANTAGES.register("rloo", check=check_groups, whole_batch=True)
def rloo(step: Step, batch: Batch) -> Estimate:
    """A_i = r_i - mean of the other G - 1 rewards of the group (Ahmadian et al. Eq. 6)."""
    return Estimate(adv_lib.rloo(batch.rewards, step.config.rollout.group_size))


@ADVANTAGES.register("reinforce_pp", reads=("advantage.eps",), whole_batch=True)
def reinforce_pp(step: Step, batch: Batch) -> Estimate:
    """REINFORCE++: r_i - mean_group(r) (or the batch mean with G = 1), over the batch's std (2501.03262)."""
    return Estimate(adv_lib.reinforce_plus_plus(batch.rewards, step.config.rollout.group_size,
                                                eps=step.config.advantage.eps))


def check_process(config) -> None:
    """Process supervision needs step rewards: refused for a task class whose `step_rewards` is the
    base class's (none); a task built by a function is checked at its first step."""
    check_groups(config)
    from grpo_lab.tasks import VerifiableTask, task_factory

    factory = task_factory(config.task.name)
    if isinstance(factory, type) and getattr(factory, "step_rewards", None) is VerifiableTask.step_rewards:
        raise ConfigError(f"advantage.estimator is process but task {config.task.name!r} has no step rewards (its "
                          "step_rewards returns None); use a task that scores its steps, e.g. task.name: chain")


@ADVANTAGES.register("process", reads=("advantage.eps",), check=check_process)
def process(step: Step, batch: Batch) -> Estimate:
    """Step rewards normalised over the group's steps; A_t = sum of those ending at or after t (§4.1.3)."""
    step_rewards, step_mask = step_reward_tensors(step, batch)
    return Estimate(adv_lib.process_supervised(step_rewards, step_mask, batch.rollout.completion_mask,
                                               step.config.rollout.group_size, eps=step.config.advantage.eps))


def step_reward_tensors(step: Step, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Step rewards placed at the token where each step ends: (rewards, step_mask), (B, T) each, from the
    task's `step_rewards`.

    The outcome reward is the reward of one more step that ends at the completion's last token
    (EOS when it finished): the task's steps score the intermediate results but not whether the
    answer was finished, and without it process supervision learns never to stop.
    """
    ro = batch.rollout
    rewards = torch.zeros_like(ro.completion_mask)
    step_mask = torch.zeros_like(ro.completion_mask)
    ends = token_char_ends(step.tokenizer, ro.completion_ids, ro.completion_mask)
    scored = 0
    for i, (ex, text, done) in enumerate(zip(batch.examples, batch.texts, ro.finished.tolist())):
        steps = step.task.step_rewards(ex, text, done)
        scored += steps is not None
        for part in steps or []:
            t = next((j for j, e in enumerate(ends[i]) if e >= part.end), None)
            if t is not None:
                rewards[i, t] += part.reward
                step_mask[i, t] = 1.0
    if batch.examples and not scored:
        from grpo_lab.errors import TrainingError

        raise TrainingError(f"advantage.estimator is process but task {step.task.name!r} gave no step rewards (its "
                            "step_rewards returned None for every completion); use estimator group")
    last = (ro.completion_mask.cumsum(-1) == ro.lengths[:, None]) & (ro.completion_mask > 0)  # (B, T)
    rewards = rewards + last.to(rewards.dtype) * batch.rewards[:, None]
    step_mask = torch.maximum(step_mask, last.to(step_mask.dtype))
    return rewards, step_mask


@ADVANTAGES.register("gae", reads=("critic.gamma", "critic.lam", "critic.whiten"), token_level=True)
def gae(step: Step, batch: Batch) -> Estimate:
    """A_t from r_>=t and the critic V_psi by GAE (PPO, InstructGPT); sets `batch.returns` and `batch.old_values`."""
    c = step.config.critic
    mask = batch.rollout.completion_mask
    rewards = token_rewards(batch.rewards, mask, kl=batch.token_kl, beta=step.config.loss.kl_beta)
    old_values = inference(step.values)(batch.rollout)
    split = step.world > 1
    advantages, returns = adv_lib.gae(rewards, old_values, mask, gamma=c.gamma, lam=c.lam, whiten=c.whiten and not split)
    if c.whiten and split:  # the whole step's mean and variance over its tokens
        group = step.collective
        count = group.sum(mask.sum().double())
        mean = group.sum((advantages * mask).sum().double()) / count
        var = group.sum((((advantages - mean.float()) ** 2) * mask).sum().double()) / (count - 1).clamp(min=1.0)
        advantages = adv_lib.whitened(advantages, mask, mean=mean.float(), var=var.float())
    batch.old_values, batch.returns = old_values, returns
    return Estimate(advantages, {
        "critic/value_mean": float(masked_mean(old_values, mask)),
        "critic/return_mean": float(masked_mean(returns, mask)),
        "critic/explained_variance": float(explained_variance(old_values, returns, mask)),
    })


@ADVANTAGES.register("indicator", reads=("loss.rft_normalise",))
def indicator(step: Step, batch: Batch) -> Estimate:
    """I(o): 1 on correct completions, which alone are trained on (RFT, Eq. 10); with a learned reward
    (`reward.model`), 1 on the completion the reward model ranks first in its group (best-of-G).

    Eq. 10 averages I(o) * grad log pi over every sampled row, so with `loss.rft_normalise: all` the
    loss over the kept rows is scaled by their share of the step's rows (of its tokens under
    token_mean), summed over the processes: the step does not grow as the accuracy falls."""
    config = step.config
    if config.reward.learned:
        G = config.rollout.group_size
        firsts = batch.rewards.view(-1, G).argmax(-1) + torch.arange(batch.rows // G, device=batch.rewards.device) * G
        chosen = torch.zeros_like(batch.correct).index_fill_(0, firsts, True)
    else:
        chosen = batch.correct
    keep = chosen.nonzero().flatten()
    metrics = {"rft/kept": float(keep.numel()), "rft/skipped": float(keep.numel() == 0)}
    scale = 1.0
    if config.loss.rft_normalise == "all":
        by_tokens = config.loss.aggregation == "token_mean"
        weights = batch.rollout.completion_mask.sum(-1) if by_tokens else torch.ones_like(batch.rewards)
        kept, total = (weights * chosen).sum().double(), weights.sum().double()
        if step.world > 1:
            kept, total = step.collective.sum(kept), step.collective.sum(total)
        scale = float(kept / total) if total > 0 else 0.0
    return Estimate(chosen.float(), metrics, keep, loss_scale=scale)
