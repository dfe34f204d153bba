"""The reward stage: the task's reward (or the config's weighted reward functions) and its
verifier on every completion, then the recipe's learned reward and its shaping.

- A learned reward (registry `LEARNED_REWARDS`; trait `replaces_reward(config)`) replaces the
  task's reward with a model's score where the config asks for one.
- Shaping components (registry `SHAPING`; trait `needs_reference(config)`) change the reward the
  advantages are computed from: DAPO's overlong punishment, KL to the reference.

Each takes the step and a scored batch and returns the changed batch and its `rollout/...` metrics;
the verifier's verdict (`Batch.correct`) never changes.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from grpo_lab.core.kl import kl_estimate
from grpo_lab.core.shaping import kl_reward_penalty, overlong_punishment
from grpo_lab.errors import RewardError
from grpo_lab.methods.batch import Batch
from grpo_lab.methods.protocols import Shaped
from grpo_lab.methods.step import Step
from grpo_lab.registry import Registry
from grpo_lab.rollout.encode import decode_completions
from grpo_lab.rollout.sampler import inference

KL_KEYS = ("loss.kl_beta", "loss.kl_estimator", "loss.kl_placement")
REWARD_KEYS = ("reward.*",)


def never(config) -> bool:
    return False


SHAPING: Registry = Registry("reward shaping", traits={"needs_reference": never})
LEARNED_REWARDS: Registry = Registry("learned reward", traits={"replaces_reward": never})


def score(task, tokenizer, rollout, examples: list, group_size: int, device=None, rewards=None) -> Batch:
    """The reward and the verifier's verdict on each completion (`group_size` rows per example).

    The reward is the task's own (`task.reward`), or with `rewards` (a `grpo_lab.tasks.RewardSet`,
    the config's `task.rewards`) the weighted sum of its functions, each function's values kept in
    `Batch.reward_parts`."""
    rows = [ex for ex in examples for _ in range(group_size)]
    texts = decode_completions(tokenizer, rollout.completion_ids, rollout.completion_mask)
    finished = rollout.finished.tolist()
    values, correct = [], []
    parts = {name: [] for name in rewards.names} if rewards is not None else None
    for ex, text, done in zip(rows, texts, finished):
        if rewards is not None:  # each function's value is checked (and its failures named) by the set
            each = rewards.evaluate(ex, text, done)
            for name, value in each.items():
                parts[name].append(value)
            values.append(rewards.total(each))
        try:
            if rewards is None:
                values.append(float(task.reward(ex, text, done)))
            correct.append(bool(task.is_correct(ex, text, done)))
        except Exception as exc:  # a user's reward function
            raise RewardError(f"the reward function of task {task.name!r} raised "
                              f"{type(exc).__name__}: {exc} on prompt {ex.prompt!r} and completion {text!r}") from None
    r = torch.tensor(values, dtype=torch.float32, device=device)
    if not torch.isfinite(r).all():
        bad = int((~torch.isfinite(r)).nonzero()[0])
        raise RewardError(f"the reward of task {task.name!r} is {values[bad]} on prompt {rows[bad].prompt!r} "
                          f"and completion {texts[bad]!r}; rewards must be finite numbers")
    reward_parts = None if parts is None else {k: torch.tensor(v, dtype=torch.float32, device=device)
                                               for k, v in parts.items()}
    return Batch(rollout, rows, texts, r, torch.tensor(correct, device=device), reward_parts=reward_parts)


@SHAPING.register("overlong", reads=("rollout.overlong_buffer", "rollout.overlong_penalty"))
def overlong(step: Step, batch: Batch) -> Shaped:
    """DAPO's soft overlong punishment (Eq. 13) added to the reward, L_max = rollout.max_new_tokens."""
    ro = step.config.rollout
    if ro.overlong_buffer <= 0:
        return Shaped(batch, {})
    penalty = ro.overlong_penalty * overlong_punishment(batch.rollout.lengths, max_len=ro.max_new_tokens,
                                                        buffer=ro.overlong_buffer).to(batch.rewards)
    return Shaped(replace(batch, rewards=batch.rewards + penalty), {"rollout/overlong_penalty": float(penalty.mean())})


