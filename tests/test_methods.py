"""Every method of the paradigm runs from one config by changing `method:`, from one SFT checkpoint,
with the same eval metrics in MLflow; the methods' own behaviour and refusals."""

from __future__ import annotations

import mlflow
import pytest
import torch
from transformers import AutoModelForCausalLM

from grpo_lab.engine import MODULES, TrainingError
from grpo_lab.cli import main
from grpo_lab.config import ConfigError
from grpo_lab.methods import check_config
from grpo_lab.methods.advantages import step_reward_tensors
from grpo_lab.runs import run

ARMS = {
    "sft": {}, "rft": {}, "online_rft": {}, "dpo": {}, "ppo": {}, "grpo": {},
    "grpo_process": {"advantage.estimator": "process"},
}
EVAL_KEYS = {"eval/accuracy", "eval/greedy_accuracy", "eval/pass_at_4", "eval/maj_at_4", "eval/len_correct",
             "eval/len_wrong", "eval/entropy"}
SEEN_EVAL_KEYS: dict[str, set] = {}  # arm -> the eval metric names its MLflow run holds


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    """One warm start for the whole file: long enough that the tiny model gets some answers right."""
    return str(tmp_path_factory.mktemp("sft"))


@pytest.fixture
def method_config(tiny_config, sft_dir):
    def make(method: str, **dotted):
        return tiny_config(**{"method": method, "sft.cache_dir": sft_dir, "sft.steps": 150, "sft.lr": 1e-2,
                              "train.steps": 2, **dotted})

    return make


def _moved(result, prefix="policy."):
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    start = AutoModelForCausalLM.from_pretrained(result.sft_path).state_dict()
    return [k for k, v in start.items() if not torch.equal(state[prefix + k], v)], state


@pytest.mark.parametrize("arm", list(ARMS))
def test_every_method_from_one_config(method_config, arm):
    method = "grpo" if arm == "grpo_process" else arm
    config = method_config(method, **ARMS[arm])
    result = run(config, progress=False)
    assert result.initial["eval/accuracy"] > 0  # the warm start has signal for every method
    client = mlflow.tracking.MlflowClient(config.tracking.resolved_uri)
    data = client.get_run(result.run_id).data
    assert data.tags["grpo_lab.method"] == method
    assert data.tags["grpo_lab.sft_hash"] == method_config("grpo").sft_hash()  # one checkpoint for all
    keys = {k for k in data.metrics if k.startswith("eval/")}
    assert keys >= EVAL_KEYS
    for other, seen in SEEN_EVAL_KEYS.items():
        assert keys == seen, f"{arm} and {other} log different eval metrics"
    SEEN_EVAL_KEYS[arm] = keys
    assert [m.step for m in client.get_metric_history(result.run_id, "eval/accuracy")] == [0, 2]
    assert client.get_metric_history(result.run_id, "budget/updates")[-1].value == 2
    moved, _ = _moved(result)
    assert moved, f"{arm}: no policy parameter changed"


def test_rft_samples_once_and_keeps_its_pool_in_the_checkpoint(method_config):
    config = method_config("rft", **{"train.steps": 3, "train.eval_every": 3})
    result = run(config, progress=False, log=False)
    rows = [r for r in result.history if "budget/samples" in r]
    P, G = config.rollout.prompts_per_step, config.rollout.group_size
    # the whole run's samples are drawn from the SFT policy before the first update
    assert [r["budget/samples"] for r in rows] == [P * G * 3] * 3
    assert [("pool/items" in r) for r in rows] == [True, False, False]
    pool = torch.load(result.checkpoint, map_location="cpu", weights_only=True)["grpo_lab"]["data"]["pool"]
    assert len(pool["items"]) == rows[0]["pool/items"] > 0
    assert sorted(i for b in pool["batches"] for i in b) == list(range(len(pool["items"])))
    assert len({(tuple(p), tuple(c)) for p, c in pool["items"]}) == len(pool["items"])  # deduplicated
    assert sum(r["rft/kept"] for r in rows) == len(pool["items"])  # each kept completion used once


def test_dpo_iterative_refresh_rebuilds_pairs(method_config):
    config = method_config("dpo", **{"train.steps": 4, "train.eval_every": 4, "dpo.refresh_every": 2})
    result = run(config, progress=False, log=False)
    rows = [r for r in result.history if "budget/samples" in r]
    P, G = config.rollout.prompts_per_step, config.rollout.group_size
    assert [("pool/items" in r) for r in rows] == [True, False, True, False]
    assert [r["budget/samples"] for r in rows] == [2 * P * G] * 2 + [4 * P * G] * 2
    assert all(r["dpo/pairs"] > 0 for r in rows)


def test_ppo_critic_warmup_trains_the_critic_alone(method_config):
    config = method_config("ppo", **{"critic.warmup": 2, "critic.lr": 1e-3})
    result = run(config, progress=False, log=False)
    moved, state = _moved(result)
    assert not moved  # the policy waited
    start = AutoModelForCausalLM.from_pretrained(result.sft_path).state_dict()
    trunk_moved = [k for k in start if k.startswith("model.")
                   and not torch.equal(state["critic.trunk." + k[len("model."):]], start[k])]
    assert trunk_moved and state["critic.head.weight"].abs().sum() > 0  # the critic learned on its own copy
    rows = [r for r in result.history if "critic/value_loss" in r]
    assert len(rows) == 2 and all(r["actor/trained"] == 0 for r in rows)
    assert all(r["budget/updates"] == 0 for r in rows)  # only actor updates count


