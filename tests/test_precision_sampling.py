"""A loss scaler (16-mixed) unscales before the clip and skips an overflow; top-p log-probs are the
sampled distribution's; greedy decoding takes nothing from a training generator."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from conftest import TINY
from grpo_lab.config import from_dict, merge
from grpo_lab.engine import GRPO
from grpo_lab.models import build_policy
from grpo_lab.rollout import sampler as sampler_module
from grpo_lab.rollout import sample, token_logprobs
from grpo_lab.rollout.encode import encode_prompts
from grpo_lab.runs.train import build_task_for


def one_step(*, clip: float, scale: float | None, steps: int = 1):
    """A GRPO module after `steps` steps of an untrained tiny policy, under a loss scaler of `scale`
    (the 16-mixed precision plugin) or in float32; (module, grads after the last update)."""
    config = from_dict(merge(copy.deepcopy(TINY), {"sft": {"steps": 0}, "optim": {"grad_clip": clip},
                                                  "loss": {"entropy_coef": 0.01}, "train": {"steps": steps + 1}}))
    task = build_task_for(config)
    torch.manual_seed(0)
    module = GRPO(config, *build_policy(config.model, task.alphabet), task)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=scale)) if scale else None
    trainer = L.Trainer(max_epochs=1, limit_train_batches=steps, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        plugins=[plugin] if plugin else None)
    trainer.fit(module)
    grads = torch.cat([p.grad.flatten() for p in module.policy.parameters() if p.grad is not None])
    return module, grads


def test_the_clip_acts_on_unscaled_gradients():
    _, fp32 = one_step(clip=0.0, scale=None)
    module, scaled = one_step(clip=0.0, scale=2.0**16)
    row = [r for r in module.history if "actor/grad_norm" in r][-1]
    assert row["actor/grad_norm"] == pytest.approx(float(fp32.norm()), rel=1e-2)  # not 65536 times it
    assert row["actor/skipped_update"] == 0.0
    clip = float(fp32.norm()) / 4
    _, clipped = one_step(clip=clip, scale=2.0**16)
    assert float(clipped.norm()) == pytest.approx(clip, rel=1e-2)  # the clip the config asks for, not clip / 65536


def test_an_overflow_under_a_loss_scaler_skips_the_update_instead_of_stopping_the_run():
    module, _ = one_step(clip=1.0, scale=2.0**120)  # every scaled gradient overflows float32
    row = [r for r in module.history if "actor/skipped_update" in r][-1]
    assert row["actor/skipped_update"] == 1.0 and module.budget["updates"] == 0
    torch.manual_seed(0)  # the untrained policy the run started from
    start, _ = build_policy(module.config.model, module.task.alphabet)
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), module.policy.state_dict().values()))


def _tiny_policy():
    config = from_dict(merge(copy.deepcopy(TINY), {"sft": {"steps": 0}}))
    task = build_task_for(config)
    torch.manual_seed(0)
    policy, tokenizer = build_policy(config.model, task.alphabet)
    prompts = [ex.prompt for ex in list(task.train_examples())[:4] for _ in range(4)]
    return policy, tokenizer, encode_prompts(tokenizer, prompts)


@pytest.mark.parametrize("top_p", [0.3, 0.7])
def test_top_p_log_probs_are_those_of_the_truncated_distribution(top_p):
    policy, tokenizer, (ids, mask) = _tiny_policy()
    ro = sample(policy, ids, mask, max_new_tokens=6, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                top_p=top_p, generator=torch.Generator().manual_seed(0), with_entropy=True)
    m = ro.completion_mask
    with torch.no_grad():
        learner, entropy = token_logprobs(policy, ro.input_ids, ro.attention_mask, ro.completion_ids.shape[1],
                                          top_p=top_p, with_entropy=True)
        full, full_entropy = token_logprobs(policy, ro.input_ids, ro.attention_mask, ro.completion_ids.shape[1],
                                            with_entropy=True)
    torch.testing.assert_close(learner * m, ro.logprobs, atol=1e-5, rtol=0)  # the ratio is 1 at the sampler's weights
    assert ((learner - full)[m > 0] >= -1e-6).all() and ((learner - full)[m > 0] > 1e-3).any()  # renormalised
    assert (entropy[m > 0] <= full_entropy[m > 0] + 1e-5).all()  # a truncated distribution is narrower
    torch.testing.assert_close(entropy * m, ro.entropy, atol=1e-4, rtol=0)


def test_greedy_decoding_takes_no_seed_from_the_generator(monkeypatch):
    policy, tokenizer, (ids, mask) = _tiny_policy()

    def refuse(generator, device):
        raise AssertionError("a seed was drawn")

    monkeypatch.setattr(sampler_module, "_on_device", refuse)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    sample(policy, ids, mask, max_new_tokens=4, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
           greedy=True, generator=generator)
    assert torch.equal(generator.get_state(), state)
    with pytest.raises(AssertionError, match="a seed was drawn"):  # sampling does prepare its generator
        sample(policy, ids, mask, max_new_tokens=4, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
               generator=generator)
