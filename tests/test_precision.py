"""train.precision: auto resolves by the hardware, keeps float32 machines' config hashes, and
bf16-mixed computes forward passes in bf16 while the weights, the optimizer state and every
optimizer step stay float32 and outside autocast."""

from __future__ import annotations

import copy
import dataclasses

import lightning as L
import pytest
import torch

from conftest import TINY
from grpo_lab.config import Config, from_dict, merge
from grpo_lab.config import precision as P
from grpo_lab.engine import GRPO
from grpo_lab.models import build_policy
from grpo_lab.runs.train import build_task_for


@pytest.fixture
def flags(monkeypatch):
    """Set the CPU's feature flags the resolution sees."""
    def set_flags(*names):
        monkeypatch.setattr(P, "cpu_flags", lambda: frozenset(names))
    return set_flags


def test_auto_is_bf16_mixed_only_where_the_cpu_has_bf16(flags):
    flags("avx2", "avx512f")
    assert P.resolve_precision("auto", "cpu") == "32-true"
    flags("avx512f", "avx512_bf16")
    assert P.resolve_precision("auto", "cpu") == "bf16-mixed"
    flags("amx_bf16")
    assert P.resolve_precision("auto", "cpu") == "bf16-mixed"
    for explicit in ("32-true", "bf16-mixed", "16-mixed"):
        assert P.resolve_precision(explicit, "cpu") == explicit


def test_auto_keeps_the_hash_of_float32_on_a_machine_without_bf16(flags):
    fp32 = Config(train=dataclasses.replace(Config().train, precision="32-true"))
    flags("avx2")
    assert Config().train.precision == "auto"
    assert Config().config_hash() == fp32.config_hash()
    assert Config().resolved().train.precision == "32-true"
    flags("avx512_bf16")
    assert Config().config_hash() != fp32.config_hash()  # another computation, another identity
    assert Config().resolved().train.precision == "bf16-mixed"
    assert Config().config_hash() == Config().resolved().config_hash()


def test_bf16_mixed_runs_on_lightning_32_true():
    assert P.lightning_precision("bf16-mixed") == "32-true"
    assert P.lightning_precision("16-mixed") == "16-mixed"


class AutocastProbe(L.Callback):
    def __init__(self):
        self.seen: list[bool] = []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.seen.append(torch.is_autocast_enabled("cpu"))


def trained(precision: str, steps: int = 2):
    """A GRPO module after `steps` steps (2 epochs x 2 minibatches each) of an untrained tiny policy."""
    config = from_dict(merge(copy.deepcopy(TINY), {
        "sft": {"steps": 0}, "loss": {"entropy_coef": 0.01}, "optim": {"epochs": 2, "minibatches": 2},
        "train": {"steps": steps + 1, "precision": precision}}))
    task = build_task_for(config)
    torch.manual_seed(0)
    module = GRPO(config, *build_policy(config.model, task.alphabet), task)
    probe = AutocastProbe()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=steps, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        precision=P.lightning_precision(precision), callbacks=[probe])
    trainer.fit(module)
    return module, trainer, probe


def test_bf16_mixed_keeps_float32_weights_and_optimizer_state_and_steps_outside_autocast():
    module, trainer, probe = trained("bf16-mixed")
    assert len(probe.seen) == 2 * 2 * 2 and not any(probe.seen)  # every update; none under autocast
    assert all(p.dtype == torch.float32 for p in module.policy.parameters())
    state = trainer.optimizers[0].state
    assert state and all(v.dtype == torch.float32 for s in state.values() for k, v in s.items() if k != "step")


def test_bf16_mixed_computes_in_bf16():
    fp32, _, _ = trained("32-true", steps=1)
    bf16, _, _ = trained("bf16-mixed", steps=1)
    rollout = fp32.generate(fp32.eval_examples[:4], group_size=2, greedy=True)
    exact = fp32.logprobs(rollout)[0].detach()
    mixed = bf16.logprobs(rollout, policy=fp32.policy)[0].detach()  # the same weights, computed in bf16
    gap = (exact - mixed).abs().max().item()
    assert 1e-5 < gap < 0.5, gap
    assert torch.equal(fp32.logprobs(rollout)[0].detach(), exact)  # float32 itself is deterministic
    # the updates differ (bf16 rounding of the forward), but not by much after one step
    a = torch.cat([p.flatten() for p in fp32.policy.parameters()])
    b = torch.cat([p.flatten() for p in bf16.policy.parameters()])
    assert not torch.equal(a, b) and (a - b).abs().max().item() < 1e-2


def test_bench_and_config_accept_auto(capsys):
    from grpo_lab.cli import main

    assert main(["config", "train.precision"]) == 0
    assert "auto" in capsys.readouterr().out


def test_under_autocast_the_kv_cache_and_masks_are_made_in_bf16_with_the_same_tokens(tiny_config, monkeypatch):
    """The lean sampler makes its KV cache and masks in autocast's dtype (the values autocast would
    cast them to at every product): the tokens and log-probs equal those of a cache kept in float32
    and cast at every step."""
    from grpo_lab.models import fast_qwen2
    from grpo_lab.rollout import sample
    from grpo_lab.rollout.encode import encode_prompts

    config = tiny_config()
    task = build_task_for(config)
    torch.manual_seed(0)
    model, tok = build_policy(config.model, task.alphabet)
    ids, mask = encode_prompts(tok, [e.prompt for e in task.train_examples()[:6] for _ in range(3)])
    kw = dict(max_new_tokens=8, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)

    def draw():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return sample(model.eval(), ids, mask, generator=torch.Generator().manual_seed(3), **kw)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        decoder = fast_qwen2.StaticDecoder(model, ids, mask, 8)
    assert decoder.keys.dtype == decoder.bias.dtype == torch.bfloat16
    lean = draw()
    monkeypatch.setattr(fast_qwen2._Model, "compute_dtype", lambda self, device: self.dtype)  # float32 cache
    cast_each_step = draw()
    assert torch.equal(lean.completion_ids, cast_each_step.completion_ids)
    assert torch.equal(lean.logprobs, cast_each_step.logprobs)
