import math

import pytest
import torch

from grpo_lab.core.kl import kl_estimate
from grpo_lab.core.preference import dpo_loss
from grpo_lab.core.value import clipped_value_loss

# ---- KL estimators: logp = log .5, ref = log .25 and the reverse

LOGP = torch.log(torch.tensor([[0.5, 0.25]]))
REF = torch.log(torch.tensor([[0.25, 0.5]]))


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("k1", [0.6931472, -0.6931472]),
        ("k2", [0.2402265, 0.2402265]),  # 0.5 * ln(2)^2
        ("k3", [0.1931472, 0.3068528]),  # 0.5 + ln2 - 1, 2 - ln2 - 1
    ],
)
def test_kl_hand_computed(kind, expected):
    torch.testing.assert_close(kl_estimate(LOGP, REF, kind), torch.tensor([expected]))


def test_kl_default_is_k3_and_zero_at_equality():
    torch.testing.assert_close(kl_estimate(LOGP, REF), kl_estimate(LOGP, REF, "k3"))
    for kind in ("k1", "k2", "k3"):
        assert torch.equal(kl_estimate(LOGP, LOGP, kind), torch.zeros_like(LOGP))


def test_k3_gradient_is_one_minus_ref_over_pi():
    logp = LOGP.clone().requires_grad_(True)
    kl_estimate(logp, REF, "k3").sum().backward()
    torch.testing.assert_close(logp.grad, 1 - torch.exp(REF - LOGP))  # [1 - .5, 1 - 2]


def test_kl_unknown_kind():
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_estimate(LOGP, REF, "k4")


# ---- clipped value loss


def test_value_loss_hand_computed_and_gradient():
    values = torch.tensor([[1.0, 2.0, 1.5, 9.0]], requires_grad=True)
    old = torch.tensor([[0.5, 1.0, 1.0, 0.0]])
    returns = torch.tensor([[0.0, 1.5, 1.6, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss = clipped_value_loss(values, old, returns, mask, clip=0.2)
    # t0: max(1, (.7-0)^2=.49)/2 = .5;  t1: max(.25, (1.2-1.5)^2=.09)/2 = .125
    # t2: max(.01, (1.2-1.6)^2=.16)/2 = .08 (clipped term wins: no gradient);  t3 masked
    torch.testing.assert_close(loss, torch.tensor([[0.5, 0.125, 0.08, 0.0]]))
    loss.sum().backward()
    torch.testing.assert_close(values.grad, torch.tensor([[1.0, 0.5, 0.0, 0.0]]))


def test_value_loss_garbage_under_mask():
    gen = torch.Generator().manual_seed(0)
    v, old, ret = (torch.randn(3, 5, generator=gen) for _ in range(3))
    mask = (torch.rand(3, 5, generator=gen) > 0.4).float()
    junk = lambda x: torch.where(mask > 0, x, torch.full_like(x, 1e4))  # noqa: E731
    assert torch.equal(clipped_value_loss(v, old, ret, mask), clipped_value_loss(junk(v), junk(old), junk(ret), mask))


# ---- DPO


def test_dpo_hand_computed():
    c, rc = torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -2.0])
    r, rr = torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, -2.0])
    # h = (c - rc) - (r - rr) = [2, -1]; beta = 1
    result = dpo_loss(c, r, rc, rr, beta=1.0)
    torch.testing.assert_close(result.loss, torch.tensor([math.log(1 + math.exp(-2)), math.log(1 + math.exp(1))]))
    m = result.metrics
    assert m["dpo/chosen_reward"].item() == pytest.approx(0.5)  # mean of [1, 0]
    assert m["dpo/rejected_reward"].item() == pytest.approx(0.0)  # mean of [-1, 1]
    assert m["dpo/reward_margin"].item() == pytest.approx(0.5)
    assert m["dpo/reward_accuracy"].item() == pytest.approx(0.5)
    loss, metrics = result  # NamedTuple unpacks
    assert set(metrics) == {"dpo/chosen_reward", "dpo/rejected_reward", "dpo/reward_margin", "dpo/reward_accuracy"}


def test_dpo_label_smoothing_and_beta():
    one = torch.tensor([0.0])
    # h = 2, beta = 1, ls = .1: .9 log(1+e^-2) + .1 log(1+e^2) = 0.326928
    out = dpo_loss(one, one - 2, one, one, beta=1.0, label_smoothing=0.1)
    assert out.loss.item() == pytest.approx(0.9 * 0.1269280 + 0.1 * 2.1269280, abs=1e-6)
    # beta scales h: beta = .5, h = 2 -> log(1+e^-1)
    assert dpo_loss(one, one - 2, one, one, beta=0.5).loss.item() == pytest.approx(0.3132617, abs=1e-6)


def test_dpo_metrics_detached():
    c = torch.tensor([-1.0], requires_grad=True)
    result = dpo_loss(c, c.detach() - 1, c.detach(), c.detach())
    assert result.loss.requires_grad
    assert not any(v.requires_grad for v in result.metrics.values())
