"""LabelingPanel without a browser, the widget layer over a LabelingSession: its synced traits
mirror the session after every action (one state message each), the front end's messages reach
the session (a stale key is ignored), errors land in the error traitlet, and the JavaScript never
parses text as HTML. The labelling logic itself is tested on the session (tests/test_session.py);
the browser test (tests/browser) proves the JavaScript side in Chromium."""

import logging
import re
from pathlib import Path

import pytest

from rlhf_lab.labeling.pairs import PairGenerator
from rlhf_lab.labeling.panel import LabelingPanel, _asset
from rlhf_lab.labeling.session import STATE, LabelingSession
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


def trait_state(panel):
    return {name: getattr(panel, name) for name in STATE}


class TestMirror:
    def test_traits_mirror_the_session_after_every_action(self, store):
        panel = LabelingPanel(store, items(4, n=3), annotator="ana")
        assert isinstance(panel.session, LabelingSession)
        assert set(STATE) <= set(panel.trait_names(sync=True)), "every session state has a synced trait"
        steps = [
            lambda: panel.rank(2),
            lambda: panel.press("1"),
            lambda: panel.submit(),
            lambda: panel.skip(),
            lambda: panel.undo(),
            lambda: panel.toggle_scores(),
            lambda: panel.refresh(),
            lambda: panel.press("0"),
        ]
        for step in steps:
            step()
            assert trait_state(panel) == panel.session.state()
        assert (panel.prompt, panel.labeled, panel.skipped, panel.show_scores) == ("p2", 2, 0, True)
        assert decisions(store) == [
            ("label", "p0", [2, 0, 1]),
            ("label", "p1", "skip"),
            ("undo", "p1", "skip"),
            ("label", "p1", "both_bad"),
        ]

    def test_one_state_message_per_action(self, store, monkeypatch):
        panel = LabelingPanel(store, items(3), annotator="ana")
        sent = []
        monkeypatch.setattr(panel, "_send", lambda msg, buffers=None: sent.append(msg["state"]))
        panel.submit("A")
        key(panel, "2")
        assert len(sent) == 2  # the browser never sees a new prompt with the old responses
        assert {"item_id", "prompt", "responses", "labeled", "queued"} <= set(sent[0])
        assert sent[1]["prompt"] == "p2" and sent[1]["responses"] == ["r2-0", "r2-1"]

    def test_a_panel_over_a_session_follows_it(self, store):
        session = LabelingSession(store, items(3), annotator="ana")
        session.submit("A")
        panel = LabelingPanel(session=session)
        assert panel.session is session and panel.prompt == "p1" and panel.labeled == 1
        session.submit("B")  # driven directly (a simulated annotator, another cell): the traits follow
        assert trait_state(panel) == session.state() and panel.prompt == "p2"
        with pytest.raises(TypeError, match="either"):
            LabelingPanel(store, items(1), annotator="ana", session=session)

    def test_the_panel_api_is_the_sessions(self, store):
        panel = LabelingPanel(store, items(2), annotator="ana")
        assert isinstance(panel.submit("A"), int) and panel.prompt == "p1"
        assert isinstance(panel.undo(), int) and panel.prompt == "p0"
        assert panel.undo() is None and panel.message == "Nothing to undo."
        assert panel.rejected is panel.session.rejected


class TestFrontEndMessages:
    def test_keys_and_buttons_take_the_same_path(self, store, monkeypatch):
        calls = []
        original = LabelingSession._submit
        monkeypatch.setattr(LabelingSession, "_submit", lambda self, d: calls.append(d) or original(self, d))
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
        assert trait_state(panel) == panel.session.state()

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
        panel.show_scores = True  # setting the trait from Python is a toggle too
        assert panel.session.show_scores and panel.scores == [0.25, -1.5]

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
    def test_an_exception_from_a_key_lands_in_the_error_traitlet(self, store, monkeypatch, caplog):
        panel = LabelingPanel(store, items(2), annotator="ana")

        def full(*args):
            raise OSError("disk full")

        monkeypatch.setattr(store, "label", full)
        with caplog.at_level(logging.ERROR, logger="rlhf_lab.labeling.session"):
            key(panel, "1")  # nothing escapes to Jupyter's log-and-forget handler
        assert "disk full" in panel.error and "disk full" in caplog.text
        assert panel.prompt == "p0"  # nothing was labelled, the item stays
        monkeypatch.undo()
        key(panel, "1")
        assert panel.error == "" and panel.prompt == "p1"  # the next action clears it

    def test_programmatic_calls_show_the_error_and_raise(self, store):
        panel = LabelingPanel(store, items(1, n=3), annotator="ana")
        panel.rank(0)
        with pytest.raises(ValueError, match="ranking has 1 of 3"):
            panel.submit()
        assert "ranking has 1 of 3" in panel.error and panel.ranking == [0]
        with pytest.raises(ValueError, match="picks one of two responses"):
            panel.submit("A")

    def test_an_error_in_the_score_toggle_is_shown(self, store):
        class Broken:
            def score(self, prompts, completions):
                raise RuntimeError("reward model on the wrong device")

        panel = LabelingPanel(store, items(1), annotator="ana", reward_model=Broken())
        click(panel, "toggle_scores")
        assert "wrong device" in panel.error
        panel.show_scores = False
        panel.show_scores = True  # an observer: shown, never raised into Jupyter's log
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

    def test_bad_items_are_named_in_the_panel(self, store):
        source = [{"prompt": "p0", "responses": ["", "fine"]}, {"prompt": "p1", "responses": ["a", "b"]}]
        panel = LabelingPanel(store, source, annotator="ana")
        assert panel.prompt == "p1" and [index for index, _ in panel.rejected] == [1]
        assert "source item #1 was not shown" in panel.error and "responses[0] is empty" in panel.error

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
