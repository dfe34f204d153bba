"""grpo_lab: RL fine-tuning of language models under one paradigm (DeepSeekMath §5.2).

``from grpo_lab import GRPO, run`` and the other method classes load on first use, so importing
the package (or its config) stays light.
"""

_LAZY = {
    "run": "grpo_lab.runs", "RunResult": "grpo_lab.runs",
    "Engine": "grpo_lab.engine", "SFT": "grpo_lab.engine", "RFT": "grpo_lab.engine", "OnlineRFT": "grpo_lab.engine",
    "DPO": "grpo_lab.engine", "PPO": "grpo_lab.engine", "GRPO": "grpo_lab.engine", "OffPolicyGRPO": "grpo_lab.engine",
    "RewardModeling": "grpo_lab.engine",
    "Config": "grpo_lab.config", "load_config": "grpo_lab.config",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'grpo_lab' has no attribute {name!r}")
