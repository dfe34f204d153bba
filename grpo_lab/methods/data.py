"""Data sources: where each step's training rows come from (registry `DATA`).

- `online`: P prompts x G completions per step from the behaviour policy, scored and shaped;
  the behaviour policy is the learner unless `offpolicy.*` makes it a stale copy (`staleness`), a
  low-precision copy (`sampler_dtype`) or a noisy one (`sampler_noise`), and `offpolicy.replay`
  mixes groups from a replay buffer into the step. With a refill component (dynamic sampling),
  groups it rejects are dropped and fresh prompts drawn until P groups remain.
- `rft_pool`: correct completions sampled once from the starting policy (offline RFT).
- `preference_pairs`: (correct, wrong) pairs of one prompt, sampled once or every
  `dpo.refresh_every` steps (DPO, iterative DPO).
- `references`: the task's reference completions (SFT).

A source is built once per run (`source(config)`); `collect(ctx, step)` returns a `StepData`;
`after_update(ctx, data, step)` runs after the step's updates; `state_dict()` goes into
checkpoints.
"""

from __future__ import annotations

import copy
import time
from itertools import cycle
from typing import Optional

import numpy as np
import torch

from grpo_lab.core import advantages as adv_lib
from grpo_lab.errors import TrainingError
from grpo_lab.methods.batch import Batch, StepData, concat, rollout_metrics, select_groups
from grpo_lab.methods.registry import Registry
from grpo_lab.rollout.behaviour import NoisyLogits
from grpo_lab.rollout.encode import encode_completions, encode_prompts, pack_rows, unpack_rows
from grpo_lab.rollout.replay import ReplayBuffer, ReplayGroup
from grpo_lab.rollout.sampler import Rollout
from grpo_lab.seeding import Stream, generator

DATA = Registry("data source")
FILTERS = Registry("refill filter")
BEHAVIOUR_KEYS = ("offpolicy.staleness", "offpolicy.replay", "offpolicy.eta", "offpolicy.sampler_noise",
                  "offpolicy.sampler_dtype")


@FILTERS.register("zero_variance", reads=("rollout.dynamic_sampling", "rollout.max_sampling_rounds"))
class ZeroVariance:
    """DAPO's dynamic sampling (Eq. 11): groups whose shaped rewards all agree carry no gradient
    under a group baseline; they are dropped and fresh prompts drawn in their place."""

    @staticmethod
    def active(config) -> bool:
        return config.rollout.dynamic_sampling

    @staticmethod
    def keep(batch: Batch, group_size: int) -> torch.Tensor:
        """Indices of the groups to keep, (K,)."""
        return (~adv_lib.zero_std_groups(batch.rewards, group_size)).nonzero().flatten()


