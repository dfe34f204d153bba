"""The plumbing every method shares: data order, rollouts, scoring, updates, evaluation, logging.

A method (DeepSeekMath §5.2) is a data source, a reward function and a per-token gradient
coefficient. `PolicyModule` owns the parts they share; a subclass implements `rl_step`, which
draws its data, scores it and calls `update` with its loss. Training runs under manual
optimization: one `training_step` is one RL step (one rollout batch) and may make several
optimizer updates (mu epochs x minibatches).

Determinism: the prompts of step s are a pure function of (seed, s); sampling draws from the
module's own generator and evaluation from a fresh generator of its own, so changing the
evaluation schedule does not change training, and a resumed run needs only the step counter and
the generator states, which the checkpoint holds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import lightning as L
import numpy as np
import torch

from grpo_lab.evaluation import summarize
from grpo_lab.models import fast_qwen2
from grpo_lab.rollout import Rollout, sample, token_logprobs
from grpo_lab.rollout.sampler import inference
from grpo_lab.rollout.encode import decode_completions, encode_prompts, token_char_ends


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss, failing reward); the message says what happened."""


class RewardError(TrainingError):
    pass


@dataclass
class Scored:
    rollout: Rollout
    examples: list  # the Example of each row
    texts: list[str]
    rewards: torch.Tensor  # (B,) outcome rewards
    correct: torch.Tensor  # (B,) bool


