"""Off-policy GRPO: equivalence with on-policy GRPO at s = 0, lagging copies, sampler mismatch,
corrections on hand-made log-probs, the replay buffer, diagnostics and checkpoint state."""

from __future__ import annotations

import io

import pytest
import torch


from grpo_lab.config import ConfigError
from grpo_lab.methods import check_config
from grpo_lab.methods.batch import Batch
from grpo_lab.methods.collective import Collective
from grpo_lab.methods.step import Step
from grpo_lab.methods.sources import staleness_metrics
from grpo_lab.methods.objectives import Correction
from grpo_lab.core.objectives import importance_weights
from grpo_lab.rollout.replay import ReplayBuffer, ReplayGroup, concat_rollouts
from grpo_lab.rollout.sampler import Rollout
from grpo_lab.runs import run
from test_switches import FirstCharTask, collect, make_module


def final_weights(result):
    return torch.load(result.checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def timeless(result):
    return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in result.history]


def test_staleness_zero_without_replay_gives_the_updates_of_grpo(tiny_config):
    common = {"train.steps": 2, "loss.entropy_coef": 0.01, "optim.minibatches": 2}
    grpo = run(tiny_config(**common), progress=False, log=False)
    off = run(tiny_config(**common, method="offpolicy_grpo"), progress=False, log=False)
    a, b = final_weights(grpo), final_weights(off)
    policy_keys = [k for k in a if k.startswith("policy.")]
    assert policy_keys and all(torch.equal(a[k], b[k]) for k in policy_keys)
    assert timeless(off) == timeless(grpo)  # the same rows: nothing to correct, nothing to diagnose
    # a correction with nothing to correct recomputes pi_prox: weights are 1 up to rounding
    with pytest.warns(UserWarning, match="nothing to correct"):
        tis = run(tiny_config(**common, method="offpolicy_grpo", **{"offpolicy.correction": "tis"}),
                  progress=False, log=False)
    rows = [r for r in tis.history if "offpolicy/ess" in r]
    assert len(rows) == 2 and all(r["offpolicy/ess"] > 0.999 for r in rows)
    c = final_weights(tis)
    assert all(torch.allclose(a[k], c[k], atol=1e-5) for k in policy_keys)


def test_grpo_with_a_stale_sampler_is_offpolicy_grpo(tiny_config):
    """off-policy GRPO is GRPO's recipe: the offpolicy section under method grpo runs the same steps."""
    common = {"train.steps": 2, "offpolicy.staleness": 1, "offpolicy.replay": 1, "offpolicy.correction": "tis"}
    grpo = run(tiny_config(**common), progress=False, log=False)
    off = run(tiny_config(**common, method="offpolicy_grpo"), progress=False, log=False)
    assert timeless(grpo) == timeless(off) and any("offpolicy/ess" in r for r in grpo.history)


@pytest.mark.parametrize("method", ["ppo", "online_rft"])
def test_any_online_method_takes_a_stale_sampler_and_replay(tiny_config, method):
    config = tiny_config(method=method, **{"train.steps": 3, "offpolicy.staleness": 1, "offpolicy.replay": 2,
                                           "sft.steps": 60, "sft.lr": 1e-2})
    result = run(config, progress=False, log=False)
    rows = [r for r in result.history if "offpolicy/stale_frac" in r]
    assert rows and rows[-1]["offpolicy/stale_frac"] == 1.0  # from step 1 on the sampler lags one step
    assert ("offpolicy/ess" in rows[-1]) == (method == "ppo")  # online RFT has no ratio to correct


