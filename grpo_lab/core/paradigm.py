"""The unified paradigm of DeepSeekMath (2402.03300) §5.2.1, Table 10: every method is a data
source, a reward function and a per-token gradient coefficient GC, with (Eq. 5)

``grad J_A = E_{(q, o) ~ D} [ (1/|o|) sum_t GC_A(q, o, t, pi_rf) grad log pi_theta(o_t | q, o_<t) ]``.

The functions below compute GC (B, T) for a batch (0 where ``mask == 0``, detached), so a test can
check with autograd that each method's loss, built from the other ``core`` functions, has gradient
``d loss / d logp_{i,t} = -(1/B) (1/|o_i|) GC_{i,t}`` (``seq_mean_token_mean`` aggregation,
pi_old = pi_theta, so min and clip drop out). Departures from the paper:

- GRPO's GC includes the KL term exactly (Eq. 21); with ``beta = 0`` it is the advantage alone.
- DPO: grpo_lab's ``dpo_loss`` takes *summed* log-probs (Rafailov et al.), so by default the log-ratios
  in Eq. 14 are sums and the 1/|o| of Eq. 5 is absent: ``d loss / d logp = -(1/N) GC`` over N pairs.
  ``length_normalized=True`` reproduces the paper's Eq. 13 (mean log-ratios, 1/|o| present). GC
  carries the factor beta that the paper absorbs into the learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grpo_lab.core.aggregation import masked_fill_zero


@dataclass(frozen=True)
class MethodSpec:
    name: str
    data_source: str
    reward: str
    gradient_coefficient: str
    equation: str
    config: str  # the YAML that selects the method in grpo_lab


TABLE: dict[str, MethodSpec] = {
    "sft": MethodSpec("SFT", "q, o ~ P_sft(Q, O)", "-", "1", "App. A.1.1", "method: sft"),
    "rft": MethodSpec(
        "RFT", "q ~ P_sft(Q), o ~ pi_sft(O|q)", "Rule", "I(o) (1 if o is correct, else 0)", "Eq. 10",
        "method: rft",
    ),
    "online_rft": MethodSpec(
        "Online RFT", "q ~ P_sft(Q), o ~ pi_theta(O|q)", "Rule", "I(o) (1 if o is correct, else 0)",
        "Eq. 10", "method: online_rft",
    ),
    "dpo": MethodSpec(
        "DPO", "q ~ P_sft(Q), o+, o- ~ pi_sft(O|q)", "Rule",
        "sigma(beta log pi_theta(o-)/pi_ref(o-) - beta log pi_theta(o+)/pi_ref(o+)); +GC on o+, -GC on o-",
        "Eq. 14", "method: dpo",
    ),
    "ppo": MethodSpec(
        "PPO", "q ~ P_sft(Q), o ~ pi_theta(O|q)", "Model", "A_t (GAE from r_>=t and V_psi)", "Eq. 18",
        "method: ppo",
    ),
    "grpo": MethodSpec(
        "GRPO", "q ~ P_sft(Q), {o_i} ~ pi_theta(O|q)", "Model",
        "A_hat_{i,t} + beta (pi_ref(o_{i,t})/pi_theta(o_{i,t}) - 1)", "Eq. 21", "method: grpo",
    ),
}

# GRPO with process supervision (DeepSeekMath §4.1.3): same method, process advantage estimator.
PROCESS_SUPERVISION_CONFIG = "method: grpo\nadvantage:\n  estimator: process"


def sft_coefficient(mask: torch.Tensor) -> torch.Tensor:
    """SFT (App. A.1.1): GC = 1 on every completion token. (B, T)."""
    return (mask > 0).to(mask.dtype)


def rft_coefficient(correct: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RFT and online RFT, Eq. 10: GC = I(o), the 0/1 correctness (B,) of the sequence. (B, T)."""
    return masked_fill_zero(correct.detach().to(mask.dtype)[:, None].expand_as(mask), mask)


