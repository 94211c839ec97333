"""Our PPO loop's events for transformers `TrainerCallback`s (so every stage's monitors serve PPO too), and
the guard that holds a kernel interrupt back while an update changes the weights."""

from __future__ import annotations

import signal
import threading
from typing import Any


class Callbacks:
    """Sends the Trainer's callback events to transformers `TrainerCallback`s, as a Trainer would
    (transformers' own CallbackHandler expects the Trainer's flow callback, whose job is ours here)."""

    def __init__(self, callbacks: list, **objects: Any) -> None:
        self.callbacks = list(callbacks)
        self.objects = objects

    def __getattr__(self, event: str):
        if not event.startswith("on_"):
            raise AttributeError(event)

        def call(args, state, control, logs=None):
            extra = {"logs": logs} if logs is not None else {}
            for callback in self.callbacks:
                result = getattr(callback, event)(args, state, control, **self.objects, **extra)
                control = result if result is not None else control
            return control

        return call

    def progress(self, text: str) -> None:
        """What the update in progress is doing, for callbacks that show it (`on_progress`, not a
        transformers event: other callbacks never see it)."""
        for callback in self.callbacks:
            show = getattr(callback, "on_progress", None)
            if show is not None:
                show(text)


class InterruptGuard:
    """`with guard:` around one update. A KeyboardInterrupt passes at once until `guard.hold()` (the
    rollout and scoring change nothing); after it, one is held back and raised when the block ends, so
    an interrupted run's weights, optimizer and KL state are always those of a finished update."""

    def __init__(self) -> None:
        self.pending, self._previous, self._inside = False, None, False

    def hold(self) -> None:
        """Hold interrupts back until the block ends (outside a `with guard:` block: nothing to do)."""
        if self._inside and self._previous is None and threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._note)

    def _note(self, signum, frame) -> None:
        self.pending = True

    def __enter__(self) -> InterruptGuard:
        self.pending, self._inside = False, True
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._inside = False
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if self.pending and exc_type is None:
            raise KeyboardInterrupt("interrupted after the PPO update in progress finished")
        return False