def kl_needs_reference(config) -> bool:
    return config.loss.kl_beta > 0 and config.loss.kl_placement == "reward"


@SHAPING.register("kl", reads=KL_KEYS, needs_reference=kl_needs_reference)
def kl_in_reward(step: Step, batch: Batch) -> Shaped:
    """KL to the reference in the reward (`loss.kl_placement: reward`): per token for a token-level
    advantage (InstructGPT), summed over the sequence and subtracted before a group baseline otherwise."""
    lc = step.config.loss
    if not (lc.kl_beta > 0 and lc.kl_placement == "reward"):
        return Shaped(batch, {})
    rollout, mask = batch.rollout, batch.rollout.completion_mask
    ref_logp = step.ref_logprobs(rollout)
    if step.token_level_rewards:
        kl = kl_estimate(rollout.logprobs, ref_logp, kind=lc.kl_kind)
        return Shaped(replace(batch, token_kl=kl), {"rollout/kl_penalty": float(lc.kl_beta * (kl * mask).sum(-1).mean())})
    kl = kl_reward_penalty(rollout.logprobs, ref_logp, mask, kind=lc.kl_kind)
    return Shaped(replace(batch, rewards=batch.rewards - lc.kl_beta * kl),
                  {"rollout/kl_penalty": float(lc.kl_beta * kl.mean())})


def model_rewards(score, rollout, *, chunk: int) -> torch.Tensor:
    """A reward model's r(x, y) (B,) of a rollout's rows (`score(rollout)`), `chunk` rows per forward,
    under inference mode."""
    rows = rollout.completion_ids.shape[0]
    parts = [inference(score)(rollout.select(torch.arange(start, min(start + chunk, rows))))
             for start in range(0, rows, chunk)]
    return torch.cat(parts).to(rollout.completion_mask.device)


def kl_to_initial(step: Step, rollout) -> float:
    """KL(pi || pi_init) of the sampled rows: the mean over rows of sum_t (log pi - log pi_init) (k1, an
    unbiased estimate under samples of pi), pi's log-probs being the sampler's."""
    init_logp = step.initial_logprobs(rollout)
    return float(((rollout.logprobs - init_logp) * rollout.completion_mask).sum(-1).mean())


def check_learned_reward(config) -> None:
    from pathlib import Path

    from grpo_lab.config import ConfigError

    model = config.reward.model
    if isinstance(model, str) and not (Path(model).expanduser() / "config.json").exists():
        what = "does not exist" if not Path(model).expanduser().exists() else "has no config.json"
        raise ConfigError(f"reward.model {model} {what}; give the folder of a reward model (a reward_model run's "
                          "reward_model/ folder), or a reward-model config mapping")


@LEARNED_REWARDS.register("reward_model", reads=REWARD_KEYS, check=check_learned_reward,
                          replaces_reward=lambda config: config.reward.learned)
def learned_reward(step: Step, batch: Batch) -> Shaped:
    """A learned reward model's r(x, y) replaces the task's reward (`reward.model`; DeepSeekMath Table 10's
    "Model" reward); the task's reward is logged as `rollout/true_reward` beside `rollout/proxy_reward`,
    and `batch.correct` stays the verifier's. With `reward.kl_initial`, logs `rollout/kl_initial`."""
    metrics = {}
    if step.config.reward.kl_initial:
        metrics["rollout/kl_initial"] = kl_to_initial(step, batch.rollout)
    if not step.config.reward.learned:
        return Shaped(batch, metrics)
    with step.autocast():
        proxy = model_rewards(step.rewards, batch.rollout, chunk=step.config.reward.batch_size)
    metrics.update({"rollout/true_reward": float(batch.rewards.mean()), "rollout/proxy_reward": float(proxy.mean()),
                    "rollout/proxy_reward_std": float(proxy.std()) if proxy.numel() > 1 else 0.0})
    return Shaped(replace(batch, rewards=proxy), metrics)
