"""The GRPO step in bf16-mixed against float32, side by side: `grpo-lab bench` alternating between
the precisions (A B A B ...), each round in a fresh process, one thread each, at the default size
(hidden 128 x 2 layers, 32 prompts x 8 samples x 16 tokens) unless told otherwise.

Prints one JSON line per run and, at the end, per precision the median CPU seconds per step and
each round's ratio against the first precision; `--out FILE` appends the lines to FILE.

    python analysis/bench_precision.py [--rounds 5] [--precisions 32-true bf16-mixed] [--out results/precision/bench.jsonl]
    python analysis/bench_precision.py --hidden 512 --layers 8 --prompts 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def bench_once(args, precision: str, dtype: str) -> dict:
    cmd = [sys.executable, "-m", "grpo_lab.cli", "bench", "--hidden", str(args.hidden), "--layers", str(args.layers),
           "--prompts", str(args.prompts), "--gens", str(args.gens), "--max-new", str(args.max_new),
           "--threads", str(args.threads), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--precision", precision, "--dtype", dtype, "--fixed-length"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"],
                   help="the first is the reference of the ratios; 'bf16-weights' is the whole model in bf16")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--gens", type=int, default=8)
    p.add_argument("--max-new", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="append the JSON lines to this file")
    args = p.parse_args(argv)
    times: dict[str, list[float]] = {name: [] for name in args.precisions}
    lines = []
    for round_ in range(args.rounds):
        for name in args.precisions:
            precision, dtype = ("32-true", "bfloat16") if name == "bf16-weights" else (name, "float32")
            record = bench_once(args, precision, dtype)
            record.update({"round": round_, "arm": name, "date": time.strftime("%Y-%m-%d")})
            times[name].append(record["cpu_sec_per_step"])
            lines.append(json.dumps(record))
            print(lines[-1], flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")
    first = args.precisions[0]
    for name in args.precisions:
        ratios = [a / b for a, b in zip(times[first], times[name])]
        print(f"{name}: median {statistics.median(times[name]):.3f} CPU s/step; {first} / {name} per round: "
              f"median {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
