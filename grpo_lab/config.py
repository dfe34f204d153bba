"""Experiment configuration: frozen dataclasses, YAML loading, `--set` overrides, validation.

A config is a tree of frozen dataclasses. Field comments are the help text. Every section
validates itself in `__post_init__` and raises `ConfigError` with one line that says what is wrong
and how to fix it. Derived values are properties. `flatten()` gives the dotted keys logged to
MLflow; `config_hash()` identifies a run, `sft_hash()` identifies its warm start.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Optional, get_args, get_origin, get_type_hints

import yaml

from grpo_lab.conventions import HASHED_AS, NOT_RESULT_KEYS, is_result_key

METHODS = ("sft", "rft", "online_rft", "dpo", "ppo", "grpo", "offpolicy_grpo")
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm")
POLICY_OBJECTIVES = ("clipped", "cispo")


def added(default: Any) -> Any:
    """A field added after the first version: left out of the config and SFT hashes while it holds its
    default, so the runs recorded before it existed keep their identity."""
    return field(default=default, metadata={"added": True})


class ConfigError(ValueError):
    """A config that cannot run; the message says what to change."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _choice(name: str, value: Any, choices: tuple) -> None:
    _check(value in choices, f"{name} is {value!r}; choose one of {', '.join(map(str, choices))}")


def _positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    ok = value >= 0 if zero_ok else value > 0
    _check(ok, f"{name} is {value}; it must be {'>= 0' if zero_ok else '> 0'}")


@dataclass(frozen=True)
class TaskConfig:
    name: str = "chain"  # task: chain | addition | gsm8k
    data_seed: int = 0  # fixes the train/eval split and prompts; shared by every run seed
    digits: int = 1  # digits per number (chain, addition)
    min_terms: int = 3  # chain: fewest terms
    max_terms: int = 5  # chain: most terms
    train_size: int = 20000  # training prompts generated
    eval_size: int = 512  # held-out prompts generated
    path: Optional[str] = None  # gsm8k: a local jsonl/parquet file, folder, or cached dataset name

    def __post_init__(self):
        _positive("task.digits", self.digits)
        _check(2 <= self.min_terms <= self.max_terms,
               f"task.min_terms={self.min_terms}, task.max_terms={self.max_terms}; need 2 <= min_terms <= max_terms")
        _positive("task.train_size", self.train_size)
        _positive("task.eval_size", self.eval_size)
        _check(self.name != "gsm8k" or self.path is not None,
               "task.name is gsm8k but task.path is not set; set task.path to a local GSM8K jsonl/parquet file")

    def options(self) -> dict:
        """The keyword options `grpo_lab.tasks.build_task` takes for this task."""
        if self.name == "chain":
            return dict(digits=self.digits, min_terms=self.min_terms, max_terms=self.max_terms,
                        train_size=self.train_size, eval_size=self.eval_size)
        if self.name == "addition":
            return dict(digits=self.digits, train_size=self.train_size, eval_size=self.eval_size)
        return dict(path=self.path, eval_size=self.eval_size)


@dataclass(frozen=True)
class ModelConfig:
    path: Optional[str] = None  # a local Hugging Face causal LM folder; None builds a tiny Qwen2 from the fields below
    hidden_size: int = 128  # width of the tiny model
    num_layers: int = 2  # decoder layers
    num_heads: int = 4  # attention heads
    num_kv_heads: Optional[int] = None  # key/value heads (grouped-query attention); None = num_heads
    intermediate_size: int = 512  # MLP width
    max_length: int = 64  # positions (prompt + completion)
    dtype: str = "float32"  # float32 | bfloat16
    trust_remote_code: bool = False  # run the Python code a model.path folder ships (config.json auto_map); only for folders you trust

    def __post_init__(self):
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_length"):
            _positive(f"model.{name}", getattr(self, name))
        _check(self.hidden_size % self.num_heads == 0,
               f"model.hidden_size={self.hidden_size} is not divisible by model.num_heads={self.num_heads}")
        kv = self.num_kv_heads or self.num_heads
        _check(self.num_heads % kv == 0, f"model.num_heads={self.num_heads} is not divisible by model.num_kv_heads={kv}")
        _choice("model.dtype", self.dtype, ("float32", "bfloat16"))
        _check(not self.trust_remote_code or self.path is not None,
               "model.trust_remote_code is set but model.path is not; it only applies to a model folder, remove it")


