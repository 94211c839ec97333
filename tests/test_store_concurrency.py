"""Two processes labelling one store lose nothing, and a labeller killed with SIGKILL loses no
label it had acknowledged: every event id printed after ``label()`` returned is in the store."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rlhf_lab.labeling.store import PreferenceStore

ROOT = Path(__file__).resolve().parents[1]

# A labeller: labels `count` times round-robin over the store's items and prints each event id
# once label() has returned, i.e. once the commit is durable: that print is the acknowledgement.
WORKER = textwrap.dedent(
    """
    import sys
    import time
    from rlhf_lab.labeling.store import PreferenceStore

    path, annotator, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = PreferenceStore(path)
    items = [item.id for item in store.items()]
    print("ready", flush=True)
    sys.stdin.readline()  # the go signal: both labellers start together
    start = time.time()
    for n in range(count):
        event = store.label(items[n % len(items)], "AB"[n % 2], annotator)
        print(event, flush=True)
    print("window", start, time.time(), flush=True)
    """
)


def start(path, annotator, count):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(path), annotator, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def go(*workers):
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready"
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()


def seeded_store(path, n_items=20):
    with PreferenceStore(path) as store:
        store.add_items([{"prompt": f"Question {i}?", "responses": [f"Yes {i}.", f"No {i}."]} for i in range(n_items)])


def integrity(path):
    return sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0]


def test_two_processes_500_labels_each_give_1000_events(tmp_path):
    path = tmp_path / "shared.sqlite"
    seeded_store(path)
    workers = [start(path, name, 500) for name in ("proc-a", "proc-b")]
    go(*workers)
    outputs = [w.communicate(timeout=120) for w in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
    acked = [[int(line) for line in out.splitlines()[:-1]] for out, _ in outputs]
    (start_a, end_a), (start_b, end_b) = (map(float, out.splitlines()[-1].split()[1:]) for out, _ in outputs)
    # Both were labelling at once: SQLite's busy handler is not fair, so under this tight loop one
    # writer mostly waits for the other (busy_timeout makes it wait instead of failing).
    assert start_a < end_b and start_b < end_a
    assert [len(ids) for ids in acked] == [500, 500]
    assert len(set(acked[0]) | set(acked[1])) == 1000  # no id handed out twice
    with PreferenceStore(path) as store:
        events = store.events()
        assert len(events) == 1000
        assert {e.id for e in events} == set(acked[0]) | set(acked[1])
        assert sum(e.annotator == "proc-a" for e in events) == 500
    assert integrity(path) == "ok"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_mid_stream_loses_no_acknowledged_label(tmp_path, seed):
    path = tmp_path / "crash.sqlite"
    seeded_store(path)
    worker = start(path, "crashy", 1_000_000)  # far more than it can do before the kill
    go(worker)
    acked = []
    kill_after = random.Random(seed).randint(50, 400)
    while len(acked) < kill_after:
        acked.append(int(worker.stdout.readline()))
    os.kill(worker.pid, signal.SIGKILL)  # mid-stream: the worker is between commits or inside one
    rest, _ = worker.communicate(timeout=30)
    acked += [int(line) for line in rest.split()]  # acknowledged before the kill, still in the pipe
    assert worker.returncode == -signal.SIGKILL

    assert integrity(path) == "ok"
    with PreferenceStore(path) as store:  # opens cleanly, and keeps working
        stored = {e.id for e in store.events(annotator="crashy")}
        assert set(acked) <= stored
        assert len(stored) - len(acked) <= 1  # at most the one commit that finished as the kill hit
        store.label(store.items()[0].id, "tie", "after-crash")
        assert store.stats()["events"] == len(stored) + 1
