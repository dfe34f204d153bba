"""The PPO critic: a scalar value head on its own copy of a causal LM's trunk."""

from __future__ import annotations

import copy

import torch
from torch import nn

from grpo_lab.models import fast_qwen2
from grpo_lab.models.positions import position_ids


class ValueModel(nn.Module):
    """V(s_t) for each completion token t, where s_t is the prompt and the completion before t.

    `trunk` is a transformer without its LM head (a Hugging Face `base_model`); the head is a
    Linear(hidden, 1) initialised to 0, so every value starts at 0 and the first advantages are
    the discounted rewards themselves (no random critic noise).
    """

    def __init__(self, trunk: nn.Module, hidden_size: int):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_policy(cls, policy) -> "ValueModel":
        """A critic whose trunk is a copy of `policy`'s (the SFT weights, when called at the start of a run)."""
        from grpo_lab.models.adapters import trunk as trunk_of

        trunk = copy.deepcopy(trunk_of(policy))
        head_dtype = next(trunk.parameters()).dtype
        return cls(trunk, trunk.config.hidden_size).to(head_dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_len: int,
                fast: bool = True) -> torch.Tensor:
        """Values (B, T) of the last `completion_len` positions of `input_ids` (prompt + completion).

        The value of completion token t is read at the position that predicts it (t - 1), like the
        policy's log-prob of that token.
        """
        T = completion_len
        if fast and fast_qwen2.supports(self.trunk):  # each distinct prompt once, like the policy's log-probs
            hidden = fast_qwen2.completion_hidden(self.trunk, input_ids[:, :-T], attention_mask[:, :-T],
                                                  input_ids[:, -T:], attention_mask[:, -T:])
        else:
            out = self.trunk(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids(attention_mask), use_cache=False)
            hidden = out.last_hidden_state[:, -T - 1:-1]  # (B, T, H)
        return self.head(hidden).squeeze(-1).float()
