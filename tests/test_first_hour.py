"""The researcher's first hour: threads shared between grpo-lab processes, progress a person can
read, outputs where they are expected."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch

from grpo_lab.runs import run
from grpo_lab.runs import threads
from grpo_lab.runs.progress import StepProgress


@pytest.fixture
def own_registry(tmp_path, monkeypatch):
    """A registry of processes of this test's own, so that other grpo-lab processes do not count."""
    monkeypatch.setattr(threads, "registry", lambda: tmp_path / "processes")
    monkeypatch.setattr(threads, "cores", lambda: 4)
    (tmp_path / "processes").mkdir()
    saved = torch.get_num_threads()
    yield tmp_path / "processes"
    torch.set_num_threads(saved)


def test_each_live_process_gets_its_share_of_the_cores(own_registry):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with threads.ThreadShare() as share:
            assert (own_registry / str(os.getpid())).exists() and share.threads == 4
            (own_registry / str(sleeper.pid)).touch()  # a second grpo-lab process starts
            assert share.update() == 4  # looked at less than RECHECK_S ago
            assert share.update(force=True) == 2 and torch.get_num_threads() == 2
            sleeper.kill()
            sleeper.wait()
            assert share.update(force=True) == 4  # it died: its file is swept, the cores are ours again
            assert not (own_registry / str(sleeper.pid)).exists()
        assert not (own_registry / str(os.getpid())).exists()
    finally:
        sleeper.kill()


def test_nested_shares_register_the_process_once_and_fixed_threads_stay_fixed(own_registry):
    with threads.ThreadShare() as outer:
        with threads.ThreadShare() as inner:
            assert threads.live_processes() == 1 and inner.threads == outer.threads == 4
        assert (own_registry / str(os.getpid())).exists()  # still computing in the outer share
    with threads.ThreadShare(3) as fixed:  # counts as a computing process, keeps its own number
        assert fixed.threads == 3 and torch.get_num_threads() == 3 and threads.live_processes() == 1
        (own_registry / "1").touch()  # pid 1 is alive: a second process
        assert fixed.update(force=True) == 3


def test_the_warm_start_is_the_same_whatever_the_load(tiny_config, own_registry, tmp_path):
    """The cached warm start trains with a fixed thread count: runs that share it get the same weights
    whether it was built on an idle machine or beside other grpo-lab processes."""
    from grpo_lab.runs.train import build_task_for
    from grpo_lab.runs.warm_start import warm_start

    config = tiny_config(**{"sft.cache_dir": str(tmp_path / "a")})
    task = build_task_for(config)
    alone, _, _ = warm_start(config, task, progress=False)
    (own_registry / "1").touch()  # another computing process appears
    torch.set_num_threads(2)
    busy, _, _ = warm_start(tiny_config(**{"sft.cache_dir": str(tmp_path / "b")}), task, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), busy.state_dict().values()))
    assert torch.get_num_threads() == 2  # the caller's threads are given back


def test_a_run_follows_its_share(tiny_config, own_registry):
    config = tiny_config(**{"train.steps": 2})
    seen = []

    class Watch(__import__("lightning").Callback):
        def on_train_batch_end(self, *args, **kwargs):
            seen.append(torch.get_num_threads())

    run(config, progress=False, log=False, callbacks=[Watch()])
    assert seen == [4, 4]  # alone on the (pretend) 4 cores
    assert not any(own_registry.iterdir())  # unregistered when the run ends


class FakeModule:
    def __init__(self):
        self.step_count, self.history = 0, []


def test_progress_lines_on_a_terminal_and_in_a_log(tiny_config):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream in (io.StringIO(), Terminal()):
        progress = StepProgress("grpo", 3, stream=stream, every_s=3600)
        module = FakeModule()
        trainer = type("T", (), {"is_global_zero": True, "global_step": 0})()
        progress.on_train_start(trainer, module)
        for step in (1, 2, 3):
            module.step_count = step
            module.history.append({"step": step, "perf/step_s": 0.1, "rollout/reward_mean": 0.5, "actor/loss": -0.25})
            progress.on_train_batch_end(trainer, module, None, step - 1, step - 1)
        text = stream.getvalue()
        assert "grpo step 3/3 | reward 0.5 | loss -0.25 |" in text and "s/step" in text
        if isinstance(stream, Terminal):  # every step, each over the last
            assert text.count("\r\033[K") == 3 and text.endswith("\n")
        else:  # a log: no control characters, a line at the end (the others fell inside every_s)
            assert "\r" not in text and text.count("\n") == 1


def test_a_run_prints_steps_and_evaluations_without_lightning_noise(tiny_config, capsys):
    run(tiny_config(**{"train.steps": 2, "train.eval_every": 1}), progress=True, log=False)
    err = capsys.readouterr().err
    assert "sft step 20/20 | loss" in err and "grpo step 2/2 | reward" in err
    assert "eval at step 0: accuracy" in err and "eval at step 2: accuracy" in err
    assert "Epoch" not in err and "v_num" not in err