@dataclass(frozen=True)
class SFTConfig:
    steps: int = 1500  # supervised warm-start updates; 0 skips the warm start
    lr: float = 3e-3  # AdamW learning rate
    batch_size: int = 64  # examples per update
    warmup_steps: int = 50  # linear warm-up, then constant
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0  # the warm start's own seed: every RL seed of a grid shares one checkpoint
    cache_dir: str = ".grpo_lab/sft"  # warm starts are cached here by the hash of their config

    def __post_init__(self):
        _positive("sft.steps", self.steps, zero_ok=True)
        _positive("sft.lr", self.lr)
        _positive("sft.batch_size", self.batch_size)
        _positive("sft.warmup_steps", self.warmup_steps, zero_ok=True)


@dataclass(frozen=True)
class RolloutConfig:
    prompts_per_step: int = 32  # P: prompts sampled per RL step
    group_size: int = 8  # G: completions per prompt
    max_new_tokens: int = 16  # completion length cap (EOS included)
    temperature: float = 1.0  # sampling temperature; log-probs are of the tempered distribution
    top_p: float = 1.0  # nucleus sampling
    dynamic_sampling: bool = False  # drop groups whose rewards all agree and sample more prompts to refill (DAPO)
    max_sampling_rounds: int = 3  # dynamic sampling: most sampling rounds per step, the first included
    mask_truncated: bool = False  # no loss on completions that hit max_new_tokens without EOS (DAPO overlong filtering)
    overlong_buffer: int = 0  # L_cache of DAPO's soft overlong punishment (Eq. 13); 0 disables it
    overlong_penalty: float = 1.0  # weight of the soft overlong punishment added to the reward

    def __post_init__(self):
        _positive("rollout.prompts_per_step", self.prompts_per_step)
        _positive("rollout.group_size", self.group_size)
        _positive("rollout.max_new_tokens", self.max_new_tokens)
        _positive("rollout.temperature", self.temperature)
        _check(0 < self.top_p <= 1, f"rollout.top_p is {self.top_p}; it must be in (0, 1]")
        _positive("rollout.max_sampling_rounds", self.max_sampling_rounds)
        _positive("rollout.overlong_buffer", self.overlong_buffer, zero_ok=True)
        _check(self.overlong_buffer < self.max_new_tokens,
               f"rollout.overlong_buffer={self.overlong_buffer} must be below rollout.max_new_tokens="
               f"{self.max_new_tokens}; the punishment starts at max_new_tokens - overlong_buffer")
        _positive("rollout.overlong_penalty", self.overlong_penalty, zero_ok=True)

    @property
    def batch_size(self) -> int:
        return self.prompts_per_step * self.group_size


@dataclass(frozen=True)
class AdvantageConfig:
    estimator: str = "group"  # group (GRPO outcome) | rloo | process (GRPO process supervision) | gae (PPO)
    scale: str = "group"  # group: divide by the group's std | batch: by the batch's std | none (Dr. GRPO)
    eps: float = 1e-6

    def __post_init__(self):
        _choice("advantage.estimator", self.estimator, ("group", "rloo", "process", "gae"))
        _choice("advantage.scale", self.scale, ("group", "batch", "none"))


