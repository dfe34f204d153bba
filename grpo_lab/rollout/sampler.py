"""Batched sampling with a KV cache, and log-probs of completions under any policy.

Layout: prompts are left-padded to a common length Lp, completions right-padded to T. A
completion's mask is 1 on every sampled token up to and including EOS, so the EOS decision is
trained like any other token. Log-probs are those of the distribution the tokens are drawn from,
`softmax(logits / temperature)` truncated to its top-p nucleus and renormalised when top_p < 1,
the same quantity `token_logprobs` computes for the learner, so the sampler's log-probs can stand
in as old log-probs.

A Qwen2 model takes the lean path of `grpo_lab.models.fast_qwen2` (static KV cache, one prompt
pass per group of identical prompts); `fast=False`, and every other model, take the generic
Hugging Face path, which is the reference the lean one is tested against.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields, is_dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from grpo_lab.models import fast_qwen2
from grpo_lab.models.positions import position_ids


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


def _ordinary(x):
    """`x` with every inference tensor in it (tensors, tuples, dataclasses such as Rollout) cloned
    into an ordinary tensor, which a later autograd graph may use and save."""
    if isinstance(x, torch.Tensor):
        return x.clone() if x.is_inference() else x
    if isinstance(x, tuple):
        return type(x)(*map(_ordinary, x)) if hasattr(x, "_fields") else tuple(map(_ordinary, x))
    if is_dataclass(x) and not isinstance(x, type):
        return type(x)(**{f.name: _ordinary(getattr(x, f.name)) for f in fields(x)})
    return x


def inference(fn):
    """Run `fn` under `torch.inference_mode` (no autograd bookkeeping at all: cheaper per operation
    than no_grad, which counts for the many small operations of sampling) and return its results as
    ordinary tensors."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode():
            out = fn(*args, **kwargs)
        return _ordinary(out)
    return wrapper


def draw(probs: torch.Tensor, generator: Optional[torch.Generator], rows: Optional[tuple[int, int]] = None):
    """One token per row of `probs` (B, V), drawn as torch.multinomial(probs, 1) draws it on CPU:
    argmax(probs / q) with q ~ Exp(1) drawn from `generator` for every (row, token).

    `rows=(offset, total)` says these are rows offset .. offset+B of a batch of `total` rows split
    over processes: the noise of all `total` rows is drawn and this process keeps its own, so each
    row gets the token one process would have drawn for it.
    """
    offset, total = rows if rows is not None else (0, probs.shape[0])
    noise = torch.empty((total, probs.shape[1]), dtype=probs.dtype, device=probs.device)
    noise = noise.exponential_(1, generator=generator)[offset: offset + probs.shape[0]]
    return (probs / noise).argmax(-1)


