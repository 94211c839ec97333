"""Defaults that learn: settings derived from the model and the data once they are known.

TRL's defaults suit billion-parameter models trained for thousands of steps (DPO's learning rate is
1e-6); the lab's stages usually train a 135M model for tens of steps on a CPU, where those values
learn nothing. So a stage config's learning rate defaults to `Derived(...)`: a float (TRL and
YAML read it as one) that `resolve(config, stage, model, lora=..., examples=...)` replaces, once
the model is loaded, with `learning_rate(stage, parameters, lora)`. A value the user sets is a
plain float and always wins; `resolved` in the run's summary says what was derived and why.

    learning_rate("dpo", 135e6)              # 2e-05
    learning_rate("dpo", 135e6, lora=True)   # 2e-04
    learning_rate("sft", 1.7e9)              # 5.6e-06: larger models take smaller steps

The rule: each stage's rate for a 135M model (measured on the embedded SmolLM2-135M, see
benchmarks/RESULTS.md), scaled by sqrt(135M / parameters), times 10 with LoRA (adapters start at
zero and carry few weights), rounded to two significant digits.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

REFERENCE_PARAMETERS = 135e6  # SmolLM2-135M, the embedded model the rates were measured on
LEARNING_RATES = {  # full fine-tuning of a 135M model for tens to hundreds of steps
    "sft": 2e-5,
    "reward": 1e-5,
    "dpo": 2e-5,
    "kto": 2e-5,
    "ppo": 1e-5,
    "grpo": 2e-5,  # one optimizer step per batch (PPO takes epochs x minibatches), so a larger step
    "rloo": 2e-5,
}
LORA_FACTOR = 10.0
SMALL_PREFERENCE_SET = 1000  # pairs: below this, a reward model gets more than one epoch
MAX_REWARD_EPOCHS = 3


class Derived(float):
    """A default to be derived from the model: reads as the 135M value until `resolve` replaces it."""

    def __repr__(self) -> str:
        return f"Derived({float(self)!r})"


def derived_rate(stage: str) -> Derived:
    """A stage config's learning-rate default: the 135M value, replaced by `resolve` once the model is known."""
    return Derived(LEARNING_RATES[stage])


def is_derived(value: Any) -> bool:
    return isinstance(value, Derived)


def derive_unset(config: Any) -> None:
    """None in a field whose default is derived asks for that default (`DPOConfig(learning_rate=None)`, a
    notebook parameter left at None): the derived default goes back in, to be resolved like any other."""
    for item in dataclasses.fields(config):
        if is_derived(item.default) and getattr(config, item.name) is None:
            setattr(config, item.name, item.default)


def learning_rate(stage: str, parameters: float, lora: bool = False) -> float:
    """The learning rate that learns in a stage's usual budget for a model of `parameters` weights."""
    if stage not in LEARNING_RATES:
        raise ValueError(f"no default learning rate for stage {stage!r}; stages: {', '.join(LEARNING_RATES)}")
    rate = LEARNING_RATES[stage] * math.sqrt(REFERENCE_PARAMETERS / max(parameters, 1.0))
    return _two_digits(rate * (LORA_FACTOR if lora else 1.0))


def reward_epochs(pairs: int) -> float:
    """Passes over a preference set: 1 from SMALL_PREFERENCE_SET pairs up, more for fewer (at most 3),
    so a reward model sees about as many pairs as it needs to leave chance accuracy."""
    if pairs >= SMALL_PREFERENCE_SET:
        return 1.0
    return float(min(MAX_REWARD_EPOCHS, math.ceil(SMALL_PREFERENCE_SET / max(pairs, 1))))


def count_parameters(model: Any) -> int:
    """All the model's weights (a LoRA model counts its base, which sets the scale of its updates)."""
    model = getattr(model, "policy", model)  # our PPO's actor-critic holds the policy
    return sum(p.numel() for p in model.parameters())


def describe_size(parameters: float) -> str:
    return f"{parameters / 1e9:.1f}B" if parameters >= 1e9 else f"{parameters / 1e6:.0f}M"


def resolve(config: Any, stage: str, model: Any, *, lora: bool = False, examples: int | None = None) -> dict:
    """Replace the config's derived defaults with values for this model (and data); returns what changed,
    for the run's summary. Explicit values are left alone."""
    changed: dict[str, Any] = {}
    parameters = count_parameters(model)
    if is_derived(getattr(config, "learning_rate", None)):
        config.learning_rate = learning_rate(stage, parameters, lora)
        changed["learning_rate"] = {
            "value": config.learning_rate,
            "why": f"{stage} on a {describe_size(parameters)}-parameter model{' with LoRA' if lora else ''}",
        }
    epochs = getattr(config, "num_train_epochs", None)
    if stage == "reward" and is_derived(epochs) and examples is not None and getattr(config, "max_steps", -1) <= 0:
        config.num_train_epochs = reward_epochs(examples)
        changed["num_train_epochs"] = {"value": config.num_train_epochs, "why": f"{examples} preference pairs"}
    return changed


def _two_digits(value: float) -> float:
    return float(f"{value:.2g}")
