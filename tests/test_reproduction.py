"""The reproduction scripts report the runs of their grid file as it expands on this machine: runs of
the same grid name from another config (an older grid file, another precision) stay out."""

from __future__ import annotations

import pytest
import yaml

from test_bench import _analysis_script


@pytest.fixture(autouse=True)
def _store(mlflow_db):
    """Every test here writes to tmp_path/mlflow.db (see conftest)."""


def test_a_report_leaves_out_runs_of_the_grid_made_from_another_config(tiny_config, tmp_path, capsys):
    reproduction = _analysis_script("reproduction")
    base = tmp_path / "base.yaml"
    base.write_text(tiny_config(**{"train.steps": 2, "train.eval_every": 2}).to_yaml())
    grid_file = tmp_path / "g.yaml"
    spec = {"name": "g", "base": "base.yaml", "factors": {"loss.aggregation": ["token_mean", "seq_mean_token_mean"]},
            "seeds": [0], "claims": [{"better": "token_mean", "worse": "seq_mean_token_mean", "at_least_as_good": True}]}
    grid_file.write_text(yaml.safe_dump(spec))

    def report(*argv: str):
        args = reproduction.parser("g", grid_file).parse_args(["--jobs", "1", "--out", str(tmp_path / "out"), *argv])
        spec, path = reproduction.grid_spec(args, {})
        return reproduction.run_and_report(args, spec, path, "g.py", list(argv))

    first, frame = report()
    assert frame["run_id"].nunique() == 2
    # the grid file changes (another learning rate): its old runs are not the new file's
    spec["set"] = {"optim.lr": 1.0e-4}
    grid_file.write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit, match=r"none of the 2 finished run\(s\) of grid g in MLflow was made from"):
        report("--report-only")
    capsys.readouterr()
    second, frame = report()
    assert "left out 2 finished run(s) of grid g made from other configs" in capsys.readouterr().err
    assert frame["run_id"].nunique() == 2 and set(frame["run_id"]).isdisjoint(first.analysis.finals["eval/accuracy"]
                                                                                   ["run_id"])
    assert all(len(values) == 1 for values in second.analysis.finals["eval/accuracy"].groupby("arm")["seed"]
               .apply(list))
