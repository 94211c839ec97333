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
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

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
    # fp16 loss scaling logs an inf grad norm on the (skipped) overflow steps of a healthy run, so
    # these metrics must stay non-finite for `window` logs in a row before they count.
    nonfinite_tolerant: tuple[str, ...] = ("grad_norm",)

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


@dataclass(frozen=True)
class Rule:
    name: str
    inputs: tuple[str, ...]  # the rule is checked only on logs that carry one of these
    cause: str
    remedy: str
    check: Callable[[Diagnostics], str | None]
    severity: str = "warning"
    persist: bool = True  # False: fire on the first log that shows it (a NaN needs no confirmation)


def _first(diag: Diagnostics, names: tuple[str, ...], *, baseline: bool = False) -> tuple[str, Track] | None:
    for name in names:
        track = diag.tracks.get(name)
        if track is not None and (track.has_baseline if baseline else track.full):
            return name, track
    return None


def check_kl_negative(diag: Diagnostics) -> str | None:
    found = _first(diag, ("objective/kl",))
    if found is None:
        return None
    name, kl = found
    t = diag.thresholds
    if kl.now < -t.kl_negative_tol and kl.now + 2 * kl.sem() < 0:
        return f"{name} averaged {kl.now:.3g} over the last {t.window} logs, below 0 beyond noise"
    return None


def check_kl_target(diag: Diagnostics) -> str | None:
    found = _first(diag, ("objective/kl",))
    if found is None:
        return None
    name, kl = found
    target = diag.kl_target()
    limit = diag.thresholds.kl_factor * target
    if kl.now > limit:
        return (
            f"{name} averaged {kl.now:.3g}, above {diag.thresholds.kl_factor:g} x its target {target:g} = {limit:.3g}"
        )
    return None


def check_clipfrac(diag: Diagnostics) -> str | None:
    found = _first(diag, ("policy/clipfrac_avg",))
    if found is None or found[1].now <= diag.thresholds.clipfrac_max:
        return None
    name, clip = found
    return f"{name} averaged {clip.now:.2f} over the last {diag.thresholds.window} logs (limit {diag.thresholds.clipfrac_max:g})"


def check_ratio(diag: Diagnostics) -> str | None:
    found = _first(diag, ("val/ratio",))
    if found is None or abs(found[1].now - 1) <= diag.thresholds.ratio_drift:
        return None
    return f"val/ratio averaged {found[1].now:.3f}, more than {diag.thresholds.ratio_drift:g} away from 1"


def check_length_hacking(diag: Diagnostics) -> str | None:
    length = _first(diag, ("completions/mean_length",), baseline=True)
    reward = _first(diag, ("objective/scores", "objective/rlhf_reward"), baseline=True)
    if length is None or reward is None:
        return None
    (_, ln), (rname, rw) = length, reward
    growth = ln.now / ln.start - 1 if ln.start > 0 else 0.0
    if growth > diag.thresholds.length_growth and rw.now > rw.start:
        return (
            f"mean completion length grew {growth:.0%} ({ln.start:.1f} -> {ln.now:.1f} tokens) while "
            f"{rname} rose {rw.start:.3g} -> {rw.now:.3g}"
        )
    return None


def check_entropy(diag: Diagnostics) -> str | None:
    found = _first(diag, ("objective/entropy", "policy/entropy_avg"), baseline=True)
    if found is None:
        return None
    name, ent = found
    if ent.start > 0 and ent.now < diag.thresholds.entropy_fraction * ent.start:
        return f"{name} fell to {ent.now / ent.start:.0%} of its starting value ({ent.start:.3g} -> {ent.now:.3g})"
    return None


