"""Extending grpo_lab through its registries: REINFORCE++ (an advantage estimator) and CISPO (a
policy loss) are each one decorated function, tested here for their defining effect and run from
YAML; a user's own estimator named by import path runs the same way."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch

from grpo_lab.config import ConfigError, load_config
from grpo_lab.core.advantages import group_relative, reinforce_plus_plus
from grpo_lab.core.objectives import cispo_surrogate, clipped_surrogate
from grpo_lab.methods import ADVANTAGES, POLICY_LOSSES, RECIPES, check_config
from grpo_lab.runs import run


def test_reinforce_plus_plus_by_hand():
    rewards = torch.tensor([1.0, 0, 0, 0, 0.1, 0, 0, 0])
    centred = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.075, -0.025, -0.025, -0.025])
    sd = math.sqrt(float((centred**2).sum()) / 7)  # the batch mean of the centred rewards is 0
    torch.testing.assert_close(reinforce_plus_plus(rewards, 4, eps=0.0), centred / sd)
    one = torch.tensor([1.0, 0.0, 0.0, 3.0])  # G = 1: the batch mean is the baseline
    torch.testing.assert_close(reinforce_plus_plus(one, 1, eps=0.0), (one - 1.0) / one.std())


def test_reinforce_plus_plus_keeps_the_scale_of_a_group_that_barely_differs():
    """GRPO divides each group by its own std, so a group whose rewards differ by 0.1 gets the same
    advantages as one whose rewards differ by 1; REINFORCE++'s one batch scale keeps them 10x apart."""
    rewards = torch.tensor([1.0, 0, 0, 0, 0.1, 0, 0, 0])
    grpo = group_relative(rewards, 4)
    assert grpo[0].item() == pytest.approx(grpo[4].item(), rel=1e-4)
    rpp = reinforce_plus_plus(rewards, 4)
    assert rpp[0].item() == pytest.approx(10 * rpp[4].item(), rel=1e-4)
    assert rpp.std().item() == pytest.approx(1.0, rel=1e-4)


def test_cispo_keeps_the_gradient_of_a_token_the_clip_cuts():
    """A token whose ratio has passed 1 + eps with A > 0: PPO's clip zeroes its gradient, CISPO
    weights its log-prob gradient by the clipped ratio, sg(1 + eps) * A."""
    old = torch.log(torch.tensor([[0.2, 0.2]]))
    logp = (old + torch.log(torch.tensor([[1.5, 1.0]]))).requires_grad_(True)  # ratios 1.5 and 1
    mask, adv = torch.ones(1, 2), torch.tensor([2.0])
    clipped_surrogate(logp, old, adv, mask, clip_low=0.2, clip_high=0.2).per_token_loss.sum().backward()
    ppo = logp.grad.clone()
    logp.grad = None
    result = cispo_surrogate(logp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    result.per_token_loss.sum().backward()
    assert ppo[0, 0] == 0 and ppo[0, 1] == pytest.approx(-2.0)
    torch.testing.assert_close(logp.grad, torch.tensor([[-1.2 * 2.0, -1.0 * 2.0]]))
    assert result.metrics["actor/clip_frac_high"].item() == pytest.approx(0.5)
    # the weight carries no gradient of its own: the loss is linear in logp
    torch.testing.assert_close(result.per_token_loss, torch.tensor([[-1.2 * 2.0, -2.0]]) * logp.detach())


def test_a_name_registered_at_run_time_is_accepted_where_a_built_in_is(tiny_config):
    """The registries are the one list of names: the config holds none of its own, so a component
    registered by one's own decorator is named like a built-in one."""
    from grpo_lab.methods import Estimate

    @ADVANTAGES.register("test_halved_group", reads=("advantage.eps",))
    def halved(step, batch):
        return Estimate(group_relative(batch.rewards, step.config.rollout.group_size) / 2)

    try:
        config = tiny_config(**{"advantage.estimator": "test_halved_group", "train.steps": 1})
        assert check_config(config).name == "grpo"
        with pytest.raises(ConfigError, match="unknown advantage estimator 'test_halved_grup'; choose one of"):
            check_config(tiny_config(**{"advantage.estimator": "test_halved_grup"}))
    finally:
        ADVANTAGES.remove("test_halved_group")


def test_reinforce_plus_plus_and_cispo_run_from_yaml(tiny_config, tmp_path):
    path = tmp_path / "rpp.yaml"
    path.write_text(tiny_config().to_yaml() + "")
    config = load_config(path, ["advantage.estimator=reinforce_pp", "loss.objective=cispo", "loss.clip_high=0.28",
                                "loss.clip_low=1.0", "train.steps=2", "loss.entropy_coef=0.01"])
    result = run(config, progress=False, log=False)
    rows = [r for r in result.history if "actor/loss" in r]
    assert len(rows) == 2 and all("actor/clip_frac_high" in r and "actor/entropy" in r for r in rows)
    # a surrogate key CISPO does not read is refused with the choice that does read it
    with pytest.raises(ConfigError, match="reads it only with loss.objective: clipped"):
        check_config(load_config(path, ["loss.objective=cispo", "loss.dual_clip=3.0"]))


def test_an_estimator_of_ones_own_by_import_path(tiny_config, tmp_path, monkeypatch):
    (tmp_path / "my_estimators.py").write_text(textwrap.dedent('''
        import torch
        from grpo_lab.methods import ADVANTAGES, Estimate

        CALLS = []

        @ADVANTAGES.register("median_baseline", reads=("advantage.eps",))
        def median_baseline(step, batch):
            """r_i - median of its group."""
            G = step.config.rollout.group_size
            grouped = batch.rewards.view(-1, G)
            CALLS.append(grouped.shape[0])
            return Estimate((grouped - grouped.median(dim=1, keepdim=True).values).reshape(-1))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tiny_config(**{"advantage.estimator": "my_estimators:median_baseline", "train.steps": 2})
    run(config, progress=False, log=False)
    import my_estimators

    assert my_estimators.CALLS == [4, 4]  # called once per step on P = 4 groups
    with pytest.raises(ConfigError, match="advantage.scale is set"):  # it declares that it reads only eps
        check_config(tiny_config(**{"advantage.estimator": "my_estimators:median_baseline",
                                    "advantage.scale": "none"}))
    with pytest.raises(ConfigError, match="cannot import no_such_module"):
        check_config(tiny_config(**{"advantage.estimator": "no_such_module:thing"}))
