"""The PNGs' titles fit inside their figures (measured with matplotlib's renderer)."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from grpo_lab.analysis import plots
from grpo_lab.analysis.estimators import Interval

# the arm labels of results/deepseekmath_fig5, whose final_*.png title was cut off
ARMS = ["method=rft,advantage.estimator=group", "method=online_rft,advantage.estimator=group",
        "method=grpo,advantage.estimator=group", "method=grpo,advantage.estimator=process"]


def finals_and_intervals(methods):
    rng = np.random.default_rng(0)
    finals = pd.DataFrame([{"arm": arm, "seed": seed, "value": 0.6 + 0.05 * i + rng.normal(0, 0.01)}
                           for i, arm in enumerate(ARMS) for seed in range(5)])
    intervals = {arm: Interval(0.6 + 0.05 * i, 0.58 + 0.05 * i, 0.62 + 0.05 * i, 0.95, method)
                 for i, (arm, method) in enumerate(zip(ARMS, methods))}
    return finals, intervals


def fits(figure, text) -> bool:
    """The text's window extent lies inside the figure's."""
    figure.canvas.draw()
    box = text.get_window_extent(figure.canvas.get_renderer())
    outer = figure.bbox
    return (box.x0 >= outer.x0 and box.x1 <= outer.x1 and box.y0 >= outer.y0
            and box.y1 <= outer.y1)


def title_of(figure):
    (title,) = [text for text in figure.texts if text.get_text() == figure.get_suptitle()]
    return title


def test_the_old_layout_cut_the_title_off():
    # what the report drew before: the title centred over axes pushed right by long labels
    finals, intervals = finals_and_intervals(["percentile"] * 4)
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    axes.set_yticks(range(4), ARMS)
    title = axes.set_title("final eval/accuracy: seeds (grey), mean and 95% percentile "
                           "bootstrap CI", fontsize="medium")
    figure.tight_layout()
    assert not fits(figure, title)  # so the check below can fail
    plt.close(figure)


@pytest.mark.parametrize("methods, title", [
    (["percentile"] * 4, None),
    (["t", "percentile", "t", "percentile"], "eval/accuracy at step 50"),
    (["t"] * 4, "a much longer name of what is plotted: eval/some_long_metric_name at step 1000"),
])
def test_final_metric_title_fits_the_figure(methods, title):
    finals, intervals = finals_and_intervals(methods)
    figure = plots.final_metric_figure(finals, intervals, "eval/accuracy", title=title)
    text = title_of(figure)
    assert fits(figure, text)
    renderer = figure.canvas.get_renderer()
    axes = figure.axes[0]
    # the title sits above the axes (tick labels included), which also fit the figure
    assert text.get_window_extent(renderer).y0 >= axes.get_tightbbox(renderer).y1 - 1
    assert axes.get_tightbbox(renderer).x0 >= 0
    assert fits(figure, axes.xaxis.label) and axes.xaxis.label.get_text() == "eval/accuracy"
    plt.close(figure)


def test_long_titles_wrap_and_the_figure_grows():
    finals, intervals = finals_and_intervals(["percentile"] * 4)
    short = plots.final_metric_figure(finals, intervals, "eval/accuracy")
    long = plots.final_metric_figure(finals, intervals, "eval/accuracy",
                                     title="a much longer name of what is plotted: "
                                           "eval/some_long_metric_name at step 1000")
    assert "\n" not in short.get_suptitle() and long.get_suptitle().count("\n") >= 1
    assert long.get_size_inches()[1] > short.get_size_inches()[1]
    assert fits(long, title_of(long))
    plt.close(short)
    plt.close(long)


def test_a_word_wider_than_the_figure_shrinks_the_font():
    figure, _ = plt.subplots(figsize=(3, 2))
    text = plots.fit_title(figure, "x" * 120)
    assert text.get_fontsize() < 10 and fits(figure, text)
    plt.close(figure)


def test_learning_curves_title_fits():
    metric = "eval/a_rather_long_metric_name_for_a_plot_of_learning_curves"
    frame = pd.DataFrame([{"arm": arm, "seed": s, "step": step, metric: 0.5 + step / 100}
                          for arm in ARMS for s in range(3) for step in (0, 10, 20)])
    figure = plots.learning_curves_figure(frame, metric)
    assert fits(figure, title_of(figure))
    plt.close(figure)


def test_interval_name_says_which_intervals_are_drawn():
    def named(*methods):
        return plots.interval_name(Interval(0, 0, 0, 0.95, m) for m in methods)

    assert named("percentile", "percentile") == "95% percentile bootstrap CI"
    assert named("t", "t") == "95% t-interval"
    assert named("t", "percentile") == ("95% CI (percentile bootstrap; t-interval for arms with "
                                        "few seeds)")
    assert plots.interval_name([]) == "CI"


# arm labels of 80 characters: a reward ablation's levels crossed with other factors
LONG = [f"task.rewards=correct+0.1*format,loss.aggregation={agg},optim.lr={lr}".ljust(80, "x")
        for agg in ("token_mean", "seq_mean_token_sum_norm") for lr in ("3e-4", "1e-4")]


def inside(figure, box) -> bool:
    outer = figure.bbox
    return box.x0 >= outer.x0 - 0.5 and box.x1 <= outer.x1 + 0.5 and box.y0 >= outer.y0 - 0.5 and box.y1 <= outer.y1 + 0.5


@pytest.mark.parametrize("arms", [LONG, LONG[:1], [f"{i}:{a[:38]}" for i, a in enumerate(LONG)]])
def test_final_metric_labels_of_any_length_fit_beside_the_axes(arms):
    rng = np.random.default_rng(0)
    finals = pd.DataFrame([{"arm": arm, "seed": s, "value": 0.5 + 0.01 * i + rng.normal(0, 0.01)}
                           for i, arm in enumerate(arms) for s in range(3)])
    intervals = {arm: Interval(0.5 + 0.01 * i, 0.48, 0.52 + 0.01 * i, 0.95, "t") for i, arm in enumerate(arms)}
    figure = plots.final_metric_figure(finals, intervals, "eval/accuracy")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = figure.axes[0]
    ticks = [t for t in axes.get_yticklabels() if t.get_text()]
    assert [t.get_text().replace("\n", "") for t in ticks] == sorted(arms)  # every character shown
    boxes = [t.get_window_extent(renderer) for t in ticks]
    assert all(inside(figure, box) for box in boxes)
    assert all(a.y1 <= b.y0 + 1 or b.y1 <= a.y0 + 1 for a, b in zip(boxes, boxes[1:]))  # no two overlap
    assert axes.get_window_extent(renderer).width >= 0.4 * figure.bbox.width  # the axes keep room
    assert fits(figure, title_of(figure))
    plt.close(figure)


def test_long_labels_wrap_where_the_parts_of_an_arm_label_meet():
    figure = plt.figure(figsize=(6.4, 4))
    wrapped = plots.wrap_label(figure, LONG[0], 0.42 * figure.bbox.width)
    assert wrapped.replace("\n", "") == LONG[0] and wrapped.count("\n") >= 1
    assert wrapped.split("\n")[0].endswith(",")  # broken after a comma, not inside a key=value part
    plt.close(figure)


@pytest.mark.parametrize("arms", [LONG, ARMS, ["a", "b"]])
def test_learning_curves_legend_sits_outside_the_axes_and_fits(arms, recwarn):
    metric = "eval/accuracy"
    frame = pd.DataFrame([{"arm": arm, "seed": s, "step": step, metric: 0.5 + i * 0.01 + step / 100}
                          for i, arm in enumerate(arms) for s in range(3) for step in (0, 10, 20)])
    figure = plots.learning_curves_figure(frame, metric)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    (legend,) = figure.legends
    box = legend.get_window_extent(renderer)
    assert inside(figure, box)
    assert all(inside(figure, text.get_window_extent(renderer)) for text in legend.get_texts())
    assert [t.get_text().replace("\n", "") for t in legend.get_texts()] == sorted(arms)
    axes = figure.axes[0]
    assert box.y1 <= axes.get_tightbbox(renderer).y0 + 1  # below the axes and their labels, not over the curves
    assert axes.get_window_extent(renderer).height >= 2.0 * figure.dpi  # not squeezed to a strip
    assert fits(figure, title_of(figure))
    assert not [w for w in recwarn if "ight layout" in str(w.message)]
    plt.close(figure)
