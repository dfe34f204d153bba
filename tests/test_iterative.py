"""Iterative RL (DeepSeekMath Algorithm 1) and reference updates: right after a reference reset the KL
to the reference is exactly 0, the replayed share of the reward model's data is the replay
fraction, a soft sync mixes the weights as its formula says, the settings that cannot run are
refused in one line, and a run SIGKILLed in the middle of iteration 2 resumes to the same end."""

from __future__ import annotations


import pytest
import torch

from grpo_lab.config import ConfigError, with_overrides
from grpo_lab.core.iterative import replay_count
from grpo_lab.engine import DPO, GRPO
from grpo_lab.methods import check_config
from grpo_lab.methods.iterative import Iterative
from grpo_lab.models import build_policy
from grpo_lab.runs import run
from grpo_lab.runs.checkpoint import run_dir
from grpo_lab.runs.train import build_task_for
from test_resume import kill_and_resume

RM = {"prompts": 32, "eval_prompts": 16, "lr": 1e-3, "batch_size": 16, "steps": 10}
SFT = {"sft.steps": 150, "sft.lr": 1e-2}  # a warm start that gets some answers right, so samples make pairs


def rows_by_step(history: list[dict]) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for row in history:
        out.setdefault(row["step"], {}).update(row)
    return out


@pytest.mark.parametrize("reset", [True, False])
def test_right_after_a_reference_reset_the_kl_is_exactly_zero(tiny_config, reset):
    config = tiny_config(**{"loss.kl_beta": 0.05, "iterative.iterations": 2, "iterative.retrain_reward_model": False,
                            "iterative.reset_reference": reset, "train.steps": 4, "train.eval_every": 4,
                            "optim.lr": 3e-3, **SFT})
    result = run(config, progress=False, log=False)
    steps = rows_by_step(result.history)  # the row of step s is logged as s + 1
    assert steps[2]["actor/kl"] > 0 and steps[4]["actor/kl"] > 0  # the policy has moved from the reference
    assert steps[3]["iterative/iteration"] == 1.0 and steps[2]["iterative/iteration"] == 0.0
    if reset:  # step 2 starts iteration 2: its reference is the policy it samples with
        assert steps[3]["actor/kl"] == 0.0 and steps[3]["iterative/reference_reset"] == 1.0
    else:
        assert steps[3]["actor/kl"] > 0 and "iterative/reference_reset" not in steps[3]


def test_a_reset_copies_the_policy_into_the_reference(tiny_config):
    config = tiny_config(**{"loss.kl_beta": 0.05, "iterative.iterations": 2, "iterative.retrain_reward_model": False,
                            "train.steps": 4})
    task = build_task_for(config)
    torch.manual_seed(0)
    module = GRPO(config, *build_policy(config.model, task.alphabet), task)
    with torch.no_grad():
        for p in module.policy.parameters():
            p.add_(0.01)
    policy_state = {k: v.clone() for k, v in module.policy.state_dict().items()}
    schedule = module.schedules[0]
    mid = schedule.before_step(module.step_of(1))  # mid-iteration: nothing moves
    assert mid.metrics == {"iterative/iteration": 0.0} and mid.reference is None
    assert not torch.equal(module.ref_policy.state_dict()["lm_head.weight"], policy_state["lm_head.weight"])
    done = schedule.before_step(module.step_of(2))  # the schedule asks, the engine moves the reference
    assert done.metrics["iterative/reference_reset"] == 1.0 and done.reference.alpha == 1.0
    module.update_reference(done.reference)
    assert all(torch.equal(v, policy_state[k]) for k, v in module.ref_policy.state_dict().items())
    rollout = module.generate(module.prompts_for_step(0), group_size=2)
    assert torch.equal(module.ref_logprobs(rollout), module.logprobs(rollout)[0].detach())


def pairs(n: int, tag: int) -> list[tuple]:
    return [([tag, i], [2, i, 1], [3, i, 1]) for i in range(n)]


@pytest.mark.parametrize("new, fraction, history", [(90, 0.1, 50), (30, 0.25, 40), (45, 0.1, 200)])
def test_the_replayed_share_equals_the_replay_fraction(tiny_config, new, fraction, history):
    config = tiny_config(**{"reward.model": RM, "iterative.iterations": 2, "iterative.replay_fraction": fraction,
                            "iterative.reset_reference": False, "train.steps": 2})
    schedule = Iterative(config)
    schedule.history = pairs(history, tag=7)
    fresh = pairs(new, tag=8)
    replayed = schedule.replay(fresh, iteration=1)
    share = len(replayed) / (len(fresh) + len(replayed))
    assert len(replayed) == replay_count(new, fraction=fraction)
    if fraction * new / (1 - fraction) == int(fraction * new / (1 - fraction)):
        assert share == pytest.approx(fraction, abs=1e-12)  # 10 of 100, 10 of 40
    else:
        assert abs(share - fraction) <= 0.5 / (len(fresh) + len(replayed))  # the nearest share to f there is
    assert len(set(map(str, replayed))) == len(replayed) and all(p in schedule.history for p in replayed)
    assert replayed == schedule.replay(fresh, iteration=1) != schedule.replay(fresh, iteration=2)  # seeded per iteration


