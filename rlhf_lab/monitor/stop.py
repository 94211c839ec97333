"""The live monitor's Stop button: heard while its own cell is still training.

A kernel handles a widget's messages between cells, so a plain button clicked during training would act
only after the run ended. ipykernel 7 can run a *subshell*, a second shell thread, and routes a comm's
messages to the subshell that last used it: the button's messages go to one such subshell, which sets
the monitor's stop flag while the main thread trains. Where the kernel has no subshells the button says
so; `monitor.stop()` and the kernel's interrupt still work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_subshell: dict[int, str | None] = {}  # id(kernel) -> the subshell that hears Stop buttons


def _kernel() -> Any:
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None)


def stop_subshell(kernel: Any, timeout_s: float = 5.0) -> str | None:
    """One subshell per kernel for Stop buttons (created on the shell channel thread, as a
    create_subshell_request would); None where the kernel cannot."""
    if id(kernel) in _subshell:
        return _subshell[id(kernel)]
    subshell = None
    try:
        if getattr(kernel, "_supports_kernel_subshells", False):
            manager = kernel.shell_channel_thread.manager
            done, box = threading.Event(), {}

            def create() -> None:
                try:
                    box["id"] = manager._create_subshell()
                finally:
                    done.set()

            manager._shell_channel_io_loop.add_callback(create)
            subshell = box.get("id") if done.wait(timeout_s) else None
    except Exception:  # another ipykernel: no subshells, the button explains
        subshell = None
    _subshell[id(kernel)] = subshell
    return subshell


def stop_button(on_stop: Callable[[], None]):
    """An ipywidgets Button that calls `on_stop` when clicked, also during the cell that shows it."""
    import ipywidgets as w

    button = w.Button(description="Stop", icon="stop", button_style="danger", layout=w.Layout(width="90px"))
    button.tooltip = "End the run cleanly after the current step: a complete run folder, resumable"

    def clicked(_: Any) -> None:
        on_stop()
        button.description, button.disabled = "Stopping", True

    button.on_click(clicked)
    kernel = _kernel()
    subshell = stop_subshell(kernel) if kernel is not None else None
    comm = getattr(button, "comm", None)
    if subshell is not None and comm is not None:
        comm._reply_subshell_id = subshell  # ipykernel routes this comm's messages to that subshell
    elif kernel is not None:
        button.tooltip = "This kernel cannot hear a click while training (no subshells): interrupt the kernel"
    return button


__all__ = ["stop_button", "stop_subshell"]
