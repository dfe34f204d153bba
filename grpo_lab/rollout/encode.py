"""Text <-> token tensors in the rollout layout: left-padded prompts, right-padded completions."""

from __future__ import annotations

import torch

from grpo_lab.rollout.sampler import Rollout


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


def pack_rows(prompts: list[list[int]], completions: list[list[int]], *, pad_id: int, device=None) -> Rollout:
    """Token-id lists in the rollout layout: prompts left-padded, completions (EOS included) right-padded."""
    width_p, width_c = max(map(len, prompts)), max(map(len, completions))
    prompt_ids = torch.full((len(prompts), width_p), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(prompts), width_p), dtype=torch.long)
    completion_ids = torch.full((len(prompts), width_c), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((len(prompts), width_c))
    for i, (p, c) in enumerate(zip(prompts, completions)):
        prompt_ids[i, width_p - len(p):], prompt_mask[i, width_p - len(p):] = torch.tensor(p), 1
        completion_ids[i, :len(c)], completion_mask[i, :len(c)] = torch.tensor(c), 1.0
    return Rollout(prompt_ids.to(device), prompt_mask.to(device), completion_ids.to(device),
                   completion_mask.to(device), torch.zeros_like(completion_mask).to(device),
                   torch.ones(len(prompts), dtype=torch.bool, device=device))


def unpack_rows(rollout: Rollout) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids through EOS) of each row, without padding: the inverse of `pack_rows`."""
    out = []
    for p, pm, c, cm in zip(rollout.prompt_ids.tolist(), rollout.prompt_mask.tolist(),
                            rollout.completion_ids.tolist(), rollout.completion_mask.tolist()):
        out.append(([t for t, m in zip(p, pm) if m], [t for t, m in zip(c, cm) if m]))
    return out
