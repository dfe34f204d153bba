"""A lean forward pass of a Hugging Face `Qwen2ForCausalLM` for RL steps.

Same weights, same arithmetic: the parameters are read from the model at every call (an optimizer
step is seen at once, gradients flow into them), and each layer computes what
`Qwen2DecoderLayer.forward` computes (RMSNorm in float32, rotary positions, grouped-query
attention, SwiGLU MLP, the model's head). What it leaves out is the generic model's per-call work
(mask builders, cache objects, output records), and it adds two savings an RL batch allows:

- prompt sharing: the G completions of a prompt carry the same prompt; each distinct prompt runs
  once and its keys and values are shared by the rows that carry it. This
  is exact: under causal attention a prompt's states do not depend on what follows it.
- a static KV cache for sampling: keys and values for prompt + completion are allocated once and
  each new token's are written in place.

At the sizes an RL step on a CPU runs (tens of rows per decoding step) the time goes to the number
of operations more than to the arithmetic, so each layer is written in few of them: residuals
added inside the matrix products, rotary positions as one roll, attention as two batched products
with a precomputed additive mask. Every projection reads the model's own weight (no concatenated
copies: they saved nothing measurable and would hold the weights twice), so the peak memory of a
step is the model state plus activations. A Qwen2Model trunk (PPO's critic) takes the same path
through `completion_hidden`.

`supports(model)` says whether a model can take this path; other models use the generic one,
which stays the reference the tests compare against.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def supports(model) -> bool:
    """A Qwen2ForCausalLM (or its trunk, a Qwen2Model) with default rotary positions, full attention
    and a SiLU MLP."""
    if type(model).__name__ not in ("Qwen2ForCausalLM", "Qwen2Model"):
        return False
    cfg = model.config
    rope = getattr(cfg, "rope_parameters", None) or {}
    return (rope.get("rope_type", "default") == "default" and not getattr(cfg, "use_sliding_window", False)
            and cfg.hidden_act == "silu" and not getattr(cfg, "attention_dropout", 0.0)
            and not getattr(_trunk(model), "gradient_checkpointing", False)
            and not hasattr(_trunk(model).layers[0].self_attn.q_proj, "base_layer"))  # adapters: the generic path


def _trunk(model):
    """The Qwen2Model of a Qwen2ForCausalLM, or the model itself when it is one."""
    return model if type(model).__name__ == "Qwen2Model" else model.model


@functools.lru_cache(maxsize=64)
def _hash_weights(width: int) -> torch.Tensor:
    return torch.randint(-2**62, 2**62, (width,), generator=torch.Generator().manual_seed(width))


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor):
    """Rows with identical prompts, wherever they sit: one row of each distinct prompt (U,) and each
    row's distinct prompt (B,). Rows are grouped by a hash of their tokens and mask, and the
    grouping is checked token by token; a collision falls back to comparing whole rows."""
    rows = torch.cat([prompt_ids, prompt_mask.long()], dim=1)
    key = (rows * _hash_weights(rows.shape[1]).to(rows.device)).sum(-1)  # int64, wrapping on overflow
    inverse = torch.unique(key, return_inverse=True)[1]
    first = _first_rows(inverse)
    if not torch.equal(rows[first][inverse], rows):  # a collision: compare whole rows
        inverse = torch.unique(rows, dim=0, return_inverse=True)[1]
        first = _first_rows(inverse)
    return first, inverse


def _first_rows(inverse: torch.Tensor) -> torch.Tensor:
    """The first row of each group (U,), from each row's group (B,)."""
    B = inverse.shape[0]
    first = torch.full((int(inverse.max()) + 1,), B, dtype=torch.long, device=inverse.device)
    return first.scatter_reduce(0, inverse, torch.arange(B, device=inverse.device), "amin")


