"""The axes of a method, each a Protocol: what a registered component of that axis is and how the
engine calls it. Every component gets a `Step` (grpo_lab.methods.step), never the engine.

A component registered as a class is built once per run as ``Class(config)``; any other object
(a function) is used as it is. The classes below give the defaults a component may leave out;
built-in classes subclass them, and one's own may too or offer the same methods.

| axis (registry) | called as | returns |
|---|---|---|
| data source (`DATA`) | ``collect(step)``, ``after_update(step, data)``, ``evaluate(step)`` | `StepData`, -, held-out metrics or None |
| learned reward (`LEARNED_REWARDS`), shaping (`SHAPING`) | ``fn(step, batch)`` | `Shaped` (the batch, metrics) |
| refill filter (`FILTERS`) | ``active(config)``, ``keep(batch, group_size)`` | bool, indices of the groups kept |
| advantage estimator (`ADVANTAGES`) | ``fn(step, batch)`` | `Estimate` |
| objective (`OBJECTIVES`) | ``prepare(step, batch)``, ``loss(step, batch, rows)`` | metrics, (scalar loss, float metrics) |
| policy loss (`POLICY_LOSSES`) | ``fn(logp, old_logp, advantages, mask, loss_config)`` | `core.objectives.SurrogateResult` |
| schedule (`SCHEDULES`) | ``before_step(step)`` | `ScheduleResult` (metrics, a reference update) |
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Optional, Protocol, runtime_checkable

import torch

from grpo_lab.methods.step import ScheduleResult, Step

if TYPE_CHECKING:
    from grpo_lab.config import Config, LossConfig
    from grpo_lab.core.objectives import SurrogateResult
    from grpo_lab.methods.batch import Batch, StepData


class Shaped(NamedTuple):
    batch: "Batch"
    metrics: dict


class Estimate(NamedTuple):
    advantages: Optional[torch.Tensor]  # (B,) or (B, T); None when the objective needs none
    metrics: dict = {}
    keep: Optional[torch.Tensor] = None  # rows to train on; None: every row
    loss_scale: float = 1.0  # the kept rows' share of the step's loss normaliser (Eq. 10 counts every row)


def build(obj: Any, config: "Config") -> Any:
    """A registered component as a run uses it: a class built with the config, anything else as it is."""
    return obj(config) if isinstance(obj, type) else obj


@runtime_checkable
class RewardFunction(Protocol):
    """A learned reward or a shaping: the batch with its rewards changed, and `rollout/...` metrics."""

    def __call__(self, step: Step, batch: "Batch") -> Shaped: ...


@runtime_checkable
class AdvantageEstimator(Protocol):
    def __call__(self, step: Step, batch: "Batch") -> Estimate: ...


@runtime_checkable
class PolicyLoss(Protocol):
    def __call__(self, logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                 loss: "LossConfig") -> "SurrogateResult": ...


class DataSource:
    """Where each step's rows come from; built once per run, its state in every checkpoint."""

    def __init__(self, config: "Config"):
        self.config = config

    def collect(self, step: Step) -> "StepData":
        raise NotImplementedError

    def after_update(self, step: Step, data: "StepData") -> None:
        """After the step's updates (e.g. store its groups for replay)."""

    def evaluate(self, step: Step) -> Optional[dict]:
        """Held-out metrics of a source with held-out data of its own (reward-model pairs), else None:
        the engine then evaluates the policy on the task's held-out prompts."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Filter:
    """A refill filter of dynamic sampling: which groups of a sampled batch to keep."""

    def __init__(self, config: "Config"):
        self.config = config

    def active(self, config: "Config") -> bool:
        return True

    def keep(self, batch: "Batch", group_size: int) -> torch.Tensor:
        raise NotImplementedError


class Objective:
    """A loss the update loop minimises: the model it trains (`model`: "policy", "critic" or
    "reward_model", which parameters and which optimizer), its metrics' namespace (`prefix`), whether
    its updates count in `budget/updates`, and how its metrics merge over micro-batches and minibatches
    (`reductions`: "loss" by each part's share of the loss, "max", "min", else the mean)."""

    model = "policy"
    prefix = "actor"
    counts_updates = True
    reductions: Mapping[str, str] = {"actor/loss": "loss"}

    def __init__(self, config: "Config"):
        self.config = config

    def prepare(self, step: Step, batch: "Batch") -> dict:
        """Once per step, before the updates: fill what the loss needs (old log-probs, reference, ...)."""
        return {}

    def loss(self, step: Step, batch: "Batch", rows: torch.Tensor) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def holds_policy(self, step: Step) -> bool:
        """Whether the policy waits this step (a critic warming up)."""
        return False

    def token_mask(self, batch: "Batch") -> Optional[torch.Tensor]:
        """The tokens micro-batches and metrics are weighted by; None: by rows."""
        return batch.rollout.completion_mask

    def norm(self) -> float:
        return self.config.loss.norm or self.config.rollout.max_new_tokens

    def learning_rate(self) -> float:
        """The learning rate of this objective's model's optimizer."""
        return self.config.optim.lr


class Schedule:
    """What happens between steps (iterative RL, reference sync); its state in every checkpoint."""

    def __init__(self, config: "Config"):
        self.config = config

    def before_step(self, step: Step) -> ScheduleResult:
        return ScheduleResult()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
