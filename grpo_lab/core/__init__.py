"""Pure tensor math of grpo_lab: advantages, KL, objectives, aggregation, value and preference
losses, and the unified paradigm (DeepSeekMath Table 10). torch only; no trainer imports.

The names below load their module when first used, so that `grpo_lab.core.choices` (the named
choices, free of torch) can be read by the config before torch is imported.
"""

from importlib import import_module

EXPORTS = {  # name -> the module of grpo_lab.core that defines it
    "GAEResult": "advantages", "gae": "advantages", "group_relative": "advantages",
    "process_supervised": "advantages", "rloo": "advantages", "zero_std_groups": "advantages",
    "AGGREGATION_MODES": "choices", "KL_KINDS": "choices", "aggregate": "aggregation", "masked_mean": "aggregation",
    "kl_estimate": "kl", "SurrogateResult": "objectives", "clipped_surrogate": "objectives",
    "effective_sample_size": "objectives", "importance_weights": "objectives", "TABLE": "paradigm",
    "MethodSpec": "paradigm", "format_table": "paradigm", "gradient_coefficient": "paradigm",
    "DPOResult": "preference", "dpo_loss": "preference", "clipped_value_loss": "value",
}
__all__ = sorted(EXPORTS)


def __getattr__(name: str):
    if name in EXPORTS:
        return getattr(import_module(f"grpo_lab.core.{EXPORTS[name]}"), name)
    raise AttributeError(f"module 'grpo_lab.core' has no attribute {name!r}")
