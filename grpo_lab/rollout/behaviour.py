"""Behaviour policies that differ from the learner on purpose (off-policy studies): noisy logits, and the
sampler of a run with its lagging or low-precision copy of the learner."""

from __future__ import annotations

import copy
from typing import Optional

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


class BehaviourPolicy:
    """The sampler of a run: the learner, or a policy that differs from it on purpose (off-policy
    studies): a copy lagging `staleness` RL steps behind it, a low-precision copy, noise on its logits.

    `copy` is the model the lagging or low-precision weights live in (see `copy_of`; None: the learner
    samples); the owner of the models keeps it, so that it moves with them between devices. Each step
    `sampler(policy, step)` records the learner's weights and gives the model to sample with and the
    policy version its weights are: with staleness s, those of step max(0, step - s). The snapshots
    and the noise's generator are the state a checkpoint holds."""

    def __init__(self, *, staleness: int = 0, noise: float = 0.0, generator: Optional[torch.Generator] = None,
                 copy: Optional[torch.nn.Module] = None):
        self.staleness, self.noise, self.copy = staleness, noise, copy
        self.generator = generator if generator is not None else torch.Generator()
        self.snapshots: list[dict] = []  # {"version": v, "state": state_dict}, oldest first, at most s + 1

    @staticmethod
    def copy_of(policy: torch.nn.Module, *, staleness: int, dtype: torch.dtype) -> Optional[torch.nn.Module]:
        """The model a lagging (staleness > 0) or low-precision (dtype not float32) sampler needs, or None."""
        if staleness == 0 and dtype == torch.float32:
            return None
        return copy.deepcopy(policy).to(dtype).requires_grad_(False)

    def sampler(self, policy: torch.nn.Module, step: int) -> tuple[torch.nn.Module, int]:
        """(the model that samples step `step`, the policy version of its weights)."""
        model, version = policy, step
        if self.copy is not None:
            state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
            self.snapshots = (self.snapshots + [{"version": step, "state": state}])[-(self.staleness + 1):]
            oldest = self.snapshots[0]
            self.copy.load_state_dict(oldest["state"])
            model, version = self.copy, oldest["version"]
        if self.noise > 0:
            model = NoisyLogits(model, self.noise, self.generator)
        return model, version

    def state_dict(self) -> dict:
        return {"snapshots": self.snapshots, "noise_generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.snapshots = list(state.get("snapshots", []))
        if "noise_generator" in state:
            self.generator.set_state(state["noise_generator"])
