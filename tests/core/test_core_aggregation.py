import pytest
import torch

from grpo_lab.core.aggregation import AGGREGATION_MODES, aggregate, masked_mean

PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token_mean", (1 + 2 + 3 + 6) / 4),  # 3.0
        ("seq_mean_token_mean", ((1 + 2 + 3) / 3 + 6 / 1) / 2),  # 4.0
        ("seq_mean_token_sum", (6 + 6) / 2),  # 6.0
        ("seq_mean_token_sum_norm", (6 / 3 + 6 / 3) / 2),  # 2.0, norm = T = 3
    ],
)
def test_hand_computed(mode, expected):
    assert aggregate(PER_TOKEN, MASK, mode, norm=3).item() == pytest.approx(expected)


def test_the_constant_normaliser_is_the_budget_never_the_padded_width():
    with pytest.raises(ValueError, match="generation budget"):
        aggregate(PER_TOKEN, MASK, "seq_mean_token_sum_norm")


def test_explicit_norm():
    assert aggregate(PER_TOKEN, MASK, "seq_mean_token_sum_norm", norm=4).item() == pytest.approx(1.5)


def test_masked_mean():
    assert masked_mean(PER_TOKEN, MASK).item() == pytest.approx(3.0)
    assert masked_mean(PER_TOKEN, torch.zeros_like(MASK)).item() == 0.0


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_empty_sequence_contributes_zero_without_nan(mode):
    per_token = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    out = aggregate(per_token, mask, mode, norm=2)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(per_token.grad).all()
    expected = {"token_mean": 1.5, "seq_mean_token_mean": 0.75, "seq_mean_token_sum": 1.5,
                "seq_mean_token_sum_norm": 0.75}[mode]
    assert out.item() == pytest.approx(expected)
    assert aggregate(per_token, torch.zeros_like(mask), mode, norm=2).item() == 0.0


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_garbage_under_mask_changes_nothing(mode):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, generator=gen)
    mask = (torch.rand(4, 6, generator=gen) > 0.4).float()
    garbage = torch.where(mask > 0, x, torch.full_like(x, 1e4))
    assert torch.equal(aggregate(x, mask, mode, norm=6), aggregate(garbage, mask, mode, norm=6))


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"])
def test_extra_padding_columns_change_nothing(mode):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, generator=gen)
    mask = (torch.rand(3, 5, generator=gen) > 0.3).float()
    padded_x = torch.cat([x, torch.full((3, 4), 7.0)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(3, 4)], dim=1)
    torch.testing.assert_close(aggregate(x, mask, mode), aggregate(padded_x, padded_mask, mode))


def test_sum_norm_gradient_is_independent_of_length():
    # Dr. GRPO: every completion token gets the same weight 1 / (B * norm), whatever its length
    per_token = torch.zeros(2, 8, requires_grad=True)
    mask = torch.zeros(2, 8)
    mask[0, :2] = 1.0
    mask[1, :7] = 1.0
    aggregate(per_token, mask, "seq_mean_token_sum_norm", norm=8).backward()
    torch.testing.assert_close(per_token.grad, mask / (2 * 8))
    per_token.grad = None
    aggregate(per_token, mask, "seq_mean_token_mean").backward()  # GRPO: 1/|o_i| differs by row
    assert per_token.grad[0, 0] == pytest.approx(1 / (2 * 2))
    assert per_token.grad[1, 0] == pytest.approx(1 / (2 * 7))


def test_masked_tokens_get_zero_gradient():
    per_token = torch.full((2, 3), 1e4, requires_grad=True)
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    aggregate(per_token, mask, "token_mean").backward()
    assert torch.equal(per_token.grad == 0, mask == 0)


def test_unknown_mode_names_choices():
    with pytest.raises(ValueError, match="seq_mean_token_sum_norm"):
        aggregate(PER_TOKEN, MASK, "sum")
