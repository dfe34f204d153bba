"""Pure tensor math of grpo_lab: advantages, KL, objectives, aggregation, value and preference
losses, and the unified paradigm (DeepSeekMath Table 10). torch only; no trainer imports."""

from grpo_lab.core.advantages import GAEResult, gae, group_relative, process_supervised, rloo, zero_std_groups
from grpo_lab.core.aggregation import AGGREGATION_MODES, aggregate, masked_mean
from grpo_lab.core.kl import KL_KINDS, kl_estimate
from grpo_lab.core.objectives import (
    SurrogateResult,
    clipped_surrogate,
    effective_sample_size,
    importance_weights,
)
from grpo_lab.core.paradigm import TABLE, MethodSpec, format_table, gradient_coefficient
from grpo_lab.core.preference import DPOResult, dpo_loss
from grpo_lab.core.value import clipped_value_loss

__all__ = [
    "AGGREGATION_MODES", "KL_KINDS", "TABLE", "DPOResult", "GAEResult", "MethodSpec", "SurrogateResult",
    "aggregate", "clipped_surrogate", "clipped_value_loss", "dpo_loss", "effective_sample_size",
    "format_table", "gae", "gradient_coefficient", "group_relative", "importance_weights", "kl_estimate",
    "masked_mean", "process_supervised", "rloo", "zero_std_groups",
]
