"""Run configs: the fields and checks every stage config shares, YAML round trip, `--set k=v` overrides.

Two bases, one per kind of run: `RunConfig` (folder, name, seed, logging) is the base of configs
that are plain dataclasses, such as `PPOConfig`; the TRL stage configs get the same fields from
`transformers.TrainingArguments` instead. `LabConfig` is the mixin on top of either: the lab's own
fields (model, data, num_samples, monitor, lora_r, bf16) and their checks, so
`class PPOConfig(LabConfig, RunConfig)` and `class SFTConfig(TRLStageConfig, trl.SFTConfig)` (with
`TRLStageConfig(LabConfig)`) declare them once.

Checks are tables of `Rule`s (`positive_int`, `count`, `number`, `optional`, `one_of`): one line per
field, and every message names the field, the value it got and a fix.

The YAML helpers work on any dataclass (TRL's configs are dataclasses too), so one loader serves
every stage: `load_config(SFTConfig, "configs/sft.yaml", ["learning_rate=1e-4"])`.
An unknown key is an error with a did-you-mean, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import random
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rlhf_lab.defaults import derive_unset, is_derived
from rlhf_lab.tracking import tracker_names

T = TypeVar("T")
SECRETS = {"hub_token"}  # never written to a run folder


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message says where and how to fix it."""


def default_run_dir(stage: str) -> str:
    """`runs/<stage>-<YYYYmmdd-HHMMSS>`: a new folder per run unless output_dir is set."""
    return f"runs/{stage}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass
class RunConfig:
    """What every run has: its folder, its name, its seed and how it logs.

    `output_dir` is the run folder itself (as in transformers and TRL), where config.yaml,
    metrics.jsonl, samples.jsonl, summary.json and the weights go.
    """

    output_dir: str = field(
        default_factory=lambda: default_run_dir("run"),
        metadata={"help": "The run folder (default: runs/<stage>-<time>)."},
    )
    run_name: str | None = field(default=None, metadata={"help": "Display name; default: the run folder's name."})
    seed: int = field(default=0, metadata={"help": "Seed for Python, NumPy and torch."})
    logging_steps: int = field(default=10, metadata={"help": "Log metrics every N steps."})
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error."})

    def __post_init__(self):
        if self.logging_steps < 1:
            raise ConfigError(f"logging_steps must be at least 1, got {self.logging_steps}")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level must be debug, info, warning or error, got {self.log_level!r}")
        if self.run_name is None:
            self.run_name = Path(self.output_dir).name


@dataclass(frozen=True)
class Rule:
    """What one field's value must be: `ok(value)`, the phrase for the message, a note and a fix.

    The message reads "{field} must be {must_be}, got {value!r} ({note}). Fix: {fix}." where `{name}`
    in the fix stands for the field's name.
    """

    ok: Callable[[Any], bool]
    must_be: str
    fix: str = ""
    note: str = ""

    def check(self, name: str, value: Any) -> None:
        if self.ok(value):
            return
        note = f" ({self.note})" if self.note else ""
        fix = f" Fix: {self.fix.replace('{name}', name)}." if self.fix else ""
        raise ConfigError(f"{name} must be {self.must_be}, got {value!r}{note}.{fix}")


def check_rules(config: Any, rules: Mapping[str, Rule]) -> None:
    """Check each field named in `rules`; the first one that fails raises its ConfigError."""
    for name, rule in rules.items():
        rule.check(name, getattr(config, name))


