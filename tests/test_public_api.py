"""The public surface is a contract: every name `import rlhf_lab as lab` offered before the package was
reorganised by concept, and every `rlhf-lab` command, still works."""

import inspect
import subprocess
import sys

import pytest

import rlhf_lab as lab
from rlhf_lab.cli.main import build_parser

# `sorted(lab.__all__)` on 2026-12-01, before the layout by concept (issue 14). Never remove a name.
NAMES_BEFORE = [
    "ConfigError",
    "DPOConfig",
    "DataError",
    "KTOConfig",
    "LabelingPanel",
    "LiveMonitor",
    "ModelBundle",
    "PPOConfig",
    "PairGenerator",
    "Policy",
    "PreferenceStore",
    "RewardConfig",
    "RewardEnsemble",
    "RewardModel",
    "RunConfig",
    "RunResult",
    "SFTConfig",
    "SimulatedAnnotator",
    "TASKS",
    "Task",
    "Thresholds",
    "as_policy",
    "as_reward_model",
    "bootstrap_ci",
    "compare",
    "dpo",
    "evaluate",
    "evaluate_reward_model",
    "human_win_rate",
    "kto",
    "load_config",
    "load_policy",
    "load_preferences",
    "load_prompts",
    "load_ratings",
    "load_reward_model",
    "load_reward_run",
    "load_run",
    "load_sft",
    "overoptimization",
    "paired_difference",
    "plot_overoptimization",
    "plot_runs",
    "ppo",
    "preference_dataset",
    "record",
    "recorded",
    "sft",
    "starter_data",
    "task",
    "tiny_model",
    "train_reward_model",
    "validate",
]
CLASSES = {
    "ConfigError",
    "DPOConfig",
    "DataError",
    "KTOConfig",
    "LabelingPanel",
    "LiveMonitor",
    "ModelBundle",
    "PPOConfig",
    "PairGenerator",
    "Policy",
    "PreferenceStore",
    "RewardConfig",
    "RewardEnsemble",
    "RewardModel",
    "RunConfig",
    "RunResult",
    "SFTConfig",
    "SimulatedAnnotator",
    "Task",
    "Thresholds",
}
# Names added since, with the issue that added them: functions, pinned like the ones before.
NAMES_ADDED = {"set_threads": 17}
COMMANDS_BEFORE = ["version", "validate", "models", "sft", "reward", "dpo", "kto", "ppo", "prefs", "regress", "demo"]


def test_every_name_from_before_is_still_exported_and_resolves():
    missing = [name for name in NAMES_BEFORE if name not in lab.__all__]
    assert missing == [], f"names dropped from rlhf_lab.__all__: {missing}"
    for name in NAMES_BEFORE:
        value = getattr(lab, name)
        if name in CLASSES:
            assert inspect.isclass(value), name
        elif name != "TASKS":
            assert callable(value), name
    assert isinstance(lab.TASKS, dict) and {"concise", "arithmetic"} <= set(lab.TASKS)
    assert issubclass(lab.ConfigError, ValueError) and issubclass(lab.DataError, ValueError)


def test_every_name_added_since_is_exported_and_callable():
    assert [name for name in NAMES_ADDED if name not in lab.__all__] == []
    assert all(callable(getattr(lab, name)) and not inspect.isclass(getattr(lab, name)) for name in NAMES_ADDED)


def test_every_exported_name_resolves_and_unknown_names_fail():
    for name in lab.__all__:
        getattr(lab, name)
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        lab.no_such_thing  # noqa: B018


def test_functions_are_not_shadowed_by_modules_of_the_same_name():
    import rlhf_lab.evaluation.evaluate
    import rlhf_lab.evaluation.overoptimization  # noqa: F401

    assert inspect.isfunction(lab.evaluate) and inspect.isfunction(lab.overoptimization)


def test_every_command_from_before_is_still_there():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert [c for c in COMMANDS_BEFORE if c not in commands] == []


def test_importing_the_package_stays_lazy():
    """`import rlhf_lab` and `rlhf-lab version` load no torch: names resolve on first use."""
    code = "import sys, rlhf_lab; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