@dataclass(frozen=True)
class LossConfig:
    clip_low: float = 0.2  # PPO clip range below 1
    clip_high: Optional[float] = None  # clip range above 1 (Clip-Higher); None = clip_low
    dual_clip: Optional[float] = None  # c > 1 bounds the loss of negative-advantage tokens by -c*A
    level: str = "token"  # token | sequence (GSPO ratio)
    aggregation: str = "seq_mean_token_mean"  # token_mean | seq_mean_token_mean | seq_mean_token_sum | seq_mean_token_sum_norm
    norm: Optional[float] = None  # seq_mean_token_sum_norm's constant; None = rollout.max_new_tokens
    kl_beta: float = 0.0  # weight of KL to the reference; 0 loads no reference model
    kl_estimator: str = "k3"  # k1 | k2 | k3
    kl_placement: str = "loss"  # loss: beta * KL per token in the loss | reward: beta * summed KL subtracted from the reward
    entropy_coef: float = 0.0  # entropy bonus weight
    objective: str = added("clipped")  # policy loss: clipped (PPO/GRPO surrogate) | cispo (clipped IS weight, stop-gradient)

    def __post_init__(self):
        _positive("loss.clip_low", self.clip_low)
        if self.clip_high is not None:
            _positive("loss.clip_high", self.clip_high)
        _check(self.dual_clip is None or self.dual_clip > 1,
               f"loss.dual_clip is {self.dual_clip}; it must be > 1 (e.g. 3.0) or null")
        _choice("loss.level", self.level, ("token", "sequence"))
        _choice("loss.aggregation", self.aggregation, AGGREGATIONS)
        _positive("loss.kl_beta", self.kl_beta, zero_ok=True)
        _choice("loss.kl_estimator", self.kl_estimator, ("k1", "k2", "k3"))
        _choice("loss.kl_placement", self.kl_placement, ("loss", "reward"))
        _check(self.kl_placement == "loss" or self.kl_beta > 0,
               "loss.kl_placement is reward but loss.kl_beta is 0, so there is no KL to place; set loss.kl_beta > 0")
        _check(self.level == "token" or self.aggregation == "seq_mean_token_mean",
               f"loss.level is sequence (GSPO) but loss.aggregation is {self.aggregation}; GSPO weighs each sequence "
               "equally, use loss.aggregation: seq_mean_token_mean")
        _positive("loss.entropy_coef", self.entropy_coef, zero_ok=True)
        _choice("loss.objective", self.objective, POLICY_OBJECTIVES)
        _check(self.objective == "clipped" or (self.level == "token" and self.dual_clip is None),
               f"loss.objective is {self.objective}, which clips the importance weight of each token; loss.level: "
               "sequence and loss.dual_clip belong to the clipped surrogate, remove them")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-4  # policy learning rate (Adam)
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    warmup_steps: int = 0  # linear warm-up in optimizer updates
    epochs: int = 1  # mu: passes over each rollout batch
    minibatches: int = 1  # optimizer updates per pass
    micro_batch_size: int = 0  # sequences per forward/backward, gradients accumulated; 0: the whole minibatch

    def __post_init__(self):
        _positive("optim.lr", self.lr)
        _check(self.lr < 0.1, f"optim.lr is {self.lr}; learning rates above 0.1 diverge, use e.g. 3e-4")
        _positive("optim.grad_clip", self.grad_clip, zero_ok=True)
        _positive("optim.epochs", self.epochs)
        _positive("optim.minibatches", self.minibatches)
        _positive("optim.micro_batch_size", self.micro_batch_size, zero_ok=True)

    @property
    def updates_per_step(self) -> int:
        return self.epochs * self.minibatches


CORRECTION_PRESETS = {  # offpolicy.correction -> (clip_against, weight_level, cap_mode); core/corrections.py
    "none": ("behaviour", "none", "truncate"),
    "tis": ("proximal", "token", "truncate"),
    "mask": ("proximal", "token", "mask"),
    "sequence_tis": ("proximal", "sequence", "truncate"),
    "sequence_mask": ("proximal", "sequence", "mask"),
    "decoupled": ("proximal", "token", "none"),
}
OFFPOLICY_CORRECTIONS = tuple(CORRECTION_PRESETS)
CLIP_AGAINST, WEIGHT_LEVELS, CAP_MODES = ("behaviour", "proximal"), ("none", "token", "sequence"), ("truncate", "mask", "none")


