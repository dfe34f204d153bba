"""Peak memory of PPO's four models (actor, critic, reference, reward model) against GRPO's three
(actor, reference, reward model), CPU resident set, one fresh process per method.

A reward model (a copy of the policy's trunk with a scalar head, as a reward_model run makes) is
saved once; then each method runs `grpo-lab bench`'s step (the method's own module, driven by a
Lightning Trainer) with `reward.model` pointing at it: 1 warm-up step (it creates the AdamW
moments) and the measured steps, the reference loaded (beta 0.04), every completion exactly
`--max-new` tokens. A thread samples the resident set every 5 ms and files each sample under the
phase the step is in (`memory_phases.py`; `shape` is scoring with the reward model). One JSON line
per method goes to --out, and a table to stdout.

    python analysis/memory_reward_model.py --hidden 512 --layers 8 --out results/memory/reward_model_cpu.jsonl
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one(args) -> dict:
    """This process: one method's step with the reward model in `args.folder`."""
    sys.path.insert(0, str(HERE))
    from memory_phases import PhaseMeter

    from grpo_lab.bench import bench_config, run_bench
    from grpo_lab.engine import Engine

    meter = PhaseMeter()
    for name in ("generate", "ref_logprobs", "update", "values", "shape"):
        meter.wrap(Engine, name)
    overrides = {"optim": {"micro_batch_size": args.micro_batch}}
    if args.folder:
        overrides["reward"] = {"model": args.folder}
    config = bench_config(hidden=args.hidden, layers=args.layers, prompts=args.prompts, gens=args.gens,
                          max_new=args.max_new, method=args.method, steps=args.steps, warmup=1, overrides=overrides)
    record = run_bench(config, warmup=1, fixed_length=True, threads=args.threads)
    return {"method": args.method, "reward_model": bool(args.folder), "params": record["params"],
            "hidden": args.hidden, "layers": args.layers, "prompts": args.prompts, "gens": args.gens,
            "max_new": args.max_new, "micro_batch": args.micro_batch, "sec_per_step": round(record["sec_per_step"], 2),
            "peak_rss_mib": round(record["peak_mem_mib"]), "phase_peak_mib": {k: round(v) for k, v in meter.peaks.items()},
            "torch": record["torch"], "threads": record["threads"]}


def save_reward_model(args, folder: Path) -> None:
    """A reward model on a copy of a freshly built policy's trunk, saved as the runs save theirs."""
    import torch

    from grpo_lab.bench import bench_config
    from grpo_lab.models import build_policy
    from grpo_lab.models.reward import RewardModel
    from grpo_lab.runs.train import build_task_for

    config = bench_config(hidden=args.hidden, layers=args.layers, max_new=args.max_new)
    torch.manual_seed(0)
    policy, tokenizer = build_policy(config.model, build_task_for(config).alphabet)
    RewardModel.from_policy(policy).save_pretrained(folder, tokenizer)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--gens", type=int, default=8)
    p.add_argument("--max-new", type=int, default=8)
    p.add_argument("--micro-batch", type=int, default=0)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--without", action="store_true", help="also run both methods without the reward model")
    p.add_argument("--out", type=Path, default=None, help="append the JSON lines here")
    p.add_argument("--method", default=None, help=argparse.SUPPRESS)  # one child process
    p.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.method is not None:
        print(json.dumps(one(args)))
        return

    flags = ["--hidden", str(args.hidden), "--layers", str(args.layers), "--prompts", str(args.prompts),
             "--gens", str(args.gens), "--max-new", str(args.max_new), "--micro-batch", str(args.micro_batch),
             "--steps", str(args.steps), "--threads", str(args.threads)]
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "reward_model"
        save_reward_model(args, folder)
        runs = [("grpo", str(folder)), ("ppo", str(folder))] + ([("grpo", ""), ("ppo", "")] if args.without else [])
        for method, reward in runs:
            out = subprocess.run([sys.executable, __file__, *flags, "--method", method, "--folder", reward],
                                 capture_output=True, text=True, check=True)
            records.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    print("| method | models | peak RSS | scoring with the reward model | update | s/step |")
    print("|---|---|---|---|---|---|")
    for r in records:
        models = ("actor, critic, reference" if r["method"] == "ppo" else "actor, reference") + (
            ", reward model" if r["reward_model"] else "")
        phases = r["phase_peak_mib"]
        print(f"| {r['method']} | {models} | {r['peak_rss_mib']} MiB | {phases.get('shape', '-')} MiB | "
              f"{phases.get('update', '-')} MiB | {r['sec_per_step']} |")
    grpo, ppo = (next(r for r in records if r["method"] == m and r["reward_model"]) for m in ("grpo", "ppo"))
    print(f"\nGRPO / PPO peak RSS with the reward model: {grpo['peak_rss_mib'] / ppo['peak_rss_mib']:.3f} "
          f"({records[0]['params']} policy parameters)")


if __name__ == "__main__":
    main()
