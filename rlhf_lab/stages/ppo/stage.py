"""`lab.ppo`: the PPO stage as a plain function, like every other stage.

    run = lab.ppo(sft.model, reward=rm, prompts=prompts, config=lab.PPOConfig(total_updates=30))
    run = lab.ppo(policy, reward=[rm, length_penalty], prompts=prompts,
                  config=lab.PPOConfig(reward_weights=[1.0, 0.2], lora_r=16))
    run = lab.ppo(policy, reward=rm, prompts=prompts, config=config, resume_from="runs/ppo")

Models follow the reference rules of the DPO/KTO stages: an explicit `ref=` wins; with LoRA the
reference is the base with the adapters disabled (no second copy); a caller's model is its own
frozen reference (the trained policy is a private copy); otherwise a copy is made in memory.
The critic is a zero-initialized value head on the policy's trunk (`critic="shared"`), or a
separate model: `value=` if given, else a copy of the reward model (`critic="separate"`, PPO-Max).
"""

from __future__ import annotations

import copy
import importlib
import time
from pathlib import Path
from typing import Any

from ...config import ConfigError
from ...data import load_prompts
from ...lora import apply_lora
from ...models import RewardModel, as_reward_model, load_reward_model
from ..common import RunResult, finish_run, lora_spec, resolve_data, resolve_policy, start_run
from ..reference import _is_peft, _reference, borrowed
from .checkpoint import find_checkpoint, load_checkpoint
from .config import PPOConfig
from .model import ActorCritic, ValueHead, disable_dropout
from .rewards import make_reward_fn
from .trainer import PPOTrainer


def ppo(policy: Any = None, reward: Any = None, prompts: Any = None, config: PPOConfig | None = None, *,
        ref: Any = None, value: Any = None, callbacks: list | None = None, resume_from: Any = None,
        lora: Any = None) -> RunResult:  # fmt: skip
    """Train `policy` (a bundle, run, name or path; None: config.model) with PPO against `reward`.

    `reward`: a RewardModel or reward run, a `(sequence-classification model, tokenizer)` pair, a
    callable `f(prompts, completions) -> list[float]`, or a list of these (combined by the config's
    reward_weights / reward_aggregate); None: `config.reward`. `prompts`: anything `lab.load_prompts`
    reads, a list of strings or conversations, or "starter"; None: config.data. `resume_from`: a
    checkpoint folder, or a run folder (its latest checkpoint), written with `save_every > 0`.
    """
    config = config or PPOConfig()
    started = time.perf_counter()
    reward = config.reward if reward is None else reward
    if reward is None:
        raise ConfigError("PPO needs a reward: a RewardModel or reward run, a (model, tokenizer) pair, a function "
                          "f(prompts, completions) -> list[float], or a list of these. Fix: pass reward=..., or "
                          "set reward: in the config (a reward run folder, task:NAME or 'module:function').")  # fmt: skip
    prompt_list = _prompt_list(config.data if prompts is None else prompts)
    resume_from = config.resume_from if resume_from is None else resume_from
    checkpoint = find_checkpoint(resume_from) if resume_from is not None else None
    reward_fn = make_reward_fn(_resolve_reward(reward), weights=config.reward_weights,
                               aggregate=config.reward_aggregate, lam=config.reward_lam)  # fmt: skip

    folder, logger, callbacks = start_run(config, callbacks)
    bundle, given = resolve_policy(policy, config)
    spec = lora_spec(lora, config)
    if spec:
        if _is_peft(bundle.model):
            bundle.model = bundle.model.merge_and_unload()  # a LoRA run: fold its adapter in, train a new one
            bundle.model.config._name_or_path = ""
        bundle.model = apply_lora(bundle.model, spec)
    reference, reference_kind = _reference_model(ref, policy, given, bundle, spec, config)
    actor = _actor_critic(bundle, reward, value, config)
    disable_dropout(actor)
    with borrowed(reference):
        trainer = PPOTrainer(actor, bundle.tokenizer, reward_fn, prompt_list, config, ref_model=reference,
                             callbacks=callbacks, folder=folder)  # fmt: skip
        if checkpoint is not None:
            state = load_checkpoint(checkpoint, trainer.actor, trainer.optimizer, trainer.scheduler)
            trainer.restore(state)
            for row in state["log_history"]:  # the resumed run's metrics.jsonl starts as the original's did
                logger.rows.append(row)
                if trainer.is_world_process_zero():
                    folder.log_metrics(row)
        trainer.train()
    actor = trainer.actor
    actor.eval()
    bundle.model = actor.policy
    summary = {"reference": reference_kind, "critic": config.critic, "prompts": len(prompt_list),
               "reward": reward_fn.names, "kl_coef_final": trainer.kl_ctl.value,
               "resumed_from": str(checkpoint) if checkpoint else None}  # fmt: skip
    return finish_run("ppo", trainer, bundle, config, folder, logger, summary=summary, samples=trainer.samples,
                      started=started)  # fmt: skip


