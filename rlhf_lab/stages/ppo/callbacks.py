"""Sends our PPO loop's events to transformers `TrainerCallback`s, so every stage's monitors serve PPO too."""

from __future__ import annotations

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
