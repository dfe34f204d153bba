import math

import pytest
import torch

from grpo_lab.core.aggregation import aggregate
from grpo_lab.core.objectives import clipped_surrogate, effective_sample_size, importance_weights


def _logp_pair(ratios):
    """old_logp = 0 and logp = log(ratio), so rho equals the given ratios exactly."""
    logp = torch.log(torch.tensor(ratios)).requires_grad_(True)
    return logp, torch.zeros_like(logp)


# ---- clipped surrogate: token level


def test_surrogate_hand_computed_and_metrics():
    logp, old = _logp_pair([[1.5, 0.5, 1.0], [1.1, 0.7, 1.3]])
    adv = torch.tensor([[1.0, -1.0, 1.0], [-2.0, 2.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    loss, metrics = clipped_surrogate(logp, old, adv, mask, clip_low=0.2)
    # -min(rA, clip(r)A): [-1.2 (high clip), .8 (low clip), -1], [2.2, -1.4, masked 0]
    torch.testing.assert_close(loss, torch.tensor([[-1.2, 0.8, -1.0], [2.2, -1.4, 0.0]]))
    assert metrics["actor/clip_frac_high"].item() == pytest.approx(1 / 5)
    assert metrics["actor/clip_frac_low"].item() == pytest.approx(1 / 5)
    assert metrics["actor/clip_frac"].item() == pytest.approx(2 / 5)
    assert metrics["actor/dual_clip_frac"].item() == 0.0
    assert metrics["actor/ratio_mean"].item() == pytest.approx(4.8 / 5)
    assert metrics["actor/ratio_max"].item() == pytest.approx(1.5)
    assert metrics["actor/ratio_min"].item() == pytest.approx(0.5)
    # mean of (r - 1) - ln r: .0945349 + .1931472 + 0 + .0046898 + .0566749, over 5
    assert metrics["actor/approx_kl"].item() == pytest.approx(0.3490468 / 5, abs=1e-6)
    assert not any(v.requires_grad for v in metrics.values())
    # gradient: d(-rA)/dlogp = -rA where unclipped, 0 where clipped or masked
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.0, -1.0], [2.2, -1.4, 0.0]]))


def test_per_sequence_advantage_broadcasts():
    logp, old = _logp_pair([[1.0, 1.1], [0.9, 1.0]])
    mask = torch.ones(2, 2)
    a = clipped_surrogate(logp, old, torch.tensor([1.0, -1.0]), mask).per_token_loss
    b = clipped_surrogate(logp, old, torch.tensor([[1.0, 1.0], [-1.0, -1.0]]), mask).per_token_loss
    torch.testing.assert_close(a, b)


def test_clip_higher_keeps_gradient_of_up_token():
    for clip_high, expected_grad, frac in [(None, 0.0, 1.0), (0.28, -1.25, 0.0)]:
        logp, old = _logp_pair([[1.25]])
        loss, metrics = clipped_surrogate(logp, old, torch.tensor([1.0]), torch.ones(1, 1),
                                          clip_low=0.2, clip_high=clip_high)
        loss.sum().backward()
        assert logp.grad.item() == pytest.approx(expected_grad)
        assert metrics["actor/clip_frac_high"].item() == frac


def test_dual_clip_bounds_negative_advantage_loss():
    logp, old = _logp_pair([[50.0, 2.0, 50.0]])
    adv = torch.tensor([[-1.0, -1.0, 1.0]])
    mask = torch.ones(1, 3)
    plain = clipped_surrogate(logp, old, adv, mask).per_token_loss
    loss, metrics = clipped_surrogate(logp, old, adv, mask, dual_clip=3.0)
    # A<0, r=50: PPO loss 50, bounded by -cA = 3; r=2: 2 < 3 unchanged; A>0: unaffected (-1.2)
    torch.testing.assert_close(plain, torch.tensor([[50.0, 2.0, -1.2]]))
    torch.testing.assert_close(loss, torch.tensor([[3.0, 2.0, -1.2]]))
    assert metrics["actor/dual_clip_frac"].item() == pytest.approx(1 / 3)
    loss.sum().backward()
    assert logp.grad[0, 0].item() == 0.0  # bounded token: no gradient
    with pytest.raises(ValueError, match="dual_clip"):
        clipped_surrogate(logp, old, adv, mask, dual_clip=1.0)


def test_surrogate_garbage_under_mask_changes_nothing():
    gen = torch.Generator().manual_seed(0)
    logp = torch.randn(4, 6, generator=gen) * 0.1
    old = logp + torch.randn(4, 6, generator=gen) * 0.3
    adv = torch.randn(4, 6, generator=gen)
    mask = (torch.rand(4, 6, generator=gen) > 0.4).float()
    junk = lambda x: torch.where(mask > 0, x, torch.full_like(x, 1e4))  # noqa: E731
    for level in ("token", "sequence"):
        a = clipped_surrogate(logp, old, adv, mask, level=level, dual_clip=3.0)
        b = clipped_surrogate(junk(logp), junk(old), junk(adv), mask, level=level, dual_clip=3.0)
        torch.testing.assert_close(a.per_token_loss, b.per_token_loss)
        assert torch.equal(a.per_token_loss[mask == 0], torch.zeros_like(a.per_token_loss[mask == 0]))
        for key in a.metrics:
            torch.testing.assert_close(a.metrics[key], b.metrics[key])


