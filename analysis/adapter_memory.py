"""Peak memory of one GRPO step with full fine-tuning, with LoRA adapters, and with LoRA plus
activation checkpointing, on one model size: each in a process of its own (`grpo-lab bench`), so
each peak resident set is that step's alone.

    python analysis/adapter_memory.py [--hidden 1024 --layers 8] [--out results/memory]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARMS = {"full fine-tuning": [], "LoRA (r 8)": ["--adapter", "lora"],
        "LoRA + activation checkpointing": ["--adapter", "lora", "--activation-checkpointing"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--gens", type=int, default=8)
    parser.add_argument("--max-new", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "memory")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    rows = []
    for arm, flags in ARMS.items():
        cmd = [sys.executable, "-m", "grpo_lab.cli", "bench", "--hidden", str(args.hidden), "--layers",
               str(args.layers), "--prompts", str(args.prompts), "--gens", str(args.gens), "--max-new",
               str(args.max_new), "--steps", "1", "--warmup", "1", "--fixed-length", "--threads", "2", *flags]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        record = json.loads(out)
        rows.append({"arm": arm, "command": " ".join(["grpo-lab", *cmd[3:]]), "date": time.strftime("%Y-%m-%d"),
                     "commit": commit.strip(), **{k: record[k] for k in ("params", "trained_params", "peak_mem_mib",
                                                                      "sec_per_step", "threads")}})
        print(json.dumps(rows[-1]))
    with open(args.out / f"adapters_{time.strftime('%Y-%m-%d')}.jsonl", "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    full = rows[0]["peak_mem_mib"]
    print("\n| arm | trained parameters | peak RSS (MiB) | vs full | s/step |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arm']} | {r['trained_params']:,} of {r['params']:,} | {r['peak_mem_mib']:.0f} | "
              f"{r['peak_mem_mib'] / full:.2f}x | {r['sec_per_step']:.2f} |")


if __name__ == "__main__":
    main()
