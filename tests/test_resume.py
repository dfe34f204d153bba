"""A run killed with SIGKILL and resumed with `--resume` ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
import torch

from grpo_lab.runs.checkpoint import checkpoint_dir, read_resume_info, run_dir
from grpo_lab.config import with_overrides
from grpo_lab.runs import run

KILL_AT = 2


@pytest.fixture(autouse=True)
def _store(mlflow_db):
    """Every test here writes to tmp_path/mlflow.db (see conftest)."""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "grpo_lab.cli", *args]


def histories(client, run_id: str) -> dict:
    """{metric: {step: value}} of every metric but wall-clock timings (a resumed run may log a step twice)."""
    keys = [k for k in client.get_run(run_id).data.metrics if not k.startswith("perf/")]
    return {k: {m.step: m.value for m in client.get_metric_history(run_id, k)} for k in keys}


def kill_and_resume(config, tmp_path, kill_at: int):
    """Runs `config` uninterrupted (the reference, written elsewhere), then as `grpo-lab train` killed
    with SIGKILL once the checkpoint of step `kill_at` exists, then `--resume`d to the end; returns
    (the reference's result, the step the killed run had checkpointed last)."""
    reference = run(with_overrides(config, **{"train.out_dir": str(tmp_path / "reference")}), progress=False)
    path = tmp_path / "run.yaml"
    path.write_text(config.to_yaml())

    child = subprocess.Popen(cli("train", str(path), "--no-progress"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    target = checkpoint_dir(config) / f"step-{kill_at:06d}.ckpt"
    deadline = time.monotonic() + 120
    while not target.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err
    assert not (run_dir(config) / "final.ckpt").exists(), "the run finished before it could be killed"
    killed_at = read_resume_info(checkpoint_dir(config) / "last.ckpt")["step"]
    assert kill_at <= killed_at < config.train.steps

    done = subprocess.run(cli("train", str(path), "--resume", "--no-progress"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resuming from step {killed_at}" in done.stderr
    return reference, killed_at


def test_sigkilled_run_resumes_to_identical_weights_and_metrics(tiny_config, tmp_path):
    config = tiny_config(**{"train.steps": 8, "train.eval_every": 4, "train.checkpoint_every": 1,
                            "train.threads": 2, "train.eval_prompts": 4, "train.eval_samples": 2})
    # the uninterrupted reference: same config (so same hash and seed), results written elsewhere
    reference, _ = kill_and_resume(config, tmp_path, KILL_AT)

    # weights: bit for bit
    ref_state = torch.load(reference.checkpoint, weights_only=True)["state_dict"]
    final = run_dir(config) / "final.ckpt"
    state = torch.load(final, weights_only=True)["state_dict"]
    assert ref_state.keys() == state.keys()
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)

    # the resumed run continued the killed run's MLflow run, which now holds the whole curve
    client = mlflow.tracking.MlflowClient(config.tracking.resolved_uri)
    run_id = read_resume_info(final)["mlflow_run_id"]
    runs = client.search_runs([client.get_run(run_id).info.experiment_id],
                              f"tags.`grpo_lab.config_hash` = '{config.config_hash()}'")
    assert sorted(r.info.run_id for r in runs) == sorted([run_id, reference.run_id])
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.tags["grpo_lab.status"] == "finished"
    ref_curves, curves = histories(client, reference.run_id), histories(client, run_id)
    assert curves == ref_curves
    assert sorted(curves["eval/accuracy"]) == [0, 4, 8]
    assert sorted(curves["rollout/reward_mean"]) == list(range(1, 9))


def test_resume_in_process_returns_the_whole_history(tiny_config, tmp_path):
    config = tiny_config(**{"train.steps": 4, "train.eval_every": 2, "train.checkpoint_every": 1,
                            "train.eval_prompts": 4, "train.eval_samples": 2})
    full = run(config, progress=False, log=False)
    kept = sorted(p.name for p in checkpoint_dir(config).glob("step-*.ckpt"))
    assert kept == ["step-000002.ckpt", "step-000003.ckpt", "step-000004.ckpt"]  # the last KEEP
    again = run(with_overrides(config, **{"train.out_dir": str(tmp_path / "again")}), progress=False, log=False,
                resume_from=checkpoint_dir(config) / "step-000002.ckpt")

    def timeless(rows):
        return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in rows]

    assert timeless(again.history) == timeless(full.history)
    assert json.dumps(again.metrics) == json.dumps(full.metrics)  # NaN lengths compare equal as text
    assert json.dumps(again.initial) == json.dumps(full.initial)
