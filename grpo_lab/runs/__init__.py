"""Runs: `run(config) -> RunResult`, the warm start, tracking in MLflow, checkpoints."""

from grpo_lab.runs.result import RunResult
from grpo_lab.runs.train import run

__all__ = ["RunResult", "run"]
