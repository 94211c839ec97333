"""Figures for training metrics: the monitor's panels per stage, decimation, HTML pages, and `plot_runs`.

    fig = lab.plot_runs([dpo_run, "runs/dpo-beta0.3"], metrics=["rewards/margins", "loss"])

Shared by the live monitor (FigureWidget in a notebook) and the headless writer (monitor.html), so
both draw the same panels. Generated text only ever reaches a page through `html.escape`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_lab.files import read_jsonl
from rlhf_lab.monitor.panels import STAGE_PANELS, Panel, infer_stage

DEFAULT_MAX_POINTS = 4000  # per trace on screen; plotly stays responsive well beyond this
SMOOTH_NOTE = "<br><span style='font-size:11px;color:#777'>faint: raw, solid: smoothed (EMA)</span>"


@dataclass
class MetricSeries:
    """One metric's full history (never decimated) and its debiased EMA, as TensorBoard smooths."""

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    _ema: float = 0.0
    _weight: float = 0.0

    def append(self, step: int, value: float, smoothing: float) -> None:
        self.steps.append(step)
        self.values.append(value)
        if math.isfinite(value):  # one NaN must not poison the smoothed line for the rest of the run
            self._ema = smoothing * self._ema + (1 - smoothing) * value
            self._weight = smoothing * self._weight + (1 - smoothing)
        self.smoothed.append(self._ema / self._weight if self._weight else math.nan)


def ema(values: Sequence[float], smoothing: float) -> list[float]:
    series = MetricSeries()
    for i, v in enumerate(values):
        series.append(i, float(v), smoothing)
    return series.smoothed


