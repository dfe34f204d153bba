"""The update loop, the one every method runs: mu epochs x minibatches x micro-batches, each
objective with its own optimizer, metrics merged by the reductions each objective declares.

Gradient accumulation (`optim.micro_batch_size`): a minibatch's forward/backward runs in chunks
whose losses are weighted by their share of the minibatch's loss (their rows, or under token_mean
their tokens), so the accumulated gradient is the minibatch's.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Optional

import torch

from grpo_lab.errors import TrainingError
from grpo_lab.methods.batch import Batch


def adamw(params, **kwargs) -> torch.optim.AdamW:
    """AdamW with the fused kernel where this torch has it for these parameters' device, else the plain one."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, **kwargs)


def merge(metrics: dict, part: dict, reductions: dict, *, loss_weight: float, token_share: float) -> None:
    """Fold one micro-batch's metrics into the minibatch's: "loss" by its loss weight, "max"/"min" by
    max/min, "mean" (the default) by its share of the minibatch's tokens."""
    for k, v in part.items():
        how = reductions.get(k, "mean")
        if how == "max":
            metrics[k] = max(metrics.get(k, v), v)
        elif how == "min":
            metrics[k] = min(metrics.get(k, v), v)
        else:
            metrics[k] = metrics.get(k, 0.0) + (loss_weight if how == "loss" else token_share) * v


def combine(parts: list[dict], reductions: dict) -> dict:
    """The step's metrics from its minibatches': "max" the max of the maxima, "min" the min of the
    minima, the rest the mean over the minibatches that logged them (a process holding no row of a
    minibatch logs none of its metrics)."""
    out: dict[str, float] = {}
    for key in dict.fromkeys(k for part in parts for k in part):
        values = [part[key] for part in parts if key in part]
        how = reductions.get(key, "mean")
        out[key] = max(values) if how == "max" else min(values) if how == "min" else sum(values) / len(values)
    return out


