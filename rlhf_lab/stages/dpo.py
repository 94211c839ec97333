"""Direct preference optimisation, and every loss variant of it TRL offers, on TRL's DPOTrainer.

    run = lab.dpo(sft.model, lab.load_preferences("prefs.jsonl"), lab.DPOConfig(beta=0.1))
    run = lab.dpo(sft.model, prefs, lab.DPOConfig(loss_type="ipo"), lora=True)

The reference model follows the rules in `rlhf_lab.stages.reference`, shared with KTO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trl

from rlhf_lab.config import ConfigError, default_run_dir
from rlhf_lab.data import describe_source, load_preferences
from rlhf_lab.defaults import derived_rate
from rlhf_lab.runs import RunResult
from rlhf_lab.stages.common import check_not_empty, resolve_data
from rlhf_lab.stages.reference import check_beta, check_choice, check_sync_ref, help_names, train_with_reference
from rlhf_lab.stages.trl_config import TRLStageConfig

DPO_LOSS_TYPES = help_names(trl.DPOConfig, "loss_type")
REWARD_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
# TRL's trainer rejects these combinations at construction, i.e. after the models load; we check first.
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
F_DIVERGENCE_LOSSES = {"sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft"}


@dataclass
class DPOConfig(TRLStageConfig, trl.DPOConfig):
    """`trl.DPOConfig` (every TRL option stays available) with the lab's fields and defaults."""

    output_dir: str = field(default_factory=lambda: default_run_dir("dpo"), metadata={"help": "The run folder."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the data (max_steps wins if set)."})
    learning_rate: float = field(
        default=derived_rate("dpo"),
        metadata={"help": "AdamW learning rate; default: derived from the model's size (TRL's 1e-6 suits billions)."},
    )
    max_length: int | None = field(default=512, metadata={"help": "Truncate prompt + response to this many tokens."})
    precompute_ref_log_probs: bool | None = field(
        default=None,
        metadata={
            "help": "Compute the reference's log-probs once, before training, instead of a reference forward pass "
            "in every step. None: when the run reads every pair at least once (then the pass pays for itself)."
        },
    )

    def __post_init__(self):
        # Before TRL's own __post_init__, so a bad value gets our message and not a ValueError from deep inside.
        self.loss_type = [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)
        check_beta(self.beta)
        check_choice("loss_type", self.loss_type, DPO_LOSS_TYPES, "or a list of them to combine")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ConfigError(
                f"loss_weights has {len(self.loss_weights)} weights but loss_type has {len(self.loss_type)} losses "
                f"({', '.join(self.loss_type)}). Fix: give one weight per loss type, or drop loss_weights."
            )
        if "exo_pair" in self.loss_type and self.label_smoothing <= 0:
            raise ConfigError("loss_type 'exo_pair' needs label_smoothing > 0. Fix: set label_smoothing=1e-3.")
        if "robust" in self.loss_type and not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"loss_type 'robust' needs 0 <= label_smoothing < 0.5, got {self.label_smoothing}")
        check_choice("f_divergence_type", [self.f_divergence_type], F_DIVERGENCES)
        if self.f_divergence_type != "reverse_kl" and not set(self.loss_type) <= F_DIVERGENCE_LOSSES:
            raise ConfigError(
                f"f_divergence_type={self.f_divergence_type!r} only works with loss_type in "
                f"{sorted(F_DIVERGENCE_LOSSES)}. Fix: use f_divergence_type='reverse_kl'."
            )
        if self.use_weighting and {"aot", "aot_unpaired"} & set(self.loss_type):
            raise ConfigError("use_weighting does not work with the 'aot' losses. Fix: set use_weighting=False.")
        check_sync_ref(self)
        super().__post_init__()


def dpo(
    model: Any = None,
    prefs: Any = None,
    config: DPOConfig | None = None,
    *,
    ref: Any = None,
    lora: Any = None,
    callbacks: list | None = None,
    eval_data: Any = None,
) -> RunResult:
    """Train `model` (a bundle, a run, a name or path; None: config.model) to prefer chosen over rejected.

    `prefs`: anything `lab.load_preferences` reads, or "starter". `ref`: the reference model (same
    forms as `model`); see the module docstring for the default. The caller's model is not modified.
    """
    config = config or DPOConfig()
    source = config.data if prefs is None else prefs
    dataset = resolve_data(load_preferences, "preference", source)
    check_not_empty(dataset, "DPO preference data", source)
    evaluation = resolve_data(
        load_preferences, "preference", config.eval_data if eval_data is None else eval_data, "test"
    )
    summary = {"data": describe_source(source), "loss_type": list(config.loss_type)}
    return train_with_reference(
        "dpo",
        trl.DPOTrainer,
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
