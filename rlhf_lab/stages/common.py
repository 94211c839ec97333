"""What every TRL-backed stage shares: lab config fields, the run folder, RunResult and load_run.

A stage function is: check the config and the data (before any model loads), resolve the
model, build the TRL trainer with our `RunLogger` callback, train, then `finish_run` writes
the weights, samples and summary. `load_run` reads any finished run back.
"""

from __future__ import annotations

import copy
import importlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from rlhf_lab import __version__
from rlhf_lab.config import ConfigError
from rlhf_lab.data import load_prompts
from rlhf_lab.models import ModelBundle, Policy, RewardModel, as_policy, load_policy, load_reward_model, tiny_model
from rlhf_lab.rewards import is_model_pair
from rlhf_lab.runs import RunFolder, read_jsonl
from rlhf_lab.tasks import Task, task


def gpu_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def model_field():
    """The `model` field every stage config has (a new Field each call, as dataclasses need)."""
    return field(
        default=None,
        metadata={
            "help": "What to start from when run from the CLI: None (embedded SmolLM2), a path, "
            "a hub id, a run folder, or 'tiny' (tiny random Llama)."
        },
    )


@dataclass
class LabFields:
    """Fields every lab stage config adds to its TRL config, and the lab's defaults for TRL's.

    Put first among the bases (`class SFTConfig(LabFields, trl.SFTConfig)`) so these win.
    """

    model: str | None = model_field()
    data: str = field(default="starter", metadata={"help": "Training data file, or 'starter' for the shipped set."})
    eval_data: str | None = field(default=None, metadata={"help": "Held-out data file, or 'starter'."})
    batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Effective batch per optimizer step; sets gradient_accumulation_steps = batch_size / "
            "(per_device_train_batch_size x processes), which must divide evenly."
        },
    )
    num_samples: int = field(default=4, metadata={"help": "Held-out completions written to samples.jsonl."})
    monitor: bool = field(
        default=True,
        metadata={
            "help": "Attach a LiveMonitor: live plots in a notebook, monitor.html in the run folder, "
            "alerts in summary.json."
        },
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank when run from the CLI; 0 trains every weight."})
    # TRL / transformers defaults that do not suit a lab on a laptop:
    report_to: Any = field(default="none", metadata={"help": "Integrations to report to (none by default)."})
    save_strategy: Any = field(default="no", metadata={"help": "Final weights are always saved; checkpoints: 'steps'."})
    logging_steps: float = field(default=5, metadata={"help": "Log every N optimizer steps."})
    activation_checkpointing: bool | None = field(default=False, metadata={"help": "Trade compute for memory."})
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Old name of activation_checkpointing."}
    )
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; default: on a GPU that has it."})

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = gpu_bf16()
        if not torch.cuda.is_available():
            # Without this, processes started by `accelerate launch` on a CPU-only machine each
            # train alone; with it, accelerate joins them in one gloo process group.
            self.use_cpu = True
        if self.run_name is None and self.output_dir:
            self.run_name = Path(self.output_dir).name
        super().__post_init__()
        if self.num_samples < 0:
            raise ConfigError(f"num_samples must be 0 or more, got {self.num_samples}")
        if self.lora_r < 0:
            raise ConfigError(f"lora_r must be 0 (off) or a positive LoRA rank, got {self.lora_r}")
        if self.batch_size is not None:
            per_step = self.per_device_train_batch_size * self.world_size
            if self.batch_size < 1 or self.batch_size % per_step:
                raise ConfigError(
                    f"batch_size={self.batch_size} is not a multiple of per_device_train_batch_size x processes "
                    f"= {self.per_device_train_batch_size} x {self.world_size} = {per_step}. Fix: set batch_size "
                    f"to a multiple of {per_step}, or change per_device_train_batch_size."
                )
            self.gradient_accumulation_steps = self.batch_size // per_step


@dataclass
class RunResult:
    """A finished (or reloaded) run: its model and tokenizer, metrics, summary and folder."""

    stage: str
    model: Any
    tokenizer: Any
    metrics: Any  # pandas.DataFrame, one row per logged step
    summary: dict
    output_dir: Path
    config: Any = None
    bundle: ModelBundle | None = None

    @property
    def name(self) -> str:
        return self.output_dir.name

    def __repr__(self) -> str:
        return f"RunResult(stage={self.stage!r}, output_dir='{self.output_dir}', steps={len(self.metrics)})"


class RunLogger(TrainerCallback):
    """Appends every `on_log` row to metrics.jsonl (main process only) and keeps them for the DataFrame."""

    def __init__(self, folder: RunFolder):
        self.folder = folder
        self.rows: list[dict] = []
        self.monitor = None  # the run's LiveMonitor, if any: finish_run adds its alerts to the summary

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
        self.rows.append(row)
        if state.is_world_process_zero:
            self.folder.log_metrics(row)


