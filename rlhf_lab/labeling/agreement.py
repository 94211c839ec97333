"""What annotators agree on, and how much: majority votes, Cohen's kappa, Krippendorff's alpha.

The preference store keeps each annotator's latest decision per item. This module turns those
decisions into a consensus per pair of responses (what the exports train on) and into agreement
statistics (how far to trust it). Everything here is a pure function over plain values, so each
one is tested against numbers worked out by hand.

A decision is "A", "B", "tie", "both_bad", "skip", a ranking (response indices, best first), or
ratings ``{"scores": [4, 2]}`` (one score 1-5 per response). Every decision is read as votes on the
pairs of positions ``(i, j)``, ``i < j``, each vote one of ``OUTCOMES``: "first" (i is better),
"second" (j is better), "tie" or "both_bad". A ranking votes on every pair, ratings too (equal
scores tie); "tie" and "both_bad" on an item with N > 2 responses say that of every pair;
"skip" abstains.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Decision = str | list[int] | dict[str, list[int]]
Pair = tuple[int, int]
SIMPLE_DECISIONS = ("A", "B", "tie", "both_bad", "skip")
OUTCOMES = ("first", "second", "tie", "both_bad")
RATING_SCALE = 5  # ratings are whole scores 1..RATING_SCALE, one per response (keys 1-5)
Z95 = 1.959963984540054  # the two-sided 95% normal quantile


def encode_decision(decision: Any, n: int, item: str = "") -> str:
    """Check a decision on an item of ``n`` responses and give its stored text ("A", ..., or a
    JSON ranking). A ranking of two is stored as "A" or "B", so both spellings count the same."""
    example = list(range(n))[::-1]
    rank_fix = f"give a ranking: all {n} response indices, best first, e.g. {example}"
    of_item = f" of item {item!r}" if item else ""
    if isinstance(decision, str):
        if decision in ("A", "B") and n != 2:
            raise ValueError(
                f"decision {decision!r} picks one of two responses, but item {item!r} has {n}. Fix: {rank_fix}"
            )
        if decision in SIMPLE_DECISIONS:
            return decision
        also = f", or {rank_fix}" if n > 2 else ""
        known = ", ".join(map(repr, SIMPLE_DECISIONS if n == 2 else SIMPLE_DECISIONS[2:]))
        raise ValueError(f"decision {decision!r} is unknown. Fix: use one of {known}{also}")
    if isinstance(decision, Mapping):
        return json.dumps({"scores": _ratings(decision, n, of_item)})
    if isinstance(decision, (list, tuple)):
        ranking = [int(x) if hasattr(x, "__index__") and not isinstance(x, bool) else x for x in decision]
        if sorted(map(repr, ranking)) != sorted(map(repr, range(n))):
            raise ValueError(
                f"decision {list(decision)!r} is not a ranking of the {n} responses{of_item} (each index "
                f"0..{n - 1} exactly once). Fix: {rank_fix}"
            )
        return ("A" if ranking[0] == 0 else "B") if n == 2 else json.dumps(ranking)
    raise ValueError(
        f"decision is a {type(decision).__name__}. Fix: pass a string such as 'A', a ranking list, or ratings "
        "{'scores': [...]}"
    )


def _ratings(decision: Mapping, n: int, of_item: str) -> list[int]:
    scores = decision.get("scores")
    fix = f"give {{'scores': [...]}} with {n} whole numbers 1-{RATING_SCALE}, one per response, in response order"
    if set(decision) != {"scores"} or not isinstance(scores, (list, tuple)) or len(scores) != n:
        raise ValueError(f"ratings {dict(decision)!r}{of_item} do not score the item's {n} responses. Fix: {fix}")
    if not all(hasattr(x, "__index__") and not isinstance(x, bool) and 1 <= x <= RATING_SCALE for x in scores):
        raise ValueError(f"ratings {list(scores)!r}{of_item} are not all whole numbers 1-{RATING_SCALE}. Fix: {fix}")
    return [int(x) for x in scores]


def decode_decision(text: str | None) -> Decision | None:
    return json.loads(text) if text is not None and text[:1] in ("[", "{") else text


def pair_votes(decision: Decision, n: int) -> dict[Pair, str]:
    """The votes one (already validated) decision casts on the pairs of an item of ``n`` responses."""
    if decision == "skip":
        return {}
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if decision in ("tie", "both_bad"):
        return dict.fromkeys(pairs, decision)
    if decision == "A":
        return {(0, 1): "first"}
    if decision == "B":
        return {(0, 1): "second"}
    if isinstance(decision, Mapping):
        s = decision["scores"]
        return {(i, j): "first" if s[i] > s[j] else "second" if s[i] < s[j] else "tie" for i, j in pairs}
    place = {response: rank for rank, response in enumerate(decision)}
    return {(i, j): "first" if place[i] < place[j] else "second" for i, j in pairs}


def majority(votes: Iterable[Hashable]) -> Hashable | None:
    """The value with the most votes; None when there are none or the top two are level.

    A plurality, not an absolute majority: ``first, first, second, tie`` gives "first". A level
    top (``first, second``) gives no winner, because picking one would invent a preference.
    """
    ranked = Counter(votes).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def consensus(decisions: Iterable[Decision], n: int, min_votes: int = 1) -> dict[Pair, str]:
    """Per pair of positions, the majority outcome of every annotator's decision on one item.

    Pairs with fewer than ``min_votes`` votes, or with a level vote, are left out.
    """
    votes: dict[Pair, list[str]] = {}
    for decision in decisions:
        for pair, outcome in pair_votes(decision, n).items():
            votes.setdefault(pair, []).append(outcome)
    result = {}
    for pair in sorted(votes):
        winner = majority(votes[pair]) if len(votes[pair]) >= min_votes else None
        if winner is not None:
            result[pair] = winner
    return result


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float:
    """Cohen's kappa of two annotators' labels on the same items, in the same order.

    ``(p_o - p_e) / (1 - p_e)``: observed agreement against the agreement expected if each
    annotator labelled at random with their own label frequencies. NaN when undefined: no
    items, or both used one and the same label for everything (``p_e = 1``).
    """
    if len(first) != len(second):
        raise ValueError(
            f"cohen_kappa needs one label per item from each annotator; got {len(first)} and "
            f"{len(second)}. Fix: pass the labels of the items both annotators labelled, in the same order"
        )
    n = len(first)
    if n == 0:
        return math.nan
    observed = sum(a == b for a, b in zip(first, second)) / n
    counts_a, counts_b = Counter(first), Counter(second)
    expected = sum(counts_a[c] * counts_b[c] for c in counts_a) / (n * n)
    if expected == 1:
        return math.nan
    return (observed - expected) / (1 - expected)


def krippendorff_alpha(units: Iterable[Iterable[Hashable | None]]) -> float:
    """Krippendorff's alpha for nominal labels, any number of annotators, missing labels allowed.

    ``units`` holds, per item, the labels it got (None for an annotator who did not label it).
    Items with fewer than two labels cannot be compared and are ignored. Built from the
    coincidence matrix ``o[c][k]``: each ordered pair of labels from different annotators on an
    item adds ``1 / (m - 1)`` (m = labels on the item). Then
    ``alpha = 1 - (n - 1) * sum_{c != k} o[c][k] / sum_{c != k} n_c * n_k``. NaN when undefined
    (no comparable items, or a single label value throughout).
    """
    coincidences: Counter = Counter()
    for unit in units:
        values = Counter(v for v in unit if v is not None)
        m = sum(values.values())
        if m < 2:
            continue
        for c, count_c in values.items():
            for k, count_k in values.items():
                coincidences[c, k] += count_c * (count_k - (c == k)) / (m - 1)
    totals: Counter = Counter()
    for (c, _), value in coincidences.items():
        totals[c] += value
    n = sum(totals.values())
    disagreeing = sum(value for (c, k), value in coincidences.items() if c != k)
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    if n == 0 or expected == 0:
        return math.nan
    return 1 - (n - 1) * disagreeing / expected


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) when n is 0.

    Preferred to the normal interval because it stays inside [0, 1] and behaves at small n and
    at rates near 0 or 1, which is where a handful of human A/B labels lives.
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    scale = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / scale
    return max(0.0, centre - half), min(1.0, centre + half)


# -- from consensus to training rows -----------------------------------------------------------
# ``decided`` below is a list of (item, consensus) with items shaped like ``store.Item``: .prompt
# (messages), .responses (each with .messages) and .models.


def preference_rows(decided: Iterable[tuple[Any, Mapping[Pair, str]]], ties: str, both_bad: str) -> list[dict]:
    """TRL preference rows (prompt, chosen, rejected), each exact row once. ``ties`` and
    ``both_bad``: "exclude" or "both" (emit the pair in both orders)."""
    rows, seen = [], set()
    for item, pairs in decided:
        for (i, j), outcome in pairs.items():
            if outcome in ("first", "second"):
                orders = [(i, j) if outcome == "first" else (j, i)]
            else:
                orders = [(i, j), (j, i)] if (ties if outcome == "tie" else both_bad) == "both" else []
            for win, lose in orders:
                row = {
                    "prompt": item.prompt,
                    "chosen": item.responses[win].messages,
                    "rejected": item.responses[lose].messages,
                }
                identity = json.dumps(row, sort_keys=True)
                if identity not in seen:
                    seen.add(identity)
                    rows.append(row)
    return rows


def unpaired_rows(decided: Iterable[tuple[Any, Mapping[Pair, str]]]) -> list[dict]:
    """KTO rows (prompt, completion, label): True for a response that won and never lost, False
    for one that lost (both_bad counts as a loss for both) and never won; mixed ones are left out.
    The same prompt and completion in several items is one row, judged on all of them."""
    tally: dict[str, dict] = {}
    for item, pairs in decided:
        for (i, j), outcome in pairs.items():
            results = {"first": ((i, True), (j, False)), "second": ((i, False), (j, True))}
            for position, won in results.get(outcome, ((i, False), (j, False)) if outcome == "both_bad" else ()):
                completion = item.responses[position].messages
                entry = tally.setdefault(
                    json.dumps([item.prompt, completion], sort_keys=True),
                    {"prompt": item.prompt, "completion": completion, "won": False, "lost": False},
                )
                entry["won" if won else "lost"] = True
    return [
        {"prompt": e["prompt"], "completion": e["completion"], "label": e["won"]}
        for e in tally.values()
        if e["won"] != e["lost"]
    ]


@dataclass(frozen=True)
class WinRate:
    """Human A/B result of ``model_a`` against ``model_b``: ``rate = wins / (wins + losses)``
    with its Wilson 95% interval; ties and both_bad are reported but not in the rate."""

    model_a: str
    model_b: str
    wins: int = 0
    losses: int = 0
    ties: int = 0
    both_bad: int = 0

    @property
    def n(self) -> int:
        return self.wins + self.losses

    @property
    def rate(self) -> float:
        return self.wins / self.n if self.n else math.nan

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_interval(self.wins, self.n)

    def __str__(self) -> str:
        low, high = self.ci
        return (
            f"{self.model_a} vs {self.model_b}: {self.wins} wins, {self.losses} losses, {self.ties} ties, "
            f"{self.both_bad} both bad; win rate {self.rate:.3f} (95% CI {low:.3f}-{high:.3f}, n={self.n})"
        )


def win_counts(decided: Iterable[tuple[Any, Mapping[Pair, str]]], model_a: str, model_b: str) -> WinRate:
    """Count, over the consensus of every item, the pairs that put ``model_a`` against ``model_b``."""
    if model_a == model_b:
        raise ValueError(f"model_a and model_b are both {model_a!r}. Fix: name two different models")
    counts: Counter = Counter()
    for item, pairs in decided:
        models = item.models
        for (i, j), outcome in pairs.items():
            if i >= len(models) or j >= len(models) or {models[i], models[j]} != {model_a, model_b}:
                continue
            if outcome in ("tie", "both_bad"):
                counts[outcome] += 1
            else:
                counts["wins" if (outcome == "first") == (models[i] == model_a) else "losses"] += 1
    return WinRate(model_a, model_b, counts["wins"], counts["losses"], counts["tie"], counts["both_bad"])


def _category(decision: Decision) -> Hashable:
    """A decision as one nominal category (hashable): a ranking or a set of ratings is one value."""
    if isinstance(decision, str):
        return decision
    return ("scores", *decision["scores"]) if isinstance(decision, Mapping) else tuple(decision)


def agreement_report(decided: Mapping[str, Mapping[str, Decision]]) -> dict[str, Any]:
    """Agreement over ``{item: {annotator: decision}}``, skips left out, decisions as nominal
    categories (a ranking is one category): ``alpha`` over items with two or more decisions,
    ``pairwise`` Cohen's kappa per pair of annotators over the items both decided, and ``kappa``
    when there are exactly two annotators (None otherwise)."""
    labels = [{who: _category(d) for who, d in by.items() if d != "skip"} for by in decided.values()]
    names = sorted({who for by in labels for who in by})
    pairwise = []
    for index, first in enumerate(names):
        for second in names[index + 1 :]:
            shared = [by for by in labels if first in by and second in by]
            kappa = cohen_kappa([by[first] for by in shared], [by[second] for by in shared])
            pairwise.append({"annotators": [first, second], "items": len(shared), "kappa": kappa})
    units = [list(by.values()) for by in labels if len(by) >= 2]
    return {
        "annotators": names,
        "shared_items": len(units),
        "alpha": krippendorff_alpha(units),
        "kappa": pairwise[0]["kappa"] if len(names) == 2 else None,
        "pairwise": pairwise,
    }
