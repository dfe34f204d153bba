"""The lean Qwen2 path computes what the Hugging Face model computes: tokens, log-probs, gradients."""

from __future__ import annotations

import pytest
import torch

from grpo_lab.config import ModelConfig
from grpo_lab.models import char_tokenizer, tiny_qwen2
from grpo_lab.models import fast_qwen2
from grpo_lab.models.fast_qwen2 import prompt_groups, supports
from grpo_lab.rollout import sample, token_logprobs
from grpo_lab.rollout.encode import encode_prompts
from grpo_lab.rollout.sampler import draw

PROMPTS = ["1+2=", "1+2=", "1+2=", "3+4-5=", "3+4-5=", "3+4-5=", "9=", "9=", "9="]


def _model(kv_heads=None, seed=0):
    tokenizer = char_tokenizer("+,-0123456789=")
    torch.manual_seed(seed)
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=kv_heads, intermediate_size=64,
                      max_length=40)
    return tiny_qwen2(cfg, tokenizer).eval(), tokenizer


def _sample(model, tokenizer, prompts, fast, seed=1, **kw):
    ids, mask = encode_prompts(tokenizer, prompts)
    return sample(model, ids, mask, max_new_tokens=10, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                  generator=torch.Generator().manual_seed(seed), fast=fast, with_entropy=True, **kw)


@pytest.mark.parametrize("kv_heads", [None, 2])
@pytest.mark.parametrize("suppress_eos", [False, True])
def test_fast_sampler_matches_hf_sampler(kv_heads, suppress_eos):
    model, tokenizer = _model(kv_heads)
    assert supports(model)
    fast = _sample(model, tokenizer, PROMPTS, True, suppress_eos=suppress_eos)
    ref = _sample(model, tokenizer, PROMPTS, False, suppress_eos=suppress_eos)
    assert torch.equal(fast.completion_ids, ref.completion_ids)
    assert torch.equal(fast.completion_mask, ref.completion_mask)
    torch.testing.assert_close(fast.logprobs, ref.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.entropy, ref.entropy, atol=1e-5, rtol=0)
    if not suppress_eos:  # the sample mixes finished and unfinished rows, so padding is exercised
        assert 0 < int(fast.finished.sum()) < len(PROMPTS)