def is_int(value: Any) -> bool:
    """A whole number (bools are not numbers here, though Python counts them as ints)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number that is not NaN or +-inf (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive_int(fix: str = "set {name} >= 1") -> Rule:
    return Rule(lambda v: is_int(v) and v >= 1, "a positive integer", fix)


def count(fix: str = "") -> Rule:
    """A whole number >= 0 (0 usually turns something off)."""
    return Rule(lambda v: is_int(v) and v >= 0, "an integer >= 0", fix)


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    above: bool = False,
    what: str = "",
    fix: str = "",
    note: str = "",
) -> Rule:
    """A finite number >= low (> low with `above`) and <= high; `what` starts the phrase ("a number")."""

    def ok(v: Any) -> bool:
        if not is_number(v):
            return False
        if low is not None and (v <= low if above else v < low):
            return False
        return high is None or v <= high

    if low is None:
        phrase = "a finite number"
    elif high is None:
        phrase = f"{'>' if above else '>='} {low}"
    else:
        phrase = f"in {'(' if above else '['}{low}, {high}]"
    return Rule(ok, f"{what} {phrase}".strip(), fix, note)


def optional(rule: Rule, meaning: str = "") -> Rule:
    """`rule`, or None (`meaning` says what None does, e.g. "no clipping")."""
    extra = f" ({meaning})" if meaning else ""
    return Rule(lambda v: v is None or rule.ok(v), f"{rule.must_be} or None{extra}", rule.fix, rule.note)


def one_of(choices: Iterable[str], fix: str = "") -> Rule:
    choices = tuple(choices)
    return Rule(lambda v: v in choices, f"one of {', '.join(map(repr, choices))}", fix)


def gpu_bf16() -> bool:
    """bf16 by default only where it is fast and exact enough: a CUDA GPU that supports it."""
    import torch  # here, not at the top: reading a config must not import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


LAB_RULES: dict[str, Rule] = {
    "num_samples": count("0 writes none"),
    "lora_r": count("0 trains every weight; a LoRA rank is e.g. 16"),
    # Every stage config has a learning rate (TRL's TrainingArguments or PPOConfig's own).
    "learning_rate": number(0, what="a number", note="0 freezes the weights", fix="e.g. learning_rate=1e-5"),
}


@dataclass
class LabConfig:
    """The lab's fields on every stage config, declared once, with their checks (`LAB_RULES`).

    A mixin: put it first among the bases, before `RunConfig` or a TRL config (through
    `TRLStageConfig`), so its fields and defaults win. Its `__post_init__` runs the base's.
    """

    model: str | None = field(
        default=None,
        metadata={
            "help": "What to start from when run from the CLI: None (embedded SmolLM2), a path, "
            "a hub id, a run folder, or 'tiny' (tiny random Llama)."
        },
    )
    data: str = field(
        default="starter",
        metadata={"help": "Training data file (prompts for PPO), or 'starter' for the shipped set."},
    )
    num_samples: int = field(
        default=4,
        metadata={"help": "Completions written to samples.jsonl (held-out ones; PPO: per update); 0: none."},
    )
    monitor: bool = field(
        default=True,
        metadata={
            "help": "Attach a LiveMonitor: live plots in a notebook, monitor.html in the run folder, "
            "alerts in summary.json."
        },
    )
    lora_r: int = field(
        default=0,
        metadata={
            "help": "LoRA rank (0: train every weight); a stage's `lora=` argument wins. With LoRA a "
            "reference model is the base with the adapters disabled: no second copy."
        },
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; default: on a GPU that supports it, never on CPU."}
    )
    report_to: Any = field(
        default="none",
        metadata={
            "help": "Trackers that get every metrics row too: none, tensorboard, trackio, wandb, all, or a "
            "list (offline; see rlhf_lab.tracking)."
        },
    )

    def __post_init__(self) -> None:
        derive_unset(self)
        if self.bf16 is None:
            self.bf16 = gpu_bf16()
        check_rules(self, LAB_RULES)
        try:
            self.report_to = tracker_names(self.report_to)  # a list, as TRL's TrainingArguments keeps it
        except ValueError as err:
            raise ConfigError(str(err)) from None
        parent = getattr(super(), "__post_init__", None)  # RunConfig's or TRL's, whichever comes next
        if parent is not None:
            parent()


def to_dict(config: Any) -> dict:
    """The config's fields as plain YAML-safe values."""
    if hasattr(config, "to_dict"):  # transformers' TrainingArguments: enums and nested configs made plain
        values = config.to_dict()
        # to_dict() masks every field ending in "_token" (eos_token, pad_token too); only secrets stay out
        for name in values:
            if name.endswith("_token"):
                values[name] = None if name in SECRETS else getattr(config, name)
        return {f.name: _plain(values[f.name]) for f in dataclasses.fields(config) if f.init and f.name in values}
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}


def to_yaml(config: Any, path: str | Path | None = None) -> str:
    """Dump the config as YAML; also write it to `path` when given."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def from_dict(cls: type[T], values: dict, *, source: str = "config") -> T:
    """Build `cls` from a dict, rejecting unknown keys with a did-you-mean."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in values:
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{key}' for {cls.__name__}{_did_you_mean(key, names)}")
    hints = _type_hints(cls)
    converted = {k: _coerce(v, hints.get(k), key=k, source=source) for k, v in values.items()}
    try:
        return cls(**converted)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from err


def from_yaml(cls: type[T], path: str | Path) -> T:
    """Read a YAML file into `cls`; errors name the file."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as err:
        raise ConfigError(f"config file not found: {path}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from err
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(values).__name__}")
    return from_dict(cls, values, source=str(path))


def apply_overrides(config: T, overrides: list[str] | None) -> T:
    """A copy of `config` with `key=value` overrides; values are parsed as YAML ("1e-4", "true", "[1, 2]")."""
    if not overrides:
        return config
    values = to_dict(config)
    # A default still to be derived from the model stays one: only what the user sets becomes explicit.
    derived = {f.name for f in dataclasses.fields(config) if f.init and is_derived(getattr(config, f.name, None))}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set seed=1")
        if key not in values:
            names = list(values)
            raise ConfigError(
                f"--set {item!r}: unknown key '{key}' for {type(config).__name__}{_did_you_mean(key, names)}"
            )
        values[key] = _parse_value(raw)
        derived.discard(key)
    return from_dict(type(config), {k: v for k, v in values.items() if k not in derived}, source="--set")


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """The one way configs are read: defaults, then a YAML file, then `--set` overrides."""
    config = from_yaml(cls, path) if path is not None else cls()
    return apply_overrides(config, overrides)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _did_you_mean(key: str, names: list[str]) -> str:
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(names))}"


def _parse_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _type_hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # exotic annotations in a third-party config: fall back to no coercion
        return {}


def _coerce(value: Any, hint: Any, *, key: str, source: str) -> Any:
    """Light type coercion from YAML values to the field's annotated type, with a clear error."""
    if value is None or hint is None:
        return value
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    options = [o for o in options if o is not type(None)]
    if any(o is Any or typing.get_origin(o) is not None for o in options):
        return value
    for option in options:
        if isinstance(value, option) and not (option is int and isinstance(value, bool)):
            return value
    for option in options:
        if option is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if option is float and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if option is str and isinstance(value, (int, float)):
            return str(value)
    wanted = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{source}: '{key}' must be {wanted}, got {value!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "value") and hasattr(type(value), "__members__"):  # an Enum
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, float):
        return float(value)  # a Derived default is a float subclass: YAML writes plain floats only
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
