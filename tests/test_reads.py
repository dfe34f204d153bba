"""Every key x method: a key set to a non-default value is either read by a component of the
method's recipe or refused with one line naming the key, the method and the methods that read it.
Nothing is accepted in silence."""

from __future__ import annotations

import copy

import pytest
import torch

from grpo_lab.config import Config, ConfigError, from_dict, merge
from grpo_lab.methods import RECIPES, check_config
from grpo_lab.methods.recipes import covers

NOT_SETTABLE = {"method", "model.path", "task.path", "tracking.uri", "model.trust_remote_code"}  # need files or a server
VALUES = {  # a valid non-default value where "the default plus one" is not
    "name": "other", "task.name": "addition", "model.dtype": "bfloat16", "model.num_kv_heads": 2,
    "rollout.overlong_buffer": 2, "rollout.top_p": 0.9, "rollout.temperature": 0.7, "advantage.scale": "none",
    "advantage.estimator": "rloo", "loss.level": "sequence", "loss.aggregation": "token_mean",
    "loss.kl_estimator": "k2", "loss.kl_placement": "reward", "loss.objective": "cispo", "loss.dual_clip": 3.0,
    "loss.rft_normalise": "kept",
    "loss.clip_high": 0.3, "loss.norm": 8.0, "offpolicy.correction": "tis", "offpolicy.cap": 3.0,
    "offpolicy.clip_against": "proximal", "offpolicy.weight_level": "token", "offpolicy.cap_mode": "mask",
    "offpolicy.sampler_dtype": "bfloat16", "train.device": "cpu", "train.strategy": "ddp", "train.precision": "bf16-mixed",
    "critic.gamma": 0.99, "critic.lam": 0.9, "dpo.label_smoothing": 0.1, "tracking.experiment": "other",
    "tracking.run_name": "other", "sft.cache_dir": "elsewhere", "train.out_dir": "elsewhere", "task.min_terms": 3,
    "optim.minibatches": 2, "task.data_seed": 1, "train.eval_every": 10, "model.adapter.type": "lora",
    "model.adapter.target_modules": ["q_proj"],
    "task.train_split": "other", "task.eval_split": "other", "task.compare": "numeric",
}
VALUES.update({  # the learned-reward, reward-model, iterative and reference sections
    "reward.model": "a/reward_model/folder", "reward_model.pairs": "dataset", "reward_model.chosen": "good",
    "reward_model.rejected": "bad", "reference.mixup_alpha": 0.3,
})
VALUES.setdefault("model.adapter.type", "lora")  # the adapter section's keys (added before it had a value here)
COMPANIONS = {  # keys another key needs to be valid at all
    "loss.kl_placement": {"loss.kl_beta": 0.1}, "loss.level": {"loss.clip_high": 0.3},
    "offpolicy.staleness": {"offpolicy.eta": 4},
    "reference.mixup_alpha": {"reference.sync_every": 2},
}
BASE = {"rollout": {"group_size": 4, "prompts_per_step": 4}}


def non_default(key: str, default):
    if key in VALUES:
        return VALUES[key]
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default / 2 if default else 0.1
    if default is None:
        return 0.5
    raise AssertionError(f"no non-default value for {key}; add one to VALUES")


def settable_keys() -> list[str]:
    return [k for k in Config().flatten() if k not in NOT_SETTABLE]


def config_with(method: str, key: str) -> Config:
    data = merge(copy.deepcopy(BASE), {"method": method})
    value = non_default(key, Config().flatten()[key])
    for k, v in {key: value, **COMPANIONS.get(key, {})}.items():
        node = data
        *parents, leaf = k.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return from_dict(data)


@pytest.mark.parametrize("method", RECIPES.names())
def test_every_key_is_read_or_refused(method):
    recipe = RECIPES.get(method).obj
    for key in settable_keys():
        try:
            config = config_with(method, key)
        except ConfigError:
            continue  # a contradiction the config itself refuses, whatever the method
        read = covers(recipe.reads(config), key) and (key != "advantage.estimator" or config.advantage.estimator
                                                          in recipe.estimators)
        if read:
            try:
                check_config(config)
            except ConfigError as exc:  # a component may still refuse the value, but not as unread
                assert "never reads it" not in str(exc) and "reads it only with" not in str(exc), (key, exc)
        else:
            with pytest.raises(ConfigError) as info:
                check_config(config)
            message = str(info.value)
            assert "\n" not in message and (key in message or any(c in message for c in COMPANIONS.get(key, {}))), \
                (key, message)


def test_every_key_is_read_by_some_method():
    unread = [k for k in settable_keys()
              if not any(covers(RECIPES.get(m).obj.reads(Config(), every_choice=True), k) for m in RECIPES.names())]
    assert not unread


@pytest.mark.parametrize("method", ["sft", "rft", "online_rft", "dpo"])
@pytest.mark.parametrize("key,value", [("rollout.dynamic_sampling", True), ("rollout.mask_truncated", True),
                                       ("rollout.overlong_buffer", 4)])
def test_the_switches_that_were_ignored_are_refused(method, key, value):
    config = from_dict(merge(BASE, {"method": method, key.split(".")[0]: {key.split(".")[1]: value}}))
    with pytest.raises(ConfigError, match=f"{key} is set .* but method {method} never reads it; the methods that"):
        check_config(config)


def test_ppo_refuses_dynamic_sampling_and_honours_overlong_filtering_and_punishment(tiny_config):
    from grpo_lab.engine import PPO
    from grpo_lab.models import build_policy
    from grpo_lab.runs.train import build_task_for

    with pytest.raises(ConfigError, match="the methods that read it: grpo, offpolicy_grpo"):
        check_config(tiny_config(method="ppo", **{"rollout.dynamic_sampling": True}))
    config = tiny_config(method="ppo", **{"rollout.mask_truncated": True, "rollout.max_new_tokens": 4,
                                          "rollout.overlong_buffer": 2, "rollout.overlong_penalty": 0.5})
    task = build_task_for(config)
    torch.manual_seed(0)
    module = PPO(config, *build_policy(config.model, task.alphabet), task)
    data = module.source.collect(module.step_of(0))
    assert data.metrics["rollout/overlong_penalty"] < 0  # the untrained policy rambles into the punishment
    batch = module.prepare(module.step_of(0), data.batch, {})
    truncated = ~batch.rollout.finished
    assert truncated.any() and (batch.loss_mask[truncated] == 0).all()
    assert torch.equal(batch.loss_mask[~truncated], batch.rollout.completion_mask[~truncated])
