"""Privacy auditing with one training run (Steinke, Nasr, Jagielski, NeurIPS 2023).

m canaries, each included in training independently with probability 1/2. After training the auditor
scores every canary, guesses "in" for the k highest scores and "out" for the k lowest, and counts its
correct guesses v of r = 2k. If training were (eps, delta)-DP, the number of correct guesses would be
dominated by Binomial(r, e^eps / (1 + e^eps)) up to a delta term (the paper's Theorem 3.1 with its
Algorithm's delta correction); the epsilon lower bound is the largest eps that this p-value still rejects
at level `alpha`. A few guess counts k are tried, with a Bonferroni correction for trying them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


def p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P[at least v of r guesses correct] for an (eps, delta)-DP training run over m canaries."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    q = 1 / (1 + math.exp(-eps))  # the accuracy of eps-DP randomised response
    tail = float(stats.binom.sf(v - 1, r, q))
    alpha, window = 0.0, 0.0  # the delta term: max over i of P[v > Bin(r, q) >= v - i] / i
    for i in range(1, v + 1):
        window += float(stats.binom.pmf(v - i, r, q))
        alpha = max(alpha, window / i)
    return min(1.0, tail + 2 * m * delta * alpha)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, alpha: float = 0.05) -> float:
    """The largest eps at which v correct guesses of r would be rejected at level alpha (0 if none)."""
    if r == 0 or p_value(m, r, v, 0.0, delta) > alpha:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) <= alpha and hi < 100:
        lo, hi = hi, hi * 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p_value(m, r, v, mid, delta) <= alpha else (lo, mid)
    return lo


@dataclass(frozen=True)
class OneRunAudit:
    eps_lower_bound: float
    canaries: int
    guesses: int
    correct: int
    alpha: float

    def figures(self) -> dict[str, float]:
        return {"eps_lower_bound": self.eps_lower_bound, "canaries": float(self.canaries),
                "canary_guesses": float(self.guesses), "canary_correct": float(self.correct)}


def audit_canaries(scores: np.ndarray, included: np.ndarray, delta: float, alpha: float = 0.05,
                   guess_fractions: Sequence[float] = (0.05, 0.1, 0.2, 0.3)) -> OneRunAudit:
    """`scores`: higher = more likely trained on; `included`: the coin of each canary (the truth)."""
    scores, included = np.asarray(scores, float), np.asarray(included, bool)
    m = len(scores)
    if m < 2 or len(included) != m:
        raise ValueError(f"one-run audit needs >= 2 canaries with one coin each, got {m} scores, {len(included)} coins")
    order = np.argsort(-scores, kind="stable")
    level = alpha / len(guess_fractions)  # Bonferroni: several k were tried
    best = OneRunAudit(0.0, m, 0, 0, alpha)
    for f in guess_fractions:
        k = max(1, int(f * m))
        v = int(included[order[:k]].sum() + (~included[order[-k:]]).sum())
        eps = epsilon_lower_bound(m, 2 * k, v, delta, level)
        if eps > best.eps_lower_bound or best.guesses == 0:
            best = OneRunAudit(eps, m, 2 * k, v, alpha)
    return best
