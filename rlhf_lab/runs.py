"""Run folders: the one module that writes and reads them, so every stage's run reads back the same way.

    <run>/config.yaml     the config the run used
    <run>/metrics.jsonl   one row per logged step, appended and flushed as training goes
    <run>/samples.jsonl   prompts, completions (and rewards when there are any)
    <run>/summary.json    final figures
    <run>/monitor.html    the live monitor's page (the monitor writes it with `atomic_write`)
    <run>/README.md       the model card (`rlhf_lab.cards`)
    <run>/model/          safetensors weights (adapters only with LoRA; base/: a base not loadable by name)
    <run>/run.json        last: the kind ("policy", "reward", "ensemble") and what reloading needs

A stage opens a `Run` before it trains (that empties the folder of an earlier run's files), gives
`run.callbacks` to its trainer, and ends with `run.finish(trainer, bundle, summary=..., samples=...)`,
which writes the files and returns the `RunResult`. `load_run(path)` reads any finished run back
through `LOADERS`, keyed by run.json's kind. Every file but metrics.jsonl is replaced atomically
(`atomic_write`), so an interrupted run never leaves half a summary, config or manifest.

Foundation: imports config, files, tracking, cards, models and rewards only, and torch, transformers and
pandas only where they are needed.
"""

from __future__ import annotations

import copy
import functools
import gc
import json
import math
import os
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhf_lab import __version__
from rlhf_lab.cards import model_card
from rlhf_lab.config import to_dict, to_yaml
from rlhf_lab.files import atomic_write, finite, read_json, read_jsonl, write_json, write_jsonl
from rlhf_lab.tracking import close_trackers, open_trackers

if TYPE_CHECKING:
    from rlhf_lab.models import ModelBundle
    from rlhf_lab.rewards import RewardEnsemble

MANIFEST = "run.json"
# Removed when a folder is reused, run.json first: a half-replaced run never looks finished.
RUN_FILES = (MANIFEST, "metrics.jsonl", "summary.json", "samples.jsonl", "config.yaml", "monitor.html", "README.md")
LEGACY_ENSEMBLE = "ensemble.json"  # how ensembles marked a finished folder before run.json had kind "ensemble"


@dataclass(eq=False)
class RunResult:
    """A finished (or reloaded) run: its model and tokenizer, metrics, summary and folder.

    `offload()` lets the model leave memory: the run folder holds its weights, and `model` / `bundle` load
    them back when used, held only while something uses them (a weak reference), so a notebook that offloads
    its runs keeps one model in memory at a time. The tokenizer stays.
    """

    stage: str
    model: Any
    tokenizer: Any
    metrics: Any  # pandas.DataFrame, one row per logged step
    summary: dict
    output_dir: Path
    config: Any = None
    bundle: ModelBundle | None = field(default_factory=lambda: None)  # no class attribute: see __getattr__

    @property
    def name(self) -> str:
        return self.output_dir.name

    def offload(self) -> RunResult:
        """Drop the model from memory (returns the run). It comes back from `<run>/model` on use, the same
        weights as when the run finished; changes made to the model in memory since then are lost."""
        if not (self.output_dir / MANIFEST).exists():
            raise ValueError(
                f"{self.output_dir} holds no finished run, so the model could not come back. Fix: offload a run "
                "a stage returned (or lab.load_run), whose folder has run.json and model/"
            )
        if self.offloaded:  # already out: what was loaded back is held weakly, and goes when unused
            return self
        shell = self.__dict__.pop("bundle", None)
        self.__dict__["_shell"] = None if shell is None else replace(shell, model=None)
        self.__dict__["_loaded"] = lambda: None  # nothing loaded back yet
        del self.__dict__["model"]
        gc.collect()  # the memory goes now, not at some later collection
        return self

    @property
    def offloaded(self) -> bool:
        return "_loaded" in self.__dict__

    def __getattr__(self, name: str) -> Any:  # only for names not set on the instance: model and bundle, offloaded
        if name not in ("model", "bundle") or "_loaded" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        model = self._loaded()
        if model is None:
            model = _load_bundle(self.output_dir, read_manifest(self.output_dir)).model
            self.__dict__["_loaded"] = weakref.ref(model)
        shell = self.__dict__["_shell"]
        return model if name == "model" else None if shell is None else replace(shell, model=model)

    def __repr__(self) -> str:
        return f"RunResult(stage={self.stage!r}, output_dir='{self.output_dir}', steps={len(self.metrics)})"


