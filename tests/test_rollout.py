"""The KV-cache sampler against a no-cache reference, and the text <-> tensor layout."""

from __future__ import annotations

import pytest
import torch

from grpo_lab.config import ModelConfig
from grpo_lab.models import char_tokenizer, tiny_qwen2
from grpo_lab.rollout import sample, token_logprobs
from grpo_lab.rollout.encode import decode_completions, encode_completions, encode_prompts, token_char_ends


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizer = char_tokenizer("0123456789+-=,")
    torch.manual_seed(0)
    model = tiny_qwen2(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), tokenizer).eval()
    return model, tokenizer


PROMPTS = ["4+5+7+0-1=", "1+2=", "3-1+2=", "9-9="]


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_cache_matches_no_cache_reference(model_and_tokenizer, temperature, top_p):
    model, tok = model_and_tokenizer
    ids, mask = encode_prompts(tok, PROMPTS * 4)
    kw = dict(max_new_tokens=10, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, temperature=temperature,
              top_p=top_p)
    cached = sample(model, ids, mask, generator=torch.Generator().manual_seed(3), **kw)
    plain = sample(model, ids, mask, generator=torch.Generator().manual_seed(3), use_cache=False, **kw)
    assert torch.equal(cached.completion_ids, plain.completion_ids)
    assert torch.equal(cached.completion_mask, plain.completion_mask)
    torch.testing.assert_close(cached.logprobs, plain.logprobs, atol=1e-5, rtol=0)


def test_sampler_logprobs_equal_learner_logprobs(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ids, mask = encode_prompts(tok, PROMPTS)
    ro = sample(model, ids, mask, max_new_tokens=8, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                temperature=0.8, generator=torch.Generator().manual_seed(0))
    logp, entropy = token_logprobs(model, ro.input_ids, ro.attention_mask, ro.completion_ids.shape[1],
                                   temperature=0.8, with_entropy=True)
    torch.testing.assert_close(logp * ro.completion_mask, ro.logprobs, atol=1e-5, rtol=0)
    assert (entropy >= 0).all()


def test_same_generator_state_same_tokens_and_mask_semantics(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ids, mask = encode_prompts(tok, PROMPTS * 8)
    kw = dict(max_new_tokens=12, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    a = sample(model, ids, mask, generator=torch.Generator().manual_seed(5), **kw)
    b = sample(model, ids, mask, generator=torch.Generator().manual_seed(5), **kw)
    c = sample(model, ids, mask, generator=torch.Generator().manual_seed(6), **kw)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert not torch.equal(a.completion_ids, c.completion_ids)
    for row, m, done, lp in zip(a.completion_ids, a.completion_mask, a.finished, a.logprobs):
        n = int(m.sum())
        # the mask covers a prefix; EOS, when sampled, is its last token and nothing follows
        assert m[:n].all() and not m[n:].any()
        assert bool(done) == (row[n - 1].item() == tok.eos_token_id)
        assert (row[n:] == tok.pad_token_id).all()
        assert (lp[m == 0] == 0).all() and (lp[m == 1] < 0).all()


def test_greedy_is_argmax_and_suppress_eos_fills_the_length(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ids, mask = encode_prompts(tok, PROMPTS)
    kw = dict(max_new_tokens=6, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    g1 = sample(model, ids, mask, greedy=True, **kw)
    g2 = sample(model, ids, mask, greedy=True, generator=torch.Generator().manual_seed(9), **kw)
    assert torch.equal(g1.completion_ids, g2.completion_ids)
    fixed = sample(model, ids, mask, suppress_eos=True, generator=torch.Generator().manual_seed(0), **kw)
    assert fixed.completion_mask.sum().item() == len(PROMPTS) * 6 and not fixed.finished.any()


def test_encode_decode_round_trip(model_and_tokenizer):
    _, tok = model_and_tokenizer
    ids, mask = encode_prompts(tok, ["12+3=", "1="])
    assert ids.tolist()[1][:3] == [tok.pad_token_id] * 3 and mask.tolist() == [[1] * 5, [0, 0, 0, 1, 1]]
    c_ids, c_mask = encode_completions(tok, ["15", "1,22"])
    assert c_mask.sum(-1).tolist() == [3.0, 5.0]
    assert decode_completions(tok, c_ids, c_mask) == ["15", "1,22"]
    assert token_char_ends(tok, c_ids, c_mask) == [[0, 1, 1], [0, 1, 2, 3, 3]]


def test_tokenizer_saves_and_loads(tmp_path):
    from transformers import AutoTokenizer

    tok = char_tokenizer("0123456789+-=, ")
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "12 + 3=15,"
    assert again(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    assert again.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert (again.pad_token_id, again.eos_token_id) == (0, 1)


def test_sampling_runs_under_inference_mode_and_hands_back_ordinary_tensors(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ids, mask = encode_prompts(tok, PROMPTS)
    ro = sample(model, ids, mask, max_new_tokens=4, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                generator=torch.Generator().manual_seed(0), with_entropy=True)
    tensors = [ro.completion_ids, ro.completion_mask, ro.logprobs, ro.finished, ro.entropy]
    assert not any(t.is_inference() for t in tensors)
    # a later graph may save them (an inference tensor saved for backward raises)
    w = torch.ones((), requires_grad=True)
    (w * ro.logprobs * ro.completion_mask).sum().backward()
    assert torch.isclose(w.grad, (ro.logprobs * ro.completion_mask).sum())
    ro.completion_mask.mul_(1.0)  # and change them in place


def test_prompts_encode_once_per_distinct_prompt_in_order(model_and_tokenizer):
    _, tok = model_and_tokenizer
    prompts = ["1+2=", "12+3=", "1+2=", "1="]
    ids, mask = encode_prompts(tok, prompts)
    for row, prompt in zip(range(len(prompts)), prompts):
        alone, alone_mask = encode_prompts(tok, [prompt])
        n = len(prompt)
        assert ids[row, -n:].tolist() == alone[0].tolist() and mask[row].sum() == n == alone_mask.sum()
