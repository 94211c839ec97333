"""Kahneman-Tversky optimisation on TRL's KTOTrainer: learn from thumbs-up / thumbs-down labels.

    run = lab.kto(sft.model, lab.load_ratings("ratings.csv"), lab.KTOConfig(beta=0.1))

Each example is one (prompt, completion, label) with no paired alternative. `data="starter"`
turns the starter preference pairs into such rows: chosen -> desirable, rejected -> undesirable.
The reference model follows the same rules as DPO (see `rlhf_lab.stages.reference`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import trl

from rlhf_lab.config import ConfigError, default_run_dir
from rlhf_lab.data import describe_source, load_ratings
from rlhf_lab.defaults import derived_rate
from rlhf_lab.runs import RunResult
from rlhf_lab.stages.common import check_not_empty, resolve_data
from rlhf_lab.stages.reference import check_beta, check_choice, check_sync_ref, help_names, train_with_reference
from rlhf_lab.stages.trl_config import TRLStageConfig

KTO_LOSS_TYPES = help_names(trl.KTOConfig, "loss_type")
# Losses that estimate KTO's KL baseline from mismatched (prompt, completion) pairs within a batch.
NO_KL_LOSSES = ("apo_zero_unpaired",)
REWARD_METRICS = ("kl", "rewards/chosen", "rewards/rejected", "rewards/margins")


@dataclass
class KTOConfig(TRLStageConfig, trl.KTOConfig):
    """`trl.KTOConfig` (every TRL option stays available) with the lab's fields and defaults."""

    output_dir: str = field(default_factory=lambda: default_run_dir("kto"), metadata={"help": "The run folder."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the data (max_steps wins if set)."})
    learning_rate: float = field(
        default=derived_rate("kto"),
        metadata={"help": "AdamW learning rate; default: derived from the model's size (TRL's 1e-6 suits billions)."},
    )
    max_length: int | None = field(default=512, metadata={"help": "Truncate prompt + response to this many tokens."})

    def __post_init__(self):
        check_beta(self.beta)
        check_choice("loss_type", [self.loss_type], KTO_LOSS_TYPES)
        for name in ("desirable_weight", "undesirable_weight"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"{name} must be > 0, got {getattr(self, name)}. Fix: use a positive weight; "
                    f"raise the weight of the rarer label to balance the data (KTO paper, Eq. 8)."
                )
        if self.loss_type not in NO_KL_LOSSES:
            # The KL baseline pairs each prompt with its neighbour's completion in a fixed-order batch.
            if self.per_device_train_batch_size < 2:
                raise ConfigError(
                    f"loss_type {self.loss_type!r} needs per_device_train_batch_size >= 2 to estimate "
                    f"its KL term, got {self.per_device_train_batch_size}. Fix: set it to 2 or more."
                )
            if self.train_sampling_strategy != "sequential":
                raise ConfigError(
                    f"loss_type {self.loss_type!r} needs train_sampling_strategy='sequential', got "
                    f"{self.train_sampling_strategy!r}. Fix: leave it at 'sequential'."
                )
        check_sync_ref(self)
        super().__post_init__()


def kto(
    model: Any = None,
    unpaired: Any = None,
    config: KTOConfig | None = None,
    *,
    ref: Any = None,
    lora: Any = None,
    callbacks: list | None = None,
    eval_data: Any = None,
) -> RunResult:
    """Train `model` (a bundle, a run, a name or path; None: config.model) on labelled completions.

    `unpaired`: anything `lab.load_ratings` reads (prompt, completion, label), or "starter". `ref`:
    the reference model, as for `lab.dpo`. The caller's model is not modified.
    """
    config = config or KTOConfig()
    source = config.data if unpaired is None else unpaired
    dataset = load_unpaired(source)
    check_not_empty(dataset, "KTO rating data", source)
    evaluation = load_unpaired(config.eval_data if eval_data is None else eval_data, "test")
    desirable = sum(dataset["label"])
    summary = {
        "data": describe_source(source),
        "loss_type": config.loss_type,
        "desirable": desirable,
        "undesirable": len(dataset) - desirable,
    }
    return train_with_reference(
        "kto",
        trl.KTOTrainer,
        model,
        dataset,
        evaluation,
        config,
        ref=ref,
        lora=lora,
        callbacks=callbacks,
        summary=summary,
        metrics=REWARD_METRICS,
    )


def load_unpaired(source: Any, split: str = "train") -> Any:
    """Rating rows (prompt, completion, label) from `source`, or from the starter pairs for "starter"."""
    if isinstance(source, str) and source == "starter":
        from rlhf_lab.starter import starter_data

        source = unpair(starter_data("preference", split))
    dataset = resolve_data(load_ratings, "ratings", source, split)
    # `score` is optional input (labels may come from it) and often empty; TRL needs only the label.
    if dataset is not None and "score" in dataset.column_names:
        dataset = dataset.remove_columns("score")
    return dataset


def unpair(prefs: Iterable[dict]) -> list[dict]:
    """Preference pairs as labelled rows: chosen -> True, rejected -> False.

    TRL's KTO reads batches in order and estimates its KL term by pairing each prompt with the
    previous row's completion, so the order matters: labels alternate (every batch is balanced)
    and neighbours never share a prompt. The first half's chosen replies are interleaved with the
    second half's rejected ones, then the other way round.
    """
    rows = list(prefs)
    half = (len(rows) + 1) // 2
    first, second = rows[:half], rows[half:]

    def labelled(row, good: bool) -> dict:
        return {"prompt": row["prompt"], "completion": row["chosen" if good else "rejected"], "label": good}

    out: list[dict] = []
    for goods, bads in ((first, second), (second, first)):
        for i in range(max(len(goods), len(bads))):
            out += [labelled(goods[i], True)] if i < len(goods) else []
            out += [labelled(bads[i], False)] if i < len(bads) else []
    return out
