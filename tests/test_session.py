"""LabelingSession, headless: keys, rankings, undo (also across sessions), resuming, rejected
source items, a failing source, decisions in force read from the store, scores hidden until
toggled, front-end messages and errors. The widget layer over it is tests/test_panels.py."""

import logging

import pytest

from rlhf_lab.labeling.keys import key_action
from rlhf_lab.labeling.session import STATE, LabelingSession
from rlhf_lab.labeling.store import PreferenceStore


def items(count, n=2):
    return [{"prompt": f"p{i}", "responses": [f"r{i}-{j}" for j in range(n)]} for i in range(count)]


def log_of(store, who="ana"):
    """The annotator's event log as (kind, prompt, decision) rows, undos as ("undo", prompt, voided)."""
    by_id = {e.id: e for e in store.events()}
    prompt = {item.id: item.prompt_text for item in store.items()}
    return [
        (e.kind, prompt[e.item_id], e.decision if e.kind == "label" else by_id[e.voids].decision)
        for e in store.events(annotator=who)
    ]


def in_force(store, who="ana"):
    prompt = {item.id: item.prompt_text for item in store.items()}
    return {prompt[item_id]: by[who] for item_id, by in store.decisions([who]).items() if who in by}


@pytest.fixture
def store(tmp_path):
    with PreferenceStore(tmp_path / "labels.sqlite") as store:
        yield store


class TestKeys:
    def test_two_responses(self, store):
        session = LabelingSession(store, items(8), annotator="ana")
        for key in ("1", "2", "3", "0", "a", "B", "t", "s"):
            assert isinstance(session.press(key), int), key
        assert [decision for _, _, decision in log_of(store)] == ["A", "B", "tie", "both_bad", "A", "B", "tie", "skip"]
        assert session.done

    def test_keys_that_do_nothing(self, store):
        session = LabelingSession(store, items(2), annotator="ana")
        for key in ("x", "Enter", "9", "4", "Shift", ""):
            assert session.press(key) is None
        assert store.events() == [] and session.prompt == "p0" and session.error == ""

    def test_u_and_backspace_undo(self, store):
        session = LabelingSession(store, items(3), annotator="ana")
        session.press("1")
        session.press("2")
        assert isinstance(session.press("Backspace"), int) and session.prompt == "p1"
        assert isinstance(session.press("U"), int) and session.prompt == "p0"
        assert in_force(store) == {}

    def test_ranking_keys_for_three_responses(self, store):
        session = LabelingSession(store, items(3, n=3), annotator="ana")
        session.press("3")  # with N > 2 a digit picks a response; it is not "tie"
        session.press("1")
        assert session.ranking == [2, 0] and store.events() == []
        session.press("Backspace")  # takes back the last pick, not the previous label
        assert session.ranking == [2]
        session.press("Escape")
        assert session.ranking == []
        session.press("a")  # A/B keys mean nothing with three responses
        session.press("2")
        session.press("3")
        session.press("Enter")  # the last response is implied
        session.press("t")  # tie and both bad work for any N
        session.press("0")
        assert log_of(store) == [("label", "p0", [1, 2, 0]), ("label", "p1", "tie"), ("label", "p2", "both_bad")]

    @pytest.mark.parametrize(
        "key, n, picking, action",
        [
            ("1", 2, False, ("submit", "A")),
            ("3", 2, False, ("submit", "tie")),
            ("3", 3, False, ("rank", 2)),
            ("4", 3, False, None),
            ("Enter", 2, False, None),
            ("Enter", 4, True, ("submit", None)),
            ("u", 3, True, ("unpick", None)),
            ("u", 3, False, ("undo", None)),
            ("S", 3, False, ("submit", "skip")),
            ("0", 5, False, ("submit", "both_bad")),
            ("b", 3, False, None),
        ],
    )
    def test_the_key_table(self, key, n, picking, action):
        assert key_action(key, n, picking) == action


