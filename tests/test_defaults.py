"""Defaults that learn: learning rates derived from the model's size, an explicit value always wins."""

import math

import pytest
import yaml

import rlhf_lab as lab
from rlhf_lab import defaults
from rlhf_lab.config import apply_overrides, to_dict, to_yaml
from rlhf_lab.defaults import Derived, is_derived
from rlhf_lab.stages.plan import stage_of


def test_the_rate_for_the_embedded_model_and_its_scaling():
    assert defaults.learning_rate("dpo", 135e6) == 2e-5  # TRL's default 1e-6 learns nothing in tens of steps
    assert defaults.learning_rate("ppo", 135e6) == 1e-5
    assert defaults.learning_rate("dpo", 135e6, lora=True) == 2e-4
    big = defaults.learning_rate("sft", 135e6 * 100)
    assert big == pytest.approx(2e-6, rel=0.01)  # 100x the weights: a tenth of the step
    assert defaults.learning_rate("sft", 1.7e9) < defaults.learning_rate("sft", 360e6) < 2e-5
    with pytest.raises(ValueError, match="no default learning rate for stage 'distill'"):
        defaults.learning_rate("distill", 1e6)


def test_small_preference_sets_get_more_reward_model_epochs():
    assert defaults.reward_epochs(5000) == 1.0 and defaults.reward_epochs(1000) == 1.0
    assert defaults.reward_epochs(400) == 3.0 and defaults.reward_epochs(600) == 2.0
    assert defaults.reward_epochs(10) == defaults.MAX_REWARD_EPOCHS


@pytest.mark.parametrize(
    "config_class",
    [lab.SFTConfig, lab.RewardConfig, lab.DPOConfig, lab.KTOConfig, lab.PPOConfig, lab.GRPOConfig, lab.RLOOConfig],
)
def test_every_stage_derives_its_rate_and_an_explicit_one_wins(config_class, tmp_path):
    config = config_class(output_dir=str(tmp_path))
    assert is_derived(config.learning_rate)
    assert not is_derived(config_class(output_dir=str(tmp_path), learning_rate=3e-6).learning_rate)
    # YAML holds plain floats; an override of another field keeps the rate derived
    assert yaml.safe_load(to_yaml(config))["learning_rate"] == float(config.learning_rate)
    assert is_derived(apply_overrides(config, ["seed=3"]).learning_rate)
    assert not is_derived(apply_overrides(config, ["learning_rate=1e-4"]).learning_rate)
    assert type(to_dict(config)["learning_rate"]) is float
    # None (a notebook parameter left unset) asks for the derived default, which the stage then resolves
    unset = config_class(output_dir=str(tmp_path), learning_rate=None)
    assert is_derived(unset.learning_rate) and unset.learning_rate == config.learning_rate
    assert unset.learning_rate == defaults.LEARNING_RATES[stage_of(unset)]


def test_resolve_replaces_derived_values_only(tiny_policy, tmp_path):
    n = defaults.count_parameters(tiny_policy.model)
    config = lab.DPOConfig(output_dir=str(tmp_path))
    changed = defaults.resolve(config, "dpo", tiny_policy.model)
    assert config.learning_rate == defaults.learning_rate("dpo", n) and not is_derived(config.learning_rate)
    assert changed["learning_rate"]["value"] == config.learning_rate and "dpo on a" in changed["learning_rate"]["why"]
    assert defaults.resolve(config, "dpo", tiny_policy.model) == {}  # now explicit: left alone
    explicit = lab.DPOConfig(output_dir=str(tmp_path), learning_rate=1e-6)
    assert defaults.resolve(explicit, "dpo", tiny_policy.model) == {} and explicit.learning_rate == 1e-6
    rm_config = lab.RewardConfig(output_dir=str(tmp_path))
    assert defaults.resolve(rm_config, "reward", tiny_policy.model, examples=300)["num_train_epochs"]["value"] == 3.0


def test_a_stage_records_what_it_derived(tiny_policy, tmp_path):
    run = lab.sft(tiny_policy, "starter", lab.SFTConfig(output_dir=str(tmp_path), max_steps=1, num_samples=0))
    want = defaults.learning_rate("sft", defaults.count_parameters(tiny_policy.model))
    assert run.summary["defaults"]["learning_rate"]["value"] == want
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["learning_rate"] == want
    assert math.isclose(run.config.learning_rate, want)


def test_derived_reads_as_its_default():
    assert Derived(2e-5) == 2e-5 and repr(Derived(2e-5)) == "Derived(2e-05)" and is_derived(Derived(1.0))
