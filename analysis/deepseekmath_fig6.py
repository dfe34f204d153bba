"""DeepSeekMath Fig. 6 at small scale: GRPO with a learned reward model and 0, 1 or 2 iterations of
Algorithm 1 (reference reset + reward-model retraining with 10% replay) at the same budget; runs the
grid experiments/deepseekmath_fig6.yaml (what MLflow does not hold yet) and writes
results/deepseekmath_fig6/ (claims, CIs, Holm-corrected tests, verdicts, learning curves).

Besides the grid file's claims (iterating beats not iterating), the report gets one the arm
comparisons cannot state: most of the gain comes in the first iteration, i.e. per seed
(acc[1 refresh] - acc[none]) > (acc[2 refreshes] - acc[1 refresh]), a paired t test over seeds.
It also tabulates the reward model's held-out pair accuracy on the current policy's samples before
and after each retraining (`reward_model/before_pair_accuracy`, `reward_model/heldout_pair_accuracy`).

    python analysis/deepseekmath_fig6.py [--jobs 2] [--seeds 0 1 2 3 4] [--set KEY=VALUE ...] [--report-only]
    python analysis/deepseekmath_fig6.py --quick     # tiny model, 12 steps, 2 seeds: the whole path in minutes
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduction import PairedClaim, append_section, claims_markdown, decide, grid_spec, parser, run_and_report  # noqa: E402

GRID = Path("experiments/deepseekmath_fig6.yaml")
QUICK = {"reward.model": {"pairs": "policy", "prompts": 32, "eval_prompts": 16, "batch_size": 16, "lr": 1.0e-3,
                          "steps": 20},
         "train.steps": 12, "train.eval_every": 4}
ARMS = {1: "iterative.iterations=1", 2: "iterative.iterations=2", 3: "iterative.iterations=3"}


def final(frame, arm: str, metric: str = "eval/accuracy") -> np.ndarray:
    rows = frame[frame["arm"] == arm].dropna(subset=[metric])
    return rows.sort_values("step").groupby("seed")[metric].last().sort_index().to_numpy(dtype=float)


def retraining_table(frame) -> str:
    """The reward model's held-out pair accuracy on the current policy's samples, before and after each
    retraining, mean over seeds."""
    metrics = ("reward_model/before_pair_accuracy", "reward_model/heldout_pair_accuracy", "reward_model/new_pairs",
               "reward_model/replayed_frac")
    if metrics[0] not in frame:
        return "No retraining was logged."
    rows = ["| arm | at step | pair accuracy before | after | new pairs | replayed share |", "|---|---|---|---|---|---|"]
    done = frame.dropna(subset=[metrics[0]])
    for (arm, step), part in done.groupby(["arm", "step"]):
        cells = [f"{part[m].mean():.3f}" if m != "reward_model/new_pairs" else f"{part[m].mean():.0f}" for m in metrics]
        rows.append(f"| {arm} | {int(step) - 1} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__, GRID).parse_args(argv)
    spec, path = grid_spec(args, QUICK)
    report, frame = run_and_report(args, spec, path, "analysis/deepseekmath_fig6.py", argv)
    none, one, two = (final(frame, ARMS[i]) for i in (1, 2, 3))
    claims = []
    if len(none) == len(one) == len(two) and len(none) > 0:
        gain_first, gain_second = one - none, two - one
        claims.append(PairedClaim(
            "Most of the gain comes in the first iteration: (1 refresh - none) > (2 refreshes - 1 refresh)",
            gain_first, gain_second,
            note=f"mean gain of the first refresh {gain_first.mean():+.3f}, of the second {gain_second.mean():+.3f}"))
        decide(claims)
    body = (claims_markdown(claims) if claims else "Not every arm has the same seeds; no paired comparison.")
    body += ("\n\nThe gains are those of held-out eval/accuracy at the last evaluation, per seed (every arm ran the "
             "same seeds from the same warm start and the same first reward model).\n\n### The reward model at each "
             "retraining\n\nPair accuracy on held-out prompts' pairs sampled from the current policy (the pairs the "
             "reward model is about to be judged on), with the model before and after its retraining:\n\n"
             + retraining_table(frame))
    append_section(report.path, "Does most of the gain come in the first iteration?", body)
    print(report.path.read_text())
    print(f"written: {report.path}", file=sys.stderr)


if __name__ == "__main__":
    main()
