"""Claims about a grid, tested and written up as ``<out>/<name>/README.md`` with plots.

Pipeline: ``load_runs`` -> ``final_values`` per metric -> per-arm estimates with bootstrap CIs
-> one ``Comparison`` per (metric, better arm, worse arm) -> Holm correction over the family of
comparisons -> a verdict per claim (`grpo_lab.analysis.claims`, whose names this module also
exports) -> markdown (`grpo_lab.analysis.markdown`) + PNG. ``write_report`` returns a ``Report``: the README's path and the
analysis behind it as data, with terminal tables of both (``claims_table``, ``arm_table``).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from grpo_lab.analysis import estimators
# the claims' names are the report's too (callers import them from here)
from grpo_lab.analysis.claims import (  # noqa: F401
    DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, MIN_SEEDS_FOR_CI, Claim, ReportError, claim_from_dict, parse_claim, resolve_arm,
)
from grpo_lab.analysis.comparisons import Analysis, ClaimResult, analyse, compare, decide  # noqa: F401
from grpo_lab.analysis.frame import grid_file_of, load_runs, resolve_tracking_uri
from grpo_lab.conventions import workspace
from grpo_lab.analysis.markdown import _non_default_options, _reproduce_command, render_markdown
from grpo_lab.analysis.text import few_seeds_warning, format_arm_table, format_claims_table


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
    frame: pd.DataFrame | None = None,
) -> Report:
    """``grpo-lab report NAME``: the report of grid ``NAME`` in ``out_dir/NAME/`` (a ``Report``,
    as ``write_report`` returns). ``frame`` (from ``load_runs``) replaces the grid's runs in MLflow,
    e.g. only those of one expansion of the grid file.

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
                        grid=grid, factors=factors, n_resamples=n_resamples, frame=frame)
