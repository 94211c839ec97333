"""What the policy wrote, step by step: the monitor's samples table with a step selector, live in the
widget and in monitor.html (trl #2045, #6568 ask for this). Every cell is escaped text, never markup.

    history = SampleHistory()
    history.add(rows, default_step=3)     # PPO rows carry "update", GRPO/RLOO rows "step"
    history.steps                         # [1, 2, 3]
    history.rows(2)                       # step 2's rows: prompt, completion, reward, length
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

from rlhf_lab.monitor.plots import CSS, samples_html

STEP_KEYS = ("update", "step")
REWARD_KEYS = ("score", "reward", "gold", "rm_score")


def _text(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[-1], Mapping):  # chat messages: the last turn
        return str(value[-1].get("content", ""))
    return "" if value is None else str(value)


def shown(row: Mapping[str, Any]) -> dict[str, Any]:
    """The table's columns for one row: prompt, completion, reward (the score paid, where there is one),
    length in characters; columns a row does not have are left out."""
    out: dict[str, Any] = {}
    if "prompt" in row:
        out["prompt"] = _text(row["prompt"])
    completion = next((row[k] for k in ("completion", "chosen", "text") if k in row), None)
    if completion is not None:
        out["completion"] = _text(completion)
    reward = next((row[k] for k in REWARD_KEYS if isinstance(row.get(k), (int, float))), None)
    if reward is not None:
        out["reward"] = float(reward)
    if completion is not None:
        out["length"] = len(out["completion"])
    return out or dict(row)


class SampleHistory:
    """Every sample row a run showed, grouped by step (at most `max_steps` steps: the oldest go first)."""

    def __init__(self, max_steps: int = 1000) -> None:
        self.max_steps = max_steps
        self.by_step: dict[int, list[dict]] = {}
        self.unit = "step"
        self.picker = self.table = self.widget = None

    @property
    def steps(self) -> list[int]:
        return list(self.by_step)

    def add(self, rows: Iterable[Mapping[str, Any]], default_step: int = 0) -> None:
        """Rows with an "update" or "step" go to that step, others to `default_step`. A row already
        kept for its step is not kept twice (a stage re-sends its samples at the end)."""
        for row in rows:
            row = dict(row)
            key = next((k for k in STEP_KEYS if isinstance(row.get(k), int)), None)
            if key == "update":
                self.unit = "update"
            group = self.by_step.setdefault(int(row[key]) if key else int(default_step), [])
            if row not in group:
                group.append(row)
        for old in self.steps[: max(0, len(self.by_step) - self.max_steps)]:
            del self.by_step[old]
        self.refresh()

    def rows(self, step: int) -> list[dict]:
        return [shown(r) for r in self.by_step.get(step, [])]

    def latest(self, n: int) -> list[dict]:
        """The last `n` rows kept, as they came."""
        return [r for step in self.steps for r in self.by_step[step]][-n:] if n > 0 else []

    def label(self, step: int) -> str:
        return f"{self.unit} {step}"

    # ---- monitor.html ---------------------------------------------------------------------------

    def page_html(self) -> str:
        """A step selector and one table per step (the latest shown); the script only hides and shows."""
        if not self.by_step:
            return samples_html([])
        last = self.steps[-1]
        options = "".join(
            f"<option value='{s}'{' selected' if s == last else ''}>{html.escape(self.label(s))}</option>"
            for s in self.steps
        )
        pick = (
            "<label>samples at <select class='sample-step' onchange=\"for (const t of this.closest('div')"
            ".querySelectorAll('div[data-step]')) t.style.display = t.dataset.step === this.value ? '' : 'none'\">"
            f"{options}</select></label>"
        )
        tables = "".join(
            f"<div data-step='{s}'{'' if s == last else ' style=display:none'}>{samples_html(self.rows(s))}</div>"
            for s in self.steps
        )
        return f"<div class='sample-history'>{pick}{tables}</div>"

    # ---- the live widget ------------------------------------------------------------------------

    def build_widget(self):
        """A dropdown of steps over the chosen step's table; it follows the latest step unless a person
        picked an earlier one."""
        import ipywidgets as w

        self.picker = w.Dropdown(options=[], description="samples at", layout=w.Layout(width="220px"))
        self.table = w.HTML(samples_html([], style=True))
        self.picker.observe(lambda change: self._show(change["new"]), names=["value"])
        self.widget = w.VBox([self.picker, self.table])
        self.refresh()
        return self.widget

    def refresh(self) -> None:
        if self.picker is None:
            return
        options = [(self.label(s), s) for s in self.steps]
        if [v for _, v in options] != [v for _, v in self.picker.options]:
            following = self.picker.value is None or self.picker.value == (
                self.picker.options[-1][1] if self.picker.options else None
            )
            chosen = self.picker.value
            self.picker.options = options
            self.picker.value = options[-1][1] if following or chosen not in self.by_step else chosen
        self._show(self.picker.value)

    def _show(self, step: Any) -> None:
        if self.table is not None:
            self.table.value = f"<style>{CSS}</style>" + samples_html(self.rows(step) if step is not None else [])


__all__ = ["SampleHistory", "shown"]
