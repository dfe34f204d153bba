"""The supervised (SFT) loss: DeepSeekMath App. A.1.1, and RFT's Eq. 10 on the rows it keeps."""

from __future__ import annotations

import torch

from grpo_lab.core.aggregation import aggregate


def supervised_loss(logp: torch.Tensor, mask: torch.Tensor, *, aggregation: str = "seq_mean_token_mean",
                    norm: float | None = None) -> torch.Tensor:
    """``aggregate(-log pi_theta(o_t | q, o_<t), mask)``: (B, T) log-probs -> scalar.

    GC = 1 on every token of the rows passed (SFT); RFT and online RFT pass the correct rows only
    (GC = I(o)). With ``seq_mean_token_mean`` the gradient is ``-(1/n) (1/|o_i|) grad log pi`` over
    the n rows passed.
    """
    return aggregate(-logp, mask, aggregation, norm=norm)
