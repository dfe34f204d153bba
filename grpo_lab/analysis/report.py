"""Claims about a grid, tested and written up as ``results/<name>/README.md`` with plots.

Pipeline: ``load_runs`` -> ``final_values`` per metric -> per-arm estimates with bootstrap CIs
-> one ``Comparison`` per (metric, better arm, worse arm) -> Holm correction over the family of
comparisons -> a verdict per claim (`grpo_lab.analysis.claims`, whose names this module also
exports) -> markdown + PNG. ``write_report`` returns a ``Report``: the README's path and the
analysis behind it as data, with terminal tables of both (``claims_table``, ``arm_table``).
"""

from __future__ import annotations

import datetime as _datetime
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from grpo_lab.analysis import estimators
# the claims' names are the report's too (callers import them from here)
from grpo_lab.analysis.claims import (  # noqa: F401
    DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, MIN_SEEDS_FOR_CI, Analysis, Claim, ClaimResult, ReportError, analyse,
    claim_from_dict, compare, decide, parse_claim, resolve_arm,
)
from grpo_lab.analysis.frame import grid_file_of, load_runs, resolve_tracking_uri
from grpo_lab.conventions import workspace
from grpo_lab.analysis.text import (
    arm_cells, arm_header, estimate_with_ci, few_seeds_warning, format_arm_table,
    format_claims_table, markdown_table, number, point, pvalue,
)


@dataclass(frozen=True, eq=False)
class Report:
    """What ``write_report`` wrote and found.

    ``path`` is the README; ``analysis`` holds everything it shows as data: ``results`` (the
    claims with their ``verdict`` and ``reason``), ``arm_tables`` (per view, a DataFrame with
    columns arm, seeds, mean, sd, iqm, mean_low, mean_high, iqm_low, iqm_high, ci_method),
    ``comparisons``, ``warnings``, ``few_seeds``; ``plots`` are the PNGs written, ``removed``
    the old ``curves_*.png`` / ``final_*.png`` deleted because this report no longer draws them.

    It still stands in for the README path that ``write_report`` used to return (``str()``,
    ``os.fspath``, ``==`` a path, ``read_text``, ``parent``, ``name``); new code should use
    ``.path``.
    """

    path: Path
    analysis: Analysis
    plots: tuple[Path, ...] = ()
    removed: tuple[Path, ...] = ()  # stale plots of an earlier report in the same folder

    @property
    def results(self) -> list[ClaimResult]:
        """The claims in order, each with its comparison, ``verdict`` and ``reason``."""
        return self.analysis.results

    @property
    def arms(self) -> pd.DataFrame:
        """Per-arm table of the report's metric (one row per arm)."""
        return self.analysis.arm_tables[self.analysis.metrics[0]]

    @property
    def warning(self) -> str | None:
        """The few-seeds warning that opens the report (terminal text), or None."""
        return few_seeds_warning(self.analysis.few_seeds, markdown=False)

    def claims_table(self) -> str:
        """The claims and verdicts as a terminal table with a header row (``format_claims_table``),
        after the few-seeds warning when it applies."""
        return format_claims_table(self.analysis)

    def arm_table(self, label: str | None = None) -> str:
        """The per-arm table of ``label`` (default: the report's metric) for the terminal."""
        return format_arm_table(self.analysis, label)

    # the README path that write_report returned before it returned a Report
    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __eq__(self, other) -> bool:
        if isinstance(other, Report):
            return self.path == other.path
        if isinstance(other, (str, os.PathLike)):
            return self.path == Path(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.path)

    def read_text(self, *args, **kwargs) -> str:
        return self.path.read_text(*args, **kwargs)

    @property
    def parent(self) -> Path:
        return self.path.parent

    @property
    def name(self) -> str:
        return self.path.name


# --------------------------------------------------------------------------- markdown


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

    lines += ["## Claims", ""]
    if analysis.results:
        for i, result in enumerate(analysis.results, 1):
            c = result.claim
            kind = "at least as good as" if c.at_least_as_good else "better than"
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


