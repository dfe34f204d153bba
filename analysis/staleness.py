"""Run the staleness grid (experiments/staleness.yaml) arm by arm and write results/staleness/README.md.

A plain loop over grpo_lab.runs.run: every arm x seed is one MLflow run tagged grpo_lab.grid,
grpo_lab.arm and grpo_lab.factors; finished runs are kept in results/staleness/runs.jsonl and
skipped on a rerun, so a killed loop resumes by running it again. The table goes to
results/staleness/README.md.

    python analysis/staleness.py [--grid experiments/staleness.yaml] [--out results/staleness] [--shard I/N] [--report-only]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import yaml

from grpo_lab.config import load_config, with_overrides

DIAGNOSTICS = ("offpolicy/kl_behaviour", "offpolicy/ess", "offpolicy/beyond_cap_frac", "actor/clip_frac",
               "offpolicy/staleness_mean")


def arms(grid: dict) -> list[dict]:
    keys = list(grid["factors"])
    return [dict(zip(keys, values)) for values in itertools.product(*(grid["factors"][k] for k in keys))]


def arm_name(factors: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in factors.items())  # the arm tag `grpo-lab grid` writes


def run_grid(grid_path: Path, out: Path, shard: tuple[int, int] = (0, 1)) -> None:
    from grpo_lab.runs import run

    grid = yaml.safe_load(grid_path.read_text())
    base = load_config(grid_path.parent / grid["base"])
    done_path = out / "runs.jsonl"
    done = {(r["arm"], r["seed"]) for r in map(json.loads, done_path.read_text().splitlines())} if done_path.exists() else set()
    todo = [(seed, factors) for seed in grid["seeds"] for factors in arms(grid)]
    for seed, factors in todo[shard[0]::shard[1]]:  # shard i of n: every n-th run, for n parallel processes
        name = arm_name(factors)
        if (name, seed) not in done:
            config = with_overrides(base, **grid.get("set", {}), **factors, seed=seed, name=grid["name"])
            start = time.time()
            result = run(config, progress=False, tags={"grpo_lab.grid": grid["name"], "grpo_lab.arm": name,
                                                       "grpo_lab.factors": json.dumps(factors)})
            train_rows = [r for r in result.history if "offpolicy/ess" in r]
            diag = {k: statistics.fmean(r[k] for r in train_rows if k in r) for k in DIAGNOSTICS
                    if any(k in r for r in train_rows)}
            row = {"arm": name, "seed": seed, "factors": factors, "run_id": result.run_id, "seconds": time.time() - start,
                   "initial": {k: result.initial.get(k) for k in ("eval/accuracy", "eval/greedy_accuracy")},
                   "final": {k: v for k, v in result.metrics.items()}, "diagnostics": diag}
            with done_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name} seed {seed}: accuracy {result.metrics['eval/accuracy']:.3f} ({row['seconds']:.0f} s)", flush=True)


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def report(grid_path: Path, out: Path) -> str:
    grid = yaml.safe_load(grid_path.read_text())
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    lines = ["| staleness s | correction | eval/accuracy (mean ± sd) | per seed | greedy (mean ± sd) | "
             "KL(behav‖learner) | ESS | weight > cap | clip frac |", "|---|---|---|---|---|---|---|---|---|"]
    for factors in arms(grid):
        name = arm_name(factors)
        runs = sorted((r for r in rows if r["arm"] == name), key=lambda r: r["seed"])
        if not runs:
            continue
        acc = [r["final"]["eval/accuracy"] for r in runs]
        greedy = [r["final"]["eval/greedy_accuracy"] for r in runs]
        d = lambda k: statistics.fmean(r["diagnostics"].get(k, float("nan")) for r in runs)  # noqa: E731
        lines.append(f"| {factors['offpolicy.staleness']} | {factors['offpolicy.correction']} | {mean_sd(acc)} | "
                     f"{' '.join(f'{a:.3f}' for a in acc)} | {mean_sd(greedy)} | {max(d('offpolicy/kl_behaviour'), 0.0):.4f} | "
                     f"{d('offpolicy/ess'):.3f} | {d('offpolicy/beyond_cap_frac'):.4f} | {d('actor/clip_frac'):.4f} |")
    initial = {r["seed"]: r["initial"] for r in rows}  # the same warm start, evaluated with each seed's generator
    acc = [initial[s]["eval/accuracy"] for s in sorted(initial)]
    greedy = [initial[s]["eval/greedy_accuracy"] for s in sorted(initial)]
    return "\n".join(lines) + (f"\n\nBefore RL (the shared SFT warm start, seeds {sorted(initial)}): eval/accuracy "
                               f"{mean_sd(acc)} ({' '.join(f'{a:.3f}' for a in acc)}), greedy {mean_sd(greedy)}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("experiments/staleness.yaml"))
    parser.add_argument("--out", type=Path, default=Path("results/staleness"))
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--shard", default="0/1", help="I/N: run every N-th run starting at I (N parallel processes)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        i, n = map(int, args.shard.split("/"))
        run_grid(args.grid, args.out, (i, n))
    table = report(args.grid, args.out)
    grid = yaml.safe_load(args.grid.read_text())
    seconds = [json.loads(line)["seconds"] for line in (args.out / "runs.jsonl").read_text().splitlines()]
    header = (f"# Staleness grid ({args.grid})\n\n"
              f"Written by `python analysis/staleness.py` from `runs.jsonl` (one line per run; MLflow runs tagged "
              f"`grpo_lab.grid={grid['name']}`). Base `{grid['base']}` with {grid['set']}; factors {grid['factors']}; "
              f"seeds {grid['seeds']}. {len(seconds)} runs, {statistics.fmean(seconds):.0f} s each on average.\n\n"
              "eval/accuracy is sampled pass@1 on the held-out prompts after the last step (8 samples per prompt, "
              "temperature 1); diagnostics are averaged over the training steps.\n\n")
    (args.out / "README.md").write_text(header + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
