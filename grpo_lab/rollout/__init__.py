"""Rollout: batched KV-cache sampling, log-probs of completions, the text <-> token layout, replay."""

from grpo_lab.models.positions import position_ids
from grpo_lab.rollout.sampler import Rollout, inference, sample, token_logprobs

__all__ = ["Rollout", "inference", "sample", "token_logprobs", "position_ids"]
