"""Statistics over grids of MLflow runs, in layers (STYLE.md §10).

    frame.py       load_runs -> tidy frame (one row per run per step), final_values
    estimators.py  mean, median, iqm, probability_of_improvement; bootstrap CIs; Student
                   t-intervals (honest with 2-4 seeds, where the bootstrap is not)
    stats.py       Welch / paired t, Mann-Whitney, Wilcoxon, permutation tests, Holm,
                   required_seeds, seeds_needed
    validity.py    warnings: unequal compute, confounded configs, too few or missing seeds
    plots.py       learning curves with CI bands, final-metric dot plots (matplotlib Agg)
    claims.py      Claim: what a claim says, parsed from text or a grid file; resolve_arm
    comparisons.py analyse: per-arm estimates, comparisons, Holm, verdicts (with fewer
                   than 5 seeds in an arm: t-intervals, no probability of improvement)
    text.py        cells (intervals marked (t) or "not estimable"), the few-seeds warning,
                   markdown tables, terminal tables (format_claims_table, format_arm_table)
    report.py      write_report -> <workspace>/reports/<name>/README.md + PNGs; returns a Report (.path,
                   .analysis as data, .claims_table() / .arm_table() for the terminal)

mlflow and matplotlib are imported only by the functions that need them.
"""

from grpo_lab.analysis.estimators import (
    Interval,
    bootstrap_ci,
    difference_ci,
    difference_t_interval,
    iqm,
    mean,
    median,
    probability_of_improvement,
    probability_of_improvement_ci,
    stratified_bootstrap_ci,
    t_interval,
)
from grpo_lab.analysis.frame import final_values, load_runs
from grpo_lab.analysis.report import (
    Claim,
    Report,
    analyse,
    claim_from_dict,
    parse_claim,
    write_report,
)
from grpo_lab.analysis.stats import (
    TestResult,
    holm,
    mann_whitney,
    paired_t,
    permutation_test,
    required_seeds,
    seeds_needed,
    welch_t,
    wilcoxon,
)
from grpo_lab.analysis.text import format_arm_table, format_claims_table
from grpo_lab.analysis.validity import check_comparison

__all__ = [
    "Claim",
    "Interval",
    "Report",
    "TestResult",
    "analyse",
    "bootstrap_ci",
    "check_comparison",
    "claim_from_dict",
    "difference_ci",
    "difference_t_interval",
    "final_values",
    "format_arm_table",
    "format_claims_table",
    "holm",
    "iqm",
    "load_runs",
    "mann_whitney",
    "mean",
    "median",
    "paired_t",
    "parse_claim",
    "permutation_test",
    "probability_of_improvement",
    "probability_of_improvement_ci",
    "required_seeds",
    "seeds_needed",
    "stratified_bootstrap_ci",
    "t_interval",
    "welch_t",
    "wilcoxon",
    "write_report",
]
