"""Policy objectives: the PPO/GRPO clipped surrogate, CISPO, and importance weights for off-policy data."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import torch

from grpo_lab.core.aggregation import aggregate, masked_fill_zero, masked_mean
from grpo_lab.core.choices import SURROGATE_LEVELS
from grpo_lab.core.kl import kl_estimate

WEIGHT_LEVELS = ("token", "sequence")  # importance_weights: per token, or the product over the sequence
WEIGHT_MODES = ("truncate", "mask")


class SurrogateResult(NamedTuple):
    per_token_loss: torch.Tensor  # (B, T), 0 where mask == 0
    metrics: dict[str, torch.Tensor]  # detached scalars over masked tokens


def _masked_extreme(x: torch.Tensor, mask: torch.Tensor, largest: bool) -> torch.Tensor:
    if not (mask > 0).any():
        return torch.zeros((), dtype=x.dtype, device=x.device)
    fill = -math.inf if largest else math.inf
    x = torch.where(mask > 0, x, fill)
    return x.max() if largest else x.min()


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    dual_clip: float | None = None,
    level: str = "token",
) -> SurrogateResult:
    """Clipped surrogate loss per token (the negated objective), shape (B, T):

    ``loss = -min(rho * A, clip(rho, 1 - clip_low, 1 + clip_high) * A)``
    (PPO 1707.06347 Eq. 7; GRPO DeepSeekMath 2402.03300 Eq. 3; Clip-Higher with
    ``clip_high > clip_low``, DAPO 2503.14476 Eq. 10). ``clip_high`` defaults to ``clip_low``.

    ``dual_clip = c > 1`` (Ye et al. 1912.09729 Eq. 5): for ``A < 0`` the objective is bounded
    below by ``c * A``, so ``loss = min(loss, -c * A)``; a huge ratio cannot blow up the loss.

    ``level="token"``: ``rho_t = exp(logp_t - old_logp_t)``. ``level="sequence"`` (GSPO 2507.18071
    Eq. 5-7): ``s_i = exp(mean_{t: m=1}(logp - old_logp))`` given to every token as
    ``sg(s_i) * exp(logp_t - sg(logp_t))``: the value is s_i and each token's gradient flows through
    its own logp (GSPO-token, which equals the sequence-level gradient for a per-sequence advantage
    under ``seq_mean_token_mean`` aggregation).

    Shapes: ``logp``, ``old_logp``, ``mask`` (B, T); ``advantages`` (B,) or (B, T). The loss is 0
    where ``mask == 0``; reduce it with ``aggregation.aggregate``. Metrics (detached, masked tokens):
    ``actor/clip_frac_low`` (A < 0 and rho < 1 - clip_low), ``actor/clip_frac_high`` (A > 0 and
    rho > 1 + clip_high): the tokens whose gradient is cut by the clip; ``actor/clip_frac`` their sum;
    ``actor/dual_clip_frac`` (tokens where the dual bound is the loss); ``actor/ratio_mean``,
    ``actor/ratio_max``, ``actor/ratio_min``; ``actor/approx_kl`` = mean of ``(rho - 1) - log rho``.
    """
    if level not in SURROGATE_LEVELS:
        raise ValueError(f"unknown level {level!r}; choose one of {', '.join(SURROGATE_LEVELS)}")
    clip_high = clip_low if clip_high is None else clip_high
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip ranges must be >= 0, got clip_low={clip_low}, clip_high={clip_high}")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (Ye et al. use 3), got {dual_clip}")
    valid = mask > 0
    old_logp = old_logp.detach()
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logp)
    advantages = torch.where(valid, advantages.detach(), 0.0)
    log_ratio = torch.where(valid, logp - old_logp, 0.0)  # (B, T)
    if level == "token":
        ratio = torch.exp(log_ratio)
        value_log_ratio = log_ratio.detach()
    else:
        seq_log_ratio = log_ratio.detach().sum(-1) / mask.sum(-1).clamp(min=1.0)  # (B,)
        value_log_ratio = seq_log_ratio[:, None].expand_as(log_ratio)
        straight_through = torch.exp(torch.where(valid, logp - logp.detach(), 0.0))
        ratio = torch.exp(value_log_ratio) * straight_through

    clipped_ratio = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(-advantages * ratio, -advantages * clipped_ratio)
    if dual_clip is not None:
        dual_bound = -dual_clip * advantages
        dual_active = (advantages < 0) & (dual_bound < loss)
        loss = torch.where(dual_active, dual_bound, loss)
    loss = masked_fill_zero(loss, mask)

    with torch.no_grad():
        r = ratio.detach()
        low = ((advantages < 0) & (r < 1.0 - clip_low)).float()
        high = ((advantages > 0) & (r > 1.0 + clip_high)).float()
        dual = dual_active.float() if dual_clip is not None else torch.zeros_like(r)
        metrics = {
            "actor/clip_frac": masked_mean(low + high, mask),
            "actor/clip_frac_low": masked_mean(low, mask),
            "actor/clip_frac_high": masked_mean(high, mask),
            "actor/dual_clip_frac": masked_mean(dual, mask),
            "actor/ratio_mean": masked_mean(r, mask),
            "actor/ratio_max": _masked_extreme(r, mask, largest=True),
            "actor/ratio_min": _masked_extreme(r, mask, largest=False),
            "actor/approx_kl": masked_mean(torch.expm1(value_log_ratio) - value_log_ratio, mask),
        }
    return SurrogateResult(loss, metrics)


def cispo_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float | None = None,
) -> SurrogateResult:
    """CISPO's per-token loss (MiniMax-M1 2506.13585 Eq. 4), shape (B, T):

    ``loss_t = -sg(clip(rho_t, 1 - clip_low, 1 + clip_high)) * A * logp_t``, ``rho_t = exp(logp_t - old_logp_t)``.

    The importance weight is clipped and its gradient stopped, so every token keeps the gradient
    ``-clip(rho) A grad log pi`` (PPO's clip zeroes it for clipped tokens). ``clip_high`` defaults to
    ``clip_low``; ``clip_low >= 1`` leaves the weight unbounded below, as the paper does. Metrics
    as `clipped_surrogate`'s, with ``actor/clip_frac_low|high`` the tokens whose weight is clipped.
    """
    clip_high = clip_low if clip_high is None else clip_high
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip ranges must be >= 0, got clip_low={clip_low}, clip_high={clip_high}")
    valid = mask > 0
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logp)
    advantages = torch.where(valid, advantages.detach(), 0.0)
    log_ratio = torch.where(valid, logp.detach() - old_logp.detach(), 0.0)
    ratio = torch.exp(log_ratio)
    weight = ratio.clamp(max(1.0 - clip_low, 0.0), 1.0 + clip_high)
    loss = masked_fill_zero(-weight * advantages * logp, mask)
    with torch.no_grad():
        low = (ratio < 1.0 - clip_low).float()
        high = (ratio > 1.0 + clip_high).float()
        metrics = {
            "actor/clip_frac": masked_mean(low + high, mask),
            "actor/clip_frac_low": masked_mean(low, mask),
            "actor/clip_frac_high": masked_mean(high, mask),
            "actor/ratio_mean": masked_mean(ratio, mask),
            "actor/ratio_max": _masked_extreme(ratio, mask, largest=True),
            "actor/ratio_min": _masked_extreme(ratio, mask, largest=False),
            "actor/approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask),
        }
    return SurrogateResult(loss, metrics)


def importance_weights(
    target_logp: torch.Tensor,
    behavior_logp: torch.Tensor,
    mask: torch.Tensor,
    *,
    cap: float = 2.0,
    level: str = "token",
    mode: str = "truncate",
    cap_low: float | None = None,
) -> torch.Tensor:
    """Detached importance weights (B, T) correcting for sampling from a behaviour policy.

    Token level: ``w_t = pi_target / pi_behavior = exp(target_logp - behavior_logp)``; sequence
    level: ``w_i = prod_{t: m=1} w_t = exp(sum_t m_t (target_logp - behavior_logp))`` given to each
    of the sequence's tokens. ``mode="truncate"``: ``min(w, cap)`` (truncated IS, TIS; Yao et al.,
    papers.md §4). ``mode="mask"``: ``w`` where ``cap_low <= w <= cap``, else 0 (the token or
    sequence is dropped; ``cap_low=None`` keeps every weight below the cap, ``cap_low=1/cap`` is
    IcePop's two-sided mask). Typical use: multiply the per-token loss by the weights, target = the
    trainer's pi_old, behavior = the sampler's log-probs. 0 where ``mask == 0``.
    """
    if level not in WEIGHT_LEVELS:
        raise ValueError(f"unknown level {level!r}; choose one of {', '.join(WEIGHT_LEVELS)}")
    if mode not in WEIGHT_MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(WEIGHT_MODES)}")
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    with torch.no_grad():
        log_w = torch.where(mask > 0, target_logp - behavior_logp, 0.0)
        if level == "sequence":
            log_w = log_w.sum(-1, keepdim=True).expand_as(log_w)
        log_cap = math.log(cap)
        if mode == "truncate":
            weights = torch.exp(log_w.clamp(max=log_cap))
        else:  # compare in log space so a huge sequence product never overflows
            keep = log_w <= log_cap
            if cap_low is not None and cap_low > 0:
                keep = keep & (log_w >= math.log(cap_low))
            weights = torch.where(keep, torch.exp(log_w.clamp(max=log_cap)), 0.0)
        return masked_fill_zero(weights, mask)


def effective_sample_size(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalised effective sample size over the n masked tokens (Kong 1992), scalar in (0, 1]:

    ``ESS = (sum w)^2 / (n * sum w^2)``; 1 for uniform weights, 0 if every weight is 0.
    """
    with torch.no_grad():
        w = masked_fill_zero(weights, mask)
        n = mask.sum()
        sum_sq = (w**2).sum()
        if n == 0 or sum_sq == 0:
            return torch.zeros((), dtype=weights.dtype, device=weights.device)
        return w.sum() ** 2 / (n * sum_sq)


class PolicyLoss(NamedTuple):
    loss: torch.Tensor  # scalar
    metrics: dict[str, torch.Tensor]  # detached scalars: the surrogate's, actor/kl, actor/entropy, actor/loss


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    surrogate: Callable[..., SurrogateResult] = clipped_surrogate,
    aggregation: str = "seq_mean_token_mean",
    norm: float | None = None,
    weights: Optional[torch.Tensor] = None,
    ref_logp: Optional[torch.Tensor] = None,
    kl_beta: float = 0.0,
    kl_estimator: str = "k3",
    entropy: Optional[torch.Tensor] = None,
    entropy_coef: float = 0.0,
) -> PolicyLoss:
    """The policy-gradient loss of one minibatch (DeepSeekMath Eq. 3 with its GRPO++ variants):

    ``l_t = w_t * surrogate_t + beta * k(logp, ref_logp)_t - c * H_t``, aggregated over ``mask`` by
    ``aggregation`` (``norm``: seq_mean_token_sum_norm's constant).

    ``surrogate(logp, old_logp, advantages, mask)`` gives the per-token surrogate (e.g.
    `clipped_surrogate` or `cispo_surrogate` with their clip ranges bound); ``weights`` (detached
    importance weights) scale that term only; ``ref_logp`` None: no KL term; ``entropy`` None: no
    entropy bonus. All tensors (B, T), ``advantages`` (B,) or (B, T).
    """
    result = surrogate(logp, old_logp, advantages, mask)
    per_token = result.per_token_loss
    if weights is not None:
        per_token = per_token * weights.detach()
    metrics = dict(result.metrics)
    if ref_logp is not None:
        kl = kl_estimate(logp, ref_logp, kind=kl_estimator)
        per_token = per_token + kl_beta * kl
        metrics["actor/kl"] = masked_mean(kl.detach(), mask)
    if entropy is not None:
        per_token = per_token - entropy_coef * entropy
        metrics["actor/entropy"] = masked_mean(entropy.detach(), mask)
    loss = aggregate(per_token, mask, aggregation, norm=norm)
    metrics["actor/loss"] = loss.detach()
    return PolicyLoss(loss, metrics)
