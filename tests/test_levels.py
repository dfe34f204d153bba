"""Factor levels: named levels and short labels for list- and mapping-valued factors, in arm labels,
run names and claims; a reward ablation runs as a paired grid from one warm start."""

from __future__ import annotations

import json

import pytest
import yaml

from grpo_lab.analysis.claims import resolve_arm
from grpo_lab.experiments import GridError, expand, run_grid

CORRECT = [{"fn": "correct", "weight": 1.0}]
WITH_FORMAT = [{"fn": "correct", "weight": 1.0}, {"fn": "format", "weight": 0.1}]


@pytest.fixture(autouse=True)
def _store(mlflow_db):
    """Every test here writes to tmp_path/mlflow.db (see conftest)."""


def test_named_levels_label_arms_runs_and_claims(tiny_config):
    grid = expand({"name": "ablation", "base": tiny_config().to_dict(), "seeds": [0, 1],
                   "factors": {"task.rewards": {"correct_only": CORRECT, "with_format": WITH_FORMAT},
                               "loss.aggregation": ["token_mean"]}})
    assert [(r.arm, r.seed) for r in grid.runs] == [
        ("task.rewards=correct_only,loss.aggregation=token_mean", 0),
        ("task.rewards=correct_only,loss.aggregation=token_mean", 1),
        ("task.rewards=with_format,loss.aggregation=token_mean", 0),
        ("task.rewards=with_format,loss.aggregation=token_mean", 1)]
    assert grid.runs[2].config.task.rewards == WITH_FORMAT and grid.runs[2].factors["task.rewards"] == WITH_FORMAT
    assert grid.runs[2].config.run_name == "ablation-with_format-token_mean-s0"
    assert json.loads(grid.runs[2].tags("ablation")["grpo_lab.factors"])["task.rewards"] == WITH_FORMAT
    assert len({r.config.sft_hash() for r in grid.runs}) == 1  # one warm start: the rewards are not in its hash
    arms = sorted({r.arm for r in grid.runs})
    assert resolve_arm("with_format", arms) == arms[1] and resolve_arm("rewards=correct_only", arms) == arms[0]


def test_unnamed_levels_get_short_labels(tiny_config):
    base = tiny_config().to_dict()
    rewards = expand({"base": base, "factors": {"task.rewards": [CORRECT, WITH_FORMAT]}})
    assert [r.arm for r in rewards.runs] == ["task.rewards=correct", "task.rewards=correct+0.1*format"]
    assert rewards.runs[1].config.run_name == "grid-correct_0.1_format-s0"
    clips = expand({"base": base, "factors": {"loss": [{"clip_low": 0.1, "clip_high": 0.3},
                                                       {"clip_low": 0.2, "clip_high": 0.3}]}})
    assert [r.arm for r in clips.runs] == ["loss.clip_low=0.1", "loss.clip_low=0.2"]  # what differs
    # labels that would not tell the levels apart, or run long, are numbered
    patterns = expand({"base": base, "factors": {"task.rewards": [
        [{"fn": "format", "pattern": "[0-9]"}], [{"fn": "format", "pattern": "="}]]}})
    assert [r.arm for r in patterns.runs] == ["task.rewards=level1", "task.rewards=level2"]
    long = [{"fn": "correct"}, {"fn": "format", "weight": 0.25}, {"fn": "length_penalty", "weight": 0.5}]
    assert expand({"base": base, "factors": {"task.rewards": [CORRECT, long]}}).runs[1].arm == "task.rewards=level2"
    # plain values keep the labels they always had, zipped repeats included
    zipped = expand({"base": base, "zip": True, "factors": {"method": ["grpo", "grpo"],
                                                            "advantage.estimator": ["group", "rloo"]}})
    assert [r.arm for r in zipped.runs] == ["method=grpo,advantage.estimator=group",
                                            "method=grpo,advantage.estimator=rloo"]


@pytest.mark.parametrize("factors, message", [
    ({"task.rewards": {"a,b": CORRECT, "c": WITH_FORMAT}}, "level named 'a,b'"),
    ({"task.rewards": {"x=1": CORRECT}}, "without ',' or '='"),
    ({"task.rewards": {}}, "non-empty list of values"),
    ({"task.rewards": CORRECT[0]["fn"]}, "or a mapping of level names to values"),
])
def test_malformed_levels_are_refused_in_one_line(tiny_config, factors, message):
    with pytest.raises(GridError, match=message):
        expand({"base": tiny_config().to_dict(), "factors": factors})


def test_a_reward_ablation_runs_paired_from_one_warm_start(tiny_config, tmp_path):
    from grpo_lab.analysis.report import report_grid

    config = tiny_config(**{"train.steps": 2, "train.eval_every": 2, "train.eval_prompts": 4,
                            "train.eval_samples": 2})
    path = tmp_path / "rewards.yaml"
    path.write_text(yaml.safe_dump({
        "name": "rewards", "base": config.to_dict(), "seeds": [0, 1],
        "factors": {"task.rewards": {"correct_only": CORRECT, "with_format": WITH_FORMAT}},
        "claims": [{"better": "with_format", "worse": "correct_only", "at_least_as_good": True}]}))
    from grpo_lab.experiments import load_grid

    summary = run_grid(load_grid(path), echo=lambda line: None)
    assert len(summary.finished) == 4 and not summary.failed
    assert [p.name for p in (tmp_path / "sft").iterdir() if p.is_dir()] == [config.sft_hash()]  # trained once
    report = report_grid("rewards", grid_file=path, tracking_uri=config.tracking.resolved_uri,
                         out_dir=tmp_path / "reports", n_resamples=200)
    (result,) = report.results
    assert result.comparison.paired and "same start" in result.comparison.pairing_reason
    assert result.comparison.better == "task.rewards=with_format"
    assert not any("differ in config" in w for w in report.analysis.warnings)  # task.rewards/1/fn is the factor
    text = report.read_text()
    assert "paired_t" in text and "`task.rewards=with_format`" in text
    assert '"fn": "format"' in text  # the levels' values, listed beside their names


def test_the_example_reward_ablation_shares_one_warm_start():
    from pathlib import Path

    from grpo_lab.experiments import load_grid

    grid = load_grid(Path(__file__).parent.parent / "experiments" / "reward_ablation.yaml")
    assert sorted({r.arm for r in grid.runs}) == ["task.rewards=correct_only", "task.rewards=with_format"]
    assert len(grid.runs) == 6 and len({r.config.sft_hash() for r in grid.runs}) == 1
