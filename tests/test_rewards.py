"""Reward functions: the built-ins by hand, weighted sets, and a task and two reward functions of
one's own (a folder on PYTHONPATH, outside the package) run from YAML through `train`,
`grid --jobs 2` and a 3-trial `sweep`, each reward logged as reward/<name>."""

from __future__ import annotations

import textwrap

from pathlib import Path

import mlflow
import pytest
import yaml

from grpo_lab.cli import main
from grpo_lab.config import ConfigError
from grpo_lab.errors import RewardError
from grpo_lab.methods import check_config
from grpo_lab.tasks import REWARDS, Example, TaskError, build_rewards, build_task

EXAMPLE = Example(prompt="What is 2 + 3?", answer="5", target="2 + 3 = 5\n#### 5")

OWN_TASK = '''
from grpo_lab.tasks import Example, VerifiableTask


class Tally(VerifiableTask):
    """Count the x's: "xxx=" -> "3"."""

    name = "tally"
    alphabet = "x=0123456789 "

    def __init__(self, *, seed, longest=6):
        self._options = {"longest": longest}
        examples = [Example("x" * n + "=", str(n), str(n), fields={"n": n}) for n in range(1, longest + 1)]
        self._train, self._eval = tuple(examples), tuple(examples[:2])

    def extract_answer(self, completion):
        return completion.strip() or None
'''
OWN_REWARDS = '''
CALLS = []


def brevity(example, completion, finished):
    """1 for a completion of at most two characters, falling by 0.25 per character beyond."""
    CALLS.append(completion)
    return max(0.0, 1.0 - 0.25 * max(0, len(completion) - 2))


def digits_only(example, completion, finished, *, bonus=1.0):
    """`bonus` when the completion is all digits, and its length matches the count's (a field)."""
    ok = completion.isdigit() and len(completion) == len(str(example.fields["n"]))
    return bonus if ok else 0.0


def wordy(example, completion, finished):
    return "yes"
'''


@pytest.fixture
def own_modules(tmp_path, monkeypatch):
    """tally_task.py and tally_rewards.py in a folder on PYTHONPATH (spawned grid workers see it too)."""
    folder = tmp_path / "own"
    folder.mkdir()
    (folder / "tally_task.py").write_text(textwrap.dedent(OWN_TASK))
    (folder / "tally_rewards.py").write_text(textwrap.dedent(OWN_REWARDS))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", str(folder))
    return folder


def own_config(tiny_config, **overrides) -> dict:
    data = tiny_config(**{"sft.steps": 10, "train.steps": 2, "rollout.max_new_tokens": 4}).to_dict()
    data["task"] = {"name": "tally_task:Tally", "kwargs": {"longest": 6}, "rewards": [
        {"fn": "correct", "weight": 1.0},
        {"fn": "tally_rewards:brevity", "weight": 0.5},
        {"fn": "tally_rewards:digits_only", "weight": 0.25, "name": "digits", "bonus": 2.0}]}
    for key, value in overrides.items():
        data.setdefault(key.split(".")[0], {})[key.split(".")[1]] = value
    return data


# -- built-ins and sets --------------------------------------------------------------------------


def test_builtin_rewards_by_hand(tmp_path):
    assert set(REWARDS) >= {"correct", "format", "length_penalty"}
    correct, fmt, length = REWARDS["correct"], REWARDS["format"], REWARDS["length_penalty"]
    assert correct(EXAMPLE, "so #### 5", True, extractor="hash") == 1.0
    assert correct(EXAMPLE, "so #### 5", False, extractor="hash") == 0.0
    assert correct(EXAMPLE, "so \\boxed{5.0}", True, extractor="boxed") == 1.0
    assert correct(EXAMPLE, "about 5.0001", True, extractor="last_number") == 0.0
    assert correct(EXAMPLE, "about 5.0001", True, extractor="last_number", compare="numeric", tolerance=1e-3) == 1.0
    assert correct(EXAMPLE, "ans=5;", True, extractor="regex", pattern=r"ans=(\d+)") == 1.0
    assert fmt(EXAMPLE, "it is #### 4", True, pattern="#### \\d+") == 1.0
    assert fmt(EXAMPLE, "it is 4", True, pattern="#### \\d+") == 0.0
    assert fmt(EXAMPLE, "it is #### 4", False, pattern="#### \\d+") == 0.0
    assert length(EXAMPLE, "x" * 10, True, free=10, limit=20) == 0.0
    assert length(EXAMPLE, "x" * 15, True, free=10, limit=20) == -0.5
    assert length(EXAMPLE, "x" * 40, True, free=10, limit=20) == -1.0
    task = build_task("chain", seed=0, train_size=10, eval_size=5)
    chain_example = Example("4+5+7+0-1=", "15", "9,16,16,15")
    rewards = build_rewards([{"fn": "correct", "weight": 2.0}, {"fn": "format", "weight": 0.5, "name": "fmt"},
                             "length_penalty"], task)
    parts = rewards.evaluate(chain_example, "9,16,16,15", True)  # `correct` without options: the task's verifier
    assert parts == {"correct": 1.0, "fmt": 1.0, "length_penalty": -0.05}
    assert rewards.total(parts) == pytest.approx(2.0 + 0.5 - 0.05)
    assert rewards.evaluate(chain_example, "9,16,16,14", True)["correct"] == 0.0


