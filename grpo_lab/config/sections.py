"""The config sections: one frozen dataclass each, validated in `__post_init__`; each field's
help text is its metadata (`knob`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from grpo_lab.conventions import default_tracking_uri, workspace
from grpo_lab.config.fields import _check, _choice, _component, _positive, knob
from grpo_lab.core.choices import AGGREGATION_MODES, CAP_MODES, CLIP_AGAINST, CORRECTION_PRESETS, KL_KINDS, WEIGHT_LEVELS
from grpo_lab.config.task import DATA_KEYS, DATA_TASKS, TaskConfig  # noqa: F401 (the task section lives there)
from grpo_lab.config.precision import PRECISIONS


@dataclass(frozen=True)
class AdapterConfig:
    type: str = knob("none", "none | lora: train low-rank adapters on the frozen policy (peft; the base with its "
                             "adapters off is the reference)")
    r: int = knob(8, "LoRA rank")
    alpha: float = knob(16.0, "LoRA alpha: the adapter's output is scaled by alpha / r")
    dropout: float = knob(0.0, "dropout on the adapter's input")
    target_modules: Optional[list] = knob(None, "module names to adapt; None = the attention and MLP projections")

    def __post_init__(self):
        _choice("model.adapter.type", self.type, ("none", "lora"))
        _positive("model.adapter.r", self.r)
        _positive("model.adapter.alpha", self.alpha)
        _check(0 <= self.dropout < 1, f"model.adapter.dropout is {self.dropout}; it must be in [0, 1)")


@dataclass(frozen=True)
class ModelConfig:
    path: Optional[str] = knob(None,
                               "a local Hugging Face causal LM folder; None builds a tiny Qwen2 from the "
                               "fields below")
    hidden_size: int = knob(128, "width of the tiny model")
    num_layers: int = knob(2, "decoder layers")
    num_heads: int = knob(4, "attention heads")
    num_kv_heads: Optional[int] = knob(None, "key/value heads (grouped-query attention); None = num_heads")
    intermediate_size: int = knob(512, "MLP width")
    max_length: int = knob(64, "positions (prompt + completion)")
    dtype: str = knob("float32", "float32 | bfloat16")
    trust_remote_code: bool = knob(False,
                                   "run the Python code a model.path folder ships (config.json auto_map); "
                                   "only for folders you trust")
    adapter: AdapterConfig = field(default_factory=AdapterConfig, metadata={
        "help": "adapters on the policy (type, r, alpha, dropout, target_modules)", "added": True})
    activation_checkpointing: bool = knob(False, "recompute each layer's activations in the backward instead of "
                                                 "keeping them: less memory, more time", added=True)

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
    steps: int = knob(1500, "supervised warm-start updates; 0 skips the warm start")
    lr: float = knob(3e-3, "AdamW learning rate")
    batch_size: int = knob(64, "examples per update")
    warmup_steps: int = knob(50, "linear warm-up, then constant")
    weight_decay: float = knob(0.0, "AdamW weight decay of the warm start")
    grad_clip: float = knob(1.0, "max gradient norm of the warm start; 0 disables")
    seed: int = knob(0, "the warm start's own seed: every RL seed of a grid shares one checkpoint")
    cache_dir: Optional[str] = knob(None, "warm starts are cached here by the hash of their config; None = "
                                          "<workspace>/cache/sft")

    def __post_init__(self):
        _positive("sft.steps", self.steps, zero_ok=True)
        _positive("sft.lr", self.lr)
        _positive("sft.batch_size", self.batch_size)
        _positive("sft.warmup_steps", self.warmup_steps, zero_ok=True)

    @property
    def resolved_cache_dir(self) -> str:
        return self.cache_dir or str(workspace() / "cache" / "sft")


@dataclass(frozen=True)
class RolloutConfig:
    prompts_per_step: int = knob(32, "P: prompts sampled per RL step")
    group_size: int = knob(8, "G: completions per prompt")
    max_new_tokens: int = knob(16, "completion length cap (EOS included)")
    temperature: float = knob(1.0, "sampling temperature; the policy-gradient ratio, KL and entropy are of the "
                                   "tempered distribution, the SFT, RFT and DPO losses of the model's own (T = 1)")
    top_p: float = knob(1.0, "nucleus sampling; pi_old, the learner's log-probs, the KL and the entropy are then "
                             "those of the truncated distribution (the SFT, RFT and DPO losses never truncate)")
    dynamic_sampling: bool = knob(False, "drop groups whose rewards all agree and sample more prompts to refill (DAPO)")
    max_sampling_rounds: int = knob(3, "dynamic sampling: most sampling rounds per step, the first included")
    mask_truncated: bool = knob(False,
                                "no loss on completions that hit max_new_tokens without EOS (DAPO overlong "
                                "filtering)")
    overlong_buffer: int = knob(0, "L_cache of DAPO's soft overlong punishment (Eq. 13); 0 disables it")
    overlong_penalty: float = knob(1.0, "weight of the soft overlong punishment added to the reward")

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
    estimator: str = knob("group", "group (GRPO outcome) | rloo | process (GRPO process supervision) | reinforce_pp "
                                   "(REINFORCE++) | gae (PPO) | an import path; the method says which it takes")
    scale: str = knob("group", "group: divide by the group's std | batch: by the batch's std | none (Dr. GRPO)")
    eps: float = knob(1e-6, "added to the std the advantages are divided by")

    def __post_init__(self):
        _component("advantage.estimator", self.estimator)
        _choice("advantage.scale", self.scale, ("group", "batch", "none"))


@dataclass(frozen=True)
class LossConfig:
    clip_low: float = knob(0.2, "PPO clip range below 1")
    clip_high: Optional[float] = knob(None, "clip range above 1 (Clip-Higher); None = clip_low")
    dual_clip: Optional[float] = knob(None, "c > 1 bounds the loss of negative-advantage tokens by -c*A")
    level: str = knob("token", "token | sequence (GSPO ratio)")
    aggregation: str = knob("seq_mean_token_mean",
                            "token_mean | seq_mean_token_mean | seq_mean_token_sum | "
                            "seq_mean_token_sum_norm")
    norm: Optional[float] = knob(None, "seq_mean_token_sum_norm's constant; None = rollout.max_new_tokens")
    kl_beta: float = knob(0.0, "weight of KL to the reference; 0 loads no reference model")
    kl_estimator: Optional[str] = knob(None, "k1 | k2 | k3; None follows the placement: k3 in the loss (its "
                                             "gradient is that of KL(ref||pi), DeepSeekMath), k1 in the reward "
                                             "(the score-function gradient of KL(pi||ref), InstructGPT)")
    kl_placement: str = knob("loss",
                             "loss: beta * KL per token in the loss | reward: beta * summed KL subtracted "
                             "from the reward")
    entropy_coef: float = knob(0.0, "entropy bonus weight")
    objective: str = knob("clipped",
                          "policy loss: clipped (PPO/GRPO surrogate) | cispo (clipped IS weight, "
                          "stop-gradient)", added=True)
    rft_normalise: str = knob("all", "online RFT's loss over all: every sampled row (DeepSeekMath Eq. 10, the "
                                     "wrong ones with coefficient 0) | kept: the correct rows alone, a step that "
                                     "grows as 1/accuracy", added=True)

    def __post_init__(self):
        _positive("loss.clip_low", self.clip_low)
        if self.clip_high is not None:
            _positive("loss.clip_high", self.clip_high)
        _check(self.dual_clip is None or self.dual_clip > 1,
               f"loss.dual_clip is {self.dual_clip}; it must be > 1 (e.g. 3.0) or null")
        _choice("loss.level", self.level, ("token", "sequence"))
        _choice("loss.aggregation", self.aggregation, AGGREGATION_MODES)
        _positive("loss.kl_beta", self.kl_beta, zero_ok=True)
        if self.kl_estimator is not None:
            _choice("loss.kl_estimator", self.kl_estimator, KL_KINDS)
        _choice("loss.kl_placement", self.kl_placement, ("loss", "reward"))
        _check(self.kl_placement == "loss" or self.kl_kind == "k1",
               f"loss.kl_estimator {self.kl_kind} in the reward has almost no gradient: a penalty in the reward is "
               "detached, so its gradient is E[-beta k grad log pi], which for k2 and k3 nearly cancels near the "
               "reference; use loss.kl_estimator: k1 (the default in the reward), or loss.kl_placement: loss")
        _check(self.kl_placement == "reward" or self.kl_kind != "k1",
               "loss.kl_estimator k1 in the loss has an expected gradient of exactly 0 (E_pi[grad log pi] = 0), so "
               "it adds only noise; use k3 (the gradient of KL(ref||pi), the default) or k2 (of KL(pi||ref)) in the "
               "loss, or put k1 in the reward (loss.kl_placement: reward)")
        _check(self.kl_placement == "loss" or self.kl_beta > 0,
               "loss.kl_placement is reward but loss.kl_beta is 0, so there is no KL to place; set loss.kl_beta > 0")
        _check(self.level == "token" or self.aggregation == "seq_mean_token_mean",
               f"loss.level is sequence (GSPO) but loss.aggregation is {self.aggregation}; GSPO weighs each sequence "
               "equally, use loss.aggregation: seq_mean_token_mean")
        _positive("loss.entropy_coef", self.entropy_coef, zero_ok=True)
        _component("loss.objective", self.objective)
        _choice("loss.rft_normalise", self.rft_normalise, ("all", "kept"))

    @property
    def kl_kind(self) -> str:
        """The KL estimator the run uses: `kl_estimator`, or by default the one whose gradient is a KL's
        at its placement: k3 in the loss, k1 in the reward."""
        return self.kl_estimator or ("k1" if self.kl_placement == "reward" else "k3")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = knob(3e-4, "policy learning rate (Adam)")
    beta1: float = knob(0.9, "Adam beta1")
    beta2: float = knob(0.999, "Adam beta2")
    weight_decay: float = knob(0.0, "AdamW weight decay")
    grad_clip: float = knob(1.0, "max gradient norm; 0 disables")
    warmup_steps: int = knob(0, "linear warm-up in optimizer updates")
    epochs: int = knob(1, "mu: passes over each rollout batch")
    minibatches: int = knob(1, "optimizer updates per pass")
    micro_batch_size: int = knob(0, "sequences per forward/backward, gradients accumulated; 0: the whole minibatch")
    fused: bool = knob(True, "AdamW's fused kernel where torch has one for the device (the same update, other "
                             "float rounding)", added=True)

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


OFFPOLICY_CORRECTIONS = tuple(CORRECTION_PRESETS)  # offpolicy.correction: the presets of core.corrections


@dataclass(frozen=True)
class OffPolicyConfig:
    staleness: int = knob(0, "s: rollouts come from the policy of s RL steps ago (simulated asynchronous rollout)")
    replay: int = knob(0, "replayed groups from the buffer mixed into each step's batch")
    eta: int = knob(4, "staleness bound: samples more than eta policy versions old are dropped")
    correction: str = knob("none", "none | tis | mask | sequence_tis | sequence_mask | decoupled (AReaL)")
    cap: float = knob(2.0, "C: importance weights above it are truncated (tis) or dropped (mask)")
    sampler_noise: float = knob(0.0, "std of Gaussian noise added to the sampler's logits (sampler/trainer mismatch)")
    sampler_dtype: str = knob("float32", "float32 | bfloat16: the sampler's copy of the weights")
    clip_against: Optional[str] = knob(None,
                                       "behaviour | proximal: the ratio the surrogate clips; None = the "
                                       "correction's", added=True)
    weight_level: Optional[str] = knob(None,
                                       "none | token | sequence: importance weight pi_prox/pi_behav; None "
                                       "= the correction's", added=True)
    cap_mode: Optional[str] = knob(None,
                                   "truncate | mask | none: weights above cap; None = the correction's", added=True)
    cap_low: Optional[float] = knob(None, "under cap_mode mask, weights below it are dropped too; None = 1 / cap "
                                          "(IcePop's two-sided mask), 0 = keep every weight below the cap",
                                    added=True)

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
        _check(self.cap_low is None or 0 <= self.cap_low < 1,
               f"offpolicy.cap_low is {self.cap_low}; it must be in [0, 1) (e.g. 0.5), or null for 1 / cap")
        _check(self.staleness <= self.eta,
               f"offpolicy.staleness={self.staleness} exceeds offpolicy.eta={self.eta}, so every fresh sample "
               "would be dropped as too old; raise offpolicy.eta")

    @property
    def axes(self) -> tuple[str, str, str]:
        """(clip_against, weight_level, cap_mode): the correction preset, with any axis set explicitly replacing its."""
        preset = dict(zip(("clip_against", "weight_level", "cap_mode"), CORRECTION_PRESETS[self.correction]))
        return tuple(getattr(self, k) or v for k, v in preset.items())

    @property
    def resolved_cap_low(self) -> float:
        """The lower bound of the kept weights under cap_mode mask: `cap_low`, or 1 / cap."""
        return 1.0 / self.cap if self.cap_low is None else self.cap_low

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
    steps: int = knob(200, "RL steps (one rollout batch each)")
    eval_every: int = knob(50, "evaluate every this many steps (and before the first and after the last)")
    eval_prompts: int = knob(256, "held-out prompts per evaluation")
    eval_samples: int = knob(8, "k: samples per prompt for pass@k / maj@k")
    eval_temperature: float = knob(1.0, "temperature of the sampled evaluation")
    checkpoint_every: int = knob(0, "save a resumable checkpoint every this many steps; 0 = only at the end")
    out_dir: Optional[str] = knob(None, "checkpoints and config copies go under out_dir/<run name>; None = "
                                        "<workspace>/runs")
    device: str = knob("auto", "auto | cpu | cuda")
    threads: int = knob(0, "torch CPU threads of this process; 0 = its share of the cores (cores // grpo-lab "
                              "processes computing, looked at again every 5 s); a number fixes it")
    strategy: str = knob("auto",
                         "Lightning strategy: auto | ddp | ddp_spawn | fsdp | ... (each process takes a "
                         "slice of a step's prompts)")
    devices: int = knob(1, "devices (processes) per node")
    num_nodes: int = knob(1, "machines; world size = devices x num_nodes")
    precision: str = knob("auto", "auto | 32-true | bf16-mixed | bf16-true | 16-mixed: auto is bf16-mixed where the "
                                  "hardware has bf16 (CPU: AVX-512 BF16 or AMX; GPU: bf16), else 32-true")
    eval_table: int = knob(8, "rows of the completions table (prompt, completion, rewards, answer, correct) logged "
                              "to MLflow at each evaluation; 0 logs none", added=True)

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
        _choice("train.precision", self.precision, PRECISIONS)
        _positive("train.eval_table", self.eval_table, zero_ok=True)

    @property
    def resolved_out_dir(self) -> str:
        return self.out_dir or str(workspace() / "runs")

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes


@dataclass(frozen=True)
class CriticConfig:
    gamma: float = knob(1.0, "GAE discount")
    lam: float = knob(0.95, "GAE lambda")
    lr: float = knob(1e-4, "the critic's own AdamW learning rate")
    value_clip: float = knob(0.2, "clip of the value loss around the old values")
    whiten: bool = knob(True, "standardise GAE advantages over the batch's tokens")
    warmup: int = knob(0, "first RL steps that train the critic alone (the policy waits)")

    def __post_init__(self):
        _check(0 < self.gamma <= 1, f"critic.gamma is {self.gamma}; it must be in (0, 1]")
        _check(0 <= self.lam <= 1, f"critic.lam is {self.lam}; it must be in [0, 1]")
        _positive("critic.lr", self.lr)
        _positive("critic.value_clip", self.value_clip, zero_ok=True)
        _positive("critic.warmup", self.warmup, zero_ok=True)


@dataclass(frozen=True)
class DPOConfig:
    beta: float = knob(0.1, "DPO temperature on the log-ratios")
    label_smoothing: float = knob(0.0, "conservative DPO: preference labels flipped with this probability")
    refresh_every: int = knob(0, "N > 0 rebuilds the pairs from the current policy every N steps (iterative DPO)")

    def __post_init__(self):
        _positive("dpo.beta", self.beta)
        _check(0 <= self.label_smoothing < 0.5, f"dpo.label_smoothing is {self.label_smoothing}; it must be in [0, 0.5)")
        _positive("dpo.refresh_every", self.refresh_every, zero_ok=True)


@dataclass(frozen=True)
class TrackingConfig:
    uri: Optional[str] = knob(None, "MLflow tracking URI; None = $MLFLOW_TRACKING_URI or the workspace's "
                                    "sqlite:///<workspace>/mlflow.db")
    experiment: str = knob("grpo_lab", "MLflow experiment name")
    run_name: Optional[str] = knob(None, "None = <name>-<method>-s<seed>")

    @property
    def resolved_uri(self) -> str:
        return self.uri or default_tracking_uri()


