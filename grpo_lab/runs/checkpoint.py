"""Resumable checkpoints of one run: a Lightning callback that saves every N RL steps, and the
helpers `grpo-lab train --resume` uses to find the last one.

A checkpoint is Lightning's (weights, optimizer and scheduler state, loop counters) plus what the
module adds in `on_save_checkpoint` (step counter, budget, its sampling generators, history,
method state such as a replay buffer) plus what this callback adds: the global RNG states of
torch, numpy and Python and the MLflow run id, so a resumed run continues the same MLflow run.
The data order needs nothing: the prompts of step s are a pure function of (seed, s).

Files, in the run folder `train.out_dir/<run name>-<config hash>/checkpoints/` (out_dir: the workspace's runs/):
`step-000012.ckpt` (the last `KEEP` are kept) and `last.ckpt`, a hard link to the newest. Each is
written to a temporary name and renamed, so a process killed mid-write leaves no torn file.

Every reader (resume, grid planning, analysis, Lightning's own restore through `SafeCheckpointIO`)
calls `load_checkpoint`, which unpickles with `torch.load(weights_only=True)`: tensors and plain
data only, so a file that would run code when loaded is refused instead.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins import TorchCheckpointIO

from grpo_lab.errors import GrpoLabError

KEEP = 3  # step-numbered checkpoints kept besides last.ckpt
STATE_KEY = "grpo_lab_resume"


class CheckpointError(GrpoLabError, ValueError):
    """A checkpoint that cannot be loaded safely, or at all; the message names the file and what to do."""


def load_checkpoint(path: str | Path) -> dict:
    """The contents of a checkpoint file, unpickled with `torch.load(weights_only=True)` onto the CPU.

    A grpo_lab checkpoint holds tensors, numbers, strings, lists and dicts only. A pickle that asks
    for anything else (a class or a function, which is how a file runs code when it is loaded) is
    refused before any of it runs; that, a missing file and a truncated or garbled one all raise
    `CheckpointError`.
    """
    path = Path(path)
    advice = f"delete it or move it out of {path.parent} (a resumed run then starts from the newest checkpoint left there)"
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what}; check the path, or train the run that writes it")
    try:
        with warnings.catch_warnings():  # a pickle protocol torch does not write: the file is foreign, say so below
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # what a damaged file raises depends on its bytes: EOFError, KeyError, RuntimeError, ...
        refused = re.search(r"GLOBAL ([\w.]+)", str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
        if refused:
            raise CheckpointError(f"checkpoint {path} was refused: it would import {refused.group(1)}, which a grpo_lab "
                                  f"checkpoint never does, so loading it could run code; if you did not write it, "
                                  f"{advice}") from None
        raise CheckpointError(f"checkpoint {path} cannot be read ({_reason(exc)}); it is truncated, or not a checkpoint "
                              f"grpo_lab wrote: {advice}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a checkpoint's dict: {advice}")
    return state


def _reason(exc: Exception) -> str:
    """The exception's type and the first sentence of its message that says what went wrong."""
    text = str(exc).split("WeightsUnpickler error:")[-1]  # torch's safe unpickler puts its reason after this
    line = next((part.strip() for part in text.splitlines() if part.strip()), "").split(". ")[0][:200]
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with every load through `load_checkpoint`, so that
    `trainer.fit(ckpt_path=...)` reads a checkpoint as safely as the rest of grpo_lab."""

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint(path)


def run_dir(config) -> Path:
    """Where a run's checkpoints, final weights and config copy go."""
    return Path(config.train.resolved_out_dir) / f"{config.run_name}-{config.config_hash()}"


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
    ckpt = load_checkpoint(path)
    state = ckpt.get(STATE_KEY) or {}
    return {"step": ckpt.get("grpo_lab", {}).get("step_count"), "mlflow_run_id": state.get("mlflow_run_id")}
