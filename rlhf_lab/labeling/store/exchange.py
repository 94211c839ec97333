"""Getting labels in and out of a store: exports to TRL's preference (DPO, reward model) and
unpaired (KTO) datasets and atomic JSON lines, and imports of labelled data through the data
loaders. ``ImportExport`` is a mixin of ``PreferenceStore``; it relies on the store's
``_write``, ``_insert_item`` and ``_consensus``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rlhf_lab.files import write_jsonl
from rlhf_lab.labeling.agreement import preference_rows, unpaired_rows
from rlhf_lab.labeling.store.items import Messages, _annotator, _digest, _item_row
from rlhf_lab.labeling.store.schema import _decisions


class ImportExport:
    """``PreferenceStore``'s exports and imports (see the module docstring)."""

    def to_preferences(
        self,
        ties: str = "exclude",
        both_bad: str = "exclude",
        min_votes: int = 1,
        annotators: Iterable[str] | None = None,
    ) -> Any:
        """A ``datasets.Dataset`` in TRL's conversational preference format (prompt, chosen,
        rejected): per pair of responses, the majority vote of the annotators' decisions.

        ``ties`` / ``both_bad``: "exclude" (default) drops pairs whose majority says so; "both"
        emits both orders, which pulls a Bradley-Terry model's two rewards together. Rankings give
        every pair. Pairs with fewer than ``min_votes`` votes, or a level vote, are left out;
        so are exact duplicates (two items can hold the same two responses).
        """
        _choice("ties", ties, ("exclude", "both"))
        _choice("both_bad", both_bad, ("exclude", "both"))
        rows = preference_rows(self._consensus(min_votes, annotators), ties, both_bad)
        return _dataset(rows, ("prompt", "chosen", "rejected"))

    def to_unpaired(self, min_votes: int = 1, annotators: Iterable[str] | None = None) -> Any:
        """A ``datasets.Dataset`` for KTO (prompt, completion, label): a clear win gives the
        winner ``True`` and the loser ``False``; both_bad gives both ``False``; ties give nothing.
        A response that won one pair and lost another (the middle of a ranking) is left out."""
        return _dataset(unpaired_rows(self._consensus(min_votes, annotators)), ("prompt", "completion", "label"))

    def to_jsonl(self, path: str | os.PathLike, kind: str = "preference", **options: Any) -> int:
        """Write ``to_preferences(**options)`` (or ``kind="unpaired"``: ``to_unpaired``) as JSON
        lines, atomically: a temporary file in the same folder, fsynced, then renamed over
        ``path``, so a reader never sees half a file. Returns the number of rows."""
        _choice("kind", kind, ("preference", "unpaired"))
        data = self.to_preferences(**options) if kind == "preference" else self.to_unpaired(**options)
        write_jsonl(path, data)
        return len(data)

    def import_file(self, source: Any, kind: str = "preference", annotator: str = "import") -> ImportResult:
        """Import labelled data through the data loaders (``load_preferences`` / ``load_ratings``:
        every format and source they read): each pair becomes an item plus a label event by
        ``annotator``, all in one transaction, so a bad file leaves the store as it was.

        Response order is a hash of the content, not the source's chosen/rejected order, so a
        later blind relabelling does not show the imported winner always as A. Re-importing is a
        no-op: a label equal to the annotator's decision in force is not written again.
        ``kind="ratings"`` (unpaired thumbs up/down) groups completions by prompt and pairs each
        desirable one with an undesirable one (a clear win), or two undesirable ones (both_bad);
        a prompt with one completion, or only desirable ones, gives no item and is counted in
        ``notes``.
        """
        _choice("kind", kind, ("preference", "ratings"))
        who = _annotator(annotator)
        from rlhf_lab.data import load_preferences, load_ratings

        data = load_preferences(source) if kind == "preference" else load_ratings(source)
        pairs, notes = (_preference_pairs if kind == "preference" else _rating_pairs)(data.to_list())
        origin = str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
        result = ImportResult(kind, loaded=len(data), notes=notes)
        metadata = {"imported_from": origin}
        # Validate before taking the write lock, so labellers wait only for the inserts.
        rows = [(_item_row({"prompt": p, "responses": r, "metadata": metadata}), d) for p, r, d in pairs]
        with self._write() as conn:
            in_force = {item: d[who] for item, d in _decisions(conn, [who]).items()}
            for row, decision in rows:
                new = conn.execute("SELECT 1 FROM items WHERE id = ?", (row["id"],)).fetchone() is None
                item_id = self._insert_item(conn, row)
                result.items += 1
                result.new_items += new
                if in_force.get(item_id) == decision:
                    result.unchanged += 1
                    continue
                conn.execute(
                    "INSERT INTO events (item_id, annotator, kind, decision, created_at) VALUES (?, ?, 'label', ?, ?)",
                    (item_id, who, decision, time.time()),
                )
                in_force[item_id] = decision
                result.labels += 1
        return result


