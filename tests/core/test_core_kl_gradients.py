"""What each KL estimator's gradient is, computed exactly on an 8-token vocabulary (the expectation over
the sampled token written out as a sum weighted by pi), in each placement:

- in the loss the estimate is differentiated through log pi at tokens drawn from pi:
  E_pi[grad k1] = 0, E_pi[grad k2] = grad KL(pi || ref), E_pi[grad k3] = grad KL(ref || pi);
- in the reward the estimate is detached and reaches the policy through the score function,
  E_pi[k grad log pi]: for k1 that is grad KL(pi || ref), for k3 it nearly cancels near the reference.
"""

from __future__ import annotations

import pytest
import torch

from grpo_lab.config import ConfigError
from grpo_lab.config.sections import LossConfig
from grpo_lab.core.kl import kl_estimate

V = 8


def distributions(scale: float):
    g = torch.Generator().manual_seed(0)
    ref_logits = torch.randn(V, generator=g, dtype=torch.float64)
    logits = (ref_logits + scale * torch.randn(V, generator=g, dtype=torch.float64)).requires_grad_(True)
    return logits, torch.log_softmax(ref_logits, -1)


def grad(value: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(value, logits)
    return g


def in_loss(kind: str, logits, ref_logp) -> torch.Tensor:
    logp = torch.log_softmax(logits, -1)
    return grad((logp.detach().exp() * kl_estimate(logp, ref_logp, kind)).sum(), logits)


def in_reward(kind: str, logits, ref_logp) -> torch.Tensor:
    logp = torch.log_softmax(logits, -1)
    k = kl_estimate(logp, ref_logp, kind).detach()
    return grad((logp.detach().exp() * k * logp).sum(), logits)


def kl(p_logp, q_logp) -> torch.Tensor:
    return (p_logp.exp() * (p_logp - q_logp)).sum()


@pytest.mark.parametrize("scale", [0.1, 1.0])
def test_in_the_loss_k1_has_no_expected_gradient_k2_is_kl_pi_ref_and_k3_is_kl_ref_pi(scale):
    logits, ref_logp = distributions(scale)
    forward = grad(kl(torch.log_softmax(logits, -1), ref_logp), logits)  # grad KL(pi || ref)
    reverse = grad(kl(ref_logp, torch.log_softmax(logits, -1)), logits)  # grad KL(ref || pi)
    assert in_loss("k1", logits, ref_logp).abs().max() < 1e-12
    assert torch.allclose(in_loss("k2", logits, ref_logp), forward, atol=1e-12)
    assert torch.allclose(in_loss("k3", logits, ref_logp), reverse, atol=1e-12)


def test_in_the_reward_k1_is_kl_pi_ref_while_k3_nearly_cancels_near_the_reference():
    logits, ref_logp = distributions(0.1)
    forward = grad(kl(torch.log_softmax(logits, -1), ref_logp), logits)
    assert torch.allclose(in_reward("k1", logits, ref_logp), forward, atol=1e-12)
    k3 = in_reward("k3", logits, ref_logp)
    cosine = float(torch.nn.functional.cosine_similarity(k3, forward, dim=0))
    assert k3.norm() < 0.1 * forward.norm() and cosine < 0.6  # almost no pull towards the reference (2% here)


def test_the_default_estimator_follows_the_placement():
    assert LossConfig(kl_beta=0.1).kl_kind == "k3"
    assert LossConfig(kl_beta=0.1, kl_placement="reward").kl_kind == "k1"
    assert LossConfig(kl_beta=0.1, kl_estimator="k2").kl_kind == "k2"


@pytest.mark.parametrize("placement, kind, says", [
    ("reward", "k3", "almost no gradient"), ("reward", "k2", "almost no gradient"),
    ("loss", "k1", "expected gradient of exactly 0"),
])
def test_estimators_without_the_gradient_they_claim_are_refused_in_one_line(placement, kind, says):
    with pytest.raises(ConfigError, match=says) as refused:
        LossConfig(kl_beta=0.1, kl_placement=placement, kl_estimator=kind)
    assert "\n" not in str(refused.value) and "k1" in str(refused.value)
