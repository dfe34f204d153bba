"""`grpo-lab bench`: seconds per RL step of a method's real module on a model built from a config.

The model is a Qwen2 decoder sized by the flags with the chain task's character vocabulary, the
prompts are the chain task's, the reference model is a copy of the policy (beta 0.04), mu = 1.
The step is the module's own `rl_step`, driven by a Lightning Trainer exactly as in training; a
callback takes the wall time from the end of one step to the end of the next, so the loop's own
work counts too. The first `warmup` steps (which also hold the initial evaluation) are dropped;
the median of the rest is reported, with the
module's per-step split into generation (`perf/gen_s`), reference/old log-probs
(`perf/logprob_s`) and the update (`perf/update_s`).

One JSON line goes to stdout: seconds per step, completions/s, generated tokens/s, peak memory
(the process's peak resident set on CPU, `torch.cuda.max_memory_allocated` on a GPU) and the
split. On a GPU it also reports the update's model FLOPs (6 per parameter per completion token) per
second as a fraction of a measured bf16 matrix-product rate of the same device.
"""

from __future__ import annotations

import copy
import json
import platform
import resource
import statistics
import time
from typing import Optional

import torch

BENCH_BETA = 0.04


def bench_config(*, hidden: int = 128, layers: int = 4, heads: Optional[int] = None, prompts: int = 8,
                 gens: int = 8, max_new: int = 8, method: str = "grpo", device: str = "cpu",
                 dtype: str = "float32", lr: float = 3e-4, steps: int = 5, warmup: int = 2, seed: int = 0,
                 overrides: Optional[dict] = None):
    """The Config the benchmark runs: no warm start, no logging, one evaluation prompt."""
    from grpo_lab.config import from_dict, merge

    heads = heads or max(1, hidden // 32)
    data = {
        "name": "bench", "method": method, "seed": seed,
        "task": {"name": "chain", "digits": 1, "min_terms": 3, "max_terms": 5, "train_size": 2000, "eval_size": 8},
        "model": {"hidden_size": hidden, "num_layers": layers, "num_heads": heads, "intermediate_size": 4 * hidden,
                  "max_length": 16 + max_new, "dtype": dtype},
        "sft": {"steps": 0},
        "rollout": {"prompts_per_step": prompts, "group_size": gens, "max_new_tokens": max_new},
        "loss": {"kl_beta": BENCH_BETA},
        "optim": {"lr": lr, "epochs": 1, "minibatches": 1},
        # one step more than is run, so the final evaluation never falls inside a timed step
        "train": {"steps": warmup + steps + 1, "eval_every": warmup + steps + 1, "eval_prompts": 1,
                  "eval_samples": 1, "device": device},
    }
    return from_dict(merge(data, overrides or {}))


class StepClock:
    """Seconds from the end of one step to the end of the next; `tick()` at each step's end. Keeps
    wall time and this process's CPU time (which load from other processes hardly moves)."""

    def __init__(self, sync=None):
        self.sync = sync or (lambda: None)
        self.ends: list[float] = []
        self.cpu_ends: list[float] = []

    def tick(self) -> None:
        self.sync()
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())

    def times(self, warmup: int, cpu: bool = False) -> list[float]:
        """Durations of the steps after the first `warmup` >= 1 (step k lasts from end k-1 to end k)."""
        ends = self.cpu_ends if cpu else self.ends
        return [b - a for a, b in zip(ends[warmup - 1:], ends[warmup:])]


def _timer_callback(clock: StepClock):
    import lightning as L

    class StepTimer(L.Callback):
        def on_train_batch_end(self, *args, **kwargs):
            clock.tick()

    return StepTimer()


def peak_memory_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def update_flops(params: int, tokens: int) -> float:
    """Matrix FLOPs of one forward+backward over `tokens` tokens: 6 per parameter per token."""
    return 6.0 * params * tokens


def matmul_rate(device: str, dtype: torch.dtype, n: int = 8192, reps: int = 10) -> float:
    """Measured FLOP/s of an n x n x n matrix product on `device` (the ceiling the update is compared with)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (start.elapsed_time(end) / 1000)


def run_bench(config, *, warmup: int = 2, fixed_length: bool = True, threads: int = 0) -> Optional[dict]:
    """Run `warmup + steps` RL steps of `config.method`'s module and return the benchmark record
    (None in the processes other than process 0 of a multi-process strategy). `threads` 0: this
    process's share of the cores (runs/threads.py)."""
    from grpo_lab.runs.threads import ThreadShare
    from grpo_lab.runs.train import quiet

    quiet()
    with ThreadShare(threads):
        return _run_bench(config, warmup=warmup, fixed_length=fixed_length)


