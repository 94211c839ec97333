"""What every stage shares: resolving its model, data, prompts and reward, and opening its run.

A stage function is: check the config and the data (before any model loads), resolve the model,
open the run (`start_run`: the run folder, its metrics logger and the monitor), build the trainer
with `run.callbacks`, train, then `run.finish(...)` writes the weights, samples and summary. The
run folder itself, and `load_run` that reads it back, live in `rlhf_lab.runs`.
"""

from __future__ import annotations

import copy
import importlib
import sys
from pathlib import Path
from typing import Any

from rlhf_lab.config import ConfigError
from rlhf_lab.data import load_prompts
from rlhf_lab.models import Policy, as_policy, load_policy, load_reward_model, tiny_model
from rlhf_lab.monitor.live import LiveMonitor
from rlhf_lab.monitor.progress import ProgressLine
from rlhf_lab.rewards import is_model_pair
from rlhf_lab.runs import Run, is_run, load_run
from rlhf_lab.tasks import Task, task
from rlhf_lab.threads import apply_threads
from rlhf_lab.tracking import close_trackers


def start_run(stage: str, config, callbacks: list | None = None) -> Run:
    """Open the stage's run: its folder (emptied of an earlier run's files when output_dir is reused),
    its metrics logger, and a LiveMonitor unless config.monitor is off or the caller brought one (one
    monitor per run: one widget, one monitor.html). Hand `run.callbacks` to the trainer.

    Every stage (PPOSession too) starts here, so torch's thread count is set here (`rlhf_lab.threads`): from the
    free CPUs, or as RLHF_LAB_THREADS / lab.set_threads say; summary.json records it under "threads"."""
    threads = apply_threads()
    callbacks = list(callbacks or [])
    monitor = next((c for c in callbacks if isinstance(c, LiveMonitor)), None)
    if monitor is None and config.monitor:
        monitor = LiveMonitor()
        callbacks.append(monitor)
    if monitor is not None:
        monitor.finished_by_run = True  # `run.finish` draws monitor.html once, with the samples
        callbacks.insert(callbacks.index(monitor) + 1, ProgressLine(monitor))  # after it: the widget exists
    run = Run(stage, config, callbacks=callbacks, monitor=monitor)
    run.threads = threads.as_dict()
    return run


TRL_PRINTERS = ("PrinterCallback", "ProgressCallback", "NotebookProgressCallback")
# transformers' own reporting for report_to: the run's trackers log the same rows under metrics.jsonl's names
TRL_REPORTERS = ("TensorBoardCallback", "TrackioCallback", "WandbCallback")


def run_trainer(run: Run, trainer: Any) -> None:
    """`trainer.train()` as every stage runs it (TRL's trainers and our PPO engine):

    - with a monitor, TRL's printers and progress bars make way for the run's one progress line;
    - a Stop (`monitor.stop()`) ends training after the current step, through the trainer's own control
      flow; `run.finish` then records "stopped_at";
    - a KeyboardInterrupt (the kernel's interrupt) ends training where it is; `run.finish` still writes the
      complete run folder, marked interrupted, and then raises KeyboardInterrupt again;
    - report_to is the run's trackers' job (`rlhf_lab.tracking`): transformers' reporting callbacks are
      removed; an error closes the trackers with what they logged so far.
    """
    handler = getattr(trainer, "callback_handler", None)
    if handler is not None:
        removed = TRL_REPORTERS + (TRL_PRINTERS if run.monitor is not None else ())
        for callback in [c for c in handler.callbacks if type(c).__name__ in removed]:
            trainer.remove_callback(callback)
    try:
        trainer.train()
    except KeyboardInterrupt:
        run.ended = "interrupted"
        print(f"{run.stage}: interrupted at step {trainer.state.global_step}; saving {run.path}", file=sys.stderr)
        return
    except BaseException:
        close_trackers(run.trackers)
        raise
    if run.monitor is not None and run.monitor.stop_requested:
        run.ended = "stopped"


