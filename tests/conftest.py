"""Shared fixtures: a tiny, fast config whose every output lands under the test's tmp_path."""

from __future__ import annotations

import copy
import os
import shutil

import pytest
import torch

from grpo_lab.config import from_dict, merge

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
# one thread: a test suite shares its cores, and oversubscribed OpenMP threads are many times slower
torch.set_num_threads(1)

TINY = {
    "name": "tiny",
    "method": "grpo",
    "seed": 0,
    "task": {"name": "chain", "digits": 1, "min_terms": 2, "max_terms": 3, "train_size": 400, "eval_size": 32},
    "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_length": 32},
    "sft": {"steps": 20, "batch_size": 16, "warmup_steps": 5},
    "rollout": {"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 8},
    "optim": {"lr": 1e-3},
    "train": {"steps": 3, "eval_every": 2, "eval_prompts": 8, "eval_samples": 4, "precision": "32-true"},
}


@pytest.fixture
def mlflow_db(tmp_path, tmp_path_factory):
    """tmp_path/mlflow.db: a copy of an empty MLflow store made once per session (creating one
    runs its migrations, which costs seconds)."""
    import mlflow

    template = tmp_path_factory.getbasetemp() / "mlflow_template.db"
    if not template.exists():
        mlflow.tracking.MlflowClient(f"sqlite:///{template}").search_experiments()
    shutil.copy(template, tmp_path / "mlflow.db")
    return tmp_path / "mlflow.db"


@pytest.fixture
def tiny_config(tmp_path, mlflow_db):
    """`tiny_config(**{"optim.lr": 1e-4})` -> a validated Config writing only under tmp_path."""

    def make(overrides: dict | None = None, **dotted):
        data = merge(copy.deepcopy(TINY), {  # a copy: the dotted overrides below write into nested dicts
            "sft": {"cache_dir": str(tmp_path / "sft")},
            "train": {"out_dir": str(tmp_path / "runs")},
            "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "tests"},
        })
        data = merge(data, overrides or {})
        for key, value in dotted.items():
            node = data
            *parents, leaf = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return from_dict(data)

    return make
