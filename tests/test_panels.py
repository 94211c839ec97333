"""LabelingPanel without a browser: the programmatic twins and the front end's messages write the
right store events, progress counts, rankings, errors in the error traitlet, and text kept as
text. The browser test (tests/browser) proves the JavaScript side in Chromium."""

import logging
import re
from pathlib import Path

import pytest

from rlhf_lab.labeling.pairs import PairGenerator
from rlhf_lab.labeling.panel import LabelingPanel, _asset
from rlhf_lab.labeling.store import PreferenceStore

JS = Path(__file__).resolve().parents[1] / "widgets" / "labeling_panel.js"


def items(count, n=2):
    return [{"prompt": f"p{i}", "responses": [f"r{i}-{j}" for j in range(n)]} for i in range(count)]


def decisions(store, who="ana"):
    """The annotator's event log as (kind, prompt, decision) rows, undos as ("undo", prompt, voided)."""
    by_id = {e.id: e for e in store.events()}
    prompt = {item.id: item.prompt_text for item in store.items()}
    return [
        (e.kind, prompt[e.item_id], e.decision if e.kind == "label" else by_id[e.voids].decision)
        for e in store.events(annotator=who)
    ]


def key(panel, name):
    """Exactly what the front end sends on a key press, tagged with the item it shows."""
    panel._handle_custom_msg({"type": "key", "key": name, "item_id": panel.item_id}, [])


def click(panel, action, **extra):
    panel._handle_custom_msg({"type": "action", "action": action, **extra, "item_id": panel.item_id}, [])


@pytest.fixture
def store(tmp_path):
    with PreferenceStore(tmp_path / "labels.sqlite") as store:
        yield store


class TestDecisions:
    def test_submit_skip_undo_write_the_right_events(self, store):
        panel = LabelingPanel(store, items(4), annotator="ana")
        assert panel.prompt == "p0" and panel.responses == ["r0-0", "r0-1"]
        assert isinstance(panel.submit("A"), int)
        assert panel.prompt == "p1"  # the next item is loaded when submit returns
        panel.skip()
        assert panel.prompt == "p2"
        panel.undo()  # voids the skip and shows p1 again; p2 comes next
        assert panel.prompt == "p1"
        panel.submit("2")
        assert panel.prompt == "p2"
        panel.submit("tie")
        panel.submit("0")
        assert decisions(store) == [
            ("label", "p0", "A"),
            ("label", "p1", "skip"),
            ("undo", "p1", "skip"),
            ("label", "p1", "B"),
            ("label", "p2", "tie"),
            ("label", "p3", "both_bad"),
        ]
        assert panel.done and panel.responses == [] and "All done" in panel.message

    def test_undo_walks_back_and_says_when_there_is_nothing(self, store):
        panel = LabelingPanel(store, items(3), annotator="ana")
        panel.submit("A")
        panel.submit("B")
        panel.undo()
        panel.undo()
        assert panel.prompt == "p0" and panel.labeled == 0
        assert panel.undo() is None and panel.message == "Nothing to undo."
        panel.submit("B")
        assert panel.prompt == "p1"  # the items pushed back by the undos come next, in order
        panel.submit("A")
        assert panel.prompt == "p2"

    def test_progress_counts(self, store):
        panel = LabelingPanel(store, items(5), annotator="ana")
        assert (panel.labeled, panel.skipped, panel.queued) == (0, 0, 5)
        panel.submit("A")
        panel.skip()
        panel.submit("B")
        assert (panel.labeled, panel.skipped, panel.queued) == (2, 1, 2)
        assert panel.labels_per_minute == pytest.approx(3.0)  # 3 label events, counted over >= 1 minute
        panel.undo()
        assert (panel.labeled, panel.skipped, panel.queued) == (1, 1, 3)

    def test_a_new_session_resumes_where_the_last_stopped(self, store):
        first = LabelingPanel(store, items(3), annotator="ana")
        first.submit("A")
        second = LabelingPanel(store, items(3), annotator="ana")
        assert second.prompt == "p1" and second.labeled == 1
        other = LabelingPanel(store, items(3), annotator="bo")
        assert other.prompt == "p0"  # per annotator

    def test_ranking_for_three_responses(self, store):
        panel = LabelingPanel(store, items(3, n=3), annotator="ana")
        key(panel, "3")
        key(panel, "1")
        assert panel.ranking == [2, 0]
        key(panel, "Backspace")  # takes back the last pick, not the previous label
        assert panel.ranking == [2]
        key(panel, "2")
        key(panel, "Enter")  # the last response is implied
        panel.submit([1, 2, 0])
        panel.rank(0)
        with pytest.raises(ValueError, match="ranking has 1 of 3"):
            panel.submit()
        assert "ranking has 1 of 3" in panel.error
        assert decisions(store) == [("label", "p0", [2, 1, 0]), ("label", "p1", [1, 2, 0])]
        with pytest.raises(ValueError, match="picks one of two responses"):
            panel.submit("A")

    def test_submit_when_nothing_is_left(self, store):
        panel = LabelingPanel(store, [], annotator="ana")
        assert panel.done
        with pytest.raises(ValueError, match="no item on screen"):
            panel.submit("A")


