"""`grpo-lab report` end to end: a real 2-arm x 2-seed grid of tiny runs in MLflow -> README + PNGs."""

import json

import pytest
import yaml

from grpo_lab.cli import main
from grpo_lab.runs import run

GRID = "tiny_report"
ARMS = {"method=grpo": {"method": "grpo"}, "method=online_rft": {"method": "online_rft"}}


def run_grid(tiny_config):
    """What a grid runner does: every arm x seed one MLflow run tagged with grid, arm and factors."""
    for seed in (0, 1):
        for arm, factors in ARMS.items():
            config = tiny_config(**{"train.steps": 2, "train.eval_every": 1, "seed": seed, **factors})
            run(config, progress=False, tags={"grpo_lab.grid": GRID, "grpo_lab.arm": arm,
                                              "grpo_lab.factors": json.dumps(factors)})
    return config.tracking.resolved_uri


def test_report_of_a_real_grid(tiny_config, tmp_path, capsys):
    uri = run_grid(tiny_config)
    grid_file = tmp_path / f"{GRID}.yaml"
    grid_file.write_text(yaml.safe_dump({
        "name": GRID, "factors": {"method": ["grpo", "online_rft"]}, "seeds": [0, 1],
        "metric": "eval/accuracy",
        "claims": [
            {"text": "GRPO beats online RFT", "better": "grpo", "worse": "online_rft"},
            # step 0 is the shared SFT start, evaluated with the seed's own generator in both arms
            {"text": "same start", "better": "grpo", "worse": "method=online_rft", "step": 0,
             "at_least_as_good": True},
            "online_rft>=grpo",
        ],
    }))
    out = tmp_path / "results"
    code = main(["report", GRID, "--grid-file", str(grid_file), "--tracking-uri", uri, "--out", str(out),
                 "--resamples", "200"])
    assert code == 0
    folder = out / GRID
    text = (folder / "README.md").read_text()
    assert f"report: {folder / 'README.md'}" in capsys.readouterr().out
    assert "GRPO beats online RFT" in text and "(at step 0)" in text
    for arm in ARMS:
        assert f"| `{arm}` | 2 |" in text  # one row per arm, two seeds each
    verdicts = [line for line in text.splitlines() if line.startswith("| ") and "**" in line]
    assert len(verdicts) == 3
    assert all(any(f"**{v}**" in line for v in ("holds", "does not hold", "inconclusive")) for line in verdicts)
    # at step 0 both arms are the same model evaluated with the same generator: difference exactly 0
    same_start = verdicts[1]
    assert "`eval/accuracy@step0`" in same_start and "| 0 [0, 0] (t) |" in same_start and "**holds**" in same_start
    # 2 seeds per arm: said at the top, t-intervals of the differences, no probability of improvement
    head = text.split("## Claims", 1)[0]
    assert "Warning: too few seeds" in head and "`method=grpo` (2 seeds)" in head
    assert all("(t) | paired_t |" in line and "| not estimable |" in line for line in verdicts)
    assert "## Pairwise tests" in text and "p (Holm)" in text
    assert "paired" in text and "same seeds and same start" in text
    assert f"grpo-lab report {GRID} --grid-file {grid_file}" in text  # the command that reproduces it
    for png in ("final_eval_accuracy.png", "curves_eval_accuracy.png", "final_eval_accuracy_step0.png"):
        assert (folder / png).stat().st_size > 1000
        assert f"({png})" in text

    # flags instead of the file; a claim naming no arm is a one-line error
    code = main(["report", GRID, "--tracking-uri", uri, "--out", str(out), "--resamples", "200",
                 "--metric", "eval/greedy_accuracy", "--claim", "online_rft>grpo"])
    assert code == 0 and "`eval/greedy_accuracy`" in (folder / "README.md").read_text()
    assert main(["report", GRID, "--tracking-uri", uri, "--claim", "ppo>grpo"]) == 2
    assert "grpo-lab: error: arm 'ppo' matches no arm" in capsys.readouterr().err


def test_report_errors_are_one_line(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path}/none.db"
    assert main(["report", "g", "--tracking-uri", missing]) == 2
    assert capsys.readouterr().err.strip() == f"grpo-lab: error: no MLflow store at {missing}; run the grid first or pass --tracking-uri"
    (tmp_path / "empty.db").touch()
    assert main(["report", "g", "--tracking-uri", f"sqlite:///{tmp_path}/empty.db"]) == 2
    assert "no finished runs to analyse" in capsys.readouterr().err
    assert main(["report", "g", "--claim", "a=b", "--tracking-uri", f"sqlite:///{tmp_path}/empty.db"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not of the form 'better>worse'" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("claims: [{better: a}]\n")
    assert main(["report", "g", "--grid-file", str(bad), "--tracking-uri", f"sqlite:///{tmp_path}/empty.db"]) == 2
    assert "needs the keys better and worse" in capsys.readouterr().err


@pytest.mark.parametrize("text, better, worse, at_least", [
    ("grpo>rft", "grpo", "rft", False), ("a,b=c >= d", "a,b=c", "d", True)])
def test_parse_claim(text, better, worse, at_least):
    from grpo_lab.analysis import parse_claim

    claim = parse_claim(text)
    assert (claim.better, claim.worse, claim.at_least_as_good) == (better, worse, at_least)


def test_few_seeds_do_not_fail_a_claim_on_the_bootstrap_ci_alone():
    from grpo_lab.analysis.report import DOES_NOT_HOLD, INCONCLUSIVE, decide

    # 2 seeds, p = 0.89: a 2-value bootstrap CI below 0 is not evidence against the claim
    assert decide(-0.006, (-0.01, -0.002), 0.89, seeds=2)[0] == INCONCLUSIVE
    assert decide(-0.006, (-0.01, -0.002), 0.89, seeds=5)[0] == DOES_NOT_HOLD
    assert decide(-0.006, (-0.01, -0.002), 0.01, seeds=2)[0] == DOES_NOT_HOLD  # the test still decides


def test_a_margin_claim_is_decided_by_the_ci_against_the_margin():
    from grpo_lab.analysis.claims import ReportError, claim_from_dict
    from grpo_lab.analysis.report import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, decide

    claim = claim_from_dict({"better": "bf16", "worse": "fp32", "margin": 0.02})
    assert claim.margin == 0.02 and claim.at_least_as_good
    assert "not worse by more than 0.02" in claim.text
    # worse by 0.01 on average, but the whole CI above -0.02: not worse by more than the margin
    assert decide(-0.01, (-0.015, -0.005), 0.001, seeds=5, margin=0.02)[0] == HOLDS
    assert decide(-0.03, (-0.04, -0.025), 0.001, seeds=5, margin=0.02)[0] == DOES_NOT_HOLD
    verdict, reason = decide(0.0, (-0.03, 0.03), 0.9, seeds=5, margin=0.02)
    assert verdict == INCONCLUSIVE and "-0.02" in reason
    # without the margin the same numbers fail "at least as good"
    assert decide(-0.01, (-0.015, -0.005), 0.001, seeds=5, at_least_as_good=True)[0] == DOES_NOT_HOLD
    with pytest.raises(ReportError, match="a margin must be > 0"):
        claim_from_dict({"better": "a", "worse": "b", "margin": 0})
    with pytest.raises(ReportError, match="give a number"):
        claim_from_dict({"better": "a", "worse": "b", "margin": "small"})
