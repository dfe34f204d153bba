"""`grpo-lab ui`: the mlflow command it runs on the workspace's store and the URL of the experiment's
training runs (what can be checked without a browser), on a real MLflow store."""

from __future__ import annotations

import sys

import mlflow
import pytest

from grpo_lab.cli import main
from grpo_lab.runs.ui import UIError, find_experiment, runs_url, ui_command


def test_the_command_and_the_url():
    uri = "sqlite:///grpo_workspace/mlflow.db"
    assert ui_command(uri, port=5123) == [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                                          "--host", "127.0.0.1", "--port", "5123"]
    assert runs_url("http://127.0.0.1:5123/", "7") == \
        "http://127.0.0.1:5123/#/experiments/7/runs?workflowType=machine_learning"


def test_it_opens_on_the_experiment_of_the_last_run(mlflow_db, capsys):
    uri = f"sqlite:///{mlflow_db}"
    store = mlflow.tracking.MlflowClient(uri)
    first, demo = store.create_experiment("grpo_lab"), store.create_experiment("grpo_lab_demo")
    store.create_run(first)
    store.create_run(demo)
    assert find_experiment(uri) == (demo, "grpo_lab_demo")
    assert find_experiment(uri, "grpo_lab") == (first, "grpo_lab")
    assert main(["ui", "--tracking-uri", uri, "--port", "5999", "--print-only"]) == 0
    out = capsys.readouterr().out
    assert f"MLflow UI: http://127.0.0.1:5999/#/experiments/{demo}/runs?workflowType=machine_learning" in out
    assert f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5999" in out
    with pytest.raises(UIError, match="no experiment 'nope' in .*; its experiments: .*grpo_lab_demo"):
        find_experiment(uri, "nope")


def test_a_store_without_runs_says_what_to_do(tmp_path, mlflow_db, capsys):
    assert main(["ui", "--tracking-uri", f"sqlite:///{mlflow_db}", "--print-only"]) == 2
    assert "no runs in" in capsys.readouterr().err
    assert main(["ui", "--tracking-uri", f"sqlite:///{tmp_path}/none.db", "--print-only"]) == 2
    assert "no MLflow store at" in capsys.readouterr().err
