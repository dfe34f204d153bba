"""Per-token estimators of KL[pi_theta || pi_ref] from sampled tokens (Schulman, "Approximating KL").

With ``x = ref_logp - logp = log(pi_ref / pi_theta)`` at a token sampled from pi_theta:

- ``k1 = logp - ref_logp = -x``                       unbiased, high variance, can be negative
- ``k2 = 0.5 * (logp - ref_logp)**2``                 biased, low variance, >= 0
- ``k3 = exp(x) - x - 1``                             unbiased, >= 0; DeepSeekMath (2402.03300) Eq. 4

The gradient of k3 w.r.t. logp is ``1 - pi_ref / pi_theta``, which gives GRPO's
gradient coefficient Eq. 21 (see ``paradigm``).
"""

from __future__ import annotations

import torch

from grpo_lab.core.choices import KL_KINDS

KL_ESTIMATORS = {  # kind -> k(x) with x = log(pi_ref / pi_theta)
    "k1": lambda x: -x,
    "k2": lambda x: 0.5 * x**2,
    "k3": lambda x: torch.exp(x) - x - 1.0,
}
assert tuple(KL_ESTIMATORS) == KL_KINDS


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token KL estimate, shape (B, T) like ``logp`` and ``ref_logp``.

    No mask is taken: reduce the result with ``aggregation.aggregate``, which ignores masked tokens.
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator kind {kind!r}; choose one of {', '.join(KL_KINDS)}")
    return KL_ESTIMATORS[kind](ref_logp - logp)
