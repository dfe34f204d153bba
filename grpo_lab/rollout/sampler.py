"""Batched sampling with a KV cache, and log-probs of completions under any policy.

Layout: prompts are left-padded to a common length Lp, completions right-padded to T. A
completion's mask is 1 on every sampled token up to and including EOS, so the EOS decision is
trained like any other token. Log-probs are those of the tempered distribution
`softmax(logits / temperature)` before top-p truncation, the same quantity `token_logprobs`
computes for the learner, so the sampler's log-probs can stand in as old log-probs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from transformers import DynamicCache


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # (B, Lp) left-padded
    prompt_mask: torch.Tensor  # (B, Lp) 1 on prompt tokens
    completion_ids: torch.Tensor  # (B, T) right-padded with pad_id
    completion_mask: torch.Tensor  # (B, T) float, 1 on sampled tokens through EOS
    logprobs: torch.Tensor  # (B, T) sampler log-probs, 0 where the mask is 0
    finished: torch.Tensor  # (B,) bool: EOS was sampled
    entropy: Optional[torch.Tensor] = None  # (B, T) per-token entropy of the tempered distribution

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask.to(self.completion_mask.dtype), self.completion_mask], dim=1)

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)

    def select(self, index: torch.Tensor) -> "Rollout":
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return Rollout(*(pick(getattr(self, f)) for f in self.__dataclass_fields__))


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on each row's first real token (left padding aware)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)


def _next_token(logits: torch.Tensor, *, temperature: float, top_p: float, greedy: bool,
                generator: Optional[torch.Generator]):
    logp = F.log_softmax(logits.float() / temperature, dim=-1)  # (B, V)
    if greedy:
        token = logp.argmax(-1)
    else:
        probs = logp.exp()
        if top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep the smallest set with mass >= top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return token, logp


@torch.no_grad()
def sample(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, max_new_tokens: int, eos_id: int,
           pad_id: int, temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
           generator: Optional[torch.Generator] = None, with_entropy: bool = False,
           suppress_eos: bool = False, use_cache: bool = True) -> Rollout:
    """Sample up to `max_new_tokens` tokens for each left-padded prompt row.

    `generator` drives every random draw, so the same generator state gives the same tokens.
    `suppress_eos` forbids EOS (fixed-length benchmarks). `use_cache=False` recomputes the whole
    sequence every step; it exists as the reference the cached path is tested against.
    """
    B, device = prompt_ids.shape[0], prompt_ids.device
    attn = prompt_mask.long()
    done = torch.zeros(B, dtype=torch.bool, device=device)
    tokens, logps, entropies = [], [], []
    cache = DynamicCache() if use_cache else None
    ids, positions = prompt_ids, position_ids(attn)
    for step in range(max_new_tokens):
        out = model(input_ids=ids, attention_mask=attn, position_ids=positions, past_key_values=cache,
                    use_cache=use_cache, logits_to_keep=1)
        logits = out.logits[:, -1]
        if suppress_eos:
            logits = logits.clone()
            logits[:, eos_id] = float("-inf")
        token, logp = _next_token(logits, temperature=temperature, top_p=top_p, greedy=greedy, generator=generator)
        token = token.masked_fill(done, pad_id)
        tokens.append(token)
        logps.append(logp.gather(-1, token[:, None]).squeeze(-1))
        if with_entropy:
            entropies.append(-(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1))
        done = done | (token == eos_id)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        if use_cache:
            ids, positions = token[:, None], positions[:, -1:] + 1
        else:
            ids = torch.cat([ids, token[:, None]], dim=1)
            positions = position_ids(attn)
    completion_ids = torch.stack(tokens, dim=1)  # (B, T)
    # a token counts if no EOS came strictly before it
    eos = completion_ids == eos_id
    before = eos.long().cumsum(-1) - eos.long()
    mask = (before == 0).float()
    completion_ids = completion_ids.masked_fill(mask == 0, pad_id)
    logprobs = torch.stack(logps, dim=1) * mask
    entropy = torch.stack(entropies, dim=1) * mask if with_entropy else None
    return Rollout(prompt_ids, prompt_mask, completion_ids, mask, logprobs, eos.any(-1), entropy)


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_len: int, *,
                   temperature: float = 1.0, with_entropy: bool = False):
    """Log-probs (B, T) of the last `completion_len` tokens of `input_ids` under `model`, with
    gradients when called outside no_grad; and their entropies (B, T) when asked."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                use_cache=False, logits_to_keep=completion_len + 1)
    logits = out.logits[:, :-1].float() / temperature  # (B, T, V): position t predicts token t+1
    logp_all = F.log_softmax(logits, dim=-1)
    targets = input_ids[:, -completion_len:]
    logp = logp_all.gather(-1, targets[..., None]).squeeze(-1)
    if not with_entropy:
        return logp, None
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy
