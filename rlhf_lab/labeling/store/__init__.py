"""Durable preference labels: items (a prompt and N >= 2 responses) and append-only label events
in one SQLite file, exported to TRL's preference (DPO, reward model) and unpaired (KTO) formats.

    store = PreferenceStore("labels.sqlite")
    item = store.add_item("Name a colour.", ["Blue.", "Seven."], metadata={"models": ["ppo", "sft"]})
    store.label(item, "A", "ana")              # returns once the event is committed to disk
    store.undo("ana")                          # an event that voids ana's latest label
    store.next_unlabeled("ana")                # the queue: the first item ana has not decided
    prefs = store.to_preferences()             # datasets.Dataset: prompt / chosen / rejected
    print(store.report())                      # what `rlhf-lab prefs stats --store labels.sqlite` prints

API (signatures in the class):
    add_item(prompt, responses, metadata=None, item_id=None) -> id   add_items(items) -> [id]
    get_item(id) -> Item    items() -> [Item]    events(annotator=None, item_id=None) -> [Event]
    label(item_id, decision, annotator) -> event id    label_many([(item_id, decision)], annotator)
    undo(annotator, item_id=None) -> event id | None    decisions() -> {item: {annotator: decision}}
    decision(item_id, annotator) -> decision | None     (one annotator's decision in force on one item)
    next_unlabeled(annotator, exclude=()) -> Item | None    pending(annotator) -> int
    labels_per_minute(annotator=None, window_s=300)    stats() -> dict    report() -> str
    agreement()    win_rate(a, b)
    to_preferences()    to_unpaired()    to_jsonl(path)    import_file(source, kind="preference")

Decisions: "A", "B" (N = 2), "tie", "both_bad", "skip", or a ranking (all N response indices,
best first; with N = 2 a ranking is stored as "A" or "B"). An annotator's decision on an item is
their latest label event that no undo voided; exports take a majority vote over annotators
(see ``rlhf_lab.labeling.agreement``).

Metadata keys the store reads: ``item.metadata["models"]``, a list giving the model behind each
response position (a blind A/B keeps its randomized mapping there); without it each response's
own ``model`` is used. Per response: ``model``, ``sampling`` (dict), ``seed`` and free-form
``metadata`` (e.g. ``{"reward": 0.7}``). Any other item metadata is kept for you, untouched.

Durability: WAL with ``synchronous=FULL``, so an event is on disk when ``label`` returns. Rows
are never updated or deleted (triggers refuse it). Each thread gets its own connection (sqlite3
objects are not thread-safe) and a writer in another process waits up to ``timeout`` seconds for
the write lock instead of failing. Keep the file on a local disk: WAL needs shared memory.

Handled inputs: responses are stored whole (a 1 MB response round-trips unchanged; SQLite allows
1 GB per value). Item ids hash the prompt and the responses, so adding the same item again
returns the same id and keeps the first metadata.
"""

from rlhf_lab.labeling.agreement import Decision, WinRate
from rlhf_lab.labeling.store.core import PreferenceStore
from rlhf_lab.labeling.store.exchange import ImportResult
from rlhf_lab.labeling.store.items import Event, Item, Messages, Response
from rlhf_lab.labeling.store.schema import MIGRATIONS, SchemaVersionError

__all__ = [
    "MIGRATIONS",
    "Decision",
    "Event",
    "ImportResult",
    "Item",
    "Messages",
    "PreferenceStore",
    "Response",
    "SchemaVersionError",
    "WinRate",
]
