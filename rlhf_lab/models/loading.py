"""Loading models offline by default: the embedded policy, reward heads, tiny test models.

`load_policy()` gives the embedded SmolLM2-135M-Instruct; `load_reward_model()` puts a scalar
head on a policy's backbone or on the embedded MiniLM encoder; `tiny_model()` builds a tiny
random Llama for tests. Every stage takes one of these bundles (or a finished run) wherever it
takes a model: `as_policy` / `as_reward_model` accept all of them.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

from rlhf_lab.models import embedded
from rlhf_lab.models import lora as lora_lib
from rlhf_lab.models.bundles import ModelBundle, Policy, RewardModel

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def load_policy(
    name: str | Path | None = None,
    *,
    lora: Any = None,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    quantize: str | None = None,
    trust_remote_code: bool = False,
    adapter_base: str | None = None,
    **hf_kwargs,
) -> Policy:
    """Load a chat policy.

    `name`: None or "smollm2-135m-instruct" (the embedded default, offline), a local checkpoint
    folder, a LoRA adapter folder, a `.gguf` file, or a hub id (the only case that may use the
    network). `lora`: True, a rank, a dict of `peft.LoraConfig` fields or a `LoraConfig`.
    `quantize="4bit"` loads with bitsandbytes for QLoRA and needs a CUDA GPU.
    """
    from transformers import AutoModelForCausalLM

    model, tokenizer, label = _from_pretrained(
        AutoModelForCausalLM,
        name,
        dtype=dtype,
        device=device,
        quantize=quantize,
        trust_remote_code=trust_remote_code,
        adapter_base=adapter_base,
        **hf_kwargs,
    )
    if lora is not None and lora is not False:
        model = lora_lib.apply_lora(model, lora, task="causal", quantized=quantize is not None)
    return Policy(model=model, tokenizer=tokenizer, name=label)


def load_reward_model(
    name: str | Path | ModelBundle | None = None,
    *,
    lora: Any = None,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    adapter_base: str | None = None,
    **hf_kwargs,
) -> RewardModel:
    """A scalar reward head (`num_labels=1`) on a backbone.

    `name`: None (the embedded policy's backbone), "all-minilm-l6-v2" (the embedded MiniLM
    encoder), a local folder or hub id, or a loaded bundle (its trunk's weights are copied).
    """
    from transformers import AutoModelForSequenceClassification

    if isinstance(name, ModelBundle) or hasattr(name, "tokenizer"):  # a bundle or a run (not "model": it may load)
        model, tokenizer = _reward_head_on(name), name.tokenizer
        label = f"{getattr(name, 'name', 'model')}+reward-head"
        model.to(_pick_device(device))
    else:
        with _quiet_transformers():  # the new head is expected to be missing from the checkpoint
            model, tokenizer, label = _from_pretrained(
                AutoModelForSequenceClassification,
                name,
                dtype=dtype,
                device=device,
                quantize=None,
                trust_remote_code=trust_remote_code,
                adapter_base=adapter_base,
                num_labels=1,
                **hf_kwargs,
            )
    model.config.pad_token_id = tokenizer.pad_token_id
    if lora is not None and lora is not False:
        model = lora_lib.apply_lora(model, lora, task="reward")
    bundle = RewardModel(model=model, tokenizer=tokenizer, name=label)
    if isinstance(name, (str, Path)) and Path(name).is_dir():
        bundle.load_normalization(name)
    return bundle


def tiny_model(kind: str = "causal", seed: int = 0) -> Policy | RewardModel:
    """A tiny random Llama (hidden 64, 2 layers) with the default tokenizer, for tests and CI.

    The same `seed` always gives the same weights; the global RNG is left untouched.
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    if kind not in ("causal", "reward"):
        raise ValueError(f"tiny_model kind must be 'causal' or 'reward', got {kind!r}")
    tokenizer = AutoTokenizer.from_pretrained(embedded.embedded_path(), local_files_only=True)
    prepare_tokenizer(tokenizer)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        num_labels=1,
    )
    cls = LlamaForCausalLM if kind == "causal" else LlamaForSequenceClassification
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    model.eval()
    if kind == "causal":
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        return Policy(model=model, tokenizer=tokenizer, name=f"tiny-causal-seed{seed}")
    return RewardModel(model=model, tokenizer=tokenizer, name=f"tiny-reward-seed{seed}")


def as_policy(obj: Any) -> Policy:
    """Accept a Policy, anything with `.model` and `.tokenizer` (a finished run), or a name/path."""
    return _as_bundle(obj, Policy, load_policy)


