"""lab.suggest and the plan every stage prints as it starts: steps, the derived rate, time, warnings."""

import math

import pytest

import rlhf_lab as lab
from rlhf_lab import defaults


def test_the_plan_counts_steps_and_resolves_the_rate_without_touching_the_config(tiny_policy, tmp_path):
    config = lab.DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4)
    prefs = lab.starter_data("preference", "train")
    plan = lab.suggest(config, tiny_policy, prefs)
    assert plan.stage == "dpo" and plan.examples == len(prefs) == 297
    assert plan.optimizer_steps == math.ceil(297 / 4)  # one epoch, 4 pairs a step
    n = defaults.count_parameters(tiny_policy.model)
    assert plan.learning_rate == defaults.learning_rate("dpo", n) and "learning_rate" in plan.derived
    assert defaults.is_derived(config.learning_rate)  # the caller's config is left as it was
    assert plan.seconds > 0 and plan.warnings == []
    text = str(plan)
    assert text.startswith("dpo: 297 examples -> 75 optimizer steps at learning_rate") and "on this machine" in text


def test_a_plan_that_cannot_learn_says_so(tiny_policy, tmp_path):
    config = lab.DPOConfig(output_dir=str(tmp_path), max_steps=3, learning_rate=1e-9)
    plan = lab.suggest(config, tiny_policy, 297)
    assert plan.optimizer_steps == 3
    assert any("only 3 optimizer steps" in w for w in plan.warnings)
    assert any("learning_rate 1e-09 is far below" in w and "leave learning_rate unset" in w for w in plan.warnings)


@pytest.mark.parametrize(
    "config, data, steps",
    [
        (lab.PPOConfig(total_updates=10, batch_size=8, mini_batch_size=4, ppo_epochs=2), 40, 10 * 2 * 2),
        (lab.GRPOConfig(max_steps=-1, num_train_epochs=1, per_device_train_batch_size=8, num_generations=4), 10, 5),
        (lab.RLOOConfig(max_steps=12), 10, 12),
        (lab.SFTConfig(max_steps=-1, num_train_epochs=2, per_device_train_batch_size=8), 20, 6),
    ],
)
def test_optimizer_steps_per_stage(config, data, steps, tiny_policy):
    assert lab.suggest(config, tiny_policy, data).optimizer_steps == steps


def test_every_stage_prints_and_keeps_its_plan(tiny_policy, tmp_path, capsys):
    run = lab.sft(tiny_policy, "starter", lab.SFTConfig(output_dir=str(tmp_path), max_steps=2, num_samples=0))
    assert (
        run.summary["plan"]["optimizer_steps"] == 2 and "only 2 optimizer steps" in run.summary["plan"]["warnings"][0]
    )
    assert "sft: 215 examples -> 2 optimizer steps" in capsys.readouterr().out


def test_the_time_estimate_follows_the_data_s_sequence_length(monkeypatch):
    from rlhf_lab.stages import plan
    from rlhf_lab.stages.plan import estimate_seconds, padded_tokens

    monkeypatch.setattr(plan, "_timed", lambda model, decode: (1e-4, 1e-3))  # a timed forward, made exact

    def rows(chars):
        return [{"prompt": [{"role": "user", "content": "q" * 40}], "chosen": [{"role": "assistant", "content": "a" * chars}],
                 "rejected": [{"role": "assistant", "content": "b" * chars}]} for _ in range(20)]  # fmt: skip

    short, long = padded_tokens(rows(200)), padded_tokens(rows(800))
    assert short == round((40 + 200) / 4 + 16) and long == round((40 + 800) / 4 + 16)
    assert padded_tokens(None) is None and padded_tokens(300) is None
    config = lab.DPOConfig(output_dir="unused", max_length=1024)
    model = lab.tiny_model("causal", seed=0).model
    a, b = (estimate_seconds(config, "dpo", model, 10, tokens) for tokens in (short, long))
    assert b / a == pytest.approx(long / short), (a, b)
    kto = estimate_seconds(lab.KTOConfig(output_dir="unused"), "kto", model, 10, short)
    assert kto < a, "a KTO row is one completion, a DPO pair two"