def ppo_coefficient(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PPO, Eq. 18: GC = A_t, the GAE advantage (B, T). (B, T)."""
    return masked_fill_zero(advantages.detach(), mask)


def grpo_coefficient(
    advantages: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float,
) -> torch.Tensor:
    """GRPO, Eq. 21: GC = A_hat_{i,t} + beta (pi_ref / pi_theta - 1), from the k3 KL (Eq. 4).

    ``advantages`` (B,) (outcome) or (B, T) (process); ``logp``, ``ref_logp``, ``mask`` (B, T).
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(mask)
    valid = mask > 0
    log_ratio = torch.where(valid, ref_logp.detach() - logp.detach(), 0.0)
    gc = advantages.detach() + beta * (torch.exp(log_ratio) - 1.0)
    return masked_fill_zero(gc, mask)


def dpo_coefficient(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float,
    length_normalized: bool = False,
) -> torch.Tensor:
    """DPO, Eq. 14, for a batch of N pairs stacked as 2N rows: rows [0, N) chosen o+, rows [N, 2N)
    rejected o-, row i paired with row N + i. ``logp``, ``ref_logp``, ``mask``: (2N, T).

    With per-sequence log-ratios ``l = sum_t m (logp - ref_logp)`` (divided by |o| when
    ``length_normalized``): ``g_i = beta * sigma(beta l_i^- - beta l_i^+)``; GC = +g_i on o+ tokens and
    -g_i on o- tokens. (2N, T).
    """
    if mask.shape[0] % 2:
        raise ValueError(f"DPO rows must be 2N (chosen then rejected), got {mask.shape[0]}")
    log_ratio = masked_fill_zero(logp.detach() - ref_logp.detach(), mask).sum(-1)  # (2N,)
    if length_normalized:
        log_ratio = log_ratio / mask.sum(-1).clamp(min=1.0)
    chosen, rejected = log_ratio.chunk(2)
    g = beta * torch.sigmoid(beta * (rejected - chosen))  # (N,)
    per_row = torch.cat([g, -g])[:, None].expand_as(mask)
    return masked_fill_zero(per_row, mask)


def gradient_coefficient(
    method: str,
    *,
    mask: torch.Tensor,
    correct: torch.Tensor | None = None,
    advantages: torch.Tensor | None = None,
    logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    length_normalized: bool = False,
) -> torch.Tensor:
    """GC (B, T) of ``method`` (a key of ``TABLE``); dispatches to the per-method functions above,
    which say which arguments each method needs."""
    if method not in TABLE:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(TABLE)}")
    needs = {
        "rft": ("correct",), "online_rft": ("correct",), "ppo": ("advantages",),
        "grpo": ("advantages", "logp", "ref_logp"), "dpo": ("logp", "ref_logp"),
    }.get(method, ())
    given = {"correct": correct, "advantages": advantages, "logp": logp, "ref_logp": ref_logp}
    missing = [name for name in needs if given[name] is None]
    if missing:
        raise ValueError(f"method {method!r} needs {', '.join(missing)}")
    if method == "sft":
        return sft_coefficient(mask)
    if method in ("rft", "online_rft"):
        return rft_coefficient(correct, mask)
    if method == "ppo":
        return ppo_coefficient(advantages, mask)
    if method == "grpo":
        return grpo_coefficient(advantages, logp, ref_logp, mask, beta=beta)
    return dpo_coefficient(logp, ref_logp, mask, beta=beta, length_normalized=length_normalized)


def format_table() -> str:
    """``TABLE`` as a markdown table (DeepSeekMath Table 10 plus grpo_lab's config)."""
    rows = [
        "| Method | Data source | Reward | Gradient coefficient | Equation | Config |",
        "|---|---|---|---|---|---|",
    ]
    for spec in TABLE.values():
        cells = (spec.name, spec.data_source, spec.reward, spec.gradient_coefficient, spec.equation)
        cells = tuple(c.replace("|", "\\|") for c in cells) + (f"`{spec.config}`",)
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
