"""DeepSeekMath Eq. 5 checked with autograd: for every method of Table 10, the gradient of the loss
a trainer builds from the core functions equals -(1/B)(1/|o_i|) GC_{i,t} token by token
(pi_old = pi_theta, seq_mean_token_mean aggregation)."""

import dataclasses

import pytest
import torch

from grpo_lab.core.advantages import gae, group_relative
from grpo_lab.core.aggregation import aggregate
from grpo_lab.core.kl import kl_estimate
from grpo_lab.core.objectives import clipped_surrogate
from grpo_lab.core.paradigm import PROCESS_SUPERVISION_CONFIG, TABLE, MethodSpec, format_table, gradient_coefficient
from grpo_lab.core.preference import dpo_loss

B, T, G = 4, 7, 2
BETA = 0.04


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, T)
    for row, (start, end) in enumerate([(2, 7), (2, 4), (1, 6), (3, 4)]):  # prompt, completion, padding
        mask[row, start:end] = 1.0
    logp = (-torch.rand(B, T, generator=gen) * 2).requires_grad_(True)
    ref_logp = logp.detach() + torch.randn(B, T, generator=gen) * 0.3
    return gen, mask, logp, ref_logp


def _masked_sum(x, mask):
    return torch.where(mask > 0, x, 0.0).sum(-1)


def _loss_and_gc(method, gen, mask, logp, ref_logp):
    """The loss (scalar), the GC (B, T) and the per-row scale s_i with d loss/d logp = -s_i GC."""
    lengths = mask.sum(-1)
    grpo_scale = 1.0 / (B * lengths)
    if method == "sft":
        loss = aggregate(-logp, mask, "seq_mean_token_mean")
        return loss, gradient_coefficient("sft", mask=mask), grpo_scale
    if method in ("rft", "online_rft"):
        correct = torch.tensor([1.0, 0.0, 0.0, 1.0])
        loss = aggregate(-logp * correct[:, None], mask, "seq_mean_token_mean")
        return loss, gradient_coefficient(method, mask=mask, correct=correct), grpo_scale
    if method == "ppo":
        values = torch.randn(B, T, generator=gen)
        token_rewards = -0.05 * (logp.detach() - ref_logp)
        last = (mask.cumsum(-1) == lengths[:, None]) & (mask > 0)
        token_rewards = token_rewards + last.float() * torch.tensor([1.0, 0.0, 1.0, 0.0])[:, None]
        advantages = gae(token_rewards, values, mask, gamma=1.0, lam=0.95).advantages
        per_token = clipped_surrogate(logp, logp.detach(), advantages, mask).per_token_loss
        loss = aggregate(per_token, mask, "seq_mean_token_mean")
        return loss, gradient_coefficient("ppo", mask=mask, advantages=advantages), grpo_scale
    if method == "grpo":
        advantages = group_relative(torch.tensor([1.0, 0.0, 0.0, 1.0]), G)
        per_token = clipped_surrogate(logp, logp.detach(), advantages, mask).per_token_loss
        per_token = per_token + BETA * kl_estimate(logp, ref_logp, "k3")
        loss = aggregate(per_token, mask, "seq_mean_token_mean")
        gc = gradient_coefficient("grpo", mask=mask, advantages=advantages, logp=logp, ref_logp=ref_logp, beta=BETA)
        return loss, gc, grpo_scale
    # DPO: rows 0, 1 chosen, rows 2, 3 rejected; pair i = (i, i + 2); summed log-probs, mean over pairs
    policy, ref = _masked_sum(logp, mask), _masked_sum(ref_logp, mask)
    loss = dpo_loss(policy[:2], policy[2:], ref[:2], ref[2:], beta=0.5).loss.mean()
    gc = gradient_coefficient("dpo", mask=mask, logp=logp, ref_logp=ref_logp, beta=0.5)
    return loss, gc, torch.full((B,), 1.0 / 2)


@pytest.mark.parametrize("method", list(TABLE))
def test_gradient_equals_coefficient(method):
    gen, mask, logp, ref_logp = _batch()
    loss, gc, scale = _loss_and_gc(method, gen, mask, logp, ref_logp)
    loss.backward()
    torch.testing.assert_close(logp.grad, -scale[:, None] * gc)
    assert gc[mask == 0].abs().sum() == 0
    assert not gc.requires_grad
    assert gc[mask > 0].abs().sum() > 0  # not trivially zero