def test_malformed_reward_lists_are_refused():
    with pytest.raises(TaskError, match="unknown reward function 'corect'"):
        build_rewards(["corect"])
    with pytest.raises(TaskError, match="named 'correct'; give one a name"):
        build_rewards(["correct", {"fn": "correct", "weight": 0.5}])
    with pytest.raises(TaskError, match=r"task.rewards\[0\].weight is 'high'"):
        build_rewards([{"fn": "correct", "weight": "high"}])
    with pytest.raises(TaskError, match="cannot be called as fn\\(example, completion, finished, tolerence=...\\)"):
        build_rewards([{"fn": "correct", "tolerence": 0.1}])


def test_a_reward_that_returns_a_string_or_raises_is_named_with_prompt_and_completion(own_modules):
    rewards = build_rewards(["tally_rewards:wordy"])
    with pytest.raises(RewardError) as info:
        rewards.evaluate(EXAMPLE, "5", True)
    message = str(info.value)
    assert "'tally_rewards:wordy' returned 'yes' (a str)" in message and "'What is 2 + 3?'" in message
    assert "completion '5'" in message and "\n" not in message
    rewards = build_rewards([{"fn": "length_penalty", "limit": 1, "free": 2}])
    with pytest.raises(RewardError, match="'length_penalty' raised ValueError: length_penalty needs limit > free"):
        rewards.evaluate(EXAMPLE, "5", True)


# -- one's own task and rewards: train, grid --jobs 2, sweep --------------------------------------


def reward_metrics(uri: str, experiment: str) -> list:
    store = mlflow.tracking.MlflowClient(uri)
    exp = store.get_experiment_by_name(experiment)
    return store.search_runs([exp.experiment_id]), store


def test_own_task_and_rewards_train_from_yaml(own_modules, tiny_config, tmp_path, capsys):
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(own_config(tiny_config)))
    assert main(["train", str(path), "--no-progress"]) == 0
    import tally_rewards

    assert tally_rewards.CALLS  # the very function of the file on PYTHONPATH scored the completions
    config = tiny_config()
    runs, store = reward_metrics(config.tracking.resolved_uri, "tests")
    (run,) = runs
    history = {key: store.get_metric_history(run.info.run_id, key) for key in
               ("reward/correct", "reward/brevity", "reward/digits", "rollout/reward_mean")}
    assert [m.step for m in history["reward/brevity"]] == [1, 2]  # every step
    for step in range(2):
        parts = {k: history[k][step].value for k in ("reward/correct", "reward/brevity", "reward/digits")}
        assert history["rollout/reward_mean"][step].value == pytest.approx(
            parts["reward/correct"] + 0.5 * parts["reward/brevity"] + 0.25 * parts["reward/digits"], abs=1e-6)
    assert "eval/reward/digits" in run.data.metrics and "eval/greedy_accuracy" in run.data.metrics
    assert run.data.params["task.name"] == "tally_task:Tally"


def test_own_task_and_rewards_in_a_grid_of_two_jobs_and_a_sweep(own_modules, tiny_config, tmp_path):
    base = own_config(tiny_config)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "own", "base": base, "factors": {"optim.lr": [1e-3, 3e-3]}, "seeds": [0]}))
    assert main(["grid", str(grid), "--jobs", "2", "--no-progress"]) == 0  # each run in a spawned process
    uri = tiny_config().tracking.resolved_uri
    runs, store = reward_metrics(uri, "tests")
    grid_runs = [r for r in runs if r.data.tags.get("grpo_lab.grid") == "own"]
    assert len(grid_runs) == 2 and all(r.data.tags["grpo_lab.status"] == "finished" for r in grid_runs)
    for run in grid_runs:
        assert {"reward/correct", "reward/brevity", "reward/digits"} <= set(run.data.metrics)

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "study": "own", "base": base, "n_trials": 3, "storage": f"sqlite:///{tmp_path}/optuna.db",
        "space": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}},
        "objective": {"metric": "eval/reward/brevity", "direction": "maximize"},
        "sampler": {"name": "random", "seed": 0}, "pruner": "none"}))
    assert main(["sweep", str(sweep), "--no-progress"]) == 0
    import optuna

    study = optuna.load_study(study_name="own", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    runs, _ = reward_metrics(uri, "tests")
    trials = [r for r in runs if r.data.tags.get("grpo_lab.sweep") == "own" and "grpo_lab.trial" in r.data.tags]
    assert len(trials) == 3
    for run in trials:
        assert {"reward/correct", "reward/brevity", "reward/digits", "eval/reward/brevity"} <= set(run.data.metrics)
        assert run.data.tags["grpo_lab.status"] == "finished"


def test_a_reward_path_that_does_not_resolve_stops_before_anything_runs(own_modules, tiny_config):
    data = own_config(tiny_config)
    data["task"]["rewards"] = [{"fn": "tally_rewards:brevityy"}]
    from grpo_lab.config import from_dict

    with pytest.raises(ConfigError, match="module tally_rewards has no 'brevityy'"):
        check_config(from_dict(data))
    from grpo_lab.runs import run

    with pytest.raises(ConfigError, match="module tally_rewards has no 'brevityy'"):
        run(from_dict(data), progress=False)
    assert not Path(data["sft"]["cache_dir"]).exists()  # no warm start was built