def test_iterations_retrain_the_reward_model_on_new_pairs_plus_the_replayed_share(tiny_config):
    config = tiny_config(**{"reward.model": RM, "loss.kl_beta": 0.05, "iterative.iterations": 3,
                            "iterative.replay_fraction": 0.25, "train.steps": 3, "train.eval_every": 3, **SFT})
    result = run(config, progress=False, log=False)
    steps = rows_by_step(result.history)
    first_pairs = 0
    for s in (2, 3):  # steps 1 and 2 start iterations 2 and 3
        row = steps[s]
        new, replayed = row["reward_model/new_pairs"], row["reward_model/replayed_pairs"]
        assert new > 0 and replayed == replay_count(int(new), fraction=0.25)
        assert row["reward_model/replayed_frac"] == pytest.approx(replayed / (new + replayed))
        assert abs(row["reward_model/replayed_frac"] - 0.25) <= 0.5 / (new + replayed)
        assert row["reward_model/fit_steps"] == RM["steps"] and "reward_model/heldout_pair_accuracy" in row
        first_pairs += new
    assert "reward_model/new_pairs" not in steps[1]
    state = torch.load(result.checkpoint, weights_only=True)["grpo_lab"]["schedules"][0]
    from pathlib import Path

    folder = next(p for p in Path(config.sft.resolved_cache_dir).glob("reward_model-*") if p.is_dir())
    from grpo_lab.models.reward import RewardModel

    initial = RewardModel.load(folder).pairs
    assert len(state["history"]) == len(initial) + first_pairs  # the first model's pairs and each iteration's


def test_reference_sync_mixes_the_policy_into_the_reference(tiny_config):
    config = tiny_config(**{"method": "dpo", "reference.sync_every": 2, "reference.mixup_alpha": 0.25, **SFT})
    task = build_task_for(config)
    torch.manual_seed(0)
    module = DPO(config, *build_policy(config.model, task.alphabet), task)
    with torch.no_grad():
        for p in module.policy.parameters():
            p.mul_(1.5).add_(0.01)
    before = [p.clone() for p in module.ref_policy.parameters()]
    sync = module.schedules[0]
    assert sync.before_step(module.step_of(1)).reference is None
    done = sync.before_step(module.step_of(2))
    assert done.metrics == {"reference/synced": 1.0} and done.reference.alpha == 0.25
    module.update_reference(done.reference)
    for old, new, pol in zip(before, module.ref_policy.parameters(), module.policy.parameters()):
        torch.testing.assert_close(new, 0.25 * pol + 0.75 * old)
    result = run(with_overrides(config, **{"train.steps": 4, "train.eval_every": 4}), progress=False, log=False)
    assert [row["step"] for row in result.history if "reference/synced" in row] == [3]  # before step 2 (of 0..3)


@pytest.mark.parametrize("dotted, message", [
    ({"iterative.iterations": 3, "train.steps": 10, "loss.kl_beta": 0.1, "iterative.retrain_reward_model": False},
     "iterative.iterations x steps_per_iteration = 3 x 3 = 9 steps, but train.steps is 10"),
    ({"iterative.iterations": 2, "train.steps": 4, "iterative.retrain_reward_model": False},
     "iterative.reset_reference moves the reference model, but method grpo keeps none here"),
    ({"iterative.iterations": 2, "train.steps": 4, "loss.kl_beta": 0.1},
     "iterative.retrain_reward_model is true but reward.model is not set"),
    ({"method": "online_rft", "iterative.iterations": 2, "train.steps": 4, "iterative.retrain_reward_model": False},
     "method online_rft keeps none here"),
    ({"reference.sync_every": 5}, "reference.sync_every moves the reference model, but method grpo keeps none"),
    ({"reference.mixup_alpha": 0.5, "loss.kl_beta": 0.1}, "reference.mixup_alpha is set but reference.sync_every is 0"),
    ({"method": "sft", "reference.sync_every": 5}, "reference.sync_every is set (5) but method sft never reads it"),
    ({"method": "dpo", "iterative.iterations": 2}, "iterative.iterations is set (2) but method dpo never reads it"),
])
def test_settings_that_cannot_run_are_refused_in_one_line(tiny_config, dotted, message):
    with pytest.raises(ConfigError) as info:
        check_config(tiny_config(**dotted))
    assert message in str(info.value) and "\n" not in str(info.value)


KILL_AT = 4  # iteration 2 runs steps 3, 4, 5


def test_sigkilled_in_iteration_two_resumes_bit_identical(tiny_config, tmp_path):
    small = {**RM, "prompts": 16, "eval_prompts": 8, "steps": 5}
    config = tiny_config(**{"reward.model": small, "loss.kl_beta": 0.05, "iterative.iterations": 3,
                            "iterative.replay_fraction": 0.2, "train.steps": 9, "train.eval_every": 9,
                            "train.checkpoint_every": 1, "train.threads": 1, "train.eval_prompts": 4,
                            "train.eval_samples": 2, **SFT})
    reference, killed_at = kill_and_resume(config, tmp_path, KILL_AT)
    assert killed_at < 6, "killed outside iteration 2"

    want = torch.load(reference.checkpoint, weights_only=True)
    got = torch.load(run_dir(config) / "final.ckpt", weights_only=True)
    assert want["state_dict"].keys() == got["state_dict"].keys()
    assert any(k.startswith("reward_model.") for k in got["state_dict"])  # retrained at steps 3 and 6
    assert any(k.startswith("ref_policy.") for k in got["state_dict"])  # reset at steps 3 and 6
    different = [k for k in want["state_dict"] if not torch.equal(want["state_dict"][k], got["state_dict"][k])]
    assert not different, different[:5]
    assert want["grpo_lab"]["schedules"] == got["grpo_lab"]["schedules"]  # the reward model's data

    def timeless(rows):
        return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in rows]

    assert timeless(got["grpo_lab"]["history"]) == timeless(want["grpo_lab"]["history"])
    assert any("reward_model/new_pairs" in row for row in got["grpo_lab"]["history"] if row["step"] == 7)