class TestRanking:
    def test_rank_checks_and_programmatic_rankings(self, store):
        session = LabelingSession(store, items(2, n=3), annotator="ana")
        session.rank(1)
        with pytest.raises(ValueError, match="response 2 is already ranked"):
            session.rank(1)
        with pytest.raises(ValueError, match="response 3 does not exist"):
            session.rank(3)
        with pytest.raises(ValueError, match="ranking has 1 of 3"):
            session.submit()
        assert "ranking has 1 of 3" in session.error and session.ranking == [1]
        with pytest.raises(ValueError, match="picks one of two responses"):
            session.submit("A")
        session.clear_ranking()
        assert session.ranking == []
        session.submit([2, 0, 1])
        assert session.ranking == [] and session.prompt == "p1"  # picks never carry over
        session.rank(0)
        session.rank(2)
        session.submit()
        assert in_force(store) == {"p0": [2, 0, 1], "p1": [0, 2, 1]}

    def test_the_ranking_is_a_copy(self, store):
        session = LabelingSession(store, items(1, n=3), annotator="ana")
        session.ranking.append(2)
        assert session.ranking == []


def rating_items(count, n=2):
    return [dict(item, metadata={"rating": 5}) for item in items(count, n)]


class TestRating:
    def test_keys_score_each_response_in_turn_and_the_last_submits(self, store):
        session = LabelingSession(store, rating_items(2, n=3), annotator="ana")
        assert session.rating and session.state()["rating"] is True
        assert session.press("4") is None and session.press("2") is None and session.ranking == [4, 2]
        assert session.press("Backspace") is None and session.ranking == [4]  # takes back the last score
        for key in ("0", "t", "6", "Enter", "a"):  # no choices on a rating item
            assert session.press(key) is None
        assert session.ranking == [4] and store.events() == []
        session.press("5")
        assert isinstance(session.press("1"), int) and session.prompt == "p1" and session.ranking == []
        session.rate(3)
        session.press("Escape")
        assert session.ranking == []
        session.submit({"scores": [2, 2, 5]})
        assert in_force(store) == {"p0": {"scores": [4, 5, 1]}, "p1": {"scores": [2, 2, 5]}} and session.done

    def test_bad_scores_and_scores_on_a_choice_item_are_refused(self, store):
        session = LabelingSession(store, rating_items(1) + items(2)[1:], annotator="ana")
        with pytest.raises(ValueError, match="score 7: not a whole number 1-5"):
            session.rate(7)
        with pytest.raises(ValueError, match="1 of 2 responses are scored"):
            session.rate(2) or session.submit()
        with pytest.raises(ValueError, match=r"ratings \[2, 9\] .* are not all whole numbers 1-5"):
            session.submit({"scores": [2, 9]})
        with pytest.raises(ValueError, match="do not score the item's 2 responses"):
            session.submit({"scores": [2]})
        session.handle({"type": "action", "action": "rate", "score": 4, "item_id": session.item_id})
        assert in_force(store) == {"p0": {"scores": [2, 4]}} and session.prompt == "p1"
        assert not session.rating and session.state()["rating"] is False
        with pytest.raises(ValueError, match="this item asks for a choice, not scores"):
            session.rate(3)
        assert session.press("1") is not None  # a choice item: 1 is "A better"

    def test_ratings_vote_on_pairs_and_export_as_preferences(self, store):
        session = LabelingSession(store, rating_items(2), annotator="ana")
        session.submit({"scores": [2, 5]})
        session.submit({"scores": [3, 3]})
        assert store.to_preferences(ties="exclude").num_rows == 1  # 5 beats 2; equal scores tie


