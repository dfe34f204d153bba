"""Reward over-optimisation at small scale: GRPO against weak learned reward models, the verifier as
the gold reward; runs the grid experiments/reward_overoptimisation.yaml (what MLflow does not hold
yet) and writes results/reward_overoptimisation/: grpo_lab's report (the arms' final held-out
accuracy, CIs, tests) plus, per arm, whether the true reward peaks and falls while the proxy keeps
rising, and true_proxy_vs_kl.png (true and proxy reward against sqrt(KL(pi || pi_init)), the x-axis
of Gao et al. 2210.10760).

The peak is located on the training samples' true reward (rollout/true_reward, the mean over seeds,
smoothed over 10 steps) and tested on the held-out evaluations (eval/accuracy), whose samples are
independent of it, so that picking the peak does not bias the test. Per arm, paired t over seeds,
Holm-adjusted over every claim of this section:

1. the true reward rises: held-out accuracy at the peak > at step 0;
2. then falls: held-out accuracy at the peak > at the end;
3. while the proxy keeps rising: the proxy reward over the last 10% of steps > around the peak.

A peak at the first or the last evaluation makes claim 1 or 2 not hold outright. Gao et al.'s RL
form R(d) = d (alpha - beta log d), d = sqrt(KL), is fitted to the mean true-reward gain for
reference (the d where it peaks is exp(alpha / beta - 1)).

    python analysis/reward_overoptimisation.py [--jobs 2] [--seeds 0 1 2 3 4] [--set KEY=VALUE ...] [--report-only]
    python analysis/reward_overoptimisation.py --quick   # tiny model, 30 steps, 2 seeds: the whole path in minutes
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduction import (  # noqa: E402
    PairedClaim, append_section, claims_markdown, decide, grid_spec, parser, run_and_report, values_at,
)

GRID = Path("experiments/reward_overoptimisation.yaml")
QUICK = {"reward.model": {"pairs": "policy", "prompts": 32, "eval_prompts": 16, "batch_size": 16, "lr": 1.0e-3,
                          "steps": 20},
         "optim.lr": 3.0e-3, "train.steps": 30, "train.eval_every": 5}
QUICK_FACTORS = {"reward.model.prompts": [16, 64]}
TRUE, PROXY, KL, HELD_OUT = "rollout/true_reward", "rollout/proxy_reward", "rollout/kl_initial", "eval/accuracy"
WINDOW = 10  # steps of smoothing


def mean_curve(frame, arm: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, the mean over seeds of `metric` at each step, smoothed by a centred rolling mean)."""
    rows = frame[frame["arm"] == arm].dropna(subset=[metric])
    curve = rows.groupby("step")[metric].mean().sort_index()
    smooth = curve.rolling(WINDOW, center=True, min_periods=1).mean()
    return smooth.index.to_numpy(dtype=int), smooth.to_numpy(dtype=float)


def window_mean(frame, arm: str, metric: str, first: int, last: int) -> np.ndarray:
    """Each seed's mean of `metric` over steps first..last, in seed order."""
    rows = frame[(frame["arm"] == arm) & frame["step"].between(first, last)].dropna(subset=[metric])
    return rows.groupby("seed")[metric].mean().sort_index().to_numpy(dtype=float)


