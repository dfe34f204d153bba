"""What a component sees of the engine's step: `Step`, and the state changes it may ask for.

A component of any axis (a data source, a learned reward, a shaping, an advantage estimator, an
objective, a schedule) gets a `Step`: the config, the recipe, the step's index, the task's data,
how the step is split over processes (`collective`), and the functions it may call: sampling and
scoring for data sources, the log-probs of the learner, the reference, the initial policy and the
behaviour policy, the critic's values and the reward model's scores, and the retraining of the
reward model through the engine's update loop. It never sees the engine: what it wants changed
(the budget a data source spent, a reference update a schedule asks for) it returns, and the
engine applies it.

The engine builds the `Step` (`Engine.step_of`); a test or a user builds one of their own from
plain functions to run a component alone.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Optional, Sequence

import torch

from grpo_lab.methods.collective import Collective

if TYPE_CHECKING:
    from grpo_lab.config import Config
    from grpo_lab.methods.batch import Batch
    from grpo_lab.rollout import Rollout

BUDGET_KEYS = ("prompts", "samples", "tokens")


def budget_of(rollout: "Rollout", prompts: int) -> dict[str, int]:
    """What sampling `rollout` for `prompts` prompts spent: prompts, samples (rows) and completion tokens."""
    return {"prompts": int(prompts), "samples": int(rollout.completion_ids.shape[0]),
            "tokens": int(rollout.completion_mask.sum())}


def add_budget(total: dict[str, int], spent: dict[str, int]) -> dict[str, int]:
    """`total` with `spent` added, key by key."""
    return {k: total.get(k, 0) + spent.get(k, 0) for k in dict.fromkeys([*total, *spent])}


@dataclass(frozen=True)
class ReferenceUpdate:
    """A schedule's request: the reference becomes alpha * policy + (1 - alpha) * reference; alpha = 1
    copies the policy (its state dict, so that the KL to it is exactly 0)."""

    alpha: float = 1.0


@dataclass(frozen=True)
class ScheduleResult:
    """What a schedule does before a step: its metrics, and the reference update it asks for (or None)."""

    metrics: dict = field(default_factory=dict)
    reference: Optional[ReferenceUpdate] = None


def missing(what: str) -> Callable[..., Any]:
    """A function a step of this run does not offer (no critic, no reward model, ...)."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"this run's step offers no {what}")
    return refuse


@dataclass(frozen=True)
class Step:
    """One RL step as its components see it (module docstring). Functions:

    - ``generate(examples, *, group_size, greedy=False, temperature=None, generator=None,
      with_entropy=False, policy=None) -> Rollout``: G completions of each example (one example's in
      contiguous rows) by the learner, or by ``policy`` (a model `behaviour` returned);
    - ``score(rollout, examples, group_size) -> Batch``: the task's reward and verdict on each row;
    - ``shape(batch) -> (Batch, metrics)``: the recipe's learned reward and reward shaping;
    - ``prompts(index, count=None)`` the prompts of RL step ``index`` (this process's slice), and
      ``slice_of(examples)`` this process's slice of a list of prompts;
    - ``logprobs(rollout, *, with_entropy=False, sampling=True) -> (logp, entropy)``: the learner's,
      with gradients outside ``no_grad``; ``sampling=False``: of the model itself (T = 1, no top-p);
    - ``ref_logprobs(rollout, *, sampling=True)``, ``initial_logprobs(rollout)``: the reference's and
      the initial policy's (no gradients);
    - ``behaviour() -> (model, version)``: the sampler of this step (the learner, or a lagging,
      low-precision or noisy copy) and the policy version its weights are;
    - ``values(rollout)``: the critic's (B, T); ``rewards(rollout)``: the reward model's r(x, y) (B,),
      each with gradients outside ``no_grad``;
    - ``fit_reward_model(pairs, settings, *, seed, iteration) -> metrics``: retrain the reward model on
      preference pairs through the engine's update loop (a fresh optimizer);
    - ``autocast()``: the run's precision for a forward pass.
    """

    config: "Config"
    recipe: Any  # the run's grpo_lab.methods.Recipe
    index: int  # the RL step, from 0
    task: Any
    tokenizer: Any
    train_examples: Sequence[Any]
    device: torch.device
    collective: Collective
    token_level_rewards: bool = False  # the advantage estimator takes per-token rewards (GAE)
    sampler_matches_learner: bool = True  # the sampler's log-probs are the learner's (see Engine)
    reward_model_pairs: tuple = ()  # the pairs the run's reward model was trained on, where it holds them
    generate: Callable[..., "Rollout"] = missing("sampling")
    score: Callable[..., "Batch"] = missing("scoring")
    shape: Callable[..., tuple] = missing("reward shaping")
    prompts: Callable[..., list] = missing("prompts")
    slice_of: Callable[[list], list] = lambda examples: examples
    logprobs: Callable[..., tuple] = missing("learner")
    ref_logprobs: Callable[..., torch.Tensor] = missing("reference model")
    initial_logprobs: Callable[..., torch.Tensor] = missing("initial policy")
    behaviour: Callable[[], tuple] = missing("behaviour policy")
    values: Callable[..., torch.Tensor] = missing("critic")
    rewards: Callable[..., torch.Tensor] = missing("reward model")
    fit_reward_model: Callable[..., dict] = missing("reward model to train")
    autocast: Callable[[], ContextManager] = contextlib.nullcontext

    @property
    def rank(self) -> int:
        return self.collective.rank

    @property
    def world(self) -> int:
        return self.collective.world
