"""Reward models: the preference pairs they learn from, their Bradley-Terry objective (which the engine's
update loop runs, for the `reward_model` method and to retrain one inside an RL run: iterative RL), and
the data source of the `reward_model` method.

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
from grpo_lab.methods.objectives import OBJECTIVES
from grpo_lab.methods.protocols import DataSource, Objective
from grpo_lab.methods.sources import DATA, verifier_pairs
from grpo_lab.methods.step import Step
from grpo_lab.models.reward import RewardModel
from grpo_lab.rollout.encode import pack_rows
from grpo_lab.rollout.sampler import inference
from grpo_lab.seeding import Stream, generator

TRAIN, EVAL, NOISE, PROMPTS, REPLAY = range(5)  # the parts of Stream.REWARD_PAIRS' seeds: what is drawn


# ----- pairs ------------------------------------------------------------------------------------
@torch.no_grad()
def policy_pairs(step: Step, examples: list, *, gen: torch.Generator) -> tuple[list[tuple], dict]:
    """Pairs from `rollout.group_size` samples of each example by the current policy, labelled by the
    task's verifier; and how they were drawn (`reward_model/...`)."""
    G = step.config.rollout.group_size
    batch = step.score(step.generate(examples, group_size=G, generator=gen), examples, G)
    pairs = verifier_pairs(batch, G)
    return pairs, {"reward_model/samples": float(batch.rows), "reward_model/sample_accuracy":
                   float(batch.correct.float().mean())}


