"""PPOConfig: the issue's field names, validation with actionable messages, and the YAML round trip."""

from dataclasses import fields

import pytest

from rlhf_lab.config import ConfigError, RunConfig, apply_overrides, load_config, to_yaml
from rlhf_lab.stages.ppo.config import PPOConfig

ISSUE_FIELDS = [
    "output_dir",
    "seed",
    "total_updates",
    "batch_size",
    "mini_batch_size",
    "gradient_accumulation_steps",
    "ppo_epochs",
    "learning_rate",
    "max_new_tokens",
    "temperature",
    "kl_coef",
    "kl_estimator",
    "adaptive_kl",
    "target_kl",
    "cliprange",
    "cliprange_value",
    "vf_coef",
    "gamma",
    "lam",
    "whiten_rewards",
    "entropy_coef",
    "max_grad_norm",
    "missing_eos_penalty",
    "save_every",
]
LAB_FIELDS = [
    "model",
    "data",
    "top_p",
    "top_k",
    "stop",
    "kl_horizon",
    "reward_clip",
    "normalize_rewards",
    "critic",
    "logging_steps",
    "num_samples",
]


def test_fields_exist_by_name_with_help():
    config = PPOConfig()
    assert isinstance(config, RunConfig)
    by_name = {f.name: f for f in fields(PPOConfig)}
    for name in ISSUE_FIELDS + LAB_FIELDS:
        assert name in by_name, name
        assert by_name[name].metadata.get("help"), f"{name} has no help"
    assert config.output_dir.startswith("runs/ppo-")
    assert config.top_p == 1.0 and config.top_k == 0 and config.stop == []
    assert config.kl_horizon == 10000 and config.critic == "shared" and config.data == "starter"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            {"batch_size": 10, "mini_batch_size": 4},
            r"batch_size=10 is not divisible by mini_batch_size x "
            r"gradient_accumulation_steps = 4 x 1 = 4",
        ),
        ({"batch_size": 16, "mini_batch_size": 4, "gradient_accumulation_steps": 3}, r"4 x 3 = 12.*Fix"),
        ({"learning_rate": -1e-5}, r"learning_rate must be a number >= 0, got -1e-05 \(0 freezes the weights\)\. Fix"),
        ({"learning_rate": float("nan")}, r"learning_rate must be a number >= 0, got nan"),
        ({"temperature": 0.0}, r"temperature must be a number > 0"),
        ({"max_new_tokens": 0}, r"max_new_tokens must be a positive integer, got 0"),
        ({"total_updates": -1}, r"total_updates must be a positive integer"),
        ({"ppo_epochs": 0}, r"ppo_epochs must be a positive integer"),
        ({"cliprange": 0.0}, r"cliprange must be > 0"),
        ({"cliprange": -0.2}, r"cliprange must be > 0"),
        ({"kl_coef": -0.1}, r"kl_coef must be >= 0"),
        ({"gamma": 1.5}, r"gamma must be in \[0, 1\], got 1\.5"),
        ({"gamma": -0.1}, r"gamma must be in \[0, 1\]"),
        ({"lam": 1.01}, r"lam must be in \[0, 1\]"),
        ({"kl_estimator": "k2"}, r"kl_estimator: unknown KL estimator 'k2'.*'k1', 'k3', 'abs'"),
        ({"adaptive_kl": True}, r"adaptive_kl needs a positive target_kl, got None\. Fix: set target_kl"),
        ({"adaptive_kl": True, "target_kl": -1.0}, r"target_kl must be > 0"),
        ({"adaptive_kl": True, "target_kl": 6.0, "kl_coef": 0.0}, r"adaptive_kl needs kl_coef > 0"),
        ({"critic": "tied"}, r"critic must be one of 'shared', 'separate', got 'tied'"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_k": -1}, r"top_k must be an integer >= 0"),
        ({"reward_clip": 0.0}, r"reward_clip must be > 0 or None"),
        ({"kl_horizon": 0}, r"kl_horizon must be a positive integer"),
        ({"save_every": -1}, r"save_every must be an integer >= 0"),
        ({"stop": [""]}, r"stop must be a list of non-empty strings"),
    ],
)
def test_bad_config_raises_config_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        PPOConfig(**overrides)


def test_learning_rate_zero_is_a_control_run():
    assert PPOConfig(learning_rate=0.0).learning_rate == 0.0  # 0 freezes the weights; still a valid run


def test_valid_non_defaults_are_accepted():
    config = PPOConfig(
        batch_size=24,
        mini_batch_size=4,
        gradient_accumulation_steps=2,
        adaptive_kl=True,
        target_kl=6.0,
        kl_estimator="k3",
        gamma=0.0,
        lam=1.0,
        kl_coef=0.2,
        critic="separate",
        missing_eos_penalty=-1.0,
        reward_clip=5.0,
        stop=["\n\n"],
    )
    assert config.minibatches_per_epoch == 6
    assert config.optimizer_steps_per_update == config.ppo_epochs * 3


def test_yaml_round_trip(tmp_path):
    config = PPOConfig(
        output_dir=str(tmp_path / "run"),
        seed=3,
        batch_size=8,
        mini_batch_size=2,
        learning_rate=3e-6,
        kl_estimator="abs",
        adaptive_kl=True,
        target_kl=4.0,
        stop=["</s>", "\n\n"],
        missing_eos_penalty=-1.0,
        reward_clip=None,
        critic="separate",
        top_k=50,
        normalize_rewards=True,
    )
    path = tmp_path / "ppo.yaml"
    to_yaml(config, path)
    loaded = load_config(PPOConfig, path)
    assert loaded == config
    assert to_yaml(loaded) == to_yaml(config)


def test_yaml_errors_and_overrides(tmp_path):
    path = tmp_path / "ppo.yaml"
    path.write_text("kl_coeff: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'kl_coeff' for PPOConfig; did you mean 'kl_coef'"):
        load_config(PPOConfig, path)
    path.write_text("learning_rate: 1e-5\ntemperature: 1\n")  # YAML reads 1e-5 as a string, 1 as an int
    loaded = load_config(PPOConfig, path)
    assert loaded.learning_rate == 1e-5 and isinstance(loaded.temperature, float)
    with pytest.raises(ConfigError, match=r"ppo\.yaml: gamma must be in \[0, 1\]"):
        path.write_text("gamma: 2\n")
        load_config(PPOConfig, path)
    config = apply_overrides(PPOConfig(), ["kl_estimator=k3", "stop=['###']", "missing_eos_penalty=-1"])
    assert config.kl_estimator == "k3" and config.stop == ["###"] and config.missing_eos_penalty == -1.0
    with pytest.raises(ConfigError, match=r"--set: kl_estimator: unknown KL estimator"):
        apply_overrides(PPOConfig(), ["kl_estimator=k9"])
