"""Adapters (LoRA, through peft) and activation checkpointing: the levers that fit a larger model.

With `model.adapter.type: lora` the policy's projections get low-rank adapters and only those
train; the frozen base with the adapter switched off is the reference model (no second copy in
memory). `model.activation_checkpointing` recomputes each layer's activations in the backward
instead of keeping them. Neither changes what a step computes beyond float rounding.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

from grpo_lab.models.policy import ModelError

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def is_adapted(model) -> bool:
    """Whether `model` carries peft adapters."""
    return hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


def for_training(policy, model_cfg, *, checkpointing: bool = True):
    """`policy` with the adapter and (`checkpointing`) the activation checkpointing `model_cfg` asks for."""
    adapter = model_cfg.adapter
    if adapter.type == "lora":
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ModelError("model.adapter.type is lora, which needs peft: pip install 'grpo_lab[peft]'") from None
        targets = list(adapter.target_modules) if adapter.target_modules else [
            name for name in LORA_TARGETS if any(n.endswith(name) for n, _ in policy.named_modules())]
        if not targets:
            raise ModelError("model.adapter.target_modules is not set and the model has none of the usual projection "
                             f"modules ({', '.join(LORA_TARGETS)}); name the modules to adapt")
        lora = LoraConfig(r=adapter.r, lora_alpha=adapter.alpha, lora_dropout=adapter.dropout, target_modules=targets,
                          task_type="CAUSAL_LM")
        policy = get_peft_model(policy, lora)
    if checkpointing and model_cfg.activation_checkpointing:
        recompute_layers(policy)
    return policy


def recompute_layers(model) -> None:
    """Checkpoint every decoder layer: in a forward with gradients only its inputs are kept, and the
    backward runs it again. Unlike transformers' own switch this does not depend on the model's
    train/eval mode (RL keeps the policy in eval mode, without dropout). The lean Qwen2 path, which
    does not go through the layers' forward, steps aside for such a model."""
    from functools import partial

    import torch
    from torch.utils.checkpoint import checkpoint

    trunk_model = trunk(model)
    layers = getattr(trunk_model, "layers", None)
    if layers is None:
        raise ModelError("model.activation_checkpointing needs a model whose trunk has a list of `layers`")

    def checkpointed(forward):
        def run(*args, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(partial(forward, **kwargs), *args, use_reentrant=False)
            return forward(*args, **kwargs)
        return run

    for layer in layers:
        layer.forward = checkpointed(layer.forward)
    trunk_model.gradient_checkpointing = True  # read by fast_qwen2.supports


def base_model(model) -> contextmanager:
    """A context in which an adapted model is its frozen base (its adapters off); else nothing."""
    return model.disable_adapter() if is_adapted(model) else nullcontext()


def merged(model):
    """A plain transformers model with the adapters folded into the weights (a copy; `model` keeps its)."""
    if not is_adapted(model):
        return model
    import copy

    return copy.deepcopy(model).merge_and_unload()


def trunk(model):
    """The transformer without its language-model head (PPO's critic copies it)."""
    return model.get_base_model().base_model if is_adapted(model) else model.base_model
