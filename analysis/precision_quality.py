"""Learning quality by precision: float32 vs bf16-mixed vs a bf16 sampler with and without a
truncated importance correction, the default GRPO config, 5 seeds. Runs the grid
experiments/precision_quality.yaml (what MLflow does not hold yet) and writes results/precision/:
grpo_lab's report (final held-out accuracy per arm with CIs; the non-inferiority claims "not worse
than float32 by more than 0.02", decided by the CI of the paired difference), then

- the sampler/learner mismatch of the bf16-sampler arms over training (the k3 KL between the
  sampler's and the learner's log-probs, the mean and largest importance ratio, the share of
  tokens beyond the cap, the effective sample size), the mismatch TIS is made for;
- the step time of each arm as the runs logged it (two runs at once, one thread each: a rough
  figure; `analysis/bench_precision.py` measures speed side by side), and the side-by-side
  benchmark's ratio from results/precision/bench.jsonl when it is there.

    python analysis/precision_quality.py [--jobs 2] [--seeds 0 1 2 3 4] [--report-only]
    python analysis/precision_quality.py --quick     # tiny model, 30 steps, 2 seeds: the whole path in minutes
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduction import append_section, grid_spec, parser, run_and_report  # noqa: E402

GRID = Path("experiments/precision_quality.yaml")
QUICK = {"train.steps": 30, "train.eval_every": 10}
MISMATCH = {"offpolicy/kl_behaviour": "k3 KL, sampler to learner", "offpolicy/ratio_mean": "mean ratio",
            "offpolicy/ratio_max": "largest ratio", "offpolicy/beyond_cap_frac": "share beyond cap",
            "offpolicy/ess": "ESS"}


def mismatch_table(frame) -> str:
    """Per arm with a bf16 sampler: each mismatch metric's mean over steps and seeds (first and last 20%)."""
    rows = ["| arm | " + " | ".join(f"{label} (first 20% / last 20% of steps)" for label in MISMATCH.values()) + " |",
            "|---|" + "---|" * len(MISMATCH)]
    for arm in sorted(frame["arm"].unique()):
        part = frame[frame["arm"] == arm]
        if "offpolicy/kl_behaviour" not in part or part["offpolicy/kl_behaviour"].isna().all():
            continue
        last = part["step"].max()
        early, late = part[part["step"] <= 0.2 * last], part[part["step"] > 0.8 * last]
        cells = [f"{early[k].mean():.3g} / {late[k].mean():.3g}" for k in MISMATCH]
        rows.append(f"| `{arm}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def step_times(frame) -> str:
    rows = ["| arm | median s/step as logged | gen / logprob / update s |", "|---|---|---|"]
    for arm in sorted(frame["arm"].unique()):
        part = frame[frame["arm"] == arm]
        split = " / ".join(f"{part[f'perf/{k}_s'].median():.3f}" for k in ("gen", "logprob", "update"))
        rows.append(f"| `{arm}` | {part['perf/step_s'].median():.3f} | {split} |")
    return "\n".join(rows)


def bench_summary(path: Path) -> str:
    """The side-by-side benchmark's medians and per-round ratios, per model size."""
    if not path.exists():
        return "No side-by-side benchmark yet: run `python analysis/bench_precision.py --out results/precision/bench.jsonl`."
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = []
    for size in sorted({(r["hidden"], r["layers"], r["prompts"]) for r in records}):
        these = [r for r in records if (r["hidden"], r["layers"], r["prompts"]) == size]
        arms = list(dict.fromkeys(r["arm"] for r in these))
        by = {a: {(r["date"], r["round"]): r["cpu_sec_per_step"] for r in these if r["arm"] == a} for a in arms}
        base = arms[0]
        parts = []
        for arm in arms:
            ratios = [by[base][k] / v for k, v in by[arm].items() if k in by[base]]
            parts.append(f"`{arm}` {statistics.median(by[arm].values()):.3f} CPU s/step"
                         + ("" if arm == base else f" ({statistics.median(ratios):.2f}x {base}, rounds "
                                                   f"{min(ratios):.2f}-{max(ratios):.2f})"))
        r0 = these[0]
        out.append(f"- hidden {size[0]} x {size[1]} layers, {size[2]} x {r0['gens']} x {r0['max_new']} tokens, "
                   f"{r0['threads']} thread, {len(by[base])} rounds: " + "; ".join(parts))
    return "\n".join(out)


def decision(results) -> str:
    """What the verdict of "bf16-mixed is not worse than float32" means for `train.precision: auto`."""
    from grpo_lab.config.precision import QUALITY_CHECKED, cpu_has_bf16

    mixed = next((r for r in results if r.claim.margin is not None and "bf16-mixed" in r.claim.better
                  and "sampler_dtype=float32" in r.claim.better), None)
    if mixed is None:
        return "The grid holds no bf16-mixed against float32 claim."
    passed = mixed.verdict == "holds"
    listed = "bf16-mixed" in QUALITY_CHECKED
    lines = [f"bf16-mixed against float32: **{mixed.verdict}** ({mixed.reason}).", ""]
    if passed and listed:
        lines.append("So `train.precision: auto` (the default) runs bf16-mixed where the hardware computes in bf16 "
                     f"(this machine: {'yes' if cpu_has_bf16() else 'no'}), and float32 elsewhere.")
    elif passed:
        lines.append("bf16-mixed passed, but `grpo_lab.config.precision.QUALITY_CHECKED` does not list it: "
                     "`auto` still picks float32.")
    else:
        lines.append("bf16-mixed did not pass" + (", yet `QUALITY_CHECKED` lists it: take it out, so that `auto` "
                                                  "picks float32." if listed else ": `auto` picks float32."))
    lines += ["", "Every claim's verdict:", ""]
    lines += [f"- {r.claim.text}: **{r.verdict}**" for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__, GRID).parse_args(argv)
    spec, path = grid_spec(args, QUICK)
    report, frame = run_and_report(args, spec, path, "analysis/precision_quality.py", argv)
    append_section(report.path, "Sampler/learner mismatch of the bf16 sampler",
                   "Measured on every step's batch, the learner's float32-weight log-probs (in bf16-mixed) "
                   "against the bf16 sampler's:\n\n" + mismatch_table(frame))
    append_section(report.path, "Speed",
                   "Side by side (`python analysis/bench_precision.py`, fresh process per run, alternating):\n\n"
                   + bench_summary(Path("results/precision/bench.jsonl"))
                   + "\n\nAs the grid's runs logged it (two runs at once, one thread each; rough):\n\n"
                   + step_times(frame))
    append_section(report.path, "What it decides", decision(report.analysis.results))
    print(report.path.read_text())
    print(f"written: {report.path}", file=sys.stderr)


if __name__ == "__main__":
    main()
