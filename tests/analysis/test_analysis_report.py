"""Verdict rule, arm naming, comparisons and the README from hand-made frames (no MLflow)."""

import numpy as np
import pandas as pd
import pytest

from grpo_lab.analysis import report, stats
from grpo_lab.analysis.report import Claim, decide


def make_frame(finals, *, sft=None, steps=4):
    rows = []
    for arm, per_seed in finals.items():
        for seed, final in per_seed.items():
            for step in range(1, steps + 1):
                rows.append({
                    "run_id": f"{arm}-{seed}", "grid": "g", "arm": arm, "seed": seed,
                    "step": step, "sft_hash": (sft or {}).get(arm, "s0"), "config_hash": None,
                    "eval/accuracy": final * step / steps, "eval/len_correct": 100.0 + seed,
                    "budget/samples": 64.0 * step, "param:method": arm.split("=")[-1],
                    "param:seed": str(seed), "factor:method": arm.split("=")[-1],
                })
    return pd.DataFrame(rows)


CLEAR = {"method=grpo": {0: 0.70, 1: 0.72, 2: 0.69, 3: 0.71, 4: 0.73},
         "method=rft": {0: 0.50, 1: 0.53, 2: 0.48, 3: 0.51, 4: 0.49}}


@pytest.mark.parametrize(
    "improvement, ci, p, at_least, expected",
    [
        (0.2, (0.1, 0.3), 0.01, False, report.HOLDS),
        (0.2, (0.1, 0.3), 0.20, False, report.INCONCLUSIVE),  # CI alone does not make it hold
        (0.2, (-0.1, 0.3), 0.01, False, report.HOLDS),
        (-0.1, (-0.3, 0.1), 0.01, False, report.DOES_NOT_HOLD),  # wrong way, significant
        (-0.1, (-0.3, -0.05), 0.30, False, report.DOES_NOT_HOLD),  # CI wrong way
        (-0.1, (-0.3, 0.1), 0.30, False, report.INCONCLUSIVE),
        (0.0, (-0.1, 0.1), np.nan, False, report.INCONCLUSIVE),
        (-0.1, (-0.3, 0.1), 0.30, True, report.HOLDS),  # non-inferiority: not significantly worse
        (-0.1, (-0.3, 0.1), 0.01, True, report.DOES_NOT_HOLD),
        (-0.1, (-0.3, -0.01), 0.30, True, report.DOES_NOT_HOLD),
    ],
)
def test_verdict_rule(improvement, ci, p, at_least, expected):
    verdict, reason = decide(improvement, ci, p, at_least_as_good=at_least)
    assert verdict == expected and reason


def test_resolve_arm_by_label_or_factor_value():
    arms = ["method=grpo,loss.aggregation=token_mean", "method=rft,loss.aggregation=token_mean"]
    assert report.resolve_arm("grpo", arms) == arms[0]
    assert report.resolve_arm("method=rft", arms) == arms[1]
    with pytest.raises(ValueError, match="ambiguous"):
        report.resolve_arm("token_mean", arms)
    with pytest.raises(ValueError, match="matches no arm"):
        report.resolve_arm("ppo", arms)
    with pytest.raises(ValueError, match="itself"):
        Claim("x", "grpo", "grpo")


def test_same_seeds_and_start_are_paired_otherwise_welch():
    paired = report.compare(make_frame(CLEAR), "eval/accuracy", "method=grpo", "method=rft",
                            n_resamples=200)
    assert paired.paired and paired.primary.test == "paired_t" and paired.rank.test == "wilcoxon"
    assert paired.difference.estimate == pytest.approx(0.71 - 0.502)
    assert paired.win_probability.estimate == 1.0
    other_start = make_frame(CLEAR, sft={"method=rft": "s1"})
    welch = report.compare(other_start, "eval/accuracy", "method=grpo", "method=rft",
                           n_resamples=200)
    assert not welch.paired and welch.primary.test == "welch_t"
    assert welch.rank.test == "mann_whitney" and "sft_hash" in welch.pairing_reason
    forced = report.compare(make_frame(CLEAR), "eval/accuracy", "method=grpo", "method=rft",
                            paired=False, n_resamples=200)
    assert forced.primary.test == "welch_t"


def test_lower_is_better_flips_the_direction():
    analysis = report.analyse(
        make_frame(CLEAR), [Claim("rft is shorter", "rft", "grpo")], n_resamples=200,
        higher_is_better=False,
    )
    result = analysis.results[0]
    assert result.comparison.improvement.estimate == pytest.approx(0.71 - 0.502)
    assert result.comparison.win_probability.estimate == 1.0
    assert result.verdict == report.HOLDS


def test_analyse_holm_family_and_verdicts():
    claims = [Claim("grpo beats rft", "grpo", "rft"),
              Claim("rft beats grpo", "rft", "grpo"),
              Claim("grpo no longer", "grpo", "rft", metric="eval/len_correct",
                    at_least_as_good=True)]
    analysis = report.analyse(make_frame(CLEAR), claims, n_resamples=200)
    verdicts = [r.verdict for r in analysis.results]
    assert verdicts == [report.HOLDS, report.DOES_NOT_HOLD, report.HOLDS]
    raw = np.array([c.primary.pvalue for c in analysis.comparisons])
    assert [c.primary_holm for c in analysis.comparisons] == pytest.approx(
        stats.holm(raw), nan_ok=True)
    assert analysis.metrics == ["eval/accuracy", "eval/len_correct"]


def test_write_report_from_a_frame(tmp_path):
    readme = report.write_report(
        "made", claims=[Claim("GRPO beats RFT", "grpo", "rft")], frame=make_frame(CLEAR),
        out_dir=tmp_path, tracking_uri="sqlite:///nowhere.db", n_resamples=200,
    )
    text = readme.read_text()
    assert readme == tmp_path / "made" / "README.md"
    assert "**holds**" in text and "| `method=grpo` | 5 | 0.71 |" in text
    assert "## Validity warnings" in text and "None." in text
    assert "write_report('made'" in text and "n_resamples=200" in text
    assert (tmp_path / "made" / "final_eval_accuracy.png").stat().st_size > 1000
    assert (tmp_path / "made" / "curves_eval_accuracy.png").stat().st_size > 1000
