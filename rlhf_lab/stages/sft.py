"""Supervised fine-tuning on TRL's SFTTrainer: chat template, loss on assistant tokens only.

run = lab.sft(lab.load_policy(), lab.starter_data("sft", "train"), lab.SFTConfig(max_steps=50))
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trl

from rlhf_lab import defaults
from rlhf_lab.config import ConfigError, default_run_dir
from rlhf_lab.data import describe_source, load_sft
from rlhf_lab.defaults import derived_rate
from rlhf_lab.models.lora import apply_lora
from rlhf_lab.runs import RunResult
from rlhf_lab.stages.common import (
    check_not_empty,
    lora_spec,
    policy_samples,
    resolve_data,
    resolve_policy,
    run_trainer,
    start_run,
)
from rlhf_lab.stages.plan import announce
from rlhf_lab.stages.reference import release
from rlhf_lab.stages.trl_config import TRLStageConfig

TEMPLATES = Path(__file__).resolve().parents[1] / "models" / "chat_templates"


@dataclass
class SFTConfig(TRLStageConfig, trl.SFTConfig):
    """`trl.SFTConfig` (every TRL option stays available) with the lab's fields and defaults."""

    output_dir: str = field(default_factory=lambda: default_run_dir("sft"), metadata={"help": "The run folder."})
    assistant_only_loss: bool = field(default=True, metadata={"help": "Train on assistant tokens only."})
    learning_rate: float = field(
        default=derived_rate("sft"), metadata={"help": "AdamW learning rate; default: derived from the model's size."}
    )
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the data (max_steps wins if set)."})
    max_length: int | None = field(default=512, metadata={"help": "Truncate tokenized conversations to this length."})


def sft(
    model: Any = None,
    data: Any = None,
    config: SFTConfig | None = None,
    *,
    lora: Any = None,
    callbacks: list | None = None,
    eval_data: Any = None,
) -> RunResult:
    """Fine-tune `model` (a bundle, a run, a name or path; None: config.model) on chat demonstrations.

    `data`: anything `lab.load_sft` reads, or "starter". The caller's model is not modified: the
    run trains a copy and returns it in `RunResult.model`.
    """
    config = config or SFTConfig()
    dataset = resolve_data(load_sft, "sft", config.data if data is None else data)
    check_not_empty(dataset, "SFT data", data if data is not None else config.data)
    evaluation = resolve_data(load_sft, "sft", eval_data if eval_data is not None else config.eval_data, "test")
    run = start_run("sft", config, callbacks)

    policy, _ = resolve_policy(model, config)
    tokenizer = copy.deepcopy(policy.tokenizer)
    if config.assistant_only_loss:
        tokenizer.chat_template = training_chat_template(tokenizer)
    spec = lora_spec(lora, config)
    plan = announce(config, "sft", policy.model, dataset)
    resolved = defaults.resolve(config, "sft", policy.model, lora=bool(spec))
    if spec:
        policy.model = apply_lora(policy.model, spec, task="causal", seed=config.seed)
    trainer = trl.SFTTrainer(
        model=policy.model,
        args=config,
        train_dataset=dataset,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        callbacks=run.callbacks,
    )
    run_trainer(run, trainer)
    # TRL's instance patches off: a later deepcopy (the next stage's private copy) must run its own weights
    policy.model = release(trainer.model)
    samples = policy_samples(policy, config.num_samples)
    summary = {
        "data": describe_source(config.data if data is None else data),
        "train_examples": len(dataset),
        "assistant_only_loss": config.assistant_only_loss,
        "defaults": resolved,
        "plan": plan,
    }
    return run.finish(trainer, policy, summary=summary, samples=samples)


PROBES = [
    [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}],
    [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
        {"role": "assistant", "content": "a2"},
    ],
]


def training_chat_template(tokenizer) -> str:
    """The tokenizer's chat template with `{% generation %}` markers, so TRL can mask non-assistant tokens.

    TRL patches many model families; for ChatML templates such as SmolLM2's we use ours when it
    renders exactly the same text as the tokenizer's own template.
    """
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template
    if template and has_generation_markers(template):
        return template
    ours = (TEMPLATES / "smollm2_training.jinja").read_text()
    if template and _renders_the_same(tokenizer, ours):
        return ours
    try:
        patched = get_training_chat_template(tokenizer)
    except Exception as err:  # TRL raises for templates it does not know
        raise ConfigError(
            "assistant_only_loss=True needs a chat template with {% generation %} markers and this tokenizer's "
            "template is not one TRL or rlhf-lab knows how to patch. Fix: set assistant_only_loss=False "
            "(loss on every token) or pass chat_template_path= a template with generation markers."
        ) from err
    return patched or template


def _renders_the_same(tokenizer, template: str) -> bool:
    for conversation in PROBES:
        for prompt_only in (False, True):
            messages = conversation[:-1] if prompt_only else conversation
            own = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt_only)
            other = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=prompt_only, chat_template=template
            )
            if own != other:
                return False
    return True
