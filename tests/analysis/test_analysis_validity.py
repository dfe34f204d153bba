"""Validity warnings triggered by hand-made tidy frames."""

import pandas as pd
import pytest

from grpo_lab.analysis import validity


def make_frame(finals, *, budgets=None, params=None, steps=3):
    """Tidy frame: ``finals`` maps arm -> {seed: final eval/accuracy}; metrics ramp to it."""
    rows = []
    for arm, per_seed in finals.items():
        for seed, final in per_seed.items():
            for step in range(1, steps + 1):
                row = {
                    "run_id": f"{arm}-{seed}", "grid": "g", "arm": arm, "seed": seed,
                    "step": step, "sft_hash": "s0", "config_hash": f"c-{arm}",
                    "eval/accuracy": final * step / steps,
                    "factor:method": arm, "param:method": arm, "param:seed": str(seed),
                    "param:optim.lr": "1e-6",
                }
                for key, total in (budgets or {}).get(arm, {}).items():
                    row[key] = total * step / steps
                row.update({f"param:{k}": v for k, v in (params or {}).get(arm, {}).items()})
                rows.append(row)
    return pd.DataFrame(rows)


BALANCED = {"a": {0: 0.50, 1: 0.52, 2: 0.48, 3: 0.51},
            "b": {0: 0.70, 1: 0.72, 2: 0.69, 3: 0.71}}
EQUAL_BUDGET = {"budget/samples": 1000, "budget/tokens": 5e5, "budget/updates": 64}


def test_clean_comparison_has_no_warnings():
    frame = make_frame(BALANCED, budgets={"a": EQUAL_BUDGET, "b": EQUAL_BUDGET})
    assert validity.check_comparison(frame, ["method"]) == []
    assert validity.check_comparison(frame) == []  # factors from the factor: columns


def test_unequal_compute_beyond_one_percent():
    # arm b: 2% more samples (warned), 0.5% more tokens (tolerated)
    b_budget = {**EQUAL_BUDGET, "budget/samples": 1020, "budget/tokens": 5e5 * 1.005}
    frame = make_frame(BALANCED, budgets={"a": EQUAL_BUDGET, "b": b_budget})
    warnings = validity.check_comparison(frame, ["method"])
    assert len(warnings) == 1
    assert "unequal compute" in warnings[0] and "budget/samples" in warnings[0]
    assert "2.0%" in warnings[0]


def test_params_other_than_factors_are_named():
    frame = make_frame(BALANCED, params={"a": {"optim.lr": "1e-6", "loss.kl_coef": "0.0"},
                                         "b": {"optim.lr": "3e-6", "loss.kl_coef": "0.0"}})
    warnings = validity.check_configs(frame, ["method"])
    assert len(warnings) == 1 and "optim.lr" in warnings[0]
    assert "kl_coef" not in warnings[0] and "seed" not in warnings[0].split(":")[-1]
    # declaring optim.lr a factor silences it
    assert validity.check_configs(frame, ["method", "optim.lr"]) == []


def test_unequal_and_missing_seeds():
    finals = {"a": {0: 0.5, 1: 0.52, 2: 0.48, 3: 0.51}, "b": {0: 0.7, 1: 0.72, 4: 0.69}}
    warnings = validity.check_seeds(make_frame(finals))
    assert any("different numbers of seeds" in w and "a: 4" in w and "b: 3" in w
               for w in warnings)
    assert any("arm b is missing seeds [2, 3]" in w for w in warnings)
    assert any("arm a is missing seeds [4]" in w for w in warnings)


def test_too_few_seeds_for_the_observed_effect():
    # difference 0.02 with sd ~0.1 needs 2 (2.8016)^2 (0.1/0.02)^2 ~ 393 seeds per arm
    noisy = {"a": {0: 0.40, 1: 0.60, 2: 0.50, 3: 0.45},
             "b": {0: 0.42, 1: 0.62, 2: 0.52, 3: 0.47}}
    warnings = validity.check_power(make_frame(noisy), "eval/accuracy")
    assert len(warnings) == 1 and "too few seeds for a vs b" in warnings[0]
    assert "have 4" in warnings[0]
    # a large, clean difference needs few seeds
    assert validity.check_power(make_frame(BALANCED), "eval/accuracy") == []


def test_zero_difference_needs_infinite_seeds():
    same = {"a": {0: 0.4, 1: 0.6}, "b": {0: 0.6, 1: 0.4}}
    warnings = validity.check_power(make_frame(same), "eval/accuracy")
    assert "no finite number of" in warnings[0]


@pytest.mark.parametrize("finals", [{"a": {0: 0.5, 1: 0.6}}])
def test_single_arm_is_reported(finals):
    warnings = validity.check_comparison(make_frame(finals), ["method"])
    assert any("only one arm" in w for w in warnings)


def test_a_difference_just_above_the_tolerance_reads_as_above_it():
    b_budget = {**EQUAL_BUDGET, "budget/tokens": 5e5 * 1.0105}  # 1.04% of b's own budget
    frame = make_frame(BALANCED, budgets={"a": EQUAL_BUDGET, "b": b_budget})
    (warning,) = validity.check_compute(frame)
    assert "budget/tokens differs by 1.04% between arms (> 1%)" in warning


def test_sub_keys_of_a_list_or_mapping_factor_are_the_factor():
    # MLflow holds task.rewards as one param per item: task.rewards/0/fn, ...; a mapping-valued factor
    # (reward.model.prompts) as reward.model/prompts
    rewards = {"a": {"task.rewards/0/fn": "correct", "reward.model/prompts": "128"},
               "b": {"task.rewards/0/fn": "correct", "task.rewards/1/fn": "format",
                     "task.rewards/1/weight": "0.1", "reward.model/prompts": "512"}}
    frame = make_frame(BALANCED, params=rewards)
    assert validity.check_configs(frame, ["method", "task.rewards", "reward.model.prompts"]) == []
    (warning,) = validity.check_configs(frame, ["method", "reward.model.prompts"])
    assert "task.rewards/1/fn" in warning  # not a factor here: a confound
