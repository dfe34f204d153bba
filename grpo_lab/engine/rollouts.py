"""The engine's models at work: the prompts of a step, sampling, scoring, log-probs of the learner,
the reference, the initial and the behaviour policy, the critic's values and the reward model's
scores, each under the run's precision. These are the functions a `Step` hands to components.

Determinism: the prompts of step s are a pure function of (seed, s); sampling draws from its own
named stream (`grpo_lab.seeding`).
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch

from grpo_lab.errors import TrainingError
from grpo_lab.methods.batch import Batch
from grpo_lab.methods.rewards import score
from grpo_lab.models import fast_qwen2
from grpo_lab.models.adapters import base_model, is_adapted
from grpo_lab.rollout import Rollout, inference, sample, token_logprobs
from grpo_lab.rollout.encode import encode_prompts
from grpo_lab.seeding import Stream, generator

FLOAT32 = ("32-true", "32", "64-true")


class StepPrompts(list):
    """One process's slice of a step's prompts: rows offset .. offset+len(self) of `total`."""

    def __init__(self, items, *, offset: int, total: int):
        super().__init__(items)
        self.offset, self.total = offset, total


class StepIndices(torch.utils.data.IterableDataset):
    """Yields the indices of the RL steps still to run; the engine reads its prompts from the index."""

    def __init__(self, module, steps: int):
        self.module, self.steps = module, steps

    def __iter__(self):
        return iter(range(self.module.step_count, self.steps))

    def __len__(self):
        # the whole run: Lightning's restored batch counter already counts the steps done before a resume
        return self.steps


class Rollouts:
    """The part of the engine that samples, scores and takes log-probs (see the module docstring)."""

    def shard(self) -> tuple[int, int]:
        """(this process's rank, number of processes) under a multi-process strategy; (0, 1) otherwise."""
        trainer = self._trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def slice_of(self, examples: list) -> list:
        """This process's contiguous slice of a step's prompts (a `StepPrompts`), or all of them."""
        rank, world = self.shard()
        if world == 1:
            return examples
        count = len(examples)
        if count % world:
            raise TrainingError(f"{count} prompts per step do not split over {world} processes; "
                                "make rollout.prompts_per_step a multiple of train.devices x train.num_nodes")
        per = count // world
        return StepPrompts(examples[rank * per:(rank + 1) * per], offset=rank * per, total=count)

    def prompts_for_step(self, step: int, count: Optional[int] = None) -> list:
        """The prompts of RL step `step`: epochs over the training set, each shuffled by (seed, epoch).

        Under a multi-process strategy each process gets its contiguous slice of the step's prompts
        (a `StepPrompts` that knows where the slice sits), so the processes together run the batch
        one process would run, and `generate` draws each row's tokens as one process would."""
        count = count or self.config.rollout.prompts_per_step
        n = len(self.train_examples)
        start = step * count
        out = []
        while len(out) < count:
            epoch, offset = divmod(start + len(out), n)
            order = torch.randperm(n, generator=generator(self.config.seed, Stream.DATA_ORDER, epoch))
            take = min(count - len(out), n - offset)
            out.extend(self.train_examples[i] for i in order[offset: offset + take].tolist())
        return self.slice_of(out)

    def generate(self, examples: list, *, group_size: int, greedy: bool = False, temperature: Optional[float] = None,
                 generator: Optional[torch.Generator] = None, with_entropy: bool = False, policy=None) -> Rollout:
        """G completions of each example, one example's completions in contiguous rows."""
        prompts = [ex.prompt for ex in examples for _ in range(group_size)]
        ids, mask = encode_prompts(self.tokenizer, prompts, device=self.device)
        rows = None  # a process's slice of a step's batch: its rows of the whole batch's draws
        if isinstance(examples, StepPrompts):
            rows = (examples.offset * group_size, examples.total * group_size)
        policy = policy or self.policy
        # sampling runs in eval mode (no dropout); the lean Qwen2 path has no layer that depends on
        # the mode, so a switch there (two walks over every module) would be work for nothing
        switch = policy.training and not (self.lean and fast_qwen2.supports(policy))
        if switch:
            policy.eval()
        with self.autocast():
            rollout = sample(
                policy, ids, mask, max_new_tokens=self.config.rollout.max_new_tokens,
                eos_id=self.tokenizer.eos_token_id, pad_id=self.tokenizer.pad_token_id,
                temperature=temperature or self.config.rollout.temperature, top_p=self.config.rollout.top_p,
                greedy=greedy, generator=generator if generator is not None else self.sample_generator,
                with_entropy=with_entropy, suppress_eos=self.suppress_eos, rows=rows, fast=self.lean,
            )
        if switch:
            policy.train()
        return rollout

    def score(self, rollout: Rollout, examples: list, group_size: int) -> Batch:
        return score(self.task, self.tokenizer, rollout, examples, group_size, device=self.device, rewards=self.rewards)

    def logprobs(self, rollout: Rollout, *, with_entropy: bool = False, policy=None, sampling: bool = True):
        """Per-token log-probs of the rollout's completions. `sampling`: of the distribution the sampler
        draws from (`rollout.temperature`, `rollout.top_p`), as a ratio against the sampler's log-probs
        needs; else of the model itself (T = 1, no truncation), as supervised and preference losses take."""
        ro = self.config.rollout
        with self.autocast():
            return token_logprobs(policy or self.policy, rollout.input_ids, rollout.attention_mask,
                                  rollout.completion_ids.shape[1], temperature=ro.temperature if sampling else 1.0,
                                  top_p=ro.top_p if sampling else 1.0, with_entropy=with_entropy, fast=self.lean)

    def ref_logprobs(self, rollout: Rollout, *, sampling: bool = True) -> torch.Tensor:
        if self.ref_policy is None and is_adapted(self.policy):
            with base_model(self.policy):
                return inference(self.logprobs)(rollout, sampling=sampling)[0]
        return inference(self.logprobs)(rollout, policy=self.ref_policy, sampling=sampling)[0]

    def initial_logprobs(self, rollout: Rollout) -> torch.Tensor:
        return inference(self.logprobs)(rollout, policy=self.initial_policy)[0]

    def values(self, rollout: Rollout) -> torch.Tensor:
        with self.autocast():
            return self.critic(rollout.input_ids, rollout.attention_mask, rollout.completion_ids.shape[1],
                               fast=self.lean)

    def reward_scores(self, rollout: Rollout) -> torch.Tensor:
        """The reward model's r(x, y) of each row, (B,), with gradients outside no_grad."""
        return self.reward_model.score(rollout)

    def autocast(self):
        """bf16 compute for the forward passes inside (`train.precision: bf16-mixed`), the weights and
        the optimizer state staying float32. Each weight is cast once per outermost context and the
        casts are dropped when it closes, which every forward pass does before its backward and any
        optimizer step; a no-op under any other precision."""
        if self.precision != "bf16-mixed":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @property
    def lean(self) -> bool:
        """Whether the lean Qwen2 path may run: not under a sharding strategy (FSDP), where weights are
        gathered only inside each module's own forward, which the lean path does not call."""
        trainer = self._trainer
        return trainer is None or "FSDP" not in type(trainer.strategy).__name__

    @property
    def sampler_matches_learner(self) -> bool:
        """Whether the sampler's log-probs of the policy are the learner's, so that they can stand in for
        pi_old: in float32, or on the lean Qwen2 path, whose cached decoding and full forward compute
        alike in bf16 too. The generic path (other models, adapters, activation checkpointing, FSDP)
        under a 16-bit precision rounds its cached decoding otherwise (ratios 0.99-1.05 at the first
        update): there the learner recomputes pi_old."""
        return self.precision in FLOAT32 or (self.lean and fast_qwen2.supports(self.policy))
