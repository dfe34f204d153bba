"""The GRPO++ switches: each one's defining effect on a hand-made batch or a tiny module, the
refusal of contradictory combinations, and a tiny run with many switches on at once."""

from __future__ import annotations

import copy
import math

import lightning as L
import pytest
import torch

from grpo_lab.engine import module_class
from grpo_lab.core.shaping import overlong_punishment
from grpo_lab.methods.objectives import policy_loss_from_config as grpo_loss
from grpo_lab.config import ConfigError, LossConfig
from grpo_lab.core import advantages as adv_lib
from grpo_lab.core.kl import kl_estimate
from grpo_lab.methods.batch import Batch
from grpo_lab.models import build_policy
from grpo_lab.runs.train import build_task_for, run


def collect(module, step=0, policy=None):
    """(kept batch or None, every batch drawn, sampling metrics) of the module's data source at `step`."""
    return module.source.sample(module.step_of(step), policy or module.policy)[:3]


def prepared(module, batch):
    """`batch` after the step's advantage stage and each objective's preparation."""
    return module.prepare(module.step_of(0), batch, {})


def make_module(config):
    """The config's module around an untrained tiny policy (no trainer, no warm start)."""
    task = build_task_for(config)
    torch.manual_seed(0)
    policy, tokenizer = build_policy(config.model, task.alphabet)
    ref = copy.deepcopy(policy) if config.loss.kl_beta > 0 else None
    return module_class(config.method)(config, policy, tokenizer, task, ref_policy=ref)


class FirstCharTask:
    """The task with reward 1 when the completion starts with '1': rare for an untrained policy,
    so most groups have zero variance and a few do not."""

    def __init__(self, task):
        self.inner = task

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def reward(self, example, completion, finished):
        return float(completion[:1] == "1")

    def is_correct(self, example, completion, finished):
        return completion[:1] == "1"


def token_grad(loss_cfg, logp, old_logp, adv, mask, **kw):
    logp = logp.clone().requires_grad_(True)
    loss, metrics = grpo_loss(logp, old_logp, adv, mask, loss_cfg, norm=kw.pop("norm", 8.0), **kw)
    loss.backward()
    return logp.grad, loss, metrics


# ----- clipping --------------------------------------------------------------------------------
def _raise_rare_token(clip_high):
    """Minimise the loss of one token of probability 0.1 with advantage +1 until the clip stops it."""
    cfg = LossConfig(clip_low=0.2, clip_high=clip_high)
    logits = torch.tensor([[math.log(0.1), math.log(0.9)]], requires_grad=True)
    old = torch.log_softmax(logits.detach(), -1)[:, :1]
    opt = torch.optim.SGD([logits], lr=0.01)  # small steps: the overshoot past the clip stays < 1%
    for _ in range(150):
        logp = torch.log_softmax(logits, -1)[:, :1]  # (B=1, T=1)
        loss, _ = grpo_loss(logp, old, torch.ones(1), torch.ones(1, 1), cfg, norm=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(torch.softmax(logits, -1)[0, 0])


def test_clip_higher_lets_a_rare_positive_token_rise_further():
    symmetric, higher = _raise_rare_token(None), _raise_rare_token(0.28)
    assert 0.1 * 1.2 <= symmetric < 0.1 * 1.2 * 1.02  # stops at ratio 1 + 0.2
    assert 0.1 * 1.28 <= higher < 0.1 * 1.28 * 1.02  # stops at ratio 1 + 0.28
    assert higher > symmetric


def test_dual_clip_bounds_the_loss_of_a_huge_ratio_with_negative_advantage():
    logp, old = torch.log(torch.tensor([[0.5]])), torch.log(torch.tensor([[0.05]]))  # ratio 10
    adv, mask = torch.tensor([-1.0]), torch.ones(1, 1)
    g_plain, loss_plain, _ = token_grad(LossConfig(), logp, old, adv, mask, norm=1.0)
    g_dual, loss_dual, metrics = token_grad(LossConfig(dual_clip=3.0), logp, old, adv, mask, norm=1.0)
    assert loss_plain.item() == pytest.approx(10.0)
    assert loss_dual.item() == pytest.approx(3.0)
    assert g_plain.abs().item() > 1 and g_dual.abs().item() == 0.0
    assert metrics["actor/dual_clip_frac"] == 1.0


# ----- aggregation and the constant normaliser --------------------------------------------------
MASK = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 1]])  # completion lengths 1 and 4


def _grads(aggregation, norm=8.0):
    logp = torch.full((2, 4), -1.0)
    g, _, _ = token_grad(LossConfig(aggregation=aggregation), logp, logp, torch.tensor([1.0, 1.0]), MASK, norm=norm)
    return g


