"""What the online RL stages share: GRPO and RLOO on TRL's trainers, and the fields PPO has too.

- `OnlineConfig`: the fields every online stage config adds (the reward named from a config, the
  generation backend), and `check_groups`, the group-sampling checks GRPO and RLOO run before any
  model loads;
- `train_online`: the GRPO/RLOO run: policy and reference by the lab's rules, TRL's trainer with
  the lab's rewards, samples and the run folder;
- `prompt_dataset`: the same prompt sources as PPO (starter data, a gold task, a file, a list or a
  Dataset) as TRL's conversational `prompt` column;
- `reward_functions`: the lab's rewards as TRL reward functions, one per item of a list, so TRL's
  `reward_weights` weigh them and TRL logs `rewards/<name>/mean` for each. Every form `lab.ppo`
  takes goes through `rewards.as_scorer`; TRL's own reward functions (`trl.rewards`, or any
  function whose first parameter is `completions`) are called the way TRL calls them;
- `check_rewards`: each reward scores two training prompts before any policy loads, so a reward
  that returns the wrong number of values fails at once, with its name;
- `SampleLog`: what every logged step generated and how each reward scored it, for samples.jsonl
  and the monitor's samples table.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transformers import TrainerCallback

from rlhf_lab import defaults
from rlhf_lab.config import ConfigError, Rule, check_rules, is_int, is_number, number, one_of, positive_int
from rlhf_lab.data import describe_source
from rlhf_lab.models.chat import to_messages
from rlhf_lab.models.lora import lora_config
from rlhf_lab.rewards import as_scorer, is_model_pair
from rlhf_lab.runs import RunResult
from rlhf_lab.stages.common import resolve_prompts, resolve_reward, run_trainer, start_run
from rlhf_lab.stages.plan import announce
from rlhf_lab.stages.reference import borrowed, last_values, policy_and_reference, release

BACKENDS: tuple[str, ...] = ("auto", "hf", "vllm")


@dataclass
class OnlineConfig:
    """Fields of every online RL stage config (PPO, GRPO, RLOO), declared once. A mixin: first among the bases."""

    reward: str | None = field(
        default=None,
        metadata={
            "help": "From the CLI: a reward run folder or model folder, task:NAME (a gold task, e.g. "
            "task:concise), or 'module:function' naming a Python f(prompts, completions) -> list[float]."
        },
    )
    generation_backend: str = field(
        default="auto",
        metadata={
            "help": "'hf' (transformers generate with KV cache), 'vllm' (GPU, weights synced after each "
            "update) or 'auto': vLLM when it is installed and a GPU is present, else hf."
        },
    )

    def __post_init__(self) -> None:
        check_rules(self, {"generation_backend": one_of(BACKENDS, "generation_backend=auto")})
        super().__post_init__()

    def wants_vllm(self) -> bool:
        """Whether to sample with vLLM; 'vllm' without a GPU and vLLM is an error that says so."""
        import torch

        available = torch.cuda.is_available() and vllm_installed()
        if self.generation_backend == "vllm" and not available:
            raise ConfigError(
                "generation_backend='vllm' needs vLLM and a CUDA GPU. Fix: pip install 'rlhf-lab[gpu]' on a GPU "
                "machine, or set generation_backend=hf."
            )
        return self.generation_backend == "vllm" or (self.generation_backend == "auto" and available)


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


ONLINE_RULES: dict[str, Rule] = {
    "beta": number(0, what="a number", note="the KL coefficient; 0 turns the KL term off", fix="e.g. beta=0.04"),
    "epsilon": number(0, above=True, what="a number", fix="e.g. epsilon=0.2"),
    "temperature": number(0, above=True, what="a number", fix="e.g. temperature=1.0 (plain sampling)"),
    "num_iterations": positive_int("e.g. num_iterations=1 (one update per generation batch)"),
    "max_completion_length": positive_int("e.g. max_completion_length=64"),
}


def check_online(config: Any) -> None:
    """GRPO's and RLOO's own fields, checked before TRL's set-up and before any model loads."""
    check_rules(config, ONLINE_RULES)
    if config.epsilon_high is not None and not (
        is_number(config.epsilon_high) and config.epsilon_high >= config.epsilon
    ):
        raise ConfigError(
            f"epsilon_high must be >= epsilon ({config.epsilon}) or None, got {config.epsilon_high!r}. "
            "Fix: e.g. epsilon_high=0.28 (DAPO's clip-higher), or None for a symmetric clip."
        )
    weights = config.reward_weights
    if weights is not None and not (isinstance(weights, (list, tuple)) and all(is_number(w) for w in weights)):
        raise ConfigError(f"reward_weights must be a list of finite numbers, got {weights!r}. Fix: e.g. [1.0, 0.5].")


