"""Importance corrections for data sampled by a behaviour policy pi_behav that is not the learner.

pi_prox is the learner at the start of the step (its log-probs recomputed on the batch). A
correction is three choices (papers.md §4-§5):

- ``clip_against``: the ratio the clipped surrogate clips: ``behaviour`` (pi_theta / pi_behav, the
  naive objective) or ``proximal`` (pi_theta / pi_prox, the decoupled objective of AReaL 2505.24298);
- ``level``: the importance weight w = pi_prox / pi_behav per ``token``, per ``sequence`` (the
  product over the sequence), or ``none`` (no weight);
- ``cap_mode``: weights beyond the cap C are ``truncate``d to C (TIS), ``mask``ed to 0 (IcePop,
  AReaL's behav_imp_weight_cap), or left as they are (``none``: AReaL's untruncated weight).

The named presets are combinations of the three (``PRESETS``).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from grpo_lab.core.aggregation import masked_fill_zero
from grpo_lab.core.choices import CAP_MODES, CLIP_AGAINST, CORRECTION_PRESETS as PRESETS
from grpo_lab.core.choices import WEIGHT_LEVELS as LEVELS
from grpo_lab.core.objectives import importance_weights


class Correction(NamedTuple):
    old_logp: torch.Tensor  # (B, T) the log-probs the surrogate's ratio is taken against
    weights: Optional[torch.Tensor]  # (B, T) detached importance weights on the surrogate, or None


def correct(prox_logp: torch.Tensor, behav_logp: torch.Tensor, mask: torch.Tensor, *, clip_against: str = "proximal",
            level: str = "token", cap_mode: str = "truncate", cap: float = 2.0,
            cap_low: float | None = None) -> Correction:
    """The ratio's reference log-probs and the weights w of one correction; all tensors (B, T).

    ``w_t = pi_prox / pi_behav`` (token) or ``prod_t w_t`` (sequence), then ``min(w, C)``
    (truncate), ``w 1[cap_low <= w <= C]`` (mask; no lower bound for ``cap_low=None``) or ``w``
    (none); 0 where ``mask == 0``.
    """
    if clip_against not in CLIP_AGAINST:
        raise ValueError(f"unknown clip_against {clip_against!r}; choose one of {', '.join(CLIP_AGAINST)}")
    if level not in LEVELS or cap_mode not in CAP_MODES:
        raise ValueError(f"level must be one of {LEVELS} and cap_mode one of {CAP_MODES}, got {level!r}, {cap_mode!r}")
    old = behav_logp if clip_against == "behaviour" else prox_logp
    if level == "none":
        return Correction(old, None)
    if cap_mode == "none":
        with torch.no_grad():
            log_w = torch.where(mask > 0, prox_logp - behav_logp, 0.0)
            if level == "sequence":
                log_w = log_w.sum(-1, keepdim=True).expand_as(log_w)
            return Correction(old, masked_fill_zero(torch.exp(log_w), mask))
    return Correction(old, importance_weights(prox_logp, behav_logp, mask, cap=cap, level=level, mode=cap_mode,
                                              cap_low=cap_low))
