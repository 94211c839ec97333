"""Diagnostics: every rule fires once on a crafted stream, and none fires on healthy, noisy runs."""

import json
import math
import random

import numpy as np
import pytest

from rlhf_lab.monitor.diagnostics import RULES, Diagnostics, Thresholds, numeric


def healthy_ppo(steps=300, seed=0, **override):
    """A PPO-like stream shaped like TRL's logs: KL grows from 0 (noise grows with it), reward rises."""
    rng = random.Random(seed)
    for t in range(1, steps + 1):
        kl = 4 * (1 - math.exp(-t / 80))
        row = {
            "objective/kl": kl + rng.gauss(0, 0.1 * kl + 0.01),
            "objective/kl_coef": 0.05,
            "objective/scores": -1 + 2 * t / steps + rng.gauss(0, 0.3),
            "objective/entropy": 40 - 10 * t / steps + rng.gauss(0, 2),
            "policy/entropy_avg": 1.5 - 0.4 * t / steps + rng.gauss(0, 0.05),
            "policy/clipfrac_avg": max(0.0, 0.12 + rng.gauss(0, 0.04)),
            "val/clipfrac_avg": max(0.0, 0.25 + rng.gauss(0, 0.08)),
            "policy/approxkl_avg": abs(0.01 + rng.gauss(0, 0.005)),
            "completions/mean_length": 50 * (1 + 0.2 * t / steps) + rng.gauss(0, 3),
            "loss/policy_avg": rng.gauss(-0.01, 0.02),
            "loss/value_avg": 0.5 * math.exp(-t / 100) + abs(rng.gauss(0, 0.05)),
            "val/explained_variance": 0.6 * (1 - math.exp(-t / 50)) + rng.gauss(0, 0.05),
            "val/ratio": 1 + rng.gauss(0, 0.01),
            "grad_norm": abs(rng.gauss(1, 0.3)),
        }
        row["objective/rlhf_reward"] = row["objective/scores"] - 0.05 * row["objective/kl"]
        for name, fn in override.items():
            row[name.replace("__", "/")] = fn(t, row[name.replace("__", "/")], rng)
        yield t, row


def healthy_dpo(steps=200, seed=0, chosen_end=0.3):
    rng = random.Random(seed)
    for t in range(5, 5 * steps + 1, 5):
        f = t / (5 * steps)
        chosen = chosen_end * f + rng.gauss(0, 0.1)
        rejected = -1.5 * f + rng.gauss(0, 0.1)
        yield (
            t,
            {
                "rewards/chosen": chosen,
                "rewards/rejected": rejected,
                "rewards/margins": chosen - rejected,
                "rewards/accuracies": min(1.0, 0.5 + 0.4 * f + rng.gauss(0, 0.05)),
                "loss": 0.69 - 0.4 * f + rng.gauss(0, 0.03),
                "logps/chosen": -120 + rng.gauss(0, 5),
                "grad_norm": abs(rng.gauss(5, 2)),
                "learning_rate": 1e-6 * (1 - f),
                "epoch": f,
            },
        )


def healthy_sft_and_reward(steps=100, seed=0):
    rng = random.Random(seed)
    for t in range(1, steps + 1):
        yield (
            t,
            {
                "loss": 2.5 * math.exp(-t / 40) + 0.3 + rng.gauss(0, 0.05),
                "mean_token_accuracy": 0.3 + 0.004 * t,
                "accuracy": min(1.0, 0.5 + 0.004 * t + rng.gauss(0, 0.05)),
                "margin": 0.02 * t + rng.gauss(0, 0.2),
                "entropy": 3 * math.exp(-t / 30),
                "learning_rate": 2e-5,
                "num_tokens": 1000.0 * t,
            },
        )