def check_groups(config: Any) -> None:
    """GRPO/RLOO compare `num_generations` samples of each prompt: check the group shapes before TRL's own
    set-up (which would raise a bare ValueError, after the batch-size arithmetic of `batch_size`)."""
    n = config.num_generations
    Rule(
        lambda v: is_int(v) and v >= 2,
        "an integer >= 2",
        "e.g. num_generations=4",
        "a group needs two samples to compare",
    ).check("num_generations", n)
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch; TrainingArguments is not set up yet
    per_step = config.per_device_train_batch_size * world
    accumulation = config.gradient_accumulation_steps
    if config.batch_size is not None and config.batch_size % per_step == 0:
        accumulation = config.gradient_accumulation_steps = config.batch_size // per_step
    if config.generation_batch_size is not None and config.steps_per_generation is not None:
        if config.generation_batch_size != per_step * config.steps_per_generation:
            raise ConfigError(
                f"generation_batch_size={config.generation_batch_size} and steps_per_generation="
                f"{config.steps_per_generation} disagree (per_device_train_batch_size x processes = {per_step}). "
                "Fix: set one of them, not both."
            )
        config.generation_batch_size = None  # a saved config.yaml carries both, as TRL derived them: derive again
    steps = config.steps_per_generation or accumulation
    generated = config.generation_batch_size or per_step * steps
    if generated % n:
        raise ConfigError(
            f"each generation batch holds {generated} completions (per_device_train_batch_size "
            f"{config.per_device_train_batch_size} x {world} processes x {steps} steps), which is not a whole number "
            f"of groups of num_generations={n}. Fix: make per_device_train_batch_size (or batch_size) a multiple of "
            f"{n}, or set num_generations to a divisor of {generated}."
        )


PROBE_COMPLETIONS = ("A short answer.", "Another, slightly longer answer to the question.")


def prompt_dataset(source: Any, stage: str):
    """A `datasets.Dataset` with a conversational `prompt` column, from any source PPO reads."""
    from datasets import Dataset

    prompts = resolve_prompts(source, stage)
    return Dataset.from_dict({"prompt": [to_messages(p) for p in prompts]})


class RewardLog:
    """The latest generation batch and every reward's scores on it, filled by the reward functions."""

    def __init__(self) -> None:
        self.prompts: list = []
        self.completions: list[str] = []
        self.scores: dict[str, list[float]] = {}

    def record(self, name: str, prompts: Sequence[Any], completions: Sequence[str], scores: Sequence[float]) -> None:
        if list(completions) != self.completions:  # a new batch: forget the last one's scores
            self.prompts, self.completions, self.scores = list(prompts), list(completions), {}
        self.scores[name] = [float(s) for s in scores]


class TRLReward:
    """One lab reward as a TRL reward function: `f(prompts=, completions=, **kwargs) -> list[float]`.

    TRL hands conversational completions as message lists; the lab's rewards read text. `__name__`
    is what TRL logs the reward under (`rewards/<name>/mean`).
    """

    def __init__(self, reward: Any, name: str, log: RewardLog, batch_size: int = 16) -> None:
        self.native = is_trl_reward(reward)
        self.fn = reward if self.native else as_scorer(reward, batch_size=batch_size)
        self.__name__, self.log = name, log

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        if self.native:
            scores = [
                np.nan if s is None else float(s) for s in self.fn(prompts=prompts, completions=completions, **kwargs)
            ]
        else:
            scores = self.fn(list(prompts), texts).tolist()
        self.log.record(self.__name__, prompts, texts, scores)
        return scores