def _prompt_list(source: Any) -> list:
    """Prompts as strings or conversations: a file, a dataset, a list, "starter" or "task:NAME"."""
    if isinstance(source, str) and source.startswith("task:"):  # a gold task's training prompts
        from ...tasks import task

        prompts = task(source.removeprefix("task:")).prompts("train")
    elif isinstance(source, (list, tuple)) and all(isinstance(p, (str, list, tuple)) for p in source):
        prompts = list(source)
    else:
        dataset = resolve_data(load_prompts, "prompts", source)
        prompts = list(dataset["prompt"]) if dataset is not None else []
    if not prompts:
        raise ConfigError(f"PPO prompts are empty ({source!r}). Fix: pass a prompts file or a list of prompts "
                          f"(rlhf-lab validate FILE --kind prompts shows what is wrong).")  # fmt: skip
    return prompts


def _resolve_reward(reward: Any) -> Any:
    """A reward as given, or loaded from the CLI's string: a reward run/model folder, `task:NAME` (a gold
    task's reward, see `lab.TASKS`) or 'module:function'."""
    if isinstance(reward, (list, tuple)) and not _looks_like_pair(reward):
        return [_resolve_reward(r) for r in reward]
    if not isinstance(reward, (str, Path)):
        return reward
    text = str(reward)
    if text.startswith("task:"):  # a gold task's programmatic reward, e.g. task:concise
        from ...tasks import task

        return task(text.removeprefix("task:"))
    if ":" in text and not Path(text).exists():
        module, _, name = text.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"reward {text!r}: cannot import {name!r} from {module!r} ({err}). Fix: use "
                              f"'package.module:function' for a Python reward, or a reward run folder.") from err  # fmt: skip
    path = Path(text)
    if (path / "run.json").exists() or (path / "ensemble.json").exists():
        from ..common import load_run

        return load_run(path)
    if path.is_dir():
        return load_reward_model(path)
    raise ConfigError(f"reward {text!r} is neither a folder nor 'module:function'. Fix: pass the folder of a "
                      f"reward run (rlhf-lab reward --set output_dir=runs/reward) or a Python function.")  # fmt: skip


def _looks_like_pair(obj: Any) -> bool:
    from .rewards import _is_model_pair

    return _is_model_pair(obj)


def _reference_model(ref: Any, policy: Any, given: bool, bundle, spec: Any, config) -> tuple[Any, str]:
    if ref is not None:
        return _reference(ref, config), "given"
    if spec:
        return None, "base with adapters disabled"
    if given and not _is_peft(bundle.model):
        from ...models import as_policy

        return as_policy(policy).model, "caller's model"
    return copy.deepcopy(bundle.model), "copy of the starting model"


def _actor_critic(bundle, reward: Any, value: Any, config: PPOConfig) -> ActorCritic:
    if config.critic == "shared" and value is None:
        head = ValueHead(bundle.model.config.get_text_config().hidden_size).to(bundle.device)
        return ActorCritic(bundle.model, value_head=head, temperature=config.temperature)
    source = value if value is not None else _first_reward_model(reward)
    critic = as_reward_model(source)
    if critic.tokenizer.get_vocab() != bundle.tokenizer.get_vocab():
        raise ConfigError(f"the critic ({critic.name}) uses a different tokenizer from the policy ({bundle.name}); "
                          f"a separate critic reads the policy's tokens. Fix: use critic='shared', or a value "
                          f"model built on the policy's backbone (lab.load_reward_model(policy)).")  # fmt: skip
    model = copy.deepcopy(critic.model).to(bundle.device).requires_grad_(True)
    return ActorCritic(bundle.model, critic=model, temperature=config.temperature)


def _first_reward_model(reward: Any) -> Any:
    items = reward if isinstance(reward, (list, tuple)) and not _looks_like_pair(reward) else [reward]
    for item in items:
        if (
            isinstance(item, RewardModel)
            or _looks_like_pair(item)
            or hasattr(getattr(item, "bundle", None), "model")
        ):
            return getattr(item, "bundle", None) or item
    raise ConfigError("critic='separate' initializes the value model from the reward model, but the reward has "
                      "none (only functions). Fix: pass value=<a reward model>, or use critic='shared'.")  # fmt: skip