@dataclass
class ImportResult:
    """What ``import_file`` did: examples the loader gave (pairs, or ratings), the items they
    map to (new ones among them), label events written, labels already in force (so not written
    again), and notes on what gave no item."""

    kind: str
    loaded: int = 0
    items: int = 0
    new_items: int = 0
    labels: int = 0
    unchanged: int = 0
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        unit = "pairs" if self.kind == "preference" else "ratings"
        text = (
            f"{self.loaded} {unit} -> {self.items} items ({self.new_items} new), {self.labels} labels "
            f"written, {self.unchanged} already in the store"
        )
        return "\n".join([text, *self.notes])


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")


def _dataset(rows: list[dict], columns: tuple[str, ...]) -> Any:
    from datasets import Dataset, Features, Value

    messages = [{"role": Value("string"), "content": Value("string")}]
    features = Features({c: Value("bool") if c == "label" else messages for c in columns})
    return Dataset.from_dict({c: [row[c] for row in rows] for c in columns}, features=features)


def _preference_pairs(rows: list[dict]) -> tuple[list[tuple], list[str]]:
    """(prompt, [two responses], decision) per loaded pair; positions follow a content hash."""
    pairs = []
    for row in rows:
        chosen, rejected = (
            {"text": row[side], "metadata": _score(row.get(f"score_{side}"))} for side in ("chosen", "rejected")
        )
        first, second = sorted((chosen, rejected), key=lambda r: _digest(r["text"]))
        pairs.append((row["prompt"], [first, second], "A" if first is chosen else "B"))
    return pairs, []


def _rating_pairs(rows: list[dict]) -> tuple[list[tuple], list[str]]:
    """Pairs from unpaired ratings, per prompt: each desirable completion against an undesirable
    one (round robin, so every completion appears), or undesirable ones two by two (both_bad)."""
    groups: dict[str, tuple[Messages, list, list]] = {}
    for row in rows:
        prompt, good, bad = groups.setdefault(_digest(row["prompt"]), (row["prompt"], [], []))
        response = {
            "text": row["completion"],
            "metadata": {"label": row["label"], **_score(row.get("score"))},
        }
        (good if row["label"] else bad).append(response)
    pairs, single, only_good = [], 0, 0
    for prompt, good, bad in groups.values():
        if good and bad:
            for i in range(max(len(good), len(bad))):
                win, lose = good[i % len(good)], bad[i % len(bad)]
                first, second = sorted((win, lose), key=lambda r: _digest(r["text"]))
                pairs.append((prompt, [first, second], "A" if first is win else "B"))
        elif len(bad) >= 2:
            for i in range(0, len(bad), 2):  # an odd one out pairs with the first
                pair = sorted((bad[i], bad[(i + 1) % len(bad)]), key=lambda r: _digest(r["text"]))
                pairs.append((prompt, pair, "both_bad"))
        else:
            single += len(good) + len(bad) == 1
            only_good += len(good) > 1
    notes = [f"{single} prompt(s) have a single completion: nothing to compare it with, not imported"] if single else []
    if only_good:
        notes.append(f"{only_good} prompt(s) have only desirable completions: no preference between them, not imported")
    return pairs, notes


def _score(value: Any) -> dict:
    return {} if value is None else {"score": value}
