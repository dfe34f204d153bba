"""The first hour's timings: the demo alone and beside a second grpo-lab process, and a small grid
with --jobs 1 against --jobs 2, each from a fresh workspace (nothing cached), on this machine.

    python analysis/first_hour.py [--what demo grid] [--out results/first_hour]

Each measurement runs the real command (`grpo-lab demo`, `grpo-lab grid`) as a subprocess and
takes its wall time; the second process beside the demo is a `grpo-lab train` of the default
config in a workspace of its own, started first and killed when the demo ends. Threads are left to
grpo-lab's default (each computing process takes its share of the cores). One JSON line per
measurement is appended to OUT/timings.jsonl, with the demo's before/after numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRID = """name: first_hour_grid
base: {base}
set: {{train.steps: 150, train.eval_every: 50, train.eval_prompts: 128}}
factors:
  loss.aggregation: [seq_mean_token_mean, token_mean]
seeds: 2
"""


def grpo_lab(*args: str) -> list[str]:
    return [sys.executable, "-m", "grpo_lab.cli", *args]


def timed(cmd: list[str], env: dict, cwd: Path, log: Path) -> tuple[float, str]:
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=out, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return seconds, proc.stdout


def fresh_env(workspace: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["GRPO_LAB_WORKSPACE"] = str(workspace)
    return env


def demo_numbers(stdout: str) -> dict:
    """The before/after rows of the demo's GRPO table."""
    out = {}
    for key in ("eval/accuracy", "eval/greedy_accuracy"):
        m = re.search(rf"\| {re.escape(key)} \| ([0-9.]+) \| ([0-9.]+) \|", stdout)
        if m:
            out[key] = [float(m.group(1)), float(m.group(2))]
    m = re.search(r"demo: (\d+) s", stdout)
    if m:
        out["demo_reported_s"] = int(m.group(1))
    return out


def measure_demo(tmp: Path, beside: bool) -> dict:
    work = tmp / ("demo_beside" if beside else "demo_alone")
    work.mkdir()
    other = None
    if beside:  # a second grpo-lab process, computing for as long as the demo runs
        other = subprocess.Popen(grpo_lab("train", str(ROOT / "experiments" / "grpo_chain.yaml"), "--no-progress",
                                          "--set", "train.steps=100000"),
                                 env=fresh_env(tmp / "other_ws"), cwd=tmp, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        time.sleep(5)
    try:
        seconds, stdout = timed(grpo_lab("demo", "--no-progress"), fresh_env(work / "ws"), work, work / "demo.log")
    finally:
        if other is not None:
            other.kill()
            other.wait()
    return {"what": "demo", "beside_another": beside, "wall_s": round(seconds, 1), **demo_numbers(stdout)}


def measure_grid(tmp: Path, jobs: int) -> dict:
    work = tmp / f"grid_jobs{jobs}"
    work.mkdir()
    grid = work / "grid.yaml"
    grid.write_text(GRID.format(base=ROOT / "experiments" / "grpo_chain.yaml"))
    env = fresh_env(work / "ws")
    # the shared warm start first, so both measurements time the grid's runs alone
    warm = work / "warm.yaml"
    warm.write_text(GRID.format(base=ROOT / "experiments" / "grpo_chain.yaml").replace("train.steps: 150", "train.steps: 1")
                    .replace("first_hour_grid", "first_hour_warm").replace("seeds: 2", "seeds: [0]")
                    .replace("[seq_mean_token_mean, token_mean]", "[seq_mean_token_mean]"))
    timed(grpo_lab("grid", str(warm), "--no-progress"), env, work, work / "warm.log")
    seconds, _ = timed(grpo_lab("grid", str(grid), "--jobs", str(jobs), "--no-progress"), env, work, work / "grid.log")
    return {"what": "grid", "jobs": jobs, "runs": 4, "steps": 150, "wall_s": round(seconds, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", nargs="+", default=["demo", "grid"], choices=["demo", "grid"])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "first_hour")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    stamp = {"date": time.strftime("%Y-%m-%d"), "commit": commit.strip(), "cores": len(os.sched_getaffinity(0)),
             "machine": platform.processor() or platform.machine()}
    tmp = Path(tempfile.mkdtemp(prefix="first_hour_"))
    records = []
    try:
        if "demo" in args.what:
            records += [measure_demo(tmp, beside=False), measure_demo(tmp, beside=True)]
        if "grid" in args.what:
            records += [measure_grid(tmp, jobs=1), measure_grid(tmp, jobs=2)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(args.out / "timings.jsonl", "a") as f:
        for r in records:
            f.write(json.dumps({**stamp, **r}) + "\n")
            print(json.dumps(r))
    demos = {r["beside_another"]: r["wall_s"] for r in records if r["what"] == "demo"}
    grids = {r["jobs"]: r["wall_s"] for r in records if r["what"] == "grid"}
    if len(demos) == 2:
        print(f"demo beside another grpo-lab process / alone: {demos[True] / demos[False]:.2f}x")
    if len(grids) == 2:
        print(f"grid --jobs 1 / --jobs 2: {grids[1] / grids[2]:.2f}x")


if __name__ == "__main__":
    main()
