"""Durable label throughput of the preference store (issue 6, target >= 1,000 durable labels/s),
side by side with raw sqlite3 on the same disk and the same settings.

    python benchmarks/store_throughput.py [--labels 3000] [--rounds 3] [--batch 100] [--warmup 1500] [--dir PATH]

"Durable" means the commit is on disk when the call returns: WAL with synchronous=FULL, so every
commit fsyncs the write-ahead log. Three writers, each on its own fresh database:

* raw:        sqlite3 INSERT, one transaction per row, same pragmas: the ceiling this disk allows;
* label():    PreferenceStore.label, one transaction per label (what the panel does per key press);
* label_many: PreferenceStore.label_many, ``--batch`` labels per transaction (one fsync per batch).

fsync time on a shared disk drifts by 2x within seconds, so the writers are interleaved call by
call (raw and label() swap order every step) and each call is timed on its own: all of them see
the same disk at the same moments. Each writer first makes ``--warmup`` untimed writes: a WAL
that is still growing fsyncs slower than one reused after its first checkpoint (about 15% here),
and the store, writing three pages per label, would reach that steady state sooner than raw.
Figures are medians over rounds; label()/raw is the median of the per-round ratios. Use --dir to
measure the disk the store will live on (default: the system temp folder).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from rlhf_lab.labeling.store import PreferenceStore

TARGET = 1000.0


def raw_writer(path: Path):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, item_id TEXT, annotator TEXT, kind TEXT, "
        "decision TEXT, voids INTEGER, created_at REAL)"
    )
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2

    def write(i: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO events (item_id, annotator, kind, decision, created_at) VALUES (?, ?, 'label', ?, ?)",
            (f"item{i % 100}", "bench", "AB"[i % 2], time.time()),
        )
        conn.execute("COMMIT")

    return conn, write


def store_with_items(path: Path) -> tuple[PreferenceStore, list[str]]:
    store = PreferenceStore(path)
    items = store.add_items([{"prompt": f"Question {i}?", "responses": [f"Yes {i}.", f"No {i}."]} for i in range(100)])
    conn = store._conn()
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    return store, items


def one_round(folder: Path, n: int, batch: int, warmup: int) -> tuple[float, float, float]:
    """Rates (per second) of raw inserts, label() and label_many(), interleaved call by call."""
    conn, raw = raw_writer(folder / "raw.sqlite")
    single, items = store_with_items(folder / "label.sqlite")
    batched, batch_items = store_with_items(folder / "batch.sqlite")
    spent = {"raw": 0.0, "label": 0.0, "batch": 0.0}
    writers = {"raw": raw, "label": lambda i: single.label(items[i % len(items)], "AB"[i % 2], "bench")}
    for i in range(warmup):  # untimed: past the first WAL checkpoint, into the steady state
        raw(i)
        writers["label"](i)
        if i % batch == 0:
            batched.label_many([(batch_items[0], "A")] * batch, "bench")
    batched_before = batched.stats()["label_events"]
    for i in range(n):
        for name in ("raw", "label") if i % 2 == 0 else ("label", "raw"):
            start = time.perf_counter()
            writers[name](i)
            spent[name] += time.perf_counter() - start
        if (i + 1) % batch == 0:
            labels = [(batch_items[k % len(batch_items)], "AB"[k % 2]) for k in range(i + 1 - batch, i + 1)]
            start = time.perf_counter()
            batched.label_many(labels, "bench")
            spent["batch"] += time.perf_counter() - start
    assert single.stats()["label_events"] == warmup + n
    assert batched.stats()["label_events"] == batched_before + n // batch * batch
    conn.close()
    single.close()
    batched.close()
    return n / spent["raw"], n / spent["label"], (n // batch * batch) / spent["batch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, default=3000, help="labels per writer per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100, help="labels per label_many transaction")
    parser.add_argument("--warmup", type=int, default=1500, help="untimed writes per writer first")
    parser.add_argument("--dir", default=None, help="folder on the disk to measure (default: temp)")
    args = parser.parse_args()

    raw, single, batched, ratios = [], [], [], []
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for r in range(args.rounds):
            round_folder = Path(folder) / str(r)
            round_folder.mkdir()
            rates = one_round(round_folder, args.labels, args.batch, args.warmup)
            raw.append(rates[0])
            single.append(rates[1])
            batched.append(rates[2])
            ratios.append(rates[1] / rates[0])
        where = Path(folder).parent

    label_s = statistics.median(single)
    verdict = "met" if label_s >= TARGET else "NOT met with one transaction per label"
    print(
        f"disk: {where} | {args.rounds} rounds x {args.labels} labels after {args.warmup} untimed "
        "| WAL, synchronous=FULL"
    )
    print(f"  raw sqlite3, 1 txn/row:           {statistics.median(raw):9,.0f} rows/s")
    print(
        f"  store.label(), 1 txn/label:       {label_s:9,.0f} labels/s   (label()/raw {statistics.median(ratios):.2f})"
    )
    print(f"  store.label_many(batch={args.batch}):      {statistics.median(batched):9,.0f} labels/s")
    print(
        f"store_throughput: label() {label_s:,.0f} durable labels/s, label_many(batch={args.batch}) "
        f"{statistics.median(batched):,.0f}/s, label()/raw sqlite {statistics.median(ratios):.2f}; "
        f"target >= {TARGET:,.0f} durable labels/s: {verdict}"
    )


if __name__ == "__main__":
    main()
