"""Reports with fewer than 5 seeds per arm: a warning at the top, t-intervals instead of
bootstrap CIs, no probability of improvement, verdicts that say why they are inconclusive; and
reports with 5 or more seeds exactly as before."""

import math

import numpy as np
import pandas as pd
import pytest

from grpo_lab.analysis import report
from grpo_lab.analysis.report import Claim, decide

T1 = math.tan(0.475 * math.pi)  # t_{0.975, 1} = 12.706 (1 df: Cauchy)
T2 = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))  # t_{0.975, 2} = 4.3027



def make_frame(finals, *, sft=None, steps=3):
    """Tidy frame: ``finals`` maps arm -> {seed: final eval/accuracy}, reached linearly."""
    rows = []
    for arm, per_seed in finals.items():
        for seed, final in per_seed.items():
            for step in range(1, steps + 1):
                rows.append({"run_id": f"{arm}-{seed}", "grid": "g", "arm": arm, "seed": seed,
                             "step": step, "sft_hash": (sft or {}).get(arm, "s0"),
                             "config_hash": None, "eval/accuracy": final * step / steps,
                             "budget/samples": 64.0 * step, "param:seed": str(seed),
                             "param:method": arm.split("=")[-1],
                             "factor:method": arm.split("=")[-1]})
    return pd.DataFrame(rows)


TWO = {"method=grpo": {0: 0.70, 1: 0.74}, "method=rft": {0: 0.60, 1: 0.62}}


# --------------------------------------------------------------------------- verdict reasons


def test_few_seeds_inconclusive_reason_quotes_the_seeds_needed():
    verdict, reason = decide(0.02, (-0.1, 0.14), 0.85, seeds=2, needed_seeds=16)
    assert verdict == report.INCONCLUSIVE
    assert reason == ("too few seeds (2 per arm): adjusted p = 0.85 is not below 0.05; a "
                      "difference this size needs about 16 seeds per arm for 80% power")


@pytest.mark.parametrize("needed, tail", [
    (math.inf, "; the observed difference is 0, which no number of seeds resolves"),
    (2, ""),  # the normal approximation says 2 would do: nothing useful to quote
    (math.nan, ""),  # no sd (an arm with one seed)
    (None, ""),
])
def test_few_seeds_inconclusive_reason_without_a_useful_count(needed, tail):
    verdict, reason = decide(0.0, (-0.1, 0.1), 0.5, seeds=3, needed_seeds=needed)
    assert verdict == report.INCONCLUSIVE
    assert reason == f"too few seeds (3 per arm): adjusted p = 0.5 is not below 0.05{tail}"


def test_few_seeds_other_verdicts_say_how_few():
    holds = decide(0.2, (0.1, 0.3), 0.01, seeds=3)
    assert holds == (report.HOLDS, "claimed direction with adjusted p = 0.01 < 0.05 "
                                   "(only 3 seeds per arm)")
    fails = decide(-0.2, (-0.3, -0.1), 0.01, seeds=4)
    assert fails[0] == report.DOES_NOT_HOLD and fails[1].endswith("(only 4 seeds per arm)")
    weak = decide(-0.01, (-0.3, 0.2), 0.9, seeds=2, at_least_as_good=True)
    assert weak[0] == report.HOLDS and "with 2 seeds per arm only a large gap could show" in weak[1]


@pytest.mark.parametrize("seeds", [None, 5, 7])
def test_five_or_more_seeds_keep_the_old_reasons(seeds):
    assert decide(0.02, (-0.1, 0.14), 0.85, seeds=seeds, needed_seeds=16) == (
        report.INCONCLUSIVE, "adjusted p = 0.85 is not below 0.05")
    assert decide(0.2, (0.1, 0.3), 0.01, seeds=seeds) == (
        report.HOLDS, "claimed direction with adjusted p = 0.01 < 0.05")
    assert decide(-0.1, (-0.3, 0.1), 0.3, seeds=seeds, at_least_as_good=True) == (
        report.HOLDS, "the worse-claimed arm is not significantly better")


# --------------------------------------------------------------------------- comparisons


