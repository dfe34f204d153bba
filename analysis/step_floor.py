"""How far a GRPO step is from the time its matrix products alone take.

Lists the projections' matrix products of one `grpo-lab bench` step on the lean Qwen2 path (the
sampler's prompt pass and decoding steps, the reference pass, the update's forward and backward),
times each distinct product on this machine with the benchmark's thread count (the fastest of a
few repetitions, in the layout the step uses), and runs the benchmark itself in the same
process. It prints one JSON line: per phase (`gen`, `ref`, `update`, `step`), the floor in
seconds, the measured median, and their ratio.

The floor leaves out the attention products, every elementwise operation and the optimizer, so a
ratio of 1 is out of reach; the ratio says how much of a phase is spent outside the projections.
The prompt width is the mean over 20 draws of the benchmark's prompts.

    python analysis/step_floor.py --hidden 128 --layers 4 --max-new 8 --threads 2
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter

import torch
import torch.nn.functional as F


def projections(cfg) -> list[tuple[int, int]]:
    """(in, out) of each projection of one decoder layer."""
    d, D = cfg.hidden_size, cfg.hidden_size // cfg.num_attention_heads
    q, kv, inter = cfg.num_attention_heads * D, cfg.num_key_value_heads * D, cfg.intermediate_size
    return [(d, q), (d, kv), (d, kv), (q, d), (d, inter), (d, inter), (inter, d)]


def step_products(cfg, *, prompts: int, gens: int, max_new: int, width: int) -> dict[str, Counter]:
    """Per phase, how many times each product runs: ("fwd" | "dx" | "dw", rows, in, out) -> count."""
    U, B, T = prompts, prompts * gens, max_new
    layer = projections(cfg)
    head = (cfg.hidden_size, cfg.vocab_size)
    tokens = U * width + B * (T - 1)  # each distinct prompt once, the last completion token not run

    def forward(rows: int, times: int = 1, head_rows: int = 0) -> Counter:
        c = Counter()
        for i, o in layer:  # q, k, v and o share a shape when kv heads = heads: counted, not collapsed
            c[("fwd", rows, i, o)] += cfg.num_hidden_layers * times
        if head_rows:
            c[("fwd", head_rows, *head)] += times
        return c

    gen = forward(U * width, head_rows=U) + forward(B, times=T - 1, head_rows=B)
    ref = forward(tokens, head_rows=B * T)
    update = forward(tokens, head_rows=B * T)
    for i, o in layer + [head]:
        rows = B * T if (i, o) == head else tokens
        n = 1 if (i, o) == head else cfg.num_hidden_layers
        update[("dx", rows, i, o)] += n
        update[("dw", rows, i, o)] += n
    return {"gen": gen, "ref": ref, "update": update}


def time_product(kind: str, rows: int, n_in: int, n_out: int, reps: int = 20) -> float:
    """Seconds of one product, the fastest of `reps`: the forward `x @ W.T`, the input gradient
    `dy @ W` and the weight gradient `dy.T @ x`."""
    x, w, dy = torch.randn(rows, n_in), torch.randn(n_out, n_in), torch.randn(rows, n_out)
    run = {"fwd": lambda: F.linear(x, w), "dx": lambda: dy @ w, "dw": lambda: dy.t() @ x}[kind]
    for _ in range(3):
        run()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best


def prompt_width(task, tokenizer, prompts: int, draws: int = 20, seed: int = 0) -> int:
    from grpo_lab.rollout.encode import encode_prompts

    pool, rng = [e.prompt for e in task.train_examples()], random.Random(seed)
    widths = [encode_prompts(tokenizer, rng.sample(pool, prompts))[0].shape[1] for _ in range(draws)]
    return round(sum(widths) / len(widths))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("hidden", 128), ("layers", 4), ("prompts", 8), ("gens", 8), ("max-new", 8),
                          ("steps", 6), ("threads", 0)):
        p.add_argument(f"--{flag}", type=int, default=default)
    args = p.parse_args(argv)

    from grpo_lab.bench import bench, bench_config
    from grpo_lab.models import build_policy
    from grpo_lab.runs.train import build_task_for

    if args.threads:
        torch.set_num_threads(args.threads)
    config = bench_config(hidden=args.hidden, layers=args.layers, prompts=args.prompts, gens=args.gens,
                          max_new=args.max_new)
    task = build_task_for(config)
    policy, tokenizer = build_policy(config.model, task.alphabet)
    width = prompt_width(task, tokenizer, args.prompts)
    counts = step_products(policy.config, prompts=args.prompts, gens=args.gens, max_new=args.max_new, width=width)
    seconds = {key: time_product(*key) for key in set().union(*counts.values())}
    floor = {phase: sum(n * seconds[key] for key, n in c.items()) for phase, c in counts.items()}
    floor["step"] = sum(floor.values())
    record = bench(hidden=args.hidden, layers=args.layers, prompts=args.prompts, gens=args.gens,
                   max_new=args.max_new, steps=args.steps, fixed_length=True, threads=args.threads)
    split = record["split_s"]
    measured = {"gen": split["gen_s"], "ref": split["logprob_s"], "update": split["update_s"],
                "step": record["sec_per_step"]}
    flops = {phase: sum(2 * n * rows * i * o for (_, rows, i, o), n in c.items()) for phase, c in counts.items()}
    print(json.dumps({
        "hidden": args.hidden, "layers": args.layers, "prompts": args.prompts, "gens": args.gens,
        "max_new": args.max_new, "prompt_width": width, "threads": torch.get_num_threads(),
        "gflop": {k: round(v / 1e9, 3) for k, v in flops.items()},
        "floor_s": {k: round(v, 4) for k, v in floor.items()},
        "measured_s": {k: round(v, 4) for k, v in measured.items()},
        "ratio": {k: round(measured[k] / floor[k], 2) for k in floor},
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
