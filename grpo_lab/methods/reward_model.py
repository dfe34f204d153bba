"""Reward models: the preference pairs they learn from, their Bradley-Terry objective, the data source
of the `reward_model` method, and the loop that retrains one inside an RL run (iterative RL).

A pair is (prompt ids, chosen ids, rejected ids), token-id lists with EOS where the completion
finished, so that pairs go into checkpoints and folders as plain data. Pairs come from:

- the policy (`reward_model.pairs: policy`): `reward_model.prompts` training prompts x
  `rollout.group_size` samples; in each prompt's group every distinct completion the task's verifier
  rejects is paired with a distinct accepted one (cycling through those), so the reward model learns
  the verifier's preference from the policy's own outputs;
- a dataset (`pairs: dataset`): each row's `reward_model.chosen` and `reward_model.rejected` columns.

`reward_model.label_noise` flips each training pair with that probability, seeded (an imperfect
reward model on purpose); held-out pairs (`reward_model.eval_prompts` held-out prompts or rows)
keep their true labels: their accuracy is agreement with the verifier (or the data).
"""

from __future__ import annotations

from typing import Optional

import torch

from grpo_lab.config import ConfigError
from grpo_lab.core.preference import bradley_terry_loss
from grpo_lab.errors import TrainingError
from grpo_lab.methods.batch import Batch, StepData
from grpo_lab.methods.data import DATA, verifier_pairs
from grpo_lab.methods.objectives import OBJECTIVES, Objective
from grpo_lab.models.reward import RewardModel
from grpo_lab.rollout.encode import pack_rows
from grpo_lab.rollout.sampler import inference
from grpo_lab.seeding import Stream, generator

TRAIN, EVAL, NOISE, PROMPTS, REPLAY = range(5)  # the parts of Stream.REWARD_PAIRS' seeds: what is drawn


# ----- pairs ------------------------------------------------------------------------------------
@torch.no_grad()
def policy_pairs(ctx, examples: list, *, gen: torch.Generator) -> tuple[list[tuple], dict]:
    """Pairs from `rollout.group_size` samples of each example by the current policy, labelled by the
    task's verifier; and how they were drawn (`reward_model/...`)."""
    G = ctx.config.rollout.group_size
    batch = ctx.score(ctx.generate(examples, group_size=G, generator=gen), examples, G)
    pairs = verifier_pairs(batch, G)
    return pairs, {"reward_model/samples": float(batch.rows), "reward_model/sample_accuracy":
                   float(batch.correct.float().mean())}


def dataset_pairs(ctx, examples: list) -> list[tuple]:
    """Pairs from the `reward_model.chosen` and `reward_model.rejected` columns of each example."""
    rm, tok = ctx.config.reward_model, ctx.tokenizer
    pairs = []
    for ex in examples:
        missing = [c for c in (rm.chosen, rm.rejected) if c not in ex.fields]
        if missing:
            raise TrainingError(f"reward_model.pairs is dataset but a row of task {ctx.task.name!r} has no column "
                                f"{missing[0]!r} (its columns: {', '.join(map(str, ex.fields))}); set "
                                "reward_model.chosen and reward_model.rejected to its columns")
        prompt, chosen, rejected = tok([ex.prompt, str(ex.fields[rm.chosen]), str(ex.fields[rm.rejected])],
                                       add_special_tokens=False)["input_ids"]
        pairs.append((prompt, chosen + [tok.eos_token_id], rejected + [tok.eos_token_id]))
    return pairs


def flip(pairs: list[tuple], probability: float, gen: torch.Generator) -> tuple[list[tuple], int]:
    """Each pair with chosen and rejected swapped with `probability` (label noise); and how many were."""
    if probability <= 0 or not pairs:
        return list(pairs), 0
    flips = (torch.rand(len(pairs), generator=gen) < probability).tolist()
    return [(p, r, c) if f else (p, c, r) for (p, c, r), f in zip(pairs, flips)], sum(flips)


def chosen_examples(examples: list, count: int, gen: Optional[torch.Generator]) -> list:
    """`count` of `examples`: a seeded choice without replacement, or the first ones without a generator."""
    if gen is None or count >= len(examples):
        return list(examples[:count])
    order = torch.randperm(len(examples), generator=gen)[:count].sort().values
    return [examples[i] for i in order.tolist()]


