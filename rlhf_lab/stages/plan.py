"""What a stage is about to do, before it does it: `lab.suggest(config, model, data)`.

    plan = lab.suggest(lab.DPOConfig(), policy, prefs)
    print(plan)          # dpo: 297 examples -> 38 optimizer steps at learning_rate 2e-05 (derived: ...), ~6 min
    plan.warnings        # ["only 4 optimizer steps: ..."] when the plan cannot learn

The effective settings (a derived learning rate resolved for this model), the optimizer steps they
imply, a rough wall-time estimate for this machine (one timed forward pass of the model, scaled by
the tokens a step processes or generates), and warnings when the plan cannot learn. Every stage
prints its plan when it starts and keeps it in summary.json["plan"].
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

from rlhf_lab import defaults
from rlhf_lab.data import fingerprint

MIN_STEPS = 10  # fewer optimizer steps than this rarely move a model measurably at the default rates
GENERATING = ("ppo", "grpo", "rloo")
PAIRWISE = ("reward", "dpo", "kto")


@dataclass
class Plan:
    stage: str
    examples: int | None
    optimizer_steps: int | None
    learning_rate: float
    derived: dict
    seconds: float | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "examples": self.examples,
            "optimizer_steps": self.optimizer_steps,
            "learning_rate": self.learning_rate,
            "derived": self.derived,
            "estimated_seconds": None if self.seconds is None else round(self.seconds),
            "warnings": self.warnings,
        }

    def __str__(self) -> str:
        lr = f"learning_rate {self.learning_rate:g}"
        if "learning_rate" in self.derived:
            lr += f" (derived: {self.derived['learning_rate']['why']})"
        head = f"{self.stage}: " + (f"{self.examples} examples -> " if self.examples is not None else "")
        steps = "?" if self.optimizer_steps is None else self.optimizer_steps
        eta = "" if self.seconds is None else f", roughly {_duration(self.seconds)} on this machine"
        return "\n".join([f"{head}{steps} optimizer steps at {lr}{eta}", *(f"warning: {w}" for w in self.warnings)])


def suggest(
    config: Any, model: Any = None, data: Any = None, *, stage: str | None = None, time_it: bool = True
) -> Plan:
    """The plan for `config` on `model` (a bundle or module; None: not known yet) and `data` (a dataset, a
    list, or a count of examples): effective settings, optimizer steps, a time estimate and warnings."""
    stage = stage or stage_of(config)
    config = copy.copy(config)  # resolving derived values here must not change the caller's config
    weights = model.model if hasattr(model, "tokenizer") else model  # a bundle or run, or the module itself
    examples = data if isinstance(data, int) or data is None else len(data)
    derived = defaults.resolve(config, stage, weights, examples=examples) if weights is not None else {}
    steps = optimizer_steps(config, stage, examples)
    tokens = padded_tokens(data) if stage not in GENERATING else None
    seconds = estimate_seconds(config, stage, weights, steps, tokens) if weights is not None and time_it else None
    plan = Plan(stage, examples, steps, float(config.learning_rate), derived, seconds)
    if steps is not None and steps < MIN_STEPS:
        plan.warnings.append(
            f"only {steps} optimizer steps: too few to change a model measurably. Fix: raise max_steps (or "
            f"num_train_epochs), or lower the batch size."
        )
    if weights is not None and stage in defaults.LEARNING_RATES:
        lora = hasattr(weights, "peft_config") or bool(getattr(config, "lora_r", 0))
        wanted = defaults.learning_rate(stage, defaults.count_parameters(weights), lora)
        if config.learning_rate < wanted / 5:
            plan.warnings.append(
                f"learning_rate {config.learning_rate:g} is far below {wanted:g}, the rate that learns for this "
                f"model size{' with LoRA' if lora else ''} in tens of steps. Fix: leave learning_rate unset."
            )
    return plan


def stage_of(config: Any) -> str:
    name = type(config).__name__.lower()
    found = next((s for s in defaults.LEARNING_RATES if name.startswith(s)), None)
    if found is None:
        raise ValueError(f"{type(config).__name__} is not a stage config; pass stage=")
    return found


def optimizer_steps(config: Any, stage: str, examples: int | None) -> int | None:
    if stage == "ppo":
        return config.total_updates * config.optimizer_steps_per_update
    if getattr(config, "max_steps", -1) > 0:
        return int(config.max_steps)
    if examples is None:
        return None
    world = int(getattr(config, "world_size", 1) or 1)
    per_step = config.per_device_train_batch_size * world * config.gradient_accumulation_steps
    if stage in ("grpo", "rloo"):
        examples *= config.num_generations  # each prompt is sampled num_generations times
    return max(1, math.ceil(config.num_train_epochs * math.ceil(examples / max(per_step, 1))))


def estimate_seconds(config: Any, stage: str, model: Any, steps: int | None, tokens: int | None = None) -> float | None:
    """Steps x (tokens a step trains on x a timed forward's cost per token x 3 for the backward, plus the
    decoding of what a step generates x a timed decode step's cost). `tokens`: a padded sequence's length
    in the data (`padded_tokens`; else 256). Rough: within about a factor of two."""
    if steps is None:
        return None
    forward, decode = _timed(model, decode=stage in GENERATING)
    if stage in GENERATING:
        completions = config.batch_size if stage == "ppo" else config.per_device_train_batch_size
        new = config.max_new_tokens if stage == "ppo" else config.max_completion_length
        epochs = config.ppo_epochs if stage == "ppo" else config.num_iterations
        # sampling is batched: a decode step for the whole batch costs about one sequence's, plus a share per row
        per_update = new * decode * (1 + completions / 8) + 3 * epochs * completions * (64 + new) * forward
        updates = config.total_updates if stage == "ppo" else steps
        return updates * per_update
    length = min(getattr(config, "max_length", None) or 256, tokens or 256)
    batch = config.per_device_train_batch_size * config.gradient_accumulation_steps
    sequences = batch * (2 if stage in ("reward", "dpo") else 1)  # a KTO row is one completion
    # no-gradient forwards beside the trained one: DPO's reference; KTO's reference and its KL batch
    extra = {"dpo": 4 / 3, "kto": 5 / 3}.get(stage, 1)
    return steps * 3 * sequences * length * forward * extra


def padded_tokens(data: Any, sample: int = 64) -> int | None:
    """About how many tokens a padded training sequence of `data` holds: the 90th percentile over its first
    `sample` rows of prompt + response characters / 4, plus 8 per chat message (the template's tokens)."""
    if data is None or isinstance(data, int):
        return None
    lengths = []
    for i in range(min(sample, len(data))):
        row = data[i]
        if not isinstance(row, dict):
            continue
        parts = [row[k] for k in ("prompt", "messages", "completion") if k in row]
        responses = [row[k] for k in ("chosen", "rejected") if k in row] or [None]
        for response in responses:
            texts = [*parts, response] if response is not None else parts
            chars, messages = 0, 0
            for value in texts:
                turns = value if isinstance(value, list) else [{"content": value}]
                chars += sum(len(str(t.get("content", "")) if isinstance(t, dict) else str(t)) for t in turns)
                messages += len(turns)
            lengths.append(chars / 4 + 8 * messages)
    if not lengths:
        return None
    lengths.sort()
    return max(1, round(lengths[int(0.9 * (len(lengths) - 1))]))


def _timed(model: Any, decode: bool) -> tuple[float, float]:
    """Seconds per token of a forward pass over 128 tokens and, for a causal LM, per decoded token (KV cache)."""
    import torch

    device = next(model.parameters()).device
    ids = torch.ones(1, 128, dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    per_decode = 0.0
    try:
        with torch.no_grad():
            model(ids[:, :8])  # warm-up
            start = time.perf_counter()
            model(ids)
            per_token = (time.perf_counter() - start) / 128
            if decode:  # 8 new tokens after a 16-token prompt: nearly all of it is decoding with the cache
                start = time.perf_counter()
                model.generate(ids[:, :16], max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
                per_decode = (time.perf_counter() - start) / 8
    finally:
        model.train(was_training)
    return per_token, per_decode


def announce(config: Any, stage: str, model: Any, data: Any = None, log=print) -> dict:
    """The plan a stage prints as it starts, as the dict summary.json keeps, with the data's content hash
    (the model card's "data hash")."""
    plan = suggest(config, model, data, stage=stage)
    log(str(plan))
    return {**plan.to_dict(), "data_sha256": fingerprint(data)}


def _duration(seconds: float) -> str:
    return (
        f"{seconds:.0f} s"
        if seconds < 90
        else f"{seconds / 60:.0f} min"
        if seconds < 5400
        else f"{seconds / 3600:.1f} h"
    )
