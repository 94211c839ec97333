"""``LabelingPanel``: the notebook widget over a ``LabelingSession``. It holds no labelling
logic: it mirrors the session's state into synced traits after every action and forwards the
front end's messages to the session. The queue, undo, ranking, keys, scores and what "already
decided" means are the session's (see ``rlhf_lab.labeling.session``).

    panel = lab.LabelingPanel(store, lab.PairGenerator(policy, prompts), annotator="ana")
    panel                          # in a notebook cell: click it (it takes focus) and use the keys
    panel.submit("A")              # the same path a key press takes: tests and papermill use it
    panel.session                  # the plain session underneath (LabelingPanel(session=...) wraps one)

Every button and key sends a message (``{"type": "key", "key": "1", "item_id": ...}`` or
``{"type": "action", "action": "skip", ...}``) that ``session.handle`` applies, through the same
code as ``press``, ``submit``, ``skip``, ``undo``, ``rank``, ``rate`` and ``toggle_scores``.

- Errors from keys, buttons and observers are shown in the panel (``error``) and logged (the
  session does both); programmatic calls show them too and raise. Jupyter only logs an exception
  from a message handler where nobody looks, so the panel does not let one escape.
- Each action's trait changes go to the browser as one message: it never sees half an item.
- Text only, no markdown: the front end writes every prompt and response with ``textContent``,
  so ``<script>`` shows as those characters. Long texts scroll inside their box.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anywidget
import traitlets as t

from rlhf_lab.labeling.session import LabelingSession


def _asset(name: str, here: Path | None = None) -> Path:
    """The installed wheel ships widgets/ as rlhf_lab/widgets/; a checkout has it at the top."""
    here = here or Path(__file__).resolve().parents[1]  # the rlhf_lab package folder
    for folder in (here / "widgets", here.parent / "widgets"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{name} is in neither {here / 'widgets'} nor {here.parent / 'widgets'}")


class LabelingPanel(anywidget.AnyWidget):
    """Label ``source``'s items into ``store`` as ``annotator`` in a notebook; see the module
    docstring. The arguments are ``LabelingSession``'s; or pass ``session=`` to show one you made.
    """

    _esm = _asset("labeling_panel.js")
    _css = _asset("labeling_panel.css")

    # One trait per name in rlhf_lab.labeling.session.STATE, mirrored from the session; the browser only reads them.
    annotator = t.Unicode("").tag(sync=True)
    item_id = t.Unicode("").tag(sync=True)
    prompt = t.Unicode("").tag(sync=True)
    responses = t.List(t.Unicode()).tag(sync=True)
    rating = t.Bool(False).tag(sync=True)  # the item asks for a score 1-5 per response
    ranking = t.List(t.Int()).tag(sync=True)  # picks so far (indices best first, N > 2), or scores given
    labeled = t.Int(0).tag(sync=True)  # this annotator's decisions in force, skips left out
    skipped = t.Int(0).tag(sync=True)
    queued = t.Int(0).tag(sync=True)  # on screen + waiting (what the source can tell)
    labels_per_minute = t.Float(0.0).tag(sync=True)
    show_scores = t.Bool(False).tag(sync=True)  # setting it from Python toggles the session's
    scores = t.List(t.Float()).tag(sync=True)  # empty while hidden: nothing to peek at
    error = t.Unicode("").tag(sync=True)
    message = t.Unicode("").tag(sync=True)
    done = t.Bool(False).tag(sync=True)

    def __init__(
        self,
        store: Any = None,
        source: Iterable[Any] | None = None,
        annotator: str = "",
        *,
        show_scores: bool = False,
        reward_model: Any = None,
        session: LabelingSession | None = None,
        **kwargs: Any,
    ) -> None:
        if session is None:
            session = LabelingSession(store, source, annotator, show_scores=show_scores, reward_model=reward_model)
        elif store is not None or source is not None or not isinstance(session, LabelingSession):
            raise TypeError(
                "LabelingPanel takes either (store, source, annotator=...) or session=LabelingSession(...). "
                "Fix: pass one of the two"
            )
        super().__init__(**kwargs)
        self.session = session
        session.on_change(lambda _session: self._mirror())  # also when someone drives the session directly
        self.on_msg(self._on_msg)
        self._mirror()

    @property
    def rejected(self) -> list[tuple[int, str]]:
        """(source position, why) for source items the store refused and the panel did not show."""
        return self.session.rejected

    # -- the programmatic twins of keys and buttons: the session's (its listener mirrors) -------

    def submit(self, decision: str | list[int] | None = None) -> int:
        """Label the item on screen (see ``LabelingSession.submit``); returns the event id."""
        return self.session.submit(decision)

    def skip(self) -> int:
        """Pass over the item on screen (a durable "skip" event; undo brings it back)."""
        return self.session.skip()

    def undo(self) -> int | None:
        """Void this annotator's previous label and show that item again; None if nothing to undo."""
        return self.session.undo()

    def rank(self, index: int) -> None:
        """Pick response ``index`` (0-based) as the next best one in the ranking being built."""
        self.session.rank(index)

    def rate(self, score: int) -> int | None:
        """Score the next unscored response of a rating item (1-5); the last score submits."""
        return self.session.rate(score)

    def press(self, key: str) -> int | None:
        """What a key press does (the front end sends the key's name); unknown keys do nothing."""
        return self.session.press(key)

    def toggle_scores(self) -> None:
        """Show or hide the reward-model scores."""
        self.session.toggle_scores()

    def refresh(self) -> None:
        """Re-read the progress counts from the store and load an item if none is on screen."""
        self.session.refresh()

    # -- plumbing ---------------------------------------------------------------------------------

    def _mirror(self) -> None:
        """Copy the session's state into the traits: after every action, as one message to the
        browser, so it never shows a new prompt with the old responses."""
        with self.hold_sync():
            for name, value in self.session.state().items():
                setattr(self, name, value)

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        with contextlib.suppress(Exception):  # the session has shown and logged it; Jupyter would bury it
            self.session.handle(content)

    @t.observe("show_scores")
    def _on_show_scores(self, change: Any) -> None:
        session = getattr(self, "session", None)
        if session is not None and change["new"] != session.show_scores:  # set from Python, not mirrored
            with contextlib.suppress(Exception):  # shown in error, like a front-end toggle
                session.toggle_scores()
