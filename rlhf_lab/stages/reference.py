"""What DPO and KTO share: config checks, the reference model, and handing borrowed models back.

Reference rules (`policy_and_reference`): an explicit `ref=` wins; with LoRA the reference is the base
with adapters disabled (no second copy); a caller's bundle is its own frozen reference (the
trained model is a private copy); otherwise a copy is made in memory.
"""

from __future__ import annotations

import contextlib
import copy
import re
from pathlib import Path
from typing import Any

import torch

from rlhf_lab import defaults
from rlhf_lab.config import ConfigError
from rlhf_lab.models import Policy, as_policy
from rlhf_lab.models.lora import lora_config
from rlhf_lab.runs import RunResult
from rlhf_lab.stages.common import lora_spec, policy_samples, resolve_policy, run_trainer, start_run
from rlhf_lab.stages.plan import announce


def help_names(config_cls: type, name: str) -> tuple[str, ...]:
    """The `'quoted'` names a TRL config field's help text lists (TRL exposes no constant for them)."""
    meta = config_cls.__dataclass_fields__[name].metadata
    return tuple(meta.get("choices") or re.findall(r"`'(\w+)'`", meta.get("help", "")))


def check_beta(beta: float) -> None:
    if not beta > 0:
        raise ConfigError(
            f"beta must be > 0 (it scales the KL penalty to the reference), got {beta}. "
            f"Fix: use e.g. beta=0.1; smaller lets the policy drift further."
        )


def check_choice(name: str, values: list, valid: tuple[str, ...], extra: str = "") -> None:
    if not values:
        raise ConfigError(f"{name} is empty. Fix: use one of {', '.join(valid)}")
    unknown = [v for v in values if v not in valid] if valid else []
    if unknown:
        raise ConfigError(
            f"{name}: unknown {', '.join(map(repr, unknown))}. Fix: use one of "
            f"{', '.join(valid)}{' ' + extra if extra else ''}."
        )


def check_sync_ref(config, lora: Any = None) -> None:
    """sync_ref_model's conflicts. The config checks its own lora_r; the stage adds its `lora=` argument."""
    if config.sync_ref_model and config.precompute_ref_log_probs:
        raise ConfigError(
            "sync_ref_model=True needs a live reference, but precompute_ref_log_probs=True fixes its "
            "log-probs up front. Fix: turn one of them off."
        )
    if config.sync_ref_model and lora_spec(lora, config):
        raise ConfigError(
            "sync_ref_model=True does not work with LoRA (the reference is the base with adapters "
            "off). Fix: drop lora= and set lora_r=0, or set sync_ref_model=False."
        )


def policy_and_reference(
    model: Any, config, *, ref: Any = None, lora: Any = None, copy_adapter: bool = False
) -> tuple[Policy, Any, Any, str]:
    """The private policy to train, its frozen reference, the LoRA spec to train with, and what the
    reference is. DPO, KTO, PPO and GRPO/RLOO all take their reference from here.

    A None reference means the trainer needs no second model: with LoRA it disables the adapters,
    and for a policy that already carries an adapter TRL keeps a frozen copy of that adapter itself
    (`copy_adapter=True` makes that copy here instead, for a trainer that does not).
    """
    policy, given = resolve_policy(model, config)
    spec = lora_spec(lora, config)
    if spec and is_peft(policy.model):
        # Starting from a LoRA run: fold its adapter into our copy, train a fresh one on top, and
        # forget the checkpoint name so the run saves this merged base next to the new adapter.
        policy.model = policy.model.merge_and_unload()
        policy.model.config._name_or_path = ""
    if ref is not None:
        return policy, _reference(ref, config), spec, "given"
    if spec:
        return policy, None, spec, "base with adapters disabled"
    if is_peft(policy.model):
        return (
            policy,
            copy.deepcopy(policy.model) if copy_adapter else None,
            None,
            "frozen copy of the starting adapter",
        )
    if given:
        # The caller's original is exactly the starting point and is never trained: no second copy.
        return policy, as_policy(model).model, None, "caller's model"
    # TRL would re-load `config._name_or_path`, which fails for in-memory models and for tokenizers
    # that grew a pad token; a copy of what we loaded is the same size and always matches.
    return policy, copy.deepcopy(policy.model), None, "copy of the starting model"


