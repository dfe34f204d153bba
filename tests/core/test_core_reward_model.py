"""The Bradley-Terry loss, the replay count and the reference mixup, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from grpo_lab.core.iterative import mix_into, replay_count
from grpo_lab.core.preference import bradley_terry_loss


def test_bradley_terry_loss_by_hand():
    chosen = torch.tensor([2.0, 0.0, -1.0])
    rejected = torch.tensor([1.0, 0.0, 1.0])  # margins 1, 0, -2
    result = bradley_terry_loss(chosen, rejected)
    # -log sigmoid(1) = log(1 + e^-1), -log sigmoid(0) = log 2, -log sigmoid(-2) = log(1 + e^2)
    expected = torch.tensor([math.log(1 + math.exp(-1)), math.log(2.0), math.log(1 + math.exp(2))])
    torch.testing.assert_close(result.loss, expected)
    torch.testing.assert_close(result.loss, torch.tensor([0.3132617, 0.6931472, 2.1269280]))
    assert result.metrics["reward_model/accuracy"].item() == pytest.approx(1.5 / 3)  # the tie counts half
    assert result.metrics["reward_model/margin"].item() == pytest.approx(-1 / 3)


def test_bradley_terry_gradient_is_minus_sigmoid_of_minus_margin():
    chosen = torch.tensor([2.0, 0.0, -1.0], requires_grad=True)
    rejected = torch.tensor([1.0, 0.0, 1.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected).loss.sum().backward()
    margin = torch.tensor([1.0, 0.0, -2.0])
    torch.testing.assert_close(chosen.grad, -torch.sigmoid(-margin))  # -(1 - sigmoid(m))
    torch.testing.assert_close(rejected.grad, torch.sigmoid(-margin))


def test_bradley_terry_is_shift_invariant_and_checks_shapes():
    a, b = torch.tensor([0.3, -1.2]), torch.tensor([0.1, 0.4])
    torch.testing.assert_close(bradley_terry_loss(a + 5.0, b + 5.0).loss, bradley_terry_loss(a, b).loss)
    with pytest.raises(ValueError, match="differ in shape"):
        bradley_terry_loss(a, torch.zeros(3))


@pytest.mark.parametrize("new, fraction, expected", [(90, 0.1, 10), (0, 0.1, 0), (9, 0.5, 9), (30, 0.0, 0),
                                                     (10, 0.1, 1), (3, 0.25, 1)])
def test_replay_count_by_hand(new, fraction, expected):
    n = replay_count(new, fraction=fraction)
    assert n == expected
    if new and fraction * new / (1 - fraction) == int(fraction * new / (1 - fraction)):
        assert n / (new + n) == pytest.approx(fraction)


def test_replay_count_refuses_a_fraction_of_one():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        replay_count(10, fraction=1.0)


def test_mix_into_by_hand_and_alpha_one_copies_exactly():
    target, source = [torch.tensor([0.0, 4.0])], [torch.tensor([2.0, 0.0])]
    mix_into(target, source, alpha=0.25)  # 0.25 * source + 0.75 * target
    torch.testing.assert_close(target[0], torch.tensor([0.5, 3.0]))
    odd = [torch.tensor([0.1234567, -3.3])]
    mix_into(odd, [torch.tensor([1e-7, 7.77])], alpha=1.0)
    assert torch.equal(odd[0], torch.tensor([1e-7, 7.77]))
    with pytest.raises(ValueError, match="alpha"):
        mix_into(target, source, alpha=0.0)