def test_two_paired_seeds_get_the_paired_t_interval_and_no_win_probability():
    cmp = report.compare(make_frame(TWO), "eval/accuracy", "method=grpo", "method=rft")
    assert cmp.paired and cmp.few_seeds
    # d = [0.10, 0.12]: mean 0.11, sd(d) = 0.02 / sqrt(2), se = sd / sqrt(2) = 0.01
    assert cmp.difference.method == "paired t"
    assert cmp.difference.estimate == pytest.approx(0.11)
    assert (cmp.difference.low, cmp.difference.high) == pytest.approx((0.11 - T1 * 0.01,
                                                                        0.11 + T1 * 0.01))
    assert cmp.difference.low < 0 < cmp.difference.high  # the bootstrap gave [0.10, 0.12]
    assert cmp.win_probability.method == "not estimable"
    assert np.isnan(cmp.win_probability.estimate)


def test_two_unpaired_seeds_get_the_welch_t_interval():
    finals = {"method=grpo": {0: 0.70, 1: 0.74}, "method=rft": {0: 0.60, 1: 0.64}}
    cmp = report.compare(make_frame(finals, sft={"method=rft": "other"}), "eval/accuracy",
                         "method=grpo", "method=rft")
    # variances 0.0008 each: se^2 = 0.0004 + 0.0004, df = 0.0008^2 / (2 * 0.0004^2) = 2
    assert not cmp.paired and cmp.difference.method == "Welch t"
    half = T2 * math.sqrt(0.0008)
    assert (cmp.difference.low, cmp.difference.high) == pytest.approx((0.1 - half, 0.1 + half))
    lower = report.compare(make_frame(finals, sft={"method=rft": "other"}), "eval/accuracy",
                           "method=rft", "method=grpo", higher_is_better=False)
    assert lower.improvement.estimate == pytest.approx(0.1)
    assert (lower.improvement.low, lower.improvement.high) == pytest.approx((0.1 - half,
                                                                             0.1 + half))


def test_one_arm_with_few_seeds_is_enough_to_switch_to_t():
    finals = {"method=grpo": {s: 0.70 + 0.01 * s for s in range(5)},
              "method=rft": {0: 0.60, 1: 0.62, 2: 0.61}}
    analysis = report.analyse(make_frame(finals), [Claim("g", "grpo", "rft")], n_resamples=200)
    cmp = analysis.comparisons[0]
    assert cmp.n == (5, 3) and not cmp.paired and cmp.difference.method == "Welch t"
    assert analysis.few_seeds == {"method=rft": 3}
    table = analysis.arm_tables["eval/accuracy"].set_index("arm")
    assert table.loc["method=grpo", "ci_method"] == "percentile"
    assert table.loc["method=rft", "ci_method"] == "t"
    # rft: [0.60, 0.62, 0.61]: mean 0.61, sd 0.01, se 0.01 / sqrt(3), df 2
    assert table.loc["method=rft", "mean_high"] == pytest.approx(0.61 + T2 * 0.01 / math.sqrt(3))
    assert np.isnan(table.loc["method=rft", "iqm_low"])
    assert table.loc["method=rft", "iqm"] == pytest.approx(0.61)


# --------------------------------------------------------------------------- the README


def test_the_two_seed_report_that_over_claimed(tmp_path):
    # both paired differences positive ([0.01, 0.03]): the 2-value bootstrap CI was [0.01, 0.03]
    # and P(better wins) 1, while the paired t test gives p = 0.295 (t = 2, 1 df)
    finals = {"method=grpo": {0: 0.71, 1: 0.73}, "method=rft": {0: 0.70, 1: 0.70},
              "method=sft": {0: 0.50, 1: 0.52}}
    claims = [Claim("GRPO beats RFT", "grpo", "rft"), Claim("RFT beats SFT", "rft", "sft")]
    readme = report.write_report("two", claims=claims, frame=make_frame(finals), out_dir=tmp_path,
                                 tracking_uri="sqlite:///nowhere.db", n_resamples=200)
    text = readme.read_text()
    head, body = text.split("## Claims", 1)
    assert ("> **Warning: too few seeds:** fewer than 5 seeds in `method=grpo` (2 seeds), "
            "`method=rft` (2 seeds), `method=sft` (2 seeds).") in head
    grpo_row = next(line for line in body.splitlines() if line.startswith("| 1 |"))
    cells = [cell.strip() for cell in grpo_row.split("|")[1:-1]]
    difference, p_holm, win, verdict, why = cells[3], cells[5], cells[6], cells[7], cells[8]
    # d = [0.01, 0.03]: 0.02 +- t_{0.975, 1} * 0.01
    assert difference == f"0.02 [{0.02 - T1 * 0.01:.4g}, {0.02 + T1 * 0.01:.4g}] (t)"
    assert float(p_holm) > 0.05 and win == "not estimable" and verdict == "**inconclusive**"
    assert why.startswith("too few seeds (2 per arm): adjusted p = ")
    assert "needs about" not in why or int(why.split("needs about ")[1].split()[0]) > 2
    assert "| `method=grpo` | 2 | 0.72 |" in body and "(t) | not estimable |" in body
    assert "1 [1, 1]" not in body  # no probability of improvement anywhere
    assert "- Arms with fewer than 5 seeds: CI of the mean = Student t-interval" in body


