"""`lab.ppo`: the PPO stage as a plain function, like every other stage.

    run = lab.ppo(sft.model, reward=rm, prompts=prompts, config=lab.PPOConfig(total_updates=30))
    run = lab.ppo(policy, reward=[rm, length_penalty], prompts=prompts,
                  config=lab.PPOConfig(reward_weights=[1.0, 0.2], lora_r=16))
    run = lab.ppo(policy, reward=rm, prompts=prompts, config=config, resume_from="runs/ppo")

The reference follows the rules of every stage (`reference.policy_and_reference`): an explicit `ref=`
wins; with LoRA the reference is the base with the adapters disabled (no second copy); a caller's
model is its own frozen reference (the trained policy is a private copy); otherwise a copy is made.
The critic is a zero-initialized value head on the policy's trunk (`critic="shared"`), or a
separate model: `value=` if given, else a copy of the reward model (`critic="separate"`, PPO-Max).
"""

from __future__ import annotations

import copy
from typing import Any

from rlhf_lab import defaults
from rlhf_lab.config import ConfigError
from rlhf_lab.data import describe_source
from rlhf_lab.models import as_reward_model
from rlhf_lab.models.lora import apply_lora
from rlhf_lab.rewards import RewardFunction, as_scorer
from rlhf_lab.runs import RunResult
from rlhf_lab.stages.common import resolve_prompts, resolve_reward, run_trainer, start_run
from rlhf_lab.stages.plan import announce
from rlhf_lab.stages.ppo.checkpoint import find_checkpoint, load_checkpoint, restore
from rlhf_lab.stages.ppo.config import PPOConfig
from rlhf_lab.stages.ppo.model import ActorCritic, ValueHead, disable_dropout
from rlhf_lab.stages.ppo.trainer import PPOTrainer
from rlhf_lab.stages.reference import borrowed, policy_and_reference


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
    """
    config = config or PPOConfig()
    reward = config.reward if reward is None else reward
    if reward is None:
        raise ConfigError(
            "PPO needs a reward: a RewardModel or reward run, a (model, tokenizer) pair, a function "
            "f(prompts, completions) -> list[float], or a list of these. Fix: pass reward=..., or "
            "set reward: in the config (a reward run folder, task:NAME or 'module:function')."
        )
    prompt_list = resolve_prompts(config.data if prompts is None else prompts)
    resume_from = config.resume_from if resume_from is None else resume_from
    checkpoint = find_checkpoint(resume_from) if resume_from is not None else None
    reward_fn = as_scorer(
        resolve_reward(reward), weights=config.reward_weights, aggregate=config.reward_aggregate, lam=config.reward_lam
    )

    run = start_run("ppo", config, callbacks)
    bundle, reference, spec, reference_kind = policy_and_reference(
        policy, config, ref=ref, lora=lora, copy_adapter=True
    )
    plan = announce(config, "ppo", bundle.model, prompt_list)
    resolved = defaults.resolve(config, "ppo", bundle.model, lora=bool(spec))
    if spec:
        bundle.model = apply_lora(bundle.model, spec, seed=config.seed)
    actor = _actor_critic(bundle, reward_fn, value, config)
    disable_dropout(actor)
    with borrowed(reference):
        trainer = PPOTrainer(
            actor,
            bundle.tokenizer,
            reward_fn,
            prompt_list,
            config,
            ref_model=reference,
            callbacks=run.callbacks,
            output_dir=run.path,
        )
        if checkpoint is not None:
            state = load_checkpoint(checkpoint, trainer.actor, trainer.optimizer, trainer.scheduler)
            restore(trainer, state)
            for row in state["log_history"]:  # the resumed run's metrics.jsonl starts as the original's did
                run.log(row)
        run_trainer(run, trainer)
        if run.ended == "interrupted" and trainer.start_update < trainer.completed == trainer.state.global_step:
            trainer.save_checkpoint(trainer.completed)  # resume_from continues after the last finished update
    actor = trainer.actor
    actor.eval()
    bundle.model = actor.policy
    summary = {
        "data": describe_source(config.data if prompts is None else prompts),
        "reference": reference_kind,
        "critic": config.critic,
        "prompts": len(prompt_list),
        "reward": reward_fn.names,
        "kl_coef_final": trainer.kl_ctl.value,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "defaults": resolved,
        "plan": plan,
    }
    return run.finish(trainer, bundle, summary=summary, samples=trainer.samples)


def _actor_critic(bundle, reward_fn: RewardFunction, value: Any, config: PPOConfig) -> ActorCritic:
    if config.critic == "shared" and value is None:
        head = ValueHead(bundle.model.config.get_text_config().hidden_size).to(bundle.device)
        return ActorCritic(bundle.model, value_head=head, temperature=config.temperature)
    if value is None and not reward_fn.reward_models:
        raise ConfigError(
            "critic='separate' initializes the value model from the reward model, but the reward has "
            "none (only functions). Fix: pass value=<a reward model>, or use critic='shared'."
        )
    source = value if value is not None else reward_fn.reward_models[0]
    critic = as_reward_model(source)
    if critic.tokenizer.get_vocab() != bundle.tokenizer.get_vocab():
        raise ConfigError(
            f"the critic ({critic.name}) uses a different tokenizer from the policy ({bundle.name}); "
            f"a separate critic reads the policy's tokens. Fix: use critic='shared', or a value "
            f"model built on the policy's backbone (lab.load_reward_model(policy))."
        )
    model = copy.deepcopy(critic.model).to(bundle.device).requires_grad_(True)
    return ActorCritic(bundle.model, critic=model, temperature=config.temperature)