def gao_fit(d: np.ndarray, gain: np.ndarray) -> tuple[float, float]:
    """Least squares of gain / d = alpha - beta log d over d > 0: (alpha, beta)."""
    keep = d > 1e-3
    if keep.sum() < 3:
        return float("nan"), float("nan")
    A = np.stack([np.ones(keep.sum()), -np.log(d[keep])], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(A, gain[keep] / d[keep], rcond=None)
    return float(alpha), float(beta)


def arm_claims(frame, arm: str) -> tuple[list[PairedClaim], dict]:
    steps, true = mean_curve(frame, arm, TRUE)
    evals = sorted(frame[(frame["arm"] == arm)].dropna(subset=[HELD_OUT])["step"].unique())
    peak_step = int(steps[int(np.argmax(true))])
    peak = min(evals, key=lambda s: abs(s - peak_step))  # the evaluation nearest the training-sample peak
    first, end = evals[0], evals[-1]
    at = {s: values_at(frame, arm, HELD_OUT, s) for s in (first, peak, end)}
    start, last = int(steps[0]), int(steps[-1])
    tail = max(1, int(round(0.1 * last)))
    around = (max(start, peak_step - WINDOW // 2), min(last, peak_step + WINDOW // 2))
    proxy_end = window_mean(frame, arm, PROXY, last - tail + 1, last)
    proxy_peak = window_mean(frame, arm, PROXY, *around)
    claims = [
        PairedClaim(f"`{arm}`: the true reward rises (held-out accuracy at the peak, step {peak}, > at step {first})",
                    at[peak], at[first]),
        PairedClaim(f"`{arm}`: then falls (held-out accuracy at the peak, step {peak}, > at the end, step {end})",
                    at[peak], at[end]),
        PairedClaim(f"`{arm}`: while the proxy keeps rising (proxy reward over steps {last - tail + 1}-{last} > "
                    f"around the peak, steps {around[0]}-{around[1]})",
                    proxy_end, proxy_peak),
    ]
    summary = {"peak_step": peak_step, "peak_eval": peak, "first": first, "end": end,
               "held_out": {s: float(v.mean()) for s, v in at.items()},
               "proxy": (float(proxy_peak.mean()), float(proxy_end.mean()))}
    return claims, summary


def degenerate(claims: list[PairedClaim], summary: dict) -> None:
    """A peak at the first (last) evaluation: no rise (no fall) to test."""
    if summary["peak_eval"] == summary["first"]:
        claims[0].verdict, claims[0].reason = "does not hold", "the training samples' true reward was highest at the start"
    if summary["peak_eval"] == summary["end"]:
        claims[1].verdict, claims[1].reason = "does not hold", "the training samples' true reward was highest at the end"


def plot(frame, arms: list[str], path: Path) -> tuple[Path, dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(arms), figsize=(5.5 * len(arms), 4), squeeze=False)
    fits = {}
    for ax, arm in zip(axes[0], arms):
        _, kl = mean_curve(frame, arm, KL)
        _, true = mean_curve(frame, arm, TRUE)
        _, proxy = mean_curve(frame, arm, PROXY)
        d = np.sqrt(np.clip(kl, 0.0, None))
        alpha, beta = gao_fit(d, true - true[0])
        fits[arm] = (alpha, beta, float(np.exp(alpha / beta - 1)) if beta > 0 else float("nan"))
        ax.plot(d, true, color="tab:green", label="true reward (verifier)")
        if np.isfinite(alpha):
            grid = np.linspace(max(d.min(), 1e-3), d.max(), 100)
            ax.plot(grid, true[0] + grid * (alpha - beta * np.log(grid)), color="tab:green", ls=":",
                    label="fit d (alpha - beta log d)")
        ax.set_xlabel("sqrt(KL(pi || pi_init)), nats^0.5")
        ax.set_ylabel("true reward")
        twin = ax.twinx()
        twin.plot(d, proxy, color="tab:purple", label="proxy reward (reward model)")
        twin.set_ylabel("proxy reward")
        ax.set_title(arm, fontsize=8)
        lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(lines, [line.get_label() for line in lines], fontsize=7, loc="lower left")
    fig.suptitle(f"true and proxy reward against KL to the initial policy (mean over seeds, {WINDOW}-step smoothing)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path, fits


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__, GRID).parse_args(argv)
    spec, path = grid_spec(args, QUICK, QUICK_FACTORS)
    report, frame = run_and_report(args, spec, path, "analysis/reward_overoptimisation.py", argv)
    arms = sorted(frame["arm"].unique())
    every, summaries = [], {}
    for arm in arms:
        claims, summaries[arm] = arm_claims(frame, arm)
        every.append(claims)
    decide([c for claims in every for c in claims])
    for claims, arm in zip(every, arms):
        degenerate(claims, summaries[arm])
    figure, fits = plot(frame, arms, report.path.parent / "true_proxy_vs_kl.png")
    lines = []
    for claims, arm in zip(every, arms):
        whole = ("holds" if all(c.verdict == "holds" for c in claims) else
                 "does not hold" if any(c.verdict == "does not hold" for c in claims) else "inconclusive")
        s = summaries[arm]
        alpha, beta, d_star = fits[arm]
        held = ", ".join(f"step {k}: {v:.3f}" for k, v in sorted(s["held_out"].items()))
        lines.append(f"- `{arm}`: **{whole}**. Peak of the training samples' true reward at step {s['peak_step']} "
                     f"(held-out accuracy {held}); proxy reward {s['proxy'][0]:+.3f} around the peak, "
                     f"{s['proxy'][1]:+.3f} at the end. Gao fit of the true-reward gain: alpha {alpha:.3f}, beta "
                     f"{beta:.3f}, peak at sqrt(KL) = {d_star:.2f}.")
    body = ("Per arm, all three must hold for the whole claim to hold:\n\n"
            + claims_markdown([c for claims in every for c in claims])
            + "\n\n" + "\n".join(lines)
            + f"\n\n![true and proxy reward against sqrt(KL)]({figure.name})\n\nEvery seed of an arm scores with the "
              "same reward model (trained once from the shared warm start), so the seeds measure the RL run's "
              "spread, not the reward model's.")
    append_section(report.path, "Does the true reward peak and fall while the proxy keeps rising?", body)
    print(report.path.read_text())
    print(f"written: {report.path}", file=sys.stderr)


if __name__ == "__main__":
    main()
