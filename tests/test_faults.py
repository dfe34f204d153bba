"""Faults: a non-finite loss, a reward function that raises, an unwritable tracking store."""

from __future__ import annotations


import lightning as L
import mlflow
import pytest
import torch

from grpo_lab.errors import RewardError, TrainingError
from grpo_lab.runs.checkpoint import checkpoint_dir, read_resume_info, run_dir
from grpo_lab.cli import main
from grpo_lab.runs.tracking import TrackingError
from grpo_lab.runs import run


@pytest.fixture(autouse=True)
def _store(mlflow_db):
    """Every test here writes to tmp_path/mlflow.db (see conftest)."""


class CorruptReference(L.Callback):
    """Fills the reference policy with NaN before RL step `at`: the KL term, and so the loss, is NaN."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if module.step_count == self.at:
            with torch.no_grad():
                for p in module.ref_policy.parameters():
                    p.fill_(float("nan"))


class FailingReward(L.Callback):
    def on_train_start(self, trainer, module):
        def reward(example, completion, finished):
            raise ZeroDivisionError("score of an empty answer")

        module.task.reward = reward


def only_run(config):
    client = mlflow.tracking.MlflowClient(config.tracking.resolved_uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    (found,) = client.search_runs([experiment.experiment_id])
    return found


def test_nan_loss_stops_the_run_keeps_the_last_good_checkpoint_and_fails_the_mlflow_run(tiny_config):
    config = tiny_config(**{"train.steps": 4, "train.eval_every": 4, "train.checkpoint_every": 1,
                            "loss.kl_beta": 0.1, "train.eval_prompts": 4, "train.eval_samples": 2})
    with pytest.raises(TrainingError, match=r"the actor loss is nan at step 2; lower optim.lr"):
        run(config, progress=False, callbacks=[CorruptReference(at=2)])
    last = checkpoint_dir(config) / "last.ckpt"
    assert read_resume_info(last)["step"] == 2
    state = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for k, v in state.items() if k.startswith("policy."))
    assert not (run_dir(config) / "final.ckpt").exists()
    failed = only_run(config)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["grpo_lab.status"] == "failed"
    assert failed.data.tags["grpo_lab.error"].startswith("TrainingError: the actor loss is nan at step 2")


def test_a_reward_that_raises_names_the_prompt_and_the_completion(tiny_config):
    config = tiny_config(**{"train.steps": 2, "train.eval_prompts": 4, "train.eval_samples": 2})
    with pytest.raises(RewardError) as info:
        run(config, progress=False, callbacks=[FailingReward()])
    message = str(info.value)
    assert "raised ZeroDivisionError: score of an empty answer on prompt '" in message
    assert "' and completion '" in message
    assert "\n" not in message
    assert only_run(config).data.tags["grpo_lab.error"].startswith("RewardError: the reward function of task 'chain'")


def test_unwritable_tracking_folder_fails_before_training(tiny_config, tmp_path, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the tracking folder should be")
    config = tiny_config(**{"tracking.uri": f"sqlite:///{blocker}/mlflow.db"})
    with pytest.raises(TrackingError, match=r"cannot write to .*not_a_folder \(File exists\); point MLFLOW_TRACKING_URI"):
        run(config, progress=False)
    assert not (tmp_path / "sft").exists(), "training started before the check"
    path = tmp_path / "bad.yaml"
    path.write_text(config.to_yaml())
    assert main(["train", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("grpo-lab: error: cannot write to ") and len(err.splitlines()) == 1
