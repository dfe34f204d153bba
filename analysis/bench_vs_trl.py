"""Seconds per GRPO step: grpo-lab against TRL's GRPOTrainer, side by side, alternating.

Both sides get the same Qwen2 config (built by `grpo_lab.bench.bench_config`, the chain task's
character vocabulary), the same batch (prompts x gens completions, one optimizer update per step,
mu = 1), the same lengths (TRL's `generation_kwargs` min_new_tokens = max_new against our
`--fixed-length`), beta 0.04 with a reference model, the same learning rate, fp32 on the CPU.
TRL runs with gradient checkpointing off (its default is on, which costs it a forward pass);
pass --trl-defaults to keep TRL's default. Each side runs in its own process, in rounds that
alternate ours and TRL's, so that load from other work on the machine hits both; each round
reports the median seconds per step after the warm-up steps, measured the same way on both
sides (from the end of one optimizer step to the end of the next).

TRL is not a dependency of grpo_lab. Install it beside grpo_lab in a separate environment:
    python3 -m venv /tmp/trlvenv && /tmp/trlvenv/bin/pip install torch==2.13.0 trl==1.16.0 -e .
    /tmp/trlvenv/bin/python analysis/bench_vs_trl.py --hidden 128 --layers 4 --max-new 8 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time


def trl_bench(*, hidden: int, layers: int, prompts: int, gens: int, max_new: int, steps: int, warmup: int,
              lr: float, beta: float, seed: int, threads: int, gradient_checkpointing: bool) -> dict:
    """Median seconds per step of TRL's GRPOTrainer on the bench model (run in a worker process)."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from grpo_lab.bench import StepClock, bench_config
    from grpo_lab.models import build_policy
    from grpo_lab.runs.train import build_task_for, quiet

    quiet()
    if threads:
        torch.set_num_threads(threads)
    config = bench_config(hidden=hidden, layers=layers, prompts=prompts, gens=gens, max_new=max_new, lr=lr,
                          steps=steps, warmup=warmup, seed=seed, overrides={"loss": {"kl_beta": beta}})
    task = build_task_for(config)
    torch.manual_seed(seed)
    policy, tokenizer = build_policy(config.model, task.alphabet)
    folder = tempfile.mkdtemp(prefix="trl_bench_")
    policy.save_pretrained(folder)  # TRL builds its reference model from the policy's folder
    tokenizer.save_pretrained(folder)
    examples = task.train_examples()[: prompts * (warmup + steps + 1)]
    dataset = Dataset.from_dict({"prompt": [e.prompt for e in examples], "answer": [e.answer for e in examples]})

    def reward(completions, answer, **kwargs):
        return [float(task.extract_answer(c) == a) for c, a in zip(completions, answer)]

    clock = StepClock()

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.tick()

    args = GRPOConfig(
        output_dir=folder, per_device_train_batch_size=prompts * gens, num_generations=gens,
        max_completion_length=max_new, generation_kwargs={"min_new_tokens": max_new}, beta=beta,
        learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        num_iterations=1, max_steps=warmup + steps, logging_steps=1, report_to="none", save_strategy="no",
        use_cpu=True, bf16=False, gradient_checkpointing=gradient_checkpointing, seed=seed, temperature=1.0,
        top_p=1.0, dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=folder, reward_funcs=reward, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[Clock()])
    trainer.train()
    times = clock.times(warmup)
    return {"side": "trl", "sec_per_step": statistics.median(times), "times": times,
            "cpu_sec_per_step": statistics.median(clock.times(warmup, cpu=True)),
            "gradient_checkpointing": gradient_checkpointing}


def ours(args) -> dict:
    cmd = [sys.executable, "-m", "grpo_lab.cli", "bench", "--hidden", str(args.hidden), "--layers", str(args.layers),
           "--prompts", str(args.prompts), "--gens", str(args.gens), "--max-new", str(args.max_new),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--seed", str(args.seed), "--fixed-length", "--device", "cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    record = json.loads(out.strip().splitlines()[-1])
    record["side"] = "grpo_lab"
    return record


def theirs(args) -> dict:
    cmd = [sys.executable, __file__, "--worker", *sys.argv[1:]]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the TRL worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--gens", type=int, default=8)
    p.add_argument("--max-new", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (ours, then TRL's)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads on both sides (0: torch's default)")
    p.add_argument("--trl-defaults", action="store_true", help="keep TRL's default gradient checkpointing")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        import trl  # noqa: F401
    except ImportError:
        print("TRL is not installed in this environment; see the module docstring for a separate one.")
        return 1
    if args.worker:
        record = trl_bench(hidden=args.hidden, layers=args.layers, prompts=args.prompts, gens=args.gens,
                           max_new=args.max_new, steps=args.steps, warmup=args.warmup, lr=args.lr, beta=args.beta,
                           seed=args.seed, threads=args.threads, gradient_checkpointing=args.trl_defaults)
        print(json.dumps(record))
        return 0
    rows = []
    for r in range(args.rounds):
        a, b = ours(args), theirs(args)
        rows.append((a["sec_per_step"], b["sec_per_step"], a["cpu_sec_per_step"], b["cpu_sec_per_step"]))
        print(f"round {r + 1}: grpo_lab {a['sec_per_step']:.4f} s/step (cpu {a['cpu_sec_per_step']:.4f})  "
              f"TRL {b['sec_per_step']:.4f} s/step (cpu {b['cpu_sec_per_step']:.4f})  "
              f"ratio {b['sec_per_step'] / a['sec_per_step']:.2f}x   split {json.dumps(a['split_s'])}", flush=True)
    med = [statistics.median(row[i] for row in rows) for i in range(4)]
    print(json.dumps({"hidden": args.hidden, "layers": args.layers, "prompts": args.prompts, "gens": args.gens,
                      "max_new": args.max_new, "threads": args.threads, "grpo_lab_s": med[0], "trl_s": med[1],
                      "ratio": med[1] / med[0], "ratio_per_round": [row[1] / row[0] for row in rows],
                      "grpo_lab_cpu_s": med[2], "trl_cpu_s": med[3], "cpu_ratio": med[3] / med[2],
                      "trl_gradient_checkpointing": args.trl_defaults,
                      "when": time.strftime("%Y-%m-%d %H:%M")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
