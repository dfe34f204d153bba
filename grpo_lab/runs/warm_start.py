"""The SFT warm start: supervised fine-tuning on the task's reference completions, trained once per
distinct (task, model, sft) config and cached.

It is the engine's `warm_start` recipe (the `supervised` objective on reference completions drawn
with replacement, `reference_draws`) run through the engine's one update loop, with the `sft`
section's settings: the token-mean negative log-likelihood of each reference completion (EOS
included) given its prompt, AdamW (betas 0.9 / 0.98) with linear warm-up, gradient clipping, in
float32 and with the model's dropout. The result is saved with `save_pretrained` under
`sft.cache_dir/<sft_hash>`, so every run of a grid starts from the same weights without
retraining. A file lock makes parallel runs wait for one build.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from pathlib import Path

import lightning as L
import torch

from grpo_lab.models import build_policy, load_pretrained
from grpo_lab.rollout.encode import encode_completions, encode_prompts
from grpo_lab.runs.progress import StepProgress
from grpo_lab.runs.threads import ThreadShare


def sft_batch(tokenizer, examples, device=None) -> dict:
    """Prompt (left-padded) + reference completion and EOS (right-padded), with the completion mask."""
    p_ids, p_mask = encode_prompts(tokenizer, [ex.prompt for ex in examples], device)
    c_ids, c_mask = encode_completions(tokenizer, [ex.target for ex in examples], device)
    return {"input_ids": torch.cat([p_ids, c_ids], 1), "attention_mask": torch.cat([p_mask.float(), c_mask], 1),
            "completion_mask": c_mask}


def warm_start_config(config, device: str = "cpu"):
    """The config of the `warm_start` recipe for `config`'s warm start: its task and model, the `sft`
    section's steps, batch, optimizer settings and seed, in float32, every other setting at its default."""
    from grpo_lab.config import Config, LossConfig, OptimConfig, RolloutConfig, TrainConfig

    s = config.sft
    return Config(
        name=f"{config.name}-warm_start", method="warm_start", seed=s.seed, task=config.task, model=config.model,
        sft=config.sft, rollout=RolloutConfig(prompts_per_step=s.batch_size, group_size=1),
        loss=LossConfig(aggregation="token_mean"),
        optim=OptimConfig(lr=s.lr, beta1=0.9, beta2=0.98, weight_decay=s.weight_decay, grad_clip=s.grad_clip,
                          warmup_steps=s.warmup_steps, fused=False),
        train=TrainConfig(steps=s.steps, precision="32-true", device=device, threads=WARM_START_THREADS),
        tracking=config.tracking,
    )


WARM_START_THREADS = 1  # fixed: the cached weights must not depend on the load of the machine that built them


def train_sft(policy, tokenizer, task, config, *, progress: bool = True, device: str = "cpu") -> float:
    """Runs the warm start of `config` in place on `policy` with `WARM_START_THREADS` CPU threads, whatever
    else runs (the thread count changes float sums, and every run that shares this warm start must get the
    same weights); returns the wall time in seconds."""
    from grpo_lab.engine import Engine

    start = time.perf_counter()
    cfg = warm_start_config(config, device)
    callbacks = [StepProgress("sft", cfg.train.steps)] if progress else []
    threads = torch.get_num_threads()
    torch.set_num_threads(WARM_START_THREADS)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            trainer = L.Trainer(max_epochs=1, accelerator=device, devices=1, logger=False, callbacks=callbacks,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                num_sanity_val_steps=0, limit_val_batches=0)
            trainer.fit(Engine(cfg, policy, tokenizer, task))
    finally:
        torch.set_num_threads(threads)
    policy.eval()
    return time.perf_counter() - start


def warm_start(config, task, *, progress: bool = True, device: str = "cpu"):
    """The policy and tokenizer after the (cached) SFT warm start, and where they are stored.

    Returns (policy, tokenizer, path). With `sft.steps: 0` the untrained (or loaded) policy is
    returned and nothing is cached. While it trains, this process counts as one that computes
    (runs/threads.py), so that other grpo-lab processes leave it its core.
    """
    if config.sft.steps == 0:
        policy, tokenizer = build_policy(config.model, task.alphabet)
        return policy, tokenizer, None
    root = Path(config.sft.resolved_cache_dir)
    path = root / config.sft_hash()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{config.sft_hash()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "done.json").exists():
            with ThreadShare(config.train.threads):
                with torch.random.fork_rng():
                    torch.manual_seed(config.sft.seed)
                    policy, tokenizer = build_policy(config.model, task.alphabet)
                seconds = train_sft(policy, tokenizer, task, config, progress=progress, device=device)
            tmp = root / f"{path.name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            policy.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "sft_config.yaml").write_text(config.to_yaml())
            (tmp / "done.json").write_text(json.dumps({"seconds": seconds, "sft_hash": config.sft_hash()}))
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
    policy, tokenizer = load_pretrained(path, dtype=config.model.dtype, trust_remote_code=config.model.trust_remote_code)
    return policy, tokenizer, path