class TestUndo:
    def test_undo_brings_the_item_back_and_the_shown_one_comes_next(self, store):
        session = LabelingSession(store, items(4), annotator="ana")
        session.submit("A")
        session.skip()
        assert session.prompt == "p2"
        session.undo()
        assert session.prompt == "p1" and (session.labeled, session.skipped) == (1, 0)
        session.submit("2")
        assert session.prompt == "p2"
        assert log_of(store) == [
            ("label", "p0", "A"),
            ("label", "p1", "skip"),
            ("undo", "p1", "skip"),
            ("label", "p1", "B"),
        ]

    def test_undo_walks_back_and_says_when_there_is_nothing(self, store):
        session = LabelingSession(store, items(3), annotator="ana")
        session.submit("A")
        session.submit("B")
        session.undo()
        session.undo()
        assert session.prompt == "p0" and session.labeled == 0
        assert session.undo() is None and session.message == "Nothing to undo."
        session.submit("B")
        assert session.prompt == "p1"  # the items pushed back by the undos come next, in order
        session.submit("A")
        assert session.prompt == "p2"

    def test_undo_reaches_labels_of_an_earlier_session(self, store):
        first = LabelingSession(store, items(4), annotator="ana")
        first.submit("A")
        first.submit("B")
        second = LabelingSession(store, items(4), annotator="ana")
        assert second.prompt == "p2" and second.labeled == 2
        second.undo()
        assert second.prompt == "p1" and second.labeled == 1 and in_force(store) == {"p0": "A"}
        second.undo()
        assert second.prompt == "p0" and second.labeled == 0
        second.submit("tie")
        assert second.prompt == "p1"
        second.submit("tie")
        assert second.prompt == "p2"  # the item on screen before the undos comes back last
        assert in_force(store) == {"p0": "tie", "p1": "tie"}

    def test_undo_after_the_last_item(self, store):
        session = LabelingSession(store, items(1), annotator="ana")
        session.submit("A")
        assert session.done and "All done" in session.message
        session.undo()
        assert not session.done and session.prompt == "p0" and session.queued == 1


class TestResume:
    def test_a_new_session_passes_over_decided_items(self, store):
        first = LabelingSession(store, items(4), annotator="ana")
        first.submit("A")
        first.skip()  # a skip is a decision: resuming does not show it again
        second = LabelingSession(store, items(4), annotator="ana")
        assert second.prompt == "p2" and (second.labeled, second.skipped) == (1, 1)
        assert LabelingSession(store, items(4), annotator="bo").prompt == "p0"  # per annotator
        assert LabelingSession(store, items(4), annotator=" ana ").prompt == "p2"  # one person

    def test_an_undone_label_is_not_a_decision(self, store):
        first = LabelingSession(store, items(2), annotator="ana")
        first.submit("A")
        first.undo()
        assert LabelingSession(store, items(2), annotator="ana").prompt == "p0"


class TestDecisionsInForce:
    def test_the_session_reads_decisions_from_the_store(self, store):
        ids = store.add_items(items(3))
        store.label(ids[0], "A", "ana")  # another process, or another tab, labelled p0
        store.label(ids[1], "B", "ana")
        store.undo("ana")  # ... and took p1 back
        session = LabelingSession(store, items(3), annotator="ana")
        assert session.prompt == "p1" and session.labeled == 1
        session.submit("A")
        session.undo()  # p1 on screen again, p2 waits in the backlog
        store.label(ids[2], "tie", "ana")  # someone decides p2 meanwhile
        session.submit("B")
        assert session.done  # the backlog item decided elsewhere is passed over


