"""Text <-> token tensors in the rollout layout: left-padded prompts, right-padded completions."""

from __future__ import annotations

import torch


def encode_prompts(tokenizer, prompts: list[str], device=None):
    """Left-padded prompt ids and mask, (B, Lp) each. Each distinct prompt is tokenized once (a
    group's G rows carry the same prompt)."""
    prompts = list(prompts)
    distinct = list(dict.fromkeys(prompts))
    encoded = dict(zip(distinct, tokenizer(distinct, add_special_tokens=False)["input_ids"]))
    ids = [encoded[p] for p in prompts]
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id
    out = torch.tensor([[pad] * (width - len(x)) + x for x in ids], dtype=torch.long).reshape(len(ids), width)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], dtype=torch.long).reshape(len(ids), width)
    return out.to(device), mask.to(device)


def encode_completions(tokenizer, completions: list[str], device=None):
    """Right-padded completion ids with EOS appended, and their float mask, (B, T) each."""
    ids = [x + [tokenizer.eos_token_id] for x in tokenizer(list(completions), add_special_tokens=False)["input_ids"]]
    width = max(len(x) for x in ids)
    out = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width))
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1.0
    return out.to(device), mask.to(device)


def decode_completions(tokenizer, completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> list[str]:
    """Completion texts without EOS and padding."""
    eos = tokenizer.eos_token_id
    kept = [[t for t, keep in zip(row, m) if keep and t != eos]
            for row, m in zip(completion_ids.tolist(), completion_mask.tolist())]
    return tokenizer.batch_decode(kept, skip_special_tokens=False)


def token_char_ends(tokenizer, completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> list[list[int]]:
    """For each completion, the index in its decoded text of each token's last character (-1 for a
    token that decodes to nothing). Maps a task's character-level step ends to token positions."""
    out = []
    for row, m in zip(completion_ids.tolist(), completion_mask.tolist()):
        ends, pos = [], 0
        for t, keep in zip(row, m):
            if not keep:
                break
            piece = "" if t == tokenizer.eos_token_id else tokenizer.decode([t], skip_special_tokens=False)
            pos += len(piece)
            ends.append(pos - 1)
        out.append(ends)
    return out
