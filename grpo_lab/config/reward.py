"""The config sections of learned rewards and iterative RL: `reward` (what scores an online
method's completions), `reward_model` (how a Bradley-Terry reward model is trained: the
`reward_model` method, and the shape of `reward.model`'s mapping), `iterative` (DeepSeekMath
Algorithm 1) and `reference` (periodic reference updates)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from typing import Any, Optional

from grpo_lab.config.fields import _check, _choice, _positive, knob

PAIR_SOURCES = ("policy", "dataset")


@dataclass(frozen=True)
class RewardModelConfig:
    pairs: str = knob("policy", "policy: pairs of one prompt's samples, a completion the task's verifier accepts "
                                "preferred to one it rejects | dataset: the task's rows, columns `chosen` and "
                                "`rejected`")
    prompts: int = knob(256, "policy: training prompts sampled, rollout.group_size completions each; dataset: "
                             "training rows used (at most)")
    eval_prompts: int = knob(64, "held-out prompts (policy) or eval rows (dataset) whose pairs measure the model")
    label_noise: float = knob(0.0, "probability that a training pair's preference is flipped (an imperfect reward "
                                   "model on purpose); held-out pairs keep theirs")
    chosen: str = knob("chosen", "dataset: the column of the preferred completion")
    rejected: str = knob("rejected", "dataset: the column of the other completion")
    batch_size: int = knob(32, "pairs per update")
    lr: float = knob(1e-4, "the reward model's AdamW learning rate")
    steps: int = knob(200, "updates of a reward model an RL run trains (reward.model: {...}) and of each retraining "
                           "(iterative); a reward_model run makes train.steps updates")
    seed: int = knob(0, "the pairs' own seed (which prompts, samples and flipped labels): every RL seed shares one "
                        "reward model")

    def __post_init__(self):
        _choice("reward_model.pairs", self.pairs, PAIR_SOURCES)
        for name in ("prompts", "eval_prompts", "batch_size", "steps"):
            _positive(f"reward_model.{name}", getattr(self, name))
        _check(0.0 <= self.label_noise < 0.5,
               f"reward_model.label_noise is {self.label_noise}; it must be in [0, 0.5) (at 0.5 the labels carry "
               "no information)")
        _positive("reward_model.lr", self.lr)

    @classmethod
    def from_mapping(cls, mapping: dict, where: str = "reward.model") -> "RewardModelConfig":
        """The reward-model config a `reward.model` mapping describes (its keys are this section's)."""
        known = [f.name for f in fields(cls)]
        hints = {f.name: f.type for f in fields(cls)}
        values = {}
        for key, value in mapping.items():
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"; did you mean '{where}.{close[0]}'?" if close else ""
                raise_config(f"unknown key '{where}.{key}'{hint} (a reward-model config takes the keys of the "
                             f"reward_model section: {', '.join(known)})")
            values[key] = _coerced(f"{where}.{key}", value, hints[key])
        return cls(**values)


def raise_config(message: str) -> None:
    _check(False, message)


def _coerced(name: str, value: Any, type_name: str) -> Any:
    """`value` as the field type named `type_name` (str, int or float), as the YAML loader reads a key."""
    if type_name == "float" and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    wanted = {"str": str, "int": int, "float": float}[type_name]
    _check(isinstance(value, wanted) and not isinstance(value, bool),
           f"{name} is {value!r}; it must be a{'n' if wanted is int else ''} {wanted.__name__}")
    return value


@dataclass(frozen=True)
class RewardConfig:
    model: Optional[Any] = knob(None, "a learned reward for an online method: a reward model folder (a reward_model "
                                      "run's, or any Hugging Face sequence-classification model with one label) or a "
                                      "reward-model config {pairs, prompts, label_noise, steps, ...} trained before "
                                      "the run and cached by its hash; None: the task's reward")
    batch_size: int = knob(64, "completions scored per forward of the reward model (inference mode)")
    kl_initial: bool = knob(False, "log rollout/kl_initial, KL(pi || pi_init) of each step's samples (a frozen copy "
                                   "of the starting policy is kept): the x-axis of reward over-optimisation")

    def __post_init__(self):
        _check(self.model is None or isinstance(self.model, (str, dict)),
               f"reward.model is {self.model!r}; give a reward model folder or a reward-model config mapping "
               "(e.g. {pairs: policy, label_noise: 0.1})")
        if isinstance(self.model, dict):
            self.model_config  # validates the mapping
        _positive("reward.batch_size", self.batch_size)

    @property
    def learned(self) -> bool:
        return self.model is not None

    @property
    def model_config(self) -> Optional[RewardModelConfig]:
        """The reward-model config of a `reward.model` mapping; None for a folder or no model."""
        return RewardModelConfig.from_mapping(self.model) if isinstance(self.model, dict) else None


@dataclass(frozen=True)
class IterativeConfig:
    iterations: int = knob(1, "I of DeepSeekMath Algorithm 1: the run is I iterations of steps_per_iteration steps; "
                              "1: no iteration")
    steps_per_iteration: int = knob(0, "M: RL steps per iteration; 0 = train.steps / iterations")
    reset_reference: bool = knob(True, "each iteration starts with the reference set to the current policy")
    retrain_reward_model: bool = knob(True, "each iteration starts by training the reward model (reward.model's "
                                            "config) on pairs from the current policy plus replayed earlier pairs")
    replay_fraction: float = knob(0.1, "the share of earlier pairs in each retraining's data (DeepSeekMath: 10%)")

    def __post_init__(self):
        _positive("iterative.iterations", self.iterations)
        _positive("iterative.steps_per_iteration", self.steps_per_iteration, zero_ok=True)
        _check(0.0 <= self.replay_fraction < 1.0,
               f"iterative.replay_fraction is {self.replay_fraction}; it must be in [0, 1)")

    def length(self, steps: int) -> int:
        """M, the steps of one iteration of a run of `steps` RL steps."""
        return self.steps_per_iteration or max(steps // self.iterations, 1)


@dataclass(frozen=True)
class ReferenceConfig:
    sync_every: int = knob(0, "every N RL steps the reference moves towards the policy (TR-DPO, TRL's sync_ref_model); "
                              "0: never")
    mixup_alpha: float = knob(0.6, "ref <- alpha * policy + (1 - alpha) * ref at each sync; 1.0 copies the policy")

    def __post_init__(self):
        _positive("reference.sync_every", self.sync_every, zero_ok=True)
        _check(0.0 < self.mixup_alpha <= 1.0, f"reference.mixup_alpha is {self.mixup_alpha}; it must be in (0, 1]")