def healthy_grpo(steps=100, seed=0, **override):
    """A GRPO/RLOO-like stream under TRL's names: reward rises, some groups tie, KL per token grows slowly."""
    rng = random.Random(seed)
    for t in range(1, steps + 1):
        f = t / steps
        row = {
            "reward": 0.2 + 0.4 * f + rng.gauss(0, 0.05),
            "reward_std": 0.3 + rng.gauss(0, 0.03),
            "frac_reward_zero_std": min(1.0, max(0.0, 0.3 + rng.gauss(0, 0.1))),
            "kl": 0.05 * f + abs(rng.gauss(0, 0.005)),
            "entropy": 1.2 - 0.3 * f + rng.gauss(0, 0.05),
            "completions/mean_length": 40 * (1 + 0.2 * f) + rng.gauss(0, 2),
            "completions/clipped_ratio": max(0.0, 0.1 + rng.gauss(0, 0.03)),
            "clip_ratio/region_mean": max(0.0, 0.01 + rng.gauss(0, 0.005)),
            "loss": rng.gauss(0, 0.02),
            "grad_norm": abs(rng.gauss(0.5, 0.2)),
        }
        for name, fn in override.items():
            row[name.replace("__", "/")] = fn(t, row[name.replace("__", "/")], rng)
        yield t, row


def run(stream, thresholds=None, config_kl_target=None):
    diag = Diagnostics(thresholds)
    diag.config_kl_target = config_kl_target
    for step, row in stream:
        diag.update(step, row)
    return diag


@pytest.mark.parametrize("seed", range(200))
def test_healthy_runs_raise_nothing(seed):
    assert run(healthy_ppo(seed=seed)).alerts == []
    assert run(healthy_dpo(seed=seed)).alerts == []
    # a chosen reward drifting down a little while the margin widens is normal DPO
    assert run(healthy_dpo(seed=seed, chosen_end=-0.1)).alerts == []
    assert run(healthy_sft_and_reward(seed=seed)).alerts == []
    assert run(healthy_grpo(seed=seed)).alerts == []


def after(step0, value):
    """A metric override: healthy until step0, then `value(t, rng)`."""
    return lambda t, old, rng: value(t, rng) if t >= step0 else old


CRAFTED = {
    "kl_negative": dict(objective__kl=after(40, lambda t, rng: -0.4 + rng.gauss(0, 0.05))),
    "kl_above_target": dict(objective__kl=after(100, lambda t, rng: 25 + rng.gauss(0, 2))),
    "clipfrac_high": dict(policy__clipfrac_avg=after(100, lambda t, rng: 0.45 + rng.gauss(0, 0.05))),
    "ratio_drift": dict(val__ratio=after(100, lambda t, rng: 1.3 + rng.gauss(0, 0.02))),
    "length_hacking": {"completions__mean_length": lambda t, old, rng: 50 + 0.4 * t + rng.gauss(0, 3)},
    "entropy_collapse": {"objective__entropy": lambda t, old, rng: 40 * math.exp(-t / 40) + abs(rng.gauss(0, 0.3))},
    "non_finite": dict(loss__policy_avg=after(120, lambda t, rng: float("nan"))),
}


CRAFTED_GROUPS = {
    "no_group_signal": {"frac_reward_zero_std": lambda t, old, rng: min(1.0, 0.9 + abs(rng.gauss(0, 0.03)))},
    "kl_runaway": dict(kl=after(60, lambda t, rng: 1.5 + rng.gauss(0, 0.1))),
    "entropy_collapse": dict(entropy=lambda t, old, rng: 1.2 * math.exp(-t / 15) + abs(rng.gauss(0, 0.01))),
    "length_hacking": {"completions__mean_length": lambda t, old, rng: 40 + 1.5 * t + rng.gauss(0, 2)},
}


@pytest.mark.parametrize("rule", sorted(CRAFTED_GROUPS))
def test_each_grpo_rule_fires_once_on_its_crafted_stream(rule):
    diag = run(healthy_grpo(**CRAFTED_GROUPS[rule]))
    assert [a.rule for a in diag.alerts] == [rule]
    assert diag.alerts[0].cause.endswith(".") and diag.alerts[0].remedy.endswith(".")


def test_a_falling_sft_entropy_and_a_large_kto_kl_are_not_rl_trouble():
    """SFT logs `entropy` and KTO `kl` under the names GRPO uses; without reward_std they are not RL metrics."""
    stream = ((t, {"entropy": 3 * math.exp(-t / 10), "kl": 5.0, "loss": 1.0}) for t in range(1, 100))
    assert run(stream).alerts == []


