"""A grid over many machines: processes running the same `grpo-lab grid FILE --storage URL` share
its runs through one Optuna store; each run finishes once, none starts twice, and a run whose
worker dies goes back to the queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow

from grpo_lab.conventions import CONFIG_HASH_TAG, FINISHED, GRID_TAG, STATUS_TAG


def grid_files(tiny_config, tmp_path, steps: int = 1):
    base = tmp_path / "base.yaml"
    base.write_text(tiny_config(**{"train.steps": steps, "train.eval_every": steps, "train.threads": 1,
                                   "train.checkpoint_every": 1}).to_yaml())
    grid = tmp_path / "shared.yaml"
    grid.write_text("name: shared\nbase: base.yaml\nfactors: {optim.lr: [0.001, 0.002, 0.003]}\nseeds: 2\n")
    return grid


def worker(grid, storage, *extra, stdout=subprocess.PIPE):
    return subprocess.Popen([sys.executable, "-m", "grpo_lab.cli", "grid", str(grid), "--storage", storage,
                             "--no-progress", "--heartbeat", "1", *extra], stdout=stdout, stderr=subprocess.PIPE,
                            text=True, cwd=grid.parent)


def mlflow_runs(uri):
    client = mlflow.tracking.MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, f"tags.`{GRID_TAG}` = 'shared'")


def test_two_workers_finish_a_six_run_grid_once_each(tiny_config, tmp_path):
    grid = grid_files(tiny_config, tmp_path)
    storage = f"sqlite:///{tmp_path / 'queue.db'}"
    procs = [worker(grid, storage) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    runs = mlflow_runs(tiny_config().tracking.resolved_uri)
    hashes = [r.data.tags[CONFIG_HASH_TAG] for r in runs]
    assert len(runs) == 6 and len(set(hashes)) == 6  # every run started exactly once
    assert all(r.data.tags[STATUS_TAG] == FINISHED for r in runs)
    assert sum(o[0].count("finished ") for o in outs) == 6  # and the two workers split them between them
    # a third worker later finds nothing to do
    again = worker(grid, storage)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err[-2000:]
    assert "6 of 6 runs finished, 0 added" in out and len(mlflow_runs(tiny_config().tracking.resolved_uri)) == 6


def test_a_run_whose_worker_dies_goes_back_to_the_queue(tiny_config, tmp_path):
    grid = grid_files(tiny_config, tmp_path, steps=6)
    storage = f"sqlite:///{tmp_path / 'queue.db'}"
    first = worker(grid, storage, stdout=subprocess.DEVNULL)
    checkpoints = tmp_path / "runs"
    deadline = time.monotonic() + 180
    while not list(checkpoints.glob("*/checkpoints/step-000002.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)  # the machine dies in the middle of its first run
    first.wait()
    second = worker(grid, storage)
    out, err = second.communicate(timeout=400)
    assert second.returncode == 0, err[-2000:]
    runs = mlflow_runs(tiny_config().tracking.resolved_uri)
    finished = [r for r in runs if r.data.tags[STATUS_TAG] == FINISHED]
    assert len(finished) == 6 and len({r.data.tags[CONFIG_HASH_TAG] for r in finished}) == 6
    assert all(r.data.tags[STATUS_TAG] in (FINISHED, "killed") for r in runs)  # nothing left "running"
