"""rlhf-lab: a Jupyter-first lab for the whole RLHF loop.

    import rlhf_lab as lab
    policy = lab.load_policy()                      # embedded SmolLM2-135M-Instruct, offline
    prefs = lab.load_preferences("prefs.jsonl")     # any supported format, validated

Names are imported lazily so `rlhf-lab version` and `import rlhf_lab` stay fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # foundation: models, data, configs, gold tasks
    "load_policy": "models",
    "load_reward_model": "models",
    "tiny_model": "models",
    "Policy": "models",
    "RewardModel": "models",
    "ModelBundle": "models",
    "as_policy": "models",
    "as_reward_model": "models",
    "load_sft": "data",
    "load_preferences": "data",
    "load_prompts": "data",
    "load_ratings": "data",
    "validate": "data",
    "DataError": "data",
    "starter_data": "starter",
    "RunConfig": "config",
    "load_config": "config",
    "ConfigError": "config",
    "task": "tasks",
    "TASKS": "tasks",
    "Task": "tasks",
    # train
    "sft": "stages.sft",
    "SFTConfig": "stages.sft",
    "train_reward_model": "stages.reward",
    "RewardConfig": "stages.reward",
    "RewardEnsemble": "rewards",
    "load_reward_run": "runs",
    "evaluate_reward_model": "stages.reward_eval",
    "score_pairs": "stages.reward_eval",
    "ppo": "stages.ppo",
    "PPOConfig": "stages.ppo",
    "PPOSession": "stages.ppo",
    "RolloutBatch": "stages.ppo",
    "grpo": "stages.grpo",
    "GRPOConfig": "stages.grpo",
    "rloo": "stages.rloo",
    "RLOOConfig": "stages.rloo",
    "dpo": "stages.dpo",
    "DPOConfig": "stages.dpo",
    "kto": "stages.kto",
    "KTOConfig": "stages.kto",
    "suggest": "stages.plan",
    "RunResult": "runs",
    "load_run": "runs",
    "export": "export",
    "set_threads": "threads",
    # watch
    "LiveMonitor": "monitor.live",
    "plot_runs": "monitor.plots",
    "show_figure": "monitor.static",
    "Thresholds": "monitor.diagnostics",
    # label
    "PreferenceStore": "labeling.store",
    "PairGenerator": "labeling.pairs",
    "human_win_rate": "labeling.pairs",
    "LabelingPanel": "labeling.panel",
    "LabelingSession": "labeling.session",
    "SimulatedAnnotator": "labeling.annotator",
    "HumanReward": "labeling.human",
    "preference_dataset": "labeling.annotator",
    # judge
    "evaluate": "evaluation.evaluate",
    "compare": "evaluation.evaluate",
    "best_of_n": "evaluation.best_of_n",
    "bootstrap_ci": "evaluation.stats",
    "paired_difference": "evaluation.stats",
    "overoptimization": "evaluation.overoptimization",
    "plot_overoptimization": "evaluation.overoptimization",
    # regress
    "record": "regress.baselines",
    "recorded": "regress.baselines",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rlhf_lab' has no attribute {name!r}")


def __dir__():
    return __all__
