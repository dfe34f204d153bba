"""Policies: a tiny Qwen2 decoder built from a config, a character tokenizer, local HF checkpoints."""

from grpo_lab.models.tokenizer import char_tokenizer
from grpo_lab.models.policy import (
    ModelError, build_policy, chat_renderer, load_pretrained, load_tokenizer, tiny_qwen2,
)

__all__ = ["char_tokenizer", "build_policy", "chat_renderer", "load_pretrained", "load_tokenizer", "tiny_qwen2",
           "ModelError"]
