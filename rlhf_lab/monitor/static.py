"""Charts that survive the notebook: a plotly figure as one output that every reader draws, offline.

    lab.show_figure(fig)              # any plotly figure, in a notebook cell
    lab.plot_runs([run])              # returns a `LabFigure`: shown the same way as a cell's last value

The output carries three views of the figure:
- `application/vnd.plotly.v1+json`: JupyterLab's plotly renderer draws it, also in a notebook that it does
  not trust (a papermill output, a notebook reopened later), where scripts in HTML would be stripped;
- `text/html`: a self-contained chart for nbconvert's HTML export, `make demo`, the regress report and
  other viewers. plotly.js goes inline into the first chart a kernel shows (never fetched from a CDN);
  later charts reuse it, so a notebook carries one copy (about 5 MB). Re-running the cell that holds it
  embeds it again, since its old output is replaced;
- `text/plain`: one line saying what the figure shows.

The live monitor (a widget, whose state an executed notebook does not keep) leaves one of these at the
end of every run, so its charts stay readable too.
"""

from __future__ import annotations

import json
import time
from typing import Any

import plotly.graph_objects as go

PLOTLY_MIME = "application/vnd.plotly.v1+json"
_holder: dict[str, Any] = {"shown": False, "cell": None, "request": None}  # whose output carries plotly.js


def _current_cell() -> tuple[str | None, str | None]:
    """The id of the cell being executed (JupyterLab sends it with each request) and of that request;
    None where unknown (then plotly.js goes out once per kernel)."""
    try:
        from IPython import get_ipython

        kernel = getattr(get_ipython(), "kernel", None)
        parent = (kernel.get_parent("shell") if kernel is not None else None) or {}
        return parent.get("metadata", {}).get("cellId"), parent.get("header", {}).get("msg_id")
    except Exception:  # an old kernel or no kernel
        return None, None


def _needs_plotlyjs() -> bool:
    cell, request = _current_cell()
    rerun = cell is not None and cell == _holder["cell"] and request != _holder["request"]
    if not _holder["shown"] or rerun:  # a re-run of the holding cell replaces the output that held it
        _holder.update(shown=True, cell=cell, request=request)
        return True
    return False


def describe(fig: go.Figure) -> str:
    title = fig.layout.title.text if fig.layout.title and fig.layout.title.text else "plotly figure"
    return f"<{title}: {len(fig.data)} traces>"


def figure_bundle(fig: go.Figure, *, plotlyjs: bool | None = None) -> dict[str, Any]:
    """The MIME bundle of `fig`. plotlyjs: embed plotly.js in the HTML view (None: only if this kernel has
    not shown it yet, or this cell's earlier output held it)."""
    import plotly.io as pio

    embed = _needs_plotlyjs() if plotlyjs is None else plotlyjs
    config = {"responsive": True, "displaylogo": False}
    spec = json.loads(pio.to_json(fig, validate=False))
    html = pio.to_html(
        fig,
        config=config,
        include_plotlyjs=embed,
        include_mathjax=False,
        full_html=False,
        default_width="100%",
        validate=False,
    )
    return {PLOTLY_MIME: {**spec, "config": config}, "text/html": html, "text/plain": describe(fig)}


def show_figure(
    fig: go.Figure, *, display_id: str | None = None, update: bool = False, plotlyjs: bool | None = None
) -> bool:
    """Show `fig` in the current notebook cell so that it survives export and reopening; returns whether
    this output carries plotly.js.

    display_id / update: replace the earlier output with that display_id instead of adding one (pass
    plotlyjs=True if that output carried plotly.js, so the replacement keeps it)."""
    from IPython.display import display, update_display

    embed = _needs_plotlyjs() if plotlyjs is None else plotlyjs
    bundle = figure_bundle(fig, plotlyjs=embed)
    if update and display_id is not None:
        update_display(bundle, raw=True, display_id=display_id)
    else:
        display(bundle, raw=True, display_id=display_id)
    return embed


class StaticCopy:
    """One output that shows a changing figure: the first `show` adds it to the cell, later ones replace it
    (keeping plotly.js if the first carried it). The live monitor leaves its charts this way."""

    def __init__(self) -> None:
        self.display_id = f"rlhf-lab-static-{id(self)}-{time.time_ns()}"
        self.plotlyjs: bool | None = None  # None: not shown yet

    def show(self, fig: go.Figure) -> None:
        again = self.plotlyjs is not None
        self.plotlyjs = show_figure(fig, display_id=self.display_id, update=again, plotlyjs=self.plotlyjs or None)


class LabFigure(go.Figure):
    """A plotly Figure that shows itself as `show_figure` does when it is a cell's value; `.show()` and
    everything else behave as plotly's own."""

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None, **kwargs: Any) -> dict[str, Any]:
        return figure_bundle(self)

    def _ipython_display_(self) -> None:
        show_figure(self)


__all__ = ["LabFigure", "StaticCopy", "figure_bundle", "show_figure"]
