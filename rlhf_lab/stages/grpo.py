"""GRPO on TRL's GRPOTrainer: several samples per prompt, each scored against its group, no critic.

    run = lab.grpo(policy, lab.task("arithmetic"), lab.task("arithmetic"), lab.GRPOConfig(max_steps=40))
    run = lab.grpo(sft, [rm, brevity], "starter", lab.GRPOConfig(reward_weights=[1.0, 0.5], loss_type="dr_grpo"))
    run = lab.grpo(policy, rm, prompts, lab.GRPOConfig(importance_sampling_level="sequence"))   # GSPO

Each prompt is sampled `num_generations` times; a completion's advantage is its reward minus its
group's mean (divided by the group's std with `scale_rewards="group"`), so a group whose rewards
are all equal teaches nothing (the monitor's `frac_reward_zero_std`). Rewards take every form
`lab.ppo` takes, through `rlhf_lab.rewards` (plus TRL's own reward functions); prompts the same
sources as PPO. The reference (for `beta` > 0) follows the rules of every stage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import trl

from rlhf_lab.config import ConfigError, default_run_dir
from rlhf_lab.defaults import derived_rate
from rlhf_lab.runs import RunResult
from rlhf_lab.stages.online import OnlineConfig, check_groups, check_online, train_online
from rlhf_lab.stages.reference import check_choice
from rlhf_lab.stages.trl_config import TRLStageConfig


def _supported(name: str) -> tuple[str, ...]:
    """The values TRL's help text lists after "Supported values are" (TRL exposes no constant)."""
    text = trl.GRPOConfig.__dataclass_fields__[name].metadata["help"]
    found = re.search(r"Supported values are (.*?)\.\s", text)
    return tuple(re.findall(r"'(\w+)'", found.group(1))) if found else ()


GRPO_LOSS_TYPES = _supported("loss_type")
SCALE_REWARDS = ("group", "batch", "none")
IMPORTANCE_LEVELS = ("token", "sequence")


@dataclass
class GRPOConfig(OnlineConfig, TRLStageConfig, trl.GRPOConfig):
    """`trl.GRPOConfig` (every TRL option stays available) with the lab's fields and CPU-sized defaults."""

    output_dir: str = field(default_factory=lambda: default_run_dir("grpo"), metadata={"help": "The run folder."})
    learning_rate: float = field(
        default=derived_rate("grpo"),
        metadata={"help": "AdamW learning rate; default: derived from the model's size (TRL's 1e-6 suits billions)."},
    )
    max_steps: int = field(default=40, metadata={"help": "Optimizer steps (-1: num_train_epochs over the prompts)."})
    num_generations: int | None = field(default=8, metadata={"help": "Samples per prompt: one group."})
    per_device_train_batch_size: int = field(
        default=16, metadata={"help": "Completions per device per step (a multiple of num_generations)."}
    )
    max_completion_length: int | None = field(default=64, metadata={"help": "Longest completion, in tokens."})
    beta: float = field(
        default=0.04, metadata={"help": "KL coefficient to the reference (0: no reference model, no KL term)."}
    )
    logging_steps: float = field(default=1, metadata={"help": "Log every N optimizer steps."})

    def __post_init__(self):
        check_online(self)
        check_choice("loss_type", [self.loss_type], GRPO_LOSS_TYPES)
        check_choice("importance_sampling_level", [self.importance_sampling_level], IMPORTANCE_LEVELS)
        self.scale_rewards = {True: "group", False: "none"}.get(self.scale_rewards, self.scale_rewards)
        check_choice("scale_rewards", [self.scale_rewards], SCALE_REWARDS)
        if self.loss_type == "luspo" and self.importance_sampling_level != "sequence":
            raise ConfigError(
                "loss_type 'luspo' is a sequence-level loss. Fix: set importance_sampling_level='sequence'."
            )
        check_groups(self)
        super().__post_init__()


def grpo(
    policy: Any = None,
    reward: Any = None,
    prompts: Any = None,
    config: GRPOConfig | None = None,
    *,
    ref: Any = None,
    callbacks: list | None = None,
    lora: Any = None,
) -> RunResult:
    """Train `policy` (a bundle, run, name or path; None: config.model) with GRPO against `reward`.

    `reward`: a RewardModel or reward run or ensemble, a `(classifier, tokenizer)` pair, a callable
    `f(prompts, completions) -> list[float]`, a gold task, a TRL reward function, or a list of these
    (weighted by `config.reward_weights`); None: `config.reward`. `prompts`: anything `lab.load_prompts`
    reads, a list, "starter" or a gold task (its training prompts); None: `config.data`.
    """
    config = config or GRPOConfig()
    return train_online(
        "grpo", trl.GRPOTrainer, policy, reward, prompts, config, callbacks=callbacks, lora=lora, ref=ref
    )
