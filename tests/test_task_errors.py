"""Bad input to tasks, rewards, eval and export ends with one line `grpo-lab: error: ...` and exit
status 2: a missing column, a template naming an unknown column, import paths that do not resolve, a
reward function returning a string, a source that is not there, an export over another folder."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from test_errors import error_line
from tiny_models import gsm8k_rows, write_jsonl


@pytest.fixture
def data_config(tiny_config, tmp_path):
    """A dataset-task config file over a GSM8K-format file; returns (path of the YAML, its dict)."""
    rows = write_jsonl(tmp_path / "rows.jsonl", gsm8k_rows(20))
    data = tiny_config(**{"sft.steps": 5, "train.steps": 1}).to_dict()
    data["task"] = {"name": "dataset", "path": str(rows), "eval_size": 4, "columns": {"prompt": "question"}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, data


def with_task(path, data, **task):
    changed = {**data, "task": {**data["task"], **task}}
    path.write_text(yaml.safe_dump(changed))
    return str(path)


def test_a_missing_column(data_config, capsys):
    path, data = data_config
    err = error_line(capsys, ["train", with_task(path, data, columns={"prompt": "problem"}), "--no-progress"])
    assert "row 1 of" in err and "has no column 'problem' (task.columns.prompt)" in err and "question" in err


def test_a_template_naming_an_unknown_column(data_config, capsys):
    path, data = data_config
    err = error_line(capsys, ["train", with_task(path, data, template="Q: {questoin}\nA:"), "--no-progress"])
    assert "task.template names column 'questoin'" in err and "its columns: question, answer" in err


def test_import_paths_that_do_not_resolve(data_config, capsys, tmp_path, monkeypatch):
    path, data = data_config
    err = error_line(capsys, ["train", with_task(path, data, name="no_such_pkg.tasks:Mine", columns=None), "--no-progress"])
    assert "task 'no_such_pkg.tasks:Mine': cannot import no_such_pkg.tasks" in err and "PYTHONPATH" in err
    err = error_line(capsys, ["train", with_task(path, data, rewards=[{"fn": "no_such_rewards:f"}]), "--no-progress"])
    assert "reward function 'no_such_rewards:f': cannot import no_such_rewards" in err
    (tmp_path / "some_rewards.py").write_text("def ok(example, completion, finished):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    err = error_line(capsys, ["train", with_task(path, data, rewards=["some_rewards:okay"]), "--no-progress"])
    assert "module some_rewards has no 'okay'" in err
    err = error_line(capsys, ["train", with_task(path, data, extractor="nowhere:find"), "--no-progress"])
    assert "answer extractor 'nowhere:find': cannot import nowhere" in err


def test_a_reward_returning_a_string(data_config, capsys, tmp_path, monkeypatch):
    (tmp_path / "string_rewards.py").write_text(textwrap.dedent('''
        def verdict(example, completion, finished):
            return "good" if finished else "bad"
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    path, data = data_config
    err = error_line(capsys, ["train", with_task(path, data, rewards=["correct", "string_rewards:verdict"]),
                              "--no-progress"])
    assert "reward function 'string_rewards:verdict' returned 'bad' (a str) on prompt 'What is" in err
    assert "and completion '" in err and "returns a finite float" in err


def test_data_keys_on_a_task_without_data(tiny_config, tmp_path, capsys):
    path = tmp_path / "chain.yaml"
    path.write_text(tiny_config().to_yaml())
    err = error_line(capsys, ["train", str(path), "--set", "task.template='Q: {x}'"])
    assert "task.template is set but task chain reads no data" in err
    err = error_line(capsys, ["train", str(path), "--set", "task.name=dataset"])
    assert "task.name is dataset but task.path is not set" in err
    err = error_line(capsys, ["train", str(path), "--set", "task.rewards=[{fn: correct, weight: x}]"])
    assert "task.rewards[0].weight is 'x'" in err


def test_eval_and_export_of_what_is_not_there(tmp_path, capsys, mlflow_db):
    uri = f"sqlite:///{mlflow_db}"
    err = error_line(capsys, ["eval", "0123abcd", "--tracking-uri", uri])
    assert "'0123abcd' is neither a file nor a folder, nor a run id in the MLflow store" in err
    err = error_line(capsys, ["eval", str(tmp_path / "runs" / "missing"), "--no-log"])
    assert "does not exist" in err
    (tmp_path / "empty_run").mkdir()
    err = error_line(capsys, ["export", str(tmp_path / "empty_run"), "--out", str(tmp_path / "out")])
    assert "holds no final.ckpt" in err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("x")
    err = error_line(capsys, ["export", str(tmp_path / "empty_run"), "--out", str(tmp_path / "taken")])
    assert "is not empty" in err and "--overwrite" in err


def test_a_task_class_that_is_not_a_task(tiny_config, tmp_path, capsys, monkeypatch):
    (tmp_path / "not_tasks.py").write_text(textwrap.dedent('''
        class NotATask:
            pass

        class NoSeed:
            name, alphabet = "x", "ab"
            def train_examples(self): return []
            def eval_examples(self): return []
            def reward(self, example, completion, finished): return 0.0
            def is_correct(self, example, completion, finished): return False
            def extract_answer(self, completion): return None
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    data = tiny_config(**{"sft.steps": 5, "train.steps": 1}).to_dict()
    path = tmp_path / "c.yaml"
    for name, says in (("not_tasks:NotATask", "names class NotATask, which has no train_examples, eval_examples"),
                       ("not_tasks:NoSeed", "names class NoSeed, which takes no seed")):
        data["task"] = {"name": name}
        path.write_text(yaml.safe_dump(data))
        err = error_line(capsys, ["train", str(path), "--no-progress"])
        assert says in err and "seed=" in err
