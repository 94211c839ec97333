"""GRPO end to end (benchmarks/grpo_e2e.py): the pipeline on a tiny model in CI, the real thing opt-in."""

import json

import pytest


def test_the_pipeline_runs_on_a_tiny_model(tmp_path, benchmark_script):
    results = benchmark_script("grpo_e2e").main(
        ["--tiny", "--steps", "2", "--eval-prompts", "4", "--repeats", "1", "--out", str(tmp_path)]
    )
    assert set(results["gold"]) == {"start", "grpo", "ppo"} and set(results["gold_diff"]) == {"grpo", "ppo"}
    # 2 steps x the default 16 completions per step (2 prompts x 8 samples)
    assert results["completions_per_method"] == 2 * 16 and results["seconds_per_step"]["grpo"] > 0
    assert json.loads((tmp_path / "results.json").read_text())["task"] == "concise"


@pytest.mark.slow
@pytest.mark.embedded
def test_grpo_beats_the_start_policy_on_held_out_gold(tmp_path, benchmark_script):
    """The issue's bar: at most 40 steps on the embedded model, the CI of the gold difference above 0."""
    results = benchmark_script("grpo_e2e").main(["--steps", "40", "--no-ppo", "--out", str(tmp_path)])
    assert results["gold_diff"]["grpo"][1] > 0, results["gold_diff"]
