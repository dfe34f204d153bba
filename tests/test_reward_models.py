"""Reward models: the reward_model method learns a learnable pair set (held-out accuracy, its folder
loads in transformers), a learned reward drives GRPO, PPO and online RFT while the verifier stays
logged beside it, the reward model is trained once per config, and the paradigm says "Model"."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from grpo_lab.config import ConfigError
from grpo_lab.engine import GRPO
from grpo_lab.methods import check_config
from grpo_lab.methods.recipes import paradigm_table
from grpo_lab.models import build_policy
from grpo_lab.models.positions import position_ids
from grpo_lab.models.reward import RewardModel
from grpo_lab.runs import run
from grpo_lab.runs.checkpoint import run_dir
from grpo_lab.runs.train import build_task_for
from tiny_models import write_jsonl

RM = {"prompts": 32, "eval_prompts": 16, "lr": 1e-3, "batch_size": 16, "steps": 15}  # a small reward-model config
SFT = {"sft.steps": 150, "sft.lr": 1e-2}  # a warm start that gets some answers right, so samples make pairs


def preference_rows(n: int, seed: int = 0) -> list[dict]:
    """A learnable pair set: the chosen completion says "yes", the rejected one "no", after a number."""
    numbers = random.Random(seed).sample(range(1000), n)  # distinct prompts
    return [{"prompt": f"q{number}:", "chosen": f"yes {number}", "rejected": f"no {number}"} for number in numbers]


def dataset_rm_config(tiny_config, tmp_path, **dotted):
    path = write_jsonl(tmp_path / "prefs.jsonl", preference_rows(240))
    return tiny_config(**{"method": "reward_model", "task": {"name": "dataset", "path": str(path),
                                                             "columns": {"answer": "chosen"}, "eval_size": 40},
                          "reward_model.pairs": "dataset", "reward_model.batch_size": 16,
                          "reward_model.lr": 3e-3, "reward_model.eval_prompts": 40, "train.steps": 30,
                          "train.eval_every": 30, **dotted})


def test_reward_model_learns_a_learnable_pair_set_and_saves_a_transformers_folder(tiny_config, tmp_path):
    config = dataset_rm_config(tiny_config, tmp_path)
    start = time.perf_counter()
    result = run(config, progress=False)
    seconds = time.perf_counter() - start
    initial = next(row for row in result.history if row["step"] == 0 and "eval/pair_accuracy" in row)
    assert initial["eval/pair_accuracy"] == 0.5  # a zero head ties every pair: chance
    assert result.metrics["eval/pairs"] == 40
    assert result.metrics["eval/pair_accuracy"] >= 0.9, result.metrics  # held-out rows, well above chance
    assert result.metrics["eval/reward_margin"] > 0.5
    assert seconds < 90, f"{seconds:.0f} s"  # a few seconds of training on an idle core (warm start included)
    losses = [row["reward_model/loss"] for row in result.history if "reward_model/loss" in row]
    assert len(losses) == 30 and sum(losses[-5:]) < sum(losses[:5])
    client = mlflow.tracking.MlflowClient(config.tracking.resolved_uri)
    logged = client.get_metric_history(result.run_id, "eval/pair_accuracy")
    assert sorted(m.step for m in logged) == [0, 30]

    # the folder: a transformers sequence-classification model that scores as the run's reward model does
    from transformers import AutoModelForSequenceClassification

    folder = run_dir(config) / "reward_model"
    hf = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
    ours = RewardModel.load(folder)
    assert len(ours.pairs) == 200 and json.loads((folder / "reward_model.json").read_text())["eval"]
    from grpo_lab.methods.reward_model import pair_batch

    batch = pair_batch(ours.pairs[:6], pad_id=hf.config.pad_token_id)
    rollout = batch.rollout
    mask = rollout.attention_mask.long()
    with torch.no_grad():
        theirs = hf(input_ids=rollout.input_ids, attention_mask=mask, position_ids=position_ids(mask)).logits[:, 0]
        torch.testing.assert_close(ours.score(rollout), theirs, rtol=1e-5, atol=1e-5)
    state = torch.load(result.checkpoint, weights_only=True)["state_dict"]
    assert torch.equal(state["reward_model.head.weight"], ours.head.weight)


def test_reward_model_from_policy_samples_is_refused_where_it_cannot_run(tiny_config):
    with pytest.raises(ConfigError, match="reward_model.steps is 7 but a reward_model run makes train.steps"):
        check_config(tiny_config(method="reward_model", **{"reward_model.steps": 7}))
    with pytest.raises(ConfigError, match="reward_model.pairs is dataset but task chain has no data rows"):
        check_config(tiny_config(method="reward_model", **{"reward_model.pairs": "dataset"}))
    with pytest.raises(ConfigError, match="reward_model.lr is set .* but method grpo never reads it"):
        check_config(tiny_config(**{"reward_model.lr": 1e-3}))
    with pytest.raises(ConfigError, match=r"reward\.model\.\w+ is set .* but method dpo never reads it; the methods that read it: online_rft"):
        check_config(tiny_config(method="dpo", **{"reward.model": RM}))
    with pytest.raises(ConfigError, match="reward.model .* does not exist"):
        check_config(tiny_config(**{"reward.model": "no/such/folder"}))
    with pytest.raises(ConfigError, match="unknown key 'reward.model.label_nois'; did you mean"):
        tiny_config(**{"reward.model": {"label_nois": 0.1}})


def test_a_learned_reward_replaces_the_task_reward_and_the_verifier_stays_logged(tiny_config):
    config = tiny_config(**{"reward.model": RM, "reward.batch_size": 5})  # the module is given below
    task = build_task_for(config)
    torch.manual_seed(0)
    policy, tokenizer = build_policy(config.model, task.alphabet)
    reward_model = RewardModel.from_policy(policy)
    torch.nn.init.normal_(reward_model.head.weight, std=0.5)
    module = GRPO(config, policy, tokenizer, task, reward_model=reward_model)
    assert not any(p.requires_grad for p in module.reward_model.parameters())  # frozen
    data = module.source.collect(module.step_of(0))
    with torch.no_grad():
        expected = reward_model.score(data.batch.rollout)  # all rows at once, against chunks of 5
    torch.testing.assert_close(data.batch.rewards, expected, rtol=1e-5, atol=1e-6)
    assert data.metrics["rollout/proxy_reward"] == pytest.approx(float(expected.mean()), abs=1e-6)
    verifier = [float(task.reward(ex, text, done)) for ex, text, done in
                zip(data.batch.examples, data.batch.texts, data.batch.rollout.finished.tolist())]
    assert data.metrics["rollout/true_reward"] == pytest.approx(sum(verifier) / len(verifier))
    assert data.metrics["rollout/accuracy"] == pytest.approx(sum(verifier) / len(verifier))  # the verifier's


@pytest.mark.parametrize("method", ["grpo", "ppo", "online_rft", "offpolicy_grpo"])
def test_online_methods_train_against_a_cached_reward_model(tiny_config, method):
    dotted = {"method": method, "reward.model": RM, "reward.kl_initial": True, "train.steps": 2, "train.eval_every": 2,
              **SFT}
    if method == "offpolicy_grpo":
        dotted.update({"offpolicy.staleness": 1, "offpolicy.replay": 2, "offpolicy.eta": 2})
    config = tiny_config(**dotted)
    result = run(config, progress=False, log=False)
    rows = [row for row in result.history if "rollout/proxy_reward" in row]
    assert len(rows) == 2
    for row in rows:
        assert row["rollout/true_reward"] == pytest.approx(row["rollout/accuracy"])  # chain: reward 1 when correct
        assert row["rollout/reward_mean"] == pytest.approx(row["rollout/proxy_reward"], abs=1e-5)
        assert "rollout/kl_initial" in row
    assert abs(rows[0]["rollout/kl_initial"]) < 1e-4  # the first samples are the initial policy's
    assert "eval/accuracy" in result.metrics  # evaluation stays the verifier's
    if method == "online_rft":  # best-of-G by the reward model: one row kept per prompt
        assert all(row["rft/kept"] == config.rollout.prompts_per_step for row in result.history if "rft/kept" in row)
    folders = [f for f in Path(config.sft.resolved_cache_dir).glob("reward_model-*") if f.is_dir()]
    assert len(folders) == 1 and (folders[0] / "done.json").exists()


def test_the_reward_model_is_trained_once_per_config(tiny_config):
    first = tiny_config(**{"reward.model": RM, "train.steps": 1, "train.eval_every": 1, **SFT})
    run(first, progress=False, log=False)
    folder = next(p for p in Path(first.sft.resolved_cache_dir).glob("reward_model-*") if p.is_dir())
    built = (folder / "done.json").stat().st_mtime_ns
    # another seed, learning rate and method score with the same reward model; its own keys make a new one
    run(tiny_config(**{"reward.model": RM, "seed": 3, "optim.lr": 5e-4, "method": "ppo", "train.steps": 1,
                       "train.eval_every": 1, **SFT}), progress=False, log=False)
    assert (folder / "done.json").stat().st_mtime_ns == built
    assert len([p for p in Path(first.sft.resolved_cache_dir).glob("reward_model-*") if p.is_dir()]) == 1
    run(tiny_config(**{"reward.model": {**RM, "label_noise": 0.2}, "train.steps": 1, "train.eval_every": 1, **SFT}),
        progress=False, log=False)
    assert len([p for p in Path(first.sft.resolved_cache_dir).glob("reward_model-*") if p.is_dir()]) == 2
    # a folder works as reward.model too
    again = run(tiny_config(**{"reward.model": str(folder), "train.steps": 1, "train.eval_every": 1, **SFT}),
                progress=False, log=False)
    assert "rollout/proxy_reward" in again.history[1]


def test_paradigm_shows_model_rewards_for_a_run_with_a_learned_reward(tiny_config, tmp_path):
    rule = paradigm_table(tiny_config())
    learned = paradigm_table(tiny_config(**{"reward.model": RM}))
    row = lambda table, m: next(line for line in table.splitlines() if line.startswith(f"| `method: {m}`"))  # noqa: E731
    for method in ("grpo", "ppo", "online_rft", "offpolicy_grpo"):
        assert "| Rule" in row(rule, method) and "| Model" in row(learned, method)
    assert "| Rule" in row(learned, "rft") and "| Rule" in row(learned, "dpo")  # they never read reward.model
    assert "reward_model" in paradigm_table() and "bradley_terry" in paradigm_table()
    path = tmp_path / "learned.yaml"
    path.write_text("reward:\n  model: {pairs: policy, label_noise: 0.1}\n")
    out = subprocess.run([sys.executable, "-m", "grpo_lab.cli", "paradigm", str(path)], capture_output=True,
                         text=True, check=True).stdout
    assert "| Model + overlong + kl |" in row(out, "grpo")