def test_ppo_has_two_optimizers_with_their_own_learning_rates(method_config):
    from grpo_lab.runs.train import build_task_for
    from grpo_lab.models import build_policy

    config = method_config("ppo", **{"critic.lr": 5e-3, "optim.lr": 2e-4})
    policy, tokenizer = build_policy(config.model, build_task_for(config).alphabet)
    module = MODULES["ppo"](config, policy, tokenizer, build_task_for(config))
    (actor, critic), _ = module.configure_optimizers()
    assert actor.param_groups[0]["lr"] == 2e-4 and critic.param_groups[0]["lr"] == 5e-3
    critic_ids = {id(p) for p in critic.param_groups[0]["params"]}
    assert not critic_ids & {id(p) for p in actor.param_groups[0]["params"]}
    assert critic_ids == {id(p) for p in module.critic.parameters()}


def test_kl_in_the_reward_for_ppo(method_config):
    config = method_config("ppo", **{"loss.kl_beta": 0.1, "loss.kl_placement": "reward", "loss.kl_estimator": "k1",
                                     "train.steps": 2})
    result = run(config, progress=False, log=False)
    rows = [r for r in result.history if "critic/value_loss" in r]
    assert all("rollout/kl_penalty" in r and "actor/kl" not in r for r in rows)


def test_process_supervision_rewards_the_finished_answer(method_config):
    from grpo_lab.runs.train import build_task_for
    from grpo_lab.models import build_policy

    config = method_config("grpo", **{"advantage.estimator": "process"})
    task = build_task_for(config)
    policy, tokenizer = build_policy(config.model, task.alphabet)
    module = MODULES["grpo"](config, policy, tokenizer, task)
    examples = module.train_examples[:4]
    scored = module.score(module.generate(examples, group_size=2), examples, 2)
    scored.rewards[:] = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    rewards, step_mask = step_reward_tensors(module.step_of(0), scored)
    mask = scored.rollout.completion_mask
    last = mask.sum(-1).long() - 1
    assert (step_mask[torch.arange(8), last] == 1).all()  # the last token is always a step end
    base = module.task.step_rewards(examples[0], scored.texts[0], bool(scored.rollout.finished[0]))
    on_last = sum(s.reward for s in base if s.end >= len(scored.texts[0]) - 1)
    assert rewards[0, last[0]] == pytest.approx(1.0 + on_last)


@pytest.mark.parametrize("dotted, match", [
    ({"method": "grpo", "critic.lr": 1e-3}, "critic.lr is set .* method grpo never reads it; the methods that read it: ppo"),
    ({"method": "grpo", "dpo.beta": 0.5}, "the methods that read it: dpo"),
    ({"method": "dpo", "rollout.group_size": 1}, "DPO pairs a correct and a wrong"),
    ({"method": "grpo", "rollout.group_size": 1}, "needs at least 2 completions per prompt"),
    ({"method": "online_rft", "advantage.estimator": "process"}, "online_rft computes its advantages with indicator"),
    ({"method": "ppo", "advantage.estimator": "rloo"}, "ppo computes its advantages with gae"),
    ({"method": "rft", "loss.kl_beta": 0.1}, "rft never reads it; the methods that read it: ppo, grpo"),
    ({"method": "grpo", "advantage.estimator": "process", "task.name": "addition"}, "has no step rewards"),
    ({"method": "grpo", "advantage.estimator": "gae"}, "gae needs a critic"),
    ({"method": "grpo", "advantage.estimator": "rloo", "advantage.scale": "none"},
     "grpo reads it only with advantage.estimator: group"),
    ({"method": "ppo", "rollout.dynamic_sampling": True}, "the methods that read it: grpo, offpolicy_grpo"),
    ({"method": "sft", "rollout.mask_truncated": True}, "the methods that read it: ppo, grpo, offpolicy_grpo"),
    ({"method": "dpo", "loss.aggregation": "token_mean"}, "dpo never reads it"),
])
def test_configs_that_make_no_sense_are_refused(tiny_config, dotted, match):
    with pytest.raises(ConfigError, match=match) as info:
        check_config(tiny_config(**dotted))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("method, match", [("dpo", "no \\(correct, wrong\\) pair .* none was correct"),
                                           ("rft", "kept no correct completion")])
def test_no_signal_from_the_warm_start_stops_at_the_start(tiny_config, method, match):
    config = tiny_config(**{"method": method, "sft.steps": 0, "train.steps": 2})  # an untrained policy
    with pytest.raises(TrainingError, match=match):
        run(config, progress=False, log=False)


def test_cli_paradigm_prints_every_recipe_from_the_registry(capsys):
    from grpo_lab.methods import RECIPES, Recipe, register_recipe

    assert main(["paradigm"]) == 0
    out = capsys.readouterr().out
    for method in RECIPES.names():
        assert f"`method: {method}`" in out
    assert "group \\| rloo \\| process \\| reinforce_pp" in out and "critic.*" in out
    register_recipe(Recipe("sft_again", "references", ("supervised",), doc="a recipe of one's own"))
    try:
        assert main(["paradigm"]) == 0
        assert "`method: sft_again`" in capsys.readouterr().out  # the table is the registry's
    finally:
        RECIPES.remove("sft_again")


@pytest.mark.parametrize("method", ["grpo", "ppo"])
def test_bench_runs_every_step_of_each_method(method):
    from grpo_lab.bench import bench

    record = bench(hidden=32, layers=1, prompts=2, gens=2, max_new=4, steps=2, warmup=1, method=method, device="cpu")
    assert record["method"] == method and record["steps"] == 2  # PPO's two optimizers do not shorten the run
    assert record["peak_mem_mib"] > 0
