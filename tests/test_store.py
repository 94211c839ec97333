"""PreferenceStore: schema and migrations, items, append-only events and undo, the queue, exports
with majority votes, imports through the data loaders, statistics, win rate and bad input."""

import argparse
import json
import sqlite3
import threading

import pytest

from rlhf_lab.cli import prefs as prefs_cli
from rlhf_lab.data import DataError, load_preferences, load_ratings
from rlhf_lab.labeling.store import PreferenceStore, SchemaVersionError
from rlhf_lab.labeling.store import core as store_module


@pytest.fixture
def store(tmp_path):
    with PreferenceStore(tmp_path / "labels.sqlite") as opened:
        yield opened


@pytest.fixture
def pair(store):
    return store.add_item("Name a colour.", ["Blue.", "Seven."])


def event_count(store):
    return store._conn().execute("SELECT COUNT(*) FROM events").fetchone()[0]


def rows(dataset):
    """Exported rows as plain (prompt, chosen, rejected) texts."""
    return [(r["prompt"][-1]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in dataset]


class TestSchema:
    def test_wal_full_sync_and_version(self, store):
        conn = store._conn()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
        assert store.schema_version == 1

    def test_reopening_runs_migrations_once(self, tmp_path, pair, store):
        store.label(pair, "A", "ana")
        store.close()
        for _ in range(2):
            with PreferenceStore(tmp_path / "labels.sqlite") as again:
                assert again.schema_version == 1
                assert again.decisions() == {pair: {"ana": "A"}}
        versions = sqlite3.connect(tmp_path / "labels.sqlite").execute("SELECT version FROM schema_version")
        assert [v for (v,) in versions] == [1]

    def test_a_v1_store_is_upgraded_by_a_later_migration_exactly_once(self, tmp_path, pair, store, monkeypatch):
        store.label(pair, "B", "ana")
        store.close()
        later = {**store_module.MIGRATIONS, 2: ["CREATE TABLE notes (item_id TEXT, note TEXT)"]}
        monkeypatch.setattr(store_module, "MIGRATIONS", later)
        for _ in range(2):  # the second open finds v2 and does nothing (a rerun would fail: table exists)
            with PreferenceStore(tmp_path / "labels.sqlite") as upgraded:
                assert upgraded.schema_version == 2
                assert upgraded.decisions() == {pair: {"ana": "B"}}
        versions = sqlite3.connect(tmp_path / "labels.sqlite").execute("SELECT version FROM schema_version")
        assert [v for (v,) in versions] == [1, 2]

    def test_a_store_from_a_newer_version_is_refused(self, tmp_path, store):
        store.close()
        raw = sqlite3.connect(tmp_path / "labels.sqlite")
        raw.execute("INSERT INTO schema_version VALUES (99, 0)")
        raw.commit()
        with pytest.raises(SchemaVersionError, match="schema version 99.*newer rlhf-lab.*Fix: upgrade"):
            PreferenceStore(tmp_path / "labels.sqlite")

    def test_not_a_store(self, tmp_path):
        (tmp_path / "notes.txt").write_text("hello, not a database " * 100)
        with pytest.raises(ValueError, match="not a preference store"):
            PreferenceStore(tmp_path / "notes.txt")
        other = tmp_path / "other.sqlite"
        sqlite3.connect(other).execute("CREATE TABLE users (name TEXT)")
        with pytest.raises(ValueError, match="not a preference store.*users"):
            PreferenceStore(other)
        assert sqlite3.connect(other).execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # untouched

    def test_paths(self, tmp_path):
        with pytest.raises(ValueError, match="file on disk"):
            PreferenceStore(":memory:")
        with pytest.raises(FileNotFoundError, match="no preference store there"):
            PreferenceStore(tmp_path / "missing.sqlite", create=False)
        assert not (tmp_path / "missing.sqlite").exists()
        with PreferenceStore(tmp_path / "new" / "dir" / "s.sqlite") as nested:
            assert nested.path.exists()

    def test_closed_store_says_so(self, store):
        store.close()
        with pytest.raises(ValueError, match="closed"):
            store.pending("ana")


class TestItems:
    def test_content_hash_ids_are_stable_and_idempotent(self, store):
        first = store.add_item("Name a colour.", ["Blue.", "Seven."], metadata={"models": ["a", "b"]})
        again = store.add_item("Name a colour.", ["Blue.", "Seven."], metadata={"models": ["x", "y"]})
        swapped = store.add_item("Name a colour.", ["Seven.", "Blue."])
        assert first == again != swapped
        assert store.get_item(first).metadata == {"models": ["a", "b"]}  # the first metadata is kept
        assert [i.id for i in store.items()] == [first, swapped]

    def test_generator_metadata_and_messages_round_trip(self, store):
        prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
        responses = [
            {
                "text": "Hello.",
                "model": "ppo",
                "sampling": {"temperature": 0.7},
                "seed": 3,
                "metadata": {"reward": 0.5},
            },
            [{"role": "assistant", "content": "Hey."}],
            "Hi!",
        ]
        item = store.get_item(store.add_item(prompt, responses, metadata={"pair": 7}))
        assert item.prompt == prompt and item.prompt_text == "Hi?"
        assert [r.text for r in item.responses] == ["Hello.", "Hey.", "Hi!"]
        first = item.responses[0]
        assert (first.model, first.sampling, first.seed, first.metadata) == (
            "ppo",
            {"temperature": 0.7},
            3,
            {"reward": 0.5},
        )
        assert item.models == ["ppo", None, None] and item.metadata == {"pair": 7}

    def test_explicit_ids(self, store):
        assert store.add_item("Q?", ["a", "b"], item_id="q1") == "q1"
        assert store.add_item("Q?", ["a", "b"], item_id="q1") == "q1"
        with pytest.raises(ValueError, match="item_id 'q1' already holds a different prompt"):
            store.add_item("Other?", ["a", "b"], item_id="q1")

    def test_add_items_is_all_or_nothing(self, store):
        with pytest.raises(ValueError, match=r"items\[1\]\.responses\[1\] is identical"):
            store.add_items([{"prompt": "Q1?", "responses": ["a", "b"]}, {"prompt": "Q2?", "responses": ["c", "c"]}])
        assert store.items() == []
        assert len(store.add_items([{"prompt": "Q1?", "responses": ["a", "b"]}])) == 1

    def test_a_one_megabyte_response_is_stored_intact(self, store):
        # Documented behaviour: no size limit below SQLite's 1 GB per value; the text round-trips exactly.
        huge = ("Long answer é 🙂 \n" * 70_000)[: 1 << 20]
        item = store.add_item("Write a lot.", [huge, "Short."])
        assert store.get_item(item).responses[0].text == huge
        store.label(item, "B", "ana")
        exported = store.to_preferences()[0]
        assert exported["rejected"][0]["content"] == huge and exported["chosen"][0]["content"] == "Short."


BAD_ITEMS = [
    ({"responses": []}, r"responses has 0 response\(s\).*at least 2.*Fix:"),
    ({"responses": ["Only one."]}, r"responses has 1 response\(s\)"),
    ({"responses": ["Blue.", ""]}, r"responses\[1\] is empty\. Fix:"),
    ({"responses": ["Blue.", "   "]}, r"responses\[1\] is only whitespace"),
    ({"responses": [{"text": ""}, "x"]}, r"responses\[0\]\.text is empty"),
    (
        {"responses": ["Same.", "Other.", "Same."]},
        r"responses\[2\] is identical to responses\[0\].*Fix: regenerate",
    ),
    ({"responses": "Blue."}, r"responses is a str, not a list"),
    ({"responses": [{"txt": "a"}, "b"]}, r"responses\[0\] has unknown key\(s\) \['txt'\].*Fix"),
    ({"responses": [{"text": "a", "seed": "x"}, "b"]}, r"seed 'x' is not a whole number"),
    ({"responses": ["a", "b"], "metadata": {"f": object()}}, r"metadata cannot be stored as JSON.*Fix"),
    ({"responses": ["a", "b"], "metadata": {"x": float("nan")}}, r"metadata cannot be stored as JSON"),
    ({"prompt": "", "responses": ["a", "b"]}, r"prompt is empty"),
    ({"prompt": [{"role": "assistant", "content": "Hi"}], "responses": ["a", "b"]}, r"prompt\[0\]"),
]


@pytest.mark.parametrize(("item", "message"), BAD_ITEMS, ids=[m.split(" ")[0] for _, m in BAD_ITEMS])
def test_bad_items_name_the_field_and_the_fix(store, item, message):
    with pytest.raises(ValueError, match=message):
        store.add_item(item.get("prompt", "Name a colour."), item["responses"], metadata=item.get("metadata"))
    assert store.items() == []  # nothing half-written


class TestBadLabels:
    @pytest.fixture
    def triple(self, store):
        return store.add_item("Rank these.", ["One.", "Two.", "Three."])

    @pytest.mark.parametrize("annotator", ["", "   ", None])
    def test_empty_annotator(self, store, pair, annotator):
        with pytest.raises(ValueError, match="annotator is .*Fix: pass annotator="):
            store.label(pair, "A", annotator)

    def test_unknown_decision_lists_the_choices(self, store, pair):
        with pytest.raises(ValueError, match="decision 'C' is unknown. Fix: use one of 'A', 'B', 'tie'"):
            store.label(pair, "C", "ana")
        with pytest.raises(ValueError, match="decision 'a' is unknown"):
            store.label(pair, "a", "ana")

    @pytest.mark.parametrize("ranking", [[0, 1], [0, 0, 1], [0, 1, 3], [0, 1, 2, 2], ["0", "1", "2"]])
    def test_ranking_must_be_a_permutation(self, store, triple, ranking):
        with pytest.raises(ValueError, match=r"not a ranking .* 3 responses.*Fix: give a ranking"):
            store.label(triple, ranking, "ana")

    def test_a_b_needs_two_responses(self, store, triple):
        with pytest.raises(ValueError, match="picks one of two responses, but item .* has 3"):
            store.label(triple, "A", "ana")

    def test_unknown_item(self, store):
        with pytest.raises(ValueError, match="item_id 'nope' is not in the store. Fix: add the item"):
            store.label("nope", "A", "ana")
        with pytest.raises(ValueError, match="not in the store"):
            store.undo("ana", item_id="nope")

    def test_label_many_validates_everything_first(self, store, pair):
        with pytest.raises(ValueError, match="unknown"):
            store.label_many([(pair, "A"), (pair, "nonsense")], "ana")
        assert event_count(store) == 0


class TestEvents:
    def test_label_is_an_event_and_the_log_only_grows(self, store, pair):
        other = store.add_item("Is ice cold?", ["Yes.", "No."])
        counts = [event_count(store)]
        ids = [store.label(pair, "A", "ana")]
        counts.append(event_count(store))
        ids.append(store.label(other, "B", "ana"))
        counts.append(event_count(store))
        undo = store.undo("ana")
        counts.append(event_count(store))
        ids.append(store.label(other, "tie", "ana"))
        counts.append(event_count(store))
        assert counts == [0, 1, 2, 3, 4] and ids == sorted(ids) and undo == 3
        log = store.events()
        assert [(e.kind, e.decision, e.voids) for e in log] == [
            ("label", "A", None),
            ("label", "B", None),
            ("undo", None, ids[1]),
            ("label", "tie", None),
        ]
        assert all(e.annotator == "ana" and e.created_at > 0 for e in log)
        assert store.decisions() == {pair: {"ana": "A"}, other: {"ana": "tie"}}

    def test_rows_cannot_be_updated_or_deleted(self, store, pair):
        store.label(pair, "A", "ana")
        raw = sqlite3.connect(store.path)
        for statement in ("DELETE FROM events", "UPDATE events SET decision = 'B'", "DELETE FROM items"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                raw.execute(statement)
        assert event_count(store) == 1

    def test_undo_walks_back_and_restores_the_previous_decision(self, store, pair):
        store.label(pair, "A", "ana")
        store.label(pair, "B", "ana")  # a relabel: the latest decision is in force
        assert store.decisions() == {pair: {"ana": "B"}}
        store.undo("ana")
        assert store.decisions() == {pair: {"ana": "A"}}
        store.undo("ana")
        assert store.decisions() == {}
        assert store.undo("ana") is None  # nothing left: no event written
        assert event_count(store) == 4

    def test_undo_is_per_annotator_and_per_item(self, store, pair):
        other = store.add_item("Is ice cold?", ["Yes.", "No."])
        store.label(pair, "A", "ana")
        store.label(other, "B", "ana")
        store.label(pair, "B", "bob")
        store.undo("ana", item_id=pair)
        assert store.decisions() == {other: {"ana": "B"}, pair: {"bob": "B"}}
        assert store.undo("cy") is None

    def test_one_decision_in_force_agrees_with_decisions(self, store):
        ids = store.add_items([{"prompt": f"p{i}", "responses": ["x", "y", "z"]} for i in range(3)])
        assert store.decision(ids[0], "ana") is None
        store.label(ids[0], "tie", "ana")
        store.label(ids[0], [2, 1, 0], "ana")
        store.label(ids[1], "skip", "ana")
        store.label(ids[1], "both_bad", "bo")
        assert store.decision(ids[0], "ana") == [2, 1, 0]  # the latest label wins
        store.undo("ana", item_id=ids[0])
        assert store.decision(ids[0], " ana") == "tie"  # the one before is in force again
        store.undo("ana", item_id=ids[0])
        assert store.decision(ids[0], "ana") is None
        assert store.decision(ids[1], "ana") == "skip" and store.decision(ids[1], "bo") == "both_bad"
        everything = store.decisions()
        for item_id in ids:
            for who in ("ana", "bo"):
                assert store.decision(item_id, who) == everything.get(item_id, {}).get(who)
        with pytest.raises(ValueError, match="'nope' is not in the store"):
            store.decision("nope", "ana")
        with pytest.raises(ValueError, match="annotator is empty"):
            store.decision(ids[0], "")

    def test_a_ranking_of_two_is_stored_as_a_letter(self, store, pair):
        store.label(pair, [1, 0], "ana")
        assert store.events()[0].decision == "B"

    def test_label_many_commits_once_and_returns_ids(self, store, pair):
        other = store.add_item("Is ice cold?", ["Yes.", "No."])
        ids = store.label_many([(pair, "A"), (other, "both_bad")], "ana")
        assert ids == [1, 2] and store.decisions() == {pair: {"ana": "A"}, other: {"ana": "both_bad"}}

    def test_one_connection_per_thread(self, store, pair):
        ids, connections, errors = [], set(), []

        def work():
            try:
                connections.add(id(store._conn()))
                ids.extend(store.label(pair, "A", f"t{threading.get_ident()}") for _ in range(25))
            except Exception as err:  # surfaced below: a thread's exception would otherwise vanish
                errors.append(err)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors and len(connections) == 4
        assert sorted(ids) == list(range(1, 101)) and event_count(store) == 100


class TestQueue:
    def test_next_unlabeled_and_pending(self, store):
        first, second, third = (store.add_item(f"Q{i}?", ["a", "b"]) for i in range(3))
        assert store.pending("ana") == 3 and store.next_unlabeled("ana").id == first
        store.label(first, "A", "ana")
        store.label(second, "skip", "ana")  # a skip leaves the queue too
        assert store.next_unlabeled("ana").id == third and store.pending("ana") == 1
        assert store.next_unlabeled("ana", exclude=[third]) is None
        store.undo("ana")  # undoing the skip puts the item back
        assert store.next_unlabeled("ana").id == second and store.pending("ana") == 2
        assert store.pending("bob") == 3  # queues are per annotator

    def test_stats_and_labels_per_minute(self, store, pair):
        other = store.add_item("Is ice cold?", ["Yes.", "No."])
        store.label(pair, "A", "ana")
        store.label(other, "skip", "ana")
        store.label(pair, "tie", "bob")
        store.undo("bob")
        stats = store.stats()
        assert {k: stats[k] for k in ("items", "labeled_items", "events", "label_events", "undo_events")} == {
            "items": 2,
            "labeled_items": 1,
            "events": 4,
            "label_events": 3,
            "undo_events": 1,
        }
        assert stats["decisions"] == {"A": 1, "B": 0, "tie": 0, "both_bad": 0, "skip": 1, "ranking": 0}
        ana = stats["annotators"]["ana"]
        assert (ana["labeled"], ana["skipped"], ana["events"], ana["pending"]) == (1, 1, 2, 0)
        assert stats["annotators"]["bob"]["pending"] == 2
        # Three label events just now; the window has run for under a minute, which counts as one.
        assert store.labels_per_minute() == pytest.approx(3.0)
        now = store.events()[0].created_at
        # ten minutes later, over a five-minute window: nothing recent
        assert store.labels_per_minute(window_s=300, now=now + 600) == 0.0
        # four minutes later: three labels over the four minutes since the first one
        assert store.labels_per_minute(window_s=300, now=now + 240) == pytest.approx(3 / 4, rel=1e-3)


class TestExports:
    @pytest.fixture
    def voted(self, store):
        items = {name: store.add_item(f"{name}?", [f"{name} A.", f"{name} B."]) for name in "pqrst"}
        votes = {  # item: (ana, bob, cy)
            "p": ("A", "A", "B"),  # 2-1 for A
            "q": ("B", "B", "skip"),  # B; the skip is an abstention
            "r": ("A", "B", "skip"),  # level: no consensus
            "s": ("tie", "tie", "A"),  # tie
            "t": ("both_bad", "both_bad", "both_bad"),
        }
        for name, decisions in votes.items():
            for annotator, decision in zip(("ana", "bob", "cy"), decisions):
                store.label(items[name], decision, annotator)
        return items

    def test_majority_vote(self, store, voted):
        assert rows(store.to_preferences()) == [("p?", "p A.", "p B."), ("q?", "q B.", "q A.")]

    def test_ties_and_both_bad_are_configurable(self, store, voted):
        both = rows(store.to_preferences(ties="both", both_bad="both"))
        assert both[2:] == [
            ("s?", "s A.", "s B."),
            ("s?", "s B.", "s A."),
            ("t?", "t A.", "t B."),
            ("t?", "t B.", "t A."),
        ]
        with pytest.raises(ValueError, match="ties='keep' is not one of 'exclude', 'both'"):
            store.to_preferences(ties="keep")

    def test_min_votes_and_annotator_filter(self, store, voted):
        assert rows(store.to_preferences(min_votes=3)) == [("p?", "p A.", "p B.")]
        assert rows(store.to_preferences(annotators=["cy"])) == [
            ("p?", "p B.", "p A."),
            ("s?", "s A.", "s B."),
        ]
        with pytest.raises(ValueError, match="min_votes"):
            store.to_preferences(min_votes=0)

    def test_undo_changes_the_vote(self, store, voted):
        store.undo("bob", item_id=voted["p"])  # now p is A vs B, level
        assert rows(store.to_preferences()) == [("q?", "q B.", "q A.")]

    def test_a_ranking_gives_every_pair(self, store):
        item = store.add_item("Rank.", ["One.", "Two.", "Three."])
        store.label(item, [2, 0, 1], "ana")
        assert rows(store.to_preferences()) == [
            ("Rank.", "One.", "Two."),
            ("Rank.", "Three.", "One."),
            ("Rank.", "Three.", "Two."),
        ]

    def test_the_export_is_trl_format_that_the_loader_accepts(self, store, voted):
        same_pair_swapped = store.add_item("p?", ["p B.", "p A."])  # duplicates p's pair once voted
        store.label(same_pair_swapped, "B", "ana")
        exported = store.to_preferences()
        assert exported.column_names == ["prompt", "chosen", "rejected"] and len(exported) == 2
        assert exported[0]["prompt"] == [{"role": "user", "content": "p?"}]
        assert exported[0]["chosen"] == [{"role": "assistant", "content": "p A."}]
        assert load_preferences(exported).to_list() == exported.to_list()

    def test_unpaired(self, store, voted):
        item = store.add_item("Rank.", ["One.", "Two.", "Three."])
        store.label(item, [2, 0, 1], "ana")  # Three. wins all, Two. loses all, One. is mixed: left out
        unpaired = store.to_unpaired()
        got = [(r["prompt"][-1]["content"], r["completion"][0]["content"], r["label"]) for r in unpaired]
        assert got == [
            ("p?", "p A.", True),
            ("p?", "p B.", False),
            ("q?", "q A.", False),
            ("q?", "q B.", True),
            ("t?", "t A.", False),
            ("t?", "t B.", False),  # both_bad: two negatives
            ("Rank.", "Two.", False),
            ("Rank.", "Three.", True),
        ]
        assert unpaired.column_names == ["prompt", "completion", "label"]
        assert load_ratings(unpaired)["label"] == [g[2] for g in got]

    def test_to_jsonl_is_atomic_and_loadable(self, store, voted, tmp_path):
        out = tmp_path / "out" / "prefs.jsonl"
        out.parent.mkdir()
        out.write_text("old content that must be replaced whole\n")
        assert store.to_jsonl(out) == 2
        assert [json.loads(line)["chosen"][0]["content"] for line in out.read_text().splitlines()] == [
            "p A.",
            "q B.",
        ]
        assert len(load_preferences(out)) == 2
        assert store.to_jsonl(tmp_path / "out" / "kto.jsonl", kind="unpaired") == 6
        assert sorted(p.name for p in out.parent.iterdir()) == [
            "kto.jsonl",
            "prefs.jsonl",
        ]  # no temp files left

    def test_a_failed_export_leaves_the_old_file(self, store, voted, tmp_path, monkeypatch):
        out = tmp_path / "prefs.jsonl"
        out.write_text("previous export\n")

        def broken(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(store_module.os, "replace", broken)
        with pytest.raises(OSError, match="disk full"):
            store.to_jsonl(out)
        assert out.read_text() == "previous export\n"
        assert list(tmp_path.glob("*.tmp")) == []  # the temporary file is cleaned up


class TestImport:
    PAIRS = [
        {"prompt": "What is 2+2?", "chosen": "4.", "rejected": "5."},
        {
            "chosen": "\n\nHuman: Hi?\n\nAssistant: Hello!",
            "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away.",
        },
        {"prompt": "Sort 3 1 2", "responses": ["1 2 3", "3 2 1", "1 3 2"], "ranking": [0, 2, 1]},
    ]

    def test_preferences_through_the_loader_round_trip(self, tmp_path, store):
        path = tmp_path / "prefs.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in self.PAIRS))
        result = store.import_file(path)
        expected = load_preferences(path)
        assert (result.loaded, result.items, result.new_items, result.labels) == (
            5,
            5,
            5,
            5,
        )  # 3 rows, 5 pairs
        assert sorted(rows(store.to_preferences())) == sorted(rows(expected))
        assert {e.annotator for e in store.events()} == {"import"}

    def test_reimport_is_a_no_op_and_positions_do_not_leak_the_winner(self, tmp_path, store):
        store.import_file(self.PAIRS, annotator="hh")
        again = store.import_file(self.PAIRS, annotator="hh")
        assert (again.new_items, again.labels, again.unchanged) == (0, 0, 5)
        assert event_count(store) == 5
        decisions = {d["hh"] for d in store.decisions().values()}
        assert decisions == {"A", "B"}  # positions follow a content hash, not chosen-first

    def test_a_bad_file_raises_and_writes_nothing(self, tmp_path, store):
        path = tmp_path / "bad.jsonl"
        path.write_text(
            json.dumps(self.PAIRS[0]) + "\n" + json.dumps({"prompt": "x", "chosen": "", "rejected": "y"}) + "\n"
        )
        with pytest.raises(DataError, match="bad.jsonl, line 2.*'chosen'"):
            store.import_file(path)
        assert store.items() == [] and event_count(store) == 0

    def test_ratings_become_pairs(self, store):
        ratings = [
            {"prompt": "Q1?", "completion": "good 1", "label": True},
            {"prompt": "Q1?", "completion": "bad 1", "label": False},
            {"prompt": "Q1?", "completion": "bad 2", "label": False},
            {"prompt": "Q2?", "completion": "bad 3", "label": False},
            {"prompt": "Q2?", "completion": "bad 4", "label": False},
            {"prompt": "Q3?", "completion": "alone", "label": True},
            {"prompt": "Q4?", "completion": "fine", "label": True},
            {"prompt": "Q4?", "completion": "also fine", "label": True},
        ]
        result = store.import_file(ratings, kind="ratings")
        assert (result.items, result.labels) == (3, 3)  # good 1 vs bad 1, good 1 vs bad 2, bad 3 vs bad 4
        assert "1 prompt(s) have a single completion" in str(result) and "only desirable" in str(result)
        back = {(r["completion"][0]["content"], r["label"]) for r in store.to_unpaired()}
        assert back == {
            ("good 1", True),
            ("bad 1", False),
            ("bad 2", False),
            ("bad 3", False),
            ("bad 4", False),
        }

    def test_unknown_kind(self, store):
        with pytest.raises(ValueError, match="kind='sft' is not one of"):
            store.import_file(self.PAIRS, kind="sft")


class TestWinRate:
    def test_blind_positions_are_mapped_back_to_models(self, store):
        # ppo is at A in two items and at B in two; humans prefer ppo three times out of four.
        plan = [(["ppo", "sft"], "A"), (["sft", "ppo"], "B"), (["sft", "ppo"], "B"), (["ppo", "sft"], "B")]
        for i, (models, decision) in enumerate(plan):
            item = store.add_item(f"Q{i}?", [f"x{i}", f"y{i}"], metadata={"models": models})
            store.label(item, decision, "ana")
        tie = store.add_item("Q9?", ["x", "y"], metadata={"models": ["ppo", "sft"]})
        store.label(tie, "tie", "ana")
        result = store.win_rate("ppo", "sft")
        assert (result.wins, result.losses, result.ties, result.n, result.rate) == (3, 1, 1, 4, 0.75)
        # Wilson 95% for 3 of 4 (z^2 = 3.841459): scale = 1 + z^2/4 = 1.960365,
        # centre = (0.75 + z^2/8) / scale = 1.230182 / 1.960365 = 0.627527,
        # half = z * sqrt(0.75*0.25/4 + z^2/64) / scale = 1.959964 * sqrt(0.046875 + 0.060023) / 1.960365
        #      = 1.959964 * 0.326952 / 1.960365 = 0.326885  ->  (0.300642, 0.954412)
        assert result.ci == pytest.approx((0.300642, 0.954412), abs=1e-5)
        assert store.win_rate("sft", "ppo").wins == 1
        assert "win rate 0.750" in str(result)

    def test_falls_back_to_each_responses_model(self, store):
        item = store.add_item("Q?", [{"text": "x", "model": "m1"}, {"text": "y", "model": "m2"}])
        store.label(item, "B", "ana")
        assert store.win_rate("m2", "m1").wins == 1 and store.win_rate("m1", "m3").n == 0


class TestPrefsCli:
    """The functions `rlhf-lab prefs stats|export|import|agreement --store FILE` calls."""

    @pytest.fixture
    def path(self, tmp_path):
        path = tmp_path / "labels.sqlite"
        with PreferenceStore(path) as store:
            items = [store.add_item(f"Q{i}?", [f"a{i}", f"b{i}"]) for i in range(3)]
            for item, (ana, bob) in zip(items, [("A", "A"), ("B", "A"), ("tie", "tie")]):
                store.label(item, ana, "ana")
                store.label(item, bob, "bob")
            store.undo("bob")
        return path

    def test_stats(self, path):
        text = prefs_cli.stats(path)
        assert "items 3, labelled 3, events 7 (6 labels, 1 undo)" in text
        assert "decisions in force: A 3, B 1, tie 1" in text
        assert [line.split()[:3] for line in text.splitlines()[-2:]] == [["ana", "3", "0"], ["bob", "2", "0"]]
        assert json.loads(prefs_cli.stats(path, as_json=True))["annotators"]["bob"]["pending"] == 1

    def test_the_report_is_the_stores_own(self, path):
        """One home: `rlhf-lab prefs stats` prints what store.report() returns (notebooks call that)."""
        with PreferenceStore(path, create=False) as store:
            text, data = store.report(window_s=600), json.loads(store.report(as_json=True))
        assert text == prefs_cli.stats(path, window_s=600)
        assert text.splitlines()[0] == f"{path} (schema v1)" and "labels per minute (last 10 min)" in text
        assert data["items"] == 3 and data["annotators"]["ana"]["labeled"] == 3

    def test_export_and_import(self, path, tmp_path):
        out = tmp_path / "prefs.jsonl"
        assert prefs_cli.export(path, out) == f"wrote 1 preference pairs to {out}"  # Q1 is level
        assert len(load_preferences(out)) == 1
        # Q0 (A, A): a positive and a negative; Q1 level; Q2 a tie: nothing
        assert "wrote 2 unpaired rows" in prefs_cli.export(path, tmp_path / "kto.jsonl", kind="unpaired")
        fresh = tmp_path / "fresh.sqlite"
        assert "1 pairs -> 1 items (1 new), 1 labels written" in prefs_cli.import_file(fresh, out, annotator="x")

    def test_agreement(self, path):
        text = prefs_cli.agreement(path)
        # ana A, B, tie; bob A, tie (his Q3 label was undone): shared Q1, Q2, both agree on Q1 only
        assert "items decided by two or more: 2" in text and "ana / bob" in text
        assert "two" in prefs_cli.agreement(path, annotators=["ana"])

    def test_reading_commands_never_create_a_store(self, tmp_path):
        missing = tmp_path / "typo.sqlite"
        for call in (
            prefs_cli.stats,
            prefs_cli.agreement,
            lambda p: prefs_cli.export(p, tmp_path / "o.jsonl"),
        ):
            with pytest.raises(FileNotFoundError, match="no preference store there"):
                call(missing)
        assert not missing.exists()

    def test_argparse_wiring(self, path, capsys):
        parser = argparse.ArgumentParser(prog="rlhf-lab")
        prefs_cli.add_prefs_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["prefs", "stats", "--store", str(path), "--json"])
        assert args.handler(args) == 0
        assert json.loads(capsys.readouterr().out)["items"] == 3
        args = parser.parse_args(
            ["prefs", "export", "--store", str(path), "--out", str(path.parent / "e.jsonl"), "--ties", "both"]
        )
        assert args.handler(args) == 0 and "wrote 3 preference pairs" in capsys.readouterr().out
