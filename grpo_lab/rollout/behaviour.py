"""Behaviour policies that differ from the learner on purpose (off-policy studies)."""

from __future__ import annotations

import torch


class NoisyLogits(torch.nn.Module):
    """A model whose logits get `scale` * N(0, 1) noise drawn from `generator`: a behaviour policy
    that is not the learner (the sampler/trainer mismatch of TIS). Its sampled log-probs are those
    of the noisy distribution."""

    def __init__(self, model: torch.nn.Module, scale: float, generator: torch.Generator):
        super().__init__()
        self.model, self.scale, self.generator = model, scale, generator

    def forward(self, **kwargs):
        out = self.model(**kwargs)
        noise = torch.randn(out.logits.shape, generator=self.generator)
        out.logits = out.logits + self.scale * noise.to(out.logits)
        return out
