"""The GPU numbers of results/bench/README.md in one run: the lean Qwen2 path against the Hugging
Face reference on the device, sampler tokens/s of both paths, then `grpo-lab bench` in bf16 at the
two CPU sizes and a larger one (with the update's fraction of a measured bf16 matrix rate).

    PYTHONPATH=. python analysis/bench_gpu.py
"""

from __future__ import annotations

import json
import time

import torch

from grpo_lab.bench import bench, bench_config, format_record
from grpo_lab.models import build_policy
from grpo_lab.rollout import sample, token_logprobs
from grpo_lab.rollout.encode import encode_prompts
from grpo_lab.runs.train import build_task_for


def equivalence(dtype: str) -> dict:
    config = bench_config(hidden=256, layers=4, prompts=16, gens=8, max_new=16, dtype=dtype)
    task = build_task_for(config)
    torch.manual_seed(0)
    model, tok = build_policy(config.model, task.alphabet)
    model = model.cuda().eval()
    prompts = [e.prompt for e in task.train_examples()[:16] for _ in range(8)]
    ids, mask = encode_prompts(tok, prompts, device="cuda")
    kw = dict(max_new_tokens=16, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    fast = sample(model, ids, mask, generator=torch.Generator().manual_seed(1), **kw)
    ref = sample(model, ids, mask, generator=torch.Generator().manual_seed(1), fast=False, **kw)
    T = fast.completion_ids.shape[1]
    lf, _ = token_logprobs(model, fast.input_ids, fast.attention_mask, T)
    lr, _ = token_logprobs(model, fast.input_ids, fast.attention_mask, T, fast=False)
    m = fast.completion_mask
    return {"dtype": dtype, "same_tokens_frac": float((fast.completion_ids == ref.completion_ids).float().mean()),
            "logprob_max_abs_diff": float(((lf - lr) * m).abs().max()),
            "sampler_vs_learner_max_abs_diff": float(((lf - fast.logprobs) * m).abs().max())}


def sampler_rate(hidden: int, layers: int, prompts: int, gens: int, max_new: int, fast: bool) -> float:
    config = bench_config(hidden=hidden, layers=layers, prompts=prompts, gens=gens, max_new=max_new, dtype="bfloat16")
    task = build_task_for(config)
    model, tok = build_policy(config.model, task.alphabet)
    model = model.cuda().eval()
    ids, mask = encode_prompts(tok, [e.prompt for e in task.train_examples()[:prompts] for _ in range(gens)],
                               device="cuda")
    kw = dict(max_new_tokens=max_new, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, suppress_eos=True, fast=fast)
    for _ in range(2):
        sample(model, ids, mask, generator=torch.Generator().manual_seed(0), **kw)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(3):
        sample(model, ids, mask, generator=torch.Generator().manual_seed(0), **kw)
    torch.cuda.synchronize()
    return 3 * prompts * gens * max_new / (time.perf_counter() - start)


def main() -> None:
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    for dtype in ("float32", "bfloat16"):
        print(json.dumps({"check": "fast_vs_hf", **equivalence(dtype)}), flush=True)
    for fast in (True, False):
        rate = sampler_rate(1024, 8, 32, 8, 64, fast)
        print(json.dumps({"check": "sampler_tokens_per_s", "hidden": 1024, "layers": 8, "batch": 256, "max_new": 64,
                          "fast": fast, "tokens_per_s": rate}), flush=True)
    sizes = [dict(hidden=128, layers=4, prompts=8, gens=8, max_new=8), dict(hidden=512, layers=8, prompts=8, gens=8,
             max_new=16), dict(hidden=1024, layers=8, prompts=32, gens=8, max_new=64),
             dict(hidden=2048, layers=16, prompts=16, gens=8, max_new=128)]
    for size in sizes:
        print(format_record(bench(**size, steps=5, device="cuda", fixed_length=True)), flush=True)


if __name__ == "__main__":
    main()
