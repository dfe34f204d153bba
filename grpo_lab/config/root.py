"""The whole config: its sections, the checks that span sections, and the hashes that identify a
run and its warm start."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import yaml

from grpo_lab.config.fields import _check, _component, knob
from grpo_lab.config.precision import resolve_precision
from grpo_lab.config.reward import IterativeConfig, ReferenceConfig, RewardConfig, RewardModelConfig
from grpo_lab.config.sections import (
    AdvantageConfig, CriticConfig, DPOConfig, LossConfig, ModelConfig, OffPolicyConfig, OptimConfig, RolloutConfig,
    SFTConfig, TaskConfig, TrackingConfig, TrainConfig,
)
from grpo_lab.conventions import HASHED_AS, NOT_RESULT_KEYS, RUN_ONLY_KEYS, is_result_key


# Bug fixes that changed what some configs compute: a config one applies to carries its name in its
# hash, so that a run recorded before the fix is never taken for a run of the fixed code (a grid
# reruns it, a resume refuses its checkpoint). Every other config keeps its identity.
FIXES = (
    ("online_rft: Eq. 10's normaliser, every sampled row",
     lambda c: c.method == "online_rft" and c.loss.rft_normalise == "all"),
    ("offpolicy: a masking correction drops weights below 1 / cap too",
     lambda c: c.offpolicy.axes[2] == "mask" and c.offpolicy.axes[1] != "none" and c.offpolicy.cap_low is None),
)


@dataclass(frozen=True)
class Config:
    name: str = knob("run", "experiment name, used in run names and paths")
    method: str = knob("grpo", "sft | rft | online_rft | dpo | ppo | grpo | offpolicy_grpo | reward_model")
    seed: int = knob(0, "the RL run's seed (sampling, data order); the warm start has its own")
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    offpolicy: OffPolicyConfig = field(default_factory=OffPolicyConfig)  # method: offpolicy_grpo only
    critic: CriticConfig = field(default_factory=CriticConfig)  # method: ppo only
    dpo: DPOConfig = field(default_factory=DPOConfig)  # method: dpo only
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    reward: RewardConfig = field(default_factory=RewardConfig, metadata={  # online methods
        "help": "a learned reward instead of the task's (model, batch_size, kl_initial)", "added": True})
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig, metadata={  # method: reward_model
        "help": "training a Bradley-Terry reward model (pairs, label_noise, lr, ...)", "added": True})
    iterative: IterativeConfig = field(default_factory=IterativeConfig, metadata={  # online methods
        "help": "iterative RL, DeepSeekMath Algorithm 1 (iterations, reset_reference, retrain_reward_model, ...)",
        "added": True})
    reference: ReferenceConfig = field(default_factory=ReferenceConfig, metadata={  # methods with a KL term
        "help": "periodic reference updates (sync_every, mixup_alpha)", "added": True})

    def __post_init__(self):
        _component("method", self.method)
        _check(self.rollout.batch_size % self.optim.minibatches == 0,
               f"optim.minibatches={self.optim.minibatches} does not divide the rollout batch of "
               f"{self.rollout.batch_size} completions; choose a divisor")
        _check(self.rollout.prompts_per_step % self.train.world_size == 0,
               f"rollout.prompts_per_step={self.rollout.prompts_per_step} does not split over the "
               f"{self.train.world_size} processes of train.devices x train.num_nodes; choose a multiple")
        self._check_variants()

    def _check_variants(self) -> None:
        """Switches that contradict each other, whatever the method (README section `variants`); what a
        method reads is checked against its recipe (`grpo_lab.methods.check_config`)."""
        ro, off = self.rollout, self.offpolicy
        _check(not ro.dynamic_sampling or ro.group_size >= 2,
               "rollout.dynamic_sampling needs rollout.group_size >= 2: a group of one always has zero variance")
        _check(self.advantage.estimator != "process" or (ro.overlong_buffer == 0 and self.loss.kl_placement == "loss"),
               "advantage.estimator is process, whose advantages come from step rewards alone, so an outcome-reward "
               "shaping (rollout.overlong_buffer, loss.kl_placement: reward) would be ignored; use estimator group")
        _check(not (off.axes == ("proximal", "token", "none") and self.loss.level == "sequence"),
               "offpolicy.correction decoupled (AReaL) weighs tokens by pi_prox/pi_behav and clips the token ratio; "
               "it cannot run with loss.level: sequence, use offpolicy.correction: sequence_tis instead")
        _check(off.replay % self.train.world_size == 0,
               f"offpolicy.replay={off.replay} does not split over the {self.train.world_size} processes of "
               "train.devices x train.num_nodes (each replays its share); choose a multiple")
        _check(((ro.prompts_per_step + off.replay) * ro.group_size) % self.optim.minibatches == 0,
               f"optim.minibatches={self.optim.minibatches} does not divide the batch of (prompts_per_step + "
               f"offpolicy.replay) x group_size = {(ro.prompts_per_step + off.replay) * ro.group_size}; choose a divisor")
        for message in self._departures():
            import warnings

            warnings.warn(message, stacklevel=3)

    def _departures(self) -> list[str]:
        """One line for each setting that runs but departs from what its name promises (the paper's
        settings, something to correct), so that it is never silent."""
        off, lc = self.offpolicy, self.loss
        out = []
        if off.corrects and not off.mismatched:
            out.append(f"offpolicy.correction is {off.correction} but staleness, replay, sampler_noise and "
                       "sampler_dtype leave the behaviour policy equal to the learner: the correction has "
                       "(almost) nothing to correct")
        if lc.level == "sequence" and max(lc.clip_low, lc.clip_high or lc.clip_low) > 0.01:
            out.append(f"loss.level is sequence (GSPO) with clip ranges {lc.clip_low:g}/{lc.clip_high or lc.clip_low:g}, "
                       "a token-level range: GSPO's length-normalised ratio moves far less, and the paper clips it "
                       "at 3e-4/4e-4 (set loss.clip_low: 3.0e-4, loss.clip_high: 4.0e-4)")
        if lc.objective == "cispo" and lc.aggregation != "token_mean":
            out.append(f"loss.objective is cispo with loss.aggregation {lc.aggregation}; CISPO (MiniMax-M1 Eq. 4) "
                       "normalises by the batch's tokens, loss.aggregation: token_mean")
        return out

    def resolved(self) -> "Config":
        """This config as it runs on this machine: `train.precision: auto` made the concrete precision."""
        precision = resolve_precision(self.train.precision, self.train.device)
        if precision == self.train.precision:
            return self
        return dataclasses.replace(self, train=dataclasses.replace(self.train, precision=precision))

    @property
    def run_name(self) -> str:
        return self.tracking.run_name or f"{self.name}-{self.method}-s{self.seed}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def flatten(self) -> dict[str, Any]:
        return flatten(self.to_dict())

    def config_hash(self) -> str:
        """Identifies the run: every field that changes what it computes (`conventions.NOT_RESULT_KEYS`
        are left out)."""
        d = _identity(self)
        d["train"]["precision"] = resolve_precision(self.train.precision, self.train.device)
        d["loss"]["kl_estimator"] = self.loss.kl_kind  # hashed as it runs: None in the loss was k3 before
        applied = [name for name, applies in FIXES if applies(self)]
        if applied:
            d["fixes"] = applied
        for key in NOT_RESULT_KEYS:
            section, leaf = key.split(".", 1)
            if leaf == "*":
                d[section] = {}
            elif key in HASHED_AS:
                d[section][leaf] = HASHED_AS[key]
            else:
                d[section].pop(leaf, None)
        return _hash(d)

    def sft_hash(self) -> str:
        """Identifies the warm start by what it reads: the task's training examples (and, for the tiny
        model, the character tokenizer's alphabet), the model and the SFT settings (`is_sft_key`), nothing
        of the RL run. With `model.path` the keys only the tiny model reads (`TINY_MODEL_ONLY`) are
        hashed at their defaults, so that they change nothing there either."""
        config = self
        if self.model.path is not None:
            tiny = {s: {k.split(".")[1]: _default(getattr(self, s), k.split(".")[1])
                        for k in TINY_MODEL_ONLY if k.startswith(s + ".")} for s in ("task", "model")}
            config = dataclasses.replace(self, task=dataclasses.replace(self.task, **tiny["task"]),
                                         model=dataclasses.replace(self.model, **tiny["model"]))
        d = _identity(config)
        return _hash({section: {k: v for k, v in d[section].items() if is_sft_key(f"{section}.{k}")}
                      for section in SFT_SECTIONS})


SFT_SECTIONS = ("task", "model", "sft")  # the sections the warm start reads
# Read by the warm start only when it builds the tiny model: its shape, and the answer extractor, which
# reaches the warm start only through the alphabet of the character tokenizer (the reference answers'
# characters are in it); with `model.path` the folder gives the shape and the tokenizer.
TINY_MODEL_ONLY = ("model.hidden_size", "model.num_layers", "model.num_heads", "model.num_kv_heads",
                   "model.intermediate_size", "model.max_length", "task.extractor", "task.pattern")


def is_sft_key(key: str) -> bool:
    """Whether the dotted config key `key` is part of the warm start's hash (`Config.sft_hash`)."""
    return (key.split(".", 1)[0] in SFT_SECTIONS and is_result_key(key)
            and is_result_key(key, RUN_ONLY_KEYS))


def _default(section, name: str) -> Any:
    f = section.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _identity(config) -> dict:
    """`config` as a nested dict without the fields added after the first version that hold their
    default (see `added`): what the hashes are taken over."""
    def walk(obj) -> dict:
        out = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if f.metadata.get("added") and value == default:
                continue
            out[f.name] = walk(value) if is_dataclass(value) else value
        return out

    return json.loads(json.dumps(walk(config), default=str))


def _hash(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