def test_the_seeds_needed_are_those_of_the_validity_warning(tmp_path):
    finals = {"method=grpo": {0: 0.70, 1: 0.74, 2: 0.66}, "method=rft": {0: 0.68, 1: 0.70,
                                                                           2: 0.66}}
    analysis = report.analyse(make_frame(finals), [Claim("g", "grpo", "rft")], n_resamples=200)
    result = analysis.results[0]
    assert result.verdict == report.INCONCLUSIVE
    # effect 0.70 - 0.68 = 0.02, sds 0.04 and 0.02: pooled variance (0.0016 + 0.0004) / 2
    # = 0.001 -> 2 (1.959964 + 0.841621)^2 * 0.001 / 0.02^2 = 39.2 -> 40
    needed = math.ceil(2 * (1.959964 + 0.841621) ** 2 * 0.001 / 0.02**2)
    assert needed == 40
    assert f"needs about {needed} seeds per arm for 80% power" in result.reason
    assert any(f"needs {needed} seeds per arm" in w for w in analysis.warnings)


# --------------------------------------------------------------------------- 5+ seeds unchanged

# Five paired seeds shaped like the committed results/deepseekmath_fig5 report: online RFT far
# above RFT (final and at step 50), GRPO level with online RFT, process a little above outcome.
RFT = np.array([0.58, 0.60, 0.61, 0.59, 0.61])
ONLINE = RFT + [0.170, 0.180, 0.175, 0.168, 0.182]
GROUP = ONLINE + [0.005, -0.008, 0.002, -0.004, 0.000]
PROCESS = GROUP + [0.030, -0.010, 0.040, 0.020, 0.015]
FIG5_LIKE = {f"method={name}": dict(enumerate(values)) for name, values in
             (("rft", RFT), ("online_rft", ONLINE), ("grpo_group", GROUP),
              ("grpo_process", PROCESS))}


def test_five_seed_reports_are_unchanged(tmp_path):
    claims = [Claim("online beats rft", "online_rft", "rft"),
              Claim("online beats rft early", "online_rft", "rft", step=2),
              Claim("grpo beats online", "grpo_group", "online_rft"),
              Claim("process at least as good", "grpo_process", "grpo_group",
                    at_least_as_good=True),
              Claim("process beats outcome", "grpo_process", "grpo_group")]
    readme = report.write_report("fig5like", claims=claims, frame=make_frame(FIG5_LIKE),
                                 out_dir=tmp_path, tracking_uri="sqlite:///nowhere.db",
                                 n_resamples=500)
    analysis = report.analyse(make_frame(FIG5_LIKE), claims, n_resamples=500)
    assert [r.verdict for r in analysis.results] == [
        report.HOLDS, report.HOLDS, report.INCONCLUSIVE, report.HOLDS, report.INCONCLUSIVE]
    assert analysis.results[2].reason.startswith("adjusted p = ")
    assert analysis.results[3].reason == "the worse-claimed arm is not significantly better"
    assert analysis.few_seeds == {}
    assert all(c.difference.method == "percentile" and c.win_probability.method == "percentile"
               for c in analysis.comparisons)
    assert analysis.comparisons[0].win_probability.estimate == 1.0
    text = readme.read_text()
    for marker in ("Warning: too few seeds", "too few seeds (", "(t)", "not estimable", "Student"):
        assert marker not in text
