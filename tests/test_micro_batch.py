"""Gradient accumulation (`optim.micro_batch_size`): the update in chunks is the update of the whole
minibatch, for every aggregation and for each method that trains on a rollout batch."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from grpo_lab.engine import module_class
from grpo_lab.config import ConfigError
from grpo_lab.models import build_policy
from grpo_lab.runs.train import build_task_for


class DigitsTask:
    """The config's task rewarded by the fraction of digits in the completion, so that an untrained
    policy's groups have reward variance and every method gets a gradient."""

    def __init__(self, task):
        self.inner = task

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def reward(self, example, completion, finished):
        return sum(c.isdigit() for c in completion) / max(len(completion), 1)


def one_step(config):
    """The config's module around an untrained tiny policy after one RL step under a Lightning Trainer."""
    task = DigitsTask(build_task_for(config))
    torch.manual_seed(0)
    policy, tokenizer = build_policy(config.model, task.alphabet)
    ref = copy.deepcopy(policy) if config.loss.kl_beta > 0 else None
    module = module_class(config.method)(config, policy, tokenizer, task, ref_policy=ref)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module)
    return module


@pytest.mark.parametrize("method,overrides", [
    ("grpo", {}),
    ("grpo", {"loss.aggregation": "token_mean", "loss.kl_beta": 0.04}),
    ("grpo", {"loss.aggregation": "seq_mean_token_sum_norm", "rollout.mask_truncated": True}),
    ("ppo", {"critic.warmup": 0}),
    ("sft", {}),
])
def test_micro_batches_give_the_gradient_of_the_whole_minibatch(tiny_config, method, overrides):
    # 16 rows in chunks of 3: chunks that split groups and do not divide the batch
    whole = one_step(tiny_config(method=method, **{"train.steps": 2, "sft.steps": 0}, **overrides))
    parts = one_step(tiny_config(method=method, **{"train.steps": 2, "sft.steps": 0, "optim.micro_batch_size": 3},
                                 **overrides))
    assert len(parts.micro_batches(torch.arange(16))) == 6
    models = [(whole.policy, parts.policy)] + ([(whole.critic, parts.critic)] if method == "ppo" else [])
    for a, b in models:
        grads = [(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters()) if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g, _ in grads)  # a zero-initialised value head stops the trunk's
        for g, h in grads:
            torch.testing.assert_close(h, g, rtol=1e-4, atol=1e-7)
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    last = [k for k in whole.history[-1] if k.startswith(("actor/", "critic/"))]
    assert "actor/loss" in last
    for key in last:
        assert parts.history[-1][key] == pytest.approx(whole.history[-1][key], rel=1e-4, abs=1e-6), key


def test_token_mean_weighs_each_chunk_by_its_tokens(tiny_config):
    module = one_step(tiny_config(**{"train.steps": 2, "sft.steps": 0, "optim.micro_batch_size": 2,
                                     "loss.aggregation": "token_mean"}))
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)
    chunks = module.micro_batches(torch.tensor([3, 1, 0, 2]), mask)
    assert [c.tolist() for c, _ in chunks] == [[0, 1], [2, 3]]  # sorted: one prompt's rows stay together
    assert [w for _, w in chunks] == [5 / 7, 2 / 7]


def test_negative_micro_batch_size_is_refused(tiny_config):
    with pytest.raises(ConfigError, match="micro_batch_size"):
        tiny_config(**{"optim.micro_batch_size": -1})


def test_micro_batch_size_does_not_change_what_the_run_is(tiny_config):
    assert tiny_config(**{"optim.micro_batch_size": 4}).config_hash() == tiny_config().config_hash()
    assert tiny_config(**{"optim.minibatches": 2}).config_hash() != tiny_config().config_hash()
