"""Training diagnostics: rules that read a stream of logged metrics and explain trouble in one sentence.

    diag = Diagnostics(Thresholds(clipfrac_max=0.25))
    for step, logs in stream:
        for alert in diag.update(step, logs):
            print(alert.message, alert.cause, alert.remedy)

Pure Python, no plotting: the live monitor, our PPO engine or a test can drive it. Each rule fires
once per run (the first time its condition holds), so a run that stays bad does not flood the
summary. Rules read "sustained" values, the mean of the last `window` finite logs, and compare
them with the run's own start (the mean of its first `window` logs), so one noisy batch never
fires one and the defaults stay silent on healthy runs.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from rlhf_lab import defaults
from rlhf_lab.monitor.rules import RULES, Rule

# TRL's AdaptiveKLController default target (trl<=0.11 PPOConfig.target), used when neither the
# run's config nor a logged `objective/kl_target` says otherwise.
DEFAULT_KL_TARGET = 6.0


@dataclass
class Thresholds:
    """When each rule fires. Every field is a plain number so a notebook can tweak one and rerun."""

    window: int = 5  # logs averaged for a "sustained" value, and for a run's starting baseline
    persist: int = 3  # a condition must hold on this many logs in a row (noise rarely lasts that long)
    kl_negative_tol: float = 0.05  # window-mean KL below -tol (and 2 standard errors below 0)
    kl_target: float | None = None  # None: logged objective/kl_target, else config kl_target, else 6
    kl_factor: float = 3.0  # fire when window-mean KL > kl_factor x target
    clipfrac_max: float = 0.3  # policy/clipfrac_avg window mean
    ratio_drift: float = 0.1  # |window-mean val/ratio - 1|
    length_growth: float = 0.5  # mean completion length up more than 50% while reward rises
    entropy_fraction: float = 0.25  # entropy below this fraction of its starting value
    dpo_fall_min: float = 0.2  # chosen and rejected rewards each down by this much, margin up by it
    dpo_fall_fraction: float = 0.25  # and chosen down by this fraction of the margin's growth
    zero_std_max: float = 0.8  # GRPO/RLOO: share of groups whose samples all got the same reward
    token_kl_max: float = 1.0  # GRPO/RLOO: mean per-token KL to the reference, in nats
    # not learning: DPO/KTO implicit rewards, a reward model's margin, PPO's per-sequence KL, GRPO's per-token KL
    still_reward: float = 0.01
    still_margin: float = 0.03
    still_kl: float = 0.01
    still_token_kl: float = 1e-4
    # fp16 loss scaling logs an inf grad norm on the (skipped) overflow steps of a healthy run, so
    # these metrics must stay non-finite for `window` logs in a row before they count.
    nonfinite_tolerant: tuple[str, ...] = ("grad_norm",)
    # NaN by definition in a healthy batch, never an overflow: the critic's explained variance when every
    # return is equal (all rewards the same, e.g. a person rating a whole batch 3)
    nonfinite_undefined: tuple[str, ...] = ("val/explained_variance",)

    @classmethod
    def coerce(cls, value: Thresholds | Mapping[str, Any] | None) -> Thresholds:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown threshold(s) {unknown}; known: {sorted(known)}")
        return cls(**value)


@dataclass
class Alert:
    """One diagnosed problem: which rule, at which step, what was seen, why it happens, what to try."""

    rule: str
    step: int
    message: str
    cause: str
    remedy: str
    severity: str = "warning"  # "warning" or "error"

    def to_dict(self) -> dict:
        return asdict(self)


class Track:
    """What the rules need from one metric, in constant memory: its first and last `window` finite values."""

    def __init__(self, window: int):
        self.window = window
        self.head: list[float] = []
        self.tail: deque[float] = deque(maxlen=window)
        self.count = 0  # finite values seen
        self.nonfinite_run = 0  # non-finite values in a row, up to now

    def add(self, value: float) -> None:
        if not math.isfinite(value):
            self.nonfinite_run += 1
            return
        self.nonfinite_run = 0
        self.count += 1
        if len(self.head) < self.window:
            self.head.append(value)
        self.tail.append(value)

    @property
    def full(self) -> bool:
        return len(self.tail) == self.window

    @property
    def now(self) -> float:
        return sum(self.tail) / len(self.tail)

    @property
    def start(self) -> float:
        return sum(self.head) / len(self.head)

    @property
    def has_baseline(self) -> bool:
        # current and starting windows must not overlap, or "grew since the start" compares a value with itself
        return self.count >= 2 * self.window

    def sem(self) -> float:
        """Standard error of the tail mean: how far from 0 noise alone could push it."""
        return _sem(self.tail)

    def change_noise(self) -> float:
        """Standard error of (now - start): a change smaller than ~2 of these may be noise."""
        return math.hypot(_sem(self.head), _sem(self.tail))


def _sem(values) -> float:
    n = len(values)
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / max(n - 1, 1) / n)


class Diagnostics:
    """Runs every rule on each logged step; `update` returns the alerts raised by that step."""

    def __init__(self, thresholds: Thresholds | Mapping[str, Any] | None = None, rules: tuple[Rule, ...] = RULES):
        self.thresholds = Thresholds.coerce(thresholds)
        self.rules = rules
        self.tracks: dict[str, Track] = {}
        self.alerts: list[Alert] = []
        self.fired: set[str] = set()
        self.streaks: dict[str, int] = {}  # logs in a row on which each rule's condition held
        self.last_keys: tuple[str, ...] = ()
        self.config_kl_target: float | None = None  # set from the run's config when it names one
        # what the run is (stage, learning_rate, steps, parameters, lora): remedies name values from it
        self.context: dict[str, Any] = {}

    def kl_target(self) -> float:
        logged = self.tracks.get("objective/kl_target")
        if logged is not None and logged.tail:
            return logged.tail[-1]
        if self.thresholds.kl_target is not None:
            return self.thresholds.kl_target
        return self.config_kl_target or DEFAULT_KL_TARGET

    def update(self, step: int, metrics: Mapping[str, float]) -> list[Alert]:
        window = self.thresholds.window
        for name, value in metrics.items():
            track = self.tracks.get(name)
            if track is None:
                track = self.tracks[name] = Track(window)
            track.add(float(value))
        self.last_keys = tuple(metrics)
        new = []
        for rule in self.rules:
            if rule.name in self.fired or (rule.inputs and not any(k in metrics for k in rule.inputs)):
                continue
            message = rule.check(self)
            streak = self.streaks[rule.name] = self.streaks.get(rule.name, 0) + 1 if message else 0
            if message and (not rule.persist or streak >= self.thresholds.persist):
                remedy = rule.remedy(self) if callable(rule.remedy) else rule.remedy
                alert = Alert(rule.name, int(step), message, rule.cause, remedy, rule.severity)
                self.fired.add(rule.name)
                new.append(alert)
        self.alerts.extend(new)
        return new

    def summary(self) -> list[dict]:
        return [a.to_dict() for a in self.alerts]


def numeric(logs: Mapping[str, Any]) -> dict[str, float]:
    """The plottable entries of a `logs` dict: real numbers (bools and strings dropped), as floats."""
    out = {}
    for key, value in logs.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = float(value)
        elif hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
            try:
                out[key] = float(value.item())
            except (TypeError, ValueError):
                continue
    return out


def run_context(args: Any, state: Any, model: Any) -> dict[str, Any]:
    """What the diagnostics' remedies need to know about the run: stage, learning rate, steps, model size."""
    name = type(args).__name__.lower()
    stage = next((s for s in defaults.LEARNING_RATES if name.startswith(s)), None)
    context = {
        "stage": stage,
        "learning_rate": getattr(args, "learning_rate", None),
        "steps": getattr(state, "max_steps", None),
    }
    if model is not None:
        inner = getattr(model, "policy", model)
        context.update(parameters=defaults.count_parameters(inner), lora=hasattr(inner, "peft_config"))
    return context


__all__ = ["Alert", "Diagnostics", "RULES", "Rule", "Thresholds", "DEFAULT_KL_TARGET", "numeric", "run_context"]