@pytest.mark.parametrize("kv_heads", [None, 2])
@pytest.mark.parametrize("prompts", [["3+4-5="], ["1+2=", "9=", "1+2=", "3+4-5=", "9="]], ids=["one_row", "interleaved"])
def test_fast_sampler_matches_hf_sampler_on_other_layouts(kv_heads, prompts):
    model, tokenizer = _model(kv_heads)
    fast, ref = (_sample(model, tokenizer, prompts, fast) for fast in (True, False))
    assert torch.equal(fast.completion_ids, ref.completion_ids)
    torch.testing.assert_close(fast.logprobs, ref.logprobs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kv_heads", [None, 2])
@pytest.mark.parametrize("rows", [9, 7], ids=["equal_groups", "unequal_groups"])
def test_fast_logprobs_and_gradients_match_hf_on_shuffled_rows(kv_heads, rows):
    model, tokenizer = _model(kv_heads)
    ro = _sample(model, tokenizer, PROMPTS, False)
    # groups not contiguous; with 7 of the 9 rows, the prompts have unequal numbers of rows
    ro = ro.select(torch.randperm(len(PROMPTS), generator=torch.Generator().manual_seed(0))[:rows])
    model.train()
    results = []
    for fast in (True, False):
        model.zero_grad()
        logp, entropy = token_logprobs(model, ro.input_ids, ro.attention_mask, ro.completion_ids.shape[1],
                                       temperature=0.7, with_entropy=True, fast=fast)
        ((logp + 0.1 * entropy) * ro.completion_mask).sum().backward()
        results.append((logp * ro.completion_mask, entropy * ro.completion_mask,
                        {n: p.grad.clone() for n, p in model.named_parameters()}))
    (lf, ef, gf), (lr, er, gr) = results
    torch.testing.assert_close(lf, lr, atol=1e-5, rtol=0)
    torch.testing.assert_close(ef, er, atol=1e-5, rtol=0)
    for name in gr:
        torch.testing.assert_close(gf[name], gr[name], atol=1e-5, rtol=1e-4, msg=name)


def test_sampler_logprobs_equal_fast_learner_logprobs():
    model, tokenizer = _model()
    ro = _sample(model, tokenizer, PROMPTS, True)
    logp, _ = token_logprobs(model, ro.input_ids, ro.attention_mask, ro.completion_ids.shape[1])
    torch.testing.assert_close(logp * ro.completion_mask, ro.logprobs, atol=1e-5, rtol=0)


def test_prompt_groups_finds_identical_prompts_anywhere():
    ids = torch.tensor([[0, 5, 6], [7, 8, 9], [0, 5, 6], [7, 8, 9], [0, 0, 4]])
    mask = (ids != 0).long()
    first, inverse = prompt_groups(ids, mask)
    assert len(first) == 3
    assert torch.equal(ids[first][inverse], ids)
    assert inverse[0] == inverse[2] and inverse[1] == inverse[3] and inverse[4] not in (inverse[0], inverse[1])


def test_prompt_groups_survive_a_hash_collision(monkeypatch):
    ids = torch.tensor([[0, 5, 6], [7, 8, 9], [0, 5, 6], [7, 8, 9], [0, 0, 4]])
    mask = (ids != 0).long()
    monkeypatch.setattr(fast_qwen2, "_hash_weights", lambda width: torch.zeros(width, dtype=torch.long))
    first, inverse = prompt_groups(ids, mask)  # every row hashes alike; the check must catch it
    assert len(first) == 3
    assert torch.equal(ids[first][inverse], ids)


def test_draw_is_multinomial_and_shards_by_rows():
    probs = torch.softmax(torch.randn(12, 17), -1)
    want = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(3)).squeeze(-1)
    assert torch.equal(draw(probs, torch.Generator().manual_seed(3)), want)
    # two processes with 6 rows each draw what one process draws for the 12 rows
    halves = [draw(probs[i * 6:(i + 1) * 6], torch.Generator().manual_seed(3), rows=(i * 6, 12)) for i in range(2)]
    assert torch.equal(torch.cat(halves), want)


def test_other_models_take_the_generic_path():
    from transformers import GPT2Config, GPT2LMHeadModel

    model, _ = _model()
    assert not supports(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=20)))
    model.model.gradient_checkpointing = True
    assert not supports(model)


@pytest.mark.parametrize("kv_heads", [None, 2])
def test_fast_critic_values_and_gradients_match_the_hf_trunk(kv_heads):
    from grpo_lab.models.critic import ValueModel

    model, tokenizer = _model(kv_heads)
    ro = _sample(model, tokenizer, PROMPTS, False)
    ro = ro.select(torch.randperm(len(PROMPTS), generator=torch.Generator().manual_seed(0)))
    critic = ValueModel.from_policy(model)
    torch.nn.init.normal_(critic.head.weight)  # a zero head would stop the trunk's gradient
    assert supports(critic.trunk)
    results = []
    for fast in (True, False):
        critic.zero_grad()
        if fast:
            values = critic(ro.input_ids, ro.attention_mask, ro.completion_ids.shape[1])
        else:  # the generic path: the trunk's output at the positions that predict each completion token
            T = ro.completion_ids.shape[1]
            out = critic.trunk(input_ids=ro.input_ids, attention_mask=ro.attention_mask,
                               position_ids=(ro.attention_mask.cumsum(-1) - 1).clamp(min=0), use_cache=False)
            values = critic.head(out.last_hidden_state[:, -T - 1:-1]).squeeze(-1)
        ((values ** 2) * ro.completion_mask).sum().backward()
        results.append((values * ro.completion_mask, {n: p.grad.clone() for n, p in critic.named_parameters()}))
    (vf, gf), (vr, gr) = results
    torch.testing.assert_close(vf, vr, atol=1e-5, rtol=0)
    for name in gr:
        torch.testing.assert_close(gf[name], gr[name], atol=1e-4, rtol=1e-4, msg=name)
