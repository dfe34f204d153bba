"""The SFT warm start: supervised fine-tuning on the task's reference completions, trained once per
distinct (task, model, sft) config and cached.

The loss is the token-mean negative log-likelihood of each reference completion (EOS included)
given its prompt. The result is saved with `save_pretrained` under `sft.cache_dir/<sft_hash>`, so
every run of a grid starts from the same weights without retraining. A file lock makes parallel
runs wait for one build.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from pathlib import Path

import lightning as L
import torch

from grpo_lab.core.supervised import supervised_loss
from grpo_lab.models import build_policy, load_pretrained
from grpo_lab.rollout import token_logprobs
from grpo_lab.rollout.encode import encode_completions, encode_prompts
from grpo_lab.runs.progress import StepProgress
from grpo_lab.runs.threads import ThreadShare


def sft_batch(tokenizer, examples, device=None) -> dict:
    """Prompt (left-padded) + reference completion and EOS (right-padded), with the completion mask."""
    p_ids, p_mask = encode_prompts(tokenizer, [ex.prompt for ex in examples], device)
    c_ids, c_mask = encode_completions(tokenizer, [ex.target for ex in examples], device)
    return {"input_ids": torch.cat([p_ids, c_ids], 1), "attention_mask": torch.cat([p_mask.float(), c_mask], 1),
            "completion_mask": c_mask}


class WarmStart(L.LightningModule):
    """Fine-tunes the policy on (prompt, target) examples with AdamW and linear warm-up."""

    def __init__(self, policy, tokenizer, examples, cfg):
        super().__init__()
        self.policy, self.tokenizer, self.examples, self.cfg = policy, tokenizer, list(examples), cfg

    def train_dataloader(self):
        g = torch.Generator().manual_seed(self.cfg.seed)
        sampler = torch.utils.data.RandomSampler(self.examples, replacement=True,
                                                 num_samples=self.cfg.steps * self.cfg.batch_size, generator=g)
        return torch.utils.data.DataLoader(self.examples, batch_size=self.cfg.batch_size, sampler=sampler,
                                           collate_fn=lambda exs: sft_batch(self.tokenizer, exs))

    def training_step(self, batch, batch_idx):
        T = batch["completion_mask"].shape[1]
        logp, _ = token_logprobs(self.policy, batch["input_ids"], batch["attention_mask"], T)
        loss = supervised_loss(logp, batch["completion_mask"], aggregation="token_mean")
        self.log("sft_loss", loss, prog_bar=True, logger=False)
        return loss

    def configure_optimizers(self):
        c = self.cfg
        opt = torch.optim.AdamW(self.policy.parameters(), lr=c.lr, betas=(0.9, 0.98), weight_decay=c.weight_decay)
        warm = max(c.warmup_steps, 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda n: min(1.0, (n + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


WARM_START_THREADS = 1  # fixed: the cached weights must not depend on the load of the machine that built them


def train_sft(policy, tokenizer, examples, cfg, *, progress: bool = True, device: str = "cpu") -> float:
    """Runs SFT in place on `policy` with `WARM_START_THREADS` CPU threads, whatever else runs (the
    thread count changes float sums, and every run that shares this warm start must get the same
    weights); returns the wall time in seconds."""
    start = time.perf_counter()
    callbacks = [StepProgress("sft", cfg.steps)] if progress else []
    threads = torch.get_num_threads()
    torch.set_num_threads(WARM_START_THREADS)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            trainer = L.Trainer(max_steps=cfg.steps, accelerator=device, devices=1, logger=False, callbacks=callbacks,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                gradient_clip_val=cfg.grad_clip or None)
            trainer.fit(WarmStart(policy, tokenizer, examples, cfg))
    finally:
        torch.set_num_threads(threads)
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
                seconds = train_sft(policy, tokenizer, task.train_examples(), config.sft, progress=progress,
                                    device=device)
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