@pytest.mark.parametrize("rule", sorted(CRAFTED))
def test_each_ppo_rule_fires_once_on_its_crafted_stream(rule):
    diag = run(healthy_ppo(**CRAFTED[rule]))
    assert [a.rule for a in diag.alerts] == [rule]  # only this rule, and only once over 300 steps
    alert = diag.alerts[0]
    assert alert.message and alert.cause.endswith(".") and alert.remedy.endswith(".")
    assert alert.severity == ("error" if rule == "non_finite" else "warning")


def test_onset_steps_are_close_to_where_trouble_starts():
    steps = {r: run(healthy_ppo(**CRAFTED[r])).alerts[0].step for r in ("kl_negative", "clipfrac_high", "non_finite")}
    assert 40 <= steps["kl_negative"] <= 50 and 100 <= steps["clipfrac_high"] <= 110 and steps["non_finite"] == 120


def test_dpo_both_rewards_falling_while_margin_grows():
    def bad(steps=200):
        for t in range(5, 5 * steps + 1, 5):
            f = t / (5 * steps)
            chosen, rejected = -2 * f, -4 * f
            yield (
                t,
                {
                    "rewards/chosen": chosen,
                    "rewards/rejected": rejected,
                    "rewards/margins": chosen - rejected,
                    "loss": 0.69 - 0.3 * f,
                },
            )

    diag = run(bad())
    assert [a.rule for a in diag.alerts] == ["dpo_both_rewards_falling"]
    assert "rewards/chosen fell" in diag.alerts[0].message


def test_thresholds_are_configurable():
    stream = CRAFTED["clipfrac_high"]
    assert run(healthy_ppo(**stream), Thresholds(clipfrac_max=0.6)).alerts == []
    assert run(healthy_ppo(**stream), {"clipfrac_max": 0.6}).alerts == []
    # a tighter length-growth limit catches the healthy run's 20% growth in length while reward rises
    assert [a.rule for a in run(healthy_ppo(), {"length_growth": 0.1}).alerts] == ["length_hacking"]
    with pytest.raises(ValueError, match="unknown threshold"):
        Thresholds.coerce({"clip_max": 0.2})


def test_kl_target_from_log_then_threshold_then_config():
    stream = lambda: healthy_ppo()  # noqa: E731  final KL ~ 3.8
    assert run(stream()).alerts == []  # default target 6: limit 18
    assert [a.rule for a in run(stream(), config_kl_target=1.0).alerts] == ["kl_above_target"]
    assert run(stream(), {"kl_target": 2.0}, config_kl_target=1.0).alerts == []  # explicit threshold wins
    logged = healthy_ppo(objective__kl_coef=lambda t, old, rng: old)
    rows = [(s, {**r, "objective/kl_target": 1.0}) for s, r in logged]
    diag = run(iter(rows), {"kl_target": 2.0})
    assert [a.rule for a in diag.alerts] == ["kl_above_target"] and "target 1" in diag.alerts[0].message


def test_an_isolated_inf_grad_norm_is_tolerated_but_a_sustained_one_fires():
    diag = Diagnostics()
    for t in range(1, 30):
        diag.update(t, {"loss": 1.0, "grad_norm": math.inf if t == 10 else 1.0})
    assert diag.alerts == []
    for t in range(30, 40):
        diag.update(t, {"loss": 1.0, "grad_norm": math.nan})
    assert [a.rule for a in diag.alerts] == ["non_finite"] and "grad_norm" in diag.alerts[0].message


def test_an_undefined_explained_variance_is_no_overflow():
    diag = Diagnostics()  # every reward equal: constant returns, explained variance NaN by definition
    for t in range(1, 30):
        diag.update(t, {"loss/policy_avg": 0.1, "val/explained_variance": math.nan})
    assert diag.alerts == []
    diag.update(30, {"loss/policy_avg": math.nan, "val/explained_variance": math.nan})
    assert [a.rule for a in diag.alerts] == ["non_finite"] and "explained" not in diag.alerts[0].message


