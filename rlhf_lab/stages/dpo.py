"""Direct preference optimisation, and every loss variant of it TRL offers, on TRL's DPOTrainer.

    run = lab.dpo(sft.model, lab.load_preferences("prefs.jsonl"), lab.DPOConfig(beta=0.1))
    run = lab.dpo(sft.model, prefs, lab.DPOConfig(loss_type="ipo"), lora=True)

This module also holds the reference-model rules that KTO shares (`prepare_models`): an explicit
`ref=` wins; with LoRA the reference is the base with adapters disabled; a caller's bundle is its
own frozen reference (the trained model is a private copy); otherwise a copy is made in memory.
"""

from __future__ import annotations

import contextlib
import copy
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import trl

from ..config import ConfigError, default_run_dir
from ..data import load_preferences
from ..lora import lora_config
from ..models import Policy, as_policy
from .common import (
    LabFields,
    RunResult,
    check_not_empty,
    finish_run,
    lora_spec,
    policy_samples,
    resolve_data,
    resolve_policy,
    start_run,
)


def help_names(config_cls: type, name: str) -> tuple[str, ...]:
    """The `'quoted'` names a TRL config field's help text lists (TRL exposes no constant for them)."""
    meta = config_cls.__dataclass_fields__[name].metadata
    return tuple(meta.get("choices") or re.findall(r"`'(\w+)'`", meta.get("help", "")))


DPO_LOSS_TYPES = help_names(trl.DPOConfig, "loss_type")
REWARD_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
# TRL's trainer rejects these combinations at construction, i.e. after the models load; we check first.
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
F_DIVERGENCE_LOSSES = {"sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft"}


@dataclass
class DPOConfig(LabFields, trl.DPOConfig):
    """`trl.DPOConfig` (every TRL option stays available) with the lab's fields and defaults."""

    output_dir: str = field(default_factory=lambda: default_run_dir("dpo"), metadata={"help": "The run folder."})  # fmt: skip
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the data (max_steps wins if set)."})  # fmt: skip
    max_length: int | None = field(default=512, metadata={"help": "Truncate prompt + response to this many tokens."})  # fmt: skip

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
            raise ConfigError("loss_type 'exo_pair' needs label_smoothing > 0. Fix: set label_smoothing=1e-3.")  # fmt: skip
        if "robust" in self.loss_type and not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"loss_type 'robust' needs 0 <= label_smoothing < 0.5, got {self.label_smoothing}")  # fmt: skip
        check_choice("f_divergence_type", [self.f_divergence_type], F_DIVERGENCES)
        if self.f_divergence_type != "reverse_kl" and not set(self.loss_type) <= F_DIVERGENCE_LOSSES:
            raise ConfigError(f"f_divergence_type={self.f_divergence_type!r} only works with loss_type in "
                              f"{sorted(F_DIVERGENCE_LOSSES)}. Fix: use f_divergence_type='reverse_kl'.")  # fmt: skip
        if self.use_weighting and {"aot", "aot_unpaired"} & set(self.loss_type):
            raise ConfigError("use_weighting does not work with the 'aot' losses. Fix: set use_weighting=False.")  # fmt: skip
        check_sync_ref(self)
        super().__post_init__()


def dpo(model: Any = None, prefs: Any = None, config: DPOConfig | None = None, *, ref: Any = None,
        lora: Any = None, callbacks: list | None = None, eval_data: Any = None) -> RunResult:  # fmt: skip
    """Train `model` (a bundle, a run, a name or path; None: config.model) to prefer chosen over rejected.

    `prefs`: anything `lab.load_preferences` reads, or "starter". `ref`: the reference model (same
    forms as `model`); see the module docstring for the default. The caller's model is not modified.
    """
    config = config or DPOConfig()
    started = time.perf_counter()
    source = config.data if prefs is None else prefs
    dataset = resolve_data(load_preferences, "preference", source)
    check_not_empty(dataset, "DPO preference data", source)
    evaluation = resolve_data(load_preferences, "preference", config.eval_data if eval_data is None else eval_data,
                              "test")  # fmt: skip
    check_sync_ref(config, lora)
    folder, logger = start_run(config)

    policy, reference, peft_config, reference_kind = prepare_models(model, config, ref=ref, lora=lora)
    with borrowed(reference):
        trainer = trl.DPOTrainer(model=policy.model, ref_model=reference, args=config, train_dataset=dataset,
                                 eval_dataset=evaluation, processing_class=policy.tokenizer, peft_config=peft_config,
                                 callbacks=[logger, *(callbacks or [])])  # fmt: skip
        trainer.train()
        eval_metrics = trainer.evaluate() if evaluation is not None else None
    policy.model = release(trainer.model)
    samples = policy_samples(policy, config.num_samples)
    summary = {"loss_type": list(config.loss_type), "beta": config.beta, "reference": reference_kind,
               "train_examples": len(dataset), **last_values(logger.rows, REWARD_METRICS)}  # fmt: skip
    if eval_metrics is not None:
        summary["eval"] = {k: v for k, v in eval_metrics.items() if isinstance(v, (int, float))}
    return finish_run("dpo", trainer, policy, config, folder, logger, summary=summary, samples=samples,
                      started=started)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# What DPO and KTO share: checks, the reference model, and handing borrowed models back.


