"""Resumable checkpoints of one run: a Lightning callback that saves every N RL steps, and the
helpers `grpo-lab train --resume` uses to find the last one.

A checkpoint is Lightning's (weights, optimizer and scheduler state, loop counters) plus what the
module adds in `on_save_checkpoint` (step counter, budget, its sampling generators, history,
method state such as a replay buffer) plus what this callback adds: the global RNG states of
torch, numpy and Python and the MLflow run id, so a resumed run continues the same MLflow run.
The data order needs nothing: the prompts of step s are a pure function of (seed, s).

Files, in the run folder `train.out_dir/<run name>-<config hash>/checkpoints/`:
`step-000012.ckpt` (the last `KEEP` are kept) and `last.ckpt`, a hard link to the newest. Each is
written to a temporary name and renamed, so a process killed mid-write leaves no torn file.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Optional

import lightning as L
import numpy as np
import torch

KEEP = 3  # step-numbered checkpoints kept besides last.ckpt
STATE_KEY = "grpo_lab_resume"


def run_dir(config) -> Path:
    """Where a run's checkpoints, final weights and config copy go."""
    return Path(config.train.out_dir) / f"{config.run_name}-{config.config_hash()}"


def checkpoint_dir(config) -> Path:
    return run_dir(config) / "checkpoints"


def rng_states() -> dict:
    """The global RNG states, as tensors and ints only (loadable with torch.load(weights_only=True))."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                        "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class PeriodicCheckpoint(L.Callback):
    """Saves a resumable checkpoint after every `every`-th RL step (by the module's `step_count`)."""

    def __init__(self, folder: str | Path, every: int, run_id: Optional[str] = None, keep: int = KEEP):
        self.folder, self.every, self.run_id, self.keep = Path(folder), every, run_id, keep

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = pl_module.step_count
        if self.every > 0 and step % self.every == 0:
            self.save(trainer, step)

    def save(self, trainer, step: int) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"step-{step:06d}.ckpt"
        tmp = path.with_name(path.name + ".tmp")
        trainer.save_checkpoint(tmp)  # collective under a multi-process strategy; process 0 writes
        if not trainer.is_global_zero:
            return path
        os.replace(tmp, path)
        last_tmp = self.folder / "last.ckpt.tmp"
        last_tmp.unlink(missing_ok=True)
        try:
            os.link(path, last_tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(path, last_tmp)
        os.replace(last_tmp, self.folder / "last.ckpt")
        for old in sorted(self.folder.glob("step-*.ckpt"))[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[STATE_KEY] = {"mlflow_run_id": self.run_id, "rng": rng_states()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        state = checkpoint.get(STATE_KEY) or {}
        if state.get("rng"):
            set_rng_states(state["rng"])


def last_checkpoint(config) -> Optional[Path]:
    """The newest complete checkpoint of this config's run, or None."""
    folder = checkpoint_dir(config)
    if (folder / "last.ckpt").exists():
        return folder / "last.ckpt"
    steps = sorted(folder.glob("step-*.ckpt"))
    return steps[-1] if steps else None


def read_resume_info(path: str | Path) -> dict:
    """{'step': RL steps done, 'mlflow_run_id': the run to continue or None} of a checkpoint."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get(STATE_KEY) or {}
    return {"step": ckpt.get("grpo_lab", {}).get("step_count"), "mlflow_run_id": state.get("mlflow_run_id")}