def test_constant_normaliser_makes_the_per_token_gradient_independent_of_length():
    g = _grads("seq_mean_token_sum_norm", norm=8.0)
    assert torch.allclose(g[MASK > 0], torch.full((5,), -1.0 / (2 * 8)))  # -A / (B * norm) on every token
    g = _grads("seq_mean_token_mean")  # GRPO: a token of the short completion weighs 4x more
    assert g[0, 0].item() == pytest.approx(-1 / 2) and g[1, 0].item() == pytest.approx(-1 / 8)


def test_token_mean_weighs_every_token_equally():
    g = _grads("token_mean")
    assert torch.allclose(g[MASK > 0], torch.full((5,), -1.0 / 5))
    assert (g[MASK == 0] == 0).all()


def test_module_uses_max_new_tokens_as_the_default_constant(tiny_config):
    module = make_module(tiny_config(**{"loss.aggregation": "seq_mean_token_sum_norm", "rollout.max_new_tokens": 6}))
    batch = prepared(module, collect(module)[0])
    ro = batch.rollout
    batch.advantages = torch.ones(ro.completion_ids.shape[0])
    rows = torch.arange(ro.completion_ids.shape[0])
    loss, _ = module.objectives[0].loss(module.step_of(0), batch, rows)
    # at the sampler's own weights the ratio is 1, so the loss is -sum_i |o_i| / (B * 6)
    assert loss.item() == pytest.approx(-(ro.lengths.sum() / (len(rows) * 6)).item(), rel=1e-4)


# ----- advantage scale --------------------------------------------------------------------------
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantage_scale(tiny_config, scale):
    module = make_module(tiny_config(**{"advantage.scale": scale, "rollout.group_size": 4}))
    rewards = torch.tensor([0.0, 0, 0, 1, 0, 1, 0, 1])
    adv = module.estimator.obj(module.step_of(0), Batch(None, rewards=rewards)).advantages
    centred = rewards - rewards.view(2, 4).mean(1).repeat_interleave(4)
    if scale == "none":  # Dr. GRPO: no division, the rare success of group 1 gets 0.75
        assert torch.allclose(adv, centred)
    elif scale == "group":  # each group divided by its own std: the rare success gets 1.5
        assert adv[3].item() == pytest.approx(1.5, rel=1e-4)
    else:
        assert torch.allclose(adv, centred / (rewards.view(2, 4).std() + 1e-6))


# ----- dynamic sampling -------------------------------------------------------------------------
def test_dynamic_sampling_leaves_no_zero_variance_group(tiny_config):
    config = tiny_config(**{"rollout.dynamic_sampling": True, "rollout.max_sampling_rounds": 12,
                            "rollout.prompts_per_step": 4, "rollout.group_size": 4})
    module = make_module(config)
    module.task = FirstCharTask(module.task)
    kept, _, stats, spent = module.source.sample(module.step_of(0), module.policy)
    assert kept.rewards.numel() == 4 * 4  # the batch is full
    assert not adv_lib.zero_std_groups(kept.rewards, 4).any()
    assert stats["rollout/sampling_rounds"] > 1 and stats["rollout/dropped_groups"] > 0
    assert stats["rollout/prompts_drawn"] == 4 * stats["rollout/sampling_rounds"]
    assert spent["samples"] == stats["rollout/prompts_drawn"] * 4  # every sample drawn counts
    # the extra prompts are a pure function of (seed, step, round)
    other = make_module(config)
    assert ([e.prompt for e in module.source.extra_prompts(module.step_of(0), 1)]
            == [e.prompt for e in other.source.extra_prompts(other.step_of(0), 1)])
    assert module.source.extra_prompts(module.step_of(0), 1) != module.source.extra_prompts(module.step_of(0), 2)
    # without the switch the same data keeps its zero-variance groups
    off = make_module(tiny_config(**{"rollout.prompts_per_step": 4, "rollout.group_size": 4}))
    off.task = FirstCharTask(off.task)
    assert adv_lib.zero_std_groups(collect(off)[0].rewards, 4).any()


def test_dynamic_sampling_stops_at_the_round_cap(tiny_config):
    module = make_module(tiny_config(**{"rollout.dynamic_sampling": True, "rollout.max_sampling_rounds": 2}))
    kept, _, stats = collect(module)  # the untrained policy is never right: every group has zero variance
    assert kept is None
    assert stats["rollout/sampling_rounds"] == 2 and stats["rollout/dropped_groups"] == 8


# ----- overlong handling ------------------------------------------------------------------------
def test_soft_overlong_punishment_matches_eq_13():
    lengths = torch.tensor([4, 12, 13, 14, 15, 16, 17])  # L_max 16, L_cache 4: free up to 12
    expected = torch.tensor([0.0, 0.0, -0.25, -0.5, -0.75, -1.0, -1.0])
    assert torch.allclose(overlong_punishment(lengths, max_len=16, buffer=4), expected)


