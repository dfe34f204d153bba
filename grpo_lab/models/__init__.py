"""Policies: a tiny Qwen2 decoder built from a config, a character tokenizer, local HF checkpoints.

The names below load on first use, so a module that needs only `positions` or `fast_qwen2` does
not import transformers' model classes.
"""

_LAZY = {"char_tokenizer": "grpo_lab.models.tokenizer", "build_policy": "grpo_lab.models.policy",
         "load_pretrained": "grpo_lab.models.policy", "tiny_qwen2": "grpo_lab.models.policy",
         "ModelError": "grpo_lab.models.policy", "chat_renderer": "grpo_lab.models.policy",
         "load_tokenizer": "grpo_lab.models.policy"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'grpo_lab.models' has no attribute {name!r}")
