"""The engine: one LightningModule that runs any recipe (`grpo_lab.methods`).

One `training_step` is one RL step: the schedules (iterative RL, reference sync) -> collect (the
data source; sampling, scoring, the learned reward and shaping) -> advantages (the recipe's
estimator) -> prepare (each objective: loss mask, correction, reference log-probs) -> updates (mu
epochs x minibatches x micro-batches, `UpdateLoop`) -> log, and evaluate on the schedule. Training
runs under manual optimization.

Components never see the engine: each gets a `Step` (`step_of`), the step's data and the functions
it may call, and returns what it wants changed (the budget a source spent, a reference update a
schedule asks for), which the engine applies here.

Determinism: the prompts of step s are a pure function of (seed, s); sampling, updates and
evaluation draw from their own named streams (`grpo_lab.seeding`), so changing the evaluation
schedule does not change training, and a resumed run needs only the step counter and the
generators' states, which checkpoints hold with every component's state.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable, Optional

import lightning as L
import torch

from grpo_lab.config import ConfigError
from grpo_lab.config.precision import resolve_precision
from grpo_lab.core.iterative import mix_into
from grpo_lab.engine.evaluate import evaluate
from grpo_lab.engine.rollouts import Rollouts, StepIndices
from grpo_lab.engine.updates import UpdateLoop
from grpo_lab.methods import (
    ADVANTAGES, DATA, LEARNED_REWARDS, OBJECTIVES, SCHEDULES, SHAPING, Batch, ReferenceUpdate, Step, build,
    check_config,
)
from grpo_lab.methods.collective import Collective
from grpo_lab.methods.reward_model import reward_model_for
from grpo_lab.models.adapters import is_adapted
from grpo_lab.models.critic import ValueModel
from grpo_lab.rollout.behaviour import BehaviourPolicy
from grpo_lab.seeding import Stream, generator
from grpo_lab.tasks.rewards import build_rewards

TABLE_FILE = "eval/completions.json"  # the MLflow artifact of the completions tables


class Engine(UpdateLoop, Rollouts, L.LightningModule):
    """Runs the recipe named by `config.method` (a method class fixes it: `recipe_name`). `recipe`: the
    recipe `check_config(config)` returned, where the caller has checked the config already."""

    recipe_name: Optional[str] = None

    def __init__(self, config, policy, tokenizer, task, ref_policy=None, reward_model=None, recipe=None):
        super().__init__()
        if self.recipe_name is not None and config.method != self.recipe_name:
            raise ConfigError(f"{type(self).__name__} runs method {self.recipe_name}, but the config says method "
                              f"{config.method}; set method: {self.recipe_name} or use grpo_lab.engine.Engine")
        self.recipe = recipe if recipe is not None else check_config(config)
        self.automatic_optimization = False
        self.config = config
        self.precision = resolve_precision(config.train.precision, config.train.device)
        self.policy = policy.eval()  # no dropout: see `train`
        self.tokenizer, self.task = tokenizer, task
        self.rewards = build_rewards(config.task.rewards, task)  # None: the task's own reward
        self.train_examples = list(task.train_examples())
        self.eval_examples = list(task.eval_examples())[: config.train.eval_prompts]
        recipe = self.recipe
        name = recipe.estimator(config)
        self.estimator = ADVANTAGES.get(name) if name else None  # an Entry: the function and its traits
        self.learned_reward = LEARNED_REWARDS.get(recipe.learned_reward).obj if recipe.learned_reward else None
        self.shapers = [SHAPING.get(s).obj for s in recipe.shaping]
        self.objectives = [build(OBJECTIVES.get(o).obj, config) for o in recipe.objectives]
        self.source = build(DATA.get(recipe.data).obj, config)
        self.schedules = [build(SCHEDULES.get(s).obj, config) for s in recipe.schedules]
        # an adapted policy's reference is its own base with the adapters off: no second copy
        needs_ref = recipe.has_reference(config)
        self.ref_policy = (ref_policy if ref_policy is not None or not needs_ref or is_adapted(policy)
                           else copy.deepcopy(policy))
        if self.ref_policy is not None:
            self.ref_policy.requires_grad_(False).eval()
        self.critic = ValueModel.from_policy(policy) if "critic" in self.trained_models() else None
        # a reward model the recipe trains, or a learned reward (reward.model: a frozen module or folder)
        self.reward_model = reward_model_for(config, policy, reward_model, trained="reward_model" in self.trained_models())
        self.initial_policy = copy.deepcopy(policy).requires_grad_(False) if config.reward.kl_initial else None
        if "policy" not in self.trained_models():  # a reward_model run: the policy only samples pairs
            self.policy.requires_grad_(False)
        off = config.offpolicy
        self.behaviour_model = BehaviourPolicy.copy_of(policy, staleness=off.staleness, dtype=torch.bfloat16
                                                       if off.sampler_dtype == "bfloat16" else torch.float32)
        self.behaviour = BehaviourPolicy(staleness=off.staleness, noise=off.sampler_noise, copy=self.behaviour_model,
                                         generator=generator(config.seed, Stream.SAMPLER_NOISE))
        self.step_count = 0
        self.budget = {"prompts": 0, "samples": 0, "tokens": 0, "updates": 0}
        self.sample_generator = generator(config.seed, Stream.SAMPLING)
        self.update_generator = generator(config.seed, Stream.UPDATES)
        self.last_eval: dict = {}
        self.history: list[dict] = []  # every logged row, for callers that run in-process
        self.on_eval: Optional[Callable[[int, dict], None]] = None  # called after each evaluation
        self.suppress_eos = False  # benchmarks: every completion runs to max_new_tokens
        self.evaluates = recipe.evaluates  # False: no evaluation at all (the SFT warm start)
        self.eval_table: list[dict] = []  # the completions table of the last evaluation (train.eval_table rows)

    def train(self, mode: bool = True):
        """Lightning puts the module in training mode; the policy (and the reference and behaviour
        copies) stay in eval mode, so that no log-prob of a ratio is taken with dropout: the
        sampler's, the learner's and the reference's are all of one deterministic network, and the
        ratio is 1 where theta = theta_old. (A model without dropout computes the same either way.)"""
        super().train(mode)
        for model in (self.policy, self.ref_policy, self.behaviour_model, self.reward_model, self.initial_policy):
            if model is not None and not (model is self.policy and self.recipe.dropout and mode):
                model.eval()
        return self

    # ----- what components see ------------------------------------------------------------------
    @property
    def collective(self) -> Collective:
        """Whole-step statistics over the processes of a step (methods/collective.py)."""
        rank, world = self.shard()
        return Collective(self.trainer.strategy if world > 1 else None, rank, world, self.device)

    def step_of(self, index: int) -> Step:
        """The `Step` the components of step `index` get: its data and the functions they may call."""
        return Step(
            config=self.config, recipe=self.recipe, index=index, task=self.task, tokenizer=self.tokenizer,
            train_examples=self.train_examples, device=self.device, collective=self.collective,
            token_level_rewards=bool(self.estimator is not None and self.estimator.trait("token_level")),
            sampler_matches_learner=self.sampler_matches_learner,
            reward_model_pairs=tuple(getattr(self.reward_model, "pairs", None) or ()),
            generate=self.generate, score=self.score, shape=self.shape, prompts=self.prompts_for_step,
            slice_of=self.slice_of, logprobs=self.logprobs, ref_logprobs=self.ref_logprobs,
            initial_logprobs=self.initial_logprobs, behaviour=lambda: self.behaviour.sampler(self.policy, index),
            values=self.values, rewards=self.reward_scores, fit_reward_model=self.fit_reward_model,
            autocast=self.autocast,
        )

    def shape(self, batch: Batch) -> tuple[Batch, dict]:
        """The recipe's learned reward and reward shaping, in order, and their metrics."""
        step = self.step_of(self.step_count)
        metrics = {}
        for component in ([self.learned_reward] if self.learned_reward else []) + self.shapers:
            batch, more = component(step, batch)
            metrics.update(more)
        return batch, metrics

    def add_budget(self, spent: dict) -> None:
        """Add what a data source spent (this process's counts) to the run's budget, summed over the processes."""
        keys = ("prompts", "samples", "tokens")
        counts = [int(spent.get(k, 0)) for k in keys]
        if self.shard()[1] > 1:  # the budget of the whole step
            total = self.collective.sum(torch.tensor(counts, dtype=torch.float64))
            counts = [int(v) for v in total.tolist()]
        for key, value in zip(keys, counts):
            self.budget[key] += value

    def update_reference(self, update: ReferenceUpdate) -> None:
        """A schedule's reference update: the policy's state copied (alpha = 1), or mixed in."""
        if update.alpha == 1.0:
            self.ref_policy.load_state_dict(self.policy.state_dict())
        else:  # parameters, not the state dict: a tied weight appears once there, and must move once
            mix_into(list(self.ref_policy.parameters()), list(self.policy.parameters()), alpha=update.alpha)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(StepIndices(self, self.config.train.steps), batch_size=None)

    # ----- the RL step ----------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        step = int(batch)
        assert step == self.step_count, f"data order out of step: got {step}, expected {self.step_count}"
        if self.evaluates and step % self.config.train.eval_every == 0:
            self.evaluate()
        start = time.perf_counter()
        metrics = self.rl_step(step)
        metrics["perf/step_s"] = time.perf_counter() - start
        self.step_count += 1
        metrics.update({f"budget/{k}": float(v) for k, v in self.budget.items()})
        self.log_metrics(metrics, step=self.step_count)
        shown = {k.split("/")[-1]: v for k, v in metrics.items() if k in ("rollout/reward_mean", "actor/loss")}
        self.log_dict(shown, prog_bar=True, logger=False, on_step=True)
        if self.evaluates and self.step_count == self.config.train.steps:
            self.evaluate()

    def rl_step(self, index: int) -> dict:
        """schedules -> collect -> advantages -> prepare -> updates; the step's metrics."""
        step = self.step_of(index)
        between = {}
        for schedule in self.schedules:  # iterative RL, reference sync
            done = schedule.before_step(step)
            between.update(done.metrics)
            if done.reference is not None:
                self.update_reference(done.reference)
        t0 = time.perf_counter()
        data = self.source.collect(step)
        self.add_budget(data.budget)
        t1 = time.perf_counter()
        metrics = {**between, **data.metrics}
        batch = self.prepare(step, data.batch, metrics) if data.batch is not None else None
        t2 = time.perf_counter()
        if batch is not None:
            metrics.update(self.optimize(step, batch))
        t3 = time.perf_counter()
        self.source.after_update(step, data)
        metrics.update({"perf/gen_s": t1 - t0, "perf/logprob_s": t2 - t1, "perf/update_s": t3 - t2})
        return metrics

    def prepare(self, step: Step, batch: Batch, metrics: dict) -> Optional[Batch]:
        """The advantage stage, then each objective's preparation; None when no row is left to train on."""
        if self.estimator is not None:
            estimate = self.estimate(step, batch)
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
            metrics.update(objective.prepare(step, batch))
        return batch

    def estimate(self, step: Step, batch: Batch):
        """The recipe's advantages of `batch`; an estimator that reads only rewards sees the whole
        step's when the step is split over processes, and this process keeps its rows."""
        estimator = self.estimator.obj
        if self.shard()[1] == 1 or not self.estimator.trait("whole_batch"):
            return estimator(step, batch)
        rewards, start = self.collective.rows(batch.rewards)
        estimate = estimator(step, Batch(batch.rollout, rewards=rewards))
        return estimate._replace(advantages=estimate.advantages[start: start + batch.rows])

    def log_metrics(self, metrics: dict, step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        self.history.append({"step": step, **clean})
        if self.logger is not None:
            self.logger.log_metrics(clean, step=step)

    @torch.no_grad()
    def evaluate(self, examples: Optional[list] = None, *, samples: Optional[int] = None, log: bool = True,
                 chunk: int = 64) -> dict:
        """Greedy accuracy and k samples per held-out prompt (see `grpo_lab.engine.evaluate`), or a data
        source's own held-out metrics (reward-model pairs)."""
        table: list[dict] = []
        with self.autocast():
            metrics = self.source.evaluate(self.step_of(self.step_count))
            if metrics is None:
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
            "behaviour": self.behaviour.state_dict(),
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
        data = dict(state.get("data", {}))
        self.source.load_state_dict(data)
        # before the behaviour policy had a state of its own, the online source held its snapshots
        self.behaviour.load_state_dict(state.get("behaviour", data))
        for schedule, saved in zip(self.schedules, state.get("schedules", [])):
            schedule.load_state_dict(saved)
