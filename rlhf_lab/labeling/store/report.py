"""The store's progress report, in one home: ``stats()`` counts (a dict for progress bars and
``--json``) and ``report()``, the text that ``rlhf-lab prefs stats`` prints and a notebook can
print too (``print(store.report())``). A mixin of ``PreferenceStore``, like ``ImportExport``.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from rlhf_lab.labeling.agreement import SIMPLE_DECISIONS
from rlhf_lab.labeling.store.schema import _decisions


class Reports:
    """``stats`` and ``report`` for a ``PreferenceStore`` (uses its ``_read``, ``path``,
    ``schema_version`` and ``labels_per_minute``)."""

    def stats(self, window_s: float = 300.0, now: float | None = None) -> dict[str, Any]:
        """Counts for a progress bar or a CLI: items, labelled items (a decision other than skip
        in force), events by kind, decisions in force by value, and per annotator: labelled,
        skipped, events, pending (their queue) and labels per minute over ``window_s``."""
        with self._read() as conn:
            n_items = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            kinds = dict(conn.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind").fetchall())
            events = dict(conn.execute("SELECT annotator, COUNT(*) FROM events GROUP BY annotator").fetchall())
            decided = _decisions(conn, None)
        values: Counter = Counter()
        per: dict[str, Counter] = {name: Counter() for name in events}
        for by in decided.values():
            for name, decision in by.items():
                values[decision if isinstance(decision, str) else "ranking"] += 1
                per[name]["skipped" if decision == "skip" else "labeled"] += 1
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "items": n_items,
            "labeled_items": sum(any(d != "skip" for d in by.values()) for by in decided.values()),
            "events": sum(kinds.values()),
            "label_events": kinds.get("label", 0),
            "undo_events": kinds.get("undo", 0),
            "decisions": {name: values[name] for name in (*SIMPLE_DECISIONS, "ranking")},
            "window_s": window_s,
            "labels_per_minute": self.labels_per_minute(None, window_s, now),
            "annotators": {
                name: {
                    "labeled": per[name]["labeled"],
                    "skipped": per[name]["skipped"],
                    "events": events[name],
                    "pending": n_items - per[name]["labeled"] - per[name]["skipped"],
                    "labels_per_minute": self.labels_per_minute(name, window_s, now),
                }
                for name in sorted(events)
            },
        }

    def report(self, window_s: float = 300.0, as_json: bool = False) -> str:
        """The progress report as text (``as_json``: ``stats()`` as indented JSON): items,
        labelled items, events, decisions in force, labels per minute over ``window_s`` seconds,
        and a per-annotator table. What ``rlhf-lab prefs stats --store FILE`` prints."""
        data = self.stats(window_s=window_s)
        return json.dumps(data, indent=2) if as_json else format_report(data)


def format_report(data: dict[str, Any]) -> str:
    """The text of a ``stats()`` dict."""
    decisions = ", ".join(f"{name} {count}" for name, count in data["decisions"].items())
    lines = [
        f"{data['path']} (schema v{data['schema_version']})",
        f"items {data['items']}, labelled {data['labeled_items']}, events {data['events']} "
        f"({_plural(data['label_events'], 'label')}, {_plural(data['undo_events'], 'undo')})",
        f"decisions in force: {decisions}",
        f"labels per minute (last {data['window_s'] / 60:g} min): {data['labels_per_minute']:.1f}",
    ]
    if data["annotators"]:
        width = max(9, *(len(name) for name in data["annotators"]))
        lines += ["", f"{'annotator':{width}}  labelled  skipped  events  pending  labels/min"]
        for name, row in data["annotators"].items():
            lines.append(
                f"{name:{width}}  {row['labeled']:8d}  {row['skipped']:7d}  {row['events']:6d}  "
                f"{row['pending']:7d}  {row['labels_per_minute']:10.1f}"
            )
    return "\n".join(lines)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
