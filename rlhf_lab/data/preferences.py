"""Normalize preference data of any common shape into TRL's conversational pairs.

A preference row may be a ready pair (TRL explicit or implicit prompt, Anthropic HH strings), a
prompt with several scored or ranked responses (UltraFeedback, ranked lists), or one rated
response per row that only becomes pairs once rows are grouped by prompt. Each shape is detected
from the row's keys; multi-response shapes become pairs by a ``pairing`` strategy:

* ``"all"``: every two responses whose scores (or ranks) differ, as in InstructGPT;
* ``"best_vs_rest"``: the best response against each worse one;
* ``"best_vs_worst"``: one pair per prompt.

Ties never make a pair, and with scores a pair closer than ``min_margin`` is dropped.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from rlhf_lab.data.errors import Collector, Issue, Issues, RowError, fail, unrecognised
from rlhf_lab.data.messages import (
    Messages,
    completion_messages,
    key,
    looks_like_hh,
    parse_hh,
    parse_messages,
    prompt_messages,
    require_text,
    split_common_text,
    split_shared_prefix,
    type_name,
)
from rlhf_lab.data.readers import Row

PAIRINGS = ("all", "best_vs_rest", "best_vs_worst")
_SCORE_KEYS = ("reward", "score", "rating")


@dataclass
class Candidate:
    messages: Messages
    score: float  # for rankings, minus the rank, so higher is better everywhere
    field: str  # where the response sits in its row, for problems


@dataclass
class Rated:
    """One response of a one-rated-response-per-row source, waiting to be grouped by prompt."""

    prompt: Messages
    candidate: Candidate


def to_score(value: Any, field: str) -> float:
    """A finite float from a number or a numeric string (CSV cells are strings)."""
    if value is None:
        fail(field, "is missing", f"add '{field}' with a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            fail(field, f"is not a number ({value!r})", f"make '{field}' a number such as 7 or 0.85")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(field, f"is not a number (got {type_name(value)})", f"make '{field}' a number such as 7 or 0.85")
    if not math.isfinite(value):
        fail(field, f"is not a finite number ({value})", f"give '{field}' a finite score")
    return float(value)


def normalize_row(data: Any, pairing: str, min_margin: float, stats: Counter) -> list[dict] | Rated:
    """The pairs one row stands for, or a :class:`Rated` response to pair later."""
    if not isinstance(data, dict):
        fail(None, f"is {type_name(data)}, not an object", "give each preference as an object")
    if "chosen" in data or "rejected" in data:
        return [_paired(data)]
    completions = data.get("completions")
    if isinstance(completions, list) and any(isinstance(c, dict) for c in completions):
        return _ultrafeedback(data, pairing, min_margin, stats)
    if "responses" in data or "completions" in data:
        return _ranked(data, pairing, min_margin, stats)
    response_key = next((k for k in ("response", "completion") if k in data), None)
    score_key = next((k for k in _SCORE_KEYS if k in data), None)
    if "prompt" in data and response_key and score_key:
        prompt = prompt_messages(data["prompt"], "prompt")
        issues = Issues()
        response = issues.attempt(completion_messages, data[response_key], response_key, prompt)
        score = issues.attempt(to_score, data[score_key], score_key)
        issues.raise_if_any()
        return Rated(prompt, Candidate(response, score, response_key))
    unrecognised(data, "preference")


def _paired(data: dict) -> dict:
    issues = Issues()
    for name, which in (("chosen", "preferred"), ("rejected", "dispreferred")):
        if name not in data:
            issues.add(name, "is missing", f"add '{name}' with the {which} response")
    if "prompt" in data:  # check what is there too, so one pass reports everything in the row
        prompt = issues.attempt(prompt_messages, data["prompt"], "prompt")
        chosen, rejected = (
            issues.attempt(completion_messages, data[name], name, prompt) if name in data else None
            for name in ("chosen", "rejected")
        )
        issues.raise_if_any()
        _check_different(chosen, rejected)
    else:
        issues.raise_if_any()
        prompt, chosen, rejected = _implicit(data["chosen"], data["rejected"])
    pair = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    # Binarized datasets (ultrafeedback_binarized) keep the scores next to the pair: keep them too.
    if "score_chosen" in data and "score_rejected" in data:
        pair["score_chosen"] = issues.attempt(to_score, data["score_chosen"], "score_chosen")
        pair["score_rejected"] = issues.attempt(to_score, data["score_rejected"], "score_rejected")
        issues.raise_if_any()
    return pair


def _implicit(chosen: Any, rejected: Any) -> tuple[Messages, Messages, Messages]:
    """Infer the prompt of a pair stored without one (TRL implicit prompt, Anthropic HH)."""
    issues = Issues()
    if isinstance(chosen, list) and isinstance(rejected, list):
        chosen = issues.attempt(parse_messages, chosen, "chosen")
        rejected = issues.attempt(parse_messages, rejected, "rejected")
    elif looks_like_hh(chosen) or looks_like_hh(rejected):
        chosen = issues.attempt(parse_hh, require_text(chosen, "chosen"), "chosen")
        rejected = issues.attempt(parse_hh, require_text(rejected, "rejected"), "rejected")
    elif isinstance(chosen, list) or isinstance(rejected, list):
        both = "give both responses as strings or both as lists of messages"
        fail("rejected", f"is {type_name(rejected)} but 'chosen' is {type_name(chosen)}", both)
    else:
        issues.attempt(require_text, chosen, "chosen")
        issues.attempt(require_text, rejected, "rejected")
        issues.raise_if_any()
        _check_different(chosen, rejected)
        return split_common_text(chosen, rejected)
    issues.raise_if_any()
    _check_different(chosen, rejected)
    return split_shared_prefix(chosen, rejected)


def _check_different(chosen: Any, rejected: Any) -> None:
    if chosen == rejected:
        fix = "replace 'rejected' with a worse response, or drop the row: an identical pair teaches nothing"
        fail("rejected", "is identical to 'chosen'", fix)


def _ultrafeedback(data: dict, pairing: str, min_margin: float, stats: Counter) -> list[dict]:
    prompt_key = "prompt" if "prompt" in data or "instruction" not in data else "instruction"
    issues = Issues()
    prompt = issues.attempt(prompt_messages, data.get(prompt_key), prompt_key)
    candidates = []
    for index, completion in enumerate(data["completions"]):
        where = f"completions[{index}]"
        if not isinstance(completion, dict):
            fix = 'give each completion as {"response": ..., "overall_score": ...}'
            issues.add(where, f"is {type_name(completion)}, not an object", fix)
            continue
        text_key = next((k for k in ("response", "text") if k in completion), "response")
        score_key = next((k for k in ("overall_score", "score", "rating") if k in completion), "overall_score")
        response = issues.attempt(completion_messages, completion.get(text_key), f"{where}.{text_key}", prompt)
        score = issues.attempt(to_score, completion.get(score_key), f"{where}.{score_key}")
        candidates.append(Candidate(response, score, where))
    issues.raise_if_any()
    return make_pairs(prompt, candidates, pairing, min_margin, stats, scored=True)


def _ranked(data: dict, pairing: str, min_margin: float, stats: Counter) -> list[dict]:
    list_key = "responses" if "responses" in data else "completions"
    issues = Issues()
    prompt = issues.attempt(prompt_messages, data.get("prompt"), "prompt")
    responses = data[list_key]
    if not isinstance(responses, list) or not responses:
        fail(list_key, f"is not a list of responses (got {type_name(responses)})", "give a list of responses")
    messages = [issues.attempt(completion_messages, r, f"{list_key}[{i}]", prompt) for i, r in enumerate(responses)]
    if "ranking" in data:
        ranking = data["ranking"]
        if (
            not isinstance(ranking, list)
            or any(isinstance(i, bool) or not isinstance(i, int) for i in ranking)
            or sorted(ranking) != list(range(len(responses)))
        ):
            order = f"list each response index 0..{len(responses) - 1} once, best first"
            issues.add("ranking", f"is not an ordering of the {len(responses)} responses ({ranking!r})", order)
        else:
            scores, scored = [0.0] * len(responses), False
            for position, index in enumerate(ranking):
                scores[index] = -float(position)
    elif "scores" in data:
        scores, scored = data["scores"], True
        if not isinstance(scores, list) or len(scores) != len(responses):
            same = f"give '{list_key}' and 'scores' the same length"
            fail("scores", f"does not give one score per response ({len(responses)} responses)", same)
        scores = [issues.attempt(to_score, s, f"scores[{i}]") for i, s in enumerate(scores)]
    else:
        fail("ranking", "is missing", "add 'ranking' (indices, best first) or 'scores' (one per response)")
    issues.raise_if_any()
    fields = [f"{list_key}[{i}]" for i in range(len(responses))]
    candidates = [Candidate(*c) for c in zip(messages, scores, fields, strict=True)]
    return make_pairs(prompt, candidates, pairing, min_margin, stats, scored=scored)


def make_pairs(
    prompt: Messages,
    candidates: list[Candidate],
    pairing: str,
    min_margin: float,
    stats: Counter,
    *,
    scored: bool,
) -> list[dict]:
    """Pairs from a prompt's scored responses; counts what it drops in ``stats``."""
    unique: dict[str, Candidate] = {}
    for candidate in candidates:
        first = unique.setdefault(key(candidate.messages), candidate)
        if first is not candidate and first.score != candidate.score:
            fix = "remove one copy, or give them the same score"
            fail(candidate.field, f"repeats {first.field} with a different score", fix)
    ranked = sorted(unique.values(), key=lambda c: -c.score)  # stable: ties keep their input order
    if len(ranked) < 2:
        stats["single"] += 1  # nothing to compare with: not a problem, but worth a note
        return []
    if pairing == "all":
        matches = [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1 :]]
    elif pairing == "best_vs_rest":
        matches = [(ranked[0], b) for b in ranked[1:]]
    else:
        matches = [(ranked[0], min(ranked, key=lambda c: c.score))]
    pairs = []
    for better, worse in matches:
        if better.score == worse.score:
            stats["ties"] += 1
        elif scored and better.score - worse.score < min_margin:
            stats["margin"] += 1
        else:
            pair = {"prompt": prompt, "chosen": better.messages, "rejected": worse.messages}
            if scored:
                pair.update(score_chosen=better.score, score_rejected=worse.score)
            pairs.append(pair)
    if not pairs:
        stats["no_pair"] += 1
    return pairs