def reward_functions(reward: Any, log: RewardLog, batch_size: int = 16) -> list[TRLReward]:
    """The stage's reward (a config string, one reward, or a list of them) as TRL reward functions."""
    reward = resolve_reward(reward)
    items = list(reward) if isinstance(reward, (list, tuple)) and not is_model_pair(reward) else [reward]
    if not items:
        raise ConfigError("the reward list is empty. Fix: pass at least one reward.")
    names = [_unique(reward_name(item), i, items) for i, item in enumerate(items)]
    return [TRLReward(item, name, log, batch_size) for item, name in zip(items, names)]


def check_rewards(functions: Sequence[TRLReward], prompts: Sequence[Any], weights: Sequence[float] | None) -> None:
    """Call every reward once on two training prompts, before any policy loads: a reward that returns the
    wrong number of values, or a non-finite one, fails here with its name and not after minutes of sampling."""
    if weights is not None and len(weights) != len(functions):
        raise ConfigError(
            f"reward_weights has {len(weights)} weights for {len(functions)} rewards "
            f"({', '.join(f.__name__ for f in functions)}). Fix: give one weight per reward, or drop reward_weights."
        )
    probe = list(prompts[:2])
    completions = [[{"role": "assistant", "content": text}] for text in PROBE_COMPLETIONS[: len(probe)]]
    for function in functions:
        if function.native:
            continue  # TRL's own rewards read dataset columns the probe does not have
        try:
            function(probe, completions)
        except ValueError as err:
            if "one finite number per completion" in str(err):  # the adapter's own check of what came back
                raise ConfigError(f"{err}. Fix: make the reward return one finite number per completion.") from err
            raise ConfigError(
                f"reward {function.__name__} failed on a training prompt ({err}). Fix: check that the reward and the "
                "prompts belong together (a gold task's reward needs that task's prompts)."
            ) from err


class SampleLog(TrainerCallback):
    """At every log: the first `n` completions of the latest batch with each reward's score (and the
    weighted total TRL trains on), for samples.jsonl and the live monitor's samples table."""

    def __init__(self, log: RewardLog, n: int, weights: Sequence[float] | None = None, monitor: Any = None) -> None:
        self.log, self.n, self.weights, self.monitor = log, n, weights, monitor
        self.rows: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.log.completions or self.n <= 0 or "reward" not in (logs or {}):
            return  # nothing sampled yet, or the end-of-training summary log (no new batch)
        names = list(self.log.scores)
        weights = list(self.weights) if self.weights is not None else [1.0] * len(names)
        rows = []
        for i in range(min(self.n, len(self.log.completions))):
            rewards = {name: self.log.scores[name][i] for name in names}
            prompt = self.log.prompts[i]
            rows.append(
                {
                    "step": state.global_step,
                    "prompt": prompt if isinstance(prompt, str) else prompt[-1]["content"],
                    "completion": self.log.completions[i],
                    "reward": float(sum(w * r for w, r in zip(weights, rewards.values()))),
                    "rewards": rewards,
                }
            )
        self.rows.extend(rows)
        if self.monitor is not None:
            self.monitor.add_samples(rows)


def completion_text(completion: Any) -> str:
    """TRL's completion (text, or a list of messages whose last is the assistant's) as text."""
    if isinstance(completion, str):
        return completion
    return completion[-1]["content"] if completion else ""


def is_trl_reward(reward: Any) -> bool:
    """A reward written for TRL: from `trl.rewards`, or a function whose first parameter is `completions`
    (TRL calls rewards with keywords: prompts=, completions=, completion_ids= and the dataset's columns)."""
    if not callable(reward) or hasattr(reward, "score") or is_model_pair(reward):
        return False
    if (getattr(reward, "__module__", "") or "").startswith("trl."):
        return True
    try:
        params = list(inspect.signature(reward).parameters)
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0] == "completions"


def reward_name(reward: Any) -> str:
    """A short name for logs: the run's folder, the task's name, the function's name."""
    for attribute in ("name", "__name__"):
        value = getattr(reward, attribute, None)
        if isinstance(value, str) and value and value != "<lambda>":
            return value
    return "reward" if not is_model_pair(reward) else type(reward[0]).__name__


