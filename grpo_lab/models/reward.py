"""A reward model r(x, y): a scalar head on its own copy of a causal LM's trunk, read at the last token of
the completion (InstructGPT §3.5; DeepSeekMath's reward model starts from the policy's base).

Saved as a Hugging Face sequence-classification folder with one label (`Qwen2ForSequenceClassification`
for the tiny model), so `AutoModelForSequenceClassification.from_pretrained(folder)` loads it
anywhere: transformers reads that class's score at the last token that is not padding, which is
the last completion token of a prompt + completion row, where this module reads it too.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from grpo_lab.models import fast_qwen2
from grpo_lab.models.positions import position_ids

PAIRS_FILE = "pairs.json"  # the training pairs (token ids) beside the weights, for replay in iterative RL
INFO_FILE = "reward_model.json"


class RewardModel(nn.Module):
    """r(x, y) (B,) of prompt + completion rows: `head` (Linear(hidden, 1), no bias, as transformers'
    `score`) on the trunk's last hidden state (final norm applied) at each row's last completion token."""

    def __init__(self, trunk: nn.Module, head: nn.Linear):
        super().__init__()
        self.trunk, self.head = trunk, head
        self.pairs: Optional[list] = None  # the pairs it was trained on, where known (not part of the state)

    @classmethod
    def from_policy(cls, policy) -> "RewardModel":
        """A reward model whose trunk is a copy of `policy`'s and whose head is 0 (every reward starts at 0)."""
        from grpo_lab.models.adapters import trunk as trunk_of

        trunk = copy.deepcopy(trunk_of(policy))
        head = nn.Linear(trunk.config.hidden_size, 1, bias=False)
        nn.init.zeros_(head.weight)
        return cls(trunk, head.to(next(trunk.parameters()).dtype))

    def forward(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                completion_mask: torch.Tensor) -> torch.Tensor:
        """Rewards (B,) of left-padded prompts (B, Lp) and right-padded completions (B, T)."""
        lengths = completion_mask.sum(-1).long().clamp(min=1)  # (B,)
        rows = torch.arange(completion_ids.shape[0], device=completion_ids.device)
        if fast_qwen2.supports(self.trunk):
            # the lean path returns the states that predict each completion token; one more (masked)
            # column makes the state at the last completion token the one that predicts the next
            pad_col = torch.zeros_like(completion_ids[:, :1])
            hidden = fast_qwen2.completion_hidden(self.trunk, prompt_ids, prompt_mask,
                                                  torch.cat([completion_ids, pad_col], 1),
                                                  torch.cat([completion_mask, pad_col.to(completion_mask.dtype)], 1))
            last = hidden[rows, lengths]  # (B, H)
        else:
            ids = torch.cat([prompt_ids, completion_ids], 1)
            mask = torch.cat([prompt_mask.to(completion_mask.dtype), completion_mask], 1)
            out = self.trunk(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False)
            last = out.last_hidden_state[rows, prompt_ids.shape[1] + lengths - 1]
        return self.head(last).squeeze(-1).float()

    def score(self, rollout) -> torch.Tensor:
        """Rewards (B,) of a `grpo_lab.rollout.Rollout`'s rows."""
        return self(rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids, rollout.completion_mask)

    # ----- Hugging Face folders -----------------------------------------------------------------
    def save_pretrained(self, folder: str | Path, tokenizer=None, *, info: Optional[dict] = None) -> Path:
        """Writes `folder` as a transformers sequence-classification model with one label (config.json,
        model.safetensors), the tokenizer, the training pairs (`pairs.json`) and `info`."""
        from transformers import AutoModelForSequenceClassification

        folder = Path(folder)
        config = copy.deepcopy(self.trunk.config)
        config.num_labels = 1
        config.architectures = None
        if tokenizer is not None:
            config.pad_token_id = tokenizer.pad_token_id
        with torch.random.fork_rng():  # building the class draws its initial weights: leave the run's RNG alone
            model = AutoModelForSequenceClassification.from_config(config)
        model.base_model.load_state_dict(self.trunk.state_dict())
        model.score.weight.data.copy_(self.head.weight.data)
        model.to(next(self.trunk.parameters()).dtype).save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        if self.pairs is not None:
            (folder / PAIRS_FILE).write_text(json.dumps(self.pairs))
        (folder / INFO_FILE).write_text(json.dumps({"read_at": "last completion token", **(info or {})}, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, dtype: str = "float32", trust_remote_code: bool = False) -> "RewardModel":
        """The reward model in `folder` (a transformers sequence-classification model with one label),
        with its training pairs where the folder has them."""
        from transformers import AutoModelForSequenceClassification

        from grpo_lab.models.policy import DTYPES, ModelError, refuse_own_code

        folder = Path(folder).expanduser()
        if not (folder / "config.json").exists():
            raise ModelError(f"reward.model {folder} is not a reward model folder (no config.json); train one with "
                             "method: reward_model, or give reward.model a reward-model config")
        refuse_own_code(folder, trust_remote_code, what="the reward model")
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                folder, local_files_only=True, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
                use_safetensors=any(folder.glob("*.safetensors")))
        except (OSError, ValueError) as exc:
            raise ModelError(f"could not load the reward model in {folder}: {str(exc).splitlines()[0]}") from None
        head = getattr(model, "score", None)
        if not isinstance(head, nn.Linear) or head.out_features != 1:
            raise ModelError(f"the model in {folder} has no one-label score head; a reward model is a "
                             "sequence-classification model with num_labels: 1")
        out = cls(model.base_model, head)
        pairs = folder / PAIRS_FILE
        out.pairs = [tuple(p) for p in json.loads(pairs.read_text())] if pairs.exists() else None
        return out