def test_grpo_coefficient_with_process_advantages():
    gen, mask, logp, ref_logp = _batch(1)
    advantages = torch.randn(B, T, generator=gen)  # (B, T) like process_supervised's output
    per_token = clipped_surrogate(logp, logp.detach(), advantages, mask).per_token_loss
    per_token = per_token + BETA * kl_estimate(logp, ref_logp)
    aggregate(per_token, mask, "seq_mean_token_mean").backward()
    gc = gradient_coefficient("grpo", mask=mask, advantages=advantages, logp=logp, ref_logp=ref_logp, beta=BETA)
    torch.testing.assert_close(logp.grad, -gc / (B * mask.sum(-1))[:, None])


def test_dpo_length_normalized_matches_paper_eq13():
    _, mask, logp, ref_logp = _batch(2)
    lengths = mask.sum(-1)
    policy, ref = _masked_sum(logp, mask) / lengths, _masked_sum(ref_logp, mask) / lengths
    dpo_loss(policy[:2], policy[2:], ref[:2], ref[2:], beta=0.5).loss.mean().backward()
    gc = gradient_coefficient("dpo", mask=mask, logp=logp, ref_logp=ref_logp, beta=0.5, length_normalized=True)
    torch.testing.assert_close(logp.grad, -gc / (2 * lengths)[:, None])


def test_coefficients_hand_computed():
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    assert gradient_coefficient("sft", mask=mask).tolist() == mask.tolist()
    rft = gradient_coefficient("rft", mask=mask, correct=torch.tensor([0.0, 1.0]))
    assert rft.tolist() == [[0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.1], [0.1, 0.5, 0.5]]))
    ref = torch.log(torch.tensor([[0.25, 0.5, 0.9], [0.9, 0.5, 1.0]]))
    # A + beta (ref/pi - 1), beta = .5: [1 + .5(.5-1), 1 + .5(2-1), 0], [0, -1 + 0, -1 + .5(2-1)]
    grpo = gradient_coefficient("grpo", mask=mask, advantages=torch.tensor([1.0, -1.0]), logp=logp, ref_logp=ref, beta=0.5)
    torch.testing.assert_close(grpo, torch.tensor([[0.75, 1.5, 0.0], [0.0, -1.0, -0.5]]))
    # DPO, 1 pair: chosen log-ratio ln(.5/.25) + ln(.25/.5) = 0; rejected ln(.5/.5) + ln(.5/1) = -ln 2
    # g = beta * sigmoid(beta * (-ln2 - 0)), beta = 1: 1 / (1 + 2) = 1/3
    dpo = gradient_coefficient("dpo", mask=mask, logp=logp, ref_logp=ref, beta=1.0)
    torch.testing.assert_close(dpo, torch.tensor([[1 / 3, 1 / 3, 0.0], [0.0, -1 / 3, -1 / 3]]))


def test_dispatcher_errors():
    mask = torch.ones(2, 2)
    with pytest.raises(ValueError, match="sft, rft, online_rft, dpo, ppo, grpo"):
        gradient_coefficient("reinforce", mask=mask)
    with pytest.raises(ValueError, match="advantages"):
        gradient_coefficient("ppo", mask=mask)
    with pytest.raises(ValueError, match="2N"):
        gradient_coefficient("dpo", mask=torch.ones(3, 2), logp=torch.zeros(3, 2), ref_logp=torch.zeros(3, 2))


def test_table_as_data():
    assert list(TABLE) == ["sft", "rft", "online_rft", "dpo", "ppo", "grpo"]
    for key, spec in TABLE.items():
        assert isinstance(spec, MethodSpec)
        assert spec.config == f"method: {key}"
    assert TABLE["grpo"].equation == "Eq. 21" and TABLE["rft"].equation == "Eq. 10"
    assert "pi_theta" in TABLE["online_rft"].data_source and "pi_sft" in TABLE["rft"].data_source
    assert "estimator: process" in PROCESS_SUPERVISION_CONFIG
    with pytest.raises(dataclasses.FrozenInstanceError):
        TABLE["sft"].name = "x"
    table = format_table()
    lines = table.splitlines()
    assert len(lines) == 2 + len(TABLE)
    assert lines[0].startswith("| Method |") and "`method: grpo`" in table
    assert all(line.count(" | ") == 5 for line in lines[2:])  # escaped pipes keep 6 columns