def _rms_norm(norm, x: torch.Tensor) -> torch.Tensor:
    """Qwen2RMSNorm: normalised in float32, cast back, then scaled (one fused op for float32 input)."""
    if x.dtype == torch.float32 and hasattr(F, "rms_norm"):
        return F.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(x.dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions, ``x * cos + rotate_half(x) * sin``, with rotate_half(x) = (-x2, x1) written as
    a roll of x times a sine whose first half is negated (`rotary_tables`): the same numbers, in
    fewer operations."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin


class _Model:
    """The model's parts and shapes, looked up once per call.

    Hidden states are kept flat, (N, hidden) over all tokens of a call, so each projection is one
    matrix product over the prompt and the completion tokens together; attention alone sees the
    (rows, heads, length, head_dim) layout of each part."""

    def __init__(self, model):
        cfg = model.config
        self.model = model
        self.trunk = trunk = _trunk(model)
        self.layers = list(trunk.layers)
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.rotary = trunk.rotary_emb
        self.dtype = trunk.embed_tokens.weight.dtype
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        embed = self.trunk.embed_tokens
        return F.embedding(ids.reshape(-1), embed.weight, embed.padding_idx)  # (N, hidden)

    def final_norm(self, h: torch.Tensor) -> torch.Tensor:
        return _rms_norm(self.trunk.norm, h)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        lm = self.model.lm_head
        return F.linear(self.final_norm(h), lm.weight, lm.bias)

    def rotary_tables(self, positions: torch.Tensor):
        """cos and signed sin (N, 1, D) for positions of any shape (flattened): cos and sin as
        Qwen2RotaryEmbedding computes them, the first half of sin negated (see `_rope`)."""
        freqs = positions.reshape(-1, 1).float() * self.rotary.inv_freq.to(device=positions.device, dtype=torch.float)
        scale = self.rotary.attention_scaling
        cos = torch.cat((freqs, freqs), dim=-1).cos() * scale
        sin = torch.cat((-freqs.sin(), freqs.sin()), dim=-1) * scale
        return cos.to(self.dtype)[:, None], sin.to(self.dtype)[:, None]

    def qkv(self, i: int, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Layer i's input (N, hidden) -> rotated queries (N, H, D), rotated keys and values (N, KV, D)."""
        a = self.layers[i].self_attn
        x = _rms_norm(self.layers[i].input_layernorm, h)
        N, D = h.shape[0], self.head_dim
        q = F.linear(x, a.q_proj.weight, a.q_proj.bias).view(N, self.heads, D)
        k = F.linear(x, a.k_proj.weight, a.k_proj.bias).view(N, self.kv_heads, D)
        v = F.linear(x, a.v_proj.weight, a.v_proj.bias).view(N, self.kv_heads, D)
        return _rope(q, cos, sin), _rope(k, cos, sin), v

    def finish(self, i: int, h: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Residual after attention (attn (N, H*D)), then the MLP block; each residual is added inside
        its matrix product."""
        layer = self.layers[i]
        o, mlp = layer.self_attn.o_proj, layer.mlp
        h = torch.addmm(h, attn, o.weight.t()) if o.bias is None else h + F.linear(attn, o.weight, o.bias)
        x = _rms_norm(layer.post_attention_layernorm, h)
        act = F.silu(F.linear(x, mlp.gate_proj.weight)) * F.linear(x, mlp.up_proj.weight)
        return torch.addmm(h, act, mlp.down_proj.weight.t())

    def attention(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """q (B, Lq, H, D), k and v (B, KV, Lk, D), bias (B * KV, G * Lq, Lk) additive (`attention_bias`)
        -> (B * Lq, H * D). The G = H / KV queries that share a key head are one batch entry of
        plain batched products (no copies of keys for grouped-query attention; at these sizes the
        products beat the fused attention kernel, forward and backward)."""
        B, Lq, H, D = q.shape
        KV = k.shape[1]
        q = q.reshape(B, Lq, KV, H // KV, D).permute(0, 2, 3, 1, 4).reshape(B * KV, -1, D)
        scores = torch.baddbmm(bias, q, k.reshape(B * KV, -1, D).transpose(1, 2), alpha=self.layers[i].self_attn.scaling)
        if scores.dtype == torch.float32:
            p = scores.softmax(-1)
        else:  # softmax in float32, as the Hugging Face attention computes it
            p = scores.softmax(-1, dtype=torch.float32).to(scores.dtype)  # under autocast q may be float32
        a = torch.bmm(p, v.reshape(B * KV, -1, D))  # (B * KV, G * Lq, D)
        return a.view(B, KV, H // KV, Lq, D).permute(0, 3, 1, 2, 4).reshape(B * Lq, H * D)

    def compute_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype the attention products compute in: under autocast its dtype (bf16), so the KV cache
        and the masks are made in it once rather than cast at every product (the same values)."""
        return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else self.dtype

    def attention_bias(self, allowed: torch.Tensor) -> torch.Tensor:
        """Additive mask (B * KV, G * Lq, Lk) from a boolean (B, Lq, Lk) one: 0 where allowed, -inf elsewhere."""
        B, Lq, Lk = allowed.shape
        bias = torch.zeros(allowed.shape, dtype=self.compute_dtype(allowed.device), device=allowed.device)
        bias.masked_fill_(~allowed, float("-inf"))
        G = self.heads // self.kv_heads
        return bias[:, None, None].expand(B, self.kv_heads, G, Lq, Lk).reshape(B * self.kv_heads, G * Lq, Lk)


def _heads(x: torch.Tensor, rows: int) -> torch.Tensor:
    """(rows * L, heads, D) -> (rows, heads, L, D)."""
    return x.view(rows, -1, *x.shape[1:]).transpose(1, 2)


def _rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """(rows * L, heads, D) -> (rows, L, heads, D)."""
    return x.view(rows, -1, *x.shape[1:])


def _causal(length: int, key_valid: torch.Tensor) -> torch.Tensor:
    """(B, L, L) causal mask over valid keys; a row always sees itself, so padding rows stay finite."""
    eye = torch.eye(length, dtype=torch.bool, device=key_valid.device)
    tril = torch.ones(length, length, dtype=torch.bool, device=key_valid.device).tril()
    return tril & (key_valid[:, None, :].bool() | eye)


def _prompt_positions(prompt_mask: torch.Tensor) -> torch.Tensor:
    return (prompt_mask.long().cumsum(-1) - 1).clamp_(min=0)


def completion_logits(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                      completion_mask: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, V) that predict each completion token, with gradients outside no_grad.

    Left-padded prompts (B, Lp), right-padded completions (B, T): the same numbers as
    `model(cat(prompt, completion))` at the positions that predict the completion. The last
    completion token predicts nothing and no earlier token attends to it, so it is not run.
    """
    m = _Model(model)
    return m.head(_completion_states(m, prompt_ids, prompt_mask, completion_ids, completion_mask))


def completion_hidden(trunk, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                      completion_mask: torch.Tensor) -> torch.Tensor:
    """A Qwen2Model's last hidden states (B, T, hidden), final norm applied, at the positions that
    predict each completion token: `trunk(cat(prompt, completion)).last_hidden_state` there."""
    m = _Model(trunk)
    return m.final_norm(_completion_states(m, prompt_ids, prompt_mask, completion_ids, completion_mask))


def _sorted_groups(inverse: torch.Tensor, U: int):
    """(order, G): when every distinct prompt has G rows, a stable order of the rows that puts each
    prompt's rows together (None when they already are); (None, 0) when prompts have unequal rows."""
    B = inverse.shape[0]
    if B % U:
        return None, 0
    G = B // U
    sorted_inverse, order = torch.sort(inverse, stable=True)
    if not torch.equal(sorted_inverse, torch.arange(U, device=inverse.device).repeat_interleave(G)):
        return None, 0
    return (None if torch.equal(sorted_inverse, inverse) else order), G


def _completion_states(m: _Model, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
    """The residual stream (B, T, hidden) after the last layer at the positions that predict each
    completion token, each distinct prompt run once. When every prompt has the same number of rows
    they run sorted by prompt (and come back in the caller's order), so that a prompt's keys and
    values reach its rows by broadcasting instead of a gather, whose backward is a scatter."""
    first, inverse = prompt_groups(prompt_ids, prompt_mask)
    p_ids, p_mask = prompt_ids[first], prompt_mask[first].bool()  # (U, Lp)
    (U, Lp), (B, T) = p_ids.shape, completion_ids.shape
    order, G = _sorted_groups(inverse, U)
    if order is not None:
        inverse, completion_ids, completion_mask = inverse[order], completion_ids[order], completion_mask[order]
    c_ids, c_len = completion_ids[:, : T - 1], T - 1  # the tokens whose states are needed
    c_pos = p_mask.sum(-1, keepdim=True)[inverse] + torch.arange(c_len, device=p_ids.device)  # (B, T-1)
    cos, sin = m.rotary_tables(torch.cat([_prompt_positions(p_mask).reshape(-1), c_pos.reshape(-1)]))
    p_bias = m.attention_bias(_causal(Lp, p_mask))
    c_bias = m.attention_bias(torch.cat([p_mask[inverse][:, None, :].expand(-1, c_len, -1),
                                         _causal(c_len, completion_mask[:, :c_len])], dim=-1))  # keys: prompt, completion

    def with_prompt(prompt_part: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """Each row's keys (or values): its prompt's (U, KV, Lp, D), then its own (B, KV, T-1, D)."""
        if G:
            shared = prompt_part[:, None].expand(U, G, *prompt_part.shape[1:])
            return torch.cat([shared, own.view(U, G, *own.shape[1:])], dim=3).view(B, *own.shape[1:2], -1, own.shape[-1])
        return torch.cat([prompt_part[inverse], own], dim=2)

    n_p = U * Lp
    h = torch.cat([m.embed(p_ids), m.embed(c_ids)])  # (U*Lp + B*(T-1), hidden)
    for i in range(len(m.layers)):
        q, k, v = m.qkv(i, h, cos, sin)
        (qp, qc), (kp, kc), (vp, vc) = (x.split([n_p, B * c_len]) for x in (q, k, v))
        kp, vp = _heads(kp, U), _heads(vp, U)
        parts = [m.attention(i, _rows(qp, U), kp, vp, p_bias)]
        if c_len:
            parts.append(m.attention(i, _rows(qc, B), with_prompt(kp, _heads(kc, B)), with_prompt(vp, _heads(vc, B)),
                                     c_bias))
        h = m.finish(i, h, torch.cat(parts) if c_len else parts[0])
    hp, hc = h.split([n_p, B * c_len])
    last = hp.view(U, Lp, -1)[:, -1][inverse][:, None]  # (B, 1, hidden): the prompt's last state
    states = torch.cat([last, hc.view(B, c_len, -1)], dim=1)  # position t-1 predicts token t
    return states if order is None else states[torch.argsort(order)]


class StaticDecoder:
    """Sampling state over a preallocated KV cache: `first_logits()` after the (shared) prompt pass,
    then `advance(token)` -> the next logits, one token per call. The rotary tables of every
    decoding step and the additive mask are made once, up front; every step attends over the whole
    cache, the positions not yet written masked (weight exactly 0), so each step's products have
    the same shapes (small batched products vary several-fold in speed with their sizes)."""

    def __init__(self, model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int):
        self.m = m = _Model(model)
        first, inverse = prompt_groups(prompt_ids, prompt_mask)
        p_ids, p_mask = prompt_ids[first], prompt_mask[first].bool()
        (B, Lp), U, device = prompt_ids.shape, p_ids.shape[0], prompt_ids.device
        self.Lp, self.t = Lp, 0
        L = Lp + max(max_new_tokens - 1, 0)  # the positions ever written: the last token is never run
        allowed = torch.zeros(B, 1, L, dtype=torch.bool, device=device)
        allowed[:, 0, :Lp] = prompt_mask.bool()
        # (B * KV, G, L), its own memory (a position is opened in place as it is written)
        self.bias = m.attention_bias(allowed).contiguous()
        positions = prompt_mask.long().sum(-1) + torch.arange(max_new_tokens, device=device)[:, None]  # (steps, B)
        cos, sin = m.rotary_tables(positions)
        self.cos, self.sin = cos.view(max_new_tokens, B, 1, -1), sin.view(max_new_tokens, B, 1, -1)
        cos, sin = m.rotary_tables(_prompt_positions(p_mask))
        bias = m.attention_bias(_causal(Lp, p_mask))
        # every layer's keys and values in one block; the positions not yet written are zeros, not
        # garbage: a masked position's weight is 0, and 0 times a stale NaN would not be
        cache = torch.empty((len(m.layers), 2, B, m.kv_heads, L, m.head_dim), dtype=m.compute_dtype(device),
                            device=device)
        cache[..., Lp:, :] = 0.0
        order, G = _sorted_groups(inverse, U)
        if order is not None:  # G > 0 only when each prompt's rows already sit together
            G = 0
        self.keys, self.values = cache[:, 0], cache[:, 1]
        h = m.embed(p_ids)
        for i in range(len(m.layers)):
            q, k, v = m.qkv(i, h, cos, sin)
            k, v = _heads(k, U), _heads(v, U)
            h = m.finish(i, h, m.attention(i, _rows(q, U), k, v, bias))
            for part, new in ((self.keys[i], k), (self.values[i], v)):
                if G:  # each prompt's rows together, G of them: one broadcast copy
                    part.view(U, G, *part.shape[1:])[:, :, :, :Lp] = new[:, None]
                else:
                    part[:, :, :Lp] = new[inverse]
        self._first = m.head(h.view(U, Lp, -1)[:, -1])[inverse]  # (B, V)

    def first_logits(self) -> torch.Tensor:
        return self._first

    def advance(self, token: torch.Tensor) -> torch.Tensor:
        m, at, t = self.m, self.Lp + self.t, self.t
        self.bias[:, :, at] = 0.0
        cos, sin = self.cos[t], self.sin[t]
        h = m.embed(token)  # (B, hidden)
        for i, (keys, values) in enumerate(zip(self.keys, self.values)):
            q, k, v = m.qkv(i, h, cos, sin)
            keys[:, :, at] = k
            values[:, :, at] = v
            h = m.finish(i, h, m.attention(i, q[:, None], keys, values, self.bias))
        self.t += 1
        return m.head(h)