def as_reward_model(obj: Any) -> RewardModel:
    """Accept a RewardModel, anything with `.model` and `.tokenizer`, or a name/path."""
    return _as_bundle(obj, RewardModel, load_reward_model)


def _as_bundle(obj: Any, cls: type, loader) -> Any:
    if isinstance(obj, cls):
        return obj
    model = getattr(obj, "model", None) if hasattr(obj, "tokenizer") else None  # read once: an offloaded run loads it
    if model is not None:
        return cls(model=model, tokenizer=obj.tokenizer, name=getattr(obj, "name", "model"))
    if obj is None or isinstance(obj, (str, Path)):
        return loader(obj)
    raise TypeError(f"expected a {cls.__name__}, a run result, a path or a model name, got {type(obj).__name__}")


def prepare_tokenizer(tokenizer) -> Any:
    """Left padding and a pad token distinct from EOS, so padding masks never hide real tokens."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        if embedded.SMOLLM2_PAD in vocab and vocab[embedded.SMOLLM2_PAD] != tokenizer.eos_token_id:
            tokenizer.pad_token = embedded.SMOLLM2_PAD
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})  # caller resizes embeddings
    return tokenizer


# ---------------------------------------------------------------------------------------------
# Helpers


def _from_pretrained(auto_cls, name, *, dtype, device, quantize, trust_remote_code, adapter_base=None, **kwargs):
    from transformers import AutoTokenizer

    device = _pick_device(device)
    torch_dtype = _pick_dtype(dtype, device)
    load_kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code, **kwargs}
    canonical = embedded.resolve_name(None if name is None else str(name))
    path = Path(name).expanduser() if name is not None and canonical is None else None
    if canonical is not None:
        source, label = embedded.embedded_path(canonical), canonical
        load_kwargs.update(local_files_only=True)
    elif path is not None and path.exists():
        source, label = path, path.name
        load_kwargs.update(local_files_only=True)
    else:
        source, label = str(name), str(name)  # a hub id: the caller asked for the network
    if path is not None and path.suffix == ".gguf":
        load_kwargs["gguf_file"], source = path.name, path.parent
    elif path is not None and (path / "adapter_config.json").exists():
        return _load_adapter(auto_cls, path, load_kwargs, device, adapter_base) + (label,)
    load_kwargs.setdefault("use_safetensors", None if "gguf_file" in load_kwargs else True)
    if quantize is not None:
        load_kwargs["quantization_config"] = lora_lib.bnb_config(quantize, device)
    tok_kwargs = {k: load_kwargs[k] for k in ("gguf_file", "local_files_only", "trust_remote_code") if k in load_kwargs}
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(source, **tok_kwargs))
    model = auto_cls.from_pretrained(source, **load_kwargs)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))  # a pad token was added
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if quantize is None:
        model.to(device)
    return model, tokenizer, label


def _load_adapter(auto_cls, path: Path, load_kwargs: dict, device: str, base_name: str | None = None):
    """A LoRA adapter folder: load its base (embedded, local, or `base_name`) then the adapter on top."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    if base_name is None:
        base_name = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    canonical = embedded.resolve_name(base_name)
    base = embedded.embedded_path(canonical) if canonical else base_name
    base_model = auto_cls.from_pretrained(base, **load_kwargs)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path, local_files_only=True))
    if len(tokenizer) > base_model.get_input_embeddings().num_embeddings:
        base_model.resize_token_embeddings(len(tokenizer))
    model = PeftModel.from_pretrained(base_model, path, is_trainable=True)
    return model.to(device).eval(), tokenizer  # eval like a full model: no LoRA dropout at inference


def _reward_head_on(bundle) -> Any:
    """A fresh sequence classifier whose trunk is a copy of `bundle.model`'s trunk."""
    from transformers import AutoModelForSequenceClassification

    source = bundle.model
    if hasattr(source, "get_base_model"):  # a PEFT model: merge a copy, keep the caller's intact
        import copy

        source = copy.deepcopy(source).merge_and_unload()
    values = {k: v for k, v in source.config.to_dict().items() if k not in ("id2label", "label2id")}
    config = source.config.__class__.from_dict({**values, "num_labels": 1})
    model = AutoModelForSequenceClassification.from_config(config, dtype=next(source.parameters()).dtype)
    trunk = getattr(source, source.base_model_prefix)
    getattr(model, model.base_model_prefix).load_state_dict(trunk.state_dict())
    return model


@contextlib.contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _pick_device(device: str | None) -> str:
    if device is not None:
        return str(device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def _pick_dtype(dtype, device: str):
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        on_gpu = device.startswith("cuda") and torch.cuda.is_available()
        return torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
    if dtype == "auto":
        return "auto"
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)} or 'auto'")
    return DTYPES[dtype]