def make_pairs(ctx, rm, *, seed: int, iteration: int, source: str) -> tuple[list[tuple], list[tuple], dict]:
    """(training pairs with label noise, held-out pairs, metrics) of reward-model config `rm` (a
    RewardModelConfig) from `source` (policy | dataset), drawn by (seed, iteration)."""
    def gen(what: int) -> torch.Generator:
        return generator(seed, Stream.REWARD_PAIRS, iteration, what)

    train = chosen_examples(ctx.train_examples, rm.prompts, gen(PROMPTS))
    held_out = list(ctx.task.eval_examples())[: rm.eval_prompts]
    metrics: dict = {}
    if source == "dataset":
        train_pairs, eval_pairs = dataset_pairs(ctx, train), dataset_pairs(ctx, held_out)
    else:
        train_pairs, metrics = policy_pairs(ctx, train, gen=gen(TRAIN))
        eval_pairs, _ = policy_pairs(ctx, held_out, gen=gen(EVAL))
    train_pairs, flipped = flip(train_pairs, rm.label_noise, gen(NOISE))
    metrics.update({"reward_model/pairs": float(len(train_pairs)), "reward_model/flipped": float(flipped),
                    "reward_model/eval_pairs": float(len(eval_pairs))})
    return train_pairs, eval_pairs, metrics


def pair_batch(pairs: list[tuple], pad_id: int, device=None) -> Batch:
    """N pairs as 2N rows, chosen then rejected (row i paired with row N + i)."""
    prompts = [p for p, _, _ in pairs] * 2
    completions = [c for _, c, _ in pairs] + [r for _, _, r in pairs]
    return Batch(pack_rows(prompts, completions, pad_id=pad_id, device=device), pairs=len(pairs))


