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
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(policy, "enable_input_require_grads"):
            policy.enable_input_require_grads()
    return policy


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