@DATA.register("online", reads=BEHAVIOUR_KEYS)
class Online:
    """q ~ P(Q), {o_i} ~ pi_behav(O|q): the learner, or a stale / low-precision / noisy copy, plus replay."""

    def __init__(self, config, refill=None):
        off = config.offpolicy
        self.refill = refill  # a zero-variance filter (dynamic sampling) or None
        self.buffer = ReplayBuffer(off.eta)
        self.snapshots: list[dict] = []  # {"version": v, "state": state_dict}, oldest first, at most s + 1
        self.noise_generator = generator(config.seed, Stream.SAMPLER_NOISE)
        self.replay_generator = generator(config.seed, Stream.REPLAY)
        self.fresh: Optional[tuple[Batch, int]] = None  # this step's sampled groups and their version

    @staticmethod
    def behaviour_copy(config, policy):
        """The behaviour model a run needs besides the learner (a lagging or low-precision copy), or None."""
        off = config.offpolicy
        if off.staleness == 0 and off.sampler_dtype == "float32":
            return None
        dtype = torch.bfloat16 if off.sampler_dtype == "bfloat16" else torch.float32
        return copy.deepcopy(policy).to(dtype).requires_grad_(False)

    def behaviour(self, ctx, step: int):
        """(the sampler of step `step`, the version of its weights)."""
        off = ctx.config.offpolicy
        model, version = ctx.policy, step
        if ctx.behaviour_model is not None:
            state = {k: v.detach().clone() for k, v in ctx.policy.state_dict().items()}
            self.snapshots = (self.snapshots + [{"version": step, "state": state}])[-(off.staleness + 1):]
            oldest = self.snapshots[0]
            ctx.behaviour_model.load_state_dict(oldest["state"])
            model, version = ctx.behaviour_model, oldest["version"]
        if off.sampler_noise > 0:
            model = NoisyLogits(model, off.sampler_noise, self.noise_generator)
        return model, version

    def extra_prompts(self, ctx, step: int, round_: int) -> list:
        """Refill prompts for round `round_` >= 1 of step `step`: P training prompts drawn without
        replacement by a generator seeded with (seed, step, round) alone, so a resumed run draws the same."""
        n, count = len(ctx.train_examples), ctx.config.rollout.prompts_per_step
        order = torch.randperm(n, generator=generator(ctx.config.seed, Stream.EXTRA_PROMPTS, step, round_))
        return [ctx.train_examples[i] for i in order[: min(count, n)].tolist()]

    def sample(self, ctx, step: int, sampler) -> tuple[Optional[Batch], Batch, dict]:
        """(the kept groups or None, every group drawn, sampling metrics): one round, or with a refill
        component up to `rollout.max_sampling_rounds` rounds until P groups are kept."""
        ro = ctx.config.rollout
        G, P = ro.group_size, ro.prompts_per_step
        refill = self.refill if self.refill is not None and self.refill.active(ctx.config) else None
        rounds = ro.max_sampling_rounds if refill is not None else 1
        # over several processes each samples its slice of a round; with a refill every process then
        # holds the whole round and makes the same choice, as one process would
        group = ctx.collective if refill is not None and ctx.shard()[1] > 1 else None
        pad = ctx.tokenizer.pad_token_id
        drawn, kept, shaping = [], [], {}
        need, dropped, prompts = P, 0, 0
        for round_ in range(rounds):
            examples = ctx.prompts_for_step(step) if round_ == 0 else ctx.slice_of(self.extra_prompts(ctx, step, round_))
            rollout = ctx.generate(examples, group_size=G, policy=sampler)
            ctx.account(rollout, len(examples))
            prompts += getattr(examples, "total", len(examples))
            batch, metrics = ctx.shape(ctx.score(rollout, examples, G))
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
        kept = concat(kept, pad) if kept else None
        if group is not None and kept is not None:
            kept = self.share_of(kept, G, group.rank, group.world)
        return kept, concat(drawn, pad), stats

    @staticmethod
    def share_of(batch: Batch, group_size: int, rank: int, world: int) -> Optional[Batch]:
        """This process's equal share of the kept groups (cut to a multiple of the processes, so that
        every process trains on as many rows); None when fewer groups than processes were kept."""
        per = batch.rows // group_size // world
        if per == 0:
            return None
        return select_groups(batch, torch.arange(rank * per, (rank + 1) * per), group_size)

    def collect(self, ctx, step: int) -> StepData:
        config = ctx.config
        off, G = config.offpolicy, config.rollout.group_size
        sampler, version = self.behaviour(ctx, step)
        kept, drawn, stats = self.sample(ctx, step, sampler)
        metrics = {**rollout_metrics(drawn, G), **stats}
        world = ctx.shard()[1]  # over several processes each replays its share, from its own buffer
        replayed = self.buffer.sample(off.replay // world, self.replay_generator, version=step) if off.replay else []
        self.fresh = (kept, version) if kept is not None else None
        parts = ([kept] if kept is not None else []) + [self.replayed(ctx, g) for g in replayed]
        if not parts:
            return StepData(None, metrics)
        fresh_rows = kept.rows if kept is not None else 0
        batch = concat(parts, ctx.tokenizer.pad_token_id)
        batch.versions = torch.tensor([version] * fresh_rows + [g.version for g in replayed for _ in range(G)])
        batch.replayed = torch.arange(len(batch.versions)) >= fresh_rows
        if off.mismatched:
            metrics.update(staleness_metrics(batch.versions, batch.replayed, step, buffer_groups=len(self.buffer)))
        return StepData(batch, metrics)

    def replayed(self, ctx, group: ReplayGroup) -> Batch:
        G = ctx.config.rollout.group_size
        return Batch(group.rollout, [ctx.train_examples[group.example_index]] * G, group.texts, group.rewards,
                     group.correct)

    def after_update(self, ctx, data: StepData, step: int) -> None:
        """Store this step's informative groups (replay), then drop groups older than eta."""
        if ctx.config.offpolicy.replay and self.fresh is not None:
            self.remember(ctx, *self.fresh)
        self.fresh = None
        self.buffer.evict(step + 1)

    def remember(self, ctx, batch: Batch, version: int) -> None:
        G = ctx.config.rollout.group_size
        index = {id(ex): i for i, ex in enumerate(ctx.train_examples)}
        informative = (~adv_lib.zero_std_groups(batch.rewards, G)).nonzero().flatten().tolist()
        for g in informative:
            rows = torch.arange(g * G, (g + 1) * G)
            self.buffer.add(ReplayGroup(batch.rollout.select(rows), index[id(batch.examples[g * G])],
                                        batch.texts[g * G:(g + 1) * G], batch.rewards[rows].clone(),
                                        batch.correct[rows].clone(), version))

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.state_dict(), "snapshots": self.snapshots,
                "noise_generator": self.noise_generator.get_state(),
                "replay_generator": self.replay_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self.snapshots = list(state["snapshots"])
        self.noise_generator.set_state(state["noise_generator"])
        self.replay_generator.set_state(state["replay_generator"])


def staleness_metrics(versions: torch.Tensor, replayed: torch.Tensor, step: int, *, buffer_groups: int) -> dict:
    """`offpolicy/...` metrics of where a step's rows came from: (B,) versions and replayed flags."""
    return {
        "offpolicy/replayed_frac": float(replayed.float().mean()),
        "offpolicy/stale_frac": float((versions < step).float().mean()),
        "offpolicy/staleness_mean": float((step - versions).float().mean()),
        "offpolicy/buffer_groups": float(buffer_groups),
    }


class Pool:
    """Training data sampled ahead of the steps that use it. A pool covers steps [first, last): it
    holds the G completions of each of those steps' prompts, turned into items by `make_items`,
    shuffled by (seed, first) and split into one batch per step."""

    def __init__(self, config, refill=None):
        self.pool: Optional[dict] = None

    def span(self, config, step: int) -> tuple[int, int]:
        return 0, config.train.steps

    def make_items(self, batch: Batch, group_size: int) -> list:
        raise NotImplementedError

    def check_pool(self, items: list, *, samples: int, correct: int, first: int) -> None:
        """Raise when a pool cannot train anything."""

    def items(self, ctx, step: int) -> tuple[list, dict]:
        """The items of step `step`, building the pool first when `step` starts a new one."""
        first, last = self.span(ctx.config, step)
        metrics = {}
        if self.pool is None or self.pool["first"] != first:
            start = time.perf_counter()
            self.pool = self.build(ctx, first, last)
            metrics = {"pool/items": float(len(self.pool["items"])),
                       "pool/build_s": time.perf_counter() - start,
                       "pool/accuracy": self.pool["accuracy"]}
        index = self.pool["batches"][step - first]
        return [self.pool["items"][i] for i in index], metrics

    @torch.no_grad()
    def build(self, ctx, first: int, last: int) -> dict:
        G = ctx.config.rollout.group_size
        items, correct, samples = [], 0, 0
        for s in range(first, last):
            examples = ctx.prompts_for_step(s)
            rollout = ctx.generate(examples, group_size=G)
            ctx.account(rollout, len(examples))
            batch = ctx.score(rollout, examples, G)
            items.extend(self.make_items(batch, G))
            correct += int(batch.correct.sum())
            samples += rollout.completion_ids.shape[0]
        self.check_pool(items, samples=samples, correct=correct, first=first)
        order = torch.randperm(len(items), generator=generator(ctx.config.seed, Stream.POOL_ORDER, first))
        batches = [part.tolist() for part in np.array_split(order.numpy(), last - first)]
        return {"first": first, "items": items, "batches": batches, "accuracy": correct / max(samples, 1)}

    def after_update(self, ctx, data: StepData, step: int) -> None:
        pass

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

    def collect(self, ctx, step: int) -> StepData:
        items, metrics = self.items(ctx, step)
        metrics["rft/kept"] = float(len(items))
        if not items:
            return StepData(None, {**metrics, "rft/skipped": 1.0})
        rollout = pack_rows([p for p, _ in items], [c for _, c in items], pad_id=ctx.tokenizer.pad_token_id,
                            device=ctx.device)
        return StepData(Batch(rollout), {**metrics, "rft/skipped": 0.0})


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

    def span(self, config, step: int) -> tuple[int, int]:
        steps = config.train.steps
        every = config.dpo.refresh_every or steps
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

    def collect(self, ctx, step: int) -> StepData:
        items, metrics = self.items(ctx, step)
        metrics["dpo/pairs"] = float(len(items))
        if not items:
            return StepData(None, {**metrics, "dpo/skipped": 1.0})
        prompts = [p for p, _, _ in items] * 2
        completions = [c for _, c, _ in items] + [r for _, _, r in items]
        rollout = pack_rows(prompts, completions, pad_id=ctx.tokenizer.pad_token_id, device=ctx.device)
        return StepData(Batch(rollout, pairs=len(items)), {**metrics, "dpo/skipped": 0.0})


@DATA.register("references")
class References:
    """q, o ~ P_sft(Q, O): the task's reference completions of P x G training prompts."""

    def __init__(self, config, refill=None):
        pass

    def collect(self, ctx, step: int) -> StepData:
        count = ctx.config.rollout.batch_size
        examples = ctx.prompts_for_step(step, count)
        p_ids, p_mask = encode_prompts(ctx.tokenizer, [ex.prompt for ex in examples], ctx.device)
        c_ids, c_mask = encode_completions(ctx.tokenizer, [ex.target for ex in examples], ctx.device)
        rollout = Rollout(p_ids, p_mask, c_ids, c_mask, torch.zeros_like(c_mask),
                          torch.ones(len(examples), dtype=torch.bool, device=ctx.device))
        ctx.budget["prompts"] += count
        ctx.budget["tokens"] += int(c_mask.sum())
        return StepData(Batch(rollout), {})

    def after_update(self, ctx, data: StepData, step: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
