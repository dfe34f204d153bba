"""How the analysis is written down: number and interval cells, the few-seeds warning, and the
tables for the README (markdown) and for the terminal (aligned text with a header row).

Cells read the interval's ``method``: a Student t-interval (used with fewer than 5 seeds) is
marked ``(t)``, an interval the seeds cannot support reads ``not estimable``; bootstrap
intervals are written as before, ``estimate [low, high]``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from grpo_lab.analysis.claims import MIN_SEEDS_FOR_CI
from grpo_lab.analysis.comparisons import Analysis
from grpo_lab.analysis.estimators import NOT_ESTIMABLE, T_METHODS, Interval

# --------------------------------------------------------------------------- cells


def number(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4g}"


def pvalue(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def ci(low: float, high: float) -> str:
    return f"[{number(low)}, {number(high)}]"


def interval_ci(interval: Interval) -> str:
    """``[low, high]``, ``[low, high] (t)`` for a t-interval, or ``not estimable``."""
    if interval.method == NOT_ESTIMABLE:
        return NOT_ESTIMABLE
    marker = " (t)" if interval.method in T_METHODS else ""
    return f"{ci(interval.low, interval.high)}{marker}"


def estimate_with_ci(interval: Interval) -> str:
    """``estimate [low, high]`` (``(t)`` after a t-interval), or ``not estimable``."""
    if interval.method == NOT_ESTIMABLE and not np.isfinite(interval.estimate):
        return NOT_ESTIMABLE
    return f"{number(interval.estimate)} {interval_ci(interval)}"


def point(interval: Interval) -> str:
    """The estimate alone, or ``not estimable``."""
    return NOT_ESTIMABLE if interval.method == NOT_ESTIMABLE else number(interval.estimate)


def arm_cells(row, *, code: bool = True) -> list[str]:
    """One row of the per-arm table (a row of ``Analysis.arm_tables[label]``): arm, seeds, mean,
    sd, IQM, CI of mean, CI of IQM."""
    t_marked = row.ci_method in T_METHODS
    mean_ci = ci(row.mean_low, row.mean_high) + (" (t)" if t_marked else "")
    iqm_ci = NOT_ESTIMABLE if t_marked else ci(row.iqm_low, row.iqm_high)
    arm = f"`{row.arm}`" if code else row.arm
    return [arm, str(row.seeds), number(row.mean), number(row.sd), number(row.iqm), mean_ci,
            iqm_ci]


def arm_header(confidence: float) -> list[str]:
    level = f"{confidence:.0%}"
    return ["arm", "seeds", "mean", "sd", "IQM", f"{level} CI of mean", f"{level} CI of IQM"]


# --------------------------------------------------------------------------- few seeds


def few_seeds_warning(few: dict[str, int], *, markdown: bool = True) -> str | None:
    """The line that opens a report whose arms have fewer than ``MIN_SEEDS_FOR_CI`` seeds
    (``Analysis.few_seeds``), or None when every arm has enough."""
    if not few:
        return None
    quote = "`" if markdown else ""
    arms = ", ".join(f"{quote}{arm}{quote} ({n} seed{'s' if n != 1 else ''})"
                     for arm, n in few.items())
    text = (f"fewer than {MIN_SEEDS_FOR_CI} seeds in {arms}. A bootstrap CI over so few values "
            "is far too narrow, so these arms get Student t-intervals (marked (t): wide, but "
            "honest at this n), no CI of the IQM and no probability of improvement; a claim "
            "holds only when the Holm-adjusted t test says so. Expect inconclusive verdicts: "
            "only more seeds can settle them.")
    return f"> **Warning: too few seeds:** {text}" if markdown else f"warning: too few seeds: {text}"


# --------------------------------------------------------------------------- tables


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def text_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Columns padded to their widest cell under a header row and a rule of dashes; the last
    column (free text) is not padded."""
    cells = [[str(cell) for cell in row] for row in [list(header), *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row):
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths)] + [row[-1]]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return [line(cells[0]), rule] + [line(row) for row in cells[1:]]


def format_claims_table(analysis: Analysis) -> str:
    """The claims and their verdicts as a terminal table with a header row, after the
    few-seeds warning when it applies. Columns: #, claim (its text), metric, difference
    (better - worse) with its CI, Holm-adjusted p of the t test, P(better wins), verdict, why."""
    warning = few_seeds_warning(analysis.few_seeds, markdown=False)
    lines = [warning] if warning else []
    if not analysis.results:
        return "\n".join(lines + ["No claims given; the report compares the arms only."])
    rows = []
    for i, result in enumerate(analysis.results, 1):
        cmp = result.comparison
        rows.append([i, result.claim.text, cmp.label, estimate_with_ci(cmp.difference),
                     pvalue(cmp.primary_holm), point(cmp.win_probability), result.verdict,
                     result.reason])
    level = f"{analysis.confidence:.0%}"
    lines += text_table(["#", "claim", "metric", f"difference [{level} CI]", "p (Holm)",
                         "P(better wins)", "verdict", "why"], rows)
    return "\n".join(lines)


def format_arm_table(analysis: Analysis, label: str | None = None) -> str:
    """The per-arm table (arm, seeds, mean, sd, IQM, CIs) of view ``label`` as a terminal table
    with a header row; ``label`` defaults to the report's metric (``analysis.metrics[0]``)."""
    table = analysis.arm_tables[label or analysis.metrics[0]]
    rows = [arm_cells(row, code=False) for row in table.itertuples()]
    return "\n".join(text_table(arm_header(analysis.confidence), rows))
