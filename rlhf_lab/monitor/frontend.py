"""Who is looking: a person at a notebook, a notebook run headless (papermill, nbconvert), or a script.

`notebook_frontend()` decides whether the monitor shows a live widget (a person is watching) or
writes monitor.html only; `in_kernel()` whether rich output (HTML tables, figures) has a notebook
to go to, which an executed notebook keeps. `RLHF_LAB_MONITOR=html` or `=live` overrides the first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BATCH_EXECUTORS = ("papermill", "nbconvert", "nbclient")


def in_kernel() -> bool:
    """True inside a Jupyter kernel, watched or run headless; False in a script or a terminal IPython."""
    if "IPython" not in sys.modules:  # a kernel always has it imported; a script must not pay for it
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def notebook_frontend() -> bool:
    """True when a person is looking at a notebook: an IPython kernel not run by papermill/nbconvert."""
    forced = os.environ.get("RLHF_LAB_MONITOR", "").strip().lower()
    if forced in ("html", "headless"):
        return False
    if forced in ("live", "widget", "notebook"):
        return True
    return in_kernel() and not _run_by_batch_executor()


def _run_by_batch_executor() -> bool:
    # A kernel cannot ask papermill whether it is being driven, but the process that launched it
    # (jupyter_client records it in JPY_PARENT_PID) says so on its command line.
    for pid in {os.environ.get("JPY_PARENT_PID"), str(os.getppid())} - {None, ""}:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(mark in cmdline for mark in BATCH_EXECUTORS):
            return True
    return False