def test_surrogate_unknown_level():
    logp, old = _logp_pair([[1.0]])
    with pytest.raises(ValueError, match="token, sequence"):
        clipped_surrogate(logp, old, torch.ones(1), torch.ones(1, 1), level="seq")


# ---- clipped surrogate: sequence level (GSPO)


def test_gspo_hand_computed_same_ratio_for_all_tokens():
    logp = torch.tensor([[0.1, -0.3, 0.5, 4.0]], requires_grad=True)
    old = torch.zeros(1, 4)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, metrics = clipped_surrogate(logp, old, torch.tensor([1.0]), mask, level="sequence")
    s = math.exp(0.1)  # exp(mean(.1, -.3, .5)), the masked 4.0 excluded
    torch.testing.assert_close(loss, torch.tensor([[-s, -s, -s, 0.0]]))
    assert metrics["actor/ratio_max"].item() == pytest.approx(s)
    assert metrics["actor/ratio_min"].item() == pytest.approx(s)
    loss.sum().backward()  # straight-through: each token's gradient through its own logp
    torch.testing.assert_close(logp.grad, torch.tensor([[-s, -s, -s, 0.0]]))


def test_gspo_token_gradient_equals_sequence_gradient():
    gen = torch.Generator().manual_seed(1)
    logp = (torch.randn(3, 5, generator=gen) * 0.05).requires_grad_(True)
    old = torch.randn(3, 5, generator=gen) * 0.05
    mask = torch.tensor([[1.0] * 5, [1.0] * 3 + [0.0] * 2, [0.0] + [1.0] * 2 + [0.0] * 2])
    adv = torch.tensor([1.0, -0.5, 2.0])
    loss = clipped_surrogate(logp, old, adv, mask, level="sequence").per_token_loss
    aggregate(loss, mask, "seq_mean_token_mean").backward()
    # the sequence-level objective (1/B) sum_i -s_i A_i with s_i = exp(mean_t log rho)
    ref = logp.detach().clone().requires_grad_(True)
    s = torch.exp(((ref - old) * mask).sum(-1) / mask.sum(-1))
    (-(s * adv).mean()).backward()
    torch.testing.assert_close(logp.grad, ref.grad)


def test_gspo_clips_whole_sequence():
    logp = torch.log(torch.tensor([[1.5, 1.5]])).requires_grad_(True)
    loss, metrics = clipped_surrogate(logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2), level="sequence")
    torch.testing.assert_close(loss, torch.tensor([[-1.2, -1.2]]))
    assert metrics["actor/clip_frac"].item() == 1.0
    loss.sum().backward()
    assert torch.equal(logp.grad, torch.zeros(1, 2))


# ---- importance weights and ESS


def test_importance_weights_hand_computed():
    target = torch.log(torch.tensor([[3.0, 0.5, 1.5], [1.2, 0.5, 1e4]]))
    behavior = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    cases = {
        ("token", "truncate"): [[2.0, 0.5, 1.5], [1.2, 0.5, 0.0]],
        ("token", "mask"): [[0.0, 0.5, 1.5], [1.2, 0.5, 0.0]],
        # products: 3 * .5 * 1.5 = 2.25 (over the cap), 1.2 * .5 = .6
        ("sequence", "truncate"): [[2.0, 2.0, 2.0], [0.6, 0.6, 0.0]],
        ("sequence", "mask"): [[0.0, 0.0, 0.0], [0.6, 0.6, 0.0]],
    }
    for (level, mode), expected in cases.items():
        w = importance_weights(target, behavior, mask, cap=2.0, level=level, mode=mode)
        torch.testing.assert_close(w, torch.tensor(expected), msg=f"{level} {mode}")


def test_importance_weights_detached_and_no_overflow():
    target = torch.full((1, 100), 5.0, requires_grad=True)  # sequence log-ratio 500
    mask = torch.ones(1, 100)
    for level in ("token", "sequence"):
        for mode in ("truncate", "mask"):
            w = importance_weights(target, torch.zeros(1, 100), mask, level=level, mode=mode)
            assert not w.requires_grad and torch.isfinite(w).all()
    # used as a loss weight, the weight carries no gradient: d(w * logp)/dlogp = w
    logp = torch.zeros(1, 3, requires_grad=True)
    w = importance_weights(logp + torch.tensor([[0.1, 0.2, 5.0]]), torch.zeros(1, 3), torch.ones(1, 3))
    (w * logp).sum().backward()
    torch.testing.assert_close(logp.grad, w)


def test_importance_weight_errors():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="truncate, mask"):
        importance_weights(x, x, x + 1, mode="clip")
    with pytest.raises(ValueError, match="token, sequence"):
        importance_weights(x, x, x + 1, level="batch")


def test_effective_sample_size():
    assert effective_sample_size(torch.ones(2, 2), torch.ones(2, 2)).item() == pytest.approx(1.0)
    # (2 + 0)^2 / (2 * 4) = .5; masked 1e4 ignored
    assert effective_sample_size(torch.tensor([[2.0, 0.0, 1e4]]), torch.tensor([[1.0, 1.0, 0.0]])).item() == pytest.approx(0.5)
    assert effective_sample_size(torch.tensor([[1.0, 2.0, 3.0]]), torch.ones(1, 3)).item() == pytest.approx(36 / 42)
    assert effective_sample_size(torch.zeros(1, 3), torch.ones(1, 3)).item() == 0.0