def pair_rewards(model: RewardModel, batch: Batch, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(r(chosen), r(rejected)) of the pairs `pairs` (indices) of a pair batch, (n,) each."""
    rows = torch.cat([pairs, pairs + batch.pairs])
    rewards = model.score(batch.rollout.select(rows))
    return rewards.chunk(2)


@torch.no_grad()
def pair_accuracy(model: RewardModel, pairs: list[tuple], *, pad_id: int, device=None, chunk: int = 64,
                  prefix: str = "eval/") -> dict:
    """Held-out `pair_accuracy` (share of pairs whose chosen completion gets the higher reward, ties half) and
    `reward_margin` (mean r(chosen) - r(rejected)) of `model` on `pairs`."""
    if not pairs:
        return {f"{prefix}pairs": 0.0}
    margins = []
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        chosen, rejected = inference(pair_rewards)(model, pair_batch(part, pad_id, device), torch.arange(len(part)))
        margins.append(chosen - rejected)
    margin = torch.cat(margins)
    correct = (margin > 0).float() + 0.5 * (margin == 0).float()  # a tie counts half, as in the training metric
    return {f"{prefix}pair_accuracy": float(correct.mean()), f"{prefix}reward_margin": float(margin.mean()),
            f"{prefix}pairs": float(len(pairs))}


# ----- training ---------------------------------------------------------------------------------
def fit_pairs(ctx, model: RewardModel, pairs: list[tuple], rm, *, seed: int, iteration: int) -> dict:
    """`rm.steps` AdamW updates (lr `rm.lr`, a fresh optimizer) of `model` on minibatches of `rm.batch_size`
    pairs, epochs over `pairs` in orders drawn by (seed, iteration, epoch): retraining inside an RL run.
    The same loss as the `reward_model` method's update loop (`BradleyTerryObjective`)."""
    if not pairs:
        return {"reward_model/fit_steps": 0.0}
    o = ctx.config.optim
    model.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=rm.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
    order: list[int] = []
    epoch, losses, accuracies = 0, [], []
    for _ in range(rm.steps):
        if len(order) < rm.batch_size:
            perm = torch.randperm(len(pairs), generator=generator(seed, Stream.REWARD_ORDER, iteration, epoch))
            order, epoch = order + perm.tolist(), epoch + 1
        take, order = order[: rm.batch_size], order[rm.batch_size:]
        with ctx.autocast():
            chosen, rejected = pair_rewards(model, pair_batch([pairs[i] for i in take], ctx.tokenizer.pad_token_id,
                                                              ctx.device), torch.arange(len(take)))
            result = bradley_terry_loss(chosen, rejected)
        loss = result.loss.mean()
        if not torch.isfinite(loss):
            raise TrainingError(f"the reward model's loss is {loss.item()} while retraining at step {ctx.step_count}; "
                                "lower reward.model's lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
        accuracies.append(float(result.metrics["reward_model/accuracy"]))
    model.requires_grad_(False).eval()
    return {"reward_model/fit_steps": float(rm.steps), "reward_model/fit_loss": sum(losses[-10:]) / len(losses[-10:]),
            "reward_model/fit_accuracy": sum(accuracies[-10:]) / len(accuracies[-10:])}


@OBJECTIVES.register("bradley_terry")
class BradleyTerryObjective(Objective):
    """-log sigmoid(r(x, y+) - r(x, y-)) per pair, the mean over pairs, trains the reward model (its own
    AdamW at `reward_model.lr`)."""

    model, prefix = "reward_model", "reward_model"
    reductions = {"reward_model/loss": "loss"}

    def learning_rate(self) -> float:
        return self.config.reward_model.lr

    def token_mask(self, batch: Batch) -> None:
        return None  # pairs weigh equally

    def loss(self, ctx, batch: Batch, pairs: torch.Tensor):
        result = bradley_terry_loss(*pair_rewards(ctx.reward_model, batch, pairs))
        loss = result.loss.mean()
        return loss, {"reward_model/loss": float(loss.detach()), **{k: float(v) for k, v in result.metrics.items()}}


# ----- the reward_model method's data -----------------------------------------------------------
def check_reward_pairs(config) -> None:
    from grpo_lab.config.task import DATA_TASKS

    rm = config.reward_model
    if rm.pairs == "dataset" and config.task.name not in DATA_TASKS and ":" not in config.task.name:
        raise ConfigError(f"reward_model.pairs is dataset but task {config.task.name} has no data rows; use task.name: "
                          "dataset with chosen and rejected columns, or reward_model.pairs: policy")
    if rm.pairs == "policy" and config.rollout.group_size < 2:
        raise ConfigError("reward_model.pairs is policy, which pairs an accepted and a rejected sample of one prompt: "
                          "rollout.group_size must be at least 2")
    default_steps = type(rm)().steps
    if rm.steps != default_steps and rm.steps != config.train.steps:
        raise ConfigError(f"reward_model.steps is {rm.steps} but a reward_model run makes train.steps = "
                          f"{config.train.steps} updates; set train.steps (reward_model.steps is the length of a "
                          "reward model an RL run trains, reward.model: {steps: N})")


@DATA.register("reward_pairs", reads=("reward_model.*",), check=check_reward_pairs)
class RewardPairs:
    """(q, o+, o-): o+ a sample the verifier accepts, o- one it rejects, or a dataset's chosen/rejected rows.

    Made at the first step; `reward_model.batch_size` pairs per step, in epochs of seeded orders."""

    def __init__(self, config, refill=None):
        self.train: Optional[list] = None
        self.held_out: Optional[list] = None
        self.made: dict = {}

    def ensure(self, ctx) -> dict:
        """Make the pairs (once); the metrics of how they were made, the first time."""
        if self.train is not None:
            return {}
        rm = ctx.config.reward_model
        self.train, self.held_out, self.made = make_pairs(ctx, rm, seed=rm.seed, iteration=0, source=rm.pairs)
        if not self.train:
            raise TrainingError(f"no preference pair: the {rm.prompts} prompts' samples were all accepted or all "
                                "rejected by the verifier; sample more prompts (reward_model.prompts) or start from "
                                "another warm start")
        return dict(self.made)

    def collect(self, ctx, step: int) -> StepData:
        metrics = self.ensure(ctx)
        size, n = ctx.config.reward_model.batch_size, len(self.train)
        picked = []
        while len(picked) < size:  # epochs over the pairs, each in its own seeded order
            epoch, offset = divmod(step * size + len(picked), n)
            order = torch.randperm(n, generator=generator(ctx.config.seed, Stream.REWARD_ORDER, 0, epoch)).tolist()
            picked.extend(order[offset: offset + size - len(picked)])
        rank, world = ctx.shard()  # over several processes each trains on its slice of the step's pairs
        if size % world:
            raise TrainingError(f"reward_model.batch_size={size} pairs do not split over {world} processes; make it "
                                "a multiple of train.devices x train.num_nodes")
        picked = picked[rank * size // world:(rank + 1) * size // world]
        pairs = [self.train[i] for i in picked]
        return StepData(pair_batch(pairs, ctx.tokenizer.pad_token_id, ctx.device), metrics)

    def evaluate(self, ctx) -> dict:
        """Held-out pair accuracy and reward margin."""
        self.ensure(ctx)
        return pair_accuracy(ctx.reward_model, self.held_out, pad_id=ctx.tokenizer.pad_token_id, device=ctx.device)

    def after_update(self, ctx, data: StepData, step: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"train": self.train, "held_out": self.held_out, "made": self.made}

    def load_state_dict(self, state: dict) -> None:
        self.train, self.held_out, self.made = state.get("train"), state.get("held_out"), state.get("made", {})


def reward_model_for(config, policy, given: Optional[RewardModel] = None, *, trained: bool = False):
    """The reward model of a run: `given`; a fresh one on a copy of `policy`'s trunk when the method
    trains one; the folder `reward.model` names; else None. A learned reward is frozen."""
    model = given
    if model is None and trained:
        model = RewardModel.from_policy(policy)
    elif model is None and isinstance(config.reward.model, str):
        model = RewardModel.load(config.reward.model, dtype=config.model.dtype,
                                 trust_remote_code=config.model.trust_remote_code)
    elif model is None and config.reward.learned:
        raise ConfigError("reward.model is a reward-model config, which grpo_lab.runs.run trains (and caches) before "
                          "the run; a module built by hand takes reward_model=RewardModel.load(folder)")
    if model is not None and not trained:
        model.requires_grad_(False).eval()
    return model
