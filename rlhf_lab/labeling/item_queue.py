"""``ItemQueue``: the items a labelling session shows, in order. Items pushed back by an undo
come first, then new items from the source, each added to the store before it is handed out
and passed over if the annotator already decided it (so a re-run resumes where it stopped).

A source item the store refuses is named in ``rejected`` and skipped; an exception from the
source itself (a failed generator) ends the queue for good and is kept in ``source_error``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sized
from typing import Any

log = logging.getLogger(__name__)

_ITEM_KEYS = {"prompt", "responses", "metadata", "id"}


class ItemQueue:
    """``source``'s items for ``annotator``, through ``store``; see the module docstring."""

    def __init__(self, store: Any, source: Iterable[Any], annotator: str) -> None:
        self.store, self.annotator = store, annotator
        self.rejected: list[tuple[int, str]] = []  # (source position, why) for items not shown
        self.source_error: BaseException | None = None
        self._origin, self._source = source, iter(source)
        self._pulled = 0
        self._backlog: deque[str] = deque()  # item ids to show before new ones (after an undo)

    def push_front(self, item_id: str) -> None:
        """Show this item next (the one on screen when an undo brought another one back)."""
        self._backlog.appendleft(item_id)

    def next_item(self) -> Any:
        """The next store Item this annotator has not decided, or None when the source is done.
        Raises the source's own exception (once; later calls return None)."""
        while self._backlog:
            item_id = self._backlog.popleft()
            if self.store.decision(item_id, self.annotator) is None:
                return self.store.get_item(item_id)
        while self.source_error is None:
            try:
                raw = next(self._source)
            except StopIteration:
                return None
            except Exception as err:  # e.g. a PairGenerator's worker failed: the queue ends here
                self.source_error = err
                raise
            self._pulled += 1
            try:
                item_id = self._add(raw)
            except ValueError as err:  # bad input: say which item and why, then carry on
                self.rejected.append((self._pulled, str(err)))
                log.warning("LabelingSession: %s", self.rejection(self.rejected[-1]))
                continue
            if self.store.decision(item_id, self.annotator) is None:  # resuming: decided ones pass
                return self.store.get_item(item_id)
        return None

    @staticmethod
    def rejection(entry: tuple[int, str]) -> str:
        """What to tell the annotator about a rejected source item."""
        return f"source item #{entry[0]} was not shown: {entry[1]}"

    def waiting(self) -> int:
        """Items still to come: the backlog plus what the source can tell (its ``remaining``,
        its length, or for an endless generator what it has ``ready``)."""
        remaining = getattr(self._origin, "remaining", None)
        if remaining is None and isinstance(self._origin, Sized):
            remaining = max(len(self._origin) - self._pulled, 0)
        if remaining is None:
            remaining = getattr(self._origin, "ready", 0)
        return len(self._backlog) + remaining

    def _add(self, raw: Any) -> str:
        if not isinstance(raw, Mapping):
            raise ValueError(f"it is a {type(raw).__name__}. Fix: yield dicts {{'prompt': ..., 'responses': [...]}}")
        unknown = sorted(set(raw) - _ITEM_KEYS)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}. Fix: use prompt, responses, metadata, id")
        return self.store.add_item(raw.get("prompt"), raw.get("responses"), raw.get("metadata"), raw.get("id"))
