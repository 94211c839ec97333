"""LoRA adapters (peft) and 4-bit QLoRA loading (bitsandbytes, CUDA only)."""

from __future__ import annotations

from typing import Any

import torch

DEFAULT_LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}
TASK_TYPES = {"causal": "CAUSAL_LM", "reward": "SEQ_CLS"}


def lora_config(spec: Any, task: str = "causal"):
    """A `peft.LoraConfig` from True, a rank, a dict of LoraConfig fields or a LoraConfig."""
    from peft import LoraConfig

    if isinstance(spec, LoraConfig):
        return spec
    if spec is True:
        fields = dict(DEFAULT_LORA)
    elif isinstance(spec, int) and not isinstance(spec, bool):
        if spec <= 0:
            raise ValueError(f"lora rank must be positive, got {spec}")
        fields = {**DEFAULT_LORA, "r": spec, "lora_alpha": 2 * spec}
    elif isinstance(spec, dict):
        fields = {**DEFAULT_LORA, **spec}
    else:
        raise TypeError(f"lora must be True, a rank (int), a dict of LoraConfig fields or a LoraConfig; got {spec!r}")
    fields.setdefault("task_type", TASK_TYPES[task])
    return LoraConfig(**fields)


def apply_lora(model, spec: Any, *, task: str = "causal", quantized: bool = False, seed: int | None = None):
    """Wrap `model` with trainable LoRA adapters; the base weights stay frozen.

    The adapters' A matrices start random: with `seed` they start the same in every process and every
    run (a fresh Python process seeds torch at random), and the global RNG is left as it was."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model)
    if seed is None:
        return get_peft_model(model, lora_config(spec, task))
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # every device's generator, so adapters made on a GPU are seeded too
        return get_peft_model(model, lora_config(spec, task))


def bnb_config(quantize: str, device: str):
    """BitsAndBytes 4-bit (NF4) settings for QLoRA; a clear error where it cannot run."""
    if quantize != "4bit":
        raise ValueError(f"quantize must be '4bit' (QLoRA) or None, got {quantize!r}")
    if not torch.cuda.is_available() or not device.startswith("cuda"):
        raise RuntimeError(
            "quantize='4bit' (QLoRA) needs a CUDA GPU and this machine has none. "
            "Fix: drop quantize= to train LoRA adapters in full precision (lora=True), or run on a GPU."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise RuntimeError("quantize='4bit' needs bitsandbytes. Fix: pip install 'rlhf-lab[gpu]'") from err
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16,
    )
