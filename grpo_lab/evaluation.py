"""Evaluation metrics over k samples per prompt: pass@k (unbiased), maj@k, lengths, accuracy.

Metric keys spell pass@k as `pass_at_k` and maj@k as `maj_at_k`: MLflow metric names cannot hold '@'.
"""

from __future__ import annotations

from collections import Counter
from math import comb

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, Eq. 1):
    1 - C(n - c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_correct(answers: list, reference: str) -> bool:
    """maj@k: the most frequent extracted answer (None never votes; ties go to the earliest) is right."""
    votes = [a for a in answers if a is not None]
    if not votes:
        return False
    counts = Counter(votes)
    best = max(counts.values())
    winner = next(a for a in votes if counts[a] == best)
    return winner == reference


def ks_up_to(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def summarize(correct: np.ndarray, answers: list[list], references: list[str], lengths: np.ndarray,
              greedy_correct: np.ndarray | None = None, entropy: float | None = None, prefix: str = "eval/") -> dict:
    """Metrics of P prompts x n samples.

    correct: (P, n) bool; answers: P lists of n extracted answers; lengths: (P, n) completion
    lengths in tokens; greedy_correct: (P,) bool.
    """
    P, n = correct.shape
    metrics = {f"{prefix}accuracy": float(correct.mean())}
    for k in ks_up_to(n):
        metrics[f"{prefix}pass_at_{k}"] = float(np.mean([pass_at_k(n, int(c), k) for c in correct.sum(1)]))
        if k > 1:
            metrics[f"{prefix}maj_at_{k}"] = float(np.mean([majority_correct(a[:k], r) for a, r in zip(answers, references)]))
    metrics[f"{prefix}len_correct"] = float(lengths[correct].mean()) if correct.any() else float("nan")
    metrics[f"{prefix}len_wrong"] = float(lengths[~correct].mean()) if (~correct).any() else float("nan")
    if greedy_correct is not None:
        metrics[f"{prefix}greedy_accuracy"] = float(np.mean(greedy_correct))
    if entropy is not None:
        metrics[f"{prefix}entropy"] = float(entropy)
    return metrics