class TestFrontEndMessages:
    def test_keys_and_buttons_take_the_same_path(self, store, monkeypatch):
        calls = []
        original = LabelingPanel._submit
        monkeypatch.setattr(LabelingPanel, "_submit", lambda self, d: calls.append(d) or original(self, d))
        panel = LabelingPanel(store, items(6), annotator="ana")
        panel.submit("A")
        key(panel, "2")
        click(panel, "submit", decision="tie")
        key(panel, "s")
        key(panel, "u")
        click(panel, "skip")
        click(panel, "undo")
        key(panel, "x")  # not a panel key: ignored, no error
        assert calls == ["A", "B", "tie", "skip", "skip"]
        assert panel.error == ""
        assert [d[0] for d in decisions(store)] == ["label"] * 4 + ["undo", "label", "undo"]

    def test_a_key_meant_for_the_previous_item_is_ignored(self, store):
        panel = LabelingPanel(store, items(3), annotator="ana")
        seen = panel.item_id
        key(panel, "1")
        panel._handle_custom_msg({"type": "key", "key": "1", "item_id": seen}, [])  # pressed twice
        panel._handle_custom_msg({"type": "action", "action": "skip", "item_id": seen}, [])
        assert decisions(store) == [("label", "p0", "A")] and panel.prompt == "p1"
        assert "Ignored a key meant for the previous item" in panel.message
        panel._handle_custom_msg({"type": "key", "key": "u", "item_id": seen}, [])  # undo still works
        assert panel.prompt == "p0"

    def test_score_toggle_hides_scores_by_default(self, store):
        scored = [
            {
                "prompt": "p",
                "responses": [{"text": "x", "metadata": {"reward": 0.25}}, {"text": "y", "metadata": {"reward": -1.5}}],
            }
        ]
        panel = LabelingPanel(store, scored, annotator="ana")
        assert not panel.show_scores and panel.scores == []
        click(panel, "toggle_scores")
        assert panel.show_scores and panel.scores == [0.25, -1.5]
        panel.toggle_scores()
        assert panel.scores == []

    def test_scores_from_a_reward_model(self, store):
        class Reward:
            def score(self, prompts, completions):
                return [float(len(c)) for c in completions]

        panel = LabelingPanel(
            store,
            [{"prompt": "p", "responses": ["a", "bbb"]}],
            annotator="ana",
            show_scores=True,
            reward_model=Reward(),
        )
        assert panel.scores == [1.0, 3.0]


class TestErrors:
    def test_an_exception_in_a_callback_lands_in_the_error_traitlet(self, store, monkeypatch, caplog):
        panel = LabelingPanel(store, items(2), annotator="ana")

        def full(*args):
            raise OSError("disk full")

        monkeypatch.setattr(store, "label", full)
        with caplog.at_level(logging.ERROR, logger="rlhf_lab.labeling.panel"):
            key(panel, "1")  # nothing escapes to Jupyter's log-and-forget handler
        assert "disk full" in panel.error and "disk full" in caplog.text
        assert panel.prompt == "p0"  # nothing was labelled, the item stays
        monkeypatch.undo()
        key(panel, "1")
        assert panel.error == "" and panel.prompt == "p1"  # the next action clears it

    def test_an_error_in_the_score_observer_is_shown(self, store):
        class Broken:
            def score(self, prompts, completions):
                raise RuntimeError("reward model on the wrong device")

        panel = LabelingPanel(store, items(1), annotator="ana", reward_model=Broken())
        click(panel, "toggle_scores")
        assert "wrong device" in panel.error

    def test_unknown_message_is_reported(self, store):
        panel = LabelingPanel(store, items(1), annotator="ana")
        panel._handle_custom_msg({"type": "action", "action": "launch"}, [])
        assert "unknown message" in panel.error

    def test_a_failing_generator_shows_and_stays(self, store):
        class Failing:
            name = "m"

            def generate(self, prompts, **kwargs):
                if prompts[0] == "bad":
                    raise RuntimeError("CUDA out of memory")
                return [f"{prompts[0]} {kwargs['seed']}"]

        source = PairGenerator(Failing(), ["bad"])
        panel = LabelingPanel(store, source, annotator="ana")
        assert "CUDA out of memory" in panel.error and panel.done
        with pytest.raises(ValueError, match="source failed: CUDA out of memory"):
            panel.submit("A")


