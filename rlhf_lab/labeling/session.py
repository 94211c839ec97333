"""``LabelingSession``: the labelling logic, with no widget attached. A person (through
``LabelingPanel``, which only mirrors a session), a ``SimulatedAnnotator``, a test or a papermill
run compares a model's candidate responses and every decision lands in a ``PreferenceStore``
before the next item shows.

    session = lab.LabelingSession(store, lab.PairGenerator(policy, prompts), annotator="ana")
    session.prompt, session.responses      # the item on screen
    session.submit("A")                    # durable when it returns; the next item is loaded
    session.press("2")                     # exactly what that key does in the panel

Keys: ``rlhf_lab.labeling.keys`` (two responses: 1 A, 2 B, 3 tie, 0 both bad; N > 2: a ranking;
a rating item: a score 1-5 per response). ``handle(message)`` applies a front end's message
(``{"type": "key", "key": "1", "item_id": ...}`` or ``{"type": "action", "action": "skip", ...}``).

Behaviour worth knowing:
- Each item is added to the store (``add_item``) before it is shown, so labels always refer
  to stored items. An item this annotator already decided (``store.decision``: a label no undo
  voided, skips included) is passed over, so a session over the same list resumes where the
  last one stopped.
- ``submit`` returns once the label is committed to disk and the next item is loaded.
- A source item the store refuses (empty or identical responses, no prompt) is not shown: the
  session names it in ``error``, keeps it in ``rejected`` and moves on. An exception from the
  source itself (a failed generator) ends the queue and is kept in ``source_error``.
- Every action clears ``error`` and ``message`` first; a failing action puts its error in
  ``error``, logs it and raises (``handle`` too: a widget catches it, the error is shown).
- A message tagged with an item that is no longer on screen is ignored if it would decide: a
  key pressed twice before the next item arrived is never applied to an item nobody saw.
- Undo brings the undone item back on screen (from this session or an earlier one); the item
  that was showing comes next.
- Reward-model scores are hidden until ``toggle_scores`` (no anchoring); they come from the
  responses' ``metadata["reward"]`` (a PairGenerator with a reward model) or ``reward_model``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rlhf_lab.labeling.agreement import RATING_SCALE
from rlhf_lab.labeling.item_queue import ItemQueue
from rlhf_lab.labeling.keys import as_decision, decides, key_action
from rlhf_lab.labeling.shown_scores import ShownScores

log = logging.getLogger(__name__)

# What a front end shows; LabelingPanel has one synced trait per name.
STATE = (
    *("annotator", "item_id", "prompt", "responses", "rating", "ranking", "labeled", "skipped", "queued"),
    *("labels_per_minute", "show_scores", "scores", "error", "message", "done"),
)


def _read_only(name: str, doc: str) -> property:
    return property(lambda self: getattr(self, name), doc=doc)


class LabelingSession:
    """Label ``source``'s items into ``store`` as ``annotator``; see the module docstring.

    ``source``: a ``PairGenerator`` or any iterable of ``{"prompt": str, "responses": [str, ...]}``
    (optionally ``metadata`` and ``id``). ``reward_model``: anything ``rlhf_lab.rewards.as_scorer``
    takes, for the scores shown by ``toggle_scores`` when the items carry none.
    """

    labeled = _read_only("_labeled", "This annotator's decisions in force, skips left out.")
    skipped = _read_only("_skipped", "This annotator's skips in force.")
    queued = _read_only("_queued", "Items on screen and waiting (as far as the source can tell).")
    labels_per_minute = _read_only("_labels_per_minute", "This annotator's recent pace, from the store.")
    show_scores = _read_only("_show_scores", "Whether scores are shown; flip it with toggle_scores().")
    error = _read_only("_error", "What went wrong in the last action (or a rejected source item).")
    message = _read_only("_message", "A note from the last action, e.g. 'Nothing to undo.'")
    item = _read_only("_current", "The store Item on screen, or None when the queue is empty.")

    def __init__(
        self,
        store: Any,
        source: Iterable[Any],
        annotator: str = "",
        *,
        show_scores: bool = False,
        reward_model: Any = None,
    ) -> None:
        if not callable(getattr(store, "label", None)):
            raise TypeError(f"store is a {type(store).__name__}. Fix: pass lab.PreferenceStore('labels.sqlite')")
        if not isinstance(annotator, str) or not annotator.strip():
            raise ValueError(
                f"annotator is {annotator!r}. Fix: pass annotator='your-name'; labels are kept per "
                "annotator for majority votes, agreement and undo"
            )
        if isinstance(source, (str, bytes, Mapping)) or not isinstance(source, Iterable):
            raise TypeError(
                f"source is a {type(source).__name__}. Fix: pass a PairGenerator or a list of items "
                "{'prompt': str, 'responses': [str, ...]} (wrap a single item in a list)"
            )
        self.store, self.reward_model, self.annotator = store, reward_model, annotator.strip()
        self._queue = ItemQueue(store, source, self.annotator)
        self._current: Any = None
        self._history: list[str] = []  # items labelled in this session, for undo
        self._ranking: list[int] = []  # picks so far (response indices, best first), N > 2
        self._show_scores, self._scores, self._shown = bool(show_scores), [], ShownScores(reward_model)
        self._labeled = self._skipped = self._queued = 0
        self._labels_per_minute = 0.0
        self._error = self._message = ""
        self._listeners: list[Callable[[LabelingSession], None]] = []
        self._lock = threading.RLock()  # one action at a time, whoever calls
        self._depth = 0  # nesting of _run: only the outermost action clears and notifies
        self._recount()
        self._run("load", self._advance, raise_=False)  # a failing source shows in error

    # -- what is on screen ----------------------------------------------------------------------

    @property
    def item_id(self) -> str:
        return self._current.id if self._current is not None else ""

    @property
    def prompt(self) -> str:
        """The prompt as shown: its text, or the whole conversation as ``role: content`` blocks."""
        if self._current is None:
            return ""
        messages = self._current.prompt
        if len(messages) == 1:
            return messages[0]["content"]
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)

    @property
    def responses(self) -> list[str]:
        return [r.text for r in self._current.responses] if self._current is not None else []

    @property
    def rating(self) -> bool:
        """Whether the item on screen asks for a score 1-5 per response instead of a choice."""
        return self._current is not None and bool(self._current.metadata.get("rating"))

    @property
    def ranking(self) -> list[int]:
        """The picks made with ``rank`` (0-based response indices, best first), or on a rating
        item the scores given with ``rate`` so far (in response order)."""
        return list(self._ranking)

    @property
    def scores(self) -> list[float]:
        """One score per response while ``show_scores``; empty while hidden (nothing to peek at)."""
        return list(self._scores)

    @property
    def rejected(self) -> list[tuple[int, str]]:
        """(source position, why) for source items the store refused; they were not shown."""
        return self._queue.rejected

    @property
    def source_error(self) -> BaseException | None:
        """The exception that ended the source, if one did."""
        return self._queue.source_error

    @property
    def done(self) -> bool:
        """Nothing on screen: the queue is empty (or the source failed)."""
        return self._current is None

    def state(self) -> dict[str, Any]:
        """Everything a front end shows (the names in ``STATE``), read at one moment."""
        with self._lock:
            return {name: getattr(self, name) for name in STATE}

    def on_change(self, callback: Callable[[LabelingSession], None]) -> None:
        """Call ``callback(session)`` after every action (a widget mirrors its traits there)."""
        self._listeners.append(callback)

    # -- actions ----------------------------------------------------------------------------------

    def submit(self, decision: str | list[int] | None = None) -> int:
        """Label the item on screen: "A", "B", "tie", "both_bad" (or key names "1", "2", "3",
        "0" with two responses), a ranking (all indices, best first), or None for the picks made
        with ``rank``. Returns the event id once it is on disk and the next item is loaded."""
        return self._run("submit", self._submit, decision)

    def skip(self) -> int:
        """Pass over the item on screen (a durable "skip" event; undo brings it back)."""
        return self._run("skip", self._submit, "skip")

    def undo(self) -> int | None:
        """Void this annotator's previous label and show that item again; None if nothing to undo."""
        return self._run("undo", self._undo)

    def rank(self, index: int) -> None:
        """Pick response ``index`` (0-based) as the next best one in the ranking being built."""
        self._run("rank", self._rank, index)

    def rate(self, score: int) -> int | None:
        """Score the next unscored response of a rating item (1-5); the last score submits them
        all and returns the event id."""
        return self._run("rate", self._rate, score)

    def clear_ranking(self) -> None:
        """Drop the picks made so far (what Escape does)."""
        self._run("clear ranking", self._ranking.clear)

    def press(self, key: str) -> int | None:
        """What a key press does (a key's name, as a browser gives it); unknown keys do nothing.
        Returns the event id when the key labelled, skipped or undid."""
        return self._run(f"key {key!r}", self._press, key)

    def toggle_scores(self) -> None:
        """Show or hide the reward-model scores."""
        self._run("toggle scores", self._toggle)

    def refresh(self) -> None:
        """Re-read the progress counts from the store (other processes may label too), and
        load an item if none is on screen (after an error, or when a source has grown)."""
        self._run("refresh", self._refresh)

    def handle(self, message: Any) -> Any:
        """Apply one front-end message (see the module docstring); a decision tagged with an item
        that is no longer on screen is ignored and said so in ``message``."""
        name = "message"
        if isinstance(message, Mapping):
            name = message.get("action") or f"key {message.get('key')!r}"
        return self._run(str(name), self._dispatch, message)

    # -- plumbing ---------------------------------------------------------------------------------

    def _run(self, action: str, fn: Callable[..., Any], *args: Any, raise_: bool = True) -> Any:
        """Run one action under the lock; an exception is kept in ``error``, logged and raised."""
        with self._lock:
            if not self._depth:
                self._error = self._message = ""
            self._depth += 1
            try:
                return fn(*args)
            except Exception as err:
                self._fail(action, err)
                if raise_:
                    raise
                return None
            finally:
                self._depth -= 1
                if not self._depth:
                    self._notify()

    def _fail(self, action: str, err: Exception) -> None:
        self._error = f"{action} failed: {err}"
        fixable = isinstance(err, ValueError)  # a fixable input problem: its message says it all
        log.log(logging.WARNING if fixable else logging.ERROR, "LabelingSession: %s", self._error, exc_info=not fixable)

    def _notify(self) -> None:
        for callback in self._listeners:
            try:
                callback(self)
            except Exception:  # a broken display must not turn a durable label into an error
                log.exception("LabelingSession: a change listener failed")

    def _dispatch(self, message: Any) -> Any:
        kind = message.get("type") if isinstance(message, Mapping) else None
        shown = message.get("item_id") if kind else None
        if shown is not None and shown != self.item_id and decides(message):
            # A key pressed twice quickly: the second press was meant for the item the person
            # saw, which is already labelled. Applying it to the next one would be a blind label.
            self._message = "Ignored a key meant for the previous item; this one is new."
            return None
        if kind == "key":
            return self._press(str(message.get("key", "")))
        actions: dict[str, Callable[[], Any]] = {
            "submit": lambda: self._submit(message.get("decision")),
            "skip": lambda: self._submit("skip"),
            "undo": self._undo,
            "rank": lambda: self._rank(int(message["index"])),
            "rate": lambda: self._rate(int(message["score"])),
            "clear_ranking": self._ranking.clear,
            "toggle_scores": self._toggle,
        }
        action = message.get("action") if kind == "action" else None
        if action not in actions:
            raise ValueError(f"unknown message {message!r} from the front end")
        return actions[action]()

    def _press(self, key: str) -> int | None:
        action, arg = key_action(key, len(self.responses), bool(self._ranking), self.rating) or ("none", None)
        if action == "submit":
            return self._submit(arg)
        if action == "rate":
            return self._rate(arg)
        if action == "undo":
            return self._undo()
        if action == "rank":
            self._rank(arg)
        elif action == "unpick":
            self._ranking.pop()
        elif action == "clear":
            self._ranking.clear()
        return None

    def _submit(self, decision: Any) -> int:
        item = self._on_screen()
        decision = as_decision(decision, len(item.responses), self._ranking, self.rating)
        event = self.store.label(item.id, decision, self.annotator)  # durable when it returns
        self._history.append(item.id)
        if decision == "skip":
            self._skipped += 1
        else:
            self._labeled += 1
        self._advance()
        return event

    def _undo(self) -> int | None:
        self._ranking.clear()
        event, item_id = None, None
        while self._history and event is None:  # this session's labels first, newest first
            item_id = self._history.pop()
            event = self.store.undo(self.annotator, item_id=item_id)
        if event is None:  # labels from an earlier session
            event = self.store.undo(self.annotator)
            item_id = self.store.events(annotator=self.annotator)[-1].item_id if event is not None else None
        if event is None:
            self._message = "Nothing to undo."
            return None
        if self._current is not None and self._current.id != item_id:
            self._queue.push_front(self._current.id)
        self._recount()
        self._show(self.store.get_item(item_id))
        return event

    def _rank(self, index: int) -> None:
        n = len(self._on_screen().responses)
        if not 0 <= index < n:
            raise ValueError(f"response {index} does not exist; this item has responses 0..{n - 1}")
        if index in self._ranking:
            raise ValueError(f"response {index + 1} is already ranked; Backspace takes back the last pick")
        self._ranking.append(index)

    def _rate(self, score: int) -> int | None:
        if not (self._on_screen() and self.rating and isinstance(score, int) and 1 <= score <= RATING_SCALE):
            wrong = f"not a whole number 1-{RATING_SCALE}" if self.rating else "this item asks for a choice, not scores"
            raise ValueError(f"score {score!r}: {wrong}. Fix: on a rating item, press 1-{RATING_SCALE} per response")
        self._ranking.append(score)
        return self._submit(None) if len(self._ranking) == len(self._current.responses) else None

    def _refresh(self) -> None:
        self._recount()
        if self._current is None:
            self._advance()

    def _toggle(self) -> None:
        self._show_scores = not self._show_scores
        self._refresh_scores()

    # -- the queue --------------------------------------------------------------------------------

    def _on_screen(self) -> Any:
        if self._current is None:
            failed = self._queue.source_error
            why = f" (the source failed: {failed})" if failed else ""
            raise ValueError(f"no item on screen: the queue is empty{why}. Fix: give it a source with more items")
        return self._current

    def _advance(self) -> None:
        """Show the next undecided item: the backlog first, then new items from the source."""
        rejected = len(self._queue.rejected)
        try:
            item = self._queue.next_item()
        except Exception:
            self._show(None)  # never leave a labelled item on screen to be labelled twice
            raise
        finally:
            if len(self._queue.rejected) > rejected:  # items passed over on the way: say so
                self._error = ItemQueue.rejection(self._queue.rejected[-1])
        self._show(item)
        if item is None:
            self._message = "All done: nothing left to label."

    def _show(self, item: Any) -> None:
        self._current, self._ranking, self._scores = item, [], []
        self._progress()
        if self._show_scores:
            try:
                self._refresh_scores()
            except Exception as err:  # the label is on disk and the next item is up: only scores are missing
                self._fail("scores", err)

    # -- progress and scores ----------------------------------------------------------------------

    def _progress(self) -> None:
        self._queued = (self._current is not None) + self._queue.waiting()
        self._labels_per_minute = round(self.store.labels_per_minute(self.annotator), 2)

    def _recount(self) -> None:
        decided = [by[self.annotator] for by in self.store.decisions([self.annotator]).values() if by]
        self._skipped = sum(d == "skip" for d in decided)
        self._labeled = len(decided) - self._skipped
        self._progress()

    def _refresh_scores(self) -> None:
        item, self._scores = self._current, []
        if not self._show_scores or item is None:
            return
        self._scores = self._shown(item) or []
        if not self._scores:
            self._message = "No scores: these items carry none. Fix: pass reward_model="
