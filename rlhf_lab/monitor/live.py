"""The live training monitor: one `TrainerCallback` for every stage, in a notebook or headless.

    run = lab.dpo(policy, prefs, lab.DPOConfig(), callbacks=[lab.LiveMonitor()])
    mon = lab.LiveMonitor(stage="ppo", thresholds={"clipfrac_max": 0.25})
    mon.log(step, {"objective/kl": 0.4, ...})      # our PPO engine, or anything without a Trainer

A person at a notebook sees a FigureWidget (raw and smoothed traces by metric family, a dropdown to
add any metric), the alerts, a progress line and the samples by step; at the end any kernel keeps a
static copy of the charts (`monitor.static`). Everywhere it writes a self-contained `monitor.html`
(headless also every `html_every_s` s). `RLHF_LAB_MONITOR=html|live` overrides the detection.
Plotting never stops training: a failure is logged once and the monitor keeps collecting data.
"""

from __future__ import annotations

import html
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from rlhf_lab.files import atomic_write
from rlhf_lab.monitor.diagnostics import Alert, Diagnostics, Thresholds, numeric, run_context
from rlhf_lab.monitor.frontend import in_kernel, notebook_frontend
from rlhf_lab.monitor.panels import STAGE_PANELS, STAGES, Panel, infer_stage, normalize_panels
from rlhf_lab.monitor.plots import (
    DEFAULT_MAX_POINTS,
    MetricSeries,
    alerts_html,
    build_figure,
    page_html,
    trace_plan,
    trace_xy,
)
from rlhf_lab.monitor.samples import SampleHistory
from rlhf_lab.monitor.stop import stop_button