def start_run(config, callbacks: list | None = None) -> tuple[RunFolder, RunLogger, list]:
    """The run folder (emptied of an earlier run's files when output_dir is reused), the metrics
    logger, and the trainer's callbacks: the logger, a LiveMonitor unless config.monitor is off or
    the caller brought one (one monitor per run: one widget, one monitor.html), then the caller's."""
    from rlhf_lab.monitor.live import LiveMonitor

    folder = RunFolder(config.output_dir)
    if config.process_index == 0:
        folder.reset()
    logger = RunLogger(folder)
    callbacks = list(callbacks or [])
    logger.monitor = next((c for c in callbacks if isinstance(c, LiveMonitor)), None)
    if logger.monitor is None and config.monitor:
        logger.monitor = LiveMonitor()
        callbacks.append(logger.monitor)
    return folder, logger, [logger, *callbacks]


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
        if path is not None and (path / "run.json").exists():
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
    if (path / "run.json").exists() or (path / "ensemble.json").exists():
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


def finish_run(
    stage: str,
    trainer,
    bundle: ModelBundle,
    config,
    folder: RunFolder,
    logger: RunLogger,
    *,
    summary: dict,
    samples: list[dict],
    started: float,
) -> RunResult:
    """Save weights (adapters only with LoRA), config, samples and summary; return the RunResult."""
    import pandas as pd

    model_dir = folder.path / "model"
    trainer.save_model(str(model_dir))  # main process only; unwraps DDP/DeepSpeed/FSDP
    is_main = trainer.is_world_process_zero()
    if is_main:
        (model_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.yaml holds the same
    base = _base_for_adapter(bundle.model, folder) if is_main else None
    if is_main:
        bundle.tokenizer.save_pretrained(model_dir)
        if isinstance(bundle, RewardModel):
            bundle.save_normalization(model_dir)
        folder.write_config(config)
        folder.write_samples(samples)
    if logger.monitor is not None:
        # samples and post-training eval arrive after on_train_end: redraw monitor.html with them
        logger.monitor.finish(samples)
        summary = {**summary, "alerts": logger.monitor.summary()["alerts"]}
    final = {}
    for row in logger.rows:
        final.update({k: v for k, v in row.items() if k != "step"})
    full = {
        "stage": stage,
        "model": bundle.name,
        "steps": trainer.state.global_step,
        "wall_s": round(time.perf_counter() - started, 2),
        "final": final,
        **summary,
    }
    if not hasattr(bundle.model, "peft_config"):
        # The trained weights now live in run/model; a config still naming the starting checkpoint
        # would make a later LoRA stage record the untrained weights as its adapter's base.
        bundle.model.config._name_or_path = str(model_dir)
    if is_main:
        folder.write_summary(full)
        manifest = {
            "stage": stage,
            "kind": "reward" if isinstance(bundle, RewardModel) else "policy",
            "adapter": base is not None,
            "base": base,
            "rlhf_lab": __version__,
        }
        (folder.path / "run.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return RunResult(
        stage=stage,
        model=bundle.model,
        tokenizer=bundle.tokenizer,
        metrics=pd.DataFrame(logger.rows),
        summary=full,
        output_dir=folder.path,
        config=config,
        bundle=bundle,
    )


def load_run(path: str | Path) -> RunResult:
    """Reload a finished run: its model (same outputs as when it finished), metrics and summary."""
    import pandas as pd

    path = Path(path)
    if (path / "ensemble.json").exists():
        from rlhf_lab.stages.reward import load_reward_run

        return load_reward_run(path)
    if not (path / "run.json").exists():
        raise FileNotFoundError(f"{path} is not a finished run: run.json is missing (a run writes it last)")
    manifest = json.loads((path / "run.json").read_text())
    base = manifest.get("base")
    if base == "base":  # saved inside the run folder
        base = str(path / "base")
    loader = load_reward_model if manifest["kind"] == "reward" else load_policy
    bundle = loader(path / "model", adapter_base=base, dtype="auto")  # the dtype it was saved in
    bundle.name = path.name
    metrics = pd.DataFrame(read_jsonl(path / "metrics.jsonl")) if (path / "metrics.jsonl").exists() else pd.DataFrame()
    summary = json.loads((path / "summary.json").read_text())
    import yaml

    config = yaml.safe_load((path / "config.yaml").read_text())
    result = RunResult(
        stage=manifest["stage"],
        model=bundle.model,
        tokenizer=bundle.tokenizer,
        metrics=metrics,
        summary=summary,
        output_dir=path,
        config=config,
        bundle=bundle,
    )
    if manifest["kind"] == "reward":  # callable as rm(prompts, completions), like the run that made it
        from rlhf_lab.stages.reward import RewardRun

        return RewardRun.from_result(result)
    return result


def _base_for_adapter(model, folder: RunFolder) -> str | None:
    """With LoRA, where the base weights live: a loadable path or embedded name, else saved in base/."""
    if not hasattr(model, "peft_config"):
        return None
    from rlhf_lab.models import embedded

    name = getattr(model.get_base_model().config, "_name_or_path", "") or ""
    if name and (Path(name).is_dir() or embedded.resolve_name(name)):
        return name
    # An in-memory base (e.g. a tiny test model): keep a plain copy so the adapter can be reloaded.
    plain = copy.deepcopy(model).unload()  # LoRA layers removed, base weights as they were
    plain.save_pretrained(folder.path / "base", safe_serialization=True)
    return "base"