def nucleus(logp: torch.Tensor, top_p: float, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Log-probs of the top-p distribution, (..., V) -> (..., V): the smallest set of tokens whose
    mass reaches `top_p` (and `keep`, a token index per row, always in it), renormalised; -inf
    outside. The set is chosen without gradient; the log-probs inside keep theirs."""
    with torch.no_grad():
        sorted_probs, order = logp.exp().sort(dim=-1, descending=True)
        outside_sorted = sorted_probs.cumsum(-1) - sorted_probs > top_p
        outside = torch.zeros_like(outside_sorted).scatter(-1, order, outside_sorted)
        if keep is not None:
            outside = outside.scatter(-1, keep[..., None], False)
    masked = logp.masked_fill(outside, float("-inf"))
    return masked - torch.logsumexp(masked, dim=-1, keepdim=True)


def _next_token(logits: torch.Tensor, *, temperature: float, top_p: float, greedy: bool,
                generator: Optional[torch.Generator], rows: Optional[tuple[int, int]] = None):
    """The next token of each row and the log-probs (B, V) of the distribution it was drawn from:
    the tempered softmax, truncated to its nucleus when top_p < 1."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)  # (B, V)
    if greedy:
        token = logp.argmax(-1)
    else:
        if top_p < 1.0:
            logp = nucleus(logp, top_p)
        token = draw(logp.exp(), generator, rows)
    return token, logp


class _GenericDecoder:
    """Any Hugging Face causal LM: a DynamicCache, or (use_cache=False) the whole sequence every step."""

    def __init__(self, model, prompt_ids, prompt_mask, use_cache: bool):
        self.model, self.use_cache = model, use_cache
        self.attn = prompt_mask.long()
        from transformers import DynamicCache

        self.cache = DynamicCache() if use_cache else None
        self.ids, self.positions = prompt_ids, position_ids(self.attn)

    def _logits(self) -> torch.Tensor:
        out = self.model(input_ids=self.ids, attention_mask=self.attn, position_ids=self.positions,
                         past_key_values=self.cache, use_cache=self.use_cache, logits_to_keep=1)
        return out.logits[:, -1]

    def first_logits(self) -> torch.Tensor:
        return self._logits()

    def advance(self, token: torch.Tensor) -> torch.Tensor:
        self.attn = torch.cat([self.attn, torch.ones_like(self.attn[:, :1])], dim=1)
        if self.use_cache:
            self.ids, self.positions = token[:, None], self.positions[:, -1:] + 1
        else:
            self.ids = torch.cat([self.ids, token[:, None]], dim=1)
            self.positions = position_ids(self.attn)
        return self._logits()


def _on_device(generator: Optional[torch.Generator], device: torch.device) -> Optional[torch.Generator]:
    """A generator on `device`: the given one, or (a CPU generator for a GPU batch) one seeded from a
    draw of it, so runs stay reproducible from the CPU generator's state."""
    if generator is None or generator.device.type == torch.device(device).type:
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


@inference
def sample(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, max_new_tokens: int, eos_id: int,
           pad_id: int, temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
           generator: Optional[torch.Generator] = None, with_entropy: bool = False,
           suppress_eos: bool = False, use_cache: bool = True, fast: bool = True,
           rows: Optional[tuple[int, int]] = None) -> Rollout:
    """Sample up to `max_new_tokens` tokens for each left-padded prompt row.

    `generator` drives every random draw, so the same generator state gives the same tokens.
    `suppress_eos` forbids EOS (fixed-length benchmarks). `use_cache=False` recomputes the whole
    sequence every step; it exists as the reference the cached path is tested against. `fast=False`
    keeps a Qwen2 model on the generic path. `rows` places this batch in a larger one split over
    processes (see `draw`).
    """
    B, device = prompt_ids.shape[0], prompt_ids.device
    # greedy decoding draws nothing: it must not take a seed from (and so move) a training generator
    generator = None if greedy else _on_device(generator, device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    tokens, logps, entropies = [], [], []
    if fast and use_cache and fast_qwen2.supports(model):
        decoder = fast_qwen2.StaticDecoder(model, prompt_ids, prompt_mask, max_new_tokens)
    else:
        decoder = _GenericDecoder(model, prompt_ids, prompt_mask, use_cache)
    logits = decoder.first_logits()
    for step in range(max_new_tokens):
        if suppress_eos:
            logits = logits.clone()
            logits[:, eos_id] = float("-inf")
        token, logp = _next_token(logits, temperature=temperature, top_p=top_p, greedy=greedy, generator=generator,
                                  rows=rows)
        token = token.masked_fill(done, pad_id)
        tokens.append(token)
        logps.append(logp.gather(-1, token[:, None]).squeeze(-1))
        if with_entropy:
            entropies.append(-(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1))
        done = done | (token == eos_id)
        if step == max_new_tokens - 1 or (not suppress_eos and bool(done.all())):
            break
        logits = decoder.advance(token)
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
                   temperature: float = 1.0, top_p: float = 1.0, with_entropy: bool = False, fast: bool = True):
    """Log-probs (B, T) of the last `completion_len` tokens of `input_ids` under `model`, with
    gradients when called outside no_grad; and their entropies (B, T) when asked. With top_p < 1
    they are those of the distribution the sampler draws from, the tempered softmax truncated to
    its nucleus (`nucleus`; the token itself always counts in it, so its log-prob is finite). A
    Qwen2 model runs each group of identical prompts once (`fast=False` runs every row in full)."""
    if fast and fast_qwen2.supports(model):
        T = completion_len
        logits = fast_qwen2.completion_logits(model, input_ids[:, :-T], attention_mask[:, :-T], input_ids[:, -T:],
                                              attention_mask[:, -T:])
    else:
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                    use_cache=False, logits_to_keep=completion_len + 1)
        logits = out.logits[:, :-1]  # (B, T, V): position t predicts token t+1
    logits = logits.float() / temperature
    logp_all = F.log_softmax(logits, dim=-1)
    targets = input_ids[:, -completion_len:]
    if top_p < 1.0:
        logp_all = nucleus(logp_all, top_p, keep=targets)
    logp = logp_all.gather(-1, targets[..., None]).squeeze(-1)
    if not with_entropy:
        return logp, None
    entropy = -(logp_all.exp() * logp_all.nan_to_num(neginf=0.0)).sum(-1)
    return logp, entropy
