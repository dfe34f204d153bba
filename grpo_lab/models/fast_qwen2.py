"""A lean forward pass of a Hugging Face `Qwen2ForCausalLM` for RL steps.

Same weights, same arithmetic: the parameters are read from the model at every call (an optimizer
step is seen at once, gradients flow into them), and each layer computes what
`Qwen2DecoderLayer.forward` computes (RMSNorm in float32, rotary positions, grouped-query
attention through `scaled_dot_product_attention`, SwiGLU MLP, the model's head). What it leaves
out is the generic model's per-call work (mask builders, cache objects, output records), and it
adds two savings an RL batch allows:

- prompt sharing: the G completions of a prompt carry the same prompt; each distinct prompt runs
  once and its keys and values are shared by the rows that carry it. This
  is exact: under causal attention a prompt's states do not depend on what follows it.
- a static KV cache for sampling: keys and values for prompt + completion are allocated once and
  each new token's are written in place.

The projections that read the same input (q|k|v, gate|up) run as one matrix product without
holding a second copy of the weights for long (`_FusedLinear`, `FUSE_BYTES`), so that the peak
memory of a step is the model state plus activations. A Qwen2Model trunk (PPO's critic) takes the
same path through `completion_hidden`.

`supports(model)` says whether a model can take this path; other models use the generic one,
which stays the reference the tests compare against.
"""

from __future__ import annotations

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
            and not getattr(_trunk(model), "gradient_checkpointing", False))


def _trunk(model):
    """The Qwen2Model of a Qwen2ForCausalLM, or the model itself when it is one."""
    return model if type(model).__name__ == "Qwen2Model" else model.model


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor):
    """Rows with identical prompts, wherever they sit: one row of each distinct prompt (U,) and each
    row's distinct prompt (B,). Rows are grouped by a hash of their tokens and mask, and the
    grouping is checked token by token; a collision falls back to comparing whole rows."""
    rows = torch.cat([prompt_ids, prompt_mask.long()], dim=1)
    weights = torch.randint(-2**62, 2**62, (rows.shape[1],), generator=torch.Generator().manual_seed(rows.shape[1]))
    key = (rows * weights.to(rows.device)).sum(-1)  # int64, wrapping on overflow
    _, inverse = torch.unique(key, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), rows.shape[0], dtype=torch.long, device=rows.device)
    first = first.scatter_reduce(0, inverse, torch.arange(rows.shape[0], device=rows.device), "amin")
    if not torch.equal(rows[first][inverse], rows):
        _, inverse = torch.unique(rows, dim=0, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1,), rows.shape[0], dtype=torch.long, device=rows.device)
        first = first.scatter_reduce(0, inverse, torch.arange(rows.shape[0], device=rows.device), "amin")
    return first, inverse


