"""Training stages. Each is a plain function that returns a RunResult and writes a run folder.

The CLI (`rlhf-lab sft|reward|dpo|kto|ppo|grpo|rloo`) and the notebooks call the same functions.
"""

from __future__ import annotations

import importlib

# stage name -> (module, function, config class)
STAGES = {
    "sft": ("sft", "sft", "SFTConfig"),
    "reward": ("reward", "train_reward_model", "RewardConfig"),
    "dpo": ("dpo", "dpo", "DPOConfig"),
    "kto": ("kto", "kto", "KTOConfig"),
    "ppo": ("ppo", "ppo", "PPOConfig"),
    "grpo": ("grpo", "grpo", "GRPOConfig"),
    "rloo": ("rloo", "rloo", "RLOOConfig"),
}


def stage(name: str):
    """The (function, config class) of a stage, imported on first use."""
    module_name, function, config = STAGES[name]
    module = importlib.import_module(f".{module_name}", __name__)
    return getattr(module, function), getattr(module, config)
