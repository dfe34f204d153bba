import statistics

import pytest
import torch

from grpo_lab.core.advantages import gae, group_relative, process_supervised, rloo, zero_std_groups

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])  # P = 2 prompts, G = 3


# ---- group_relative


def test_group_relative_hand_computed():
    # group 1: mean 1/3, Bessel std sqrt(1/3); group 2: mean 2/3, same std
    expected = torch.tensor([1.1547005, -0.5773503, -0.5773503, 0.5773503, 0.5773503, -1.1547005])
    torch.testing.assert_close(group_relative(REWARDS, 3), expected, atol=1e-5, rtol=1e-5)


def test_group_relative_none_and_batch():
    centered = torch.tensor([2 / 3, -1 / 3, -1 / 3, 1 / 3, 1 / 3, -2 / 3])
    torch.testing.assert_close(group_relative(REWARDS, 3, scale="none"), centered)
    # batch std of [1,0,0,1,1,0] with Bessel: sqrt(6 * .25 / 5) = 0.5477226
    torch.testing.assert_close(group_relative(REWARDS, 3, scale="batch"), centered / 0.5477226, atol=1e-5, rtol=1e-5)


def test_group_relative_matches_loop():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(24, generator=gen)
    got = group_relative(rewards, 6, eps=1e-6)
    for start in range(0, 24, 6):
        group = rewards[start:start + 6].tolist()
        mean, std = statistics.mean(group), statistics.stdev(group)
        for i, r in enumerate(group):
            assert got[start + i].item() == pytest.approx((r - mean) / (std + 1e-6), rel=1e-5)


def test_zero_std_group_gives_zero_advantage():
    out = group_relative(torch.tensor([1.0, 1.0, 0.0, 0.0]), 2)
    assert torch.equal(out, torch.zeros(4))


def test_group_errors():
    with pytest.raises(ValueError, match="group_size"):
        group_relative(torch.ones(4), 1)
    with pytest.raises(ValueError, match="not divisible"):
        group_relative(torch.ones(5), 2)
    with pytest.raises(ValueError, match="group, batch, none"):
        group_relative(torch.ones(4), 2, scale="global")
    with pytest.raises(ValueError, match="group_size"):
        rloo(torch.ones(4), 1)


def test_zero_std_groups():
    out = zero_std_groups(torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0]), 2)
    assert out.tolist() == [True, True, False]


# ---- rloo


def test_rloo_hand_computed():
    torch.testing.assert_close(rloo(REWARDS, 3), torch.tensor([1.0, -0.5, -0.5, 0.5, 0.5, -1.0]))


def test_rloo_matches_loop():
    gen = torch.Generator().manual_seed(1)
    rewards = torch.randn(12, generator=gen)
    got = rloo(rewards, 4)
    for i in range(12):
        start = i - i % 4
        others = [rewards[j].item() for j in range(start, start + 4) if j != i]
        assert got[i].item() == pytest.approx(rewards[i].item() - sum(others) / 3, abs=1e-5)


# ---- gae


