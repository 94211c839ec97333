"""PPO checkpoints: everything an exact resume needs, in one folder per saved update.

    <run>/checkpoints/update-000010/
        trainable.safetensors   every trainable weight: the policy (or its LoRA adapters) and the critic
        optimizer.pt            AdamW state (tensors only: loaded with weights_only=True)
        scheduler.pt            learning-rate scheduler state
        state.json              update index, KL controller, reward normalizer, RNG states, the
                                metrics and samples logged so far, and the config it ran with

Frozen weights (the reference, a LoRA base, the reward model) are not saved: `resume_from` is
given the same starting models, which rebuild them exactly. A folder is written under a temporary
name and renamed when complete, so a run killed while saving leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlhf_lab.files import atomic_write

PREFIX = "update-"


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().cpu().clone() for n, p in module.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    state = {
        "python": _to_json(random.getstate()),
        "numpy": _to_json(np.random.get_state()),
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_from_json(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save_checkpoint(
    folder: Path, update: int, module: torch.nn.Module, optimizer, scheduler, state: dict[str, Any]
) -> Path:
    """Write checkpoints/update-<update>/ atomically; returns its path."""
    final = Path(folder) / "checkpoints" / f"{PREFIX}{update:06d}"
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file(trainable_state(module), str(partial / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), partial / "optimizer.pt")
    torch.save(scheduler.state_dict(), partial / "scheduler.pt")
    atomic_write(partial / "state.json", json.dumps({"update": update, **state, "rng": rng_state()}) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return final


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or the latest one in a run folder (or its checkpoints/ folder)."""
    path = Path(path)
    if (path / "state.json").exists():
        return path
    for parent in (path / "checkpoints", path):
        found = sorted(p for p in parent.glob(f"{PREFIX}*") if (p / "state.json").exists()) if parent.is_dir() else []
        if found:
            return found[-1]
    raise FileNotFoundError(
        f"resume_from={str(path)!r} holds no PPO checkpoint (checkpoints/{PREFIX}NNNNNN/"
        f"state.json). Fix: pass a run folder that ran with save_every > 0, or a checkpoint "
        f"folder inside it."
    )


def load_checkpoint(path: Path, module: torch.nn.Module, optimizer, scheduler) -> dict[str, Any]:
    """Load weights, optimizer and scheduler into the freshly built run; returns state.json's content."""
    weights = load_file(str(path / "trainable.safetensors"))
    expected = {n for n, p in module.named_parameters() if p.requires_grad}
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights))[:3], sorted(set(weights) - expected)[:3]
        raise ValueError(
            f"checkpoint {path} does not fit this model (missing {missing}, unexpected {extra}). "
            f"Fix: resume with the same policy, critic and lora settings the run started with."
        )
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    state = json.loads((path / "state.json").read_text())
    set_rng_state(state["rng"])
    return state


def _to_json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


def restore(trainer: Any, state: dict[str, Any]) -> None:
    """Continue a `PPOTrainer` from a loaded checkpoint's state.json (weights and optimizer already loaded)."""
    trainer.start_update = int(state["update"])
    trainer.kl_ctl.load_state_dict(state["kl_controller"])
    if trainer.norm is not None and state.get("reward_norm"):
        trainer.norm.load_state_dict(state["reward_norm"])
    trainer.state.log_history = list(state["log_history"])
    trainer.state.global_step = trainer.start_update
    trainer.samples = list(state["samples"])
    trainer.nonfinite_in_a_row = int(state.get("nonfinite_in_a_row", 0))
    trainer.generator.sync(trainer.actor.policy)