def _run_bench(config, *, warmup: int, fixed_length: bool) -> Optional[dict]:
    import lightning as L

    from grpo_lab.config.precision import lightning_precision
    from grpo_lab.engine import module_class
    from grpo_lab.models import build_policy
    from grpo_lab.models.adapters import for_training, is_adapted
    from grpo_lab.runs.train import build_task_for, resolve_device, strategy_for

    device = resolve_device(config.train.device)
    steps = config.train.steps - warmup - 1
    task = build_task_for(config)
    torch.manual_seed(config.seed)
    policy, tokenizer = build_policy(config.model, task.alphabet)
    params = sum(p.numel() for p in policy.parameters())
    policy = for_training(policy, config.model)
    ref = None if is_adapted(policy) else copy.deepcopy(policy)  # an adapted policy's reference is its base
    module = module_class(config.method)(config, policy, tokenizer, task, ref_policy=ref)
    module.suppress_eos = fixed_length
    clock = StepClock(torch.cuda.synchronize if device == "cuda" else None)
    # limit_train_batches, not max_steps: max_steps counts optimizer steps, and PPO makes two per RL step
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=warmup + steps, accelerator=device, devices=config.train.devices,
        strategy=strategy_for(config, module), logger=False,
        enable_checkpointing=False,
        callbacks=[_timer_callback(clock)], enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, precision=lightning_precision(config.train.precision),
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module)
    if not trainer.is_global_zero:  # under DDP, process 0 reports for the step
        return None
    rows = [row for row in module.history if "perf/gen_s" in row][warmup:]
    times = clock.times(warmup)
    sec = statistics.median(times)
    completions = config.rollout.batch_size
    tokens = statistics.median(_step_tokens(module.history)[warmup:])
    split = {k.split("/")[1]: statistics.median(r[k] for r in rows)
             for k in ("perf/gen_s", "perf/logprob_s", "perf/update_s")}
    record = {
        "method": config.method, "device": device, "dtype": config.model.dtype,
        "hidden": config.model.hidden_size, "layers": config.model.num_layers, "params": params,
        "prompts": config.rollout.prompts_per_step, "gens": config.rollout.group_size,
        "max_new": config.rollout.max_new_tokens, "fixed_length": fixed_length, "steps": len(times),
        "micro_batch": config.optim.micro_batch_size, "devices": config.train.devices,
        "precision": config.train.precision, "adapter": config.model.adapter.type,
        "activation_checkpointing": config.model.activation_checkpointing,
        "trained_params": sum(p.numel() for p in policy.parameters() if p.requires_grad),
        "sec_per_step": sec, "sec_per_step_min": min(times), "cpu_sec_per_step": statistics.median(clock.times(warmup, cpu=True)),
        "completions_per_s": completions / sec,
        "tokens_per_s": tokens / sec, "tokens_per_step": tokens,
        "peak_mem_mib": peak_memory_mib(device), "peak_mem_kind": "cuda_allocated" if device == "cuda" else "rss",
        "split_s": split, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    if device == "cuda":
        rate = matmul_rate(device, torch.bfloat16)
        record["gpu"] = torch.cuda.get_device_name()
        record["matmul_tflops"] = rate / 1e12
        # model FLOPs of the tokens trained on (6 per parameter per completion token) over the update's time
        record["update_mfu"] = update_flops(params, tokens) / split["update_s"] / rate
    return record


def _step_tokens(history: list[dict]) -> list[float]:
    """Completion tokens of each step, from the cumulative budget."""
    seen = [row["budget/tokens"] for row in history if "budget/tokens" in row]
    return [b - a for a, b in zip([0.0] + seen[:-1], seen)]


def bench(*, hidden: int = 128, layers: int = 4, prompts: int = 8, gens: int = 8, max_new: int = 8,
          steps: int = 5, method: str = "grpo", device: str = "cpu", fixed_length: bool = False,
          dtype: Optional[str] = None, heads: Optional[int] = None, threads: int = 0, warmup: int = 2,
          seed: int = 0, micro_batch: int = 0, devices: int = 1, precision: str = "auto", adapter: str = "none",
          activation_checkpointing: bool = False) -> Optional[dict]:
    """Build the config from the flags and run the benchmark. `devices` > 1 runs the step in that
    many DDP processes (each takes a slice of the step's prompts; threads are per process)."""
    from grpo_lab.config import ConfigError
    from grpo_lab.runs.train import resolve_device

    if warmup < 1 or steps < 1:
        raise ConfigError(f"bench needs --warmup >= 1 and --steps >= 1 (got {warmup} and {steps})")
    device = resolve_device(device)
    dtype = dtype or ("bfloat16" if device == "cuda" else "float32")
    config = bench_config(hidden=hidden, layers=layers, heads=heads, prompts=prompts, gens=gens, max_new=max_new,
                          method=method, device=device, dtype=dtype, steps=steps, warmup=warmup, seed=seed,
                          overrides={"optim": {"micro_batch_size": micro_batch},
                                     "model": {"adapter": {"type": adapter},
                                               "activation_checkpointing": activation_checkpointing},
                                     "train": {"devices": devices, "strategy": "ddp" if devices > 1 else "auto",
                                               "precision": precision}}).resolved()
    return run_bench(config, warmup=warmup, fixed_length=fixed_length, threads=threads)


def format_record(record: dict) -> str:
    return json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in record.items()})
