"""What the training side and the analysis side agree on: MLflow tags and statuses, the tracking
client, and which config keys do not change what a run computes.

Imports nothing of grpo_lab, so both sides (and the config) can use it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# MLflow tags of every run
CONFIG_HASH_TAG = "grpo_lab.config_hash"  # Config.config_hash(): what the run computes
SFT_HASH_TAG = "grpo_lab.sft_hash"  # Config.sft_hash(): its warm start
METHOD_TAG = "grpo_lab.method"
STATUS_TAG = "grpo_lab.status"  # one of STATUSES
ERROR_TAG = "grpo_lab.error"  # why a run stopped: "<exception type>: <first line of its message>"
CHECKPOINT_TAG = "grpo_lab.checkpoint"
SFT_CHECKPOINT_TAG = "grpo_lab.sft_checkpoint"
# grids and sweeps
GRID_TAG, ARM_TAG, FACTORS_TAG = "grpo_lab.grid", "grpo_lab.arm", "grpo_lab.factors"
GRID_FILE_TAG = "grpo_lab.grid_file"  # the grid file's absolute path: `grpo-lab report NAME` reads its metric and claims
SWEEP_TAG, TRIAL_TAG, PARENT_TAG = "grpo_lab.sweep", "grpo_lab.trial", "mlflow.parentRunId"

RUNNING, FINISHED, FAILED, INTERRUPTED, PRUNED, KILLED = "running", "finished", "failed", "interrupted", "pruned", "killed"
STATUSES = (RUNNING, FINISHED, FAILED, INTERRUPTED, PRUNED, KILLED)

# Config keys that say where or how a run executes, not what it computes: left out of the config
# hash, and not counted as a difference between arms of a comparison. A key ending in ".*" covers
# its whole section.
NOT_RESULT_KEYS = (
    "train.out_dir", "train.device", "train.threads", "train.strategy", "train.devices", "train.num_nodes",
    "optim.micro_batch_size",  # the same update in chunks
    "optim.fused",  # the same update by another kernel
    "tracking.*",
    "sft.cache_dir",
    "model.trust_remote_code",  # a permission: the folder's code runs with it, or the run stops without it
    "model.activation_checkpointing",  # the same step, activations recomputed instead of kept
    "train.eval_table",  # what is shown of the evaluations, not what they compute
)
# Keys of the task, model and sft sections that shape the RL run but not its warm start, which trains
# the whole model (no adapter) on the task's training examples with the SFT loss alone: the reward
# functions and the verifier's comparison are never read by it. Left out of `Config.sft_hash`.
RUN_ONLY_KEYS = ("model.adapter.*", "task.rewards", "task.compare", "task.tolerance")
# Of those, keys the first version's hash held: hashed as this constant, so identities stay as they were.
HASHED_AS = {"sft.cache_dir": ".grpo_lab/sft"}


WORKSPACE_ENV = "GRPO_LAB_WORKSPACE"


def workspace() -> Path:
    """Where a user's runs, reports, caches and stores go: `$GRPO_LAB_WORKSPACE`, else `grpo_workspace`
    in the working directory. Layout: mlflow.db, optuna.db, runs/, cache/sft/, reports/."""
    return Path(os.environ.get(WORKSPACE_ENV) or "grpo_workspace")


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the workspace's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{workspace() / 'mlflow.db'}"


def artifact_location(uri: str):
    """Where a new experiment of a local SQLite store keeps its artifacts: a folder beside the database
    (MLflow's default, ./mlruns, would land in whatever directory the command ran from). None for a
    server, which decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()


def is_result_key(key: str, not_result: tuple[str, ...] = NOT_RESULT_KEYS) -> bool:
    """Whether the dotted config key `key` changes what a run computes (is none of `not_result`)."""
    return not any(key == k or (k.endswith(".*") and (key.startswith(k[:-1]) or key == k[:-2])) for k in not_result)


def client(uri: str):
    """An MLflow tracking client for `uri`."""
    import mlflow

    return mlflow.tracking.MlflowClient(uri)


def redact(url: str) -> str:
    """A storage URL with its password replaced by ***."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
