"""Files from elsewhere cannot run code: checkpoints load with torch.load(weights_only=True) at every
reader, model folders run their own code only with model.trust_remote_code, exports are safetensors."""

from __future__ import annotations

import importlib.util
import json
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from grpo_lab.runs.checkpoint import (STATE_KEY, CheckpointError, SafeCheckpointIO, checkpoint_dir, load_checkpoint,
                                 read_resume_info)
from grpo_lab.cli import main

ROOT = Path(__file__).resolve().parent.parent


class WritesMarker:
    """Unpickling this runs code: it writes the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def poisoned_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like a grpo_lab checkpoint whose loading would write `marker`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "grpo_lab": {"step_count": 2}, STATE_KEY: {"mlflow_run_id": None},
                "payload": WritesMarker(marker)}, path)
    return path


def one_line(err: str) -> str:
    err = err.strip()
    assert err.startswith("grpo-lab: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_the_poisoned_file_runs_code_when_loaded_unsafely(tmp_path):
    """The control: without the safe loader the file below does write its marker."""
    marker = tmp_path / "marker"
    torch.load(poisoned_checkpoint(tmp_path / "bad.ckpt", marker), weights_only=False)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("reader", [load_checkpoint, read_resume_info, SafeCheckpointIO().load_checkpoint])
def test_every_checkpoint_reader_refuses_a_pickle_that_runs_code(reader, tmp_path):
    marker = tmp_path / "marker"
    path = poisoned_checkpoint(tmp_path / "last.ckpt", marker)
    with pytest.raises(CheckpointError) as info:
        reader(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "it would import exec" in message and "delete it" in message
    assert not marker.exists()


def test_a_plain_pickle_is_refused_quietly(tmp_path):
    """A pickle torch.save did not write (protocol 5) is refused too, with no warning beside the error."""
    marker, path = tmp_path / "marker", tmp_path / "last.ckpt"
    path.write_bytes(pickle.dumps({"grpo_lab": {"step_count": 2}, "payload": WritesMarker(marker)}, protocol=5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match="cannot be read .*not a checkpoint grpo_lab wrote"):
            load_checkpoint(path)
    assert not caught and not marker.exists()


@pytest.mark.parametrize("content,expected", [
    (b"", r"cannot be read \(EOFError\)"),
    (b"not a checkpoint\n", r"cannot be read \(UnpicklingError: .*\); it is truncated, or not a checkpoint grpo_lab wrote"),
    (None, "does not exist"),
])
def test_missing_and_garbled_checkpoints_are_one_error(tmp_path, content, expected):
    path = tmp_path / "last.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_checkpoint_is_refused(tmp_path):
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, whole)
    torch_bytes = whole.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(torch_bytes[: len(torch_bytes) // 2])
    with pytest.raises(CheckpointError, match=r"cannot be read \(RuntimeError: .*zip archive.*\); it is truncated"):
        load_checkpoint(cut)
    assert torch.equal(load_checkpoint(whole)["state_dict"]["w"], torch.ones(1000))


def test_train_resume_refuses_a_poisoned_checkpoint_with_one_line(tiny_config, tmp_path):
    config = tiny_config(**{"train.checkpoint_every": 1})
    marker = tmp_path / "marker"
    poisoned_checkpoint(checkpoint_dir(config) / "last.ckpt", marker)
    path = tmp_path / "run.yaml"
    path.write_text(config.to_yaml())
    done = subprocess.run([sys.executable, "-m", "grpo_lab.cli", "train", str(path), "--resume", "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    err = one_line(done.stderr)
    assert "last.ckpt was refused: it would import exec" in err
    assert not marker.exists()


def test_grid_planning_refuses_a_poisoned_checkpoint(tiny_config, tmp_path, capsys):
    from grpo_lab.experiments import load_grid, plan

    config = tiny_config(**{"train.checkpoint_every": 1})
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"grid": "poisoned", "base": config.to_dict(), "seeds": [0]}))
    grid = load_grid(path)
    marker = tmp_path / "marker"
    poisoned_checkpoint(checkpoint_dir(grid.runs[0].config) / "last.ckpt", marker)
    with pytest.raises(CheckpointError, match="was refused"):
        plan(grid)
    capsys.readouterr()
    assert main(["grid", str(path), "--dry-run"]) == 2
    assert "last.ckpt was refused" in one_line(capsys.readouterr().err)
    assert not marker.exists()


def test_fig7_refuses_a_poisoned_final_checkpoint(tiny_config, tmp_path):
    from grpo_lab.models import build_policy
    from grpo_lab.runs.train import build_task_for

    spec = importlib.util.spec_from_file_location("deepseekmath_fig7", ROOT / "analysis" / "deepseekmath_fig7.py")
    fig7 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fig7)
    config = tiny_config()
    policy, tokenizer = build_policy(config.model, build_task_for(config).alphabet)
    policy.save_pretrained(tmp_path / "sft")
    tokenizer.save_pretrained(tmp_path / "sft")
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    marker = tmp_path / "marker"
    run = {"checkpoint": poisoned_checkpoint(tmp_path / "final.ckpt", marker), "sft": tmp_path / "sft",
           "config": tmp_path / "config.yaml"}
    with pytest.raises(CheckpointError, match="final.ckpt was refused"):
        fig7.evaluate_pair(run, samples=2, temperature=None, prompts=2)
    assert not marker.exists()


def test_resume_reads_every_checkpoint_with_weights_only(tiny_config, monkeypatch):
    """Lightning's own restore goes through the safe loader too: every torch.load of a resumed run is safe."""
    from grpo_lab.runs import run

    config = tiny_config(**{"train.steps": 2, "train.checkpoint_every": 1, "train.eval_prompts": 4,
                            "train.eval_samples": 2})
    run(config, progress=False, log=False)
    resume = checkpoint_dir(config) / "step-000001.ckpt"
    loads = []
    real_load = torch.load

    def spy(f, *args, **kwargs):
        loads.append((str(f), kwargs.get("weights_only")))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    resumed = run(config, progress=False, log=False, resume_from=resume)
    assert [w for f, w in loads if f == str(resume)] == [True, True]  # read_resume_info, then Lightning's restore
    assert all(w is True for _, w in loads)
    assert resumed.history[-1]["step"] == 2