def test_lagging_copy_samples_with_the_weights_of_s_steps_ago(tiny_config):
    module = make_module(tiny_config(method="offpolicy_grpo", **{"offpolicy.staleness": 2}))
    param = next(module.policy.parameters())
    seen = []
    for step in range(5):
        sampler, version = module.behaviour.sampler(module.policy, step)
        seen.append((version, float(next(sampler.parameters()).flatten()[0])))
        with torch.no_grad():
            param.add_(1.0)  # one "update" per step: weights of version v have offset v
    start = seen[0][1]
    assert [v for v, _ in seen] == [0, 0, 0, 1, 2]
    assert [round(w - start) for _, w in seen] == [0, 0, 0, 1, 2]
    assert len(module.behaviour.snapshots) == 3  # s + 1 versions kept, no more


@pytest.mark.parametrize("overrides", [{"offpolicy.sampler_noise": 0.5}, {"offpolicy.sampler_dtype": "bfloat16"}])
def test_sampler_mismatch_makes_behaviour_logprobs_differ(tiny_config, overrides):
    module = make_module(tiny_config(method="offpolicy_grpo", **overrides))
    sampler, _ = module.behaviour.sampler(module.policy, 0)
    ro = collect(module, 0, sampler)[1].rollout
    with torch.no_grad():
        learner = module.logprobs(ro)[0]
    gap = ((ro.logprobs - learner).abs() * ro.completion_mask).max()
    assert gap > 1e-3
    same = make_module(tiny_config(method="offpolicy_grpo"))
    ro = collect(same, 0, same.behaviour.sampler(same.policy, 0)[0])[1].rollout
    with torch.no_grad():
        assert ((ro.logprobs - same.logprobs(ro)[0]).abs() * ro.completion_mask).max() < 1e-4


# ----- corrections on hand-made log-probs -------------------------------------------------------
PROX = torch.log(torch.tensor([[0.5, 0.4, 0.3], [0.2, 0.2, 0.2]]))
BEHAV = torch.log(torch.tensor([[0.1, 0.4, 0.6], [0.25, 0.2, 0.1]]))  # token weights 5, 1, .5 / .8, 1, 2
MASK = torch.ones(2, 3)


def hand_made(config):
    """The Correction of `config` applied to a batch sampled with BEHAV whose pi_prox is PROX."""
    rollout = Rollout(torch.ones(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long),
                      torch.ones(2, 3, dtype=torch.long), MASK.clone(), BEHAV.clone(), torch.ones(2, dtype=torch.bool))
    batch = Batch(rollout)
    step = Step(config=config, recipe=None, index=0, task=None, tokenizer=None, train_examples=[],
                device=torch.device("cpu"), collective=Collective(), logprobs=lambda ro: (PROX.clone(), None))
    metrics = Correction(config).apply(step, batch)
    return batch, metrics


@pytest.mark.parametrize("correction,expected", [
    ("tis", [[2.0, 1.0, 0.5], [0.8, 1.0, 2.0]]),
    ("mask", [[0.0, 1.0, 0.0], [0.8, 1.0, 2.0]]),  # 5 above the cap, 0.5 below its default lower bound 1 / 1.9
    ("sequence_tis", [[2.0] * 3, [1.6] * 3]),  # products 2.5 (capped) and 1.6
    ("sequence_mask", [[0.0] * 3, [1.6] * 3]),
    ("decoupled", [[5.0, 1.0, 0.5], [0.8, 1.0, 2.0]]),  # AReaL: pi_prox / pi_behav, untruncated
])
def test_corrections_weigh_by_prox_over_behaviour(tiny_config, correction, expected):
    cap = 1.9 if correction == "mask" else 2.0  # IcePop's mask keeps w in [1 / 1.9, 1.9]: 2.0 is above it
    expected = [[0.0, 1.0, 0.0], [0.8, 1.0, 0.0]] if correction == "mask" else expected
    batch, _ = hand_made(tiny_config(method="offpolicy_grpo", **{"offpolicy.correction": correction,
                                                                  "offpolicy.staleness": 1, "offpolicy.cap": cap}))
    assert torch.equal(batch.old_logp, PROX)  # the clip ratio is pi_theta / pi_prox
    assert torch.allclose(batch.weights, torch.tensor(expected), atol=1e-5)


