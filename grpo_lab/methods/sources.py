"""Data sources: where each step's training rows come from (registry `DATA`).

- `online`: P prompts x G completions per step from the behaviour policy (`Step.behaviour`: the
  learner, or a stale, low-precision or noisy copy, `offpolicy.*`), scored and shaped;
  `offpolicy.replay` mixes groups from a replay buffer into the step. With a refill filter
  (dynamic sampling), groups it rejects are dropped and fresh prompts drawn until P groups remain.
- `rft_pool`: correct completions sampled once from the starting policy (offline RFT).
- `preference_pairs`: (correct, wrong) pairs of one prompt, sampled once or every
  `dpo.refresh_every` steps (DPO, iterative DPO).
- `references`: the task's reference completions (SFT); `reference_draws`: the same, drawn with
  replacement by the warm start's seed (the SFT warm start).

A source is built once per run (`Source(config)`); `collect(step)` returns a `StepData` (the
batch, its metrics, and the budget it spent); `after_update(step, data)` runs after the step's
updates; `state_dict()` goes into checkpoints.
"""

from __future__ import annotations

import time
from itertools import cycle
from typing import Optional

import numpy as np
import torch

from grpo_lab.core import advantages as adv_lib
from grpo_lab.errors import TrainingError
from grpo_lab.methods.batch import Batch, StepData, concat, rollout_metrics, select_groups
from grpo_lab.methods.protocols import DataSource, Filter
from grpo_lab.methods.step import Step, add_budget, budget_of
from grpo_lab.registry import Registry
from grpo_lab.rollout.encode import encode_completions, encode_prompts, pack_rows, unpack_rows
from grpo_lab.rollout.replay import ReplayBuffer, ReplayGroup
from grpo_lab.rollout.sampler import Rollout
from grpo_lab.seeding import Stream, generator

DATA: Registry[type] = Registry("data source")
FILTERS: Registry[type] = Registry("refill filter")
BEHAVIOUR_KEYS = ("offpolicy.staleness", "offpolicy.replay", "offpolicy.eta", "offpolicy.sampler_noise",
                  "offpolicy.sampler_dtype")


@FILTERS.register("zero_variance", reads=("rollout.dynamic_sampling", "rollout.max_sampling_rounds"))
class ZeroVariance(Filter):
    """DAPO's dynamic sampling (Eq. 11): groups whose shaped rewards all agree carry no gradient
    under a group baseline; they are dropped and fresh prompts drawn in their place."""

    def active(self, config) -> bool:
        return config.rollout.dynamic_sampling

    def keep(self, batch: Batch, group_size: int) -> torch.Tensor:
        """Indices of the groups to keep, (K,)."""
        return (~adv_lib.zero_std_groups(batch.rewards, group_size)).nonzero().flatten()