def test_alerts_are_json_safe_and_every_rule_has_a_cause_and_remedy():
    diag = run(healthy_ppo(**CRAFTED["non_finite"]))
    assert json.loads(json.dumps(diag.summary()))[0]["rule"] == "non_finite"
    assert set(diag.summary()[0]) == {"rule", "step", "message", "cause", "remedy", "severity"}
    for rule in RULES:
        assert rule.cause.count(". ") == 0 and rule.remedy  # one sentence each


def test_numeric_keeps_only_real_numbers():
    import torch

    logs = {
        "loss": 1,
        "flag": True,
        "note": "x",
        "t": torch.tensor(0.5),
        "n": np.float32(2.0),
        "v": torch.ones(2),
    }
    assert numeric(logs) == {"loss": 1.0, "t": 0.5, "n": 2.0}


def stuck(steps=60, seed=0, kind="dpo"):
    """What a run at a learning rate far too small logs: nothing moves."""
    rng = random.Random(seed)
    for t in range(1, steps + 1):
        if kind == "dpo":
            row = {
                "rewards/chosen": rng.gauss(0, 0.001),
                "rewards/rejected": rng.gauss(0, 0.001),
                "rewards/accuracies": 0.5 + rng.gauss(0, 0.1),
                "loss": 0.6931 + rng.gauss(0, 0.0003),
            }
            row["rewards/margins"] = row["rewards/chosen"] - row["rewards/rejected"]
        elif kind == "reward":
            row = {"accuracy": 0.5 + rng.gauss(0, 0.04), "margin": rng.gauss(0, 0.02), "loss": 0.693}
        elif kind == "ppo":
            row = {"objective/kl": rng.gauss(0, 0.001), "objective/scores": 0.3 + rng.gauss(0, 0.05)}
        elif kind == "grpo":
            row = {"kl": 0.0, "reward": 0.3 + rng.gauss(0, 0.05), "reward_std": 0.2, "frac_reward_zero_std": 0.3}
        else:  # sft
            row = {"loss": 2.5 + rng.gauss(0, 0.05), "mean_token_accuracy": 0.3 + rng.gauss(0, 0.01)}
        yield t, row


@pytest.mark.parametrize(
    "kind, rule, by_log",
    [
        ("dpo", "preference_not_learning", 10),  # the bar: a DPO run at 1e-7 within its first 10 logs
        ("reward", "reward_model_not_learning", 25),
        ("ppo", "rl_not_learning", 20),
        ("grpo", "rl_not_learning", 20),
        ("sft", "sft_not_learning", 20),
    ],
)
@pytest.mark.parametrize("seed", range(5))
def test_a_run_that_is_not_learning_says_so_early(kind, rule, by_log, seed):
    diag = run(stuck(kind=kind, seed=seed))
    assert [a.rule for a in diag.alerts] == [rule]
    assert diag.alerts[0].step <= by_log


def test_the_remedy_names_the_field_and_a_value_for_this_model():
    diag = Diagnostics()
    diag.context = {"stage": "dpo", "learning_rate": 1e-7, "steps": 30, "parameters": 135e6, "lora": False}
    for step, row in stuck():
        diag.update(step, row)
    assert diag.alerts[0].remedy == (
        "learning_rate 1e-07 is small for a 135M-parameter model trained for 30 steps; try 2e-05 (0.0002 with LoRA)."
    )
    generic = run(stuck()).alerts[0].remedy  # no context (a monitor fed by hand): a remedy still
    assert "Raise learning_rate" in generic


def test_the_monitor_reads_the_context_from_the_trainer(tiny_policy, tmp_path):
    import rlhf_lab as lab

    monitor = lab.LiveMonitor(live=False)
    lab.dpo(
        tiny_policy,
        "starter",
        lab.DPOConfig(output_dir=str(tmp_path), max_steps=2, learning_rate=1e-7, num_samples=0, logging_steps=1),
        callbacks=[monitor],
    )
    ctx = monitor.diagnostics.context
    assert ctx["stage"] == "dpo" and ctx["learning_rate"] == 1e-7 and ctx["steps"] == 2 and ctx["parameters"] > 1e6