def test_overlong_penalty_is_added_to_the_reward(tiny_config):
    module = make_module(tiny_config(**{"rollout.max_new_tokens": 8, "rollout.overlong_buffer": 4,
                                        "rollout.overlong_penalty": 0.5}))
    drawn = collect(module)[1]
    ro = drawn.rollout
    task_rewards = torch.tensor([module.task.reward(e, t, f) for e, t, f in
                                 zip(drawn.examples, drawn.texts, ro.finished.tolist())])
    expected = task_rewards + 0.5 * overlong_punishment(ro.lengths, max_len=8, buffer=4)
    assert torch.allclose(drawn.rewards, expected)
    assert (ro.lengths > 4).any()  # the untrained policy rambles: the penalty was exercised


def test_mask_truncated_zeroes_the_gradient_of_truncated_completions(tiny_config):
    module = make_module(tiny_config(**{"rollout.mask_truncated": True, "rollout.max_new_tokens": 4}))
    batch = prepared(module, collect(module)[0])
    ro = batch.rollout
    truncated = ~ro.finished
    assert truncated.any() and ro.finished.any()
    logp = module.logprobs(ro)[0]
    logp.retain_grad()
    adv = torch.randn(len(truncated))
    loss, _ = grpo_loss(logp, ro.logprobs, adv, batch.mask, module.config.loss, norm=4.0)
    loss.backward()
    assert (logp.grad[truncated] == 0).all()
    assert (logp.grad[ro.finished].abs().sum(-1) > 0).all()


# ----- KL ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["k2", "k3"])
def test_kl_in_the_loss_uses_the_chosen_estimator(kind):
    logp = torch.log(torch.tensor([[0.5, 0.2, 0.6]]))
    ref = torch.log(torch.tensor([[0.4, 0.3, 0.6]]))
    mask, adv = torch.ones(1, 3), torch.zeros(1)
    cfg = LossConfig(kl_beta=0.1, kl_estimator=kind, aggregation="token_mean")
    _, loss, metrics = token_grad(cfg, logp, logp, adv, mask, ref_logp=ref)
    assert loss.item() == pytest.approx(0.1 * kl_estimate(logp, ref, kind).mean().item(), abs=1e-7)
    assert metrics["actor/kl"] == pytest.approx(kl_estimate(logp, ref, kind).mean().item(), abs=1e-7)


@pytest.mark.parametrize("kind", ["k2", "k3"])
def test_kl_in_the_loss_pulls_the_policy_towards_the_reference(kind):
    ref_logits = torch.tensor([[1.0, 0.0, -1.0]])
    logits = torch.tensor([[-1.0, 0.5, 2.0]], requires_grad=True)
    cfg = LossConfig(kl_beta=1.0, kl_estimator=kind)

    def true_kl():
        p, q = torch.log_softmax(logits.detach(), -1), torch.log_softmax(ref_logits, -1)
        return float((p.exp() * (p - q)).sum())

    before = true_kl()
    opt = torch.optim.SGD([logits], lr=0.1)
    for _ in range(200):  # the exact expectation over the 3 tokens, as a weighted batch of 3 rows
        logp_all = torch.log_softmax(logits, -1)
        logp, ref = logp_all.T, torch.log_softmax(ref_logits, -1).T  # (3, 1): one token per row
        weights = logp_all.detach().exp().T
        loss, _ = grpo_loss(logp, logp.detach(), torch.zeros(3), weights, cfg, norm=1.0, ref_logp=ref)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert true_kl() < 0.5 * before


def test_kl_in_the_reward_is_subtracted_before_the_group_normalisation(tiny_config):
    config = tiny_config(**{"loss.kl_beta": 0.5, "loss.kl_placement": "reward", "loss.kl_estimator": "k1"})
    module = make_module(config)
    with torch.no_grad():  # make the reference differ from the policy
        for p in module.ref_policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    _, drawn, stats = collect(module)
    ro = drawn.rollout
    ref = module.ref_logprobs(ro)
    kl = ((ro.logprobs - ref) * ro.completion_mask).sum(-1)
    task_rewards = torch.zeros_like(kl)  # the untrained policy is never right
    assert torch.allclose(drawn.rewards, task_rewards - 0.5 * kl, atol=1e-5)
    assert stats["rollout/kl_penalty"] == pytest.approx(float(0.5 * kl.mean()), rel=1e-4)
    # with all task rewards 0, the advantage now ranks completions by their KL to the reference
    adv = module.estimator.obj(module.step_of(0), drawn).advantages
    assert adv.abs().sum() > 0