def test_gae_hand_computed():
    # row 0: prompt token then 2 completion tokens; row 1: 2 completion tokens then padding
    rewards = torch.tensor([[9.0, 0.0, 1.0], [0.0, 2.0, 7.0]])
    values = torch.tensor([[9.0, 0.5, 0.8], [1.0, 1.0, 7.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    out = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 0: A2 = 1 - .8 = .2; A1 = (0 + .8 - .5) + .5 * .2 = .4
    # row 1: A1 = 2 - 1 = 1; A0 = (0 + 1 - 1) + .5 * 1 = .5
    torch.testing.assert_close(out.advantages, torch.tensor([[0.0, 0.4, 0.2], [0.5, 1.0, 0.0]]))
    torch.testing.assert_close(out.returns, torch.tensor([[0.0, 0.9, 1.0], [1.5, 2.0, 0.0]]))
    advantages, returns = out  # NamedTuple unpacks


def _gae_loop(rewards, values, mask, gamma, lam):
    adv = torch.zeros_like(values)
    for b in range(values.shape[0]):
        idx = [t for t in range(values.shape[1]) if mask[b, t] > 0]
        running, next_value = 0.0, 0.0
        for t in reversed(idx):
            delta = rewards[b, t].item() + gamma * next_value - values[b, t].item()
            running = delta + gamma * lam * running
            adv[b, t] = running
            next_value = values[b, t].item()
    return adv


def test_gae_matches_per_sequence_loop_with_holes_and_padding():
    gen = torch.Generator().manual_seed(2)
    rewards, values = torch.randn(5, 9, generator=gen), torch.randn(5, 9, generator=gen)
    mask = (torch.rand(5, 9, generator=gen) > 0.3).float()  # arbitrary holes
    mask[0, :3], mask[1, 6:] = 0.0, 0.0  # left prompt, right padding
    mask[4] = 0.0  # empty row
    out = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    torch.testing.assert_close(out.advantages, _gae_loop(rewards, values, mask, 0.9, 0.8))
    torch.testing.assert_close(out.returns, (out.advantages + values) * mask)


def test_gae_garbage_under_mask_and_whiten():
    gen = torch.Generator().manual_seed(3)
    rewards, values = torch.randn(4, 7, generator=gen), torch.randn(4, 7, generator=gen)
    mask = (torch.rand(4, 7, generator=gen) > 0.3).float()
    junk = lambda x: torch.where(mask > 0, x, torch.full_like(x, 1e4))  # noqa: E731
    for whiten in (False, True):
        a = gae(rewards, values, mask, whiten=whiten)
        b = gae(junk(rewards), junk(values), mask, whiten=whiten)
        torch.testing.assert_close(a.advantages, b.advantages)
        torch.testing.assert_close(a.returns, b.returns)
    white = gae(rewards, values, mask, whiten=True).advantages
    picked = white[mask > 0]
    assert picked.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert picked.std().item() == pytest.approx(1.0, abs=1e-3)
    assert torch.equal(white[mask == 0], torch.zeros_like(white[mask == 0]))


def test_gae_is_detached():
    values = torch.randn(2, 3, requires_grad=True)
    out = gae(torch.randn(2, 3), values, torch.ones(2, 3))
    assert not out.advantages.requires_grad and not out.returns.requires_grad


# ---- process supervision


def test_process_supervised_hand_computed():
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    step_mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    step_rewards = torch.tensor([[3.0, 0.0, 1.0], [0.0, 0.0, 1e4], [0.0, 5.0, 0.0], [0.0, 0.0, 0.0]])
    # group 1 steps R = {3, 1, 0, 0} (row 1, t2 is masked): mean 1, Bessel std sqrt(2)
    # normalised: row 0 [1.41421, _, 0], row 1 [-0.70711, -0.70711, _]
    # group 2: a single step -> r - mean = 0
    out = process_supervised(step_rewards, step_mask, mask, 2)
    expected = torch.tensor([
        [1.4142136, 0.0, 0.0],
        [-1.4142136, -0.7071068, 0.0],
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
    ])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def _process_loop(step_rewards, step_mask, mask, group_size, eps):
    batch, length = mask.shape
    out = torch.zeros(batch, length)
    for start in range(0, batch, group_size):
        rows = range(start, start + group_size)
        steps = [(b, t, step_rewards[b, t].item()) for b in rows for t in range(length)
                 if step_mask[b, t] > 0 and mask[b, t] > 0]
        if not steps:
            continue
        rs = [r for _, _, r in steps]
        mean = statistics.mean(rs)
        std = statistics.stdev(rs) if len(rs) > 1 else 0.0
        for b in rows:
            for t in range(length):
                if mask[b, t] > 0:
                    out[b, t] = sum((r - mean) / (std + eps) for bb, tt, r in steps if bb == b and tt >= t)
    return out


def test_process_supervised_matches_loop():
    gen = torch.Generator().manual_seed(4)
    mask = (torch.rand(6, 8, generator=gen) > 0.2).float()
    mask[0, :2] = 0.0
    step_mask = (torch.rand(6, 8, generator=gen) > 0.6).float()
    step_rewards = torch.rand(6, 8, generator=gen)
    out = process_supervised(step_rewards, step_mask, mask, 3)
    torch.testing.assert_close(out, _process_loop(step_rewards, step_mask, mask, 3, 1e-6), atol=1e-5, rtol=1e-5)


def test_process_supervised_errors():
    with pytest.raises(ValueError, match="divisible"):
        process_supervised(torch.zeros(3, 2), torch.zeros(3, 2), torch.ones(3, 2), 2)


@pytest.mark.parametrize("group_size", [8, 16, 64])
def test_groups_whose_rewards_agree_get_exactly_zero_advantage(group_size):
    """Eight (16, 64) rewards of 0.7 are equal but not exact in binary: the rounding of their mean left
    a spread that a division by std + eps turned into an advantage of ~0.06 for every row."""
    from grpo_lab.core.advantages import reinforce_plus_plus

    weighted = torch.tensor([0.5 * 1.0 + 0.2 * 1.0] * group_size)  # task.rewards: correct 0.5 + format 0.2
    signal = torch.tensor([0.0, 1.0] * (group_size // 2))
    rewards = torch.cat([weighted, signal])
    for scale in ("group", "batch", "none"):
        advantages = group_relative(rewards, group_size, scale=scale)
        assert torch.equal(advantages[:group_size], torch.zeros(group_size)), scale
        assert advantages[group_size:].abs().min() > 0.1  # the group with signal keeps it
    assert torch.equal(rloo(rewards, group_size)[:group_size], torch.zeros(group_size))
    assert torch.equal(reinforce_plus_plus(rewards, group_size)[:group_size], torch.zeros(group_size))
    assert zero_std_groups(rewards, group_size).tolist() == [True, False]
    # process supervision: every step reward of the group equal (0.7), so every token's advantage is 0
    mask = torch.ones(group_size, 3)
    steps = torch.zeros(group_size, 3)
    steps[:, 1] = steps[:, 2] = 1.0
    out = process_supervised(torch.full((group_size, 3), 0.7) * steps, steps, mask, group_size)
    assert torch.equal(out, torch.zeros_like(out))
