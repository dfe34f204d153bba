"""Sweeps: an 8-trial Optuna study that prunes, survives a failing trial and continues when run again."""

from __future__ import annotations


import mlflow
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from grpo_lab.cli import main
from grpo_lab.experiments.sweep import SweepError, grid_values, load_sweep, open_study, redact


@pytest.fixture(autouse=True)
def _store(mlflow_db):
    """Every test here writes to tmp_path/mlflow.db (see conftest)."""


def write(tmp_path, spec: dict):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sweep_prunes_survives_a_failing_trial_and_continues(tiny_config, tmp_path, capsys):
    config = tiny_config(**{"train.steps": 4, "train.eval_every": 1, "train.eval_prompts": 4, "train.eval_samples": 2})
    storage = f"sqlite:///{tmp_path}/optuna.db"
    # entropy rises with the learning rate on this tiny run: a clean signal for the median pruner
    path = write(tmp_path, {
        "study": "tiny", "base": config.to_dict(), "n_trials": 8, "storage": storage,
        "space": {"optim.lr": {"type": "float", "low": 1e-4, "high": 5e-2, "log": True}},
        "objective": {"metric": "eval/entropy", "direction": "maximize"},
        "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "median", "n_startup_trials": 2},
    })
    assert main(["sweep", str(path), "--n-trials", "4", "--no-progress"]) == 0
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert len(study.trials) == 4
    study.enqueue_trial({"optim.lr": 0.5})  # a trial whose config is refused: it must fail, not stop the study

    assert main(["sweep", str(path), "--no-progress"]) == 0  # continues up to the file's 8 trials
    study = optuna.load_study(study_name="tiny", storage=storage)
    states = [t.state for t in study.trials]
    assert len(states) == 8
    assert states.count(TrialState.PRUNED) >= 1
    (failed,) = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed.user_attrs["error"].startswith("ConfigError: optim.lr is 0.5")
    assert states.count(TrialState.COMPLETE) >= 2
    assert len({t.params["optim.lr"] for t in study.trials}) == 8  # the continuation drew new values

    # MLflow: one study run, and one run per trial nested under it
    client = mlflow.tracking.MlflowClient(config.tracking.resolved_uri)
    exp = client.get_experiment_by_name("tests")
    runs = client.search_runs([exp.experiment_id], "tags.`grpo_lab.sweep` = 'tiny'")
    (parent,) = [r for r in runs if r.data.tags.get("grpo_lab.role") == "study"]
    trials = [r for r in runs if r is not parent]
    assert sorted(int(r.data.tags["grpo_lab.trial"]) for r in trials) == list(range(8))
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    by_trial = {int(r.data.tags["grpo_lab.trial"]): r for r in trials}
    for t in study.trials:
        run = by_trial[t.number]
        expected = {TrialState.COMPLETE: ("finished", "FINISHED"), TrialState.PRUNED: ("pruned", "KILLED"),
                    TrialState.FAIL: ("failed", "FAILED")}[t.state]
        assert (run.data.tags["grpo_lab.status"], run.info.status) == expected
    assert by_trial[failed.number].data.tags["grpo_lab.error"].startswith("ConfigError: optim.lr is 0.5")
    assert parent.info.status == "FINISHED" and "sweep/best_value" in parent.data.metrics

    capsys.readouterr()
    assert main(["sweep", str(path), "--no-progress"]) == 0  # a finished study runs nothing
    assert "8 of 8 trials done; running 0" in capsys.readouterr().out
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 8


def test_sweep_files_are_checked_before_anything_runs(tiny_config, tmp_path):
    base = tiny_config().to_dict()
    good = {"base": base, "space": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}
    with pytest.raises(SweepError, match="space: unknown config key 'optim.learning_rate'"):
        load_sweep(write(tmp_path, {**good, "space": {"optim.learning_rate": [1e-3]}}))
    with pytest.raises(SweepError, match="pruner is 'percentile'; choose one of median, hyperband, none"):
        load_sweep(write(tmp_path, {**good, "pruner": "percentile"}))
    with pytest.raises(SweepError, match="grid sampler needs space.optim.lr to be categorical or to have a step"):
        load_sweep(write(tmp_path, {**good, "sampler": "grid"}))
    with pytest.raises(SweepError, match="objective.metric is 'actor/loss'; use an evaluation metric"):
        load_sweep(write(tmp_path, {**good, "objective": {"metric": "actor/loss"}}))
    sweep = load_sweep(write(tmp_path, {**good, "seeds": 2}), storage="postgresql://u:secret@db/optuna")
    assert sweep.seeds == [0, 1] and sweep.n_trials == 20 and redact(sweep.storage) == "postgresql://u:***@db/optuna"
    assert grid_values({"type": "float", "low": 0.1, "high": 0.3, "step": 0.1}) == [0.1, 0.2, 0.3]
    with pytest.raises(SweepError, match=r"cannot open the Optuna storage nosuchdb://u:\*\*\*@h/x"):
        open_study(load_sweep(write(tmp_path, good), storage="nosuchdb://u:pw@h/x"))
    assert grid_values({"type": "int", "low": 1, "high": 3}) == [1, 2, 3]


def test_example_sweep_file_loads():
    sweep = load_sweep("experiments/sweep_example.yaml")
    assert sweep.name == "sweep_example" and sweep.seeds == [0, 1] and sweep.pruner["name"] == "median"