# ----- entropy, GSPO ----------------------------------------------------------------------------
def test_entropy_bonus_raises_entropy_when_advantages_are_zero():
    def step(coef):
        logits = torch.tensor([[[3.0, 0.0, -1.0, 0.5]]], requires_grad=True)  # (B=1, T=1, V=4)
        logp_all = torch.log_softmax(logits, -1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        logp = logp_all[..., 0]
        loss, _ = grpo_loss(logp, logp.detach(), torch.zeros(1), torch.ones(1, 1), LossConfig(entropy_coef=coef),
                            norm=1.0, entropy=entropy)
        loss.backward()
        new = torch.log_softmax(logits.detach() - 1.0 * logits.grad, -1)
        return float(-(new.exp() * new).sum()), float(entropy)

    after, before = step(0.1)
    assert after > before
    assert step(0.0)[0] == pytest.approx(before)  # no bonus, no gradient


def test_sequence_level_ratio_clips_whole_sequences():
    old = torch.log(torch.full((1, 3), 0.3))
    logp = old + torch.log(torch.tensor([[1.5, 1.0, 1.0]]))  # token ratios 1.5, 1, 1; sequence s = 1.5^(1/3)
    mask, adv = torch.ones(1, 3), torch.ones(1)
    g_tok, _, m_tok = token_grad(LossConfig(level="token"), logp, old, adv, mask)
    g_seq, _, m_seq = token_grad(LossConfig(level="sequence"), logp, old, adv, mask)
    assert g_tok[0, 0] == 0 and g_tok[0, 1] != 0  # token level: only the first token is clipped
    s = 1.5 ** (1 / 3)
    assert torch.allclose(g_seq, torch.full((1, 3), -s / 3))  # one ratio s < 1.2 for all tokens, none clipped
    assert m_seq["actor/ratio_mean"] == pytest.approx(s)
    # a sequence whose geometric-mean ratio passes 1 + eps is clipped as a whole
    g_big, _, _ = token_grad(LossConfig(level="sequence"), old + math.log(1.8), old, adv, mask)
    assert (g_big == 0).all()


# ----- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    ({"loss.level": "sequence", "loss.aggregation": "token_mean"}, "GSPO weighs each sequence equally"),
    ({"loss.kl_placement": "reward"}, "no KL to place"),
    ({"method": "online_rft", "rollout.group_size": 1, "rollout.dynamic_sampling": True}, "group of one"),
    ({"rollout.overlong_buffer": 8, "rollout.max_new_tokens": 8}, "overlong_buffer=8 must be below"),
    ({"advantage.estimator": "process", "rollout.overlong_buffer": 2}, "would be ignored"),
    ({"rollout.max_sampling_rounds": 0}, "rollout.max_sampling_rounds"),
])
def test_contradictory_switches_are_refused(tiny_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(**overrides)


# ----- everything at once, through train.run ----------------------------------------------------
class CaptureModule(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.module = pl_module


def test_beta_zero_loads_no_reference_and_switches_combine(tiny_config):
    capture = CaptureModule()
    config = tiny_config(**{
        "train.steps": 2, "rollout.dynamic_sampling": True, "rollout.max_sampling_rounds": 2,
        "rollout.mask_truncated": True, "rollout.overlong_buffer": 3, "loss.clip_high": 0.28, "loss.dual_clip": 3.0,
        "loss.aggregation": "token_mean", "advantage.scale": "none", "loss.entropy_coef": 0.01,
        "optim.epochs": 2, "optim.minibatches": 2})
    result = run(config, progress=False, log=False, callbacks=[capture])
    assert capture.module.ref_policy is None  # beta = 0: no reference model in memory
    rows = [r for r in result.history if "rollout/sampling_rounds" in r]
    assert len(rows) == 2
    for r in rows:
        assert {"rollout/prompts_drawn", "rollout/dropped_groups", "rollout/overlong_penalty"} <= set(r)
    trained = [r for r in rows if "actor/loss" in r]
    assert rows[-1]["budget/updates"] == 4 * len(trained)  # mu = 2 epochs x 2 minibatches per step
    assert rows[-1]["budget/prompts"] == sum(r["rollout/prompts_drawn"] for r in rows)


def test_kl_reward_placement_run_keeps_a_reference_and_no_kl_in_the_loss(tiny_config):
    capture = CaptureModule()
    config = tiny_config(**{"train.steps": 1, "loss.kl_beta": 0.1, "loss.kl_placement": "reward",
                            "loss.entropy_coef": 0.01})
    result = run(config, progress=False, log=False, callbacks=[capture])
    assert capture.module.ref_policy is not None
    row = next(r for r in result.history if "rollout/reward_mean" in r)
    assert "rollout/kl_penalty" in row and "actor/kl" not in row
