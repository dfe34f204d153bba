"""Plots of the tidy frame: learning curves with CI bands and final-metric dot plots.

Layer 5 of the analysis. Uses matplotlib's Agg backend (no display needed) and only draws what
the estimators computed; no statistics are invented here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from grpo_lab.analysis.estimators import Interval, t_interval  # noqa: E402


def slug(text: str) -> str:
    """File-name-safe version of a metric name: 'eval/pass@8' -> 'eval_pass_8'."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def t_band(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval mean +- t_{(1+c)/2, n-1} s / sqrt(n) of one step's seeds."""
    interval = t_interval(values[~np.isnan(values)], confidence=confidence)
    return interval.estimate, interval.low, interval.high


def curve_table(frame: pd.DataFrame, metric: str, confidence: float = 0.95) -> pd.DataFrame:
    """Per arm and step: n seeds, mean over seeds and t-interval bounds (columns low, high)."""
    logged = frame.dropna(subset=[metric])
    rows = []
    for (arm, step), group in logged.groupby(["arm", "step"], sort=True):
        centre, low, high = t_band(group[metric].to_numpy(dtype=float), confidence)
        rows.append({"arm": arm, "step": step, "n": len(group), "mean": centre,
                     "low": low, "high": high})
    return pd.DataFrame(rows, columns=["arm", "step", "n", "mean", "low", "high"])


def plot_learning_curves(
    frame: pd.DataFrame, metric: str, path: str | Path, *, confidence: float = 0.95
) -> Path:
    """Mean over seeds of ``metric`` vs step for each arm, with a Student-t CI band."""
    table = curve_table(frame, metric, confidence)
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    for arm, curve in table.groupby("arm", sort=True):
        line, = axes.plot(curve["step"], curve["mean"], marker=".", label=arm)
        axes.fill_between(curve["step"], curve["low"], curve["high"],
                          color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set_xlabel("training step")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric}: mean over seeds, {confidence:.0%} t-interval band")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return _save(figure, path)


def plot_final_metric(
    finals: pd.DataFrame,
    intervals: Mapping[str, Interval],
    metric: str,
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """One row per arm: each seed's final value as a dot, the estimate and its CI whiskers.
    ``title`` names the values (default ``final <metric>``)."""
    arms = sorted(intervals)
    figure, axes = plt.subplots(figsize=(6.4, 1.0 + 0.6 * len(arms)))
    jitter = np.random.default_rng(0)  # fixed so the figure is reproducible
    for row, arm in enumerate(arms):
        values = finals.loc[finals["arm"] == arm, "value"].to_numpy(dtype=float)
        axes.scatter(values, row + jitter.uniform(-0.12, 0.12, len(values)),
                     s=14, color="0.55", zorder=2)
        interval = intervals[arm]
        low = interval.low if np.isfinite(interval.low) else interval.estimate
        high = interval.high if np.isfinite(interval.high) else interval.estimate
        axes.errorbar(interval.estimate, row,
                      xerr=[[interval.estimate - low], [high - interval.estimate]],
                      fmt="o", color="C0", capsize=4, zorder=3)
    axes.set_yticks(range(len(arms)), arms)
    axes.set_ylim(-0.6, len(arms) - 0.4)
    what = title or f"final {metric}"
    axes.set_xlabel(what)
    first = next(iter(intervals.values()), None)
    band = f"{first.confidence:.0%} {first.method} bootstrap CI" if first else "CI"
    axes.set_title(f"{what}: seeds (grey), mean and {band}", fontsize="medium")
    axes.grid(axis="x", alpha=0.3)
    return _save(figure, path)


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
