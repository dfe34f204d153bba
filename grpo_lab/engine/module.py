"""The engine: one LightningModule that runs any recipe (`grpo_lab.methods`).

One `training_step` is one RL step: collect (the data source; sampling, scoring and shaping) ->
advantages (the recipe's estimator) -> prepare (each objective: loss mask, correction, reference
log-probs) -> updates (mu epochs x minibatches x micro-batches, `UpdateLoop`) -> log, and evaluate
on the schedule. Training runs under manual optimization.

Determinism: the prompts of step s are a pure function of (seed, s); sampling, updates and
evaluation draw from their own named streams (`grpo_lab.seeding`), so changing the evaluation
schedule does not change training, and a resumed run needs only the step counter and the
generators' states, which checkpoints hold with every component's state.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from typing import Callable, Optional

import lightning as L
import torch

from grpo_lab.config import ConfigError
from grpo_lab.config.precision import resolve_precision
from grpo_lab.engine.collective import Collective
from grpo_lab.engine.evaluate import evaluate
from grpo_lab.engine.updates import UpdateLoop
from grpo_lab.errors import TrainingError
from grpo_lab.methods import ADVANTAGES, DATA, FILTERS, OBJECTIVES, SHAPING, check_config
from grpo_lab.methods.batch import Batch
from grpo_lab.methods.data import Online
from grpo_lab.methods.iterative import SCHEDULES
from grpo_lab.methods.reward_model import reward_model_for
from grpo_lab.methods.objectives import Correction
from grpo_lab.methods.rewards import score
from grpo_lab.models import fast_qwen2
from grpo_lab.models.adapters import base_model, is_adapted
from grpo_lab.models.critic import ValueModel
from grpo_lab.rollout import Rollout, inference, sample, token_logprobs
from grpo_lab.rollout.encode import encode_prompts
from grpo_lab.seeding import Stream, generator
from grpo_lab.tasks.rewards import build_rewards

TABLE_FILE = "eval/completions.json"  # the MLflow artifact of the completions tables


class StepPrompts(list):
    """One process's slice of a step's prompts: rows offset .. offset+len(self) of `total`."""

    def __init__(self, items, *, offset: int, total: int):
        super().__init__(items)
        self.offset, self.total = offset, total


class StepIndices(torch.utils.data.IterableDataset):
    """Yields the indices of the RL steps still to run; the engine reads its prompts from the index."""

    def __init__(self, module: "Engine", steps: int):
        self.module, self.steps = module, steps

    def __iter__(self):
        return iter(range(self.module.step_count, self.steps))

    def __len__(self):
        # the whole run: Lightning's restored batch counter already counts the steps done before a resume
        return self.steps


class Engine(UpdateLoop, L.LightningModule):
    """Runs the recipe named by `config.method` (a method class fixes it: `recipe_name`)."""

    recipe_name: Optional[str] = None

    def __init__(self, config, policy, tokenizer, task, ref_policy=None, reward_model=None):
        super().__init__()
        if self.recipe_name is not None and config.method != self.recipe_name:
            raise ConfigError(f"{type(self).__name__} runs method {self.recipe_name}, but the config says method "
                              f"{config.method}; set method: {self.recipe_name} or use grpo_lab.engine.Engine")
        self.recipe = check_config(config)
        self.automatic_optimization = False
        self.config = config
        self.precision = resolve_precision(config.train.precision, config.train.device)
        self.policy = policy.eval()  # no dropout: see `train`
        self.tokenizer, self.task = tokenizer, task
        self.rewards = build_rewards(config.task.rewards, task)  # None: the task's own reward
        self.train_examples = list(task.train_examples())
        self.eval_examples = list(task.eval_examples())[: config.train.eval_prompts]
        recipe = self.recipe
        self.estimator = ADVANTAGES.get(recipe.estimator(config)).obj if recipe.estimator(config) else None
        self.token_level_rewards = bool(getattr(self.estimator, "token_level", False))
        self.shapers = [SHAPING.get(name).obj for name in recipe.shaping]
        correction = Correction(config) if recipe.correction else None
        self.objectives = [OBJECTIVES.get(name).obj(config, correction) if name == "policy"
                           else OBJECTIVES.get(name).obj(config) for name in recipe.objectives]
        refill = FILTERS.get(recipe.refill).obj() if recipe.refill else None
        self.source = DATA.get(recipe.data).obj(config, refill)
        needs_ref = any(getattr(c, "needs_reference", lambda cfg: False)(config)
                        for c in [*self.objectives, *self.shapers])
        # an adapted policy's reference is its own base with the adapters off: no second copy
        self.ref_policy = (ref_policy if ref_policy is not None or not needs_ref or is_adapted(policy)
                           else copy.deepcopy(policy))
        if self.ref_policy is not None:
            self.ref_policy.requires_grad_(False).eval()
        self.critic = ValueModel.from_policy(policy) if "critic" in self.trained_models() else None
        # a reward model the recipe trains, or a learned reward (reward.model: a frozen module or folder)
        self.reward_model = reward_model_for(config, policy, reward_model, trained="reward_model" in self.trained_models())
        self.initial_policy = copy.deepcopy(policy).requires_grad_(False) if config.reward.kl_initial else None
        self.schedules = [SCHEDULES.get(name).obj(config) for name in recipe.schedules]
        if "policy" not in self.trained_models():  # a reward_model run: the policy only samples pairs
            self.policy.requires_grad_(False)
        self.behaviour_model = Online.behaviour_copy(config, policy) if isinstance(self.source, Online) else None
        self.step_count = 0
        self.budget = {"prompts": 0, "samples": 0, "tokens": 0, "updates": 0}
        self.sample_generator = generator(config.seed, Stream.SAMPLING)
        self.update_generator = generator(config.seed, Stream.UPDATES)
        self.last_eval: dict = {}
        self.history: list[dict] = []  # every logged row, for callers that run in-process
        self.on_eval: Optional[Callable[[int, dict], None]] = None  # called after each evaluation
        self.suppress_eos = False  # benchmarks: every completion runs to max_new_tokens
        self.eval_table: list[dict] = []  # the completions table of the last evaluation (train.eval_table rows)

    def train(self, mode: bool = True):
        """Lightning puts the module in training mode; the policy (and the reference and behaviour
        copies) stay in eval mode, so that no log-prob of a ratio is taken with dropout: the
        sampler's, the learner's and the reference's are all of one deterministic network, and the
        ratio is 1 where theta = theta_old. (A model without dropout computes the same either way.)"""
        super().train(mode)
        for model in (self.policy, self.ref_policy, self.behaviour_model, self.reward_model, self.initial_policy):
            if model is not None:
                model.eval()
        return self

    # ----- data -----------------------------------------------------------------------------
    def shard(self) -> tuple[int, int]:
        """(this process's rank, number of processes) under a multi-process strategy; (0, 1) otherwise."""
        trainer = self._trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    @property
    def collective(self) -> Collective:
        """Whole-step statistics over the processes of a step (engine/collective.py)."""
        rank, world = self.shard()
        return Collective(self.trainer.strategy if world > 1 else None, rank, world, self.device)

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

    def train_dataloader(self):
        return torch.utils.data.DataLoader(StepIndices(self, self.config.train.steps), batch_size=None)

    # ----- rollouts, scoring, log-probs ------------------------------------------------------
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

    def shape(self, batch: Batch) -> tuple[Batch, dict]:
        """The recipe's reward shaping, in order, and its metrics."""
        metrics = {}
        for shaper in self.shapers:
            batch, more = shaper(self, batch)
            metrics.update(more)
        return batch, metrics

    def account(self, rollout: Rollout, prompts: int) -> None:
        counts = [prompts, rollout.completion_ids.shape[0], int(rollout.completion_mask.sum())]
        if self.shard()[1] > 1:  # the budget of the whole step, summed over the processes
            total = self.trainer.strategy.reduce(torch.tensor(counts, dtype=torch.float64, device=self.device),
                                                 reduce_op="sum")
            counts = [int(v) for v in total.tolist()]
        for key, value in zip(("prompts", "samples", "tokens"), counts):
            self.budget[key] += value

    def logprobs(self, rollout: Rollout, *, with_entropy: bool = False, policy=None, sampling: bool = True):
        """Per-token log-probs of the rollout's completions. `sampling`: of the distribution the sampler
        draws from (`rollout.temperature`, `rollout.top_p`), as a ratio against the sampler's log-probs
        needs; else of the model itself (T = 1, no truncation), as supervised and preference losses take."""
        ro = self.config.rollout
        with self.autocast():
            return token_logprobs(policy or self.policy, rollout.input_ids, rollout.attention_mask,
                                  rollout.completion_ids.shape[1], temperature=ro.temperature if sampling else 1.0,
                                  top_p=ro.top_p if sampling else 1.0, with_entropy=with_entropy, fast=self.lean)

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
        return self.precision in ("32-true", "32", "64-true") or (self.lean and fast_qwen2.supports(self.policy))

    def ref_logprobs(self, rollout: Rollout, *, sampling: bool = True) -> torch.Tensor:
        if self.ref_policy is None and is_adapted(self.policy):
            with base_model(self.policy):
                return inference(self.logprobs)(rollout, sampling=sampling)[0]
        return inference(self.logprobs)(rollout, policy=self.ref_policy, sampling=sampling)[0]

    def values(self, rollout: Rollout) -> torch.Tensor:
        with self.autocast():
            return self.critic(rollout.input_ids, rollout.attention_mask, rollout.completion_ids.shape[1],
                               fast=self.lean)

    # ----- the RL step ----------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        step = int(batch)
        assert step == self.step_count, f"data order out of step: got {step}, expected {self.step_count}"
        if step % self.config.train.eval_every == 0:
            self.evaluate()
        start = time.perf_counter()
        metrics = self.rl_step(step)
        metrics["perf/step_s"] = time.perf_counter() - start
        self.step_count += 1
        metrics.update({f"budget/{k}": float(v) for k, v in self.budget.items()})
        self.log_metrics(metrics, step=self.step_count)
        shown = {k.split("/")[-1]: v for k, v in metrics.items() if k in ("rollout/reward_mean", "actor/loss")}
        self.log_dict(shown, prog_bar=True, logger=False, on_step=True)
        if self.step_count == self.config.train.steps:
            self.evaluate()

    def rl_step(self, step: int) -> dict:
        """collect -> advantages -> prepare -> updates; the step's metrics."""
        between = {}
        for schedule in self.schedules:  # iterative RL, reference sync
            between.update(schedule.before_step(self, step))
        t0 = time.perf_counter()
        data = self.source.collect(self, step)
        t1 = time.perf_counter()
        metrics = {**between, **data.metrics}
        batch = self.prepare(data.batch, metrics) if data.batch is not None else None
        t2 = time.perf_counter()
        if batch is not None:
            metrics.update(self.optimize(batch))
        t3 = time.perf_counter()
        self.source.after_update(self, data, step)
        metrics.update({"perf/gen_s": t1 - t0, "perf/logprob_s": t2 - t1, "perf/update_s": t3 - t2})
        return metrics

    def prepare(self, batch: Batch, metrics: dict) -> Optional[Batch]:
        """The advantage stage, then each objective's preparation; None when no row is left to train on."""
        if self.estimator is not None:
            estimate = self.estimate(batch)
            metrics.update(estimate.metrics)
            batch.advantages = estimate.advantages
            if estimate.keep is not None:
                kept = float(estimate.keep.numel())
                if self.shard()[1] > 1:  # every process decides alike: skip only when none has a row
                    kept = float(self.collective.sum(torch.tensor(kept)))
                if kept == 0:
                    return None
                batch = batch.select(estimate.keep)
                batch.loss_scale = estimate.loss_scale
        for objective in self.objectives:
            metrics.update(objective.prepare(self, batch))
        return batch

    def estimate(self, batch: Batch):
        """The recipe's advantages of `batch`; an estimator that reads only rewards sees the whole
        step's when the step is split over processes, and this process keeps its rows."""
        if self.shard()[1] == 1 or not getattr(self.estimator, "whole_batch", False):
            return self.estimator(self, batch)
        rewards, start = self.collective.rows(batch.rewards)
        estimate = self.estimator(self, Batch(batch.rollout, rewards=rewards))
        return estimate._replace(advantages=estimate.advantages[start: start + batch.rows])

    def log_metrics(self, metrics: dict, step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        self.history.append({"step": step, **clean})
        if self.logger is not None:
            self.logger.log_metrics(clean, step=step)

    @torch.no_grad()
    def evaluate(self, examples: Optional[list] = None, *, samples: Optional[int] = None, log: bool = True,
                 chunk: int = 64) -> dict:
        """Greedy accuracy and k samples per held-out prompt (see `grpo_lab.engine.evaluate`)."""
        table: list[dict] = []
        with self.autocast():
            if hasattr(self.source, "evaluate"):  # a source with held-out data of its own (reward-model pairs)
                metrics = self.source.evaluate(self)
            else:
                metrics = evaluate(self, examples if examples is not None else self.eval_examples,
                                   samples=samples or self.config.train.eval_samples, chunk=chunk, table=table,
                                   table_rows=self.config.train.eval_table)
        self.eval_table = table
        if log:
            self.last_eval = metrics
            self.log_metrics(metrics, step=self.step_count)
            self.log_table(table)
            if self.on_eval is not None:
                self.on_eval(self.step_count, metrics)
        return metrics

    def log_table(self, rows: list[dict]) -> None:
        """The completions table of an evaluation, appended to the MLflow artifact `TABLE_FILE` with
        its step (read it with `mlflow.load_table(TABLE_FILE, run_ids=[...])`)."""
        client = getattr(self.logger, "experiment", None)
        if not rows or not hasattr(client, "log_table") or self.global_rank != 0:
            return
        columns = list(dict.fromkeys(["step", *(k for row in rows for k in row)]))
        data = {c: [self.step_count if c == "step" else row.get(c) for row in rows] for c in columns}
        client.log_table(self.logger.run_id, data=data, artifact_file=TABLE_FILE)

    # ----- checkpoints ----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["grpo_lab"] = {
            "step_count": self.step_count,
            "budget": dict(self.budget),
            "sample_generator": self.sample_generator.get_state(),
            "update_generator": self.update_generator.get_state(),
            "config_yaml": self.config.to_yaml(),
            "history": list(self.history),  # a resumed run returns (and compares) the whole run's rows
            "last_eval": dict(self.last_eval),
            "data": self.source.state_dict(),
            "schedules": [schedule.state_dict() for schedule in self.schedules],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["grpo_lab"]
        self.step_count = state["step_count"]
        self.budget = dict(state["budget"])
        self.sample_generator.set_state(state["sample_generator"])
        self.update_generator.set_state(state["update_generator"])
        self.history = list(state.get("history", []))
        self.last_eval = dict(state.get("last_eval", {}))
        self.source.load_state_dict(state.get("data", {}))
        for schedule, saved in zip(self.schedules, state.get("schedules", [])):
            schedule.load_state_dict(saved)