def tiny_model_folder(tiny_config, folder: Path) -> Path:
    """A tiny policy and its tokenizer saved with save_pretrained, as a user's model.path would be."""
    from grpo_lab.models import build_policy
    from grpo_lab.runs.train import build_task_for

    config = tiny_config()
    policy, tokenizer = build_policy(config.model, build_task_for(config).alphabet)
    policy.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def with_own_code(folder: Path, marker: Path) -> Path:
    """Make `folder` a model that loads through its own module, which writes `marker` when imported."""
    (folder / "modeling_marked.py").write_text(
        "from transformers import Qwen2ForCausalLM\n"
        f"open({str(marker)!r}, 'w').write('ran')\n\n\n"
        "class MarkedForCausalLM(Qwen2ForCausalLM):\n    pass\n")
    edit_json(folder / "config.json", auto_map={"AutoModelForCausalLM": "modeling_marked.MarkedForCausalLM"})
    return folder


@pytest.mark.parametrize("edit,reason", [
    ("auto_map", "config.json maps AutoModelForCausalLM to the folder's modules (auto_map)"),
    ("model_type", "config.json has model_type 'marked_lm', which transformers does not know"),
    ("tokenizer", "tokenizer_config.json maps AutoTokenizer to the folder's modules (auto_map)"),
])
def test_model_folder_that_needs_its_own_code_is_refused(tiny_config, tmp_path, edit, reason):
    from grpo_lab.models import ModelError, load_pretrained

    folder, marker = tiny_model_folder(tiny_config, tmp_path / "model"), tmp_path / "marker"
    if edit == "auto_map":
        with_own_code(folder, marker)
    elif edit == "model_type":
        edit_json(folder / "config.json", model_type="marked_lm")
    else:
        edit_json(folder / "tokenizer_config.json", auto_map={"AutoTokenizer": ["tokenization_marked.Marked", None]})
    with pytest.raises(ModelError) as info:
        load_pretrained(folder)
    message = str(info.value)
    assert reason in message and "model.trust_remote_code: true" in message and "\n" not in message
    assert not marker.exists()


def test_every_folder_loader_refuses_a_folder_that_needs_its_own_code(tiny_config, tmp_path):
    from grpo_lab.models import ModelError
    from grpo_lab.models.policy import load_tokenizer
    from grpo_lab.models.reward import RewardModel

    marker = tmp_path / "marker"
    folder = with_own_code(tiny_model_folder(tiny_config, tmp_path / "model"), marker)
    for load, what in ((load_tokenizer, "the model in"), (RewardModel.load, "the reward model in")):
        with pytest.raises(ModelError) as info:
            load(folder)
        message = str(info.value)
        assert message.startswith(what) and "set model.trust_remote_code: true" in message and "\n" not in message
    assert not marker.exists()


def test_train_refuses_a_model_that_needs_its_own_code_with_one_line(tiny_config, tmp_path, capsys):
    marker = tmp_path / "marker"
    folder = with_own_code(tiny_model_folder(tiny_config, tmp_path / "model"), marker)
    path = tmp_path / "run.yaml"
    path.write_text(tiny_config(**{"model.path": str(folder)}).to_yaml())
    capsys.readouterr()
    assert main(["train", str(path), "--no-progress"]) == 2
    assert "set model.trust_remote_code: true only if you trust that folder" in one_line(capsys.readouterr().err)
    assert not marker.exists()


def test_trust_remote_code_runs_the_folders_code(tiny_config, tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # the copy of the folder's module
    monkeypatch.setattr(sys, "path", list(sys.path))
    from grpo_lab.models import load_pretrained

    marker = tmp_path / "marker"
    folder = with_own_code(tiny_model_folder(tiny_config, tmp_path / "model"), marker)
    model, _ = load_pretrained(folder, trust_remote_code=True)
    assert type(model).__name__ == "MarkedForCausalLM" and marker.read_text() == "ran"


def test_trust_remote_code_needs_a_model_path_and_changes_no_hash(tiny_config, tmp_path):
    from grpo_lab.config import ConfigError

    with pytest.raises(ConfigError, match="model.trust_remote_code is set but model.path is not"):
        tiny_config(**{"model.trust_remote_code": True})
    folder = str(tmp_path / "model")
    trusted = tiny_config(**{"model.path": folder, "model.trust_remote_code": True})
    plain = tiny_config(**{"model.path": folder})
    assert trusted.config_hash() == plain.config_hash() and trusted.sft_hash() == plain.sft_hash()
    other = tiny_config(**{"model.path": folder + "2"})
    assert other.config_hash() != plain.config_hash() and other.sft_hash() != plain.sft_hash()


def test_the_sft_warm_start_is_saved_as_safetensors(tiny_config):
    from grpo_lab.runs.warm_start import warm_start
    from grpo_lab.runs.train import build_task_for

    config = tiny_config()
    _, _, path = warm_start(config, build_task_for(config), progress=False)
    assert (path / "model.safetensors").is_file()
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt"))
