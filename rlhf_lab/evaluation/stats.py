"""Small statistics for evaluation: bootstrap CIs, paired differences, win rates, distinct-n.

Every interval is a seeded percentile bootstrap (Efron & Tibshirani 1993, ch. 13): resample the
n values with replacement `n_boot` times, take the statistic of each resample, and report the
(1 - level)/2 and (1 + level)/2 quantiles. Resamples are drawn in one (n_boot, n) index array, so
a CI over a few thousand values costs milliseconds. The same seed gives the same interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

LEVEL = 0.95
N_BOOT = 2000


def _values(values: Any, what: str = "values") -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{what} is empty; a confidence interval needs at least one value")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} holds non-finite numbers (NaN or inf); remove them before bootstrapping")
    return array


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = 0,
    statistic: Callable[..., np.ndarray] = np.mean,
) -> tuple[float, float]:
    """Percentile bootstrap interval `(lo, hi)` of `statistic` (called with `axis=1`) over `values`."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (e.g. 0.95), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be a positive number of resamples, got {n_boot}")
    array = _values(values)
    index = np.random.default_rng(seed).integers(0, array.size, size=(n_boot, array.size))
    stats = statistic(array[index], axis=1)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def mean_ci(values: Any, **bootstrap: Any) -> dict[str, float]:
    """`{"mean", "lo", "hi", "n"}`: the mean and its bootstrap interval."""
    array = _values(values)
    lo, hi = bootstrap_ci(array, **bootstrap)
    return {"mean": float(array.mean()), "lo": lo, "hi": hi, "n": int(array.size)}


def paired_difference(a: Any, b: Any, **bootstrap: Any) -> dict[str, float]:
    """Mean of `a - b` over the same items (e.g. gold of two policies on the same prompts), with its
    bootstrap interval and whether that interval excludes 0 (`significant`)."""
    a, b = _values(a, "a"), _values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a has {a.size} values and b has {b.size}; a paired difference needs one of each per item")
    result = mean_ci(a - b, **bootstrap)
    return {**result, "significant": bool(result["lo"] > 0 or result["hi"] < 0)}


def win_outcomes(a: Any, b: Any, tol: float = 0.0) -> np.ndarray:
    """Per item: 1 when `a` beats `b` by more than `tol`, 0 when it loses by more, 0.5 for a tie."""
    a, b = _values(a, "a"), _values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a has {a.size} scores and b has {b.size}; a win rate compares one of each per prompt")
    diff = a - b
    return np.where(diff > tol, 1.0, np.where(diff < -tol, 0.0, 0.5))


def win_rate(a: Any, b: Any, *, tol: float = 0.0, **bootstrap: Any) -> dict[str, float]:
    """`{"rate", "lo", "hi", "wins", "ties", "losses", "n"}` of `a` against `b`; a tie counts 0.5."""
    outcomes = win_outcomes(a, b, tol)
    result = mean_ci(outcomes, **bootstrap)
    return {
        "rate": result["mean"],
        "lo": result["lo"],
        "hi": result["hi"],
        "wins": int((outcomes == 1).sum()),
        "ties": int((outcomes == 0.5).sum()),
        "losses": int((outcomes == 0).sum()),
        "n": result["n"],
    }


def mean_se(values: Any) -> tuple[float, float]:
    """The mean and its standard error (sample std with ddof=1, over sqrt n; 0 for one value)."""
    array = _values(values)
    se = float(array.std(ddof=1) / np.sqrt(array.size)) if array.size > 1 else 0.0
    return float(array.mean()), se


def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): distinct n-grams / all n-grams over every text, words split on
    whitespace (case kept). 0 when the texts hold no n-gram at all."""
    if n < 1:
        raise ValueError(f"n must be 1 or more, got {n}")
    grams = [gram for text in texts for gram in ngrams(text.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0