@pytest.mark.parametrize("axes,expected_old,expected", [
    ({"offpolicy.correction": "tis", "offpolicy.clip_against": "behaviour"}, "behav", [[2.0, 1.0, 0.5], [0.8, 1.0, 2.0]]),
    ({"offpolicy.correction": "tis", "offpolicy.weight_level": "sequence"}, "prox", [[2.0] * 3, [1.6] * 3]),
    ({"offpolicy.weight_level": "token", "offpolicy.cap_mode": "mask", "offpolicy.cap_low": 0.0}, "behav",
     [[0.0, 1.0, 0.5], [0.8, 1.0, 2.0]]),
    ({"offpolicy.correction": "decoupled", "offpolicy.weight_level": "none"}, "prox", None),
])
def test_correction_axes_refine_the_preset(tiny_config, axes, expected_old, expected):
    batch, _ = hand_made(tiny_config(method="offpolicy_grpo", **{"offpolicy.staleness": 1, "offpolicy.cap": 2.0},
                                     **axes))
    assert torch.equal(batch.old_logp, PROX if expected_old == "prox" else BEHAV)
    assert (batch.weights is None) if expected is None else torch.allclose(batch.weights, torch.tensor(expected))


@pytest.mark.parametrize("cap_low, expected", [(None, [[0.0, 1.0, 0.0], [0.8, 1.0, 0.0]]),
                                               (0.0, [[0.0, 1.0, 0.5], [0.8, 1.0, 0.0]]),
                                               (0.9, [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])])
def test_masking_drops_weights_below_the_lower_bound_too(tiny_config, cap_low, expected):
    """IcePop: keep w in [cap_low, cap], cap_low = 1 / cap unless set; 0 masks only above the cap."""
    batch, metrics = hand_made(tiny_config(method="offpolicy_grpo", **{
        "offpolicy.correction": "mask", "offpolicy.staleness": 1, "offpolicy.cap": 1.9, "offpolicy.cap_low": cap_low}))
    assert torch.allclose(batch.weights, torch.tensor(expected))
    low = 1 / 1.9 if cap_low is None else cap_low
    assert metrics["offpolicy/below_cap_low_frac"] == pytest.approx(sum(w < low for w in (5, 1, .5, .8, 1, 2)) / 6)


def test_no_correction_clips_against_the_behaviour_policy(tiny_config):
    batch, _ = hand_made(tiny_config(method="offpolicy_grpo", **{"offpolicy.staleness": 1}))
    assert torch.equal(batch.old_logp, BEHAV) and batch.weights is None


def test_diagnostics_on_hand_made_logprobs(tiny_config):
    _, d = hand_made(tiny_config(method="offpolicy_grpo", **{"offpolicy.staleness": 1, "offpolicy.cap": 2.0,
                                                              "offpolicy.correction": "tis"}))
    raw = torch.tensor([5.0, 1, 0.5, 0.8, 1, 2])
    assert d["offpolicy/ratio_max"] == pytest.approx(5.0)
    assert d["offpolicy/ratio_mean"] == pytest.approx(float(raw.mean()))
    assert d["offpolicy/beyond_cap_frac"] == pytest.approx(1 / 6)
    assert d["offpolicy/ess"] == pytest.approx(float(raw.sum() ** 2 / (6 * (raw**2).sum())), rel=1e-5)
    assert d["offpolicy/weight_mean"] == pytest.approx(float(raw.clamp(max=2.0).mean()))
    kl = float((torch.exp(PROX - BEHAV) - (PROX - BEHAV) - 1).mean())  # k3 of KL(behav || prox)
    assert d["offpolicy/kl_behaviour"] == pytest.approx(kl, rel=1e-5)
    s = staleness_metrics(torch.tensor([3, 1]), torch.tensor([False, True]), 3, buffer_groups=5)
    assert s["offpolicy/replayed_frac"] == 0.5 and s["offpolicy/stale_frac"] == 0.5
    assert s["offpolicy/staleness_mean"] == 1.0 and s["offpolicy/buffer_groups"] == 5