@dataclass(frozen=True)
class OffPolicyConfig:
    staleness: int = 0  # s: rollouts come from the policy of s RL steps ago (simulated asynchronous rollout)
    replay: int = 0  # replayed groups from the buffer mixed into each step's batch
    eta: int = 4  # staleness bound: samples more than eta policy versions old are dropped
    correction: str = "none"  # none | tis | mask | sequence_tis | sequence_mask | decoupled (AReaL)
    cap: float = 2.0  # C: importance weights above it are truncated (tis) or dropped (mask)
    sampler_noise: float = 0.0  # std of Gaussian noise added to the sampler's logits (sampler/trainer mismatch)
    sampler_dtype: str = "float32"  # float32 | bfloat16: the sampler's copy of the weights
    clip_against: Optional[str] = added(None)  # behaviour | proximal: the ratio the surrogate clips; None = the correction's
    weight_level: Optional[str] = added(None)  # none | token | sequence: importance weight pi_prox/pi_behav; None = the correction's
    cap_mode: Optional[str] = added(None)  # truncate | mask | none: weights above cap; None = the correction's

    def __post_init__(self):
        _positive("offpolicy.staleness", self.staleness, zero_ok=True)
        _positive("offpolicy.replay", self.replay, zero_ok=True)
        _positive("offpolicy.eta", self.eta, zero_ok=True)
        _choice("offpolicy.correction", self.correction, OFFPOLICY_CORRECTIONS)
        _check(self.cap > 1, f"offpolicy.cap is {self.cap}; it must be > 1 (e.g. 2.0)")
        _positive("offpolicy.sampler_noise", self.sampler_noise, zero_ok=True)
        _choice("offpolicy.sampler_dtype", self.sampler_dtype, ("float32", "bfloat16"))
        for name, choices in (("clip_against", CLIP_AGAINST), ("weight_level", WEIGHT_LEVELS), ("cap_mode", CAP_MODES)):
            if getattr(self, name) is not None:
                _choice(f"offpolicy.{name}", getattr(self, name), choices)
        _check(self.staleness <= self.eta,
               f"offpolicy.staleness={self.staleness} exceeds offpolicy.eta={self.eta}, so every fresh sample "
               "would be dropped as too old; raise offpolicy.eta")

    @property
    def axes(self) -> tuple[str, str, str]:
        """(clip_against, weight_level, cap_mode): the correction preset, with any axis set explicitly replacing its."""
        preset = dict(zip(("clip_against", "weight_level", "cap_mode"), CORRECTION_PRESETS[self.correction]))
        return tuple(getattr(self, k) or v for k, v in preset.items())

    @property
    def corrects(self) -> bool:
        """Whether the surrogate is taken against pi_prox or weighted, which needs pi_prox recomputed."""
        clip_against, level, _ = self.axes
        return clip_against == "proximal" or level != "none"

    @property
    def mismatched(self) -> bool:
        """Whether the behaviour policy can differ from the learner at all."""
        return bool(self.staleness or self.replay or self.sampler_noise or self.sampler_dtype != "float32")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 200  # RL steps (one rollout batch each)
    eval_every: int = 50  # evaluate every this many steps (and before the first and after the last)
    eval_prompts: int = 256  # held-out prompts per evaluation
    eval_samples: int = 8  # k: samples per prompt for pass@k / maj@k
    eval_temperature: float = 1.0  # temperature of the sampled evaluation
    checkpoint_every: int = 0  # save a resumable checkpoint every this many steps; 0 = only at the end
    out_dir: str = "runs"  # checkpoints and config copies go under out_dir/<run name>
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    strategy: str = "auto"  # Lightning strategy: auto | ddp | ddp_spawn | fsdp | ... (each process takes a slice of a step's prompts)
    devices: int = 1  # devices (processes) per node
    num_nodes: int = 1  # machines; world size = devices x num_nodes
    precision: str = "32-true"  # Lightning precision: 32-true | bf16-mixed | bf16-true | 16-mixed

    def __post_init__(self):
        _positive("train.steps", self.steps)
        _positive("train.eval_every", self.eval_every)
        _positive("train.eval_prompts", self.eval_prompts)
        _positive("train.eval_samples", self.eval_samples)
        _positive("train.eval_temperature", self.eval_temperature)
        _positive("train.checkpoint_every", self.checkpoint_every, zero_ok=True)
        _choice("train.device", self.device, ("auto", "cpu", "cuda"))
        _positive("train.devices", self.devices)
        _positive("train.num_nodes", self.num_nodes)
        _choice("train.precision", self.precision, ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true"))

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes


@dataclass(frozen=True)
class CriticConfig:
    gamma: float = 1.0  # GAE discount
    lam: float = 0.95  # GAE lambda
    lr: float = 1e-4  # the critic's own AdamW learning rate
    value_clip: float = 0.2  # clip of the value loss around the old values
    whiten: bool = True  # standardise GAE advantages over the batch's tokens
    warmup: int = 0  # first RL steps that train the critic alone (the policy waits)

    def __post_init__(self):
        _check(0 < self.gamma <= 1, f"critic.gamma is {self.gamma}; it must be in (0, 1]")
        _check(0 <= self.lam <= 1, f"critic.lam is {self.lam}; it must be in [0, 1]")
        _positive("critic.lr", self.lr)
        _positive("critic.value_clip", self.value_clip, zero_ok=True)
        _positive("critic.warmup", self.warmup, zero_ok=True)


@dataclass(frozen=True)
class DPOConfig:
    beta: float = 0.1  # DPO temperature on the log-ratios
    label_smoothing: float = 0.0  # conservative DPO: preference labels flipped with this probability
    refresh_every: int = 0  # N > 0 rebuilds the pairs from the current policy every N steps (iterative DPO)

    def __post_init__(self):
        _positive("dpo.beta", self.beta)
        _check(0 <= self.label_smoothing < 0.5, f"dpo.label_smoothing is {self.label_smoothing}; it must be in [0, 0.5)")
        _positive("dpo.refresh_every", self.refresh_every, zero_ok=True)


@dataclass(frozen=True)
class TrackingConfig:
    uri: Optional[str] = None  # MLflow tracking URI; None = $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    experiment: str = "grpo_lab"  # MLflow experiment name
    run_name: Optional[str] = None  # None = <name>-<method>-s<seed>

    @property
    def resolved_uri(self) -> str:
        import os

        return self.uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


@dataclass(frozen=True)
class Config:
    name: str = "run"  # experiment name, used in run names and paths
    method: str = "grpo"  # sft | rft | online_rft | dpo | ppo | grpo | offpolicy_grpo
    seed: int = 0  # the RL run's seed (sampling, data order); the warm start has its own
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

    def __post_init__(self):
        _check(self.method in METHODS or ":" in self.method,
               f"method is {self.method!r}; choose one of {', '.join(METHODS)}, or name a recipe by import path "
               "(my_pkg.recipes:my_method)")
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
        _check(((ro.prompts_per_step + off.replay) * ro.group_size) % self.optim.minibatches == 0,
               f"optim.minibatches={self.optim.minibatches} does not divide the batch of (prompts_per_step + "
               f"offpolicy.replay) x group_size = {(ro.prompts_per_step + off.replay) * ro.group_size}; choose a divisor")
        if off.corrects and not off.mismatched:
            import warnings

            warnings.warn(f"offpolicy.correction is {off.correction} but staleness, replay, sampler_noise and "
                          "sampler_dtype leave the behaviour policy equal to the learner: the correction has "
                          "(almost) nothing to correct", stacklevel=3)

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
        """Identifies the warm start: the task, the model and the SFT settings, nothing of the RL run."""
        d = _identity(self)
        return _hash({section: {k: v for k, v in d[section].items() if is_result_key(f"{section}.{k}")}
                      for section in ("task", "model", "sft")})


def _identity(config) -> dict:
    """`config` as a nested dict without the fields added after the first version that hold their
    default (see `added`): what the hashes are taken over."""
    def walk(obj) -> dict:
        out = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("added") and value == f.default:
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


def _unknown_key(key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], [k.rsplit(".", 1)[-1] for k in known], n=1)
    hint = ""
    if close:
        prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
        hint = f"; did you mean '{prefix}{close[0]}'?"
    return ConfigError(f"unknown config key '{key}'{hint}")


