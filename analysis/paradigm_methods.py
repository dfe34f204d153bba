"""Every method of the paradigm from one YAML and one SFT checkpoint; writes results/methods/README.md.

Arms: sft, rft, online_rft, dpo, ppo, grpo (outcome) and grpo_process (GRPO with process
supervision), each `experiments/paradigm_chain.yaml` with only `method:` changed (and
`advantage.estimator: process` for grpo_process), over seeds. Finished runs are kept in
`<out>/runs.jsonl` and skipped on a rerun. Runs go to MLflow unless `--no-log`; `--jobs N` runs N
arms at once, each in its own process (set train.threads so N x threads fits the cores).

    python analysis/paradigm_methods.py [--seeds 0 1 2] [--jobs 2] [--methods grpo ppo] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ARMS = {
    "sft": {"method": "sft"},
    "rft": {"method": "rft"},
    "online_rft": {"method": "online_rft"},
    "dpo": {"method": "dpo"},
    "ppo": {"method": "ppo"},
    "grpo": {"method": "grpo"},
    "grpo_process": {"method": "grpo", "advantage.estimator": "process"},
}
KEYS = ("eval/accuracy", "eval/greedy_accuracy", "eval/maj_at_8", "eval/pass_at_8")


def run_arm(config_path: str, arm: str, seed: int, sets: list[str], log: bool) -> dict:
    from grpo_lab.config import load_config
    from grpo_lab.runs import run

    overrides = [f"{k}={v}" for k, v in ARMS[arm].items()] + [f"seed={seed}"] + sets
    config = load_config(config_path, overrides)
    start = time.time()
    result = run(config, progress=False, log=log, tags={"grpo_lab.grid": "paradigm_methods", "grpo_lab.arm": arm})
    train_rows = [r for r in result.history if "budget/updates" in r]
    return {"arm": arm, "seed": seed, "run_id": result.run_id, "seconds": time.time() - start,
            "sft_hash": config.sft_hash(), "initial": {k: result.initial.get(k) for k in KEYS},
            "final": {k: result.metrics.get(k) for k in KEYS},
            "budget": {k: train_rows[-1].get(k) for k in ("budget/samples", "budget/updates")} if train_rows else {},
            "last_step": {k: v for k, v in (train_rows[-1] if train_rows else {}).items()
                          if k.startswith(("dpo/", "critic/", "rollout/accuracy", "rft/", "pool/"))}}


def report(rows: list[dict], out: Path, command: str) -> str:
    by_arm: dict[str, list[dict]] = {}
    for row in rows:
        by_arm.setdefault(row["arm"], []).append(row)
    lines = ["| method | seeds | pass@1 (sampled) | per seed | change vs SFT checkpoint | greedy | maj@8 | pass@8 | samples | updates |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda xs: f"{statistics.fmean(xs):.3f} +- {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"  # noqa: E731
    start = {}
    for r in rows:
        start.setdefault(r["seed"], r["initial"])
    lines.insert(2, "| SFT checkpoint (step 0) | {} | {} | {} | | {} | {} | {} | | |".format(
        len(start), fmt([s["eval/accuracy"] for s in start.values()]),
        " ".join(f"{s['eval/accuracy']:.3f}" for _, s in sorted(start.items())), fmt([s["eval/greedy_accuracy"] for s in start.values()]),
        fmt([s["eval/maj_at_8"] for s in start.values()]), fmt([s["eval/pass_at_8"] for s in start.values()])))
    for arm in ARMS:
        runs = sorted(by_arm.get(arm, []), key=lambda r: r["seed"])
        if not runs:
            continue
        acc = [r["final"]["eval/accuracy"] for r in runs]
        delta = [r["final"]["eval/accuracy"] - r["initial"]["eval/accuracy"] for r in runs]
        lines.append("| {} | {} | {} | {} | {:+.3f} ({} of {} seeds up) | {} | {} | {} | {:.0f} | {:.0f} |".format(
            arm, len(runs), fmt(acc), " ".join(f"{a:.3f}" for a in acc), statistics.fmean(delta),
            sum(d > 0 for d in delta), len(delta), fmt([r["final"]["eval/greedy_accuracy"] for r in runs]),
            fmt([r["final"]["eval/maj_at_8"] for r in runs]), fmt([r["final"]["eval/pass_at_8"] for r in runs]),
            runs[0]["budget"].get("budget/samples", 0), runs[0]["budget"].get("budget/updates", 0)))
    table = "\n".join(lines)
    text = (f"# The paradigm's methods on the chain task\n\nOne YAML, one SFT checkpoint, `method:` changed; mean +- sd "
            f"over seeds of the held-out metrics after the last step (256 prompts x 8 samples).\n\n{table}\n\n"
            f"Command:\n\n    {command}\n")
    (out / "README.md").write_text(text)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/paradigm_chain.yaml")
    parser.add_argument("--methods", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--no-log", action="store_true", help="do not write MLflow runs")
    parser.add_argument("--out", type=Path, default=Path("results/methods"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    done_path = args.out / "runs.jsonl"
    rows = [json.loads(line) for line in done_path.read_text().splitlines()] if done_path.exists() else []
    done = {(r["arm"], r["seed"]) for r in rows}
    todo = [(arm, seed) for seed in args.seeds for arm in args.methods if (arm, seed) not in done]
    if not args.report_only and todo:
        from grpo_lab.runs.warm_start import warm_start
        from grpo_lab.config import load_config
        from grpo_lab.runs.train import build_task_for

        arm = todo[0][0]
        config = load_config(args.config, [f"{k}={v}" for k, v in ARMS[arm].items()] + args.set)
        warm_start(config, build_task_for(config), progress=False)  # once, before the workers share it
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_arm, args.config, arm, seed, args.set, not args.no_log) for arm, seed in todo]
            for future in futures:
                row = future.result()
                rows.append(row)
                with done_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{row['arm']} seed {row['seed']}: {row['initial']['eval/accuracy']:.3f} -> "
                      f"{row['final']['eval/accuracy']:.3f} ({row['seconds']:.0f} s)", flush=True)
    command = "python analysis/paradigm_methods.py --seeds " + " ".join(map(str, args.seeds)) + \
        "".join(f" --set {s}" for s in args.set)
    print(report(rows, args.out, command))


if __name__ == "__main__":
    main()