def test_tis_bounds_the_gradient_of_a_token_the_sampler_overrated(tiny_config):
    """A token the behaviour policy sampled 5x more often than the learner would: uncorrected, its
    gradient is scored at ratio 1 (against pi_behav, clipped); TIS scales it by min(w, C)."""
    from grpo_lab.methods.objectives import policy_loss_from_config as grpo_loss

    module = make_module(tiny_config(method="offpolicy_grpo", **{"offpolicy.staleness": 1}))
    cfg = module.config.loss
    prox, behav = torch.log(torch.tensor([[0.02]])), torch.log(torch.tensor([[0.1]]))
    grads = {}
    for name, weights in [("none", None), ("tis", importance_weights(prox, behav, torch.ones(1, 1), cap=2.0))]:
        logp = prox.clone().requires_grad_(True)
        old = behav if name == "none" else prox
        loss, _ = grpo_loss(logp, old, torch.tensor([-1.0]), torch.ones(1, 1), cfg, norm=1.0, weights=weights)
        loss.backward()
        grads[name] = logp.grad.item()
    assert grads["none"] == 0.0  # ratio 0.2 < 1 - eps with A < 0: clipped, the stale sample is ignored
    assert grads["tis"] == pytest.approx(0.2)  # ratio 1 against pi_prox, weight 0.02/0.1 = 0.2


# ----- replay buffer ----------------------------------------------------------------------------
def _group(version, width=3, fill=1.0):
    ro = Rollout(torch.ones(2, 2, dtype=torch.long), torch.ones(2, 2), torch.ones(2, width, dtype=torch.long),
                 torch.ones(2, width), torch.full((2, width), -fill), torch.tensor([True, False]))
    return ReplayGroup(ro, example_index=version, texts=["a", "b"], rewards=torch.tensor([0.0, 1.0]),
                       correct=torch.tensor([False, True]), version=version)


def test_replay_buffer_evicts_beyond_eta_and_round_trips():
    buffer = ReplayBuffer(eta=2)
    for v in range(5):
        buffer.add(_group(v))
    assert buffer.evict(4) == 2 and sorted(g.version for g in buffer.groups) == [2, 3, 4]
    drawn = buffer.sample(2, torch.Generator().manual_seed(0), version=5)  # version 2 is now too old
    assert len(drawn) == 2 and len({g.version for g in drawn}) == 2 and all(g.version >= 3 for g in drawn)
    blob = io.BytesIO()
    torch.save(buffer.state_dict(), blob)
    blob.seek(0)
    again = ReplayBuffer(eta=0)
    again.load_state_dict(torch.load(blob, weights_only=True))
    assert again.eta == 2 and [g.version for g in again.groups] == [2, 3, 4]
    assert torch.equal(again.groups[0].rollout.logprobs, buffer.groups[0].rollout.logprobs)


def test_concat_rollouts_pads_to_common_widths():
    a, b = _group(0, width=3).rollout, _group(1, width=5).rollout
    b.prompt_ids, b.prompt_mask = torch.ones(2, 4, dtype=torch.long), torch.ones(2, 4)
    joined = concat_rollouts([a, b], pad_id=0)
    assert joined.prompt_ids.shape == (4, 4) and joined.completion_ids.shape == (4, 5)
    assert joined.prompt_mask[:2, :2].sum() == 0 and joined.completion_mask[:2, 3:].sum() == 0  # left / right pads
    assert joined.lengths.tolist() == [3, 3, 5, 5]


