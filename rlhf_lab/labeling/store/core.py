"""``PreferenceStore``: one SQLite file opened per thread (WAL, ``synchronous=FULL``), and the
store's own operations: adding and reading items, label and undo events, the decisions in
force, each annotator's queue, agreement and win rate. Exports and imports come from the
``ImportExport`` mixin (``rlhf_lab.labeling.store.exchange``), ``stats`` and ``report`` from the
``Reports`` mixin (``rlhf_lab.labeling.store.report``); the package docstring has the tour.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rlhf_lab.labeling.agreement import (
    Decision,
    WinRate,
    agreement_report,
    consensus,
    decode_decision,
    encode_decision,
    win_counts,
)
from rlhf_lab.labeling.store.exchange import ImportExport
from rlhf_lab.labeling.store.items import Event, Item, Messages, _annotator, _item_row, _unknown_item
from rlhf_lab.labeling.store.report import Reports
from rlhf_lab.labeling.store.schema import (
    _IN_FORCE,
    MIGRATIONS,
    _decision,
    _decisions,
    _load_items,
    _migrate,
    _undecided,
)


class PreferenceStore(ImportExport, Reports):
    """A preference-label store in one SQLite file; see the ``rlhf_lab.labeling.store`` docstring.

    ``create=False`` refuses to make a new file (for tools that only read). ``timeout``: seconds
    a writer waits for another process's write lock before raising.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True, timeout: float = 30.0) -> None:
        if str(path) in ("", ":memory:") or str(path).startswith("file:"):
            raise ValueError(
                f"path={str(path)!r}: a PreferenceStore needs a file on disk (labels must survive "
                "the process). Fix: pass a file name such as 'labels.sqlite'"
            )
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise FileNotFoundError(
                    f"{self.path}: no preference store there. Fix: check the path, or create one "
                    "with lab.PreferenceStore(path) or `rlhf-lab prefs import`"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[tuple[int, sqlite3.Connection]] = []
        self._sizes: dict[str, int] = {}  # item id -> response count; items never change
        self._closed = False
        try:
            with self._write() as conn:
                self.schema_version = _migrate(conn, self.path, MIGRATIONS)
        except BaseException:
            self.close()
            raise

    # -- connections ----------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise ValueError(f"{self.path}: this PreferenceStore is closed. Fix: open a new one")
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # new thread, or a forked child
            local.conn, local.pid = self._connect(), os.getpid()
            with self._lock:
                self._connections.append((local.pid, local.conn))
        return local.conn

    def _connect(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves; check_same_thread=False only so
            # close() can close every thread's connection; each is used by its own thread.
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            # Refuse someone else's database before touching it (WAL mode would stick to the file).
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables - {"sqlite_sequence"} and "schema_version" not in tables:
                conn.close()
                raise ValueError(
                    f"{self.path} is a SQLite database but not a preference store (it has tables "
                    f"{', '.join(sorted(tables))}). Fix: pass a new file name for the store"
                )
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise ValueError(
                f"{self.path} is not a preference store (SQLite: {err}). Fix: pass a new file name, "
                "or a .sqlite file that a PreferenceStore created"
            ) from None
        if mode.lower() != "wal":
            raise ValueError(f"{self.path}: SQLite refused WAL mode ({mode}). Fix: keep the store on a local disk")
        conn.execute("PRAGMA synchronous=FULL")  # per connection: fsync the WAL on every commit
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction holding the write lock from the start (no upgrade deadlocks)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot across several queries, even while other processes write."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close this process's connections (every thread's). Idempotent."""
        self._closed = True
        with self._lock:
            for pid, conn in self._connections:
                if pid == os.getpid():  # a forked child must not touch its parent's connections
                    conn.close()
            self._connections.clear()

    def __enter__(self) -> PreferenceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PreferenceStore({str(self.path)!r})"

    # -- items ----------------------------------------------------------------------------------

    def add_item(
        self,
        prompt: str | Messages,
        responses: list[Any],
        metadata: Mapping[str, Any] | None = None,
        item_id: str | None = None,
    ) -> str:
        """Store a prompt and N >= 2 responses; returns the item id.

        ``prompt``: a string or conversational messages ending in a user turn. Each response: a
        string, assistant messages, or a dict with ``text`` (either of those) and optional
        ``model``, ``sampling``, ``seed``, ``metadata``. Idempotent for the same content.
        """
        item = {"prompt": prompt, "responses": responses, "metadata": metadata, "id": item_id}
        return self._add([_item_row(item)])[0]

    def add_items(self, items: Iterable[Mapping[str, Any]]) -> list[str]:
        """Several items (dicts with ``prompt``, ``responses``, optional ``metadata``, ``id``)
        validated first, then written in one transaction: all of them or none."""
        return self._add([_item_row(item, f"items[{i}].") for i, item in enumerate(items)])

    def _add(self, rows: list[dict]) -> list[str]:
        with self._write() as conn:
            return [self._insert_item(conn, row) for row in rows]

    def _insert_item(self, conn: sqlite3.Connection, row: dict) -> str:
        stored = conn.execute("SELECT prompt, n_responses FROM items WHERE id = ?", (row["id"],)).fetchone()
        if stored is not None:
            if stored[0] != row["prompt"] or [r[0] for r in row["responses"]] != [
                r[0]
                for r in conn.execute(
                    "SELECT messages FROM responses WHERE item_id = ? ORDER BY position", (row["id"],)
                )
            ]:
                raise ValueError(
                    f"item_id {row['id']!r} already holds a different prompt or responses. Fix: pass "
                    "another item_id, or none to get a content-hash id"
                )
            return row["id"]
        conn.execute(
            "INSERT INTO items (id, prompt, n_responses, metadata, created_at) VALUES (?, ?, ?, ?, ?)",
            (row["id"], row["prompt"], len(row["responses"]), row["metadata"], time.time()),
        )
        conn.executemany(
            "INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(row["id"], pos, *response) for pos, response in enumerate(row["responses"])],
        )
        return row["id"]

    def get_item(self, item_id: str) -> Item:
        """The item with this id; ValueError if the store has none."""
        with self._read() as conn:
            items = _load_items(conn, "WHERE id = ?", (item_id,))
        if not items:
            raise _unknown_item(item_id)
        return items[0]

    def items(self) -> list[Item]:
        """Every item, in the order they were added (the queue order)."""
        with self._read() as conn:
            return _load_items(conn)

    # -- labels ---------------------------------------------------------------------------------

    def label(self, item_id: str, decision: Decision, annotator: str) -> int:
        """Record ``annotator``'s decision on an item; returns the event id once it is on disk."""
        return self.label_many([(item_id, decision)], annotator)[0]

    def label_many(self, labels: Iterable[tuple[str, Decision]], annotator: str) -> list[int]:
        """Several ``(item_id, decision)`` labels in one durable transaction (one fsync for all);
        everything is validated before anything is written. Returns the event ids, in order."""
        who = _annotator(annotator)
        rows = [(item_id, self._decision_text(item_id, decision)) for item_id, decision in labels]
        now = time.time()
        with self._write() as conn:
            return [
                conn.execute(
                    "INSERT INTO events (item_id, annotator, kind, decision, created_at) VALUES (?, ?, 'label', ?, ?)",
                    (item_id, who, text, now),
                ).lastrowid
                for item_id, text in rows
            ]

    def undo(self, annotator: str, item_id: str | None = None) -> int | None:
        """Void ``annotator``'s latest label that is still in force (on ``item_id`` if given) by
        appending an undo event; returns its id, or None when there is nothing left to undo.
        Repeated undos walk further back; the voided label is kept, marked by the undo."""
        who = _annotator(annotator)
        if item_id is not None:
            self._size(item_id)  # a clear error for an unknown item
        where, args = ("AND e.item_id = ?", (who, item_id)) if item_id is not None else ("", (who,))
        with self._write() as conn:
            target = conn.execute(
                f"SELECT id, item_id FROM events e WHERE annotator = ? {where} AND {_IN_FORCE} ORDER BY id DESC LIMIT 1",
                args,
            ).fetchone()
            if target is None:
                return None
            return conn.execute(
                "INSERT INTO events (item_id, annotator, kind, voids, created_at) VALUES (?, ?, 'undo', ?, ?)",
                (target[1], who, target[0], time.time()),
            ).lastrowid

    def _size(self, item_id: str) -> int:
        if item_id not in self._sizes:
            row = self._conn().execute("SELECT n_responses FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise _unknown_item(item_id)
            self._sizes[item_id] = row[0]
        return self._sizes[item_id]

    def _decision_text(self, item_id: str, decision: Decision) -> str:
        if not isinstance(item_id, str):
            raise ValueError(f"item_id must be a string id from add_item, got {type(item_id).__name__}")
        return encode_decision(decision, self._size(item_id), item_id)

    def events(self, annotator: str | None = None, item_id: str | None = None) -> list[Event]:
        """The log, oldest first, optionally for one annotator and/or one item."""
        clauses = [(c, v) for c, v in (("annotator = ?", annotator), ("item_id = ?", item_id)) if v is not None]
        where = "WHERE " + " AND ".join(c for c, _ in clauses) if clauses else ""
        rows = self._conn().execute(
            f"SELECT id, item_id, annotator, kind, decision, voids, created_at FROM events {where} ORDER BY id",
            [v for _, v in clauses],
        )
        return [Event(r[0], r[1], r[2], r[3], decode_decision(r[4]), r[5], r[6]) for r in rows]

    def decisions(self, annotators: Iterable[str] | None = None) -> dict[str, dict[str, Decision]]:
        """Each item's decisions in force: ``{item_id: {annotator: decision}}`` (skips included)."""
        with self._read() as conn:
            return _decisions(conn, annotators)

    def decision(self, item_id: str, annotator: str) -> Decision | None:
        """``annotator``'s decision in force on one item (a skip counts), or None if they have none:
        their latest label that no undo voided. ValueError for an item the store does not hold."""
        self._size(item_id)  # a clear error for an unknown item
        with self._read() as conn:
            return _decision(conn, item_id, _annotator(annotator))

    # -- queue ----------------------------------------------------------------------------------

    def next_unlabeled(self, annotator: str, exclude: Iterable[str] = ()) -> Item | None:
        """The oldest item without a decision in force from ``annotator`` (a skip counts as one),
        leaving out the ids in ``exclude`` (e.g. items already on screen); None when done."""
        who, skip = _annotator(annotator), list(exclude)
        marks = ",".join("?" * len(skip))
        with self._read() as conn:
            row = conn.execute(
                f"SELECT id FROM items i WHERE {_undecided()} {f'AND id NOT IN ({marks})' if skip else ''} "
                "ORDER BY seq LIMIT 1",
                (who, *skip),
            ).fetchone()
            return None if row is None else _load_items(conn, "WHERE id = ?", (row[0],))[0]

    def pending(self, annotator: str) -> int:
        """How many items ``annotator`` has not decided yet (the length of their queue)."""
        query = f"SELECT COUNT(*) FROM items i WHERE {_undecided()}"
        return self._conn().execute(query, (_annotator(annotator),)).fetchone()[0]

    def labels_per_minute(
        self, annotator: str | None = None, window_s: float = 300.0, now: float | None = None
    ) -> float:
        """Label events per minute over the last ``window_s`` seconds (or since the annotator's
        first label, if that is later), counting at least one minute so a first label reads 1/min."""
        now = time.time() if now is None else now
        who = "" if annotator is None else "AND annotator = ?"
        args = () if annotator is None else (_annotator(annotator),)
        query = f"SELECT COUNT(*), MIN(created_at) FROM events WHERE kind = 'label' AND created_at > ? {who}"
        recent, _ = self._conn().execute(query, (now - window_s, *args)).fetchone()
        first = self._conn().execute(query, (float("-inf"), *args)).fetchone()[1]
        if not recent:
            return 0.0
        return recent / (max(now - max(now - window_s, first), 60.0) / 60.0)

    # -- agreement ------------------------------------------------------------------------------

    def agreement(self, annotators: Iterable[str] | None = None) -> dict[str, Any]:
        """Inter-annotator agreement over shared items (skips left out): Krippendorff's alpha
        (nominal) over every item two or more annotators decided, Cohen's kappa for each pair of
        annotators, and ``kappa`` itself when there are exactly two. See ``agreement_report``."""
        return agreement_report(self.decisions(annotators))

    def win_rate(
        self, model_a: str, model_b: str, min_votes: int = 1, annotators: Iterable[str] | None = None
    ) -> WinRate:
        """How often humans preferred ``model_a``'s response to ``model_b``'s, with a Wilson 95%
        interval. One trial per item (its majority vote), read through ``Item.models``; ties and
        both_bad are counted apart and left out of the rate."""
        return win_counts(self._consensus(min_votes, annotators), model_a, model_b)

    def _consensus(self, min_votes: int, annotators: Iterable[str] | None) -> list[tuple[Item, dict]]:
        if not isinstance(min_votes, int) or min_votes < 1:
            raise ValueError(f"min_votes must be a whole number >= 1, got {min_votes!r}")
        with self._read() as conn:
            decided = _decisions(conn, annotators)
            items = _load_items(conn)
        return [
            (item, consensus(decided[item.id].values(), len(item.responses), min_votes))
            for item in items
            if item.id in decided
        ]
