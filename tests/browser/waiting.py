"""Waiting in the browser tests: poll a condition until it holds, or fail naming what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait(predicate: Callable[[], object], timeout_s: float, what: str, details: Callable[[], str] = str) -> object:
    """The predicate's first truthy value within `timeout_s`; otherwise the test fails with `what` and `details()`
    (what the page, console or server showed at that moment)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}\n{details()}")
        time.sleep(0.1)
