"""Schedules (registry `SCHEDULES`): what happens between RL steps, before a step collects its data.

- `iterative`: DeepSeekMath's iterative RL (Algorithm 1). The run is `iterative.iterations`
  iterations of M = `iterative.steps_per_iteration` steps. At the start of each iteration after the
  first (steps M, 2M, ...), the reward model is trained on pairs sampled from the current policy
  and labelled by the verifier, mixed with a replay of earlier pairs making up
  `iterative.replay_fraction` of the data (`retrain_reward_model`), and the reference becomes the
  current policy (`reset_reference`). Algorithm 1 updates the reward model at the end of an
  iteration; that is the same point in the run. Departures: the reward model's optimizer is made
  afresh for each retraining (its moments are not carried over), and the pairs are labelled by
  the task's verifier (with the reward-model config's label noise) instead of human or model
  preference data. Every pair used (the first reward model's, where its folder holds them, and
  each retraining's) goes into the history that replay draws from, which checkpoints hold.
- `reference_sync`: every `reference.sync_every` steps, ref <- alpha * policy + (1 - alpha) * ref
  (TR-DPO 2404.09656; TRL's `sync_ref_model`), for any method with a reference (a KL term, DPO).

A schedule is built once per run (`Schedule(config)`); `before_step(step)` returns a
`ScheduleResult`: its metrics and the reference update it asks for, which the engine applies;
`state_dict()` goes into checkpoints. Trait `moves_reference(config)` names the key that moves the
reference model, or None.
"""

from __future__ import annotations

from typing import Optional

import torch

from grpo_lab.config import ConfigError
from grpo_lab.core.iterative import replay_count
from grpo_lab.methods.protocols import Schedule
from grpo_lab.methods.reward_model import REPLAY, make_pairs, pair_accuracy
from grpo_lab.methods.step import ReferenceUpdate, ScheduleResult, Step
from grpo_lab.registry import Registry
from grpo_lab.seeding import Stream, generator


def moves_nothing(config) -> Optional[str]:
    return None


SCHEDULES: Registry = Registry("schedule", traits={"moves_reference": moves_nothing})


def check_iterative(config) -> None:
    it, steps = config.iterative, config.train.steps
    if it.iterations == 1:
        if it.steps_per_iteration:
            raise ConfigError("iterative.steps_per_iteration is set but iterative.iterations is 1; set the number of "
                              "iterations")
        return
    length = it.length(steps)
    if length * it.iterations != steps:
        raise ConfigError(f"iterative.iterations x steps_per_iteration = {it.iterations} x {length} = "
                          f"{it.iterations * length} steps, but train.steps is {steps}; make them equal")
    if it.retrain_reward_model and config.reward.model_config is None:
        what = "a folder" if config.reward.learned else "not set (the reward is the task's)"
        raise ConfigError(f"iterative.retrain_reward_model is true but reward.model is {what}; give reward.model a "
                          "reward-model config (it says how pairs are drawn and how long the model trains), or set "
                          "iterative.retrain_reward_model: false")
    if it.retrain_reward_model and config.train.world_size > 1:
        raise ConfigError("iterative.retrain_reward_model retrains the reward model in one process; run on one "
                          "device (train.devices x train.num_nodes = 1)")
    check_reference_owner(config, "iterative.reset_reference" if it.reset_reference else None)


def check_reference_owner(config, key: Optional[str]) -> None:
    if key and config.model.adapter.type != "none":
        raise ConfigError(f"{key} moves the reference model, but with adapters the reference is the policy's own "
                          "base (adapters off), which stays fixed; remove it or the adapter")


def iterative_moves_reference(config) -> Optional[str]:
    it = config.iterative
    return "iterative.reset_reference" if it.iterations > 1 and it.reset_reference else None


@SCHEDULES.register("iterative", reads=("iterative.*",), check=check_iterative,
                    moves_reference=iterative_moves_reference)
class Iterative(Schedule):
    """DeepSeekMath Algorithm 1 (module docstring)."""

    def __init__(self, config):
        super().__init__(config)
        self.history: Optional[list] = None  # every pair the reward model has been trained on

    def iteration(self, step: int) -> int:
        return step // self.config.iterative.length(self.config.train.steps)

    def before_step(self, step: Step) -> ScheduleResult:
        it = self.config.iterative
        if it.iterations == 1:
            return ScheduleResult()
        if self.history is None:  # the first reward model's pairs, where its folder holds them
            self.history = [tuple(p) for p in step.reward_model_pairs]
        iteration = self.iteration(step.index)
        metrics = {"iterative/iteration": float(iteration)}
        if step.index == 0 or step.index % it.length(self.config.train.steps):
            return ScheduleResult(metrics)
        if it.retrain_reward_model:
            metrics.update(self.retrain(step, iteration))
        if not it.reset_reference:
            return ScheduleResult(metrics)
        return ScheduleResult({**metrics, "iterative/reference_reset": 1.0}, ReferenceUpdate(1.0))

    def retrain(self, step: Step, iteration: int) -> dict:
        """Pairs from the current policy plus replayed earlier ones, then `steps` updates of the reward model."""
        rm, seed = self.config.reward.model_config, self.config.seed
        new, held_out, metrics = make_pairs(step, rm, seed=seed, iteration=iteration, source="policy")
        replayed = self.replay(new, iteration)
        pad = step.tokenizer.pad_token_id
        before = pair_accuracy(step.rewards, held_out, pad_id=pad, device=step.device, prefix="reward_model/before_")
        metrics.update(step.fit_reward_model(new + replayed, rm, seed=seed, iteration=iteration))
        after = pair_accuracy(step.rewards, held_out, pad_id=pad, device=step.device, prefix="reward_model/heldout_")
        self.history.extend(new)
        total = len(new) + len(replayed)
        return {**metrics, **before, **after, "reward_model/new_pairs": float(len(new)),
                "reward_model/replayed_pairs": float(len(replayed)),
                "reward_model/replayed_frac": len(replayed) / total if total else 0.0}

    def replay(self, new: list, iteration: int) -> list:
        """`replay_count(len(new))` earlier pairs, drawn without replacement (all of them when fewer)."""
        want = replay_count(len(new), fraction=self.config.iterative.replay_fraction)
        if want == 0 or not self.history:
            return []
        gen = generator(self.config.seed, Stream.REWARD_PAIRS, iteration, REPLAY)
        picked = torch.randperm(len(self.history), generator=gen)[:want].sort().values
        return [self.history[i] for i in picked.tolist()]

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state: dict) -> None:
        history = state.get("history")
        self.history = None if history is None else [tuple(p) for p in history]


def check_sync(config) -> None:
    check_reference_owner(config, "reference.sync_every" if config.reference.sync_every else None)
    if config.reference.mixup_alpha != type(config.reference)().mixup_alpha and not config.reference.sync_every:
        raise ConfigError("reference.mixup_alpha is set but reference.sync_every is 0, so the reference never moves; "
                          "set reference.sync_every")


@SCHEDULES.register("reference_sync", reads=("reference.*",), check=check_sync,
                    moves_reference=lambda config: "reference.sync_every" if config.reference.sync_every else None)
class ReferenceSync(Schedule):
    """ref <- alpha * policy + (1 - alpha) * ref every `reference.sync_every` steps (after those steps)."""

    def before_step(self, step: Step) -> ScheduleResult:
        every = self.config.reference.sync_every
        if not every or step.index == 0 or step.index % every:
            return ScheduleResult()
        return ScheduleResult({"reference/synced": 1.0}, ReferenceUpdate(self.config.reference.mixup_alpha))