def write_report(
    name: str,
    *,
    claims: Sequence[Claim],
    metric: str = "eval/accuracy",
    out_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    command: str | None = None,
    baseline: str | None = None,
    higher_is_better: bool = True,
    paired: bool | None = None,
    grid: str | None = None,
    frame: pd.DataFrame | None = None,
    factors: Iterable[str] | None = None,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = estimators.DEFAULT_RESAMPLES,
    seed: int = 0,
    curves: bool = True,
) -> Report:
    """Test ``claims`` on grid ``grid`` (default ``name``) and write ``out_dir/name/README.md``.

    Loads the grid's finished runs from MLflow (or uses ``frame``), writes the README and, per
    metric, ``curves_<metric>.png`` (mean over seeds vs step with a t band) and
    ``final_<metric>.png`` (seeds, mean and bootstrap CI); ``curves=False`` draws no curves
    (a frame of one step per run). ``curves_*.png`` and ``final_*.png`` files left in the
    folder by an earlier report and not drawn now are deleted (``remove_stale_plots``). ``paired=None`` pairs by seed when
    two arms ran the same seeds from the same start; ``command`` defaults to a ``python -c``
    line that regenerates this report. Returns a ``Report``: ``.path`` (the README) and
    ``.analysis`` (claims with verdicts, per-arm tables) as data.
    """
    from grpo_lab.analysis import plots  # matplotlib only when a report is drawn

    grid = grid or name
    uri = resolve_tracking_uri(tracking_uri)
    if frame is None:
        frame = load_runs(grid, tracking_uri=uri)
    analysis = analyse(frame, claims, metric=metric, baseline=baseline,
                       higher_is_better=higher_is_better, paired=paired, factors=factors,
                       alpha=alpha, confidence=confidence, n_resamples=n_resamples, seed=seed)
    out_dir = Path(out_dir) if out_dir is not None else workspace() / "reports"
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, dict[str, str]] = {}
    curves_drawn: set[str] = set()
    for label in analysis.metrics:
        metric_name, step = analysis.views.get(label, (label, None))
        key = plots.slug(label)
        what = f"final {metric_name}" if step is None else f"{metric_name} at step {step}"
        final_path = plots.plot_final_metric(analysis.finals[label], analysis.arm_intervals[label],
                                             metric_name, folder / f"final_{key}.png",
                                             title=what)
        drawn[label] = {f"{what} per arm": final_path.name}
        if curves and metric_name not in curves_drawn:
            curve_path = plots.plot_learning_curves(frame, metric_name,
                                                    folder / f"curves_{plots.slug(metric_name)}.png",
                                                    confidence=confidence)
            drawn[label][f"{metric_name} learning curves"] = curve_path.name
            curves_drawn.add(metric_name)
    if command is None:
        command = _reproduce_command(name, claims, metric=metric, out_dir=out_dir,
                                     tracking_uri=uri, baseline=baseline,
                                     higher_is_better=higher_is_better, paired=paired, grid=grid,
                                     extra=_non_default_options(factors, alpha, confidence,
                                                                n_resamples, seed))
    text = render_markdown(analysis, name=name, grid=grid, tracking_uri=uri, metric=metric,
                           higher_is_better=higher_is_better, alpha=alpha,
                           confidence=confidence, n_resamples=n_resamples, seed=seed,
                           command=command, plots=drawn)
    readme = folder / "README.md"
    readme.write_text(text)
    written = tuple(folder / file_name for files in drawn.values() for file_name in files.values())
    return Report(readme, analysis, written, remove_stale_plots(folder, keep=written))


PLOT_PATTERNS = ("curves_*.png", "final_*.png")


