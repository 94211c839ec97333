"""Experiment tracking: every metrics row a run logs, sent to TensorBoard, trackio or wandb as well.

`report_to` ("none" by default; "tensorboard", "trackio", "wandb", "all" or a list) works the same in
every stage. The trackers are fed from `Run.log`, the one place where every stage's metrics pass (TRL's
trainers through the run's metrics logger, our PPO engine directly), so a tracker holds the names and
steps of metrics.jsonl. TRL's own reporting callbacks are taken off the trainer
(`stages.common.run_trainer`): they would log the same numbers again, renamed ("train/loss").

Offline by default; nothing leaves the machine unless the tracker is configured for it:
- tensorboard: event files in the run folder, `<output_dir>/tensorboard/` (`tensorboard --logdir runs`);
- trackio: its local database (`TRACKIO_DIR`, default ~/.cache/huggingface/trackio), project
  `TRACKIO_PROJECT` or "rlhf-lab" (`trackio show --project rlhf-lab`);
- wandb: mode `WANDB_MODE` or "offline" (`wandb sync` uploads later), project `WANDB_PROJECT` or "rlhf-lab".

tensorboard and trackio come with `pip install 'rlhf-lab[track]'`; wandb with `pip install wandb`.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

TRACKERS = ("tensorboard", "trackio", "wandb")
PROJECT = "rlhf-lab"
INSTALL = {"tensorboard": "pip install 'rlhf-lab[track]'", "trackio": "pip install 'rlhf-lab[track]'"}


def tracker_names(report_to: Any) -> list[str]:
    """`report_to` as a checked list of trackers: "none" and None are [], "all" every installed one.

    Raises ValueError naming the value, the choices and the fix for an unknown or uninstalled tracker.
    """
    names = [report_to] if report_to is None or isinstance(report_to, str) else list(report_to)
    names = [n for n in names if n not in (None, "none", "")]
    if names == ["all"]:
        return [n for n in TRACKERS if installed(n)]
    for name in names:
        if name not in TRACKERS:
            raise ValueError(
                f"report_to {name!r} is not a tracker the lab writes to. Fix: use none, "
                f"{', '.join(TRACKERS)}, all, or a list of them."
            )
        if not installed(name):
            fix = INSTALL.get(name, f"pip install {name}")
            raise ValueError(f"report_to {name!r} needs the {name} package, which is not installed. Fix: {fix}.")
    return list(dict.fromkeys(names))


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def open_trackers(config: Any, folder: str | os.PathLike, describe: Callable[[Any], dict]) -> list[Tracker]:
    """One open tracker per name in `config.report_to`, for the run in `folder` (named `config.run_name`);
    `describe(config)`: the config's fields as plain values, which each tracker records with the run
    (called only when there is a tracker)."""
    folder = Path(folder)
    names = tracker_names(getattr(config, "report_to", None))
    if not names:
        return []
    name, values = getattr(config, "run_name", None) or folder.name, describe(config)
    return [TRACKER_CLASSES[n](folder, name, values) for n in names]


def close_trackers(trackers: list[Tracker]) -> None:
    """Close each tracker once (a run may end twice: a crash, then the caller's retry of finish)."""
    while trackers:
        trackers.pop().close()


class Tracker:
    """Takes metrics rows as metrics.jsonl holds them (`{"step": 3, "loss": 0.61, ...}`)."""

    def log(self, row: dict) -> None:
        values = {k: float(v) for k, v in row.items() if k != "step" and _is_number(v)}
        if values:
            self.write(int(row.get("step", 0)), values)

    def write(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class TensorBoardTracker(Tracker):
    """Event files in `<run folder>/tensorboard/`, one scalar per metric, flushed after each row."""

    def __init__(self, folder: Path, name: str, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        logdir = folder / "tensorboard"
        for old in logdir.glob("events.out.tfevents.*"):  # an earlier run's, when output_dir is reused
            old.unlink()
        self.writer = SummaryWriter(log_dir=str(logdir))
        lines = "\n".join(f"    {k}: {v!r}" for k, v in config.items())  # indented: Markdown code
        self.writer.add_text("config", f"run {name}\n\n{lines}")

    def write(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # a crash keeps every earlier step, as metrics.jsonl does

    def close(self) -> None:
        self.writer.close()


class TrackioTracker(Tracker):
    """A run in trackio's local database; the dashboard is `trackio show`."""

    def __init__(self, folder: Path, name: str, config: dict):
        import trackio

        project = os.environ.get("TRACKIO_PROJECT", PROJECT)
        self.run = trackio.init(
            project=project, name=name, config=config, embed=False, auto_log_cpu=False, auto_log_gpu=False
        )

    def write(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class WandbTracker(Tracker):
    """A wandb run, offline unless WANDB_MODE says otherwise; its files go in `<run folder>/wandb/`."""

    def __init__(self, folder: Path, name: str, config: dict):
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", PROJECT),
            name=name,
            config=config,
            dir=str(folder),
            mode=os.environ.get("WANDB_MODE", "offline"),
        )

    def write(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


TRACKER_CLASSES = {"tensorboard": TensorBoardTracker, "trackio": TrackioTracker, "wandb": WandbTracker}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