def _rms_norm(norm, x: torch.Tensor) -> torch.Tensor:
    """Qwen2RMSNorm: normalised in float32, cast back, then scaled (one fused op for float32 input)."""
    if x.dtype == torch.float32 and hasattr(F, "rms_norm"):
        return F.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _FusedLinear(torch.autograd.Function):
    """``x @ cat(weights).T (+ cat(biases))``: one matrix product over several projections that read
    the same input (q|k|v, gate|up), with gradients for each weight. Unlike ``F.linear`` over a
    ``torch.cat`` of the weights, it keeps no concatenated copy for the backward (a copy of nearly all
    the layer's weights, held from forward to backward); the backward rebuilds it one layer at a time."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, n_weights: int, *params: torch.Tensor) -> torch.Tensor:
        weights, biases = params[:n_weights], params[n_weights:]
        ctx.n_weights = n_weights
        ctx.save_for_backward(x, *weights)
        return F.linear(x, torch.cat(weights), torch.cat(biases) if biases else None)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, *weights = ctx.saved_tensors
        sizes = [w.shape[0] for w in weights]
        needs = ctx.needs_input_grad
        grad_x = grad @ torch.cat(weights) if needs[0] else None
        grad_w = (grad.T @ x).split(sizes) if any(needs[2: 2 + ctx.n_weights]) else (None,) * ctx.n_weights
        n_bias = len(needs) - 2 - ctx.n_weights
        grad_b = grad.sum(0).split(sizes) if n_bias and any(needs[2 + ctx.n_weights:]) else (None,) * n_bias
        return (grad_x, None, *grad_w, *grad_b)


def _fused_linear(x: torch.Tensor, weights, biases=()) -> tuple:
    """The outputs of several projections of `x` (q, k, v or gate, up): a tuple under autograd
    (`_FusedLinear`: one product, no copy kept), a list without (one product each, no copy)."""
    if isinstance(weights, tuple):
        return _FusedLinear.apply(x, len(weights), *weights, *biases).split([w.shape[0] for w in weights], dim=-1)
    return tuple(F.linear(x, w, b) for w, b in zip(weights, biases or [None] * len(weights)))


# Models whose q|k|v and gate|up weights take at most this many bytes run each of them as one matrix
# product over weights concatenated once per call of the model (under autograd too, where the copy
# is held until the backward). Above it the projections run one by one without a second copy of the
# weights (`_FusedLinear` under autograd), so that a large model's step never holds its weights twice.
FUSE_BYTES = 64 * 2**20


class _Model:
    """The model's parts, shapes and fused projection weights, looked up once per call.

    Hidden states are kept flat, (N, hidden) over all tokens of a call, so each projection is one
    matrix product over the prompt and the completion tokens together; attention alone sees the
    (rows, heads, length, head_dim) layout of each part."""

    def __init__(self, model):
        cfg = model.config
        self.model = model
        self.trunk = trunk = _trunk(model)
        self.layers = list(trunk.layers)
        self.heads = H = cfg.num_attention_heads
        self.kv_heads = KV = cfg.num_key_value_heads
        self.head_dim = D = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.rotary = trunk.rotary_emb
        self.dtype = trunk.embed_tokens.weight.dtype
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters())
        fused_bytes = sum(p.numel() * p.element_size() for layer in self.layers
                          for m in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                                    layer.mlp.gate_proj, layer.mlp.up_proj) for p in m.parameters())
        self.fold = fused_bytes <= FUSE_BYTES
        self.fused = []
        for layer in self.layers:
            a, mlp = layer.self_attn, layer.mlp
            if self.fold:
                self.fused.append((torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]),
                                   None if a.q_proj.bias is None else torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]),
                                   torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])))
            else:
                join = tuple if grad else list
                self.fused.append((join([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]),
                                   join([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]),
                                   join([mlp.gate_proj.weight, mlp.up_proj.weight])))
        self.qk_width, self.v_width = (H + KV) * D, KV * D

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        embed = self.trunk.embed_tokens
        return F.embedding(ids.reshape(-1), embed.weight, embed.padding_idx)  # (N, hidden)

    def final_norm(self, h: torch.Tensor) -> torch.Tensor:
        return _rms_norm(self.trunk.norm, h)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        lm = self.model.lm_head
        return F.linear(self.final_norm(h), lm.weight, lm.bias)

    def rotary_tables(self, positions: torch.Tensor):
        """cos, sin (N, 1, D) for positions of any shape (flattened), as Qwen2RotaryEmbedding computes them."""
        freqs = positions.reshape(-1, 1).float() * self.rotary.inv_freq.to(device=positions.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        scale = self.rotary.attention_scaling
        return (emb.cos() * scale).to(self.dtype)[:, None], (emb.sin() * scale).to(self.dtype)[:, None]

    def qkv(self, i: int, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Layer i's input (N, hidden) -> rotated queries (N, H, D), rotated keys and values (N, KV, D)."""
        qkv_w, qkv_b, _ = self.fused[i]
        x = _rms_norm(self.layers[i].input_layernorm, h)
        N, H, KV, D = h.shape[0], self.heads, self.kv_heads, self.head_dim
        if not self.fold:
            q, k, v = _fused_linear(x, qkv_w, qkv_b)
            q, k = q.view(N, H, D), k.view(N, KV, D)
            return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin, v.view(N, KV, D)
        qk, v = F.linear(x, qkv_w, qkv_b).split([self.qk_width, self.v_width], dim=-1)  # q | k | v: one product
        qk = qk.view(N, H + KV, D)
        q, k = (qk * cos + _rotate_half(qk) * sin).split([H, KV], dim=1)  # q and k rotated together
        return q, k, v.view(N, KV, D)

    def finish(self, i: int, h: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Residual after attention (attn (N, H*D)), then the MLP block."""
        layer, (_, _, gate_up) = self.layers[i], self.fused[i]
        o = layer.self_attn.o_proj
        h = torch.addmm(h, attn, o.weight.t()) if o.bias is None else h + F.linear(attn, o.weight, o.bias)
        x = _rms_norm(layer.post_attention_layernorm, h)
        if self.fold:
            gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
        else:
            gate, up = _fused_linear(x, gate_up)
        return torch.addmm(h, F.silu(gate) * up, layer.mlp.down_proj.weight.t())

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
            p = scores.softmax(-1, dtype=torch.float32).to(q.dtype)
        a = torch.bmm(p, v.reshape(B * KV, -1, D))  # (B * KV, G * Lq, D)
        return a.view(B, KV, H // KV, Lq, D).permute(0, 3, 1, 2, 4).reshape(B * Lq, H * D)

    def attention_bias(self, allowed: torch.Tensor) -> torch.Tensor:
        """Additive mask (B * KV, G * Lq, Lk) from a boolean (B, Lq, Lk) one: 0 where allowed, -inf elsewhere."""
        B, Lq, Lk = allowed.shape
        bias = torch.zeros(allowed.shape, dtype=self.dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))
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


def _completion_states(m: _Model, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
    """The residual stream (B, T, hidden) after the last layer at the positions that predict each
    completion token, each distinct prompt run once."""
    first, inverse = prompt_groups(prompt_ids, prompt_mask)
    p_ids, p_mask = prompt_ids[first], prompt_mask[first].bool()  # (U, Lp)
    (U, Lp), (B, T) = p_ids.shape, completion_ids.shape
    c_ids, c_len = completion_ids[:, : T - 1], T - 1  # the tokens whose states are needed
    c_pos = p_mask.sum(-1, keepdim=True)[inverse] + torch.arange(c_len, device=p_ids.device)  # (B, T-1)
    cos, sin = m.rotary_tables(torch.cat([_prompt_positions(p_mask).reshape(-1), c_pos.reshape(-1)]))
    p_bias = m.attention_bias(_causal(Lp, p_mask))
    c_bias = m.attention_bias(torch.cat([p_mask[inverse][:, None, :].expand(-1, c_len, -1),
                                         _causal(c_len, completion_mask[:, :c_len])], dim=-1))  # keys: prompt, completion
    n_p = U * Lp
    h = torch.cat([m.embed(p_ids), m.embed(c_ids)])  # (U*Lp + B*(T-1), hidden)
    for i in range(len(m.layers)):
        q, k, v = m.qkv(i, h, cos, sin)
        (qp, qc), (kp, kc), (vp, vc) = (x.split([n_p, B * c_len]) for x in (q, k, v))
        kp, vp = _heads(kp, U), _heads(vp, U)
        parts = [m.attention(i, _rows(qp, U), kp, vp, p_bias)]
        if c_len:
            parts.append(m.attention(i, _rows(qc, B), torch.cat([kp[inverse], _heads(kc, B)], dim=2),
                                     torch.cat([vp[inverse], _heads(vc, B)], dim=2), c_bias))
        h = m.finish(i, h, torch.cat(parts) if c_len else parts[0])
    hp, hc = h.split([n_p, B * c_len])
    last = hp.view(U, Lp, -1)[:, -1][inverse][:, None]  # (B, 1, hidden): the prompt's last state
    return torch.cat([last, hc.view(B, c_len, -1)], dim=1)  # position t-1 predicts token t


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
        shape = (B, m.kv_heads, L, m.head_dim)
        self.keys, self.values = [], []
        h = m.embed(p_ids)
        for i in range(len(m.layers)):
            q, k, v = m.qkv(i, h, cos, sin)
            k, v = _heads(k, U), _heads(v, U)
            h = m.finish(i, h, m.attention(i, _rows(q, U), k, v, bias))
            # zeros, not empty: a masked position's weight is 0, and 0 times a stale NaN would not be
            keys = torch.zeros(shape, dtype=k.dtype, device=device)
            values = torch.zeros(shape, dtype=v.dtype, device=device)
            keys[:, :, :Lp] = k[inverse]
            values[:, :, :Lp] = v[inverse]
            self.keys.append(keys)
            self.values.append(values)
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