def resolve_policy(model: Any, config) -> tuple[Policy, bool]:
    """The policy to train, as a private copy so the caller's model is never changed.

    Returns the bundle and whether the caller supplied it (then its original can serve as a
    frozen reference with no second load).
    """
    source = config.model if model is None else model
    if source == "tiny":
        return tiny_model("causal", seed=config.seed), False
    if isinstance(source, (str, Path)) or source is None:
        path = Path(source) if source is not None else None
        if path is not None and is_run(path):
            return load_run(path).bundle, False
        return load_policy(source), False
    given = as_policy(source)
    return Policy(model=copy.deepcopy(given.model), tokenizer=given.tokenizer, name=given.name), True


def lora_spec(lora: Any, config) -> Any:
    """`lora=` from the caller wins; else the config's lora_r (0: no adapters)."""
    if lora is not None:
        return lora or None
    return config.lora_r or None


def resolve_prompts(source: Any, stage: str = "PPO") -> list:
    """Prompts for an online stage, as strings or conversations: a file, a dataset, a list, "starter",
    a gold task or "task:NAME" (its training prompts)."""
    if isinstance(source, str) and source.startswith("task:"):  # a gold task's training prompts
        prompts = task(source.removeprefix("task:")).prompts("train")
    elif isinstance(source, Task):
        prompts = source.prompts("train")
    elif isinstance(source, (list, tuple)) and all(isinstance(p, (str, list, tuple)) for p in source):
        prompts = list(source)
    else:
        dataset = resolve_data(load_prompts, "prompts", source)
        prompts = list(dataset["prompt"]) if dataset is not None else []
    if not prompts:
        raise ConfigError(
            f"{stage} prompts are empty ({source!r}). Fix: pass a prompts file or a list of prompts "
            f"(rlhf-lab validate FILE --kind prompts shows what is wrong)."
        )
    return prompts


def resolve_reward(reward: Any) -> Any:
    """A reward as given, or loaded from a config's string: a reward run/model folder, `task:NAME` (a gold
    task's reward, see `lab.TASKS`) or 'module:function'. Lists are resolved item by item."""
    if isinstance(reward, (list, tuple)) and not is_model_pair(reward):
        return [resolve_reward(r) for r in reward]
    if not isinstance(reward, (str, Path)):
        return reward
    text = str(reward)
    if text.startswith("task:"):  # a gold task's programmatic reward, e.g. task:concise
        return task(text.removeprefix("task:"))
    if ":" in text and not Path(text).exists():
        module, _, name = text.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise ConfigError(
                f"reward {text!r}: cannot import {name!r} from {module!r} ({err}). Fix: use "
                f"'package.module:function' for a Python reward, or a reward run folder."
            ) from err
    path = Path(text)
    if is_run(path):
        return load_run(path)
    if path.is_dir():
        return load_reward_model(path)
    raise ConfigError(
        f"reward {text!r} is neither a folder nor 'module:function'. Fix: pass the folder of a "
        f"reward run (rlhf-lab reward --set output_dir=runs/reward) or a Python function."
    )


STARTER_EXTRA = ("category", "flaw")


def resolve_data(loader, kind: str, source: Any, split: str = "train"):
    """A validated dataset from anything `loader` reads, or the starter set for `source="starter"`."""
    if source is None:
        return None
    if isinstance(source, str) and source == "starter":
        from rlhf_lab.starter import starter_data

        dataset = starter_data(kind, split)
        return dataset.remove_columns([c for c in STARTER_EXTRA if c in dataset.column_names])
    return loader(source)


def policy_samples(policy: Policy, n: int, prompts: list | None = None, max_new_tokens: int = 64) -> list[dict]:
    """Greedy completions of `n` held-out prompts (starter test prompts by default) for samples.jsonl."""
    if n <= 0:
        return []
    if prompts is None:
        from rlhf_lab.starter import starter_data

        held_out = starter_data("prompts", "test")
        prompts = [row["prompt"] for row in held_out.select(range(min(n, len(held_out))))]
    prompts = list(prompts)[:n]
    completions = policy.generate(prompts, max_new_tokens=max_new_tokens)
    return [
        {"prompt": p if isinstance(p, str) else p[-1]["content"], "completion": c} for p, c in zip(prompts, completions)
    ]


def check_not_empty(dataset, what: str, source: Any) -> None:
    if dataset is None or len(dataset) == 0:
        raise ConfigError(
            f"{what} is empty ({source!r}): no training examples. Fix: pass a file or dataset "
            f"with at least one valid row (rlhf-lab validate FILE shows what is wrong)."
        )
