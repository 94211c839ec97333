"""One progress display per run: stage, step/total, elapsed time, ETA, the last key metrics, and what a
long step is doing right now (a PPO update's rollout tokens, its scoring and its epochs).

    ppo: update 3/100 | 1m12s elapsed, ETA 39m | scores 0.41, kl 0.032 | rollout 40/64 tokens

A stage with a monitor gets one (`stages.common.start_run`), and TRL's own printers and progress bars
make way for it (`stages.common.run_trainer`). Where it shows:
- a notebook with the live monitor: the monitor's status line;
- any other notebook kernel (papermill, nbconvert): one output line, updated in place, so the executed
  notebook keeps the last state rather than a scroll of dictionaries;
- a terminal: a tqdm bar on stderr; a log file (stderr not a terminal): one line per logged step.
"""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from transformers import TrainerCallback

from rlhf_lab.monitor.frontend import in_kernel

T = TypeVar("T")
SKIP = {"epoch", "grad_norm", "learning_rate", "lr", "episode", "num_tokens", "step"}


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class ProgressLine(TrainerCallback):
    """The progress display of one run; `monitor` (a LiveMonitor) names the stage and its key metrics.

    mode: "widget", "display", "tqdm", "lines" or "quiet"; None picks one (above). every_s: the fastest
    redraw for in-step updates (`on_progress`); step ends and logs always redraw.
    `history` keeps the last lines shown (what a test or a caller can read back).
    """

    def __init__(
        self,
        monitor: Any = None,
        *,
        name: str | None = None,
        unit: str | None = None,
        mode: str | None = None,
        every_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.monitor, self.mode, self.every_s, self.clock = monitor, mode, every_s, clock
        self.name, self.unit = name, unit
        self.history: list[str] = []
        self.started = self.clock()
        self.step, self.total, self.metrics, self.doing = 0, None, {}, "starting"
        self._first_step_at: tuple[float, int] | None = None
        self._last_shown = -float("inf")
        self._bar = None
        self._display_id = f"rlhf-lab-progress-{id(self)}-{time.time_ns()}"
        self._displayed = False
        if monitor is not None:
            monitor.progress = self  # the live monitor's status line shows this line

    # ---- events ---------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        if not getattr(state, "is_world_process_zero", True):
            self.mode = "quiet"  # under accelerate launch one process speaks
        self.total = getattr(state, "max_steps", None) or None
        self.step = int(getattr(state, "global_step", 0) or 0)
        self._first_step_at = (self.clock(), self.step)
        self.doing = "training"
        self.show(force=True)

    def on_step_begin(self, args, state, control, **kwargs):
        # GRPO/RLOO sample and score their groups inside the step: say so before the minutes it can take
        if self.stage() in ("grpo", "rloo"):
            self.doing = f"step {int(state.global_step) + 1}: sampling and scoring groups"
            self.show(force=self.mode in ("widget", "display", "tqdm"))

    def on_step_end(self, args, state, control, **kwargs):
        self.step, self.doing = int(state.global_step), ""
        self.show(force=self.mode in ("widget", "display", "tqdm"))

    def on_log(self, args, state, control, logs=None, **kwargs):
        values = {
            k: v
            for k, v in (logs or {}).items()
            if isinstance(v, (int, float))
            and not isinstance(v, bool)
            and k != "total_flos"
            and not k.startswith("train_")
        }  # the end-of-training summary log (train_runtime, total_flos...) leaves the last metrics shown
        if values:
            self.metrics.update(values)
            self.show(force=True)

    def on_progress(self, text: str) -> None:
        """What the current step is doing (the PPO engine calls this inside an update)."""
        self.doing = text
        self.show()

    def on_train_end(self, args, state, control, **kwargs):
        self.step, self.doing = int(state.global_step), "done"
        self.show(force=True)
        self.close()

    # ---- the line -------------------------------------------------------------------------------

    def stage(self) -> str:
        return self.name or getattr(self.monitor, "stage", None) or "training"

    def key_metrics(self) -> list[tuple[str, float]]:
        """The first metric with a value in each of the stage's first three panels, else the first three."""
        panels = getattr(self.monitor, "panels", None) or []
        names = []
        for panel in panels:
            name = next((m for m in panel.all_metrics if m in self.metrics), None)
            if name is not None:
                names.append(name)
            if len(names) == 3:
                break
        names = names or [k for k in self.metrics if k not in SKIP and not k.startswith("train_")][:3]
        return [(n, self.metrics[n]) for n in names]

    def line(self) -> str:
        unit = self.unit or ("update" if self.stage() == "ppo" else "step")
        parts = [f"{self.stage()}: {unit} {self.step}/{self.total or '?'}"]
        elapsed = self.clock() - self.started
        timing = f"{duration(elapsed)} elapsed"
        if self._first_step_at is not None and self.total and self.step > self._first_step_at[1]:
            began, first = self._first_step_at
            per_step = (self.clock() - began) / (self.step - first)
            timing += f", ETA {duration(per_step * (self.total - self.step))}"
        parts.append(timing)
        shown = self.key_metrics()
        if shown:
            parts.append(", ".join(f"{name.split('/')[-1]} {value:.4g}" for name, value in shown))
        if self.doing:
            parts.append(self.doing)
        return " | ".join(parts)

    def show(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_shown < self.every_s:
            return
        self._last_shown = now
        text = self.line()
        self.history = [*self.history[-49:], text]
        try:
            self._render(text, force)
        except Exception:  # a display problem must never stop training
            self.mode = "quiet"

    def _pick_mode(self) -> str:
        if getattr(self.monitor, "widget", None) is not None:
            return "widget"
        if in_kernel():
            return "display"
        return "tqdm" if sys.stderr.isatty() else "lines"

    def _render(self, text: str, forced: bool) -> None:
        self.mode = self.mode or self._pick_mode()
        if self.mode == "widget":
            self.monitor.widget.children[0].value = html.escape(text)
        elif self.mode == "display":
            from IPython.display import display, update_display

            bundle = {"text/plain": text}
            if self._displayed:
                update_display(bundle, raw=True, display_id=self._display_id)
            else:
                display(bundle, raw=True, display_id=self._display_id)
                self._displayed = True
        elif self.mode == "tqdm":
            self._tqdm(text)
        elif self.mode == "lines" and forced:  # a log file: the start, each log and the end, not every step
            print(text, file=sys.stderr, flush=True)

    def begin(self, total: int | None, doing: str = "starting") -> None:
        """Start counting outside a Trainer (`track`, label generation): shown at once."""
        self.total, self.step, self.doing, self._first_step_at = total, 0, doing, (self.clock(), 0)
        self.show(force=True)

    def advance(self, step: int, doing: str = "", *, force: bool = False) -> None:
        self.step, self.doing = step, doing
        self.show(force=force or step == self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _tqdm(self, text: str) -> None:
        from tqdm.auto import tqdm

        if self._bar is None:
            self._bar = tqdm(total=self.total, desc=self.stage(), file=sys.stderr, dynamic_ncols=True)
        self._bar.n = self.step
        self._bar.set_postfix_str(text.split(" | ", 2)[-1], refresh=True)


def track(items: Sequence[T], name: str, unit: str = "batch", *, every_s: float = 0.5) -> Iterator[T]:
    """Iterate `items` with a progress line ("evaluate: batch 3/8 | 12s elapsed, ETA 20s") that appears at
    once, for long calls outside training: sampling, scoring, generating labels."""
    line = ProgressLine(name=name, unit=unit, every_s=every_s)
    line.begin(len(items))
    try:
        for i, item in enumerate(items):
            yield item
            line.step = i + 1
            line.show()
        line.advance(len(items), "done")
    finally:
        line.close()


__all__ = ["ProgressLine", "duration", "track"]