def _unique(name: str, index: int, items: Sequence[Any]) -> str:
    names = [reward_name(item) for item in items]
    return name if names.count(name) == 1 else f"{name}_{index}"


def train_online(
    stage: str, trainer_cls: type, policy: Any, reward: Any, prompts: Any, config: Any, *, callbacks, lora, ref: Any
) -> RunResult:
    """The GRPO/RLOO run: rewards checked on real prompts before any policy loads, then the policy and its
    reference by the lab's rules, TRL's trainer, and the run folder with every logged step's samples."""
    reward = config.reward if reward is None else reward
    if reward is None:
        raise ConfigError(
            f"{stage.upper()} needs a reward: a RewardModel or reward run, a (model, tokenizer) pair, a function "
            "f(prompts, completions) -> list[float], a gold task, or a list of these. Fix: pass reward=..., or set "
            "reward: in the config (a reward run folder, task:NAME or 'module:function')."
        )
    dataset = prompt_dataset(config.data if prompts is None else prompts, stage.upper())
    log = RewardLog()
    functions = reward_functions(reward, log, batch_size=config.per_device_eval_batch_size)
    check_rewards(functions, dataset["prompt"], config.reward_weights)
    run = start_run(stage, config, callbacks)
    samples = SampleLog(log, config.num_samples, config.reward_weights, run.monitor)
    policy_bundle, reference, spec, reference_kind = policy_and_reference(policy, config, ref=ref, lora=lora)
    plan = announce(config, stage, policy_bundle.model, dataset)
    resolved = defaults.resolve(config, stage, policy_bundle.model, lora=bool(spec))
    use_vllm(config)
    if config.beta == 0.0:
        reference, reference_kind = None, "none (beta=0: no KL term)"
    with borrowed(reference):
        trainer = _with_reference(
            trainer_cls,
            reference,
            model=policy_bundle.model,
            reward_funcs=functions,
            args=config,
            train_dataset=dataset,
            processing_class=policy_bundle.tokenizer,
            peft_config=lora_config(spec, "causal") if spec else None,
            callbacks=[*run.callbacks, samples],
        )
        run_trainer(run, trainer)
    policy_bundle.model = release(trainer.model)
    summary = {
        "data": describe_source(config.data if prompts is None else prompts),
        "reference": reference_kind,
        "beta": config.beta,
        "num_generations": config.num_generations,
        "prompts": len(dataset),
        "reward_functions": [f.__name__ for f in functions],
        "defaults": resolved,
        "plan": plan,
        **last_values(run.rows, ("reward", "reward_std", "frac_reward_zero_std", "kl", "completions/mean_length")),
    }
    return run.finish(trainer, policy_bundle, summary=summary, samples=samples.rows)


def use_vllm(config: Any) -> None:
    """Sample with vLLM inside the training process ('colocate': one GPU holds both, weights synced after
    each step) when `generation_backend` asks for it; a user who set TRL's `use_vllm` keeps their mode."""
    if config.use_vllm or not config.wants_vllm():
        return
    config.use_vllm = True
    config.vllm_mode = "colocate"


def _with_reference(trainer_cls: type, reference: Any, **kwargs: Any) -> Any:
    """TRL's GRPO/RLOO trainers build their reference by reloading the policy's checkpoint name, which fails
    for an in-memory model and need not be the lab's reference (the caller's model, a copy, the starting
    adapter). While the trainer is built, that reload hands over the lab's reference instead, so TRL still
    prepares it its own way (dropout, fused log-prob head, accelerate or DeepSpeed)."""
    if reference is None:
        return trainer_cls(**kwargs)
    module = sys.modules[trainer_cls.__module__]
    reload = getattr(module, "create_model_from_path", None)
    if reload is None:  # a TRL that builds its reference another way: fail loudly, never train without one
        raise RuntimeError(f"{trainer_cls.__name__} no longer builds its reference with create_model_from_path")
    module.create_model_from_path = lambda *args, **kw: reference
    try:
        return trainer_cls(**kwargs)
    finally:
        module.create_model_from_path = reload