class TestSourceProblems:
    def test_rejected_items_are_named_and_passed_over(self, store):
        source = [
            {"prompt": "p0", "responses": ["", "fine"]},
            {"prompt": "p1", "responses": []},
            {"prompt": "p2", "responses": ["same", "same"]},
            "not a dict",
            {"prompt": "p3", "responses": ["a", "b"], "colour": "red"},
            {"prompt": "p4", "responses": ["a", "b"]},
        ]
        session = LabelingSession(store, source, annotator="ana")
        assert session.prompt == "p4"
        assert [index for index, _ in session.rejected] == [1, 2, 3, 4, 5]
        why = " | ".join(message for _, message in session.rejected)
        assert "responses[0] is empty" in why and "at least 2" in why and "identical" in why
        assert "it is a str" in why and "unknown key(s) ['colour']" in why
        assert session.error.startswith("source item #5 was not shown: unknown key(s)")
        assert [item.prompt_text for item in store.items()] == ["p4"]  # nothing half-written
        session.submit("A")
        assert session.error == "" and len(session.rejected) == 5  # the next action clears the error

    def test_a_failing_source_ends_the_queue_and_keeps_the_error(self, store):
        def source():
            yield from items(2)
            raise RuntimeError("CUDA out of memory")

        session = LabelingSession(store, source(), annotator="ana")
        session.submit("A")
        with pytest.raises(RuntimeError, match="CUDA out of memory"):
            session.submit("B")  # the label is on disk; loading the next item failed
        assert in_force(store) == {"p0": "A", "p1": "B"}
        assert session.done and "CUDA out of memory" in session.error
        assert isinstance(session.source_error, RuntimeError)
        with pytest.raises(ValueError, match="no item on screen.*source failed: CUDA out of memory"):
            session.submit("A")
        session.refresh()  # a dead source is not asked again
        assert session.done and session.error == ""
        session.undo()  # labelled items still come back
        assert session.prompt == "p1"
        session.submit("tie")
        assert session.done

    def test_a_failing_source_at_the_start_does_not_raise(self, store):
        def source():
            raise RuntimeError("no GPU")
            yield

        session = LabelingSession(store, source(), annotator="ana")
        assert session.done and session.error == "load failed: no GPU"

    def test_bad_arguments(self, store):
        for name in ("", "   ", None):
            with pytest.raises(ValueError, match="annotator is .*Fix: pass annotator="):
                LabelingSession(store, items(1), annotator=name)
        with pytest.raises(TypeError, match="wrap a single item in a list"):
            LabelingSession(store, items(1)[0], annotator="ana")
        with pytest.raises(TypeError, match="Fix: pass lab.PreferenceStore"):
            LabelingSession("labels.sqlite", items(1), annotator="ana")


class TestProgress:
    def test_counts(self, store):
        session = LabelingSession(store, items(5), annotator="ana")
        assert (session.labeled, session.skipped, session.queued) == (0, 0, 5)
        session.submit("A")
        session.skip()
        session.submit("B")
        assert (session.labeled, session.skipped, session.queued) == (2, 1, 2)
        assert session.labels_per_minute == pytest.approx(3.0)  # 3 label events, counted over >= 1 minute
        session.undo()
        assert (session.labeled, session.skipped, session.queued) == (1, 1, 3)

    def test_queued_from_what_the_source_can_tell(self, store):
        class Endless:
            ready = 7

            def __iter__(self):
                return iter(items(100))

        assert LabelingSession(store, Endless(), annotator="ana").queued == 8
        assert LabelingSession(store, iter(items(3)), annotator="bo").queued == 1  # unsized, nothing ready

    def test_counts_follow_other_writers_on_refresh(self, store):
        session = LabelingSession(store, items(3), annotator="ana")
        store.label(session.item_id, "A", "ana")
        assert session.labeled == 0
        session.refresh()
        assert session.labeled == 1


class TestScores:
    SCORED = [
        {
            "prompt": "p",
            "responses": [{"text": "x", "metadata": {"reward": 0.25}}, {"text": "y", "metadata": {"reward": -1.5}}],
        },
        {
            "prompt": "q",
            "responses": [{"text": "z", "metadata": {"reward": 2}}, {"text": "w", "metadata": {"reward": 0}}],
        },
    ]

    def test_hidden_until_toggled(self, store):
        session = LabelingSession(store, self.SCORED, annotator="ana")
        assert not session.show_scores and session.scores == []
        session.toggle_scores()
        assert session.show_scores and session.scores == [0.25, -1.5]
        session.submit("A")
        assert session.scores == [2.0, 0.0]  # while shown, they follow the item on screen
        session.toggle_scores()
        assert session.scores == []

    def test_from_a_reward_model_adapted_once(self, store):
        calls = []

        def reward(prompts, completions):
            calls.append(list(completions))
            return [float(len(c)) for c in completions]

        source = [{"prompt": "p", "responses": ["a", "bbb"]}, {"prompt": "q", "responses": ["cc", "d"]}]
        session = LabelingSession(store, source, annotator="ana", reward_model=reward)
        assert session.scores == [] and calls == []  # nothing is scored while hidden
        session.toggle_scores()
        session.submit("A")
        assert session.scores == [2.0, 1.0] and calls == [["a", "bbb"], ["cc", "d"]]
        shown = LabelingSession(store, source, annotator="bo", show_scores=True, reward_model=reward)
        assert shown.scores == [1.0, 3.0]

    def test_without_any_scores_says_how_to_get_them(self, store):
        session = LabelingSession(store, items(1), annotator="ana")
        session.toggle_scores()
        assert session.scores == [] and "pass reward_model=" in session.message

    def test_a_broken_reward_model_does_not_lose_a_label(self, store):
        def broken(prompts, completions):
            raise RuntimeError("reward model on the wrong device")

        session = LabelingSession(store, items(2), annotator="ana", reward_model=broken)
        with pytest.raises(RuntimeError, match="wrong device"):
            session.toggle_scores()
        assert "toggle scores failed" in session.error and session.show_scores
        session.submit("A")  # durable, and the next item shows; only its scores are missing
        assert session.prompt == "p1" and "scores failed: reward model on the wrong device" in session.error
        assert in_force(store) == {"p0": "A"}