def dataset_pairs(step: Step, examples: list) -> list[tuple]:
    """Pairs from the `reward_model.chosen` and `reward_model.rejected` columns of each example."""
    rm, tok = step.config.reward_model, step.tokenizer
    pairs = []
    for ex in examples:
        missing = [c for c in (rm.chosen, rm.rejected) if c not in ex.fields]
        if missing:
            raise TrainingError(f"reward_model.pairs is dataset but a row of task {step.task.name!r} has no column "
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


def make_pairs(step: Step, rm, *, seed: int, iteration: int, source: str) -> tuple[list[tuple], list[tuple], dict]:
    """(training pairs with label noise, held-out pairs, metrics) of reward-model config `rm` (a
    RewardModelConfig) from `source` (policy | dataset), drawn by (seed, iteration)."""
    def gen(what: int) -> torch.Generator:
        return generator(seed, Stream.REWARD_PAIRS, iteration, what)

    train = chosen_examples(step.train_examples, rm.prompts, gen(PROMPTS))
    held_out = list(step.task.eval_examples())[: rm.eval_prompts]
    metrics: dict = {}
    if source == "dataset":
        train_pairs, eval_pairs = dataset_pairs(step, train), dataset_pairs(step, held_out)
    else:
        train_pairs, metrics = policy_pairs(step, train, gen=gen(TRAIN))
        eval_pairs, _ = policy_pairs(step, held_out, gen=gen(EVAL))
    train_pairs, flipped = flip(train_pairs, rm.label_noise, gen(NOISE))
    metrics.update({"reward_model/pairs": float(len(train_pairs)), "reward_model/flipped": float(flipped),
                    "reward_model/eval_pairs": float(len(eval_pairs))})
    return train_pairs, eval_pairs, metrics


def pair_batch(pairs: list[tuple], pad_id: int, device=None) -> Batch:
    """N pairs as 2N rows, chosen then rejected (row i paired with row N + i)."""
    prompts = [p for p, _, _ in pairs] * 2
    completions = [c for _, c, _ in pairs] + [r for _, _, r in pairs]
    return Batch(pack_rows(prompts, completions, pad_id=pad_id, device=device), pairs=len(pairs))


def pair_rewards(score, batch: Batch, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(r(chosen), r(rejected)) of the pairs `pairs` (indices) of a pair batch, (n,) each; `score` gives a
    rollout's rows their rewards (a reward model's `score`, or `Step.rewards`)."""
    rows = torch.cat([pairs, pairs + batch.pairs])
    rewards = score(batch.rollout.select(rows))
    return rewards.chunk(2)


@torch.no_grad()
def pair_accuracy(score, pairs: list[tuple], *, pad_id: int, device=None, chunk: int = 64,
                  prefix: str = "eval/") -> dict:
    """Held-out `pair_accuracy` (share of pairs whose chosen completion gets the higher reward, ties half) and
    `reward_margin` (mean r(chosen) - r(rejected)) of the rewards `score` gives, on `pairs`."""
    if not pairs:
        return {f"{prefix}pairs": 0.0}
    margins = []
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        chosen, rejected = inference(pair_rewards)(score, pair_batch(part, pad_id, device), torch.arange(len(part)))
        margins.append(chosen - rejected)
    margin = torch.cat(margins)
    correct = (margin > 0).float() + 0.5 * (margin == 0).float()  # a tie counts half, as in the training metric
    return {f"{prefix}pair_accuracy": float(correct.mean()), f"{prefix}reward_margin": float(margin.mean()),
            f"{prefix}pairs": float(len(pairs))}


# ----- training ---------------------------------------------------------------------------------
def pair_minibatches(pairs: list[tuple], *, steps: int, size: int, seed: int, iteration: int) -> list[list[int]]:
    """`steps` minibatches of `size` pair indices, epochs over `pairs` in orders drawn by (seed, iteration,
    epoch): how a reward model is retrained inside an RL run."""
    order: list[int] = []
    epoch, out = 0, []
    for _ in range(steps):
        if len(order) < size:
            perm = torch.randperm(len(pairs), generator=generator(seed, Stream.REWARD_ORDER, iteration, epoch))
            order, epoch = order + perm.tolist(), epoch + 1
        out.append(order[:size])
        order = order[size:]
    return out


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

    def loss(self, step: Step, batch: Batch, pairs: torch.Tensor):
        result = bradley_terry_loss(*pair_rewards(step.rewards, batch, pairs))
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
class RewardPairs(DataSource):
    """(q, o+, o-): o+ a sample the verifier accepts, o- one it rejects, or a dataset's chosen/rejected rows.

    Made at the first step; `reward_model.batch_size` pairs per step, in epochs of seeded orders."""

    def __init__(self, config):
        super().__init__(config)
        self.train: Optional[list] = None
        self.held_out: Optional[list] = None
        self.made: dict = {}

    def ensure(self, step: Step) -> dict:
        """Make the pairs (once); the metrics of how they were made, the first time."""
        if self.train is not None:
            return {}
        rm = self.config.reward_model
        self.train, self.held_out, self.made = make_pairs(step, rm, seed=rm.seed, iteration=0, source=rm.pairs)
        if not self.train:
            raise TrainingError(f"no preference pair: the {rm.prompts} prompts' samples were all accepted or all "
                                "rejected by the verifier; sample more prompts (reward_model.prompts) or start from "
                                "another warm start")
        return dict(self.made)

    def collect(self, step: Step) -> StepData:
        metrics = self.ensure(step)
        size, n = self.config.reward_model.batch_size, len(self.train)
        picked: list[int] = []
        while len(picked) < size:  # epochs over the pairs, each in its own seeded order
            epoch, offset = divmod(step.index * size + len(picked), n)
            order = torch.randperm(n, generator=generator(self.config.seed, Stream.REWARD_ORDER, 0, epoch)).tolist()
            picked.extend(order[offset: offset + size - len(picked)])
        rank, world = step.rank, step.world  # over several processes each trains on its slice of the step's pairs
        if size % world:
            raise TrainingError(f"reward_model.batch_size={size} pairs do not split over {world} processes; make it "
                                "a multiple of train.devices x train.num_nodes")
        picked = picked[rank * size // world:(rank + 1) * size // world]
        pairs = [self.train[i] for i in picked]
        return StepData(pair_batch(pairs, step.tokenizer.pad_token_id, step.device), metrics)

    def evaluate(self, step: Step) -> dict:
        """Held-out pair accuracy and reward margin."""
        self.ensure(step)
        return pair_accuracy(step.rewards, self.held_out, pad_id=step.tokenizer.pad_token_id, device=step.device)

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
