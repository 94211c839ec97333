"""`rlhf-lab` command line: thin argparse subcommands over the same functions the notebooks call."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata

from rlhf_lab import __version__

DATA_KINDS = ("preference", "sft", "prompts", "ratings")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except (ValueError, FileNotFoundError, FileExistsError, ModuleNotFoundError, KeyError) as err:
        # Known user errors (bad config, missing file, unknown key): one readable line, no traceback.
        print(f"rlhf-lab {args.command}: error: {err}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf-lab", description="A Jupyter-first lab for RLHF.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    version = sub.add_parser("version", help="print the versions of rlhf-lab and its engines")
    version.set_defaults(handler=_version)

    validate = sub.add_parser("validate", help="check a data file and list every bad row")
    validate.add_argument("file", help="JSONL, JSON, CSV or Parquet file")
    validate.add_argument("--kind", required=True, choices=DATA_KINDS, help="what the file holds")
    validate.set_defaults(handler=_validate)

    models = sub.add_parser("models", help="embedded models and their cache")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    models_sub.add_parser("list", help="list the embedded models").set_defaults(handler=_models_list)
    convert = models_sub.add_parser("convert", help="convert an embedded model into the cache now")
    convert.add_argument("name", nargs="?", default=None, help="embedded model name (default: the policy)")
    convert.set_defaults(handler=_models_convert)
    info = models_sub.add_parser("cache-info", help="where the cache is and what it holds")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(handler=_models_cache_info)

    from rlhf_lab.stages import STAGES

    helps = {
        "sft": "supervised fine-tuning (TRL SFTTrainer)",
        "reward": "Bradley-Terry reward model (TRL RewardTrainer)",
        "dpo": "direct preference optimization (TRL DPOTrainer)",
        "kto": "KTO on thumbs-up/down labels (TRL KTOTrainer)",
        "ppo": "PPO with a KL penalty (the lab's own engine)",
        "grpo": "GRPO: group-relative advantages, no critic (TRL GRPOTrainer)",
        "rloo": "RLOO: leave-one-out baseline, no critic (TRL RLOOTrainer)",
    }
    for name in STAGES:
        stage = sub.add_parser(name, help=f"{helps[name]}; also under `accelerate launch -m rlhf_lab {name}`")
        _add_config_args(stage)
        stage.set_defaults(handler=_stage)

    export = sub.add_parser(
        "export", help="a run's model for transformers (hf) or llama.cpp/Ollama (gguf), LoRA merged"
    )
    export.add_argument("run", help="a run folder")
    export.add_argument("--to", required=True, dest="path", help="the folder to write")
    export.add_argument("--format", default="hf", choices=["hf", "gguf"], help="hf (safetensors) or gguf (llama.cpp)")
    export.add_argument("--quantize", default=None, help="gguf: f16 (default), q8_0, bf16 or f32")
    export.add_argument("--overwrite", action="store_true", help="replace PATH if it exists")
    export.set_defaults(handler=_export)

    from rlhf_lab.cli.prefs import add_prefs_parser

    add_prefs_parser(sub)  # rlhf-lab prefs stats|export|import|agreement --store FILE

    from rlhf_lab.cli.regress import add_demo_parser, add_regress_parser

    add_regress_parser(sub)  # rlhf-lab regress [--notebooks GLOB] [--profile ci|full] [--update-baselines]
    add_demo_parser(sub)  # rlhf-lab demo: 00_quickstart with the embedded model, as `make demo`

    from rlhf_lab.cli.lab import add_lab_parser

    add_lab_parser(sub)  # rlhf-lab lab [DIR]: the notebooks copied into DIR/notebooks, JupyterLab there
    return parser


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config field (repeatable)",
    )


def _version(args) -> int:
    print(f"rlhf-lab {__version__}")
    for dist in ("torch", "transformers", "trl", "peft", "datasets", "accelerate"):
        try:
            print(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            print(f"{dist} not installed")
    return 0


def _export(args) -> int:
    from rlhf_lab.export import export

    print(export(args.run, args.path, format=args.format, quantize=args.quantize, overwrite=args.overwrite))
    return 0


def _validate(args) -> int:
    from rlhf_lab.data import validate

    report = validate(args.file, args.kind)
    print(report)
    return 0 if report.ok else 1


def _models_list(args) -> int:
    from rlhf_lab.models.embedded import EMBEDDED, is_cached

    print(f"{'name':24} {'kind':8} {'package':22} cached")
    for name, model in EMBEDDED.items():
        cached = "yes" if not model.is_gguf or is_cached(name) else "no (converted on first load)"
        print(f"{name:24} {model.kind:8} {model.distribution:22} {cached}")
    print("also: tiny-causal, tiny-reward (rlhf_lab.tiny_model), any local folder, .gguf file or hub id")
    return 0


def _models_convert(args) -> int:
    from rlhf_lab.models.embedded import EMBEDDED, convert_gguf, resolve_name

    name = resolve_name(args.name)
    if name is None:
        raise KeyError(f"'{args.name}' is not an embedded model; choose one of: {', '.join(EMBEDDED)}")
    if not EMBEDDED[name].is_gguf:
        print(f"{name} ships as a ready checkpoint; nothing to convert")
        return 0
    print(convert_gguf(name))
    return 0


def _models_cache_info(args) -> int:
    from rlhf_lab.models.embedded import cache_info

    info = cache_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"cache: {info['cache_dir']}  (set RLHF_LAB_CACHE to move it)")
    for m in info["models"]:
        size = f"{m['bytes'] / 2**20:.0f} MiB" if m["bytes"] else "-"
        print(f"  {m['name']:24} cached={'yes' if m['cached'] else 'no':3} {size:>9}  {m['path']}")
    return 0


def _stage(args) -> int:
    from rlhf_lab.config import load_config
    from rlhf_lab.stages import stage

    function, config_class = stage(args.command)
    config = load_config(config_class, args.config, args.overrides)
    result = function(config=config)
    final = {k: v for k, v in result.summary.get("final", {}).items() if isinstance(v, (int, float))}
    if config.world_size > 1:
        # every rank says where it ended, so a distributed run can be checked for agreement
        print(
            f"rank {config.process_index}/{config.world_size} final: {json.dumps(final, sort_keys=True)} "
            f"weights: {_checksum(result.model)}",
            flush=True,
        )
    if config.process_index == 0:
        print(f"{args.command} run finished: {result.output_dir}")
        for key in sorted(final):
            print(f"  {key}: {final[key]:.6g}")
    return 0


def _checksum(model) -> str:
    """A short fingerprint of the weights: equal on every rank when data-parallel training stayed in sync."""
    import torch

    with torch.no_grad():
        total = sum(float(p.double().sum()) for p in model.parameters())
    return f"{total:.10e}"


if __name__ == "__main__":
    sys.exit(main())
