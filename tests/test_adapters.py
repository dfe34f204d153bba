"""LoRA adapters (peft) and activation checkpointing: only the adapters train, the reference is the
base with its adapters off, exports hold merged weights; checkpointing changes nothing but memory."""

from __future__ import annotations

import pytest
import torch

from grpo_lab.runs import run

pytest.importorskip("peft")  # the optional extra [peft]; CI installs it with [dev]


def policy_weights(result):
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len("policy."):]: v for k, v in state.items() if k.startswith("policy.")}


def test_lora_trains_only_the_adapters_from_yaml(tiny_config, tmp_path):
    from grpo_lab.config import load_config
    from grpo_lab.models import load_pretrained

    path = tmp_path / "lora.yaml"
    path.write_text(tiny_config(**{"train.steps": 3, "loss.kl_beta": 0.05, "loss.entropy_coef": 0.01}).to_yaml()
                    + "")
    config = load_config(path, ["model.adapter.type=lora", "model.adapter.r=4", "model.adapter.alpha=8",
                                "optim.lr=1e-2"])
    result = run(config, progress=False, log=False)
    after = policy_weights(result)
    start, _ = load_pretrained(result.sft_path)
    base = {k: v for k, v in after.items() if "lora_" not in k}
    adapters = {k: v for k, v in after.items() if "lora_" in k}
    assert adapters and any("lora_B" in k and v.abs().sum() > 0 for k, v in adapters.items())  # B starts at 0
    for name, value in start.state_dict().items():  # every base weight is the warm start's, bit for bit
        module, param = name.rsplit(".", 1)
        key = next(k for k in (f"base_model.model.{name}", f"base_model.model.{module}.base_layer.{param}") if k in base)
        assert torch.equal(base[key], value), name
    assert result.history[-1]["eval/accuracy"] >= 0


def test_the_reference_is_the_base_with_the_adapters_off(tiny_config):
    from grpo_lab.engine import GRPO
    from grpo_lab.models import build_policy
    from grpo_lab.models.adapters import for_training
    from grpo_lab.rollout import token_logprobs
    from grpo_lab.runs.train import build_task_for

    config = tiny_config(**{"loss.kl_beta": 0.1, "model.adapter.type": "lora", "sft.steps": 0})
    task = build_task_for(config)
    torch.manual_seed(0)
    plain, tokenizer = build_policy(config.model, task.alphabet)
    base = {k: v.clone() for k, v in plain.state_dict().items()}
    module = GRPO(config, for_training(plain, config.model), tokenizer, task)
    assert module.ref_policy is None  # no second copy of the model
    with torch.no_grad():  # move the adapters away from zero, as training would
        for name, p in module.policy.named_parameters():
            if "lora_" in name:
                p.add_(0.1)
    examples = module.train_examples[:2]
    ro = module.generate(examples, group_size=2)
    torch.manual_seed(0)
    reference, _ = build_policy(config.model, task.alphabet)
    reference.load_state_dict(base)
    with torch.no_grad():
        expected = token_logprobs(reference, ro.input_ids, ro.attention_mask, ro.completion_ids.shape[1],
                                  fast=False)[0]  # the generic path, as an adapted model takes
        adapted = module.logprobs(ro)[0]
    torch.testing.assert_close(module.ref_logprobs(ro), expected, atol=1e-5, rtol=0)
    assert (adapted - expected).abs().max() > 1e-3  # while the policy itself has moved


def test_activation_checkpointing_runs_each_layer_again_in_the_backward(tiny_config):
    from grpo_lab.models import build_policy, fast_qwen2
    from grpo_lab.models.adapters import for_training
    from grpo_lab.runs.train import build_task_for

    config = tiny_config(**{"model.activation_checkpointing": True})
    policy, _ = build_policy(config.model, build_task_for(config).alphabet)
    layer = policy.model.layers[0]
    calls = []
    original = layer.forward
    layer.forward = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    policy = for_training(policy.eval(), config.model)  # eval mode, as the engine keeps the policy
    assert not fast_qwen2.supports(policy)  # the lean path does not go through the layers
    ids = torch.tensor([[5, 6, 7, 8]])
    policy(input_ids=ids).logits.sum().backward()
    assert len(calls) == 2  # the forward, then the recomputation in the backward
    with torch.no_grad():
        policy(input_ids=ids)
    assert len(calls) == 3  # without gradients nothing is kept or recomputed


def test_activation_checkpointing_gives_the_same_update(tiny_config):
    common = {"train.steps": 2, "loss.entropy_coef": 0.01, "train.threads": 1}
    plain = run(tiny_config(**common), progress=False, log=False)
    recomputed = run(tiny_config(**common, **{"model.activation_checkpointing": True}), progress=False, log=False)
    a, b = policy_weights(plain), policy_weights(recomputed)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert tiny_config(**{"model.activation_checkpointing": True}).config_hash() == tiny_config().config_hash()


def test_export_of_a_lora_run_is_a_plain_model_with_merged_weights(tiny_config, tmp_path):
    from transformers import AutoModelForCausalLM

    from grpo_lab.runs.export import export
    from grpo_lab.runs.sources import load_source

    config = tiny_config(**{"train.steps": 2, "model.adapter.type": "lora", "optim.lr": 1e-2})
    result = run(config, progress=False, log=True)
    done = export(str(result.checkpoint.parent), tmp_path / "out")
    loaded = AutoModelForCausalLM.from_pretrained(done.folder)
    assert not any("lora" in k for k in loaded.state_dict())
    source = load_source(str(result.checkpoint.parent))
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, source.policy(input_ids=ids).logits,
                                   atol=1e-5, rtol=1e-5)
