"""Run configs: YAML round trip and `--set` overrides with did-you-mean."""

from dataclasses import dataclass, field

import pytest

from rlhf_lab.config import ConfigError, RunConfig, apply_overrides, from_yaml, load_config, to_yaml


@dataclass
class StageConfig(RunConfig):
    learning_rate: float = field(default=1e-5, metadata={"help": "step size"})
    max_steps: int = 10
    lora_r: int | None = None
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


def test_yaml_round_trip(tmp_path):
    config = StageConfig(run_name="exp", seed=3, learning_rate=3e-4, lora_r=8, target_modules=["q_proj"])
    to_yaml(config, tmp_path / "c.yaml")
    assert from_yaml(StageConfig, tmp_path / "c.yaml") == config


def test_overrides_are_typed():
    config = load_config(
        StageConfig, None, ["learning_rate=1e-4", "max_steps=5", "lora_r=16", "target_modules=[a, b]", "run_name=x"]
    )
    assert config.learning_rate == 1e-4 and isinstance(config.learning_rate, float)
    assert (config.max_steps, config.lora_r, config.target_modules, config.run_name) == (
        5,
        16,
        ["a", "b"],
        "x",
    )
    assert apply_overrides(config, ["lora_r=null"]).lora_r is None


def test_file_then_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("max_steps: 7\nlearning_rate: 0.001\n")
    config = load_config(StageConfig, tmp_path / "c.yaml", ["max_steps=9"])
    assert (config.max_steps, config.learning_rate) == (9, 0.001)


def test_unknown_override_key_suggests_the_right_one():
    with pytest.raises(
        ConfigError, match=r"unknown key 'lerning_rate' for StageConfig; did you mean 'learning_rate'\?"
    ):
        load_config(StageConfig, None, ["lerning_rate=1e-4"])


def test_unknown_file_key_names_the_file(tmp_path):
    (tmp_path / "c.yaml").write_text("max_step: 7\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'max_step'.*did you mean 'max_steps'"):
        from_yaml(StageConfig, tmp_path / "c.yaml")


def test_wrong_type_and_malformed_override(tmp_path):
    with pytest.raises(ConfigError, match="'max_steps' must be int, got 'many'"):
        load_config(StageConfig, None, ["max_steps=many"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(StageConfig, None, ["max_steps"])
    (tmp_path / "bad.yaml").write_text("max_steps: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml, line \d+: not valid YAML"):
        from_yaml(StageConfig, tmp_path / "bad.yaml")


def test_validation_in_post_init():
    with pytest.raises(ConfigError, match="logging_steps must be at least 1"):
        load_config(RunConfig, None, ["logging_steps=0"])


def test_run_folder_defaults():
    assert RunConfig().output_dir.startswith("runs/run-")
    assert RunConfig(output_dir="runs/x").run_name == "x"
    assert RunConfig(output_dir="runs/x", run_name="y").run_name == "y"


@pytest.mark.parametrize("name", ["sft", "reward", "dpo", "kto"])
def test_shipped_example_configs_load(name):
    from pathlib import Path

    from rlhf_lab.stages import stage

    config_class = stage(name)[1]
    root = Path(__file__).resolve().parents[1]
    config = load_config(config_class, root / "configs" / f"{name}.yaml")
    assert config.output_dir == f"runs/{name}" and config.model is None