class RewardRun(RunResult):
    """A reward run that scores like its model: `run(prompts, completions) -> list[float]`."""

    def score(self, prompts, completions, **kwargs) -> list[float]:
        return self.bundle.score(prompts, completions, **kwargs)

    __call__ = score

    def __repr__(self) -> str:
        return f"RewardRun(output_dir='{self.output_dir}', steps={len(self.metrics)})"


class Run:
    """One run's folder while its stage trains: the metrics logger and its rows, then the files.

    `callbacks` are the trainer's: the metrics logger first, then the caller's (with `monitor`,
    the run's LiveMonitor if it has one, among them; its alerts go into summary.json). Only the
    main process writes files under `accelerate launch`; every process keeps the rows.
    """

    def __init__(self, stage: str, config: Any, *, callbacks: Iterable = (), monitor: Any = None):
        self.stage = stage
        self.config = config
        self.path = Path(config.output_dir)
        self.started = time.perf_counter()
        self.is_main = getattr(config, "process_index", 0) == 0
        self.monitor = monitor
        self.ended: str | None = None  # "stopped" (monitor.stop()) or "interrupted" (KeyboardInterrupt)
        self.threads: dict | None = None  # torch's thread count and why (`rlhf_lab.threads`), for summary.json
        self.rows: list[dict] = []
        self.logger = _metrics_logger_class()(self)
        self.callbacks = [self.logger, *callbacks]
        self.path.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            for name in RUN_FILES:  # an earlier run's files, when output_dir is reused
                (self.path / name).unlink(missing_ok=True)
        # report_to's trackers (TensorBoard, trackio, wandb) get every row metrics.jsonl gets
        self.trackers = open_trackers(config, self.path, to_dict) if self.is_main else []

    def log(self, row: dict) -> None:
        """Keep one metrics row, append it to metrics.jsonl (flushed at once: a crash keeps every earlier step)
        and send it to the run's trackers."""
        self.rows.append(row)
        if self.is_main:
            with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(finite(row), ensure_ascii=False) + "\n")
                handle.flush()
        for tracker in self.trackers:
            tracker.log(row)

    def write_files(self, *, samples: list[dict] | None = None, summary: dict | None = None) -> None:
        """config.yaml, then samples.jsonl and summary.json when given (main process only)."""
        if not self.is_main:
            return
        atomic_write(self.path / "config.yaml", to_yaml(self.config))
        if samples is not None:
            write_jsonl(self.path / "samples.jsonl", samples)
        if summary is not None:
            write_json(self.path / "summary.json", summary)

    def write_manifest(self, kind: str, **entries: Any) -> None:
        """run.json, last of all: its presence says the run finished and how to reload it."""
        if self.is_main:
            write_json(self.path / MANIFEST, {"stage": self.stage, "kind": kind, **entries, "rlhf_lab": __version__})

    def finish(self, trainer: Any, bundle: ModelBundle, *, summary: dict, samples: list[dict]) -> RunResult:
        """Save the weights (adapters only with LoRA), config, samples, summary and run.json; return the result.

        `trainer` is TRL's or our PPO engine: anything with `save_model(path)` and `state.global_step`.
        """
        import pandas as pd

        from rlhf_lab.models import RewardModel
        from rlhf_lab.models.bundles import NORMALIZATION_FILE

        model_dir = self.path / "model"
        trainer.save_model(str(model_dir))  # main process only; unwraps DDP/DeepSpeed/FSDP
        base = None
        if self.is_main:
            (model_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.yaml holds the same
            base = _base_for_adapter(bundle.model, self.path)
            bundle.tokenizer.save_pretrained(model_dir)
            if isinstance(bundle, RewardModel):  # what RewardModel.save_normalization writes, but atomically
                write_json(model_dir / NORMALIZATION_FILE, {"offset": bundle.offset, "scale": bundle.scale})
            self.write_files(samples=samples)
        if self.monitor is not None:
            # samples and post-training eval arrive after on_train_end: redraw monitor.html with them
            self.monitor.finish(samples)
            summary = {**summary, "alerts": self.monitor.summary()["alerts"]}
        final = {k: v for row in self.rows for k, v in row.items() if k != "step"}  # each metric's last value
        ended = {"stopped_at": trainer.state.global_step, "interrupted": self.ended == "interrupted"}
        full = {
            "stage": self.stage,
            "model": bundle.name,
            "steps": trainer.state.global_step,
            "wall_s": round(time.perf_counter() - self.started, 2),
            "final": final,
            **summary,
            **(ended if self.ended else {}),
            **({"threads": self.threads} if self.threads else {}),
        }
        if not hasattr(bundle.model, "peft_config"):
            # The trained weights now live in run/model; a config still naming the starting checkpoint
            # would make a later LoRA stage record the untrained weights as its adapter's base.
            bundle.model.config._name_or_path = str(model_dir)
        kind = "reward" if isinstance(bundle, RewardModel) else "policy"
        if self.is_main:
            write_json(self.path / "summary.json", full)
            atomic_write(self.path / "README.md", model_card(full, self.config))  # the model card
            self.write_manifest(kind, adapter=base is not None, base=base)
        close_trackers(self.trackers)
        if self.ended == "interrupted":  # the folder is complete: now stop the notebook as an interrupt does
            raise KeyboardInterrupt(f"{self.stage} interrupted at step {full['steps']}; lab.load_run('{self.path}')")
        return (RewardRun if kind == "reward" else RunResult)(
            stage=self.stage,
            model=bundle.model,
            tokenizer=bundle.tokenizer,
            metrics=pd.DataFrame(self.rows),
            summary=full,
            output_dir=self.path,
            config=self.config,
            bundle=bundle,
        )

    def finish_ensemble(self, ensemble: RewardEnsemble, *, samples: list[dict]) -> None:
        """An ensemble's top folder: config, samples, its members' metrics (with a `member` column),
        summary, and last run.json of kind "ensemble" naming the member folders."""
        for row in ensemble.metrics.to_dict("records"):  # the frame fills keys a row lacks with NaN
            self.log({k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))})
        self.write_files(samples=samples, summary=ensemble.summary)
        members = [Path(m.output_dir).name for m in ensemble.members]
        self.write_manifest("ensemble", members=members, aggregate=ensemble.aggregate, **{"lambda": ensemble.lam})
        close_trackers(self.trackers)


