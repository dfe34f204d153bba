"""Supervised fine-tuning on reference completions, the cached SFT warm start, and SFT as a method.

The loss is the token-mean negative log-likelihood of each reference completion (EOS included)
given its prompt. The warm start trains it once per distinct (task, model, sft) config and saves
the result with `save_pretrained` under `sft.cache_dir/<sft_hash>`, so every run of a grid starts
from the same weights without retraining. A file lock makes parallel runs wait for one build.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from pathlib import Path

import lightning as L
import torch

from grpo_lab.algorithms.base import PolicyModule
from grpo_lab.core.aggregation import aggregate
from grpo_lab.models import build_policy, load_pretrained
from grpo_lab.rollout import Rollout, token_logprobs
from grpo_lab.rollout.encode import encode_completions, encode_prompts


def sft_batch(tokenizer, examples, device=None) -> dict:
    """Prompt (left-padded) + reference completion and EOS (right-padded), with the completion mask."""
    p_ids, p_mask = encode_prompts(tokenizer, [ex.prompt for ex in examples], device)
    c_ids, c_mask = encode_completions(tokenizer, [ex.target for ex in examples], device)
    return {"input_ids": torch.cat([p_ids, c_ids], 1), "attention_mask": torch.cat([p_mask.float(), c_mask], 1),
            "completion_mask": c_mask}


def sft_loss(policy, batch) -> torch.Tensor:
    T = batch["completion_mask"].shape[1]
    logp, _ = token_logprobs(policy, batch["input_ids"], batch["attention_mask"], T)
    return aggregate(-logp, batch["completion_mask"], "token_mean")


class SFT(L.LightningModule):
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
        loss = sft_loss(self.policy, batch)
        self.log("sft_loss", loss, prog_bar=True, logger=False)
        return loss

    def configure_optimizers(self):
        c = self.cfg
        opt = torch.optim.AdamW(self.policy.parameters(), lr=c.lr, betas=(0.9, 0.98), weight_decay=c.weight_decay)
        warm = max(c.warmup_steps, 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda n: min(1.0, (n + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train_sft(policy, tokenizer, examples, cfg, *, progress: bool = True, device: str = "cpu") -> float:
    """Runs SFT in place on `policy`; returns the wall time in seconds."""
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        trainer = L.Trainer(max_steps=cfg.steps, accelerator=device, devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
                            gradient_clip_val=cfg.grad_clip or None)
        trainer.fit(SFT(policy, tokenizer, examples, cfg))
    return time.perf_counter() - start


def warm_start(config, task, *, progress: bool = True, device: str = "cpu"):
    """The policy and tokenizer after the (cached) SFT warm start, and where they are stored.

    Returns (policy, tokenizer, path). With `sft.steps: 0` the untrained (or loaded) policy is
    returned and nothing is cached.
    """
    if config.sft.steps == 0:
        policy, tokenizer = build_policy(config.model, task.alphabet)
        return policy, tokenizer, None
    root = Path(config.sft.cache_dir)
    path = root / config.sft_hash()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{config.sft_hash()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "done.json").exists():
            with torch.random.fork_rng():
                torch.manual_seed(config.sft.seed)
                policy, tokenizer = build_policy(config.model, task.alphabet)
            seconds = train_sft(policy, tokenizer, task.train_examples(), config.sft, progress=progress, device=device)
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


# ----- SFT as a method of the paradigm (method: sft) --------------------------------------------

def supervised_loss(logp: torch.Tensor, mask: torch.Tensor, *, aggregation: str = "seq_mean_token_mean",
                    norm: float | None = None) -> torch.Tensor:
    """The SFT loss of the rows given: ``aggregate(-log pi_theta(o_t | q, o_<t), mask)``. (B, T) -> scalar.

    DeepSeekMath App. A.1.1: GC = 1 on every token of the rows trained on. RFT and online RFT call
    it on the correct rows only (GC = I(o), Eq. 10); with ``seq_mean_token_mean`` the gradient is
    ``-(1/n) (1/|o_i|) grad log pi`` over the n rows passed.
    """
    return aggregate(-logp, mask, aggregation, norm=norm)


def pack_rows(prompts: list[list[int]], completions: list[list[int]], *, pad_id: int, device=None) -> Rollout:
    """Token-id lists in the rollout layout: prompts left-padded, completions (EOS included) right-padded."""
    width_p, width_c = max(map(len, prompts)), max(map(len, completions))
    prompt_ids = torch.full((len(prompts), width_p), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(prompts), width_p), dtype=torch.long)
    completion_ids = torch.full((len(prompts), width_c), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((len(prompts), width_c))
    for i, (p, c) in enumerate(zip(prompts, completions)):
        prompt_ids[i, width_p - len(p):], prompt_mask[i, width_p - len(p):] = torch.tensor(p), 1
        completion_ids[i, :len(c)], completion_mask[i, :len(c)] = torch.tensor(c), 1.0
    return Rollout(prompt_ids.to(device), prompt_mask.to(device), completion_ids.to(device),
                   completion_mask.to(device), torch.zeros_like(completion_mask).to(device),
                   torch.ones(len(prompts), dtype=torch.bool, device=device))


def unpack_rows(rollout: Rollout) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids through EOS) of each row, without padding: the inverse of `pack_rows`."""
    out = []
    for p, pm, c, cm in zip(rollout.prompt_ids.tolist(), rollout.prompt_mask.tolist(),
                            rollout.completion_ids.tolist(), rollout.completion_mask.tolist()):
        out.append(([t for t, m in zip(p, pm) if m], [t for t, m in zip(c, cm) if m]))
    return out


class SupervisedModule(PolicyModule):
    """A method whose update is the SFT loss on rows it picks (SFT, RFT, online RFT)."""

    def fit_rows(self, batch: Rollout) -> dict:
        """mu epochs x minibatches of `supervised_loss` on `batch`; the mean metrics of the updates."""
        lc = self.config.loss
        norm = lc.norm or self.config.rollout.max_new_tokens
        sums: dict[str, float] = {}
        updates = 0
        def loss_of(part):
            mb = batch.select(part)
            loss = supervised_loss(self.logprobs(mb)[0], mb.completion_mask, aggregation=lc.aggregation, norm=norm)
            return loss, {"actor/loss": float(loss.detach())}

        for rows in self.minibatches(batch.completion_ids.shape[0]):
            metrics: dict[str, float] = {}
            metrics.update(self.update(self.accumulate(rows, loss_of, metrics, batch.completion_mask)))
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            updates += 1
        return {k: v / updates for k, v in sums.items()}


class SFTMethod(SupervisedModule):
    """SFT continued on the task's reference targets (Table 10, first row), as a baseline arm.

    Each step trains on the references of P x G training prompts (as many sequences as an RL
    step's rollout batch) with `loss.aggregation`, mu epochs x minibatches like the RL arms. It
    generates nothing, so `budget/samples` stays 0.
    """

    def rl_step(self, step: int) -> dict:
        count = self.config.rollout.batch_size
        examples = self.prompts_for_step(step, count)
        p_ids, p_mask = encode_prompts(self.tokenizer, [ex.prompt for ex in examples], self.device)
        c_ids, c_mask = encode_completions(self.tokenizer, [ex.target for ex in examples], self.device)
        batch = Rollout(p_ids, p_mask, c_ids, c_mask, torch.zeros_like(c_mask),
                        torch.ones(len(examples), dtype=torch.bool, device=self.device))
        self.budget["prompts"] += count
        self.budget["tokens"] += int(c_mask.sum())
        return self.fit_rows(batch)
