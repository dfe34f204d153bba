"""The report's README: claims and verdicts, the per-arm table, the comparisons, validity
warnings, the method and the command that reproduces it, as markdown."""

from __future__ import annotations

import datetime as _datetime
import shlex

from grpo_lab.analysis import estimators
from grpo_lab.analysis.claims import MIN_SEEDS_FOR_CI
from grpo_lab.analysis.comparisons import Analysis
from grpo_lab.analysis.text import (
    arm_cells, arm_header, estimate_with_ci, few_seeds_warning, markdown_table, number, point, pvalue,
)

def _reproduce_command(name, claims, *, metric, out_dir, tracking_uri, baseline,
                       higher_is_better, paired, grid, extra) -> str:
    arguments = [repr(name), f"claims={list(claims)!r}", f"metric={metric!r}",
                 f"out_dir={str(out_dir)!r}", f"tracking_uri={tracking_uri!r}"]
    if grid != name:
        arguments.append(f"grid={grid!r}")
    if baseline is not None:
        arguments.append(f"baseline={baseline!r}")
    if not higher_is_better:
        arguments.append("higher_is_better=False")
    if paired is not None:
        arguments.append(f"paired={paired!r}")
    arguments += [f"{key}={value!r}" for key, value in extra.items()]
    code = ("from grpo_lab.analysis import Claim, write_report; "
            f"write_report({', '.join(arguments)})")
    if any(char in code for char in '"$`\\!'):
        return f"python -c {shlex.quote(code)}"
    return f'python -c "{code}"'  # readable: repr() quotes with ', which bash leaves alone


def _non_default_options(factors, alpha, confidence, n_resamples, seed) -> dict:
    options = {"factors": None if factors is None else list(factors), "alpha": alpha,
               "confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    defaults = {"factors": None, "alpha": 0.05, "confidence": 0.95,
                "n_resamples": estimators.DEFAULT_RESAMPLES, "seed": 0}
    return {key: value for key, value in options.items() if value != defaults[key]}


