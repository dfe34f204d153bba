"""Experiment configuration: frozen dataclasses, YAML loading, `--set` overrides, validation.

A config is a tree of frozen dataclasses; each field carries its help text (`knob`). Every
section validates itself in `__post_init__` and raises `ConfigError` with one line that says what
is wrong and how to fix it. Derived values are properties. `flatten()` gives the dotted keys
logged to MLflow; `config_hash()` identifies a run, `sft_hash()` identifies its warm start. What
a method reads is checked against its recipe (`grpo_lab.methods.check_config`).
"""

from dataclasses import replace

from grpo_lab.config.fields import ConfigError, knob
from grpo_lab.config.loading import from_dict, load_config, merge, parse_overrides, with_overrides
from grpo_lab.config.reward import IterativeConfig, ReferenceConfig, RewardConfig, RewardModelConfig
from grpo_lab.config.root import Config, flatten
from grpo_lab.config.sections import (
    OFFPOLICY_CORRECTIONS, AdvantageConfig, CriticConfig, DPOConfig, LossConfig, ModelConfig,
    OffPolicyConfig, OptimConfig, RolloutConfig, SFTConfig, TaskConfig, TrackingConfig, TrainConfig,
)

__all__ = ["OFFPOLICY_CORRECTIONS", "AdvantageConfig", "Config", "ConfigError", "CriticConfig", "DPOConfig", "IterativeConfig", "LossConfig",
           "ModelConfig", "ReferenceConfig", "RewardConfig", "RewardModelConfig",
           "OffPolicyConfig", "OptimConfig", "RolloutConfig", "SFTConfig", "TaskConfig", "TrackingConfig",
           "TrainConfig", "flatten", "from_dict", "knob", "load_config", "merge", "parse_overrides", "replace",
           "with_overrides"]
