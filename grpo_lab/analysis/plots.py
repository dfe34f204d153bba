"""Plots of the tidy frame: learning curves with CI bands and final-metric dot plots.

Layer 5 of the analysis. Uses matplotlib's Agg backend (no display needed) and only draws what
the estimators computed; no statistics are invented here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402

from grpo_lab.analysis.estimators import T_METHODS, Interval, t_interval  # noqa: E402


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


def wrap_label(figure, text: str, width: float, *, fontsize: str | float = "medium") -> str:
    """``text`` broken into lines no wider than ``width`` pixels of ``figure``: after the commas
    between an arm label's ``key=value`` parts where it can, inside a part where one part alone is
    too wide."""
    renderer = figure.canvas.get_renderer()
    font = FontProperties(size=fontsize)

    def fits(line: str) -> bool:
        return renderer.get_text_width_height_descent(line, font, ismath=False)[0] <= width

    pieces = [part + "," for part in text.split(",")]
    pieces[-1] = pieces[-1][:-1]
    lines: list[str] = []
    for piece in pieces:
        if lines and fits(lines[-1] + piece):
            lines[-1] += piece
            continue
        while piece and not fits(piece):  # a part too wide alone: as many characters as fit
            cut = max(1, max((n for n in range(1, len(piece) + 1) if fits(piece[:n])), default=1))
            lines.append(piece[:cut])
            piece = piece[cut:]
        if piece:
            lines.append(piece)
    return "\n".join(lines)


def learning_curves_figure(frame: pd.DataFrame, metric: str, *, confidence: float = 0.95):
    """The figure of ``plot_learning_curves``, laid out, not saved (the caller closes it).

    The legend sits below the axes, outside them, each arm's label wrapped to the figure's width
    (two columns when the labels are short); the figure grows by the legend's height, so the axes
    keep theirs however many and however long the labels are."""
    table = curve_table(frame, metric, confidence)
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    handles = []
    for arm, curve in table.groupby("arm", sort=True):
        line, = axes.plot(curve["step"], curve["mean"], marker=".", label=arm)
        axes.fill_between(curve["step"], curve["low"], curve["high"],
                          color=line.get_color(), alpha=0.2, linewidth=0)
        handles.append(line)
    axes.set_xlabel("training step")
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    room = 0.9 * figure.bbox.width
    short = all("\n" not in wrap_label(figure, h.get_label(), room / 2 - 40, fontsize="small") for h in handles)
    columns = 2 if short and len(handles) > 1 else 1
    labels = [wrap_label(figure, h.get_label(), room / columns - 40, fontsize="small") for h in handles]
    legend = figure.legend(handles, labels, loc="lower center", ncols=columns, fontsize="small",
                           frameon=False, borderaxespad=0.2)
    legend_height = legend.get_window_extent(figure.canvas.get_renderer()).height / figure.dpi + 0.1
    w, h = figure.get_size_inches()
    figure.set_size_inches(w, h + legend_height)
    fit_title(figure, f"{metric}: mean over seeds, {confidence:.0%} t-interval band",
              fontsize="large", bottom=legend_height)
    return figure


def plot_learning_curves(
    frame: pd.DataFrame, metric: str, path: str | Path, *, confidence: float = 0.95
) -> Path:
    """Mean over seeds of ``metric`` vs step for each arm, with a Student-t CI band."""
    return _save(learning_curves_figure(frame, metric, confidence=confidence), path)


def interval_name(intervals: Iterable[Interval]) -> str:
    """What the whiskers are: '95% percentile bootstrap CI', '95% t-interval', or both named
    when arms with few seeds have t-intervals and the others bootstrap CIs."""
    intervals = list(intervals)
    if not intervals:
        return "CI"
    level = f"{intervals[0].confidence:.0%}"
    methods = sorted({interval.method for interval in intervals})
    bootstrap = [method for method in methods if method not in T_METHODS]
    if not bootstrap:
        return f"{level} t-interval"
    if len(methods) == 1:
        return f"{level} {methods[0]} bootstrap CI"
    return f"{level} CI ({', '.join(bootstrap)} bootstrap; t-interval for arms with few seeds)"


def final_metric_figure(
    finals: pd.DataFrame,
    intervals: Mapping[str, Interval],
    metric: str,
    *,
    title: str | None = None,
):
    """The figure of ``plot_final_metric``, laid out, not saved (the caller closes it)."""
    arms = sorted(intervals)
    figure, axes = plt.subplots(figsize=(6.4, 1.0 + 0.6 * len(arms)))
    labels = [wrap_label(figure, arm, 0.42 * figure.bbox.width) for arm in arms]  # the axes keep the rest
    lines = sum(label.count("\n") + 1 for label in labels)
    line_height = 1.25 * FontProperties(size="medium").get_size_in_points() / 72
    figure.set_size_inches(6.4, 1.0 + max(0.6 * len(arms), lines * line_height + 0.25 * len(arms)))
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
    axes.set_yticks(range(len(arms)), labels)
    axes.set_ylim(-0.6, len(arms) - 0.4)
    what = title or f"final {metric}"
    axes.set_xlabel(metric)  # the title says which values (final, at a step): a short label fits
    axes.grid(axis="x", alpha=0.3)
    fit_title(figure, f"{what}: seeds (grey), mean and {interval_name(intervals.values())}")
    return figure


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
    return _save(final_metric_figure(finals, intervals, metric, title=title), path)


def fit_title(figure, text: str, *, fontsize: str | float = "medium", bottom: float = 0.0):
    """Give ``figure`` the title ``text`` so that it is never cut off, then lay it out.

    The title is centred on the figure, not on the axes (long arm labels push the axes to the
    right, and a title centred over them ran off the right edge); it is wrapped at spaces into
    lines that fit the figure's width, the figure grows by a line's height per extra line, a
    single word wider than the figure shrinks the font, and ``tight_layout`` keeps the title
    clear of the axes, and the axes clear of the ``bottom`` inches kept for a legend below them.
    Returns the title's Text.
    """
    renderer = figure.canvas.get_renderer()
    font = FontProperties(size=fontsize)
    room = 0.96 * figure.bbox.width  # pixels, a small margin on each side

    def width(line: str) -> float:
        return renderer.get_text_width_height_descent(line, font, ismath=False)[0]

    lines: list[str] = []
    for word in text.split():
        if lines and width(f"{lines[-1]} {word}") <= room:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    widest = max((width(line) for line in lines), default=0.0)
    if widest > room:
        font = FontProperties(size=font.get_size_in_points() * room / widest)
    extra = len(lines) - 1
    if extra:
        w, h = figure.get_size_inches()
        figure.set_size_inches(w, h + extra * 1.3 * font.get_size_in_points() / 72)
    title = figure.suptitle("\n".join(lines), fontproperties=font)
    figure.tight_layout(rect=(0, bottom / figure.get_size_inches()[1], 1, 1))
    return title


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