def _coerce(name: str, value: Any, tp: Any) -> Any:
    origin = get_origin(tp)
    if origin is not None and type(None) in get_args(tp):  # Optional[X]
        if value is None:
            return None
        tp = next(a for a in get_args(tp) if a is not type(None))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool):
        if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{name} is {value!r}; it must be a{'n' if tp is int else ''} {tp.__name__}")
    return value


def _build(cls, data: dict, prefix: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(f"section '{prefix.rstrip('.') or 'config'}' must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(prefix + key, [prefix + n for n in names])
        tp = hints[key]
        if is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, prefix + key + ".")
        else:
            kwargs[key] = _coerce(prefix + key, value, tp)
    return cls(**kwargs)


def from_dict(data: dict) -> Config:
    return _build(Config, data or {})


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not key=value; write e.g. --set optim.lr=1e-4")
        key, raw = item.split("=", 1)
        out.append((key.strip(), yaml.safe_load(raw) if raw.strip() else None))
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None) -> Config:
    """Read a YAML config (or start from defaults), apply `key=value` overrides, validate."""
    data: dict = dict(base or {})
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist; pass the path of a YAML file (see experiments/)")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path} is not valid YAML{where}; fix the syntax") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of config sections, not a {type(loaded).__name__}")
        data = merge(data, loaded or {})
    for key, value in parse_overrides(overrides or []):
        _set_dotted(data, key, value)
    try:
        return from_dict(data)
    except TypeError as exc:  # e.g. a section given a scalar
        raise ConfigError(str(exc)) from None


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def with_overrides(config: Config, **dotted: Any) -> Config:
    """A copy of `config` with dotted keys replaced (`with_overrides(c, **{"optim.lr": 1e-4})`)."""
    data = config.to_dict()
    for key, value in dotted.items():
        _set_dotted(data, key, value)
    return from_dict(data)


__all__ = ["Config", "ConfigError", "load_config", "from_dict", "with_overrides", "flatten", "replace", "METHODS"]