# ----- a run with everything on ------------------------------------------------------------------
def test_stale_replayed_noisy_run_logs_diagnostics_and_checkpoints_its_state(tiny_config):
    config = tiny_config(method="offpolicy_grpo", **{
        "train.steps": 4, "rollout.max_new_tokens": 6, "rollout.overlong_buffer": 3,
        "offpolicy.staleness": 2, "offpolicy.replay": 2, "offpolicy.eta": 3, "offpolicy.sampler_noise": 0.3,
        "offpolicy.correction": "decoupled"})
    result = run(config, progress=False, log=False)
    rows = [r for r in result.history if "offpolicy/ess" in r]
    assert len(rows) == 4
    for r in rows:
        assert {"offpolicy/ratio_mean", "offpolicy/ratio_max", "offpolicy/beyond_cap_frac", "offpolicy/kl_behaviour",
                "offpolicy/replayed_frac", "offpolicy/stale_frac", "offpolicy/weight_mean", "actor/clip_frac_low",
                "actor/clip_frac_high"} <= set(r)
        assert r["offpolicy/kl_behaviour"] > 0  # the noisy sampler is not the learner
    assert rows[0]["offpolicy/replayed_frac"] == 0 and rows[-1]["offpolicy/replayed_frac"] > 0
    assert rows[-1]["offpolicy/stale_frac"] == 1.0  # steps >= 1 sample with old weights, replay is older still
    saved = torch.load(result.checkpoint, map_location="cpu", weights_only=True)["grpo_lab"]
    state = saved["data"]
    assert [s["version"] for s in saved["behaviour"]["snapshots"]] == [1, 2, 3]
    assert state["buffer"]["groups"] and all(3 - g["version"] <= 3 for g in state["buffer"]["groups"])
    module = make_module(config)
    module.source.load_state_dict(state)
    assert len(module.source.buffer) == len(state["buffer"]["groups"])
    assert torch.equal(module.source.replay_generator.get_state(), state["replay_generator"])


def test_dynamic_sampling_feeds_off_policy_groups(tiny_config):
    module = make_module(tiny_config(method="offpolicy_grpo", **{
        "rollout.dynamic_sampling": True, "rollout.max_sampling_rounds": 12, "offpolicy.staleness": 1}))
    module.task = FirstCharTask(module.task)
    sampler, version = module.behaviour.sampler(module.policy, 0)
    kept = collect(module, 0, sampler)[0]
    assert kept.rewards.numel() == module.config.rollout.batch_size and version == 0


# ----- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    ({"method": "offpolicy_grpo", "offpolicy.correction": "decoupled", "offpolicy.staleness": 1,
      "loss.level": "sequence"}, "cannot run with loss.level: sequence"),
    ({"method": "offpolicy_grpo", "offpolicy.staleness": 8, "offpolicy.eta": 4}, "raise offpolicy.eta"),
    ({"method": "offpolicy_grpo", "offpolicy.cap": 1.0}, "offpolicy.cap"),
    ({"method": "offpolicy_grpo", "offpolicy.replay": 1, "optim.minibatches": 8}, r"prompts_per_step \+ offpolicy.replay"),
])
def test_contradictory_off_policy_settings_are_refused(tiny_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(tiny_config(**overrides))


@pytest.mark.parametrize("method,key,readers", [
    ("sft", "offpolicy.staleness", "online_rft, ppo, grpo, offpolicy_grpo"),
    ("online_rft", "offpolicy.correction", "ppo, grpo, offpolicy_grpo"),
])
def test_a_method_that_does_not_sample_takes_no_behaviour_policy(tiny_config, method, key, readers):
    value = 1 if key == "offpolicy.staleness" else "tis"
    with pytest.raises(ConfigError, match=f"never reads it; the methods that read it: {readers}"):
        check_config(tiny_config(method=method, **{key: value}))


def test_a_correction_with_nothing_to_correct_warns(tiny_config):
    with pytest.warns(UserWarning, match="nothing to correct"):
        tiny_config(method="offpolicy_grpo", **{"offpolicy.correction": "tis"})