class UpdateLoop:
    """The part of the engine that turns a prepared batch into optimizer updates."""

    def minibatches(self, units: int) -> Iterator[torch.Tensor]:
        """mu epochs of a fresh permutation each, split into the configured number of minibatches
        (exactly that many when the step is split over processes, some maybe empty, so that every
        process makes as many updates)."""
        optim = self.config.optim
        split = self.shard()[1] > 1
        for _ in range(optim.epochs):
            order = torch.randperm(units, generator=self.update_generator) if self.recipe.shuffles else \
                torch.arange(units)
            yield from order.tensor_split(optim.minibatches) if split else order.chunk(optim.minibatches)

    def micro_batches(self, rows: torch.Tensor, mask: Optional[torch.Tensor] = None) -> list:
        """The minibatch `rows` as (chunk, weight) pairs: chunks of at most `optim.micro_batch_size` rows
        (sorted, so the completions of one prompt stay together), each weighted by its share of the
        minibatch's loss: its fraction of the rows, or under token_mean its fraction of the tokens of
        `mask` ((B, T), the whole batch's loss mask). One chunk of weight 1 when off or when it fits."""
        size = self.config.optim.micro_batch_size
        if size <= 0 or len(rows) <= size:
            return [(rows, 1.0)]
        parts = rows.sort().values.split(size)
        if self.by_tokens(mask):
            counts = [float(mask[part].sum()) for part in parts]
            total = max(sum(counts), 1.0)
            return [(part, count / total) for part, count in zip(parts, counts)]
        return [(part, len(part) / len(rows)) for part in parts]

    def by_tokens(self, mask: Optional[torch.Tensor]) -> bool:
        """Whether shares of the loss are counted in tokens (token_mean) rather than rows."""
        return mask is not None and self.config.loss.aggregation == "token_mean"

    def global_share(self, rows: torch.Tensor, mask: Optional[torch.Tensor]) -> float:
        """This process's share of the whole minibatch's loss (its tokens of `mask`, or its rows, over
        every process's), times the number of processes, whose gradients DDP averages: 1 with one
        process, and with several the update is the one a single process makes on the whole minibatch."""
        world = self.shard()[1]
        if world == 1:
            return 1.0
        local = float(mask[rows].sum()) if mask is not None else float(len(rows))
        total = float(self.collective.sum(torch.tensor(local, dtype=torch.float64)))
        return local / total * world if total > 0 else 0.0

    def accumulate(self, rows: torch.Tensor, loss_of: Callable, metrics: dict, mask: Optional[torch.Tensor],
                   reductions: dict, model: str = "policy") -> Iterator[torch.Tensor]:
        """Yield the weighted loss of each micro-batch of `rows`, built only when asked for (each
        chunk's graph is freed by its backward before the next is built); `loss_of(chunk)` returns
        (loss, float metrics), merged into `metrics` as the whole minibatch's would be."""
        chunks = self.micro_batches(rows, mask)
        share = self.global_share(rows, mask if self.by_tokens(mask) else None)
        if len(rows) == 0:  # this process holds none of the minibatch, the others do: a zero gradient
            yield sum((p * 0.0).sum() for p in self.trained_parameters(model))
            return
        if len(chunks) == 1:
            with self.autocast():  # the forward only: the backward and the optimizer step run outside
                loss, part_metrics = loss_of(rows)
            metrics.update(part_metrics)
            yield loss if share == 1.0 else loss * share
            return
        tokens = [float(mask[part].sum()) for part, _ in chunks] if mask is not None else [w for _, w in chunks]
        total = max(sum(tokens), 1e-12)
        merged = False
        for i, ((part, weight), count) in enumerate(zip(chunks, tokens)):
            with self.autocast():
                loss, part_metrics = loss_of(part)
            yield loss * weight if share == 1.0 else loss * (weight * share)
            if count == 0 and (merged or i < len(chunks) - 1):
                continue  # no token of the minibatch's loss: nothing to average (its loss is 0)
            merged = True
            merge(metrics, part_metrics, reductions, loss_weight=weight, token_share=count / total)

    def optimize(self, step, batch: Batch) -> dict:
        """mu epochs x minibatches; in each minibatch every active objective makes one update. The
        metrics of the minibatches merge by the reductions their objectives declare (`combine`)."""
        waiting = any(o.holds_policy(step) for o in self.objectives)
        parts = []
        for rows in self.minibatches(batch.units):
            metrics: dict[str, float] = {}
            for objective in self.objectives:
                if waiting and objective.model == "policy":
                    continue
                loss_of = lambda part, o=objective: o.loss(step, batch, part)  # noqa: E731
                losses = self.accumulate(rows, loss_of, metrics, objective.token_mask(batch), objective.reductions,
                                         objective.model)
                metrics.update(self.update(losses, objective))
            parts.append(metrics)
        return combine(parts, {k: v for o in self.objectives for k, v in o.reductions.items()})

    def fit_reward_model(self, pairs: list, settings, *, seed: int, iteration: int) -> dict:
        """`settings.steps` updates of the reward model on minibatches of `settings.batch_size` preference
        pairs (epochs in orders drawn by (seed, iteration, epoch)), each through `update` with a fresh AdamW
        at `settings.lr` and the Bradley-Terry objective: retraining a reward model inside an RL run."""
        from grpo_lab.methods.reward_model import BradleyTerryObjective, pair_batch, pair_minibatches

        if not pairs:
            return {"reward_model/fit_steps": 0.0}
        o = self.config.optim
        model = self.reward_model
        model.requires_grad_(True)
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=(o.beta1, o.beta2),
                                      weight_decay=o.weight_decay)
        objective, step = BradleyTerryObjective(self.config), self.step_of(self.step_count)
        losses, accuracies = [], []
        for take in pair_minibatches(pairs, steps=settings.steps, size=settings.batch_size, seed=seed,
                                     iteration=iteration):
            batch = pair_batch([pairs[i] for i in take], self.tokenizer.pad_token_id, self.device)
            with self.autocast():
                loss, metrics = objective.loss(step, batch, torch.arange(len(take)))
            self.update(loss, objective, optimizer=optimizer)
            losses.append(float(loss.detach()))
            accuracies.append(metrics["reward_model/accuracy"])
        model.requires_grad_(False).eval()
        return {"reward_model/fit_steps": float(settings.steps),
                "reward_model/fit_loss": sum(losses[-10:]) / len(losses[-10:]),
                "reward_model/fit_accuracy": sum(accuracies[-10:]) / len(accuracies[-10:])}

    def update(self, loss, objective, *, optimizer=None) -> dict:
        """One optimizer update of `objective`'s model from `loss`, a scalar tensor or an iterable of
        scalar tensors whose sum is the loss; refuses a non-finite loss before touching the weights.
        This is the package's one optimizer step: every objective's, the SFT warm start's (the
        `warm_start` recipe) and a reward model's retraining inside an RL run (`optimizer`: a torch
        optimizer of its own, outside Lightning's).

        The backward passes run as the optimizer's closure, so that under a loss scaler (16-mixed)
        the gradients are unscaled before `on_before_optimizer_step` clips them, and an overflow
        makes the scaler skip the step instead of stopping the run."""
        prefix = objective.prefix
        if isinstance(loss, torch.Tensor):
            self.check_finite(loss, prefix)
            loss = [loss]
        own = optimizer is not None  # a torch optimizer: no Lightning hook clips its gradients
        optimizer, scheduler = (optimizer, None) if own else self.optimizer_of(objective.model)
        optimizer.zero_grad(set_to_none=True)

        def backward() -> None:
            for part in loss:
                self.check_finite(part, prefix)
                if own:
                    part.backward()
                else:
                    self.manual_backward(part)
            if own:
                self.clip(objective)

        self.clipping, self.grad_norm = objective, None
        try:
            optimizer.step(closure=backward)
        finally:
            self.clipping = None
        if scheduler is not None:
            scheduler.step()
        skipped = not math.isfinite(self.grad_norm)  # an overflow the loss scaler skipped
        if objective.counts_updates and not skipped and not own:
            self.budget["updates"] += 1
        metrics = {f"{prefix}/grad_norm": self.grad_norm}
        if self.loss_scaler() is not None:
            metrics[f"{prefix}/skipped_update"] = float(skipped)
        return metrics

    def on_before_optimizer_step(self, optimizer) -> None:
        """Clip the gradients of the model being updated (after a loss scaler has unscaled them)."""
        objective = getattr(self, "clipping", None)
        if objective is not None:
            self.clip(objective)

    def clip(self, objective) -> None:
        """Clip the gradients of `objective`'s model to `optim.grad_clip`, and keep their norm."""
        clip = self.config.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.trained_parameters(objective.model), clip if clip > 0 else float("inf"))
        self.grad_norm = float(norm)
        if not torch.isfinite(norm) and self.loss_scaler() is None:
            raise TrainingError(f"the {objective.prefix} gradient norm is {norm.item()} at step {self.step_count}; "
                                "lower optim.lr")

    def loss_scaler(self):
        """The precision plugin's gradient scaler (16-mixed), or None."""
        trainer = self._trainer
        return getattr(trainer.precision_plugin, "scaler", None) if trainer is not None else None

    def check_finite(self, loss: torch.Tensor, prefix: str) -> None:
        if not torch.isfinite(loss):
            raise TrainingError(f"the {prefix} loss is {loss.item()} at step {self.step_count}; lower optim.lr "
                                "(on the chain task, lr above 3e-4 with 32 prompts collapses) or check the rewards")

    def trained_parameters(self, model: str) -> list:
        module = self.policy if model == "policy" else getattr(self, model)
        return [p for p in module.parameters() if p.requires_grad]

    def configure_optimizers(self):
        """One optimizer per trained model: the policy's AdamW (fused where available) with linear
        warm-up over `optim.warmup_steps` updates, and the critic's AdamW at `critic.lr` (a reward
        model's at `reward_model.lr`)."""
        o = self.config.optim
        optimizers, schedulers = [], []
        for model in self.trained_models():
            if model == "policy":
                # a fused optimizer unscales inside its step, too late for clipping: not under a loss scaler
                fused = self.loss_scaler() is None and o.fused
                make = adamw if fused else torch.optim.AdamW
                opt = make(self.trained_parameters(model), lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
                if o.warmup_steps > 0:
                    warm = o.warmup_steps
                    schedulers.append(torch.optim.lr_scheduler.LambdaLR(opt, lambda n: min(1.0, (n + 1) / warm)))
            else:
                lr = next(o for o in self.objectives if o.model == model).learning_rate()  # critic.lr, reward_model.lr
                opt = torch.optim.AdamW(self.trained_parameters(model), lr=lr,
                                        betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
            optimizers.append(opt)
        return optimizers, schedulers

    def trained_models(self) -> list[str]:
        return list(dict.fromkeys(o.model for o in self.objectives))

    def optimizer_of(self, model: str):
        """(Lightning's wrapper of the model's optimizer, its scheduler or None)."""
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        optimizer = opts[self.trained_models().index(model)]
        schedulers = self.lr_schedulers() or []
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        scheduler = next((s for s in schedulers if s.optimizer is optimizer.optimizer), None)
        return optimizer, scheduler