def check_beta(beta: float) -> None:
    if not beta > 0:
        raise ConfigError(f"beta must be > 0 (it scales the KL penalty to the reference), got {beta}. "
                          f"Fix: use e.g. beta=0.1; smaller lets the policy drift further.")  # fmt: skip


def check_choice(name: str, values: list, valid: tuple[str, ...], extra: str = "") -> None:
    if not values:
        raise ConfigError(f"{name} is empty. Fix: use one of {', '.join(valid)}")
    unknown = [v for v in values if v not in valid] if valid else []
    if unknown:
        raise ConfigError(f"{name}: unknown {', '.join(map(repr, unknown))}. Fix: use one of "
                          f"{', '.join(valid)}{' ' + extra if extra else ''}.")  # fmt: skip


def check_sync_ref(config, lora: Any = None) -> None:
    """sync_ref_model's conflicts. The config checks its own lora_r; the stage adds its `lora=` argument."""
    if config.sync_ref_model and config.precompute_ref_log_probs:
        raise ConfigError("sync_ref_model=True needs a live reference, but precompute_ref_log_probs=True fixes its "
                          "log-probs up front. Fix: turn one of them off.")  # fmt: skip
    if config.sync_ref_model and lora_spec(lora, config):
        raise ConfigError("sync_ref_model=True does not work with LoRA (the reference is the base with adapters "
                          "off). Fix: drop lora= and set lora_r=0, or set sync_ref_model=False.")  # fmt: skip


def prepare_models(model: Any, config, *, ref: Any = None, lora: Any = None) -> tuple[Policy, Any, Any, str]:
    """The private policy to train, the `ref_model` for TRL, the `peft_config` for TRL, and what the reference is.

    A None reference means TRL needs no second model: with `peft_config` it disables the adapters,
    and for a policy that already carries an adapter it keeps a frozen copy of that adapter.
    """
    policy, given = resolve_policy(model, config)
    spec = lora_spec(lora, config)
    peft_config = None
    if spec:
        if _is_peft(policy.model):
            # Starting from a LoRA run: fold its adapter into our copy, train a fresh one on top, and
            # forget the checkpoint name so the run saves this merged base next to the new adapter.
            policy.model = policy.model.merge_and_unload()
            policy.model.config._name_or_path = ""
        peft_config = lora_config(spec, "causal")
    if ref is not None:
        return policy, _reference(ref, config), peft_config, "given"
    if spec:
        return policy, None, peft_config, "base with adapters disabled"
    if _is_peft(policy.model):
        return policy, None, None, "frozen copy of the starting adapter"
    if given:
        # The caller's original is exactly the starting point and is never trained: no second copy.
        return policy, as_policy(model).model, None, "caller's model"
    # TRL would re-load `config._name_or_path`, which fails for in-memory models and for tokenizers
    # that grew a pad token; a copy of what we loaded is the same size and always matches.
    return policy, copy.deepcopy(policy.model), None, "copy of the starting model"


def _reference(ref: Any, config) -> Any:
    bundle = resolve_policy(ref, config)[0] if isinstance(ref, (str, Path)) else as_policy(ref)
    if _is_peft(bundle.model):
        # TRL's fused log-prob head patches a plain model; a merged copy of an adapter model is one.
        return copy.deepcopy(bundle.model).merge_and_unload()
    return bundle.model


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


# TRL (fused LM head) and accelerate (mixed-precision autocast) install these on the instance.
_PATCHED = ("forward", "_original_forward")


@contextlib.contextmanager
def borrowed(model: Any):
    """Lend a model to TRL as the frozen reference (eval mode, no grads), then hand it back as it was.

    TRL turns its dropout off, patches its forward and may move it to the training device.
    """
    if model is None:
        yield
        return
    patched = {k: model.__dict__[k] for k in _PATCHED if k in model.__dict__}
    training, device = model.training, next(model.parameters()).device
    grads = [(p, p.requires_grad) for p in model.parameters()]
    dropouts = [(m, m.p) for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    model.eval().requires_grad_(False)
    try:
        yield
    finally:
        for key in _PATCHED:
            model.__dict__.pop(key, None)
        model.__dict__.update(patched)
        for param, flag in grads:
            param.requires_grad_(flag)
        for module, p in dropouts:
            module.p = p
        if next(model.parameters()).device != device:  # moved for training; `.to` fails on 4-bit models
            model.to(device)
        model.train(training)


def release(model: Any) -> Any:
    """The trained model, in eval mode and without TRL's instance patches.

    TRL's fused forward closes over the model's original bound forward, so a later deepcopy (the
    next stage's private copy) would quietly run the old model; removing the patch avoids that.
    """
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")  # TRL's frozen adapter copy: only the trained adapter is the result
    for target in (model, model.get_base_model()) if _is_peft(model) else (model,):
        for key in _PATCHED:
            target.__dict__.pop(key, None)
    return model.eval()


def last_values(rows: list[dict], keys: tuple[str, ...]) -> dict:
    """The last logged value of each key, for summary.json (eval rows carry `eval_` names)."""
    found = {}
    for row in rows:
        found.update({k: row[k] for k in keys if k in row})
    return found
