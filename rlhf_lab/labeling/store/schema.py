"""The store's SQLite layout: tables and append-only triggers, ordered migrations with the
schema version they leave, and the shared reads of that layout (items in queue order, the
decisions in force). What "in force" means lives here: a label event that no undo voided.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from rlhf_lab.labeling.agreement import Decision, decode_decision
from rlhf_lab.labeling.store.items import Item, Response, _annotator

_UNVOIDED = "NOT EXISTS (SELECT 1 FROM events u WHERE u.voids = e.id)"
# A decision in force: a label event (alias ``e``) that no undo voided. An annotator's decision on
# an item is the latest such event; every read of "in force" goes through this one condition.
_IN_FORCE = f"e.kind = 'label' AND {_UNVOIDED}"


def _immutable(table: str) -> list[str]:
    why = "preference stores are append-only: record a new label or an undo event instead"
    return [
        f"CREATE TRIGGER {table}_no_{verb} BEFORE {verb.upper()} ON {table} BEGIN "
        f"SELECT RAISE(ABORT, '{table}: {why}'); END"
        for verb in ("update", "delete")
    ]


# Ordered migrations: version -> statements, applied once each in one transaction. A new version
# appends here; existing entries never change, because stores in the wild already ran them.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE items (
            seq INTEGER PRIMARY KEY,                 -- queue order
            id TEXT NOT NULL UNIQUE,
            prompt TEXT NOT NULL,                    -- JSON messages
            n_responses INTEGER NOT NULL CHECK (n_responses >= 2),
            metadata TEXT NOT NULL,                  -- JSON object
            created_at REAL NOT NULL)""",
        """CREATE TABLE responses (
            item_id TEXT NOT NULL REFERENCES items(id),
            position INTEGER NOT NULL,               -- 0 is "A", 1 is "B"
            messages TEXT NOT NULL,                  -- JSON assistant messages
            model TEXT, sampling TEXT NOT NULL, seed INTEGER, metadata TEXT NOT NULL,
            PRIMARY KEY (item_id, position))""",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            item_id TEXT NOT NULL REFERENCES items(id),
            annotator TEXT NOT NULL CHECK (length(trim(annotator)) > 0),
            kind TEXT NOT NULL CHECK (kind IN ('label', 'undo')),
            decision TEXT,                           -- 'A', ..., 'skip' or a JSON ranking
            voids INTEGER REFERENCES events(id),     -- the label an undo cancels
            created_at REAL NOT NULL,                -- unix seconds
            CHECK ((kind = 'label' AND decision IS NOT NULL AND voids IS NULL)
                OR (kind = 'undo' AND decision IS NULL AND voids IS NOT NULL)))""",
        "CREATE INDEX events_by_item ON events(item_id, annotator)",
        "CREATE INDEX events_by_annotator ON events(annotator, id)",
        "CREATE UNIQUE INDEX events_void_once ON events(voids) WHERE voids IS NOT NULL",
        *_immutable("items"),
        *_immutable("responses"),
        *_immutable("events"),
    ],
}


class SchemaVersionError(ValueError):
    """The store was written by a newer rlhf-lab whose schema this one does not know.
    A ValueError, so the CLI reports it as one line like any other unusable input."""


def _migrate(conn: sqlite3.Connection, path: Path, migrations: Mapping[int, list[str]]) -> int:
    """Bring the schema up to date inside the caller's transaction; returns the version.
    Opening a store at the current version changes nothing, so opening is idempotent."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
    current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
    latest = max(migrations)
    if current > latest:
        raise SchemaVersionError(
            f"{path} has schema version {current}, written by a newer rlhf-lab; this one reads versions "
            f"up to {latest}. Fix: upgrade rlhf-lab to open it (the file was left untouched)"
        )
    for version in sorted(v for v in migrations if v > current):
        for statement in migrations[version]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, time.time()))
    return max(current, latest)


def _load_items(conn: sqlite3.Connection, where: str = "", args: tuple = ()) -> list[Item]:
    responses: dict[str, list[Response]] = {}
    query = (
        "SELECT item_id, messages, model, sampling, seed, metadata FROM responses "
        f"WHERE item_id IN (SELECT id FROM items {where}) ORDER BY item_id, position"
    )
    for item_id, messages, model, sampling, seed, metadata in conn.execute(query, args):
        response = Response(json.loads(messages), model, json.loads(sampling), seed, json.loads(metadata))
        responses.setdefault(item_id, []).append(response)
    rows = conn.execute(f"SELECT id, prompt, metadata, created_at FROM items {where} ORDER BY seq", args)
    return [Item(i, json.loads(p), responses[i], json.loads(m), t) for i, p, m, t in rows]


def _decisions(conn: sqlite3.Connection, annotators: Iterable[str] | None) -> dict[str, dict[str, Decision]]:
    wanted = None if annotators is None else {_annotator(a) for a in annotators}
    out: dict[str, dict[str, Decision]] = {}
    query = f"SELECT item_id, annotator, decision FROM events e WHERE {_IN_FORCE} ORDER BY id"
    for item_id, who, text in conn.execute(query):
        if wanted is None or who in wanted:
            out.setdefault(item_id, {})[who] = decode_decision(text)  # later rows win: the latest label in force
    return out


def _decision(conn: sqlite3.Connection, item_id: str, annotator: str) -> Decision | None:
    """``annotator``'s decision in force on one item (skips included), or None if they have none."""
    row = conn.execute(
        f"SELECT decision FROM events e WHERE e.item_id = ? AND e.annotator = ? AND {_IN_FORCE} "
        "ORDER BY e.id DESC LIMIT 1",
        (item_id, annotator),
    ).fetchone()
    return None if row is None else decode_decision(row[0])


def _undecided() -> str:
    return f"NOT EXISTS (SELECT 1 FROM events e WHERE e.item_id = i.id AND e.annotator = ? AND {_IN_FORCE})"
