"""Model cards: the README.md of every run folder and every export, in the Hugging Face convention
(YAML front matter, then what the model is, how it was trained, what it scored, how to reproduce it).

    text = model_card(summary, config, base="smollm2-135m-instruct")

Everything comes from what the run folder already holds (summary.json and config.yaml); generated
text never enters a card.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

CLI_STAGES = ("sft", "reward", "dpo", "kto", "ppo")  # stages `rlhf-lab <stage> --config` runs
KEY_FIELDS = (
    "learning_rate", "max_steps", "num_train_epochs", "total_updates", "per_device_train_batch_size",
    "batch_size", "mini_batch_size", "ppo_epochs", "beta", "loss_type", "kl_coef", "adaptive_kl", "target_kl",
    "num_generations", "max_length", "max_new_tokens", "max_completion_length", "lora_r", "seed",
)  # fmt: skip
PIPELINE = {"reward": "text-classification"}


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    return {k: getattr(config, k) for k in KEY_FIELDS if hasattr(config, k)}


def model_card(summary: Mapping[str, Any], config: Any = None, *, base: str | None = None) -> str:
    """The card's text: front matter (base_model, library, tags, pipeline), then model, data, settings,
    final metrics, alerts, evaluation and the command that reproduces the run."""
    stage = str(summary.get("stage", "unknown"))
    settings = _config_dict(config)
    base = base or summary.get("model")
    tags = ["rlhf-lab", "rlhf", stage, *(["trl"] if stage != "ppo" else [])]
    front = ["---", "library_name: transformers", f"pipeline_tag: {PIPELINE.get(stage, 'text-generation')}"]
    if base:
        front.append(f"base_model: {json.dumps(str(base))}")
    front += ["tags:", *[f"- {t}" for t in tags], "---", ""]
    lines = [f"# {stage} run of {base or 'a model'}", ""]
    lines += [f"Trained with rlhf-lab's `lab.{'train_reward_model' if stage == 'reward' else stage}` "
              f"for {summary.get('steps', '?')} steps in {summary.get('wall_s', '?')} s."]  # fmt: skip
    if summary.get("stopped_at") is not None:
        how = "interrupted" if summary.get("interrupted") else "stopped"
        lines.append(f"The run was {how} at step {summary['stopped_at']}.")
    data = summary.get("data") or (config.get("data") if isinstance(config, Mapping) else getattr(config, "data", None))
    examples = summary.get("train_examples") or (summary.get("plan") or {}).get("examples")
    lines += ["", "## Data", ""]
    lines.append(f"- source: {data if data else 'passed in memory (not recorded)'}")
    if examples is not None:
        lines.append(f"- training examples: {examples}")
    if (summary.get("plan") or {}).get("data_sha256"):
        lines.append(f"- content hash: {summary['plan']['data_sha256']} (`rlhf_lab.data.fingerprint`)")
    if summary.get("prompts") is not None:
        lines.append(f"- prompts: {summary['prompts']}")
    if summary.get("reward") is not None:
        lines.append(f"- reward: {_value(summary['reward'])}")
    lines += ["", "## Settings", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {_value(v)} |" for k, v in settings.items() if k in KEY_FIELDS and v is not None]
    for name, derived in (summary.get("defaults") or {}).items():
        if isinstance(derived, Mapping):
            lines.append(f"| {name} (derived) | {_value(derived.get('value'))}: {derived.get('why', '')} |")
    final = {k: v for k, v in (summary.get("final") or {}).items() if isinstance(v, (int, float))}
    if final:
        lines += ["", "## Final metrics", "", "| metric | value |", "|---|---|"]
        lines += [
            f"| {k} | {_value(v)} |" for k, v in final.items() if not k.startswith("train_") and k != "total_flos"
        ]
    alerts = summary.get("alerts") or []
    lines += ["", "## Alerts", ""]
    lines += [f"- {a.get('rule')} at step {a.get('step')}: {a.get('message')}" for a in alerts] or ["- none"]
    evaluation = summary.get("evaluation") or {k: v for k, v in summary.items() if k.startswith("eval_")}
    if evaluation:
        lines += ["", "## Evaluation", ""] + [f"- {k}: {_value(v)}" for k, v in evaluation.items()]
    lines += ["", "## Reproduce", "", "From the run folder (its config.yaml holds every setting):", "", "```bash"]
    if stage in CLI_STAGES:
        lines.append(f"rlhf-lab {stage} --config config.yaml")
    else:
        lines.append(f"python -c \"import yaml, rlhf_lab as lab; lab.{stage}(..., config=lab."
                     f"{stage.upper()}Config(**yaml.safe_load(open('config.yaml'))))\"")  # fmt: skip
    lines += ["```", ""]
    return "\n".join(front + lines)


__all__ = ["model_card"]