@DATA.register("online", reads=BEHAVIOUR_KEYS)
class Online(DataSource):
    """q ~ P(Q), {o_i} ~ pi_behav(O|q): the learner, or a stale / low-precision / noisy copy, plus replay."""

    def __init__(self, config):
        super().__init__(config)
        self.buffer = ReplayBuffer(config.offpolicy.eta)
        self.replay_generator = generator(config.seed, Stream.REPLAY)
        self.fresh: Optional[tuple[Batch, int]] = None  # this step's sampled groups and their version

    def extra_prompts(self, step: Step, round_: int) -> list:
        """Refill prompts for round `round_` >= 1 of the step: P training prompts drawn without
        replacement by a generator seeded with (seed, step, round) alone, so a resumed run draws the same."""
        n, count = len(step.train_examples), self.config.rollout.prompts_per_step
        order = torch.randperm(n, generator=generator(self.config.seed, Stream.EXTRA_PROMPTS, step.index, round_))
        return [step.train_examples[i] for i in order[: min(count, n)].tolist()]

    def refill(self, step: Step) -> Optional[Filter]:
        """The recipe's refill filter, when dynamic sampling is on."""
        if step.recipe.refill is None:
            return None
        from grpo_lab.methods.protocols import build

        refill = build(FILTERS.get(step.recipe.refill).obj, self.config)
        return refill if refill.active(self.config) else None

    def sample(self, step: Step, sampler) -> tuple[Optional[Batch], Batch, dict, dict]:
        """(the kept groups or None, every group drawn, sampling metrics, the budget spent): one round,
        or with a refill filter up to `rollout.max_sampling_rounds` rounds until P groups are kept."""
        ro = self.config.rollout
        G, P = ro.group_size, ro.prompts_per_step
        refill = self.refill(step)
        rounds = ro.max_sampling_rounds if refill is not None else 1
        # over several processes each samples its slice of a round; with a refill every process then
        # holds the whole round and makes the same choice, as one process would
        group = step.collective if refill is not None and step.world > 1 else None
        pad = step.tokenizer.pad_token_id
        drawn, kept, shaping, budget = [], [], {}, {}
        need, dropped, prompts = P, 0, 0
        for round_ in range(rounds):
            examples = step.prompts(step.index) if round_ == 0 else step.slice_of(self.extra_prompts(step, round_))
            rollout = step.generate(examples, group_size=G, policy=sampler)
            budget = add_budget(budget, budget_of(rollout, len(examples)))
            prompts += getattr(examples, "total", len(examples))
            batch, metrics = step.shape(step.score(rollout, examples, G))
            if group is not None:
                batch, metrics = group.batch(batch, pad), group.mean_metrics(metrics)
            for k, v in metrics.items():
                shaping[k] = shaping.get(k, 0.0) + v
            drawn.append(batch)
            if refill is None:
                kept.append(batch)
                break
            informative = refill.keep(batch, G)
            dropped += batch.rows // G - len(informative)
            if len(informative):
                kept.append(select_groups(batch, informative[:need], G))
                need -= min(need, len(informative))
            if need == 0:
                break
        stats = {"rollout/sampling_rounds": float(len(drawn)), "rollout/prompts_drawn": float(prompts),
                 "rollout/dropped_groups": float(dropped), **{k: v / len(drawn) for k, v in shaping.items()}}
        kept_batch = concat(kept, pad) if kept else None
        if group is not None and kept_batch is not None:
            kept_batch = self.share_of(kept_batch, G, group.rank, group.world)
        return kept_batch, concat(drawn, pad), stats, budget

    @staticmethod
    def share_of(batch: Batch, group_size: int, rank: int, world: int) -> Optional[Batch]:
        """This process's equal share of the kept groups (cut to a multiple of the processes, so that
        every process trains on as many rows); None when fewer groups than processes were kept."""
        per = batch.rows // group_size // world
        if per == 0:
            return None
        return select_groups(batch, torch.arange(rank * per, (rank + 1) * per), group_size)

    def collect(self, step: Step) -> StepData:
        off, G = self.config.offpolicy, self.config.rollout.group_size
        sampler, version = step.behaviour()
        kept, drawn, stats, budget = self.sample(step, sampler)
        metrics = {**rollout_metrics(drawn, G), **stats}
        # over several processes each replays its share, from its own buffer
        replayed = self.buffer.sample(off.replay // step.world, self.replay_generator, version=step.index) \
            if off.replay else []
        self.fresh = (kept, version) if kept is not None else None
        parts = ([kept] if kept is not None else []) + [self.replayed(step, g) for g in replayed]
        if not parts:
            return StepData(None, metrics, budget)
        fresh_rows = kept.rows if kept is not None else 0
        batch = concat(parts, step.tokenizer.pad_token_id)
        batch.versions = torch.tensor([version] * fresh_rows + [g.version for g in replayed for _ in range(G)])
        batch.replayed = torch.arange(len(batch.versions)) >= fresh_rows
        if off.mismatched:
            metrics.update(staleness_metrics(batch.versions, batch.replayed, step.index,
                                             buffer_groups=len(self.buffer)))
        return StepData(batch, metrics, budget)

    def replayed(self, step: Step, group: ReplayGroup) -> Batch:
        G = self.config.rollout.group_size
        return Batch(group.rollout, [step.train_examples[group.example_index]] * G, group.texts, group.rewards,
                     group.correct)

    def after_update(self, step: Step, data: StepData) -> None:
        """Store this step's informative groups (replay), then drop groups older than eta."""
        if self.config.offpolicy.replay and self.fresh is not None:
            self.remember(step, *self.fresh)
        self.fresh = None
        self.buffer.evict(step.index + 1)

    def remember(self, step: Step, batch: Batch, version: int) -> None:
        G = self.config.rollout.group_size
        index = {id(ex): i for i, ex in enumerate(step.train_examples)}
        informative = (~adv_lib.zero_std_groups(batch.rewards, G)).nonzero().flatten().tolist()
        for g in informative:
            rows = torch.arange(g * G, (g + 1) * G)
            self.buffer.add(ReplayGroup(batch.rollout.select(rows), index[id(batch.examples[g * G])],
                                        batch.texts[g * G:(g + 1) * G], batch.rewards[rows].clone(),
                                        batch.correct[rows].clone(), version))

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.state_dict(), "replay_generator": self.replay_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self.replay_generator.set_state(state["replay_generator"])


def staleness_metrics(versions: torch.Tensor, replayed: torch.Tensor, step: int, *, buffer_groups: int) -> dict:
    """`offpolicy/...` metrics of where a step's rows came from: (B,) versions and replayed flags."""
    return {
        "offpolicy/replayed_frac": float(replayed.float().mean()),
        "offpolicy/stale_frac": float((versions < step).float().mean()),
        "offpolicy/staleness_mean": float((step - versions).float().mean()),
        "offpolicy/buffer_groups": float(buffer_groups),
    }


class Pool(DataSource):
    """Training data sampled ahead of the steps that use it. A pool covers steps [first, last): it
    holds the G completions of each of those steps' prompts, turned into items by `make_items`,
    shuffled by (seed, first) and split into one batch per step."""

    def __init__(self, config):
        super().__init__(config)
        self.pool: Optional[dict] = None

    def span(self, step: int) -> tuple[int, int]:
        return 0, self.config.train.steps

    def make_items(self, batch: Batch, group_size: int) -> list:
        raise NotImplementedError

    def check_pool(self, items: list, *, samples: int, correct: int, first: int) -> None:
        """Raise when a pool cannot train anything."""

    def items(self, step: Step) -> tuple[list, dict, dict]:
        """(the items of the step, metrics, the budget spent), building the pool first when the step
        starts a new one."""
        first, last = self.span(step.index)
        metrics, budget = {}, {}
        if self.pool is None or self.pool["first"] != first:
            start = time.perf_counter()
            self.pool, budget = self.build(step, first, last)
            metrics = {"pool/items": float(len(self.pool["items"])),
                       "pool/build_s": time.perf_counter() - start,
                       "pool/accuracy": self.pool["accuracy"]}
        index = self.pool["batches"][step.index - first]
        return [self.pool["items"][i] for i in index], metrics, budget

    @torch.no_grad()
    def build(self, step: Step, first: int, last: int) -> tuple[dict, dict]:
        G = self.config.rollout.group_size
        items, correct, samples, budget = [], 0, 0, {}
        for s in range(first, last):
            examples = step.prompts(s)
            rollout = step.generate(examples, group_size=G)
            budget = add_budget(budget, budget_of(rollout, len(examples)))
            batch = step.score(rollout, examples, G)
            items.extend(self.make_items(batch, G))
            correct += int(batch.correct.sum())
            samples += rollout.completion_ids.shape[0]
        self.check_pool(items, samples=samples, correct=correct, first=first)
        order = torch.randperm(len(items), generator=generator(self.config.seed, Stream.POOL_ORDER, first))
        batches = [part.tolist() for part in np.array_split(order.numpy(), last - first)]
        return {"first": first, "items": items, "batches": batches, "accuracy": correct / max(samples, 1)}, budget

    def state_dict(self) -> dict:
        return {"pool": self.pool}

    def load_state_dict(self, state: dict) -> None:
        self.pool = state.get("pool")


def distinct_rows(batch: Batch, keep: torch.Tensor) -> list[int]:
    """Indices of the rows where `keep` is True, dropping repeats of a (prompt, completion) already kept."""
    seen, out = set(), []
    rows = unpack_rows(batch.rollout)
    for i in keep.nonzero().flatten().tolist():
        key = (tuple(rows[i][0]), tuple(rows[i][1]))
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out


def verifier_pairs(batch: Batch, group_size: int) -> list[tuple]:
    """(prompt, accepted, rejected) pairs within each group of a scored batch: each distinct rejected
    completion paired with a distinct accepted one of the same prompt, cycling through those."""
    rows = unpack_rows(batch.rollout)
    pairs = []
    for start in range(0, len(rows), group_size):
        group = torch.zeros_like(batch.correct)
        group[start:start + group_size] = True
        accepted = distinct_rows(batch, batch.correct & group)
        rejected = distinct_rows(batch, ~batch.correct & group)
        if accepted:
            pairs.extend((rows[a][0], rows[a][1], rows[r][1]) for a, r in zip(cycle(accepted), rejected))
    return pairs


@DATA.register("rft_pool")
class RFTPool(Pool):
    """q ~ P_sft(Q), o ~ pi_sft(O|q): the correct completions, sampled once at the first step, deduplicated."""

    def make_items(self, batch: Batch, group_size: int) -> list:
        rows = unpack_rows(batch.rollout)
        return [rows[i] for i in distinct_rows(batch, batch.correct)]

    def check_pool(self, items: list, *, samples: int, correct: int, first: int) -> None:
        if not items:
            raise TrainingError(f"RFT kept no correct completion out of {samples} samples of the SFT policy; "
                                "warm start longer (sft.steps) or pick an easier task")

    def collect(self, step: Step) -> StepData:
        items, metrics, budget = self.items(step)
        metrics["rft/kept"] = float(len(items))
        if not items:
            return StepData(None, {**metrics, "rft/skipped": 1.0}, budget)
        rollout = pack_rows([p for p, _ in items], [c for _, c in items], pad_id=step.tokenizer.pad_token_id,
                            device=step.device)
        return StepData(Batch(rollout), {**metrics, "rft/skipped": 0.0}, budget)


def check_pairs(config) -> None:
    from grpo_lab.config import ConfigError

    if config.rollout.group_size < 2:
        raise ConfigError(f"rollout.group_size is {config.rollout.group_size}; DPO pairs a correct and a wrong "
                          "completion of one prompt, so it needs at least 2 completions per prompt")


@DATA.register("preference_pairs", reads=("dpo.refresh_every",), check=check_pairs)
class PreferencePairs(Pool):
    """q ~ P_sft(Q), o+, o- ~ pi_sft(O|q): (correct, wrong) pairs of one prompt, resampled every dpo.refresh_every steps.

    Pairs each distinct wrong completion of a prompt with a distinct correct one of the same prompt
    (cycling through the correct ones); with `dpo.refresh_every: N` they are rebuilt from the current
    policy every N steps (iterative DPO), the reference staying the SFT model."""

    def span(self, step: int) -> tuple[int, int]:
        steps = self.config.train.steps
        every = self.config.dpo.refresh_every or steps
        first = step // every * every
        return first, min(first + every, steps)

    def make_items(self, batch: Batch, group_size: int) -> list:
        return verifier_pairs(batch, group_size)

    def check_pool(self, items: list, *, samples: int, correct: int, first: int) -> None:
        if items or first > 0:
            return
        if correct == samples:
            why = "every one was correct, so there is no wrong answer to prefer against"
        elif correct == 0:
            why = "none was correct, so there is no correct answer to prefer"
        else:
            why = "no prompt had both a correct and a wrong one"
        raise TrainingError(f"DPO found no (correct, wrong) pair in {samples} samples of the SFT policy: {why}; "
                            "DPO needs a task and warm start that give both")

    def collect(self, step: Step) -> StepData:
        items, metrics, budget = self.items(step)
        metrics["dpo/pairs"] = float(len(items))
        if not items:
            return StepData(None, {**metrics, "dpo/skipped": 1.0}, budget)
        prompts = [p for p, _, _ in items] * 2
        completions = [c for _, c, _ in items] + [r for _, _, r in items]
        rollout = pack_rows(prompts, completions, pad_id=step.tokenizer.pad_token_id, device=step.device)
        return StepData(Batch(rollout, pairs=len(items)), {**metrics, "dpo/skipped": 0.0}, budget)


def reference_batch(step: Step, examples: list) -> StepData:
    """The examples' reference completions as a batch (prompt left-padded, completion and EOS
    right-padded), what it spent: prompts and completion tokens."""
    p_ids, p_mask = encode_prompts(step.tokenizer, [ex.prompt for ex in examples], step.device)
    c_ids, c_mask = encode_completions(step.tokenizer, [ex.target for ex in examples], step.device)
    rollout = Rollout(p_ids, p_mask, c_ids, c_mask, torch.zeros_like(c_mask),
                      torch.ones(len(examples), dtype=torch.bool, device=step.device))
    return StepData(Batch(rollout), {}, {"prompts": len(examples), "tokens": int(c_mask.sum())})


@DATA.register("references")
class References(DataSource):
    """q, o ~ P_sft(Q, O): the task's reference completions of P x G training prompts."""

    def collect(self, step: Step) -> StepData:
        return reference_batch(step, step.prompts(step.index, self.config.rollout.batch_size))


@DATA.register("reference_draws")
class ReferenceDraws(DataSource):
    """q, o ~ P_sft(Q, O) drawn with replacement: P training examples per step, the draws of a
    `torch.utils.data.RandomSampler` seeded with the run's seed (the warm start's `sft.seed`)."""

    def __init__(self, config):
        super().__init__(config)
        self.order: Optional[list[int]] = None

    def collect(self, step: Step) -> StepData:
        size = self.config.rollout.prompts_per_step
        if self.order is None:
            gen = torch.Generator().manual_seed(self.config.seed)
            draws = torch.utils.data.RandomSampler(range(len(step.train_examples)), replacement=True,
                                                   num_samples=self.config.train.steps * size, generator=gen)
            self.order = list(draws)
        picked = self.order[step.index * size:(step.index + 1) * size]
        return reference_batch(step, [step.train_examples[i] for i in picked])

    def state_dict(self) -> dict:
        return {"order": self.order}

    def load_state_dict(self, state: dict) -> None:
        self.order = state.get("order")