class TestBadInput:
    def test_empty_annotator(self, store):
        for name in ("", "   "):
            with pytest.raises(ValueError, match="annotator is .*Fix: pass annotator="):
                LabelingPanel(store, items(1), annotator=name)

    def test_source_must_be_an_iterable_of_items(self, store):
        with pytest.raises(TypeError, match="wrap a single item in a list"):
            LabelingPanel(store, items(1)[0], annotator="ana")

    def test_bad_items_are_named_and_passed_over(self, store):
        source = [
            {"prompt": "p0", "responses": ["", "fine"]},
            {"prompt": "p1", "responses": []},
            {"prompt": "p2", "responses": ["same", "same"]},
            "not a dict",
            {"prompt": "p3", "responses": ["a", "b"]},
        ]
        panel = LabelingPanel(store, source, annotator="ana")
        assert panel.prompt == "p3"
        assert [index for index, _ in panel.rejected] == [1, 2, 3, 4]
        why = " | ".join(message for _, message in panel.rejected)
        assert "responses[0] is empty" in why and "at least 2" in why and "identical" in why
        assert "source item #4 was not shown" in panel.error
        assert [item.prompt_text for item in store.items()] == ["p3"]  # nothing half-written

    def test_markup_is_kept_verbatim_for_the_front_end_to_show_as_text(self, store):
        evil = ['<img src=x onerror="alert(1)">', "<script>alert('x')</script> & <b>bold</b>"]
        panel = LabelingPanel(store, [{"prompt": "<script>p</script>", "responses": evil}], annotator="ana")
        assert panel.prompt == "<script>p</script>" and panel.responses == evil


class TestFrontEndFile:
    def test_js_never_parses_text_as_html(self):
        source = JS.read_text()
        code = re.sub(r"//[^\n]*", "", source)  # comments may name the sinks they avoid
        for sink in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "DOMParser",
            "createContextualFragment",
            "srcdoc",
            "eval(",
            "new Function",
        ):
            assert sink not in code, sink
        assert "textContent" in code and "export default" in code

    def test_js_has_the_test_ids_and_keys(self):
        source = JS.read_text()
        for testid in (
            "panel",
            "prompt",
            "candidate-${i}",
            "progress",
            "error",
            "annotator",
            "done",
            "btn-A",
            "btn-B",
            "btn-tie",
            "btn-both_bad",
            "btn-skip",
            "btn-undo",
            "btn-toggle-scores",
            "btn-submit-ranking",
        ):
            assert f'"{testid}"' in source or f"`{testid}`" in source, testid
        assert "tabIndex = 0" in source and "data-lm-suppress-shortcuts" in source
        assert re.search(r"overflow:\s*auto", (JS.parent / "labeling_panel.css").read_text())

    def test_the_wheel_copy_wins_over_the_checkout(self, tmp_path):
        package, top = tmp_path / "rlhf_lab", tmp_path / "widgets"
        top.mkdir()
        (top / "x.js").write_text("checkout")
        assert _asset("x.js", package) == top / "x.js"
        (package / "widgets").mkdir(parents=True)
        (package / "widgets" / "x.js").write_text("wheel")
        assert _asset("x.js", package) == package / "widgets" / "x.js"
        with pytest.raises(FileNotFoundError, match="missing.js"):
            _asset("missing.js", package)

    def test_panel_loads_the_widget_files(self, store):
        panel = LabelingPanel(store, items(1), annotator="ana")
        assert panel._esm == JS.read_text()
        assert "rlhf-panel" in panel._css


def test_a_tiny_model_session(tiny_policy, store):
    pairs = PairGenerator(tiny_policy, ["Hi", "Name a colour.", "Count."], sampling={"max_new_tokens": 4})
    with pairs:
        panel = LabelingPanel(store, pairs, annotator="ana")
        for decision in ("A", "B", "tie"):
            panel.submit(decision)
    assert panel.done and panel.labeled == 3
    assert [d[2] for d in decisions(store)] == ["A", "B", "tie"]
    assert all(item.metadata["generator"]["models"] == [tiny_policy.name] for item in store.items())