def render_markdown(
    analysis: Analysis,
    *,
    name: str,
    grid: str,
    tracking_uri: str,
    metric: str,
    higher_is_better: bool,
    alpha: float,
    confidence: float,
    n_resamples: int,
    seed: int,
    command: str,
    plots: dict[str, dict[str, str]],
) -> str:
    level = f"{confidence:.0%}"
    direction = "higher is better" if higher_is_better else "lower is better"
    now = _datetime.datetime.now(_datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# {name}", "",
             f"Grid `{grid}` from `{tracking_uri}`; primary metric `{metric}` ({direction}); "
             f"generated {now}.", ""]
    warning = few_seeds_warning(analysis.few_seeds)
    if warning:
        lines += [warning, ""]

    if analysis.levels:
        lines += ["## Factor levels", "", "The arms whose labels name their levels, and the value of each:", ""]
        rows = [[f"`{arm}`", f"`{key}`", "`" + value.replace("|", "\\|") + "`"]
                for arm, values in analysis.levels.items() for key, value in values.items()]
        lines += markdown_table(["arm", "factor", "value"], rows) + [""]

    lines += ["## Claims", ""]
    if analysis.results:
        for i, result in enumerate(analysis.results, 1):
            c = result.claim
            kind = "at least as good as" if c.at_least_as_good else "better than"
            if c.margin is not None:
                kind = f"not worse by more than {c.margin:g} than"
            when = "final" if c.step is None else f"at step {c.step}"
            lines.append(f"{i}. {c.text} — `{c.better}` {kind} `{c.worse}` on `{c.metric}` "
                         f"({when}).")
        lines.append("")
        rows = []
        for i, result in enumerate(analysis.results, 1):
            cmp = result.comparison
            rows.append([
                i, f"`{cmp.better}` vs `{cmp.worse}`", f"`{cmp.label}`",
                estimate_with_ci(cmp.difference), cmp.primary.test, pvalue(cmp.primary_holm),
                point(cmp.win_probability), f"**{result.verdict}**", result.reason,
            ])
        lines += ["### Verdicts", ""]
        lines += markdown_table(["#", "comparison", "metric", f"difference [{level} CI]",
                                 "test", "p (Holm)", "P(better wins)", "verdict", "why"], rows)
    else:
        lines.append("No claims given; the report compares the arms only.")
    lines.append("")

    for name_ in analysis.metrics:
        table = analysis.arm_tables[name_]
        metric_, step_ = analysis.views.get(name_, (name_, None))
        if step_ is None:
            lines += [f"## Final `{name_}` per arm", "",
                      "Final value = each run's last logged value; one value per seed.", ""]
        else:
            lines += [f"## `{metric_}` at step {step_} per arm", "",
                      f"Each run's value at its last evaluation at or before step {step_}; "
                      "one value per seed.", ""]
        rows = [arm_cells(r) for r in table.itertuples()]
        lines += markdown_table(arm_header(confidence), rows)
        lines.append("")
        if any(table["ci_method"].isin(estimators.T_METHODS)):
            lines += [f"(t): Student t-interval mean ± t·s/√n, for arms with fewer than "
                      f"{MIN_SEEDS_FOR_CI} seeds (a bootstrap over so few values is too narrow).",
                      ""]
        for label, file_name in plots.get(name_, {}).items():
            lines += [f"![{label}]({file_name})", ""]

    lines += ["## Pairwise tests", "",
              f"Two-sided tests on final values; Holm correction over the "
              f"{len(analysis.comparisons)} comparison(s) below, separately per test kind. "
              "Paired tests (paired t, Wilcoxon) when both arms ran the same seeds from the "
              "same start, else Welch t and Mann-Whitney U.", ""]
    rows = []
    for cmp in analysis.comparisons:
        rows.append([
            f"`{cmp.better}` vs `{cmp.worse}`", f"`{cmp.label}`",
            f"{'yes' if cmp.paired else 'no'} ({cmp.pairing_reason})", f"{cmp.n[0]}, {cmp.n[1]}",
            estimate_with_ci(cmp.difference),
            f"{cmp.primary.test} t={number(cmp.primary.statistic)}",
            pvalue(cmp.primary.pvalue), pvalue(cmp.primary_holm),
            f"{cmp.rank.test} {number(cmp.rank.statistic)}", pvalue(cmp.rank.pvalue),
            pvalue(cmp.rank_holm),
        ])
    lines += markdown_table(["comparison", "metric", "paired", "n",
                             f"difference [{level} CI]", "t test", "p", "p (Holm)", "rank test",
                             "p", "p (Holm)"], rows)
    lines.append("")

    lines += ["## Probability of improvement", "",
              "P(a run of the first arm beats a run of the second) = P(X > Y) + 0.5 P(X = Y) "
              f"over all pairs of seeds ({direction}); 0.5 = no tendency either way.", ""]
    rows = [[f"`{c.better}` vs `{c.worse}`", f"`{c.label}`",
             estimate_with_ci(c.win_probability)]
            for c in analysis.comparisons]
    lines += markdown_table(["comparison", "metric", f"P(improvement) [{level} CI]"], rows)
    lines.append("")

    lines += ["## Validity warnings", ""]
    lines += [f"- {w}" for w in analysis.warnings] or ["None."]
    lines.append("")

    lines += ["## Method", "",
              f"- Bootstrap CIs: percentile, {n_resamples} resamples, "
              f"`numpy.random.default_rng({seed})`; IQM = mean of the middle 50% of seeds "
              "(fractional weights at the quartiles).",
              f"- Verdict: `holds` if the Holm-adjusted t-test p < {alpha:g} and the difference "
              "is in the claimed direction; `does not hold` if the CI of the difference lies "
              f"entirely in the wrong direction (with at least {MIN_SEEDS_FOR_CI} seeds per arm), or "
              f"the difference is in the wrong direction "
              f"with adjusted p < {alpha:g}; `inconclusive` otherwise. An 'at least as good' "
              "claim holds unless the other arm is significantly better."]
    if any(r.claim.margin is not None for r in analysis.results):
        lines += [f"- A claim with a margin m ('not worse by more than m'): `holds` if the {level} CI of the "
                  "difference lies above -m, `does not hold` if it lies below -m, `inconclusive` if it "
                  "straddles -m; its p-values are shown, not used."]
    if analysis.few_seeds:
        lines += [f"- Arms with fewer than {MIN_SEEDS_FOR_CI} seeds: CI of the mean = Student "
                  "t-interval; CI of a difference = the t-interval of its t test (paired t: "
                  "mean(d) ± t_{n-1}·sd(d)/√n; Welch: Welch-Satterthwaite df), marked (t); no "
                  "CI of the IQM and no probability of improvement; an inconclusive verdict "
                  "quotes the seeds per arm that the observed difference would need for 80% "
                  f"power at alpha = {alpha:g} (normal approximation, pooled sd)."]
    lines.append("")

    lines += ["## Reproduce", "", "```bash", command, "```", ""]
    return "\n".join(lines)