@functools.cache
def _metrics_logger_class() -> type:
    # Defined on first use: subclassing transformers' TrainerCallback at import time would make every
    # module that only writes a file atomically (the regression runner, the label store) import
    # transformers and torch.
    from transformers import TrainerCallback

    class MetricsLogger(TrainerCallback):
        """Sends every `on_log` row (numbers only) to its Run."""

        def __init__(self, run: Run):
            self.run = run

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                self.run.log(
                    {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
                )

    return MetricsLogger


def _base_for_adapter(model: Any, folder: Path) -> str | None:
    """With LoRA, where the base weights live: a loadable path or embedded name, else saved in base/."""
    if not hasattr(model, "peft_config"):
        return None
    from rlhf_lab.models import embedded

    name = getattr(model.get_base_model().config, "_name_or_path", "") or ""
    if name and (Path(name).is_dir() or embedded.resolve_name(name)):
        return name
    # An in-memory base (e.g. a tiny test model): keep a plain copy so the adapter can be reloaded.
    plain = copy.deepcopy(model).unload()  # LoRA layers removed, base weights as they were
    plain.save_pretrained(folder / "base", safe_serialization=True)
    return "base"


def is_run(path: str | os.PathLike) -> bool:
    """Whether `path` is a finished run folder (of any kind)."""
    path = Path(path)
    return (path / MANIFEST).exists() or (path / LEGACY_ENSEMBLE).exists()


def read_manifest(path: str | os.PathLike) -> dict:
    """run.json's content; a clear FileNotFoundError when the folder holds no finished run."""
    path = Path(path)
    if (path / MANIFEST).exists():
        return read_json(path / MANIFEST)
    if (path / LEGACY_ENSEMBLE).exists():
        return {"stage": "reward", "kind": "ensemble", **read_json(path / LEGACY_ENSEMBLE)}
    raise FileNotFoundError(
        f"{path} is not a finished run: {MANIFEST} is missing (a run writes it last, so a run that "
        f"stopped early has none). Fix: pass the folder of a run that finished, or train it again."
    )


def load_run(path: str | os.PathLike) -> RunResult | RewardEnsemble:
    """Reload a finished run: its model (same outputs as when it finished), metrics and summary.

    A reward run comes back as a `RewardRun`, an ensemble's folder as a `RewardEnsemble`.
    """
    path = Path(path)
    manifest = read_manifest(path)
    kind = manifest.get("kind")
    if kind not in LOADERS:
        raise ValueError(
            f"{path / MANIFEST}: unknown run kind {kind!r}; this rlhf-lab reads {', '.join(map(repr, LOADERS))}. "
            f"Fix: reload it with the rlhf-lab version that wrote it ({manifest.get('rlhf_lab', 'unknown')})."
        )
    return LOADERS[kind](path, manifest)


def load_reward_run(path: str | os.PathLike) -> RewardRun | RewardEnsemble:
    """Reload a reward run folder, single model or ensemble, with its saved normalization."""
    kind = read_manifest(path).get("kind")
    if kind not in ("reward", "ensemble"):
        raise ValueError(
            f"{path} holds a {kind} run, not a reward model. Fix: pass a reward run's folder "
            f"(rlhf-lab reward, lab.train_reward_model), or reload this one with lab.load_run."
        )
    return load_run(path)


def member_metrics(members: list[RunResult]) -> Any:
    """The members' metrics in one frame, with a `member` column (their index)."""
    import pandas as pd

    return pd.concat([m.metrics.assign(member=i) for i, m in enumerate(members)], ignore_index=True)


def _load_bundle(path: Path, manifest: dict) -> ModelBundle:
    from rlhf_lab.models import load_policy, load_reward_model

    base = manifest.get("base")
    if base == "base":  # saved inside the run folder
        base = str(path / "base")
    loader = load_reward_model if manifest["kind"] == "reward" else load_policy
    bundle = loader(path / "model", adapter_base=base, dtype="auto")
    bundle.name = path.name
    return bundle


def _load_model_run(path: Path, manifest: dict) -> RunResult:
    import pandas as pd

    reward = manifest["kind"] == "reward"
    bundle = _load_bundle(path, manifest)
    metrics = pd.DataFrame(read_jsonl(path / "metrics.jsonl")) if (path / "metrics.jsonl").exists() else pd.DataFrame()
    # A reward run is callable as rm(prompts, completions), like the run that made it.
    return (RewardRun if reward else RunResult)(
        stage=manifest["stage"],
        model=bundle.model,
        tokenizer=bundle.tokenizer,
        metrics=metrics,
        summary=read_json(path / "summary.json"),
        output_dir=path,
        config=_read_config(path),
        bundle=bundle,
    )


def _load_ensemble(path: Path, manifest: dict) -> RewardEnsemble:
    from rlhf_lab.rewards import RewardEnsemble

    members = [load_reward_run(path / name) for name in manifest["members"]]
    return RewardEnsemble(
        members=members,
        aggregate=manifest["aggregate"],
        lam=manifest["lambda"],
        summary=read_json(path / "summary.json"),
        metrics=member_metrics(members),
        output_dir=path,
        config=_read_config(path),
    )


def _read_config(path: Path) -> dict:
    import yaml

    return yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))


# run.json's "kind" -> the function that reloads such a folder
LOADERS: dict[str, Callable[[Path, dict], Any]] = {
    "policy": _load_model_run,
    "reward": _load_model_run,
    "ensemble": _load_ensemble,
}
