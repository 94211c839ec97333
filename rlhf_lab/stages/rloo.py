"""RLOO on TRL's RLOOTrainer: REINFORCE with a leave-one-out baseline, no critic.

    run = lab.rloo(policy, lab.task("arithmetic"), lab.task("arithmetic"), lab.RLOOConfig(max_steps=40))

Each prompt is sampled `num_generations` times; a completion's advantage is its reward (minus
`beta` x its KL to the reference) minus the mean reward of the *other* samples of its prompt, an
unbiased baseline (Ahmadian et al. 2024). Rewards, prompts and the reference work as in `lab.grpo`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trl

from rlhf_lab.config import default_run_dir
from rlhf_lab.defaults import derived_rate
from rlhf_lab.runs import RunResult
from rlhf_lab.stages.online import OnlineConfig, check_groups, check_online, train_online
from rlhf_lab.stages.trl_config import TRLStageConfig


@dataclass
class RLOOConfig(OnlineConfig, TRLStageConfig, trl.RLOOConfig):
    """`trl.RLOOConfig` (every TRL option stays available) with the lab's fields and CPU-sized defaults."""

    output_dir: str = field(default_factory=lambda: default_run_dir("rloo"), metadata={"help": "The run folder."})
    learning_rate: float = field(
        default=derived_rate("rloo"),
        metadata={"help": "AdamW learning rate; default: derived from the model's size (TRL's 1e-6 suits billions)."},
    )
    max_steps: int = field(default=40, metadata={"help": "Optimizer steps (-1: num_train_epochs over the prompts)."})
    num_generations: int | None = field(default=8, metadata={"help": "Samples per prompt: one group."})
    per_device_train_batch_size: int = field(
        default=16, metadata={"help": "Completions per device per step (a multiple of num_generations)."}
    )
    max_completion_length: int | None = field(default=64, metadata={"help": "Longest completion, in tokens."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N optimizer steps."})

    def __post_init__(self):
        check_online(self)
        check_groups(self)
        super().__post_init__()


def rloo(
    policy: Any = None,
    reward: Any = None,
    prompts: Any = None,
    config: RLOOConfig | None = None,
    *,
    ref: Any = None,
    callbacks: list | None = None,
    lora: Any = None,
) -> RunResult:
    """Train `policy` with RLOO against `reward`; arguments as `lab.grpo`."""
    config = config or RLOOConfig()
    return train_online(
        "rloo", trl.RLOOTrainer, policy, reward, prompts, config, callbacks=callbacks, lora=lora, ref=ref
    )
