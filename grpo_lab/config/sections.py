"""The config sections: one frozen dataclass each, validated in `__post_init__`; each field's
help text is its metadata (`knob`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from grpo_lab.config.fields import (
    ADVANTAGE_ESTIMATORS, AGGREGATIONS, POLICY_OBJECTIVES, _check, _choice, _choice_or_path, _positive, knob,
)


DATA_TASKS = ("gsm8k", "dataset")  # the tasks that read local data
DATA_KEYS = ("columns", "template", "train_split", "eval_split", "subset", "extractor", "pattern", "compare",
             "tolerance", "chat", "system_prompt", "ascii")  # task keys only the data tasks read


@dataclass(frozen=True)
class TaskConfig:
    name: str = knob("chain", "task: chain | addition | gsm8k | dataset | a task of your own by import path "
                              "(my_pkg.tasks:MyTask)")
    data_seed: int = knob(0, "fixes the train/eval split and prompts; shared by every run seed")
    digits: int = knob(1, "digits per number (chain, addition)")
    min_terms: int = knob(3, "chain: fewest terms")
    max_terms: int = knob(5, "chain: most terms")
    train_size: int = knob(20000, "training prompts generated (gsm8k, dataset: at most this many rows, a seeded subset)")
    eval_size: int = knob(512, "held-out prompts generated (gsm8k, dataset: at most this many rows)")
    path: Optional[str] = knob(None, "gsm8k, dataset: a local jsonl/json/csv/parquet file, a save_to_disk folder, a "
                                     "folder of split files, or a dataset name in the local Hugging Face cache")
    columns: Optional[dict] = knob(None, "dataset: {prompt: column, answer: column, target: column, <alias>: column}; "
                                         "None = columns prompt and answer (gsm8k: question and answer)", added=True)
    template: Optional[str] = knob(None, "gsm8k, dataset: the prompt as a format string over the columns, e.g. "
                                         "'Q: {question}\\nA:'; None = the prompt column (gsm8k: "
                                         "'Question: {question}\\nAnswer:')", added=True)
    train_split: str = knob("train", "gsm8k, dataset: the split (file stem) of the training rows", added=True)
    eval_split: str = knob("test", "gsm8k, dataset: the split of the held-out rows; with one split only, "
                                   "task.eval_size rows are held out by task.data_seed", added=True)
    subset: Optional[str] = knob(None, "gsm8k, dataset: the dataset's config (sub-folder); None = default "
                                       "(gsm8k: main)", added=True)
    extractor: Optional[str] = knob(None, "gsm8k, dataset: the answer extractor: auto | hash (####) | boxed | "
                                          "answer_is | last_number | regex | text | gsm8k | an import path; "
                                          "None = auto (gsm8k: gsm8k)", added=True)
    pattern: Optional[str] = knob(None, "extractor regex: the answer is the last match (its first group)", added=True)
    compare: str = knob("exact", "gsm8k, dataset: exact | numeric (|a - b| <= tolerance * max(1, |b|))", added=True)
    tolerance: float = knob(1e-6, "numeric comparison's relative tolerance", added=True)
    chat: bool = knob(False, "gsm8k, dataset: prompts through the chat template of model.path's tokenizer",
                      added=True)
    system_prompt: Optional[str] = knob(None, "chat: the system message before each prompt", added=True)
    ascii: Optional[bool] = knob(None, "gsm8k, dataset: map text onto ASCII; None = only gsm8k with the character "
                                       "tokenizer (no model.path)", added=True)
    kwargs: Optional[dict] = knob(None, "keyword options of a task of your own (or options of a built-in task the "
                                        "keys above do not cover)", added=True)
    rewards: Optional[list] = knob(None, "reward functions summed with weights: [{fn: correct, weight: 1.0}, "
                                         "{fn: my_pkg.rewards:format_ok, weight: 0.5}, ...], fn a built-in (correct, "
                                         "format, length_penalty) or an import path; None = the task's verifier",
                                   added=True)

    def __post_init__(self):
        _positive("task.digits", self.digits)
        _check(2 <= self.min_terms <= self.max_terms,
               f"task.min_terms={self.min_terms}, task.max_terms={self.max_terms}; need 2 <= min_terms <= max_terms")
        _positive("task.train_size", self.train_size)
        _positive("task.eval_size", self.eval_size)
        _check(self.name != "gsm8k" or self.path is not None,
               "task.name is gsm8k but task.path is not set; set task.path to a local GSM8K jsonl/parquet file")
        _check(self.name != "dataset" or self.path is not None,
               "task.name is dataset but task.path is not set; set task.path to a local jsonl/json/csv/parquet "
               "file, a save_to_disk folder or a cached dataset name")
        if self.name not in DATA_TASKS:
            defaults = TaskConfig.__dataclass_fields__
            for key in DATA_KEYS:
                _check(getattr(self, key) == defaults[key].default,
                       f"task.{key} is set but task {self.name} reads no data; it applies to the gsm8k and dataset "
                       "tasks" + (", a task of your own takes options from task.kwargs" if ":" in self.name else ""))
        _choice("task.compare", self.compare, ("exact", "numeric"))
        _positive("task.tolerance", self.tolerance, zero_ok=True)
        _check(self.pattern is None or self.extractor == "regex",
               f"task.pattern is set but task.extractor is {self.extractor!r}; set task.extractor: regex to use it")
        _check(self.system_prompt is None or self.chat,
               "task.system_prompt is set but task.chat is false; the system prompt goes through the chat template, "
               "set task.chat: true")
        for key in ("columns", "kwargs"):
            value = getattr(self, key)
            _check(value is None or isinstance(value, dict), f"task.{key} must be a mapping, got {value!r}")
        _check(self.rewards is None or (isinstance(self.rewards, list) and self.rewards),
               f"task.rewards must be a list of {{fn: ..., weight: ...}} items, got {self.rewards!r}")

    def options(self) -> dict:
        """The keyword options `grpo_lab.tasks.build_task` takes for this task (those a run adds from
        the model, the chat template and the ASCII mapping, aside)."""
        if self.name == "chain":
            out = dict(digits=self.digits, min_terms=self.min_terms, max_terms=self.max_terms,
                       train_size=self.train_size, eval_size=self.eval_size)
        elif self.name == "addition":
            out = dict(digits=self.digits, train_size=self.train_size, eval_size=self.eval_size)
        elif self.name in DATA_TASKS:
            out = dict(path=self.path, train_size=self.train_size, eval_size=self.eval_size)
            defaults = TaskConfig.__dataclass_fields__
            out.update({key: getattr(self, key) for key in DATA_KEYS
                        if key not in ("chat", "ascii") and getattr(self, key) != defaults[key].default})
        else:  # a task of one's own: its options are task.kwargs
            out = {}
        return {**out, **(self.kwargs or {})}


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
    cache_dir: str = knob(".grpo_lab/sft", "warm starts are cached here by the hash of their config")

    def __post_init__(self):
        _positive("sft.steps", self.steps, zero_ok=True)
        _positive("sft.lr", self.lr)
        _positive("sft.batch_size", self.batch_size)
        _positive("sft.warmup_steps", self.warmup_steps, zero_ok=True)


@dataclass(frozen=True)
class RolloutConfig:
    prompts_per_step: int = knob(32, "P: prompts sampled per RL step")
    group_size: int = knob(8, "G: completions per prompt")
    max_new_tokens: int = knob(16, "completion length cap (EOS included)")
    temperature: float = knob(1.0, "sampling temperature; log-probs are of the tempered distribution")
    top_p: float = knob(1.0, "nucleus sampling")
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
        _choice_or_path("advantage.estimator", self.estimator, ADVANTAGE_ESTIMATORS)
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
    kl_estimator: str = knob("k3", "k1 | k2 | k3")
    kl_placement: str = knob("loss",
                             "loss: beta * KL per token in the loss | reward: beta * summed KL subtracted "
                             "from the reward")
    entropy_coef: float = knob(0.0, "entropy bonus weight")
    objective: str = knob("clipped",
                          "policy loss: clipped (PPO/GRPO surrogate) | cispo (clipped IS weight, "
                          "stop-gradient)", added=True)

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
        _choice_or_path("loss.objective", self.objective, POLICY_OBJECTIVES)


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
CLIP_AGAINST, WEIGHT_LEVELS = ("behaviour", "proximal"), ("none", "token", "sequence")
CAP_MODES = ("truncate", "mask", "none")


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
    steps: int = knob(200, "RL steps (one rollout batch each)")
    eval_every: int = knob(50, "evaluate every this many steps (and before the first and after the last)")
    eval_prompts: int = knob(256, "held-out prompts per evaluation")
    eval_samples: int = knob(8, "k: samples per prompt for pass@k / maj@k")
    eval_temperature: float = knob(1.0, "temperature of the sampled evaluation")
    checkpoint_every: int = knob(0, "save a resumable checkpoint every this many steps; 0 = only at the end")
    out_dir: str = knob("runs", "checkpoints and config copies go under out_dir/<run name>")
    device: str = knob("auto", "auto | cpu | cuda")
    threads: int = knob(0, "torch CPU threads; 0 keeps torch's default")
    strategy: str = knob("auto",
                         "Lightning strategy: auto | ddp | ddp_spawn | fsdp | ... (each process takes a "
                         "slice of a step's prompts)")
    devices: int = knob(1, "devices (processes) per node")
    num_nodes: int = knob(1, "machines; world size = devices x num_nodes")
    precision: str = knob("32-true", "Lightning precision: 32-true | bf16-mixed | bf16-true | 16-mixed")
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
        _choice("train.precision", self.precision, ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true"))
        _positive("train.eval_table", self.eval_table, zero_ok=True)

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
    uri: Optional[str] = knob(None, "MLflow tracking URI; None = $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    experiment: str = knob("grpo_lab", "MLflow experiment name")
    run_name: Optional[str] = knob(None, "None = <name>-<method>-s<seed>")

    @property
    def resolved_uri(self) -> str:
        return self.uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


