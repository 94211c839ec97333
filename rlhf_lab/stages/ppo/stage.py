"""`lab.ppo`: the PPO stage as a plain function, like every other stage.

    run = lab.ppo(sft.model, reward=rm, prompts=prompts, config=lab.PPOConfig(total_updates=30))
    run = lab.ppo(policy, reward=[rm, length_penalty], prompts=prompts,
                  config=lab.PPOConfig(reward_weights=[1.0, 0.2], lora_r=16))
    run = lab.ppo(policy, reward=rm, prompts=prompts, config=config, resume_from="runs/ppo")

One update at a time, by hand: `lab.PPOSession` (stages/ppo/session.py), which this function runs to the end.

The reference follows the rules of every stage (`reference.policy_and_reference`): an explicit `ref=`
wins; with LoRA the reference is the base with the adapters disabled (no second copy); a caller's
model is its own frozen reference (the trained policy is a private copy); otherwise a copy is made.
The critic is a zero-initialized value head on the policy's trunk (`critic="shared"`), or a
separate model: `value=` if given, else a copy of the reward model (`critic="separate"`, PPO-Max).
"""

from __future__ import annotations

from typing import Any

from rlhf_lab.config import ConfigError
from rlhf_lab.runs import RunResult
from rlhf_lab.stages.common import run_trainer
from rlhf_lab.stages.ppo.config import PPOConfig
from rlhf_lab.stages.ppo.session import PPOSession


def ppo(
    policy: Any = None,
    reward: Any = None,
    prompts: Any = None,
    config: PPOConfig | None = None,
    *,
    ref: Any = None,
    value: Any = None,
    callbacks: list | None = None,
    resume_from: Any = None,
    lora: Any = None,
) -> RunResult:
    """Train `policy` (a bundle, run, name or path; None: config.model) with PPO against `reward`.

    `reward`: a RewardModel or reward run, a `(sequence-classification model, tokenizer)` pair, a
    callable `f(prompts, completions) -> list[float]`, or a list of these (combined by the config's
    reward_weights / reward_aggregate); None: `config.reward`. `prompts`: anything `lab.load_prompts`
    reads, a list of strings or conversations, or "starter"; None: config.data. `resume_from`: a
    checkpoint folder, or a run folder (its latest checkpoint), written with `save_every > 0`.

    A `lab.PPOSession` run to the end: `session.train()` (rollout, score, step per update), then
    `session.finish()`.
    """
    config = config or PPOConfig()
    if reward is None and config.reward is None:
        raise ConfigError(
            "PPO needs a reward: a RewardModel or reward run, a (model, tokenizer) pair, a function "
            "f(prompts, completions) -> list[float], or a list of these. Fix: pass reward=..., or "
            "set reward: in the config (a reward run folder, task:NAME or 'module:function')."
        )
    session = PPOSession(
        policy, reward, prompts, config, ref=ref, value=value, callbacks=callbacks, resume_from=resume_from, lora=lora
    )
    run_trainer(session.run, session)
    return session.finish()