def test_outputs_land_in_one_workspace(tmp_path, monkeypatch, capsys):
    """With no paths in the config, the store, checkpoints, warm start and report all go under the
    workspace, and each command says where and what to run next."""
    import copy

    from conftest import TINY
    from grpo_lab.cli import main
    from grpo_lab.config import from_dict

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("GRPO_LAB_WORKSPACE", str(tmp_path / "ws"))
    config = from_dict({**copy.deepcopy(TINY), "train": {**TINY["train"], "steps": 2}})
    assert config.train.out_dir is None and config.sft.cache_dir is None and config.tracking.uri is None
    path = tmp_path / "c.yaml"
    path.write_text(config.to_yaml())
    assert main(["train", str(path), "--no-progress", "--set", "optim.lr=2e-3", "--set", "seed=1"]) == 0
    out = capsys.readouterr().out
    ws = tmp_path / "ws"
    assert (ws / "mlflow.db").exists() and any((ws / "cache" / "sft").iterdir())
    run_dirs = list((ws / "runs").iterdir())
    assert len(run_dirs) == 1 and (run_dirs[0] / "final.ckpt").exists()
    assert run_dirs[0].name.startswith("tiny-grpo-optim.lr=2e-3-s1-")  # the name shows the override
    assert f"sqlite:///{ws / 'mlflow.db'}" in out and "next: grpo-lab ui   (" in out
    assert f"grpo-lab eval ws/runs/{run_dirs[0].name}" in out and "PYTHONPATH" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "ws"]  # nothing else in the working dir


def test_report_finds_the_grid_file_its_runs_came_from(tiny_config, tmp_path, capsys, monkeypatch):
    from grpo_lab.cli import main

    monkeypatch.chdir(tmp_path)  # no experiments/ here: the file is found through the runs' tag
    base = tmp_path / "base.yaml"
    base.write_text(tiny_config(**{"train.steps": 1, "train.eval_every": 1}).to_yaml())
    grid_dir = tmp_path / "my_grids"
    grid_dir.mkdir()
    (grid_dir / "g.yaml").write_text("name: g\nbase: ../base.yaml\nfactors: {optim.lr: [0.001, 0.002]}\n"
                                     "seeds: 2\nmetric: eval/greedy_accuracy\nclaims: ['optim.lr=0.002>optim.lr=0.001']\n")
    assert main(["grid", str(grid_dir / "g.yaml"), "--no-progress"]) == 0
    assert "next: grpo-lab report g" in capsys.readouterr().out
    uri = tiny_config().tracking.resolved_uri
    assert main(["report", "g", "--tracking-uri", uri, "--out", str(tmp_path / "reports"), "--resamples", "100"]) == 0
    text = (tmp_path / "reports" / "g" / "README.md").read_text()
    assert "eval/greedy_accuracy" in text and "optim.lr=0.002" in text  # the file's metric and claim


def test_the_demo_end_to_end_on_a_tiny_model(tmp_path, monkeypatch, capsys):
    from grpo_lab.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("GRPO_LAB_WORKSPACE", str(tmp_path / "ws"))
    tiny = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
            "sft.steps=60", "sft.lr=1e-2", "train.steps=2", "train.eval_prompts=16", "rollout.prompts_per_step=4",
            "rollout.group_size=4", "task.max_terms=3", "task.min_terms=2", "task.train_size=400", "task.eval_size=64"]
    assert main(["demo", "--no-progress", *[a for kv in tiny for a in ("--set", kv)]]) == 0
    out = capsys.readouterr().out
    assert "| eval/accuracy |" in out  # the before/after table
    claims = out.split("Claims (Holm-corrected tests over the seeds):", 1)[1]
    assert "claim" in claims.splitlines()[1].lower() or "claim" in claims.splitlines()[2].lower()  # a header row
    assert "Online RFT beats RFT" in claims
    report = tmp_path / "ws" / "reports" / "deepseekmath_fig5_demo" / "README.md"
    assert report.exists() and f"report and plots: {report}" in out
    assert "Everything is in" in out and "next: grpo-lab ui" in out


def test_a_policy_gradient_step_shows_its_gradient_norm_not_its_near_zero_loss():
    from grpo_lab.runs.progress import shown

    grpo = {"rollout/reward_mean": 0.5, "actor/loss": -4.66e-10, "actor/grad_norm": 0.41, "actor/ratio_mean": 1.0}
    assert shown(grpo) == [("rollout/reward_mean", "reward"), ("actor/grad_norm", "grad norm")]
    sft = {"actor/loss": 1.3, "actor/grad_norm": 2.0}  # a supervised loss means something: shown
    assert shown(sft) == [("actor/loss", "loss")]