log = logging.getLogger(__name__)
# Logged once at the end of training, or bookkeeping: kept in history, never given their own panel.
NOT_PANELS = ("epoch", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second")


class LiveMonitor(TrainerCallback):
    """Watches a training run through `on_log`: plots, diagnostics (`alerts`) and a samples table.

    stage: "auto" (from the config class, else the metric names) or one of "ppo", "dpo", "reward", "sft".
    panels: replace the stage's panels: {"title": [metrics]} or a list of metric names / lists.
    smoothing: EMA weight for the smoothed traces (0: raw only). max_redraw_hz: live redraw limit.
    thresholds: `Thresholds` or a dict of its fields. output_dir: where monitor.html goes (default:
    the trainer's args.output_dir). live: force the widget (True) or headless (False); None detects.
    html_every_s: headless, rewrite monitor.html at most this often during training (None: at end only).
    clock: a time source (tests inject a fake one).
    """

    def __init__(
        self,
        stage: str = "auto",
        panels: Any = None,
        smoothing: float = 0.9,
        max_redraw_hz: float = 4,
        thresholds: Thresholds | Mapping[str, Any] | None = None,
        output_dir: str | Path | None = None,
        *,
        live: bool | None = None,
        html_every_s: float | None = 60.0,
        max_points: int = DEFAULT_MAX_POINTS,
        max_samples: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ):
        if stage != "auto" and stage not in STAGES:
            raise ValueError(f"stage must be 'auto' or one of {STAGES}, got {stage!r}")
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        if max_redraw_hz <= 0:
            raise ValueError(f"max_redraw_hz must be positive, got {max_redraw_hz}")
        self.fixed_stage = None if stage == "auto" else stage
        self.custom_panels = normalize_panels(panels) if panels is not None else None
        self.smoothing, self.max_redraw_hz, self.max_points = smoothing, max_redraw_hz, max_points
        self.thresholds = Thresholds.coerce(thresholds)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.finished_by_run = False  # a lab stage's Run draws the final page once, after its samples arrive
        self.progress = None  # a ProgressLine: the status line shows it
        self.live, self.html_every_s, self.max_samples, self.clock = live, html_every_s, max_samples, clock
        self.reset()

    def reset(self) -> None:
        """Forget everything logged: a monitor passed to a second run starts that run afresh."""
        self.stage = self.fixed_stage
        self.history: dict[str, MetricSeries] = {}
        self.sample_history = SampleHistory()
        self.diagnostics = Diagnostics(self.thresholds)
        self.extra_panels: list[Panel] = []
        self.step = 0
        self.stop_requested = False
        self.redraws = 0  # figure updates actually sent (the throttle's observable)
        self.failures = 0
        self.figure = None  # the FigureWidget, live mode only
        self.widget = None  # the VBox shown in the notebook
        self.html_path: Path | None = None
        self.is_main = True
        self._run_dir = self.output_dir
        self._started = False
        self._warned = False
        self._signature: Any = None
        self._last_draw = -math.inf
        self._last_html = self.clock()
        self._options: tuple[str, ...] = ()
        self._static = None  # the static copy of the charts in the notebook cell, once shown

    # ---- what the stages and the PPO engine use -------------------------------------------------

    @property
    def alerts(self) -> list[Alert]:
        return self.diagnostics.alerts

    def summary(self) -> dict:
        """JSON-safe, for summary.json: {"alerts": [{"rule", "step", "message", "cause", "remedy", "severity"}]}."""
        return {"alerts": self.diagnostics.summary()}

    @property
    def panels(self) -> list[Panel]:
        base = self.custom_panels if self.custom_panels is not None else STAGE_PANELS[self.stage or "generic"]
        return [*base, *self.extra_panels]

    def log(self, step: int, metrics: Mapping[str, Any]) -> list[Alert]:
        """Record one logged step (the `on_log` path too); returns the alerts it raised. Never raises."""
        try:
            if metrics.get("samples") is not None:  # our PPO engine logs its latest rollouts this way
                self.add_samples(metrics["samples"], step=step)
            values = numeric(metrics)
            if not values:
                return []
            self._start()
            self.step = int(step)
            for name, value in values.items():
                self.history.setdefault(name, MetricSeries()).append(self.step, value, self.smoothing)
            if self.stage is None:
                self.stage = infer_stage(self.history)
            new = self.diagnostics.update(self.step, values)
            for alert in new if self.is_main else ():
                log.warning(f"monitor alert {alert.rule} at step {alert.step}: {alert.message}. {alert.remedy}")
            self._maybe_draw()
            return new
        except Exception as err:  # the monitor must never take training down with it
            self._fail(err)
            return []

    def add_samples(self, rows: Any, step: int | None = None) -> None:
        """Keep sample rows (dicts or a DataFrame) by step (their "update"/"step", else `step` or the current)."""
        try:
            rows = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
            self.sample_history.add(rows, default_step=self.step if step is None else step)
        except Exception as err:
            self._fail(err)

    @property
    def samples(self) -> list[dict]:  # the latest max_samples rows
        return self.sample_history.latest(self.max_samples)

    def add_panel(self, metrics: str | Sequence[str], title: str | None = None) -> None:
        """Add a subplot for any logged metric(s); the dropdown calls this."""
        names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
        self.extra_panels.append(Panel(title or " / ".join(names), names))
        if self.live and self.widget is not None:
            self.redraw()

    def finish(self, samples: Any = None) -> Path | None:
        """Final redraw, monitor.html and, in a notebook, a static copy of the charts that exported notebooks
        keep (at train end; call again after adding samples: the copy is replaced, not repeated)."""
        if samples is not None:
            self.add_samples(samples)
        if self.live and self.widget is not None:
            self.redraw()
        path = self.write_html()
        if self.is_main and self.history and in_kernel():
            try:
                from rlhf_lab.monitor.static import StaticCopy

                self._static = self._static or StaticCopy()
                self._static.show(self.page_figure())
            except Exception as err:
                self._fail(err)
        return path

    def stop(self) -> None:
        """End the run after the step (PPO: update) in progress; its run folder is complete, with "stopped_at"."""
        self.stop_requested = True

    def to_frame(self):
        """The full (never decimated) history as a DataFrame, one row per logged step."""
        import pandas as pd

        frames = [pd.Series(s.values, index=s.steps, name=n).groupby(level=0).last() for n, s in self.history.items()]
        return pd.concat(frames, axis=1).rename_axis("step").reset_index() if frames else pd.DataFrame()

    # ---- TrainerCallback ------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        try:
            if self._started or self.history:
                self.reset()
            self.is_main = bool(getattr(state, "is_world_process_zero", True))
            if self.output_dir is None and getattr(args, "output_dir", None):
                self._run_dir = Path(args.output_dir)
            if self.fixed_stage is None:
                self.stage = infer_stage((), type(args).__name__)
            self.diagnostics.context = run_context(args, state, kwargs.get("model"))
            kl_target = getattr(args, "kl_target", None) or getattr(args, "target_kl", None)  # TRL's / PPOConfig's
            if isinstance(kl_target, (int, float)) and kl_target > 0:
                self.diagnostics.config_kl_target = float(kl_target)
            self._start()
        except Exception as err:
            self._fail(err)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.log(state.global_step, logs)

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop_requested:
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if not self.finished_by_run:
            self.finish()

    # ---- drawing --------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        if self.live is None:
            self.live = notebook_frontend()
        if self.live and self.is_main:
            try:
                self._build_widget()
            except Exception as err:  # no ipywidgets / anywidget: fall back to the HTML file
                self.live = False
                self._fail(err)

    def _build_widget(self) -> None:
        import ipywidgets as w

        picker = w.Dropdown(options=[], value=None, description="add metric")
        picker.observe(self._on_pick, names=["value"])
        self.widget = w.VBox(
            [
                w.HTML(self._status()),
                w.HBox([picker, stop_button(self.stop)]),
                w.HTML("<i>waiting for the first log...</i>"),
                w.HTML(alerts_html([])),
                self.sample_history.build_widget(),
            ]
        )
        from IPython import get_ipython

        if get_ipython() is not None:  # tests force live mode with no shell: build, do not print a repr
            from IPython.display import display

            display(self.widget)

    def _on_pick(self, change) -> None:
        if change.get("new"):
            try:
                self.add_panel(change["new"])
                change["owner"].value = None
            except Exception as err:  # Jupyter swallows observer errors: count and log them instead
                self._fail(err)

    def _maybe_draw(self) -> None:
        if not self.is_main:
            return
        now = self.clock()
        if self.live and now - self._last_draw >= 1.0 / self.max_redraw_hz:
            self.redraw()
        elif not self.live and self.html_every_s is not None and now - self._last_html >= self.html_every_s:
            self.write_html()

    def redraw(self) -> None:
        """Push the current data to the widget now (one batched update, or a rebuild when traces change)."""
        self._last_draw = self.clock()
        self.redraws += 1
        try:
            self._draw()
        except Exception as err:
            self._fail(err)

    def _draw(self) -> None:
        panels = self.panels
        plan = trace_plan(panels, self.history, self.smoothing)
        signature = (tuple(panels), plan, len(self.alerts))
        if self.figure is None or signature != self._signature:
            # new metrics, panels or alerts change the subplot grid: rebuild (a handful of times per run)
            self.figure = build_figure(
                panels,
                self.history,
                plan,
                widget=True,
                max_points=self.max_points,
                alert_steps=[a.step for a in self.alerts],
            )
            self._signature = signature
            if self.widget is not None:
                children = list(self.widget.children)
                children[2] = self.figure
                self.widget.children = children
        else:
            with self.figure.batch_update():
                for trace, spec in zip(self.figure.data, plan):
                    trace.x, trace.y = trace_xy(self.history[spec.metric], spec, self.max_points)
        if self.widget is not None:
            status, tools, _, alerts, _ = self.widget.children
            picker = tools.children[0]
            status.value = self._status()
            alerts.value = alerts_html(self.alerts)
            shown = {m for p in panels for m in p.all_metrics}
            options = tuple(sorted(n for n in self.history if n.removeprefix("eval_") not in shown))
            if options != self._options:
                self._options = picker.options = options
                picker.value = None

    def _status(self) -> str:
        name = self._run_dir.name if self._run_dir else "run"
        if self.progress is not None:
            return html.escape(f"{name}: {self.progress.line()}")
        return html.escape(
            f"{name}: {self.stage or 'stage not known yet'}, step {self.step}, "
            f"{len(self.history)} metrics, {len(self.alerts)} alerts"
        )

    def _page_panels(self) -> list[Panel]:
        # no dropdown in a file: every other metric with a curve gets its own panel
        panels = self.panels
        shown = {m.removeprefix("eval_") for p in panels for m in p.all_metrics}
        rest = [
            n
            for n, s in self.history.items()
            if n.removeprefix("eval_") not in shown
            and n not in NOT_PANELS
            and not n.startswith("train_")
            and len(s.values) > 1
        ]
        with_data = [p for p in panels if any(m in self.history or f"eval_{m}" in self.history for m in p.all_metrics)]
        return with_data + [Panel(n, (n,)) for n in rest]

    def page_figure(self):
        """The static figure of every panel with data (monitor.html's, and the notebook's copy)."""
        panels = self._page_panels()
        plan = trace_plan(panels, self.history, self.smoothing)
        title = f"{self._run_dir.name if self._run_dir else 'run'}: {self.stage or 'training'}, step {self.step}"
        alerts = [a.step for a in self.alerts]
        return build_figure(panels, self.history, plan, max_points=self.max_points, alert_steps=alerts, title=title)

    def write_html(self, path: str | Path | None = None) -> Path | None:
        """Write the self-contained monitor.html (main process only); returns its path, None if not written."""
        target = Path(path) if path is not None else (self._run_dir / "monitor.html" if self._run_dir else None)
        if target is None or not self.is_main:
            return None
        self._last_html = self.clock()
        try:
            fig = self.page_figure()
            name = target.parent.name
            subtitle = (
                f"stage: {self.stage or 'unknown'}; last step {self.step}; {len(self.history)} metrics; "
                f"written {datetime.now():%Y-%m-%d %H:%M:%S}"
            )
            text = page_html(
                fig,
                title=f"rlhf-lab monitor: {name}",
                subtitle=subtitle,
                alerts=self.alerts,
                samples=self.sample_history.page_html(),
            )
            atomic_write(target, text)  # a reader never sees half a page
            self.html_path = target
            return target
        except Exception as err:
            self._fail(err)
            return None

    def _fail(self, err: BaseException) -> None:
        self.failures += 1
        if not self._warned:
            self._warned = True
            log.warning(
                "training monitor: plotting failed (%s: %s); training continues, data is still collected",
                type(err).__name__,
                err,
                exc_info=err,
            )


__all__ = ["Alert", "LiveMonitor", "Thresholds", "notebook_frontend"]
