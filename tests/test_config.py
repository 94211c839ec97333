"""Run configs: YAML round trip and `--set` overrides with did-you-mean."""

from dataclasses import dataclass, field

import pytest

from rlhf_lab.config import (
    ConfigError,
    LabConfig,
    RunConfig,
    apply_overrides,
    count,
    from_yaml,
    load_config,
    number,
    one_of,
    optional,
    positive_int,
    to_yaml,
)


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


@pytest.mark.parametrize("name", ["sft", "reward", "dpo", "kto", "ppo", "grpo", "rloo"])
def test_shipped_example_configs_load_and_keep_the_derived_defaults(name):
    from pathlib import Path

    from rlhf_lab.defaults import is_derived
    from rlhf_lab.stages import stage

    config_class = stage(name)[1]
    root = Path(__file__).resolve().parents[1]
    config = load_config(config_class, root / "configs" / f"{name}.yaml")
    assert config.output_dir == f"runs/{name}" and config.model is None
    # the example configs teach the defaults that learn: a hard-coded rate there is how 1e-6 came back
    assert is_derived(config.learning_rate), f"configs/{name}.yaml sets learning_rate={config.learning_rate}"
    if name == "reward":
        assert is_derived(config.num_train_epochs)


@pytest.mark.parametrize(
    ("rule", "value", "message"),
    [
        (positive_int(), 0, r"^n must be a positive integer, got 0\. Fix: set n >= 1\.$"),
        (positive_int(), True, r"^n must be a positive integer, got True\."),  # a bool is no count
        (count("0 turns it off"), -1, r"^n must be an integer >= 0, got -1\. Fix: 0 turns it off\.$"),
        (number(0, above=True, what="a number"), 0.0, r"^n must be a number > 0, got 0\.0\.$"),
        (number(0, fix="e.g. n=1"), float("inf"), r"^n must be >= 0, got inf\. Fix: e\.g\. n=1\.$"),
        (number(0, 1), 1.5, r"^n must be in \[0, 1\], got 1\.5\.$"),
        (number(0, 1, above=True), 0, r"^n must be in \(0, 1\], got 0\.$"),
        (number(0, note="0 freezes"), -1, r"^n must be >= 0, got -1 \(0 freezes\)\.$"),
        (optional(number(0, above=True), "off"), -2.0, r"^n must be > 0 or None \(off\), got -2\.0\.$"),
        (optional(number()), float("nan"), r"^n must be a finite number or None, got nan\.$"),
        (one_of(("a", "b"), "n='a'"), "c", r"^n must be one of 'a', 'b', got 'c'\. Fix: n='a'\.$"),
    ],
)
def test_rules_say_field_value_and_fix(rule, value, message):
    with pytest.raises(ConfigError, match=message):
        rule.check("n", value)


@pytest.mark.parametrize(
    ("rule", "good"),
    [
        (positive_int(), [1, 10**9]),
        (count(), [0, 3]),
        (number(0, 1), [0, 0.5, 1]),
        (number(0, 1, above=True), [1e-9, 1]),
        (optional(number(0, above=True)), [None, 0.1]),
        (one_of(("a", "b")), ["a", "b"]),
    ],
)
def test_rules_accept_their_range(rule, good):
    for value in good:
        rule.check("n", value)


def test_lab_config_fields_are_declared_once_for_trl_and_ppo():
    from dataclasses import fields

    import rlhf_lab.stages.common as common
    from rlhf_lab.stages.ppo.config import PPOConfig
    from rlhf_lab.stages.sft import SFTConfig

    shared = {f.name: f for f in fields(LabConfig)}
    assert set(shared) == {"model", "data", "num_samples", "monitor", "lora_r", "bf16", "report_to"}
    for config_class in (PPOConfig, SFTConfig):
        assert issubclass(config_class, LabConfig)
        by_name = {f.name: f for f in fields(config_class)}
        for name, declared in shared.items():  # the same help: nobody redeclared it
            assert by_name[name].metadata["help"] == declared.metadata["help"], (config_class.__name__, name)
    assert not hasattr(common, "LabFields")  # the TRL side adds TRL-only fields, not a second copy


@pytest.mark.parametrize("config_class", ["sft", "reward", "ppo"])
def test_learning_rate_zero_is_a_control_run_and_negative_is_refused(config_class, tmp_path):
    from rlhf_lab.stages import stage

    cls = stage(config_class)[1]
    assert cls(output_dir=str(tmp_path / "run"), learning_rate=0.0).learning_rate == 0.0
    with pytest.raises(ConfigError, match=r"learning_rate must be a number >= 0, got -0\.1 \(0 freezes the weights\)"):
        cls(output_dir=str(tmp_path / "run"), learning_rate=-0.1)
    with pytest.raises(ConfigError, match="num_samples must be an integer >= 0, got -1"):
        cls(output_dir=str(tmp_path / "run"), num_samples=-1)