def _seed_of(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class StepPrompts(list):
    """One process's slice of a step's prompts: rows offset .. offset+len(self) of `total`."""

    def __init__(self, items, *, offset: int, total: int):
        super().__init__(items)
        self.offset, self.total = offset, total


class StepIndices(torch.utils.data.IterableDataset):
    """Yields the indices of the RL steps still to run; the module reads its prompts from the index."""

    def __init__(self, module: "PolicyModule", steps: int):
        self.module, self.steps = module, steps

    def __iter__(self):
        return iter(range(self.module.step_count, self.steps))

    def __len__(self):
        # the whole run: Lightning's restored batch counter already counts the steps done before a resume
        return self.steps


class PolicyModule(L.LightningModule):
    def __init__(self, config, policy, tokenizer, task, ref_policy=None):
        super().__init__()
        self.automatic_optimization = False
        self.config = config
        self.policy = policy.train()
        self.ref_policy = ref_policy
        if ref_policy is not None:
            ref_policy.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        self.task = task
        self.train_examples = list(task.train_examples())
        self.eval_examples = list(task.eval_examples())[: config.train.eval_prompts]
        self.step_count = 0
        self.budget = {"prompts": 0, "samples": 0, "tokens": 0, "updates": 0}
        self.sample_generator = torch.Generator().manual_seed(_seed_of(config.seed, 1))
        self.update_generator = torch.Generator().manual_seed(_seed_of(config.seed, 2))
        self.last_eval: dict = {}
        self.history: list[dict] = []  # every logged row, for callers that run in-process
        self.on_eval: Optional[Callable[[int, dict], None]] = None  # called after each evaluation
        self.suppress_eos = False  # benchmarks: every completion runs to max_new_tokens

    # ----- data -----------------------------------------------------------------------------
    def shard(self) -> tuple[int, int]:
        """(this process's rank, number of processes) under a multi-process strategy; (0, 1) otherwise."""
        trainer = self._trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

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
            order = torch.randperm(n, generator=torch.Generator().manual_seed(_seed_of(self.config.seed, 3, epoch)))
            take = min(count - len(out), n - offset)
            out.extend(self.train_examples[i] for i in order[offset: offset + take].tolist())
        rank, world = self.shard()
        if world == 1:
            return out
        if count % world:
            raise TrainingError(f"{count} prompts per step do not split over {world} processes; "
                                "make rollout.prompts_per_step a multiple of train.devices x train.num_nodes")
        per = count // world
        return StepPrompts(out[rank * per:(rank + 1) * per], offset=rank * per, total=count)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(StepIndices(self, self.config.train.steps), batch_size=None)

    # ----- rollouts and scoring -------------------------------------------------------------
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
        switch = policy.training and not fast_qwen2.supports(policy)
        if switch:
            policy.eval()
        rollout = sample(
            policy, ids, mask, max_new_tokens=self.config.rollout.max_new_tokens,
            eos_id=self.tokenizer.eos_token_id, pad_id=self.tokenizer.pad_token_id,
            temperature=temperature or self.config.rollout.temperature, top_p=self.config.rollout.top_p,
            greedy=greedy, generator=generator if generator is not None else self.sample_generator,
            with_entropy=with_entropy, suppress_eos=self.suppress_eos, rows=rows,
        )
        if switch:
            policy.train()
        return rollout

    def score(self, rollout: Rollout, examples: list, group_size: int) -> Scored:
        rows = [ex for ex in examples for _ in range(group_size)]
        texts = decode_completions(self.tokenizer, rollout.completion_ids, rollout.completion_mask)
        finished = rollout.finished.tolist()
        rewards, correct = [], []
        for ex, text, done in zip(rows, texts, finished):
            try:
                rewards.append(float(self.task.reward(ex, text, done)))
                correct.append(bool(self.task.is_correct(ex, text, done)))
            except Exception as exc:  # a user's reward function
                raise RewardError(f"the reward function of task {self.task.name!r} raised "
                                  f"{type(exc).__name__}: {exc} on prompt {ex.prompt!r} and completion {text!r}") from None
        r = torch.tensor(rewards, dtype=torch.float32, device=self.device)
        if not torch.isfinite(r).all():
            bad = int((~torch.isfinite(r)).nonzero()[0])
            raise RewardError(f"the reward of task {self.task.name!r} is {rewards[bad]} on prompt {rows[bad].prompt!r} "
                              f"and completion {texts[bad]!r}; rewards must be finite numbers")
        return Scored(rollout, rows, texts, r, torch.tensor(correct, device=self.device))

    def step_reward_tensors(self, scored: Scored):
        """Step rewards placed at the token where each step ends: (rewards, step_mask), (B, T) each.

        The outcome reward is the reward of one more step that ends at the completion's last token
        (EOS when it finished): the task's steps score the intermediate results but not whether the
        answer was finished, and without it process supervision learns never to stop.
        """
        ro = scored.rollout
        rewards = torch.zeros_like(ro.completion_mask)
        step_mask = torch.zeros_like(ro.completion_mask)
        ends = token_char_ends(self.tokenizer, ro.completion_ids, ro.completion_mask)
        for i, (ex, text, done) in enumerate(zip(scored.examples, scored.texts, ro.finished.tolist())):
            steps = self.task.step_rewards(ex, text, done) or []
            for step in steps:
                t = next((j for j, e in enumerate(ends[i]) if e >= step.end), None)
                if t is not None:
                    rewards[i, t] += step.reward
                    step_mask[i, t] = 1.0
        last = (ro.completion_mask.cumsum(-1) == ro.lengths[:, None]) & (ro.completion_mask > 0)  # (B, T)
        rewards = rewards + last.to(rewards.dtype) * scored.rewards[:, None]
        step_mask = torch.maximum(step_mask, last.to(step_mask.dtype))
        return rewards, step_mask

    def account(self, rollout: Rollout, prompts: int) -> None:
        counts = [prompts, rollout.completion_ids.shape[0], int(rollout.completion_mask.sum())]
        if self.shard()[1] > 1:  # the budget of the whole step, summed over the processes
            total = self.trainer.strategy.reduce(torch.tensor(counts, dtype=torch.float64, device=self.device),
                                                 reduce_op="sum")
            counts = [int(v) for v in total.tolist()]
        for key, value in zip(("prompts", "samples", "tokens"), counts):
            self.budget[key] += value

    # ----- updates --------------------------------------------------------------------------
    def logprobs(self, rollout: Rollout, *, with_entropy: bool = False, policy=None):
        return token_logprobs(policy or self.policy, rollout.input_ids, rollout.attention_mask,
                              rollout.completion_ids.shape[1], temperature=self.config.rollout.temperature,
                              with_entropy=with_entropy)

    def ref_logprobs(self, rollout: Rollout) -> torch.Tensor:
        return inference(self.logprobs)(rollout, policy=self.ref_policy)[0]

    def minibatches(self, batch_size: int):
        """mu epochs of a fresh permutation each, split into the configured number of minibatches."""
        optim = self.config.optim
        for _ in range(optim.epochs):
            order = torch.randperm(batch_size, generator=self.update_generator)
            yield from order.chunk(optim.minibatches)

    def micro_batches(self, rows: torch.Tensor, mask: Optional[torch.Tensor] = None) -> list:
        """The minibatch `rows` as (chunk, weight) pairs for gradient accumulation: chunks of at most
        `optim.micro_batch_size` rows (sorted, so the completions of one prompt stay together), each
        weighted by its share of the minibatch's loss: its fraction of the rows, or under token_mean
        its fraction of the tokens of `mask` (the whole batch's loss mask, (B, T)). The weighted sum
        of the chunks' losses is the minibatch's loss. One chunk of weight 1 when off or when it fits."""
        size = self.config.optim.micro_batch_size
        if size <= 0 or len(rows) <= size:
            return [(rows, 1.0)]
        parts = rows.sort().values.split(size)
        if mask is not None and self.config.loss.aggregation == "token_mean":
            counts = [float(mask[part].sum()) for part in parts]
            total = max(sum(counts), 1.0)
            return [(part, count / total) for part, count in zip(parts, counts)]
        return [(part, len(part) / len(rows)) for part in parts]

    def accumulate(self, rows: torch.Tensor, loss_of, metrics: dict, mask: Optional[torch.Tensor] = None):
        """Yield the weighted loss of each micro-batch of `rows` (see `micro_batches`), built only when
        asked for, so that each chunk's graph is freed by its backward before the next is built.
        `loss_of(chunk)` returns (loss, float metrics), merged into `metrics` as the whole minibatch's
        would be: keys ending in `loss` by the loss weights, `_max`/`_min` keys by max/min, the rest
        (token means) by each chunk's share of the tokens of `mask`."""
        chunks = self.micro_batches(rows, mask)
        if len(chunks) == 1:
            loss, part_metrics = loss_of(rows)
            metrics.update(part_metrics)
            yield loss
            return
        tokens = [float(mask[part].sum()) for part, _ in chunks] if mask is not None else [w for _, w in chunks]
        total = max(sum(tokens), 1e-12)
        merged = False
        for i, ((part, weight), count) in enumerate(zip(chunks, tokens)):
            loss, part_metrics = loss_of(part)
            yield loss * weight
            if count == 0 and (merged or i < len(chunks) - 1):
                continue  # no token of the minibatch's loss: nothing to average (its loss is 0)
            merged = True
            for k, v in part_metrics.items():
                if k.endswith("_max"):
                    metrics[k] = max(metrics.get(k, v), v)
                elif k.endswith("_min"):
                    metrics[k] = min(metrics.get(k, v), v)
                else:
                    metrics[k] = metrics.get(k, 0.0) + (weight if k.endswith("loss") else count / total) * v

    def update(self, loss, optimizer=None, scheduler=None, params=None, clip: Optional[float] = None,
               prefix: str = "actor") -> dict:
        """One optimizer update from `loss`, a scalar tensor or an iterable of scalar tensors whose sum
        is the loss (gradient accumulation, e.g. `accumulate`); refuses a non-finite loss before
        touching the weights."""
        if isinstance(loss, torch.Tensor):
            self._check_finite(loss, prefix)  # before any lookup, so it holds outside a Trainer too
            loss = [loss]
        opts = self.optimizers()
        optimizer = optimizer or (opts[0] if isinstance(opts, list) else opts)
        optimizer.zero_grad(set_to_none=True)
        for part in loss:
            self._check_finite(part, prefix)
            self.manual_backward(part)
        params = params if params is not None else [p for p in self.policy.parameters() if p.requires_grad]
        clip = self.config.optim.grad_clip if clip is None else clip
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        if not torch.isfinite(norm):
            raise TrainingError(f"the {prefix} gradient norm is {norm.item()} at step {self.step_count}; lower optim.lr")
        optimizer.step()
        scheduler = scheduler or self._scheduler()
        if scheduler is not None:
            scheduler.step()
        if prefix == "actor":
            self.budget["updates"] += 1
        return {f"{prefix}/grad_norm": float(norm)}

    def _check_finite(self, loss: torch.Tensor, prefix: str) -> None:
        if not torch.isfinite(loss):
            raise TrainingError(f"the {prefix} loss is {loss.item()} at step {self.step_count}; lower optim.lr "
                                "(on the chain task, lr above 3e-4 with 32 prompts collapses) or check the rewards")

    def _scheduler(self):
        sch = self.lr_schedulers()
        return sch[0] if isinstance(sch, list) else sch

    def configure_optimizers(self):
        o = self.config.optim
        params = [p for p in self.policy.parameters() if p.requires_grad]
        opt = adamw(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
        warm = max(o.warmup_steps, 0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda n: min(1.0, (n + 1) / warm) if warm else 1.0)
        return [opt], [sched]

    # ----- the RL step ----------------------------------------------------------------------
    def rl_step(self, step: int) -> dict:
        raise NotImplementedError

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

    def log_metrics(self, metrics: dict, step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        self.history.append({"step": step, **clean})
        if self.logger is not None:
            self.logger.log_metrics(clean, step=step)

    # ----- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, examples: Optional[list] = None, *, samples: Optional[int] = None, log: bool = True,
                 chunk: int = 64) -> dict:
        """Greedy accuracy, and k samples per held-out prompt at the evaluation temperature:
        accuracy (pass@1), pass@k, maj@k, lengths of correct and wrong completions, entropy.
        Draws from its own generator, seeded by the run seed alone."""
        cfg = self.config.train
        examples = examples if examples is not None else self.eval_examples
        n = samples or cfg.eval_samples
        generator = torch.Generator().manual_seed(_seed_of(self.config.seed, 4))
        correct, answers, lengths, greedy, entropy_sum, entropy_tokens = [], [], [], [], 0.0, 0.0
        for i in range(0, len(examples), chunk):
            part = examples[i: i + chunk]
            g = self.score(self.generate(part, group_size=1, greedy=True), part, 1)
            greedy.extend(g.correct.tolist())
            ro = self.generate(part, group_size=n, temperature=cfg.eval_temperature, generator=generator,
                               with_entropy=True)
            s = self.score(ro, part, n)
            correct.append(s.correct.view(len(part), n).cpu().numpy())
            lengths.append(ro.lengths.view(len(part), n).cpu().numpy())
            answers.extend([self.task.extract_answer(t) if f else None for t, f in
                            zip(s.texts[j * n:(j + 1) * n], ro.finished[j * n:(j + 1) * n].tolist())]
                           for j in range(len(part)))
            entropy_sum += float(ro.entropy.sum())
            entropy_tokens += float(ro.completion_mask.sum())
        metrics = summarize(np.concatenate(correct), answers, [ex.answer for ex in examples],
                            np.concatenate(lengths), np.array(greedy), entropy_sum / max(entropy_tokens, 1.0))
        if log:
            self.last_eval = metrics
            self.log_metrics(metrics, step=self.step_count)
            if self.on_eval is not None:
                self.on_eval(self.step_count, metrics)
        return metrics

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
            **self.extra_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["grpo_lab"]
        self.step_count = state["step_count"]
        self.budget = dict(state["budget"])
        self.sample_generator.set_state(state["sample_generator"])
        self.update_generator.set_state(state["update_generator"])
        self.history = list(state.get("history", []))
        self.last_eval = dict(state.get("last_eval", {}))
        self.load_extra_state(state)

    def extra_state(self) -> dict:
        """Method-specific state a resumed run needs (a replay buffer, a lagging copy)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


def adamw(params, **kwargs) -> torch.optim.AdamW:
    """AdamW with the fused kernel where this torch has it for these parameters' device, else the plain one."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, **kwargs)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float((x * mask).sum() / mask.sum().clamp(min=1.0))


LossFn = Callable[[torch.Tensor], torch.Tensor]