def _reference(ref: Any, config) -> Any:
    bundle = resolve_policy(ref, config)[0] if isinstance(ref, (str, Path)) else as_policy(ref)
    if is_peft(bundle.model):
        # TRL's fused log-prob head patches a plain model; a merged copy of an adapter model is one.
        return copy.deepcopy(bundle.model).merge_and_unload()
    return bundle.model


def is_peft(model: Any) -> bool:
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
    for target in (model, model.get_base_model()) if is_peft(model) else (model,):
        for key in _PATCHED:
            target.__dict__.pop(key, None)
    return model.eval()


def precompute_pays(config: Any, examples: int) -> bool:
    """Resolve `precompute_ref_log_probs=None`: precompute when the run reads every example at least once, so the
    pass before training costs no more than the reference passes it saves (and the reference copy is not needed).
    In one process only: TRL hands the log-probs to the other processes through a datasets cache file, which the
    processes of an in-memory dataset do not share (each has its own temporary cache)."""
    if getattr(config, "precompute_ref_log_probs", False) is not None:
        return bool(getattr(config, "precompute_ref_log_probs", False))
    batch = config.per_device_train_batch_size * config.gradient_accumulation_steps * max(1, config.world_size)
    reads = config.max_steps * batch if config.max_steps > 0 else config.num_train_epochs * examples
    config.precompute_ref_log_probs = not config.sync_ref_model and config.world_size == 1 and reads >= examples
    return config.precompute_ref_log_probs


def last_values(rows: list[dict], keys: tuple[str, ...]) -> dict:
    """The last logged value of each key, for summary.json (eval rows carry `eval_` names)."""
    found = {}
    for row in rows:
        found.update({k: row[k] for k in keys if k in row})
    return found


def train_with_reference(
    stage: str,
    trainer_cls: type,
    model: Any,
    dataset,
    evaluation,
    config,
    *,
    ref: Any,
    lora: Any,
    callbacks: list | None,
    summary: dict,
    metrics: tuple[str, ...],
) -> RunResult:
    """The DPO/KTO run: models and reference by the rules above, TRL's trainer, held-out
    evaluation, samples, then the run folder. `summary` holds the stage's own entries."""
    check_sync_ref(config, lora)
    run = start_run(stage, config, callbacks)
    policy, reference, spec, reference_kind = policy_and_reference(model, config, ref=ref, lora=lora)
    if precompute_pays(config, len(dataset)) and reference_kind == "copy of the starting model":
        reference, reference_kind = None, "the starting model's log-probs, computed before training"
    plan = announce(config, stage, policy.model, dataset)
    resolved = defaults.resolve(config, stage, policy.model, lora=bool(spec))
    peft_config = lora_config(spec, "causal") if spec else None
    with borrowed(reference):
        trainer = trainer_cls(
            model=policy.model,
            ref_model=reference,
            args=config,
            train_dataset=dataset,
            eval_dataset=evaluation,
            processing_class=policy.tokenizer,
            peft_config=peft_config,
            callbacks=run.callbacks,
        )
        run_trainer(run, trainer)
        eval_metrics = trainer.evaluate() if evaluation is not None else None
    policy.model = release(trainer.model)
    samples = policy_samples(policy, config.num_samples)
    summary = {
        **summary,
        "beta": config.beta,
        "reference": reference_kind,
        "precompute_ref_log_probs": bool(getattr(config, "precompute_ref_log_probs", False)),
        "train_examples": len(dataset),
        "defaults": resolved,
        "plan": plan,
        **last_values(run.rows, metrics),
    }
    if eval_metrics is not None:
        summary["eval"] = {k: v for k, v in eval_metrics.items() if isinstance(v, (int, float))}
    return run.finish(trainer, policy, summary=summary, samples=samples)