def decimate(
    x: Sequence[float], y: Sequence[float], max_points: int = DEFAULT_MAX_POINTS, *, keep_extremes: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """At most ~max_points points. keep_extremes: the min and max of each bucket, so spikes stay visible."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(xs)
    if n <= max_points:
        return xs, ys
    if not keep_extremes:
        idx = np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
        return xs[idx], ys[idx]
    buckets = max(max_points // 2, 1)
    size = math.ceil(n / buckets)
    padded = np.full(buckets * size, np.nan)
    padded[:n] = ys
    grid = padded.reshape(buckets, size)
    base = np.arange(buckets) * size
    lo = base + np.argmin(np.where(np.isnan(grid), np.inf, grid), axis=1)
    hi = base + np.argmax(np.where(np.isnan(grid), -np.inf, grid), axis=1)
    idx = np.unique(np.concatenate([lo, hi, [0, n - 1]]))
    idx = idx[idx < n]
    return xs[idx], ys[idx]


@dataclass(frozen=True)
class TraceSpec:
    panel: int
    metric: str
    kind: str  # "raw", "smooth" or "eval"
    secondary: bool


def trace_plan(panels: Sequence[Panel], available: Iterable[str], smoothing: float) -> tuple[TraceSpec, ...]:
    """Which traces the figure holds: only metrics with data, and `eval_<metric>` beside its training twin."""
    have = set(available)
    plan = []
    for i, panel in enumerate(panels):
        for metric in panel.all_metrics:
            secondary = metric in panel.secondary
            if metric in have:
                if smoothing > 0:
                    plan.append(TraceSpec(i, metric, "raw", secondary))
                plan.append(TraceSpec(i, metric, "smooth" if smoothing > 0 else "raw", secondary))
            if f"eval_{metric}" in have:
                plan.append(TraceSpec(i, f"eval_{metric}", "eval", secondary))
    return tuple(plan)


def trace_xy(series: MetricSeries, spec: TraceSpec, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    if spec.kind == "smooth":
        return decimate(series.steps, series.smoothed, max_points, keep_extremes=False)
    return decimate(series.steps, series.values, max_points)


def _palette() -> list[str]:
    import plotly.express as px

    return px.colors.qualitative.Plotly


def build_figure(
    panels: Sequence[Panel],
    series: Mapping[str, MetricSeries],
    plan: Sequence[TraceSpec],
    *,
    widget: bool = False,
    max_points: int = DEFAULT_MAX_POINTS,
    alert_steps: Sequence[int] = (),
    title: str | None = None,
):
    """A figure (or FigureWidget) with one subplot per panel and the traces of `plan`, in that order."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = list(panels) or [Panel("no metrics yet", ())]
    cols = 1 if len(panels) == 1 else 2
    rows = math.ceil(len(panels) / cols)
    specs = [[{"secondary_y": bool(p.secondary)} for p in panels[r * cols : (r + 1) * cols]] for r in range(rows)]
    specs[-1] += [None] * (cols - len(specs[-1]))
    smoothed = {s.panel for s in plan if s.kind == "smooth"}
    fig = make_subplots(
        rows=rows,
        cols=cols,
        specs=specs,
        subplot_titles=[p.title + (SMOOTH_NOTE if i in smoothed else "") for i, p in enumerate(panels)],
        vertical_spacing=min(0.3 / rows, 0.12),
        # a left panel's right axis needs room before the next panel's left axis
        horizontal_spacing=0.16 if cols > 1 and any(p.secondary for p in panels[::2]) else 0.08,
    )
    colors, palette = {}, _palette()
    for spec in plan:
        base = spec.metric.removeprefix("eval_")
        color = colors.setdefault(base, palette[len(colors) % len(palette)])
        x, y = trace_xy(series[spec.metric], spec, max_points)
        if not widget:  # plain lists: readable numbers in monitor.html instead of base64 blobs
            x, y = x.tolist(), y.tolist()
        faint = spec.kind == "raw" and any(s.metric == spec.metric and s.kind == "smooth" for s in plan)
        trace = go.Scatter(
            x=x,
            y=y,
            name=spec.metric + (" (raw)" if faint else ""),
            legendgroup=spec.metric,
            mode="lines+markers" if spec.kind == "eval" else "lines",
            showlegend=not faint,
            line={"color": color, "width": 1 if faint else 2, "dash": "dot" if spec.kind == "eval" else None},
            opacity=0.35 if faint else 1.0,
        )
        fig.add_trace(
            trace,
            row=spec.panel // cols + 1,
            col=spec.panel % cols + 1,
            secondary_y=spec.secondary if panels[spec.panel].secondary else None,
        )
    for step in alert_steps:
        fig.add_vline(x=step, line={"color": "crimson", "dash": "dash", "width": 1}, row="all", col="all")
    fig.update_layout(
        height=60 + 260 * rows,
        template="plotly_white",
        margin={"l": 50, "r": 30, "t": 95 if title else 60, "b": 30},  # a title sits above the panels' titles
        title={"text": title, "y": 0.99, "yanchor": "top"} if title else None,
        legend={"orientation": "h", "y": -0.05 if rows > 1 else -0.2},
    )
    fig.update_xaxes(title_text=None)
    fig.update_yaxes(tickformat="~g", hoverformat=".4~g")  # 0.05, not 0.0500000000745058051
    return go.FigureWidget(fig) if widget else fig


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return html.escape(f"{value:.4g}")
    if isinstance(value, (list, dict)):  # chat messages: show the last turn's text, as samples.jsonl does
        value = (
            value[-1].get("content", value)
            if isinstance(value, list) and value and isinstance(value[-1], dict)
            else value
        )
    return html.escape(str(value))


def samples_html(rows: Sequence[Mapping[str, Any]], *, style: bool = False) -> str:
    """The samples table; every cell is escaped, so a completion with <script> shows as text.

    style: prepend the table's CSS (a widget has no page stylesheet to inherit it from).
    """
    if style:
        return f"<style>{CSS}</style>" + samples_html(rows)
    if not rows:
        return "<p class='empty'>No samples yet.</p>"
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table class='samples'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def alerts_html(alerts: Sequence[Any]) -> str:
    if not alerts:
        return "<p class='ok'>No alerts.</p>"
    items = "".join(
        f"<li class='{html.escape(a.severity)}'><b>{html.escape(a.rule)}</b> at step {int(a.step)}: "
        f"{html.escape(a.message)}.<br><i>Cause:</i> {html.escape(a.cause)} <i>Remedy:</i> {html.escape(a.remedy)}</li>"
        for a in alerts
    )
    return f"<ul class='alerts'>{items}</ul>"


# Only class-scoped rules: the widget injects this into a live notebook page.
CSS = """table.samples{border-collapse:collapse;width:100%;font-size:13px}
table.samples td,table.samples th{border:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left;
white-space:pre-wrap;word-break:break-word}
ul.alerts li{margin-bottom:.5em}ul.alerts li.error b{color:#b00}ul.alerts li.warning b{color:#b60}
p.ok{color:#070}"""
PAGE_CSS = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}" + CSS


