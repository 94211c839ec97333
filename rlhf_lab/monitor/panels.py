"""Which metrics the monitor draws together, per stage: panels, and the stage a run's logs belong to.

    Panel("KL (right: KL coefficient)", ("objective/kl",), ("objective/kl_coef",))
    infer_stage(["reward", "frac_reward_zero_std"])   # "grpo"

Metric names are each trainer's own (TRL's for the TRL stages, TRL's PPO names for our PPO).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Panel:
    """One subplot: metrics on its left axis, and `secondary` ones (other units) on a right axis."""

    title: str
    metrics: tuple[str, ...]
    secondary: tuple[str, ...] = ()

    @property
    def all_metrics(self) -> tuple[str, ...]:
        return self.metrics + self.secondary


STAGE_PANELS: dict[str, tuple[Panel, ...]] = {
    "ppo": (
        Panel("reward", ("objective/scores", "objective/rlhf_reward")),
        Panel("KL (right: KL coefficient)", ("objective/kl",), ("objective/kl_coef",)),
        Panel("clip fraction", ("policy/clipfrac_avg", "val/clipfrac_avg")),
        Panel("approx KL", ("policy/approxkl_avg",)),
        Panel("entropy (right: per token)", ("objective/entropy",), ("policy/entropy_avg",)),
        Panel("completion length", ("completions/mean_length",)),
        Panel("losses (right: value)", ("loss/policy_avg",), ("loss/value_avg",)),
        Panel("explained variance", ("val/explained_variance",)),
    ),
    "grpo": (
        Panel("reward (right: std within groups)", ("reward",), ("reward_std",)),
        Panel("groups with equal rewards (no signal)", ("frac_reward_zero_std",)),
        Panel("KL per token", ("kl",)),
        Panel("entropy", ("entropy",)),
        Panel("clip ratios", ("clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean")),
        Panel(
            "completion length (right: truncated share)", ("completions/mean_length",), ("completions/clipped_ratio",)
        ),
        Panel("loss", ("loss",)),
    ),
    "dpo": (
        Panel("rewards", ("rewards/chosen", "rewards/rejected")),
        Panel("margin", ("rewards/margins",)),
        Panel("accuracy", ("rewards/accuracies",)),
        Panel("loss", ("loss",)),
    ),
    "reward": (Panel("loss", ("loss",)), Panel("accuracy", ("accuracy",)), Panel("margin", ("margin",))),
    "sft": (
        Panel("loss", ("loss",)),
        Panel("token accuracy", ("mean_token_accuracy",)),
        Panel("learning rate", ("learning_rate",)),
    ),
    "generic": (Panel("loss", ("loss",)), Panel("learning rate", ("learning_rate",))),
}
STAGE_PANELS["rloo"] = STAGE_PANELS["grpo"]  # the same metrics under TRL's names
STAGES = ("ppo", "grpo", "rloo", "dpo", "reward", "sft")


def infer_stage(metric_names: Iterable[str], config_class: str = "") -> str | None:
    """The stage whose panels fit: from the config's class name (DPOConfig...), else the metric names."""
    lowered = config_class.lower()
    for stage, marks in (
        ("ppo", ("ppo",)),
        ("grpo", ("grpo",)),
        ("rloo", ("rloo",)),
        ("dpo", ("dpo", "kto")),
        ("reward", ("reward",)),
        ("sft", ("sft",)),
    ):
        if any(m in lowered for m in marks):
            return stage
    names = set(metric_names)
    if any(n.startswith(("objective/", "policy/", "val/", "loss/policy")) for n in names):
        return "ppo"
    if "frac_reward_zero_std" in names:
        return "grpo"
    if names & {"rewards/chosen", "rewards/margins"}:
        return "dpo"
    if names & {"accuracy", "margin", "mean_reward"}:
        return "reward"
    if "mean_token_accuracy" in names:
        return "sft"
    return None


def normalize_panels(spec: Any) -> list[Panel]:
    """`panels=` as the user gives it: {"title": [metrics]}, or a list of metric names / lists / Panels."""
    if isinstance(spec, Mapping):
        return [Panel(str(t), tuple([m] if isinstance(m, str) else m)) for t, m in spec.items()]
    out = []
    for item in spec:
        if isinstance(item, Panel):
            out.append(item)
        elif isinstance(item, str):
            out.append(Panel(item, (item,)))
        else:
            out.append(Panel(" / ".join(item), tuple(item)))
    return out
