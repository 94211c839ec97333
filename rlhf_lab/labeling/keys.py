"""What keys and front-end messages mean in a labelling session: the key table, how a key name,
a ranking or the picks so far become a store decision, and which messages decide an item.

Two responses: ``1``/``a`` A better, ``2``/``b`` B better, ``3``/``t`` tie, ``0`` both bad.
Any N: ``s`` skip, ``u``/Backspace undo (or, with picks made, take back the last pick), Escape
clears the picks. N > 2: ``1``..``9`` pick the next best response, Enter submits the ranking.
A rating item (``metadata["rating"]``): ``1``..``5`` score the next unscored response; the last
score submits them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlhf_lab.labeling.agreement import RATING_SCALE

KEYS_TWO = {"1": "A", "2": "B", "3": "tie", "0": "both_bad", "a": "A", "b": "B", "t": "tie"}
_ANY_N = ("0", "t")  # both bad and tie mean the same whatever the number of responses


def key_action(key: str, n: int, picking: bool, rating: bool = False) -> tuple[str, Any] | None:
    """What ``key`` does on an item with ``n`` responses (``picking``: some are ranked or scored
    already; ``rating``: a rating item): ``("submit", decision)`` (None: the picks), ``("rank",
    index)``, ``("rate", score)``, ``("unpick", None)``, ``("clear", None)``, ``("undo", None)``,
    or None for a key that does nothing."""
    low = key.lower()
    if key == "Backspace" or low == "u":
        return ("unpick", None) if picking else ("undo", None)
    if low == "s":
        return ("submit", "skip")
    if key == "Escape":
        return ("clear", None)
    if rating:
        return ("rate", int(key)) if key.isdigit() and 1 <= int(key) <= RATING_SCALE else None
    if n > 2 and key == "Enter":
        return ("submit", None)
    if n > 2 and key.isdigit() and 1 <= int(key) <= min(n, 9):
        return ("rank", int(key) - 1)
    if low in KEYS_TWO and (n <= 2 or low in _ANY_N):
        return ("submit", KEYS_TWO[low])
    return None


def as_decision(decision: Any, n: int, picks: list[int], rating: bool = False) -> Any:
    """A submitted decision for an item with ``n`` responses as the store takes it: None means
    the ``picks`` (a ranking, whose last response may be left out; or a rating item's scores),
    key names map through ``KEYS_TWO``; anything else goes to the store as it is (the store
    checks it and names the allowed values)."""
    if decision is None and rating:
        if len(picks) != n:
            raise ValueError(
                f"{len(picks)} of {n} responses are scored. Fix: press 1-{RATING_SCALE} for each response in "
                "turn, or call submit({'scores': [...]})"
            )
        return {"scores": list(picks)}
    if decision is None:
        picks = list(picks)
        if n - len(picks) == 1:
            picks += [i for i in range(n) if i not in picks]
        if len(picks) != n:
            raise ValueError(
                f"the ranking has {len(picks)} of {n} responses ({[p + 1 for p in picks]}). Fix: press "
                "the numbers of the others, best first, then Enter; or call submit([...])"
            )
        return picks
    if isinstance(decision, str) and n == 2 and decision.strip().lower() in KEYS_TWO:
        return KEYS_TWO[decision.strip().lower()]
    if decision in _ANY_N:
        return KEYS_TWO[decision]
    return decision


def decides(message: Mapping) -> bool:
    """Whether a front-end message labels the item on screen (undo, Escape and toggles do not)."""
    if message.get("type") == "key":
        return message.get("key") not in ("u", "U", "Backspace", "Escape")
    return message.get("action") in ("submit", "skip", "rank", "rate")
