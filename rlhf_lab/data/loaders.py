"""The data layer's public entry points: load SFT, preference, prompt and rating data.

Each ``load_*`` reads any accepted source (a file path, a ``datasets.Dataset`` or ``DatasetDict``,
a list), normalizes every row into TRL's conversational format, and validates it on the way.
With ``strict=True`` any problem raises one :class:`DataError` listing all of them, so nothing
is ever half-loaded; with ``strict=False`` bad rows are dropped and ``(dataset, report)`` comes
back. :func:`validate` runs the same checks and only returns the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from collections.abc import Callable
from typing import Any

from datasets import Dataset, DatasetDict, Features, Value

from rlhf_lab.data.errors import (
    Collector,
    DataError,
    Issue,
    Issues,
    RowError,
    ValidationReport,
    fail,
    unrecognised,
)
from rlhf_lab.data.messages import (
    Messages,
    check_order,
    completion_messages,
    key,
    looks_like_hh,
    parse_hh,
    parse_messages,
    prompt_messages,
    require_text,
    type_name,
)
from rlhf_lab.data.preferences import PAIRINGS, build_preferences, to_score
from rlhf_lab.data.readers import Row, read_source

# strict=True gives the data; strict=False gives (data, report). A DatasetDict in gives one out.
Loaded = Dataset | DatasetDict | tuple[Dataset | DatasetDict, ValidationReport]

_MESSAGES = [{"role": Value("string"), "content": Value("string")}]
_FLOAT = Value("float64")
_COLUMNS = {
    "sft": {"messages": _MESSAGES},
    "prompts": {"prompt": _MESSAGES},
    "preference": {"prompt": _MESSAGES, "chosen": _MESSAGES, "rejected": _MESSAGES},
    "ratings": {"prompt": _MESSAGES, "completion": _MESSAGES, "label": Value("bool"), "score": _FLOAT},
}
_SCORE_COLUMNS = {"score_chosen": _FLOAT, "score_rejected": _FLOAT}
_LABELS = dict.fromkeys(("true", "good", "up", "yes", "1"), True) | dict.fromkeys(
    ("false", "bad", "down", "no", "0"), False
)


def load_sft(source: Any, *, strict: bool = True, split: str | None = None) -> Loaded:
    """Conversations to fine-tune on: a dataset with a ``messages`` column."""
    return _load("sft", source, strict, split, lambda rows, c: _simple(rows, c, _sft_row))


def load_prompts(source: Any, *, strict: bool = True, split: str | None = None) -> Loaded:
    """Prompts for generation (PPO, evaluation): a dataset with a ``prompt`` column of messages."""
    return _load("prompts", source, strict, split, lambda rows, c: _simple(rows, c, _prompt_row))


def load_preferences(
    source: Any,
    *,
    strict: bool = True,
    split: str | None = None,
    pairing: str = "all",
    min_margin: float = 0.0,
) -> Loaded:
    """Preference pairs: ``prompt``, ``chosen``, ``rejected`` (plus ``score_chosen`` and
    ``score_rejected`` when the source carries scores). ``pairing`` and ``min_margin`` decide how
    scored or ranked responses become pairs; see :mod:`rlhf_lab.data.preferences`."""
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing={pairing!r} is not one of {', '.join(PAIRINGS)}")
    if min_margin < 0:
        raise ValueError(f"min_margin must be >= 0, got {min_margin}")
    return _load("preference", source, strict, split, lambda rows, c: build_preferences(rows, c, pairing, min_margin))


def load_ratings(
    source: Any, *, strict: bool = True, split: str | None = None, threshold: float | None = None
) -> Loaded:
    """Unpaired feedback (TRL's KTO format): ``prompt``, ``completion``, ``label``, ``score``.

    Rows scored instead of labelled get ``label = score >= threshold``; ``threshold=None`` uses
    the median of the scores in the source (per split), so half the rows count as desirable.
    """
    return _load("ratings", source, strict, split, lambda rows, c: _build_ratings(rows, c, threshold))


def validate(source: Any, kind: str) -> ValidationReport:
    """Check a source as ``kind`` ("preference", "sft", "prompts" or "ratings") and report.

    Never raises for bad rows; only for a source that cannot be opened at all.
    """
    loaders = {
        "preference": load_preferences,
        "sft": load_sft,
        "prompts": load_prompts,
        "ratings": load_ratings,
    }
    if kind not in loaders:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(loaders)}")
    return loaders[kind](source, strict=False)[1]


def _load(
    kind: str,
    source: Any,
    strict: bool,
    split: str | None,
    build: Callable[[list[Row], Collector], list[dict]],
) -> Any:
    tables, is_dict = read_source(source, split, allow_strings=kind == "prompts")
    collector = Collector(kind)
    built = {}
    for name, table in tables.items():
        collector.start(table)
        built[name] = build(table.rows, collector)
    report = collector.finish(sum(len(examples) for examples in built.values()))
    if strict and report.problems:
        raise DataError(report)
    columns = dict(_COLUMNS[kind])
    if any("score_chosen" in ex for examples in built.values() for ex in examples):
        columns.update(_SCORE_COLUMNS)  # every split gets them, so the splits share one schema
    features = Features(columns)
    out = {
        name: Dataset.from_dict({c: [ex.get(c) for ex in examples] for c in columns}, features=features)
        for name, examples in built.items()
    }
    dataset = DatasetDict(out) if is_dict else next(iter(out.values()))
    return dataset if strict else (dataset, report)


def _simple(
    rows: list[Row],
    collector: Collector,
    normalize: Callable[[Any], dict],
    identity: Callable = key,
    same: str = "",
) -> list[dict]:
    """Rows that each give one example: normalize, reject on problems, drop duplicates."""
    examples = []
    for row in rows:
        try:
            example = normalize(row.data)
        except RowError as err:
            collector.reject(row, err.issues)
            continue
        earlier = collector.duplicate_of([identity(example)], row)
        if earlier is not None:
            collector.reject(row, [Issue(None, f"duplicates {earlier}{same}", "remove the repeated row")])
            continue
        collector.keep()
        examples.append(example)
    return examples


def _sft_row(data: Any) -> dict:
    if not isinstance(data, dict):
        fail(None, f"is {type_name(data)}, not an object", "give each example as an object")
    if "messages" in data or "conversations" in data:
        field = "messages" if "messages" in data else "conversations"
        messages = parse_messages(data[field], field)
    elif "prompt" in data or "completion" in data or "response" in data:
        answer = "completion" if "completion" in data or "response" not in data else "response"
        issues = Issues()
        prompt = issues.attempt(prompt_messages, data.get("prompt"), "prompt")
        completion = issues.attempt(completion_messages, data.get(answer), answer, prompt)
        issues.raise_if_any()
        messages, field = prompt + completion, answer
    elif "instruction" in data or "output" in data:
        issues = Issues()
        instruction = issues.attempt(require_text, data.get("instruction"), "instruction")
        output = issues.attempt(require_text, data.get("output"), "output")
        issues.raise_if_any()
        messages = [
            {"role": "user", "content": _with_input(instruction, data)},
            {"role": "assistant", "content": output},
        ]
        field = "output"
    elif "text" in data:
        text = require_text(data["text"], "text")
        if not looks_like_hh(text):
            fail(
                "text",
                "is not a 'Human:'/'Assistant:' transcript",
                "write it as '\\n\\nHuman: ...\\n\\nAssistant: ...', or give the row as 'messages'",
            )
        messages, field = parse_hh(text, "text"), "text"
    else:
        unrecognised(data, "sft")
    return {"messages": check_order(messages, field, "conversation")}


def _with_input(instruction: str, data: dict) -> str:
    # Alpaca's optional "input" is context for the instruction; join them as one user turn.
    extra = data.get("input")
    return f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction


def _prompt_row(data: Any) -> dict:
    if isinstance(data, str):
        return {"prompt": prompt_messages(data, "prompt")}
    if "prompt" in data:
        return {"prompt": prompt_messages(data["prompt"], "prompt")}
    if "messages" in data:
        return {"prompt": _drop_replies(parse_messages(data["messages"], "messages"), "messages")}
    for field in ("question", "instruction", "query", "text"):
        if field in data:
            text = require_text(data[field], field)
            if field == "text" and looks_like_hh(text):
                return {"prompt": _drop_replies(parse_hh(text, field, open_end=True), field)}
            content = _with_input(text, data) if field == "instruction" else text
            return {"prompt": [{"role": "user", "content": content}]}
    unrecognised(data, "prompts")


def _drop_replies(messages: Messages, field: str) -> Messages:
    # A conversation used as a prompt: the trailing replies are what the policy should generate.
    while messages and messages[-1]["role"] in ("assistant", "tool"):
        messages = messages[:-1]
    if not messages:
        fail(field, "has no user message", f"put at least one user turn in '{field}'")
    return check_order(messages, field, "prompt")


def _rating_row(data: Any) -> dict:
    if not isinstance(data, dict):
        fail(None, f"is {type_name(data)}, not an object", "give each rating as an object")
    answer = next((k for k in ("completion", "response") if k in data), None)
    # An empty cell means "not given": a CSV with both columns leaves one blank per row.
    has_label = data.get("label", "") != ""
    score_key = next((k for k in ("reward", "score", "rating") if data.get(k, "") != ""), None)
    if "prompt" not in data or answer is None:
        unrecognised(data, "ratings")
    if not (has_label or score_key):
        fail("label", "is missing (and there is no score)", "give 'label' (true/false) or a 'score' number")
    issues = Issues()
    prompt = issues.attempt(prompt_messages, data["prompt"], "prompt")
    completion = issues.attempt(completion_messages, data[answer], answer, prompt)
    label = issues.attempt(_to_label, data["label"]) if has_label else None
    score = issues.attempt(to_score, data[score_key], score_key) if score_key else None
    issues.raise_if_any()
    return {"prompt": prompt, "completion": completion, "label": label, "score": score}


def _to_label(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _LABELS:
        return _LABELS[value.strip().lower()]
    fail("label", f"is not a label ({value!r})", "use true/false, good/bad, up/down or 1/0")


def _build_ratings(rows: list[Row], collector: Collector, threshold: float | None) -> list[dict]:
    # The same completion rated twice for one prompt is a duplicate, whatever the two ratings say.
    examples = _simple(
        rows,
        collector,
        _rating_row,
        lambda ex: key([ex["prompt"], ex["completion"]]),
        " (same prompt and completion)",
    )
    unlabelled = [ex for ex in examples if ex["label"] is None]
    if unlabelled:
        scores = [ex["score"] for ex in examples if ex["score"] is not None]
        cut = statistics.median(scores) if threshold is None else threshold
        for example in unlabelled:
            example["label"] = example["score"] >= cut
        how = "the median score" if threshold is None else "the given threshold"
        collector.note(f"{len(unlabelled)} row(s) labelled from scores: desirable when score >= {cut:g} ({how})")
    return examples


def describe_source(source: Any) -> str:
    """Where a stage's data came from, for its summary and model card: a path, "starter", "task:NAME", or
    what was passed in memory (a Dataset or list has no name; `fingerprint` still identifies it)."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if hasattr(source, "prompts") and isinstance(getattr(source, "name", None), str):  # a gold task
        return f"task:{source.name}"
    size = f" of {len(source)} rows" if hasattr(source, "__len__") else ""
    return f"passed in memory ({type(source).__name__}{size})"


def fingerprint(rows: Any) -> str | None:
    """A short content hash of the rows a stage trained on (a Dataset or a list of rows or prompts):
    "sha256:" and 16 hex digits over each row's JSON with sorted keys, in order. The same data gives the
    same hash in any process; one changed row, a reorder or a dropped row changes it. None: no rows."""
    if rows is None:
        return None
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        digest.update(b"\n")
    return f"sha256:{digest.hexdigest()[:16]}"
