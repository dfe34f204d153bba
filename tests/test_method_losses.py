"""DeepSeekMath Eq. 5 for the losses the method modules train with (the same functions, called on
tensors): d loss / d logp_{i,t} = -s_i GC_{i,t}, with GC from core.paradigm."""

from __future__ import annotations

import pytest
import torch

from grpo_lab.config import LossConfig
from grpo_lab.core.advantages import gae
from grpo_lab.core.aggregation import aggregate
from grpo_lab.core.preference import dpo_pair_loss
from grpo_lab.core.shaping import last_token_rewards, token_rewards
from grpo_lab.core.supervised import supervised_loss
from grpo_lab.core.value import clipped_value_loss
from grpo_lab.methods.objectives import policy_loss_from_config as grpo_loss
from grpo_lab.core.kl import kl_estimate
from grpo_lab.core.paradigm import gradient_coefficient

B, T = 4, 6


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, T)
    for row, length in enumerate([6, 2, 4, 1]):
        mask[row, :length] = 1.0
    logp = (-torch.rand(B, T, generator=gen) * 2).requires_grad_(True)
    ref_logp = logp.detach() + torch.randn(B, T, generator=gen) * 0.3
    return gen, mask, logp, ref_logp


def test_sft_method_loss_has_gc_one():
    _, mask, logp, _ = _batch()
    supervised_loss(logp, mask, aggregation="seq_mean_token_mean").backward()
    gc = gradient_coefficient("sft", mask=mask)
    torch.testing.assert_close(logp.grad, -gc / (B * mask.sum(-1))[:, None])


@pytest.mark.parametrize("method", ["rft", "online_rft"])
def test_rft_loss_on_the_correct_rows_has_gc_indicator(method):
    """The modules call supervised_loss on the correct rows only: GC = I(o), scaled by 1/n_correct; online
    RFT then scales the loss by n_correct / B (loss.rft_normalise: all, tests/test_trust.py), Eq. 10's 1/B."""
    _, mask, logp, _ = _batch(1)
    correct = torch.tensor([True, False, True, True])
    rows = correct.nonzero().flatten()
    supervised_loss(logp[rows], mask[rows], aggregation="seq_mean_token_mean").backward()
    gc = gradient_coefficient(method, mask=mask, correct=correct.float())
    torch.testing.assert_close(logp.grad, -gc / (int(correct.sum()) * mask.sum(-1).clamp(min=1))[:, None])
    assert logp.grad[1].abs().sum() == 0  # a wrong row gets no gradient


def test_dpo_module_loss_matches_eq14():
    _, mask, logp, ref_logp = _batch(2)
    loss, metrics = dpo_pair_loss(logp, ref_logp, mask, beta=0.3)
    loss.backward()
    gc = gradient_coefficient("dpo", mask=mask, logp=logp, ref_logp=ref_logp, beta=0.3)
    torch.testing.assert_close(logp.grad, -gc / (B // 2))
    assert 0.0 <= float(metrics["dpo/reward_accuracy"]) <= 1.0
    with pytest.raises(ValueError, match="2N"):
        dpo_pair_loss(logp[:3], ref_logp[:3], mask[:3], beta=0.3)


@pytest.mark.parametrize("placement", ["reward", "loss"])
def test_ppo_module_loss_matches_eq18(placement):
    """PPO's actor loss (GRPO's grpo_loss with the GAE advantage) gives GC = A_t; with the k3 KL in
    the loss, A_t + beta (pi_ref / pi - 1) (the same KL term as GRPO's Eq. 21)."""
    gen, mask, logp, ref_logp = _batch(3)
    beta = 0.05
    cfg = LossConfig(kl_beta=beta, kl_placement=placement, kl_estimator="k1" if placement == "reward" else "k3")
    outcome = torch.tensor([1.0, 0.0, 1.0, 0.0])
    kl = kl_estimate(logp.detach(), ref_logp, kind="k1") if placement == "reward" else None
    rewards = token_rewards(outcome, mask, kl=kl, beta=beta)
    values = torch.randn(B, T, generator=gen)
    advantages = gae(rewards, values, mask, gamma=1.0, lam=0.95, whiten=True).advantages
    loss = grpo_loss(logp, logp.detach(), advantages, mask, cfg, norm=T,
                     ref_logp=ref_logp if placement == "loss" else None).loss
    loss.backward()
    gc = gradient_coefficient("ppo", mask=mask, advantages=advantages)
    if placement == "loss":
        gc = gc + gradient_coefficient("grpo", mask=mask, advantages=torch.zeros(B), logp=logp, ref_logp=ref_logp,
                                       beta=beta)
    torch.testing.assert_close(logp.grad, -gc / (B * mask.sum(-1))[:, None])


def test_ppo_token_rewards_by_hand():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert last_token_rewards(torch.tensor([2.0, 3.0]), mask).tolist() == [[0, 0, 2, 0], [3, 0, 0, 0]]
    kl = torch.tensor([[0.1, -0.2, 0.3, 9.0], [0.5, 9.0, 9.0, 9.0]])
    r = token_rewards(torch.tensor([2.0, 3.0]), mask, kl=kl, beta=0.5)
    torch.testing.assert_close(r, torch.tensor([[-0.05, 0.1, 1.85, 0.0], [2.75, 0.0, 0.0, 0.0]]))


def test_value_loss_clips_around_the_old_values():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    old = torch.tensor([[0.0, 0.0, 0.0]])
    returns = torch.tensor([[1.0, 1.0, 5.0]])
    values = torch.tensor([[0.5, 2.0, 7.0]], requires_grad=True)
    # token 0: max((.5-1)^2, (.2-1)^2) = .64 -> .32; token 1: max((2-1)^2, (.2-1)^2) = 1 -> .5; mean .41
    loss = aggregate(clipped_value_loss(values, old, returns, mask, clip=0.2), mask, "token_mean")
    assert float(loss) == pytest.approx(0.41)
    loss.backward()
    assert values.grad[0, 0] == 0 and values.grad[0, 2] == 0  # clipped branch and masked token: no gradient
