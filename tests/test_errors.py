"""Bad input ends with one clear line (exit status 2), never a traceback."""

from __future__ import annotations

import math

import pytest
import torch

from grpo_lab.cli import main
from grpo_lab.config import ConfigError, load_config


def error_line(capsys, argv) -> str:
    capsys.readouterr()  # drop what fixtures printed (e.g. MLflow creating the test's store)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("grpo-lab: error: ") and "\n" not in err and "Traceback" not in err
    return err


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_malformed_yaml(tmp_path, capsys):
    err = error_line(capsys, ["train", write(tmp_path, "method: grpo\noptim: {lr: [1e-4\n")])
    assert "not valid YAML" in err and "line" in err


def test_unknown_key_suggests_the_right_one(tmp_path, capsys):
    err = error_line(capsys, ["train", write(tmp_path, "loss: {agregation: token_mean}\n")])
    assert "unknown config key 'loss.agregation'" in err and "loss.aggregation" in err


def test_unknown_method(tmp_path, capsys):
    err = error_line(capsys, ["train", write(tmp_path, "method: reinforce_magic\n")])
    assert "method is 'reinforce_magic'" in err and "grpo" in err


@pytest.mark.parametrize("override,expected", [
    ("optim.lr=-1", "optim.lr is -1"),
    ("rollout.top_p=1.5", "rollout.top_p is 1.5"),
    ("rollout.group_size=1", "needs at least 2 completions per prompt"),
    ("loss.aggregation=mean", "loss.aggregation is 'mean'; choose one of token_mean"),
    ("optim.lr=fast", "optim.lr is 'fast'; it must be a float"),
    ("train.steps=0", "train.steps is 0; it must be > 0"),
    ("nonsense", "is not key=value"),
])
def test_out_of_range_values(tmp_path, capsys, override, expected):
    err = error_line(capsys, ["train", write(tmp_path, "method: grpo\n"), "--set", override])
    assert expected in err


def test_missing_config_file(tmp_path, capsys):
    err = error_line(capsys, ["train", str(tmp_path / "nope.yaml")])
    assert "does not exist" in err


def test_missing_model_path(tmp_path, capsys, tiny_config):
    path = write(tmp_path, tiny_config().to_yaml())
    err = error_line(capsys, ["train", path, "--set", f"model.path={tmp_path}/no_model", "--no-progress"])
    assert "model.path" in err and "does not exist" in err


def test_gsm8k_without_path_and_row_without_answer(tmp_path, capsys, tiny_config):
    path = write(tmp_path, tiny_config().to_yaml())
    err = error_line(capsys, ["train", path, "--set", "task.name=gsm8k"])
    assert "task.path" in err
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2 #### 2"}\n{"question": "2+2?", "answer": "four"}\n')
    err = error_line(capsys, ["train", path, "--set", "task.name=gsm8k", "--set", f"task.path={data}",
                              "--no-progress"])
    assert "row 2" in err and str(data) in err


def test_overrides_parse_yaml_values(tmp_path):
    config = load_config(None, ["optim.lr=1e-4", "loss.clip_high=0.28", "tracking.run_name=abc", "loss.norm=null"])
    assert config.optim.lr == 1e-4 and config.loss.clip_high == 0.28 and config.tracking.run_name == "abc"
    with pytest.raises(ConfigError, match="section 'optim' must be a mapping"):
        load_config(None, ["optim=3"])


class RaisingTask:
    """The chain task with a reward function that fails on one completion."""

    def __init__(self, task):
        self.inner, self.name, self.alphabet = task, "raising", task.alphabet

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def reward(self, example, completion, finished):
        raise ZeroDivisionError("division by zero")


def tiny_module(tiny_config, task_wrapper=None, **overrides):
    from grpo_lab.engine import GRPO
    from grpo_lab.models import build_policy
    from grpo_lab.runs.train import build_task_for

    config = tiny_config(**overrides)
    task = build_task_for(config)
    policy, tokenizer = build_policy(config.model, task.alphabet)
    return GRPO(config, policy, tokenizer, task_wrapper(task) if task_wrapper else task)


def test_reward_function_that_raises_names_prompt_and_completion(tiny_config):
    from grpo_lab.errors import RewardError

    module = tiny_module(tiny_config, RaisingTask)
    examples = module.prompts_for_step(0)
    rollout = module.generate(examples, group_size=2)
    with pytest.raises(RewardError) as info:
        module.score(rollout, examples, 2)
    message = str(info.value)
    assert "ZeroDivisionError" in message and repr(examples[0].prompt) in message and "completion" in message


def test_non_finite_loss_is_refused_before_the_update(tiny_config):
    from grpo_lab.errors import TrainingError

    module = tiny_module(tiny_config)
    before = [p.detach().clone() for p in module.policy.parameters()]
    with pytest.raises(TrainingError, match="loss is nan at step 0; lower optim.lr"):
        module.update(torch.tensor(math.nan, requires_grad=True), module.objectives[0])
    assert all(torch.equal(a, b) for a, b in zip(before, module.policy.parameters()))


def test_config_command_prints_every_key_with_its_meaning(capsys):
    from grpo_lab.config import Config

    assert main(["config"]) == 0
    out = capsys.readouterr().out
    for key in Config().flatten():
        assert f"{key} = " in out, key
    assert "policy learning rate" in out and "threads" in out
    assert main(["config", "loss.aggregation"]) == 0
    one = capsys.readouterr().out.strip().splitlines()
    assert len(one) == 2 and "seq_mean_token_mean" in one[1]  # the section line and the key


@pytest.mark.parametrize("key,expected", [("lr", "optim.lr"), ("loss.agregation", "loss.aggregation"),
                                          ("rollout.lr", "optim.lr"), ("groupsize", "rollout.group_size")])
def test_an_unknown_key_suggests_the_closest_full_key(tmp_path, capsys, key, expected):
    err = error_line(capsys, ["train", write(tmp_path, "method: grpo\n"), "--set", f"{key}=1"])
    assert f"unknown config key '{key}'; did you mean '{expected}'?" in err and "grpo-lab config" in err
    err = error_line(capsys, ["config", key])
    assert f"did you mean '{expected}'" in err


@pytest.mark.parametrize("content,expected", [
    (b"method: grpo\n\xff\xfe\n", "is not UTF-8 text"),
    (b"", "is empty"),
    (b"# only a comment\n", "is empty"),
])
def test_config_files_that_cannot_be_read(tmp_path, capsys, content, expected):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    assert expected in error_line(capsys, ["train", str(path)])


def test_a_folder_given_as_the_config(tmp_path, capsys):
    assert "is a folder" in error_line(capsys, ["train", str(tmp_path)])


@pytest.mark.parametrize("argv", [["train", "{path}", "--set", "lr=1"], ["train", "{missing}"],
                                  ["train", "{path}", "--set", "optim.lr=fast"], ["config", "lr"]])
def test_config_errors_come_before_any_heavy_import(tmp_path, argv):
    """A mistake in the config is reported before torch, transformers, lightning or mlflow load."""
    import subprocess
    import sys

    path = tmp_path / "c.yaml"
    path.write_text("method: grpo\n")
    args = [a.format(path=path, missing=tmp_path / "nope.yaml") for a in argv]
    probe = ("import sys; from grpo_lab.cli import main; code = main(%r); "
             "heavy = [m for m in ('torch', 'transformers', 'lightning', 'mlflow', 'pandas') if m in sys.modules]; "
             "print('CODE', code, 'HEAVY', heavy)" % (args,))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "CODE 2 HEAVY []" in out.stdout, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("grpo-lab: error: ")