def remove_stale_plots(folder: Path, *, keep: Iterable[Path]) -> tuple[Path, ...]:
    """Delete the files in ``folder`` (not below it) named like a report's plots
    (``PLOT_PATTERNS``) that are not in ``keep``: the plots of metrics an earlier report drew
    and this one does not, which its README no longer links. Other files are never touched.
    Returns the deleted paths."""
    keep = {Path(path) for path in keep}
    stale = sorted(path for pattern in PLOT_PATTERNS for path in Path(folder).glob(pattern)
                   if path not in keep and (path.is_file() or path.is_symlink()))
    for path in stale:
        path.unlink()
    return tuple(stale)


# --------------------------------------------------------------------------- grid files


def load_grid_spec(path: str | Path) -> dict:
    """The mapping in a grid YAML file (``name``, ``factors``, ``seeds``, ``metric``,
    ``claims``, ...); ReportError when it is missing or not a mapping."""
    from grpo_lab.specs import SpecError, read_spec

    try:
        return read_spec(path, kind="grid")
    except SpecError as exc:
        raise ReportError(str(exc)) from None


def report_grid(
    name: str,
    *,
    grid_file: str | Path | None = None,
    metric: str | None = None,
    claims: Sequence[str] | None = None,
    baseline: str | None = None,
    lower_is_better: bool = False,
    tracking_uri: str | None = None,
    out_dir: str | Path | None = None,
    n_resamples: int = estimators.DEFAULT_RESAMPLES,
    experiments_dir: str | Path = "experiments",
    command: str | None = None,
) -> Report:
    """``grpo-lab report NAME``: the report of grid ``NAME`` in ``out_dir/NAME/`` (a ``Report``,
    as ``write_report`` returns).

    Reads ``grid_file`` (default ``experiments_dir/NAME.yaml`` when it exists, else the file the
    grid's runs were started from, their ``grpo_lab.grid_file`` tag) for the grid's
    ``name`` (the ``grpo_lab.grid`` tag), its ``metric``, ``higher_is_better``, ``baseline``,
    the keys of its ``factors`` and its ``claims`` (a list of ``"better>worse"`` strings or
    mappings, see ``claim_from_dict``). ``metric``, ``claims`` (``"better>worse"`` or
    ``"better>=worse"``) and ``baseline`` given here replace the file's.
    """
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise ReportError(f"no MLflow store at {uri}; run the grid first or pass --tracking-uri")
    path = Path(grid_file) if grid_file is not None else Path(experiments_dir) / f"{name}.yaml"
    if grid_file is None and not path.exists():  # the file the grid's runs were started from
        path = grid_file_of(name, uri) or path
    spec = load_grid_spec(path) if grid_file is not None or path.exists() else {}
    grid = str(spec.get("name", name))
    asked_metric = metric
    metric = metric or spec.get("metric") or "eval/accuracy"
    if claims:
        parsed = [parse_claim(text) for text in claims]
    else:
        entries = spec.get("claims") or []
        if not isinstance(entries, list):
            raise ReportError(f"claims in {path} must be a list of 'better>worse' strings or mappings")
        parsed = [claim_from_dict(entry) for entry in entries]
    factors = spec.get("factors")
    factors = list(factors) if isinstance(factors, dict) else None
    higher = not lower_is_better and bool(spec.get("higher_is_better", True))
    if command is None:
        parts = ["grpo-lab", "report", name]
        if grid_file is not None:
            parts += ["--grid-file", str(grid_file)]
        if asked_metric:
            parts += ["--metric", asked_metric]
        for text in claims or []:
            parts += ["--claim", text]
        if baseline:
            parts += ["--baseline", baseline]
        if lower_is_better:
            parts.append("--lower-is-better")
        if tracking_uri:
            parts += ["--tracking-uri", tracking_uri]
        if out_dir is not None:
            parts += ["--out", str(out_dir)]
        if n_resamples != estimators.DEFAULT_RESAMPLES:
            parts += ["--resamples", str(n_resamples)]
        command = shlex.join(parts)
    return write_report(name, claims=parsed, metric=metric, out_dir=out_dir,
                        tracking_uri=tracking_uri, command=command,
                        baseline=baseline or spec.get("baseline"), higher_is_better=higher,
                        grid=grid, factors=factors, n_resamples=n_resamples)
