"""Off-policy GRPO: rollouts from a behaviour policy that differs from the learner, a replay
buffer, and importance corrections (papers.md §4-§5).

Behaviour policies (`offpolicy` config section):
- `staleness: s`: rollouts of step k come from the weights of version max(k - s, 0), a copy kept
  from s steps ago (simulated asynchronous rollout; versions count RL steps, i.e. weight syncs).
- `sampler_dtype: bfloat16` and `sampler_noise: sigma` (Gaussian noise added to the sampler's
  logits) make the sampler differ from the trainer even at s = 0 (the vLLM/FSDP mismatch of TIS).
- `replay: K`: K groups from the replay buffer join the step's P fresh groups. Groups are stored
  whole (G completions of one prompt, their rewards, the behaviour log-probs, the version), so
  each keeps its own group baseline (Mroueh et al.'s A_alpha). Only groups with reward variance
  are stored (the others carry no gradient). Groups more than `eta` versions old are evicted.

Per step, pi_prox = the learner's weights at the start of the step: its log-probs are recomputed
for the whole batch before the first update. With w_t = pi_prox / pi_behav and A the group
advantage, `correction`:
- none: the clip ratio is pi_theta / pi_behav (the naive objective of AReaL's Table 2);
- tis / mask: ratio pi_theta / pi_prox, surrogate times min(w_t, C) / times w_t 1[w_t <= C]
  (token-level TIS; masking as in AReaL's behav_imp_weight_cap and IcePop);
- sequence_tis / sequence_mask: the same with the sequence weight prod_t w_t;
- decoupled: AReaL's decoupled objective (2505.24298), ratio u = pi_theta / pi_prox clipped,
  surrogate times the untruncated w_t.
Weights scale the surrogate term only, not the KL or entropy terms. With s = 0, no replay, no
mismatch and correction none, the updates are those of on-policy GRPO (tested).

Diagnostics every step (`offpolicy/...`): effective sample size and statistics of the raw weights
w_t, the fraction beyond the cap, KL(pi_behav || pi_prox) (k3 estimate on behaviour samples), the
fractions of replayed and of stale rows, their mean staleness, the buffer size; the clip fractions
are `actor/clip_frac_low|high`.
"""

from __future__ import annotations

import copy
import time

import torch

from grpo_lab.algorithms.base import Scored, _seed_of, masked_mean
from grpo_lab.algorithms.grpo import GRPO, concat_scored
from grpo_lab.core import advantages as adv_lib
from grpo_lab.core.aggregation import masked_fill_zero
from grpo_lab.core.kl import kl_estimate
from grpo_lab.core.objectives import effective_sample_size, importance_weights
from grpo_lab.rollout.replay import ReplayBuffer, ReplayGroup
from grpo_lab.rollout.sampler import inference

WEIGHTING = {  # correction -> (level, mode) of core.objectives.importance_weights
    "tis": ("token", "truncate"), "mask": ("token", "mask"),
    "sequence_tis": ("sequence", "truncate"), "sequence_mask": ("sequence", "mask"),
}


class NoisyLogits(torch.nn.Module):
    """A model whose logits get `scale` * N(0, 1) noise drawn from `generator`: a behaviour policy
    that is not the learner. Its sampled log-probs are those of the noisy distribution."""

    def __init__(self, model: torch.nn.Module, scale: float, generator: torch.Generator):
        super().__init__()
        self.model, self.scale, self.generator = model, scale, generator

    def forward(self, **kwargs):
        out = self.model(**kwargs)
        noise = torch.randn(out.logits.shape, generator=self.generator)
        out.logits = out.logits + self.scale * noise.to(out.logits)
        return out


