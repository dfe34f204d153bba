"""Rollout: batched KV-cache sampling and log-probs of completions."""

from grpo_lab.rollout.sampler import Rollout, position_ids, sample, token_logprobs

__all__ = ["Rollout", "sample", "token_logprobs", "position_ids"]