def build_preferences(rows: list[Row], collector: Collector, pairing: str, min_margin: float) -> list[dict]:
    """Normalize a table's rows into pairs, reporting bad rows to ``collector``."""
    pairs: list[dict] = []
    groups: dict[str, list[Rated]] = {}
    stats: Counter = Counter()
    for row in rows:
        try:
            result = normalize_row(row.data, pairing, min_margin, stats)
        except RowError as err:
            collector.reject(row, err.issues)
            continue
        if isinstance(result, Rated):
            keys = [key([result.prompt, result.candidate.messages])]
            result.candidate.field = row.location
        else:
            keys = [key([p["prompt"], p["chosen"], p["rejected"]]) for p in result]
        earlier = collector.duplicate_of(keys, row)
        if earlier is not None:
            what = "prompt and response" if isinstance(result, Rated) else "prompt, chosen and rejected"
            duplicate = Issue(None, f"duplicates {earlier} (same {what})", "remove the repeated row")
            collector.reject(row, [duplicate])
            continue
        collector.keep()
        if isinstance(result, Rated):
            groups.setdefault(key(result.prompt), []).append(result)
        else:
            pairs.extend(result)
    for group in groups.values():
        candidates = [rated.candidate for rated in group]
        pairs.extend(make_pairs(group[0].prompt, candidates, pairing, min_margin, stats, scored=True))
    notes = {
        "ties": "candidate pair(s) dropped as ties (equal score or rank)",
        "margin": f"candidate pair(s) dropped: score gap below min_margin={min_margin:g}",
        "no_pair": "prompt(s) gave no pair: all their responses tied or were too close",
        "single": "prompt(s) had a single response, so no pair",
    }
    for name, text in notes.items():
        if stats[name]:
            collector.note(f"{stats[name]} {text}")
    return pairs
