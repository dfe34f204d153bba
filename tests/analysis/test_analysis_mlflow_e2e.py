"""End to end: real MLflow runs in a temporary SQLite store -> load_runs -> write_report."""

import json

import mlflow
import numpy as np
import pytest

from grpo_lab.analysis import Claim, check_comparison, final_values, load_runs, write_report

GRID = "toy_grid"
SEEDS = [0, 1, 2, 3]
STEPS = [0, 10, 20]
FINAL = {"grpo": [0.71, 0.74, 0.69, 0.72], "rft": [0.52, 0.55, 0.50, 0.51]}


def _log_run(grid, method, seed, *, finished=True):
    factors = {"method": method}
    with mlflow.start_run(run_name=f"{method}-{seed}") as run:
        mlflow.set_tags({
            "grpo_lab.grid": grid, "grpo_lab.arm": f"method={method}",
            "grpo_lab.factors": json.dumps(factors), "grpo_lab.config_hash": f"cfg-{method}",
            "grpo_lab.sft_hash": "sft-abc",
        })
        mlflow.log_params({"seed": seed, "method": method, "optim.lr": 1e-6,
                           "task.name": "arith", "loss.aggregation": "token_mean"})
        final = FINAL[method][seed]
        for step in STEPS:
            fraction = step / STEPS[-1]
            mlflow.log_metrics({
                "eval/accuracy": 0.3 + (final - 0.3) * fraction,
                "rollout/reward_mean": 0.2 + fraction * 0.5,
                "budget/samples": 64.0 * step, "budget/updates": float(step),
            }, step=step)
        if finished:
            mlflow.set_tag("grpo_lab.status", "finished")
        else:
            mlflow.end_run(status="KILLED")
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/m.db"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("analysis-e2e")
    for method in FINAL:
        for seed in SEEDS:
            _log_run(GRID, method, seed)
    _log_run(GRID, "rft", 3, finished=False)  # a killed duplicate must not be loaded
    _log_run("other_grid", "grpo", 0)
    yield uri
    mlflow.set_tracking_uri(previous)


def test_load_runs_tidy_frame(store):
    frame = load_runs(GRID, tracking_uri=store)
    assert len(frame) == 2 * len(SEEDS) * len(STEPS)  # killed run and other grid left out
    assert frame["run_id"].nunique() == 8
    assert set(frame["arm"]) == {"method=grpo", "method=rft"}
    assert frame["seed"].dtype.kind == "i" and sorted(frame["seed"].unique()) == SEEDS
    assert sorted(frame["step"].unique()) == STEPS and (frame["grid"] == GRID).all()
    for column in ("eval/accuracy", "budget/samples", "param:optim.lr", "param:task.name",
                   "factor:method", "sft_hash"):
        assert column in frame
    finals = final_values(frame, "eval/accuracy")
    assert list(finals.columns[:3]) == ["arm", "seed", "value"]
    grpo = finals[finals["arm"] == "method=grpo"]["value"].to_numpy()
    assert grpo == pytest.approx(FINAL["grpo"])


def test_load_runs_options(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    some = load_runs(GRID, metrics=["eval/accuracy", "eval/maj@8"])
    metric_columns = [c for c in some.columns if "/" in c and ":" not in c]
    assert metric_columns == ["eval/accuracy", "eval/maj@8"] and some["eval/maj@8"].isna().all()
    everything = load_runs(GRID, include_unfinished=True)
    assert everything["run_id"].nunique() == 9
    by_experiment = load_runs("analysis-e2e")  # no such grid tag: falls back to the experiment
    assert by_experiment["run_id"].nunique() == 9 and set(by_experiment["grid"]) == {
        GRID, "other_grid"}
    assert load_runs("no_such_grid").empty


def test_write_report_end_to_end(store, tmp_path):
    frame = load_runs(GRID, tracking_uri=store)
    assert check_comparison(frame, ["method"]) == []
    claims = [Claim("GRPO beats RFT on sampled accuracy", better="grpo", worse="rft"),
              Claim("RFT is at least as good as GRPO", better="rft", worse="grpo",
                    at_least_as_good=True)]
    readme = write_report(GRID, claims=claims, out_dir=tmp_path, tracking_uri=store,
                          n_resamples=500)
    text = readme.read_text()
    folder = tmp_path / GRID
    assert readme == folder / "README.md"
    assert "GRPO beats RFT on sampled accuracy" in text
    assert "| arm | seeds | mean | sd | IQM | 95% CI of mean | 95% CI of IQM |" in text
    assert "| `method=grpo` | 4 | 0.715 |" in text and "| `method=rft` | 4 | 0.52 |" in text
    verdict_rows = [line for line in text.splitlines() if line.startswith("| 1 |")
                    or line.startswith("| 2 |")]
    assert "**holds**" in verdict_rows[0] and "**does not hold**" in verdict_rows[1]
    assert "paired_t" in text and "wilcoxon" in text  # same seeds, same sft_hash
    assert "## Validity warnings\n\nNone." in text
    assert f"tracking_uri='{store}'" in text
    for png in ("final_eval_accuracy.png", "curves_eval_accuracy.png"):
        assert (folder / png).stat().st_size > 1000 and f"({png})" in text
    # the report is reproducible: same seed, same numbers (only the timestamp line differs)
    again = write_report(GRID, claims=claims, out_dir=tmp_path / "again", tracking_uri=store,
                         n_resamples=500).read_text()
    assert _without_date(again) == _without_date(text).replace(str(tmp_path), str(
        tmp_path / "again"))


def _without_date(text):
    return "\n".join(line for line in text.splitlines() if "generated" not in line)


def test_report_warns_on_unequal_compute(store, tmp_path):
    frame = load_runs(GRID, tracking_uri=store)
    frame.loc[frame["arm"] == "method=rft", "budget/samples"] *= 1.5
    readme = write_report("unequal", claims=[Claim("x", "grpo", "rft")], frame=frame,
                          out_dir=tmp_path, tracking_uri=store, n_resamples=200,
                          command="grpo-lab report unequal")
    text = readme.read_text()
    assert "unequal compute: final budget/samples" in text
    assert "grpo-lab report unequal" in text
    assert np.isfinite(final_values(frame, "budget/samples")["value"]).all()