class TestMessagesAndErrors:
    def message(self, session, **content):
        return session.handle({"item_id": session.item_id, **content})

    def test_front_end_messages(self, store):
        session = LabelingSession(store, items(4, n=3), annotator="ana")
        self.message(session, type="key", key="2")
        self.message(session, type="action", action="rank", index=0)
        assert session.ranking == [1, 0]
        self.message(session, type="action", action="clear_ranking")
        self.message(session, type="action", action="submit", decision=[0, 1, 2])
        self.message(session, type="action", action="skip")
        self.message(session, type="action", action="undo")
        self.message(session, type="action", action="toggle_scores")
        assert session.show_scores
        assert log_of(store) == [("label", "p0", [0, 1, 2]), ("label", "p1", "skip"), ("undo", "p1", "skip")]
        with pytest.raises(ValueError, match="unknown message"):
            self.message(session, type="action", action="launch")
        assert "launch failed: unknown message" in session.error

    def test_a_decision_meant_for_the_previous_item_is_ignored(self, store):
        session = LabelingSession(store, items(3), annotator="ana")
        seen = session.item_id
        session.handle({"type": "key", "key": "1", "item_id": seen})
        assert session.handle({"type": "key", "key": "1", "item_id": seen}) is None  # pressed twice
        session.handle({"type": "action", "action": "skip", "item_id": seen})
        assert log_of(store) == [("label", "p0", "A")] and session.prompt == "p1"
        assert "Ignored a key meant for the previous item" in session.message
        session.handle({"type": "key", "key": "u", "item_id": seen})  # undo still works
        assert session.prompt == "p0"

    def test_an_error_is_kept_logged_raised_and_cleared_by_the_next_action(self, store, monkeypatch, caplog):
        session = LabelingSession(store, items(2), annotator="ana")

        def full(*args):
            raise OSError("disk full")

        monkeypatch.setattr(store, "label", full)
        with caplog.at_level(logging.ERROR, logger="rlhf_lab.labeling.session"), pytest.raises(OSError):
            session.press("1")
        assert session.error == "key '1' failed: disk full" and "disk full" in caplog.text
        assert session.prompt == "p0"  # nothing was labelled, the item stays
        monkeypatch.undo()
        session.press("1")
        assert session.error == "" and session.prompt == "p1"

    def test_listeners_hear_every_action_and_state_has_every_name(self, store):
        session = LabelingSession(store, items(2), annotator="ana")
        heard = []
        session.on_change(lambda s: heard.append(s.state()))
        session.submit("A")
        with pytest.raises(ValueError):
            session.rank(7)
        session.press("x")
        assert len(heard) == 3 and heard[0]["prompt"] == "p1" and "rank failed" in heard[1]["error"]
        assert tuple(heard[2]) == STATE and heard[2]["annotator"] == "ana" and heard[2]["done"] is False

    def test_text_is_kept_verbatim(self, store):
        evil = ['<img src=x onerror="alert(1)">', "<script>alert('x')</script> & <b>bold</b>"]
        chat = [{"role": "system", "content": "<b>be brief</b>"}, {"role": "user", "content": "hi"}]
        session = LabelingSession(store, [{"prompt": chat, "responses": evil}], annotator="ana")
        assert session.prompt == "system: <b>be brief</b>\n\nuser: hi" and session.responses == evil
