"""Active learning's scores: which items a labeller should see first. ``PairGenerator`` orders
each window of items by them (``active="uncertainty"`` or ``"disagreement"``).

- ``uncertainty(scores)``: ``min over pairs |sigmoid(r_i - r_j) - 0.5|``; the smallest first
  (the reward model's coin flips).
- ``disagreement(member_scores)``: ``max over pairs std_members sigmoid(r_mi - r_mj)``; the
  largest first (where an ensemble's members disagree).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def uncertainty(scores: Sequence[float]) -> float:
    """How sure a reward model is about an item: ``min over pairs |sigmoid(r_i - r_j) - 0.5|``
    (0 is a coin flip; 0.5 is certain). Active learning shows the smallest first."""
    return min(
        abs(_sigmoid(scores[i] - scores[j]) - 0.5) for i in range(len(scores)) for j in range(i + 1, len(scores))
    )


def disagreement(member_scores: Sequence[Sequence[float]]) -> float:
    """How much ensemble members disagree on an item: over pairs (i, j), the largest population
    std across members of ``sigmoid(r_mi - r_mj)``. Active learning shows the largest first."""
    n = len(member_scores[0])
    worst = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            probs = [_sigmoid(row[i] - row[j]) for row in member_scores]
            mean = sum(probs) / len(probs)
            worst = max(worst, math.sqrt(sum((p - mean) ** 2 for p in probs) / len(probs)))
    return worst
