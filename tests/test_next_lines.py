"""What commands print for a person: a run named by its config file, "next:" lines that carry the
PYTHONPATH=. an own task in the working directory needs, and sweep parameters rounded for display."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from grpo_lab.cli import main, named_by_overrides
from grpo_lab.experiments.sweep import shown_params
from grpo_lab.imports import import_paths, pythonpath_prefix


def test_a_run_is_named_by_its_config_file(tiny_config):
    unnamed = tiny_config(name="run")
    assert named_by_overrides(unnamed, [], Path("exp/my_task.yaml")).run_name == "my_task-grpo-s0"
    assert named_by_overrides(unnamed, ["optim.lr=1e-4"], Path("my_task.yaml")).run_name == \
        "my_task-grpo-optim.lr=1e-4-s0"
    named = tiny_config()  # name: tiny
    assert named_by_overrides(named, [], Path("my_task.yaml")).run_name == "tiny-grpo-s0"
    renamed = named_by_overrides(unnamed, [], Path("my_task.yaml"))
    assert renamed.config_hash() == unnamed.config_hash()  # the name of the run is not what it computes


def test_sweep_parameters_are_rounded_for_display():
    assert shown_params({"loss.clip_low": 0.15000000000000002, "optim.lr": 3.0e-4, "optim.epochs": 2,
                         "loss.aggregation": "token_mean"}) == \
        '{"loss.clip_low": 0.15, "optim.lr": 0.0003, "optim.epochs": 2, "loss.aggregation": "token_mean"}'


def test_import_paths_from_the_working_directory_need_pythonpath(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cwd_rewards.py").write_text("def ok(example, completion, finished):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = {"task": {"rewards": [{"fn": "correct"}, {"fn": "cwd_rewards:ok"}]},
              "tracking": {"uri": "sqlite:///x/mlflow.db"}}
    assert import_paths(config) == ["cwd_rewards:ok"]  # not the URI
    assert pythonpath_prefix(config) == "PYTHONPATH=. "
    assert pythonpath_prefix({"method": "grpo_lab.methods.recipes:x", "task": {"name": "json:loads"}}) == ""


def test_train_and_export_say_what_to_run_next_with_pythonpath(tiny_config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # what PYTHONPATH=. does
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent('''
        def short(example, completion, finished):
            return 1.0 if len(completion) < 4 else 0.0
    '''))
    data = tiny_config(**{"sft.steps": 5, "train.steps": 1, "train.eval_every": 1, "train.eval_prompts": 4,
                          "train.eval_samples": 2}).to_dict()
    data["name"] = "run"  # no name of its own: the file names the run
    data["task"]["rewards"] = [{"fn": "correct"}, {"fn": "my_rewards:short", "weight": 0.1}]
    (tmp_path / "own_task.yaml").write_text(yaml.safe_dump(data))
    assert main(["train", "own_task.yaml", "--no-progress"]) == 0
    out = capsys.readouterr().out
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("own_task-grpo-s0-")
    assert "next: grpo-lab ui" in out
    assert f"PYTHONPATH=. grpo-lab eval runs/{folder.name}   (" in out
    assert main(["export", str(folder), "--out", str(tmp_path / "exported")]) == 0
    out = capsys.readouterr().out
    assert "next: PYTHONPATH=. grpo-lab eval exported   (evaluates it on the run's task)" in out
