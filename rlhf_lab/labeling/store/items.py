"""What the store holds and how input becomes it: the ``Item``, ``Response`` and ``Event``
records read back from the store, and the validation that turns a caller's prompt, responses,
metadata and annotator name into rows (or a ValueError naming the field and the fix).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rlhf_lab.labeling.agreement import Decision

Messages = list[dict[str, str]]
_RESPONSE_KEYS = ("text", "model", "sampling", "seed", "metadata")


@dataclass(frozen=True)
class Response:
    """One candidate response and how it was generated."""

    messages: Messages
    model: str | None = None
    sampling: dict = field(default_factory=dict)
    seed: int | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(m["content"] for m in self.messages)


@dataclass(frozen=True)
class Item:
    """A prompt and the responses an annotator compares; ``responses[0]`` is shown as A."""

    id: str
    prompt: Messages
    responses: list[Response]
    metadata: dict
    created_at: float

    @property
    def prompt_text(self) -> str:
        return self.prompt[-1]["content"]  # the user turn being answered

    @property
    def models(self) -> list[str | None]:
        """The model behind each position: ``metadata["models"]``, else each response's model."""
        mapping = self.metadata.get("models")
        return list(mapping) if isinstance(mapping, list) else [r.model for r in self.responses]


@dataclass(frozen=True)
class Event:
    """One row of the append-only log: a label, or an undo voiding the label ``voids``."""

    id: int
    item_id: str
    annotator: str
    kind: str
    decision: Decision | None
    voids: int | None
    created_at: float


def _item_row(item: Mapping[str, Any], where: str = "") -> dict:
    """Validate and serialize one item; ``where`` prefixes field names in errors ("items[3].")."""
    from rlhf_lab.data.messages import prompt_messages

    if not isinstance(item, Mapping):
        raise ValueError(f"{where or 'item'} is a {type(item).__name__}. Fix: give each item as a dict")
    unknown = sorted(set(item) - {"prompt", "responses", "metadata", "id"})
    if unknown:
        raise ValueError(f"{where}{unknown} unknown. Fix: an item has prompt, responses, metadata and id")
    prompt = _checked(prompt_messages, item.get("prompt"), f"{where}prompt")
    responses = item.get("responses")
    if not isinstance(responses, (list, tuple)):
        got = type(responses).__name__
        raise ValueError(f"{where}responses is a {got}, not a list. Fix: pass a list of 2 or more responses")
    if len(responses) < 2:
        raise ValueError(
            f"{where}responses has {len(responses)} response(s), but an item needs at least 2 to compare. "
            "Fix: pass 2 or more responses"
        )
    rows, seen = [], {}
    for index, value in enumerate(responses):
        rows.append(_response(value, f"{where}responses[{index}]", prompt))
        first = seen.setdefault(rows[-1][0], index)
        if first != index:
            raise ValueError(
                f"{where}responses[{index}] is identical to {where}responses[{first}]. Fix: regenerate one of "
                "them (another seed or temperature) or drop the item: identical responses teach nothing"
            )
    prompt_json = _json(prompt, f"{where}prompt")
    item_id = item.get("id")
    if item_id is None:  # a rating item (scores, not a choice) is another item than a pair of the same texts
        rating = ["rating"] if isinstance(item.get("metadata"), Mapping) and item["metadata"].get("rating") else []
        item_id = _digest([prompt_json, *(r[0] for r in rows), *rating])[:20]
    elif not isinstance(item_id, str) or not item_id.strip():
        raise ValueError(f"{where}id {item_id!r} is not a usable id. Fix: pass a non-empty string, or no id")
    metadata = _json_object(item.get("metadata"), f"{where}metadata")
    return {"id": item_id, "prompt": prompt_json, "responses": rows, "metadata": metadata}


def _response(value: Any, name: str, prompt: Messages) -> tuple:
    from rlhf_lab.data.messages import completion_messages

    extra: Mapping[str, Any] = {}
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(_RESPONSE_KEYS))
        if unknown:
            raise ValueError(
                f"{name} has unknown key(s) {unknown}. Fix: use {', '.join(_RESPONSE_KEYS)}; put anything "
                "else under 'metadata'"
            )
        extra, value, name = value, value.get("text"), f"{name}.text"
    if isinstance(value, str) and not value.strip():
        raise ValueError(
            f"{name} is {'empty' if not value else 'only whitespace'}. Fix: give every response its text, "
            "or regenerate it: an empty response cannot be compared"
        )
    messages = _checked(completion_messages, value, name, prompt)
    model, seed = extra.get("model"), extra.get("seed")
    if model is not None and not isinstance(model, str):
        raise ValueError(f"{name}: model is a {type(model).__name__}. Fix: give the model's name as a string")
    if seed is not None and (isinstance(seed, bool) or not hasattr(seed, "__index__")):
        raise ValueError(f"{name}: seed {seed!r} is not a whole number. Fix: pass an int or None")
    return (
        _json(messages, name),
        model,
        _json_object(extra.get("sampling"), f"{name}: sampling"),
        None if seed is None else int(seed),
        _json_object(extra.get("metadata"), f"{name}: metadata"),
    )


def _checked(normalize: Any, value: Any, name: str, *args: Any) -> Messages:
    """Run a data-layer normalizer, turning its RowError into a ValueError that names the field."""
    from rlhf_lab.data.errors import RowError

    try:
        return normalize(value, name, *args)
    except RowError as err:
        raise ValueError("; ".join(f"{i.field or name} {i.problem}. Fix: {i.fix}" for i in err.issues)) from None


def _json(value: Any, name: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name} cannot be stored as JSON ({err}). Fix: use dicts, lists, strings, finite numbers, "
            "booleans and None"
        ) from None


def _json_object(value: Any, name: str) -> str:
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} is a {type(value).__name__}. Fix: pass a dict (or None)")
    return _json(dict(value), name)


def _digest(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def _annotator(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        what = ("empty" if not name else "only whitespace") if isinstance(name, str) else f"a {type(name).__name__}"
        raise ValueError(
            f"annotator is {what}. Fix: pass annotator='your-name'; labels are kept per annotator for "
            "majority votes, agreement and undo"
        )
    return name.strip()  # "ana " and "ana" are one person


def _unknown_item(item_id: Any) -> ValueError:
    return ValueError(
        f"item_id {item_id!r} is not in the store. Fix: add the item with store.add_item(prompt, responses) "
        "and label the id it returns"
    )
