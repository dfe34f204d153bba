"""Grids: expansion and fairness checks, and a killed grid that resumes to exactly its runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
import yaml

from grpo_lab.cli import main
from grpo_lab.experiments import GridError, expand, load_grid

ARMS = ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"]


@pytest.fixture(autouse=True)
def _store(mlflow_db):
    """Every test here writes to tmp_path/mlflow.db (see conftest)."""


def test_crossed_and_zipped_factors_expand_to_tagged_runs(tiny_config):
    base = tiny_config().to_dict()
    grid = expand({"grid": "g", "base": base, "factors": {"loss.aggregation": ARMS[:2], "advantage.scale": ["group", "none"]},
                   "seeds": 2})
    assert len(grid.runs) == 8 and len({r.config_hash for r in grid.runs}) == 8
    first = grid.runs[0]
    assert first.arm == "loss.aggregation=token_mean,advantage.scale=group" and first.seed == 0
    assert first.config.loss.aggregation == "token_mean" and first.config.advantage.scale == "group"
    tags = first.tags("g")
    assert tags["grpo_lab.grid"] == "g" and json.loads(tags["grpo_lab.factors"]) == first.factors
    zipped = expand({"base": base, "mode": "zipped", "seeds": [3],
                     "factors": {"loss.aggregation": ARMS[:2], "advantage.scale": ["group", "none"]}})
    assert [(r.arm, r.seed) for r in zipped.runs] == [("loss.aggregation=token_mean,advantage.scale=group", 3),
                                                      ("loss.aggregation=seq_mean_token_mean,advantage.scale=none", 3)]
    # a mapping value sets its keys inside the section, keeping the others
    merged = expand({"base": base, "factors": {"loss": [{"clip_low": 0.1}, {"clip_low": 0.3}]}})
    assert [r.config.loss.clip_low for r in merged.runs] == [0.1, 0.3]
    assert all(r.config.loss.aggregation == base["loss"]["aggregation"] for r in merged.runs)


def test_unfair_or_malformed_grids_are_refused_with_one_line(tiny_config):
    base = tiny_config().to_dict()
    with pytest.raises(GridError, match=r"arms get different budgets .*or set budget: free"):
        expand({"base": base, "factors": {"train.steps": [2, 4]}})
    assert len(expand({"base": base, "factors": {"train.steps": [2, 4]}, "budget": "free"}).runs) == 2
    with pytest.raises(GridError, match="change the SFT warm start .*warm_start: per_arm"):
        expand({"base": base, "factors": {"sft.lr": [1e-3, 3e-3]}})
    with pytest.raises(GridError, match="arm loss.agregation=x: unknown config key 'loss.agregation'; did you mean"):
        expand({"base": base, "factors": {"loss.agregation": ["x"]}})
    with pytest.raises(GridError, match=r"zipped factors need lists of one length"):
        expand({"base": base, "mode": "zipped", "factors": {"loss.aggregation": ARMS[:2], "advantage.scale": ["none"]}})
    with pytest.raises(GridError, match="unknown grid key 'factor'"):
        expand({"base": base, "factor": {}})


def finished_runs(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], "tags.`grpo_lab.grid` = 'killed' and tags.`grpo_lab.status` = 'finished'")


def test_killed_grid_resumes_to_exactly_six_finished_runs(tiny_config, tmp_path, capsys):
    config = tiny_config(**{"train.steps": 2, "train.eval_every": 2, "train.eval_prompts": 4, "train.eval_samples": 2})
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"grid": "killed", "base": config.to_dict(), "seeds": [0, 1],
                                    "factors": {"loss.aggregation": ARMS}}))
    client = mlflow.tracking.MlflowClient(config.tracking.resolved_uri)

    child = subprocess.Popen([sys.executable, "-m", "grpo_lab.cli", "grid", str(path), "--jobs", "2", "--no-progress"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 150
    while child.poll() is None and time.monotonic() < deadline and len(finished_runs(client, "tests")) < 2:
        time.sleep(0.2)
    os.killpg(child.pid, signal.SIGKILL)  # the grid and its worker processes
    _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err
    before = len(finished_runs(client, "tests"))
    assert 2 <= before < 6, f"{before} runs finished before the kill"

    assert main(["grid", str(path), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert f"6 runs (3 arms x 2 seeds), {before} finished, {6 - before} to run" in listing
    assert listing.count("\n  done ") == before

    assert main(["grid", str(path), "--no-progress"]) == 0
    runs = finished_runs(client, "tests")
    assert len(runs) == 6
    assert len({r.data.tags["grpo_lab.config_hash"] for r in runs}) == 6
    assert {r.data.tags["grpo_lab.arm"] for r in runs} == {f"loss.aggregation={a}" for a in ARMS}
    assert {r.data.params["seed"] for r in runs} == {"0", "1"}
    # runs the kill interrupted are marked killed, not left 'running' forever
    exp = client.get_experiment_by_name("tests")
    every = client.search_runs([exp.experiment_id], "tags.`grpo_lab.grid` = 'killed'")
    assert not [r for r in every if r.info.status == "RUNNING" or r.data.tags["grpo_lab.status"] == "running"]

    capsys.readouterr()
    assert main(["grid", str(path), "--no-progress"]) == 0  # a finished grid does nothing
    assert "6 of 6 runs already finished; running 0" in capsys.readouterr().out
    assert len(finished_runs(client, "tests")) == 6


def test_example_grid_file_loads():
    grid = load_grid("experiments/grid_example.yaml")
    assert grid.name == "grid_example" and len(grid.runs) == 6
    assert len({r.config.sft_hash() for r in grid.runs}) == 1