def page_html(fig, *, title: str, subtitle: str, alerts: Sequence[Any], samples: Sequence[Mapping]) -> str:
    """A self-contained page: plotly.js inline (opens offline), alerts, figure, escaped samples."""
    plot = fig.to_html(include_plotlyjs=True, full_html=False, config={"responsive": True})
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{PAGE_CSS}</style></head><body><h2>{html.escape(title)}</h2><p>{html.escape(subtitle)}</p>"
        f"<h3>Alerts</h3>{alerts_html(alerts)}{plot}<h3>Samples</h3>{samples}</body></html>\n"
    )


def _run_metrics(run: Any) -> tuple[str, list[dict]]:
    path = Path(getattr(run, "output_dir", run))
    file = path if path.suffix == ".jsonl" else path / "metrics.jsonl"
    if not file.exists():
        raise FileNotFoundError(f"{file} not found: plot_runs needs run folders (or RunResults) with metrics.jsonl")
    # a RunResult's name is its folder's; a Path's .name would be "metrics.jsonl" or the folder
    name = None if isinstance(run, (str, Path)) else getattr(run, "name", None)
    name = name or (path.parent.name if path.suffix == ".jsonl" else path.name)
    return str(name), read_jsonl(file)


def plot_runs(
    runs: Sequence[Any],
    metrics: Sequence[str] | None = None,
    *,
    smoothing: float = 0.0,
    max_points: int = DEFAULT_MAX_POINTS,
    title: str | None = None,
):
    """Overlay runs (RunResults, run folders or metrics.jsonl paths) metric by metric, one colour per run.

    `metrics`: the names to plot (default: the panels of the runs' stage that any run logged).
    Returns a static plotly Figure (a `LabFigure`: as a cell's value it survives HTML export).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    loaded, seen = [], {}
    for run in runs:
        name, rows = _run_metrics(run)
        seen[name] = seen.get(name, 0) + 1
        loaded.append((name if seen[name] == 1 else f"{name} ({seen[name]})", rows))
    logged = {k for _, rows in loaded for row in rows for k in row if k != "step"}
    if metrics is None:
        stage = infer_stage(logged) or "generic"
        metrics = [m for p in STAGE_PANELS[stage] for m in p.all_metrics if m in logged] or sorted(logged - {"epoch"})
    missing = [m for m in metrics if m not in logged]
    if missing:
        raise ValueError(f"no run logged {missing}; logged metrics: {sorted(logged)}")
    cols = 1 if len(metrics) == 1 else 2
    rows_n = math.ceil(len(metrics) / cols)
    fig = make_subplots(rows=rows_n, cols=cols, subplot_titles=list(metrics), vertical_spacing=min(0.3 / rows_n, 0.12))
    palette, shown = _palette(), set()
    for r, (name, rows) in enumerate(loaded):
        for i, metric in enumerate(metrics):
            points = [(row["step"], row[metric]) for row in rows if row.get(metric) is not None]
            if not points:
                continue
            steps, values = zip(*points)
            if smoothing > 0:
                values = ema(values, smoothing)
            x, y = decimate(steps, values, max_points)
            fig.add_trace(
                go.Scatter(
                    x=x.tolist(),
                    y=y.tolist(),
                    name=name,
                    legendgroup=name,
                    showlegend=name not in shown,
                    mode="lines",
                    line={"color": palette[r % len(palette)]},
                ),
                row=i // cols + 1,
                col=i % cols + 1,
            )
            shown.add(name)
    fig.update_layout(height=60 + 260 * rows_n, template="plotly_white", title=title)
    fig.update_yaxes(tickformat="~g", hoverformat=".4~g")
    from rlhf_lab.monitor.static import LabFigure

    return LabFigure(fig)  # a cell's value: drawn in JupyterLab and in exported HTML alike