def check_dpo_both_falling(diag: Diagnostics) -> str | None:
    names = ("rewards/chosen", "rewards/rejected", "rewards/margins")
    tracks = [diag.tracks.get(n) for n in names]
    if not all(t is not None and t.has_baseline for t in tracks):
        return None
    chosen, rejected, margin = tracks
    t = diag.thresholds
    grown = margin.now - margin.start
    # a small dip in the chosen reward while the margin widens a lot is normal DPO; a fall that is a
    # sizeable share of the margin's growth is the model pushing good answers down to win the margin
    fall = max(t.dpo_fall_min, t.dpo_fall_fraction * grown) + 2 * chosen.change_noise()
    if grown > t.dpo_fall_min and chosen.now < chosen.start - fall and rejected.now < rejected.start - t.dpo_fall_min:
        return (
            f"rewards/chosen fell {chosen.start:.3g} -> {chosen.now:.3g} and rewards/rejected fell "
            f"{rejected.start:.3g} -> {rejected.now:.3g} while rewards/margins grew to {margin.now:.3g}"
        )
    return None


def check_nonfinite(diag: Diagnostics) -> str | None:
    bad = []
    for name in diag.last_keys:
        track = diag.tracks[name]
        needed = diag.thresholds.window if name in diag.thresholds.nonfinite_tolerant else 1
        if track.nonfinite_run >= needed:
            bad.append(name)
    return f"non-finite value(s) logged for {', '.join(sorted(bad))}" if bad else None


RULES: tuple[Rule, ...] = (
    Rule(
        "non_finite",
        (),
        "A NaN or inf in a logged metric means the loss or gradients overflowed, so the "
        "weights are probably already corrupted.",
        "Lower the learning rate, enable gradient clipping (max_grad_norm), or use bf16/fp32 instead of fp16.",
        check_nonfinite,
        "error",
        persist=False,
    ),
    Rule(
        "kl_negative",
        ("objective/kl",),
        "The sampled KL estimate can only go negative on average when "
        "completions are not sampled from the policy being scored (a generation setting such as min_length, "
        "top-k or a different temperature).",
        "Sample with plain temperature sampling at the temperature "
        "used for scoring, without min_new_tokens, top_k or top_p.",
        check_kl_negative,
    ),
    Rule(
        "kl_above_target",
        ("objective/kl",),
        "The policy has moved far from the reference model, more than "
        "the KL penalty was set to allow, which usually precedes reward hacking.",
        "Raise kl_coef (or the adaptive controller's target horizon) or lower the learning rate.",
        check_kl_target,
    ),
    Rule(
        "clipfrac_high",
        ("policy/clipfrac_avg",),
        "A sustained clip fraction above the limit means each PPO "
        "update moves the policy too far from the one that sampled the batch.",
        "Lower the learning rate, use fewer PPO epochs per batch, or use larger mini-batches.",
        check_clipfrac,
    ),
    Rule(
        "ratio_drift",
        ("val/ratio",),
        "The new/old probability ratio drifting from 1 means the updates go off-policy within a batch.",
        "Lower the learning rate or the number of PPO epochs per batch, and "
        "check that rollouts and training use the same model and dtype.",
        check_ratio,
    ),
    Rule(
        "length_hacking",
        ("completions/mean_length", "objective/scores", "objective/rlhf_reward"),
        "Reward rising together with much longer completions suggests the policy exploits a length bias "
        "in the reward model.",
        "Add a length penalty or cap max_new_tokens, raise kl_coef, and check the "
        "reward model's length bias with lab.evaluate_reward_model.",
        check_length_hacking,
    ),
    Rule(
        "entropy_collapse",
        ("objective/entropy", "policy/entropy_avg"),
        "The policy's entropy collapsed, so it has become near-deterministic and will stop exploring.",
        "Raise kl_coef, lower the learning rate, or add an entropy bonus.",
        check_entropy,
    ),
    Rule(
        "dpo_both_rewards_falling",
        ("rewards/chosen", "rewards/rejected", "rewards/margins"),
        "DPO is widening the margin by pushing down the chosen responses too, which lowers the likelihood "
        "of good answers (likelihood displacement).",
        "Lower the learning rate or raise beta, or add an SFT "
        "term on the chosen responses (loss_type=['sigmoid', 'sft'] or rpo_alpha).",
        check_dpo_both_falling,
    ),
)


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
                alert = Alert(rule.name, int(step), message, rule.cause, rule.remedy, rule.severity)
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


__all__ = ["Alert", "Diagnostics", "RULES", "Rule", "Thresholds", "DEFAULT_KL_TARGET", "numeric"]
