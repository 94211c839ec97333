"""``LabelingPanel``: a notebook widget where a person compares a model's candidate responses
and every decision lands in a ``PreferenceStore`` before the next item shows.

    panel = lab.LabelingPanel(store, lab.PairGenerator(policy, prompts), annotator="ana")
    panel                          # in a notebook cell: click it (it takes focus) and use the keys
    panel.submit("A")              # the same path a key press takes: tests and papermill use it

Keys with two responses: ``1`` A better, ``2`` B better, ``3`` tie, ``0`` both bad, ``s`` skip,
``u`` or Backspace undo. With N > 2: press the response numbers best first (``1``..``9``) to
build a ranking and Enter to submit it (the last one may be left out); ``u``/Backspace take
back the last pick, or undo the previous label when nothing is picked; Escape clears the picks;
``t`` tie, ``0`` both bad, ``s`` skip. Every button and key sends a message
(``{"type": "key", "key": "1"}`` or ``{"type": "action", "action": "skip"}``) that calls the
same methods as ``press``, ``submit``, ``skip``, ``undo``, ``rank`` and ``toggle_scores``.

Behaviour worth knowing:
- Each item is added to the store (``add_item``) before it is shown, so labels always refer
  to stored items. An item this annotator already decided (a re-run over the same list) is
  passed over, so a session resumes where it stopped.
- ``submit`` returns once the label is committed to disk and the next item is loaded.
- A source item the store refuses (empty or identical responses, no prompt) is not shown: the
  panel names it in ``error``, keeps it in ``rejected`` and moves on. An exception from the
  source itself (a failed generator) ends the queue and stays in ``error``.
- Errors from keys, buttons and observers are shown in the panel (``error``) and logged;
  programmatic calls show them too and raise.
- Each front-end message carries the id of the item it was pressed on: a decision key pressed
  twice before the next item arrived is ignored, never applied to an item nobody saw.
- Undo brings the undone item back on screen; the item that was showing comes next.
- Reward-model scores are hidden until ``toggle_scores`` (no anchoring); they come from the
  responses' ``metadata["reward"]`` (a PairGenerator with a reward model) or ``reward_model``.
- Text only, no markdown: the front end writes every prompt and response with ``textContent``,
  so ``<script>`` shows as those characters. Long texts scroll inside their box.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sized
from pathlib import Path
from typing import Any

import anywidget
import traitlets as t

from rlhf_lab.rewards import as_scorer

log = logging.getLogger(__name__)

_KEYS_TWO = {"1": "A", "2": "B", "3": "tie", "0": "both_bad", "a": "A", "b": "B", "t": "tie"}
_ITEM_KEYS = {"prompt", "responses", "metadata", "id"}


def _asset(name: str, here: Path | None = None) -> Path:
    """The installed wheel ships widgets/ as rlhf_lab/widgets/; a checkout has it at the top."""
    here = here or Path(__file__).resolve().parents[1]  # the rlhf_lab package folder
    for folder in (here / "widgets", here.parent / "widgets"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{name} is in neither {here / 'widgets'} nor {here.parent / 'widgets'}")


class LabelingPanel(anywidget.AnyWidget):
    """Label ``source``'s items into ``store`` as ``annotator``; see the module docstring.

    ``source``: a ``PairGenerator`` or any iterable of ``{"prompt": str, "responses": [str, ...]}``
    (optionally ``metadata`` and ``id``). ``reward_model``: scores shown by the toggle when the
    items carry none.
    """

    _esm = _asset("labeling_panel.js")
    _css = _asset("labeling_panel.css")

    annotator = t.Unicode("").tag(sync=True)
    item_id = t.Unicode("").tag(sync=True)
    prompt = t.Unicode("").tag(sync=True)
    responses = t.List(t.Unicode()).tag(sync=True)
    ranking = t.List(t.Int()).tag(sync=True)  # picks so far (response indices, best first), N > 2
    labeled = t.Int(0).tag(sync=True)  # this annotator's decisions in force, skips left out
    skipped = t.Int(0).tag(sync=True)
    queued = t.Int(0).tag(sync=True)  # on screen + waiting (what the source can tell)
    labels_per_minute = t.Float(0.0).tag(sync=True)
    show_scores = t.Bool(False).tag(sync=True)
    scores = t.List(t.Float()).tag(sync=True)  # empty while hidden: nothing to peek at
    error = t.Unicode("").tag(sync=True)
    message = t.Unicode("").tag(sync=True)
    done = t.Bool(False).tag(sync=True)

    def __init__(
        self,
        store: Any,
        source: Iterable[Any],
        annotator: str = "",
        *,
        show_scores: bool = False,
        reward_model: Any = None,
        **kwargs: Any,
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
        super().__init__(annotator=annotator.strip(), **kwargs)
        self.store, self.reward_model = store, reward_model
        self.rejected: list[tuple[int, str]] = []  # (source position, why) for items not shown
        self._origin, self._source = source, iter(source)
        self._pulled = 0
        self._current: Any = None  # the store Item on screen
        self._backlog: deque[str] = deque()  # item ids to show before new ones (after an undo)
        self._history: list[str] = []  # items labelled in this session, for undo
        self._source_error: BaseException | None = None
        self._lock = threading.RLock()  # one action at a time, whoever calls
        self._depth = 0  # nesting of _run: only the outermost action clears the last error
        self.on_msg(self._on_msg)
        self.show_scores = show_scores
        self._recount()
        self._run("load", self._advance, raise_=False)  # a failing source shows in the panel

    # -- the programmatic twins of keys and buttons -------------------------------------------------

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

    def press(self, key: str) -> None:
        """What a key press does (the front end sends the key's name); unknown keys do nothing."""
        self._run(f"key {key!r}", self._press, key)

    def toggle_scores(self) -> None:
        """Show or hide the reward-model scores."""
        self._run("toggle scores", self._toggle)

    def refresh(self) -> None:
        """Re-read the progress counts from the store (other processes may label too), and
        load an item if none is on screen (after an error, or when a source has grown)."""
        self._run("refresh", self._refresh)

    # -- plumbing -----------------------------------------------------------------------------------

    def _run(self, action: str, fn: Callable[..., Any], *args: Any, raise_: bool = True) -> Any:
        """Run one action under the lock; an exception is shown in ``error``, logged, and raised
        unless the caller is the front end (ipywidgets would only log it where nobody looks)."""
        with self._lock, self.hold_sync():  # one state message per action: never half an update
            if not self._depth:
                self.error = self.message = ""
            self._depth += 1
            try:
                return fn(*args)
            except Exception as err:
                self.error = f"{action} failed: {err}"
                # A ValueError is a fixable input problem: its message says it all. Others get a trace.
                log.log(
                    logging.WARNING if isinstance(err, ValueError) else logging.ERROR,
                    "LabelingPanel: %s",
                    self.error,
                    exc_info=not isinstance(err, ValueError),
                )
                if raise_:
                    raise
                return None
            finally:
                self._depth -= 1

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        name = "message"
        if isinstance(content, Mapping):
            name = content.get("action") or f"key {content.get('key')!r}"
        self._run(str(name), self._dispatch, content, raise_=False)

    def _dispatch(self, content: Any) -> None:
        kind = content.get("type") if isinstance(content, Mapping) else None
        shown = content.get("item_id") if kind else None
        if shown is not None and shown != self.item_id and _decides(content):
            # A key pressed twice quickly: the second press was meant for the item the person
            # saw, which is already labelled. Applying it to the next one would be a blind label.
            self.message = "Ignored a key meant for the previous item; this one is new."
            return None
        if kind == "key":
            return self._press(str(content.get("key", "")))
        actions: dict[str, Callable[[], Any]] = {
            "submit": lambda: self._submit(content.get("decision")),
            "skip": lambda: self._submit("skip"),
            "undo": self._undo,
            "rank": lambda: self._rank(int(content["index"])),
            "clear_ranking": lambda: setattr(self, "ranking", []),
            "toggle_scores": self._toggle,
        }
        action = content.get("action") if kind == "action" else None
        if action not in actions:
            raise ValueError(f"unknown message {content!r} from the front end")
        actions[action]()

    @t.observe("show_scores")
    def _on_show_scores(self, _change: Any) -> None:
        self._run("show scores", self._refresh_scores, raise_=False)

    # -- actions ------------------------------------------------------------------------------------

    def _press(self, key: str) -> None:
        n, low = len(self.responses), key.lower()
        if key == "Backspace" or low == "u":
            if not self.ranking:
                return self._undo()
            self.ranking = self.ranking[:-1]  # with picks made, take back the last one first
        if low == "s":
            return self._submit("skip")
        if key == "Escape":
            self.ranking = []
        elif n > 2 and key == "Enter":
            self._submit(None)
        elif n > 2 and key.isdigit() and 1 <= int(key) <= min(n, 9):
            self._rank(int(key) - 1)
        elif low in _KEYS_TWO and (n <= 2 or low in ("0", "t")):
            self._submit(_KEYS_TWO[low])

    def _submit(self, decision: Any) -> int:
        item = self._on_screen()
        decision = self._decision(decision, len(item.responses))
        event = self.store.label(item.id, decision, self.annotator)  # durable when it returns
        self._history.append(item.id)
        if decision == "skip":
            self.skipped += 1
        else:
            self.labeled += 1
        self._advance()
        return event

    def _decision(self, decision: Any, n: int) -> Any:
        if decision is None:  # the picks made with rank(); the last one may be left out
            picks = list(self.ranking)
            if n - len(picks) == 1:
                picks += [i for i in range(n) if i not in picks]
            if len(picks) != n:
                raise ValueError(
                    f"the ranking has {len(picks)} of {n} responses ({[p + 1 for p in picks]}). Fix: press "
                    "the numbers of the others, best first, then Enter; or call panel.submit([...])"
                )
            return picks
        if isinstance(decision, str) and n == 2 and decision.strip().lower() in _KEYS_TWO:
            return _KEYS_TWO[decision.strip().lower()]
        if decision in ("0", "t"):
            return _KEYS_TWO[decision]
        return decision  # the store checks it and names the allowed values

    def _undo(self) -> int | None:
        self.ranking = []
        event, item_id = None, None
        while self._history and event is None:  # this session's labels first, newest first
            item_id = self._history.pop()
            event = self.store.undo(self.annotator, item_id=item_id)
        if event is None:  # labels from an earlier session
            event = self.store.undo(self.annotator)
            item_id = self.store.events(annotator=self.annotator)[-1].item_id if event is not None else None
        if event is None:
            self.message = "Nothing to undo."
            return None
        if self._current is not None and self._current.id != item_id:
            self._backlog.appendleft(self._current.id)
        self._recount()
        self._show(self.store.get_item(item_id))
        return event

    def _rank(self, index: int) -> None:
        n = len(self._on_screen().responses)
        if not 0 <= index < n:
            raise ValueError(f"response {index} does not exist; this item has responses 0..{n - 1}")
        if index in self.ranking:
            raise ValueError(f"response {index + 1} is already ranked; Backspace takes back the last pick")
        self.ranking = [*self.ranking, index]

    def _refresh(self) -> None:
        self._recount()
        if self._current is None:
            self._advance()

    def _toggle(self) -> None:
        self.show_scores = not self.show_scores

    # -- the queue ----------------------------------------------------------------------------------

    def _on_screen(self) -> Any:
        if self._current is None:
            why = f" (the source failed: {self._source_error})" if self._source_error else ""
            raise ValueError(f"no item on screen: the queue is empty{why}. Fix: give the panel more items")
        return self._current

    def _advance(self) -> None:
        """Show the next undecided item: the backlog first, then new items from the source."""
        try:
            item = self._next_item()
        except Exception:
            self._show(None)  # never leave a labelled item on screen to be labelled twice
            raise
        self._show(item)
        if item is None:
            self.message = "All done: nothing left to label."

    def _next_item(self) -> Any:
        while self._backlog:
            item_id = self._backlog.popleft()
            if self._decision_in_force(item_id) is None:
                return self.store.get_item(item_id)
        while self._source_error is None:
            try:
                raw = next(self._source)
            except StopIteration:
                return None
            except Exception as err:  # e.g. a PairGenerator's worker failed: the queue ends here
                self._source_error = err
                raise
            self._pulled += 1
            try:
                item_id = self._add(raw)
            except ValueError as err:  # bad input: say which item and why, then carry on
                self.rejected.append((self._pulled, str(err)))
                self.error = f"source item #{self._pulled} was not shown: {err}"
                log.warning("LabelingPanel: %s", self.error)
                continue
            if self._decision_in_force(item_id) is None:  # resuming: already decided ones pass
                return self.store.get_item(item_id)
        return None

    def _add(self, raw: Any) -> str:
        if not isinstance(raw, Mapping):
            raise ValueError(f"it is a {type(raw).__name__}. Fix: yield dicts {{'prompt': ..., 'responses': [...]}}")
        unknown = sorted(set(raw) - _ITEM_KEYS)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}. Fix: use prompt, responses, metadata, id")
        return self.store.add_item(raw.get("prompt"), raw.get("responses"), raw.get("metadata"), raw.get("id"))

    def _decision_in_force(self, item_id: str) -> Any:
        events = self.store.events(annotator=self.annotator, item_id=item_id)
        voided = {e.voids for e in events if e.kind == "undo"}
        labels = [e.decision for e in events if e.kind == "label" and e.id not in voided]
        return labels[-1] if labels else None

    # -- what the front end shows -------------------------------------------------------------------

    def _show(self, item: Any) -> None:
        self._current = item
        with self.hold_sync():  # one message: the front end never sees half an item
            self.item_id = item.id if item else ""
            self.prompt = _prompt_text(item.prompt) if item else ""
            self.responses = [r.text for r in item.responses] if item else []
            self.ranking, self.scores, self.done = [], [], item is None
            self._progress()
        if self.show_scores:
            self._refresh_scores()

    def _progress(self) -> None:
        remaining = getattr(self._origin, "remaining", None)
        if remaining is None and isinstance(self._origin, Sized):
            remaining = max(len(self._origin) - self._pulled, 0)
        if remaining is None:  # an endless generator: what it has ready
            remaining = getattr(self._origin, "ready", 0)
        self.queued = (self._current is not None) + len(self._backlog) + remaining
        self.labels_per_minute = round(self.store.labels_per_minute(self.annotator), 2)

    def _recount(self) -> None:
        decided = [by[self.annotator] for by in self.store.decisions([self.annotator]).values() if by]
        self.skipped = sum(d == "skip" for d in decided)
        self.labeled = len(decided) - self.skipped
        self._progress()

    def _refresh_scores(self) -> None:
        item = self._current
        if not self.show_scores or item is None:
            self.scores = []
            return
        rewards = [r.metadata.get("reward") for r in item.responses]
        if any(not isinstance(r, (int, float)) for r in rewards):
            if self.reward_model is None:
                self.scores = []
                self.message = "No scores: these items carry none. Fix: pass reward_model= to the panel"
                return
            rewards = as_scorer(self.reward_model)(
                [item.prompt] * len(item.responses), [r.text for r in item.responses]
            )
        self.scores = [float(r) for r in rewards]


def _decides(content: Mapping) -> bool:
    """Whether a front-end message labels the item on screen (undo, Escape and toggles do not)."""
    if content.get("type") == "key":
        return content.get("key") not in ("u", "U", "Backspace", "Escape")
    return content.get("action") in ("submit", "skip", "rank")


def _prompt_text(messages: list[dict]) -> str:
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)  # show the whole conversation
