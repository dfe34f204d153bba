"""A tiny GRPO run end to end: parameters move, metrics and artifacts land in MLflow."""

from __future__ import annotations

import mlflow
import torch

from grpo_lab.runs import run


def test_grpo_run_end_to_end(tiny_config):
    # the entropy bonus gives a gradient even when every reward of the tiny warm start is 0
    config = tiny_config(**{"train.steps": 3, "train.eval_every": 2, "loss.entropy_coef": 0.01})
    result = run(config, progress=False)
    # evaluation before the first step, every eval_every steps, and after the last
    eval_steps = [row["step"] for row in result.history if "eval/accuracy" in row]
    assert eval_steps == [0, 2, 3]
    assert set(result.metrics) >= {"eval/accuracy", "eval/greedy_accuracy", "eval/pass_at_4", "eval/maj_at_4",
                                   "eval/entropy"}
    assert result.checkpoint.exists() and result.sft_path is not None
    # the policy moved away from the warm start
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(result.sft_path).state_dict()
    moved = [k for k, v in start.items() if not torch.equal(state[f"policy.{k}"], v)]
    assert moved, "no parameter changed during GRPO"
    # MLflow holds params, per-step metrics, tags and artifacts
    client = mlflow.tracking.MlflowClient(config.tracking.resolved_uri)
    run_info = client.get_run(result.run_id)
    assert run_info.data.params["optim.lr"] == str(config.optim.lr)
    assert run_info.data.tags["grpo_lab.status"] == "finished"
    assert run_info.data.tags["grpo_lab.config_hash"] == config.config_hash()
    history = client.get_metric_history(result.run_id, "rollout/reward_mean")
    assert [m.step for m in history] == [1, 2, 3]
    budget = client.get_metric_history(result.run_id, "budget/samples")
    assert budget[-1].value == 3 * 4 * 4
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "final_metrics.json"} <= artifacts