class OffPolicyGRPO(GRPO):
    def __init__(self, config, policy, tokenizer, task, ref_policy=None):
        super().__init__(config, policy, tokenizer, task, ref_policy=ref_policy)
        off = config.offpolicy
        self.buffer = ReplayBuffer(off.eta)
        self.snapshots: list[dict] = []  # {"version": v, "state": state_dict}, oldest first, at most s + 1
        self.behaviour_model = None
        if off.staleness > 0 or off.sampler_dtype != "float32":
            dtype = torch.bfloat16 if off.sampler_dtype == "bfloat16" else torch.float32
            self.behaviour_model = copy.deepcopy(policy).to(dtype).requires_grad_(False)
        self.noise_generator = torch.Generator().manual_seed(_seed_of(config.seed, 6))
        self.replay_generator = torch.Generator().manual_seed(_seed_of(config.seed, 7))
        self.example_index = {id(ex): i for i, ex in enumerate(self.train_examples)}

    # ----- the behaviour policy --------------------------------------------------------------
    def behaviour(self, step: int):
        """(the sampler of step `step`, the version of its weights)."""
        off = self.config.offpolicy
        model, version = self.policy, step
        if self.behaviour_model is not None:
            state = {k: v.detach().clone() for k, v in self.policy.state_dict().items()}
            self.snapshots = (self.snapshots + [{"version": step, "state": state}])[-(off.staleness + 1):]
            oldest = self.snapshots[0]
            self.behaviour_model.load_state_dict(oldest["state"])
            model, version = self.behaviour_model, oldest["version"]
        if off.sampler_noise > 0:
            model = NoisyLogits(model, off.sampler_noise, self.noise_generator)
        return model, version

    def correction(self, prox_logp, behav_logp, mask):
        """(old log-probs for the clip ratio, detached weights or None) of `offpolicy.correction`."""
        off = self.config.offpolicy
        if off.correction == "none":
            return behav_logp, None
        if off.correction == "decoupled":
            return prox_logp, masked_fill_zero(torch.exp(prox_logp - behav_logp), mask)
        level, mode = WEIGHTING[off.correction]
        return prox_logp, importance_weights(prox_logp, behav_logp, mask, cap=off.cap, level=level, mode=mode)

    def diagnostics(self, prox_logp, behav_logp, mask, weights, versions, replayed, step) -> dict:
        off = self.config.offpolicy
        raw = masked_fill_zero(torch.exp(prox_logp - behav_logp), mask)
        valid = mask > 0
        out = {
            "offpolicy/ess": float(effective_sample_size(raw, mask)),
            "offpolicy/ratio_mean": masked_mean(raw, mask),
            "offpolicy/ratio_max": float(raw[valid].max()) if valid.any() else 0.0,
            "offpolicy/beyond_cap_frac": masked_mean((raw > off.cap).float(), mask),
            "offpolicy/kl_behaviour": masked_mean(kl_estimate(behav_logp, prox_logp, kind="k3"), mask),
            "offpolicy/replayed_frac": float(replayed.float().mean()),
            "offpolicy/stale_frac": float((versions < step).float().mean()),
            "offpolicy/staleness_mean": float((step - versions).float().mean()),
            "offpolicy/buffer_groups": float(len(self.buffer)),
        }
        if weights is not None:
            out["offpolicy/weight_mean"] = masked_mean(weights, mask)
        return out

    # ----- the RL step ------------------------------------------------------------------------
    def replayed_scored(self, group: ReplayGroup) -> Scored:
        G = self.config.rollout.group_size
        return Scored(group.rollout, [self.train_examples[group.example_index]] * G, group.texts, group.rewards,
                      group.correct)

    def remember(self, scored: Scored, version: int) -> None:
        """Store the informative groups of this step's fresh data, tagged with their version."""
        G = self.config.rollout.group_size
        informative = (~adv_lib.zero_std_groups(scored.rewards, G)).nonzero().flatten().tolist()
        for g in informative:
            rows = torch.arange(g * G, (g + 1) * G)
            self.buffer.add(ReplayGroup(scored.rollout.select(rows), self.example_index[id(scored.examples[g * G])],
                                        scored.texts[g * G:(g + 1) * G], scored.rewards[rows].clone(),
                                        scored.correct[rows].clone(), version))

    def rl_step(self, step: int) -> dict:
        off, G = self.config.offpolicy, self.config.rollout.group_size
        t0 = time.perf_counter()
        sampler, version = self.behaviour(step)
        batch = self.collect(step, policy=sampler)
        t1 = time.perf_counter()
        out = self.rollout_metrics(batch.drawn)
        out.update(batch.stats)
        replayed = self.buffer.sample(off.replay, self.replay_generator, version=step) if off.replay else []
        parts = ([batch.scored] if batch.scored is not None else []) + [self.replayed_scored(g) for g in replayed]
        if not parts:
            return out
        fresh_rows = batch.scored.rewards.numel() if batch.scored is not None else 0
        scored = concat_scored(parts, self.tokenizer.pad_token_id)
        rollout = scored.rollout
        versions = torch.tensor([version] * fresh_rows + [g.version for g in replayed for _ in range(G)])
        is_replayed = torch.arange(len(versions)) >= fresh_rows
        advantages = self.compute_advantages(scored)
        behav_logp = rollout.logprobs
        prox_logp = inference(self.logprobs)(rollout)[0]  # pi_prox: the learner's weights before this step's updates
        mask = self.loss_mask(rollout)
        old_logp, weights = self.correction(prox_logp, behav_logp, mask)
        out.update(self.diagnostics(prox_logp, behav_logp, mask, weights, versions, is_replayed, step))
        lc = self.config.loss
        ref_logp = self.ref_logprobs(rollout) if lc.kl_beta > 0 and lc.kl_placement == "loss" else None
        t2 = time.perf_counter()
        out.update(self.optimize(rollout, advantages, old_logp, ref_logp, loss_mask=mask, weights=weights))
        t3 = time.perf_counter()
        if off.replay and batch.scored is not None:
            self.remember(batch.scored, version)
        self.buffer.evict(step + 1)
        out.update({"perf/gen_s": t1 - t0, "perf/logprob_s": t2 - t1, "perf/update_s": t3 - t2})
        return out

    # ----- checkpoints ------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"offpolicy": {
            "buffer": self.buffer.state_dict(),
            "snapshots": self.snapshots,
            "noise_generator": self.noise_generator.get_state(),
            "replay_generator": self.replay_generator.get_state(),
        }}

    def load_extra_state(self, state: dict) -> None:
        off = state["offpolicy"]
        self.buffer.load_state_dict(off["buffer"])
        self.snapshots = list(off["snapshots"])
        self.noise_generator.set_state(off["noise_generator"])
        self.replay_generator.set_state(off["replay_generator"])
