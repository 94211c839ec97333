"""Defaults end to end (benchmarks/defaults_e2e.py): the pipeline on a tiny model in CI, the real thing opt-in."""

import json

import pytest


def test_the_pipeline_runs_on_a_tiny_model_and_resumes(tmp_path, benchmark_script):
    script = benchmark_script("defaults_e2e")
    # a preference stage and the reward model -> RL path (KTO and GRPO take the same routes; their stage tests
    # cover them): the whole script would cost minutes of CI
    argv = ["--tiny", "--quick", "--stages", "dpo,ppo", "--eval-prompts", "4", "--repeats", "1", "--out", str(tmp_path)]
    results = script.main(argv)
    assert set(results["gold_diff"]) == {"dpo", "ppo"} and results["quick"] is True
    # the stages derived their learning rates from the model (nothing set one)
    assert all("learning_rate" in results["derived"][name] for name in results["gold_diff"])
    assert json.loads((tmp_path / "results.json").read_text())["labels"] == results["labels"] > 0
    # --resume reuses the labels and every run folder: nothing is trained again
    again = script.main([*argv, "--resume"])
    assert set(again["seconds"]) == {"evaluate"} and again["gold"]["dpo"] == pytest.approx(results["gold"]["dpo"])
    with pytest.raises(SystemExit):
        script.parse_args(["--stages", "dpo,sft"])


@pytest.mark.slow
@pytest.mark.embedded
def test_every_stage_with_its_defaults_beats_the_start_policy_on_held_out_gold(tmp_path, benchmark_script):
    """The issue's bar: at most 300 labels, only output_dir set, the CI of each gold difference above 0."""
    results = benchmark_script("defaults_e2e").main(["--out", str(tmp_path)])
    assert results["labels"] <= 300
    assert all(diff[1] > 0 for diff in results["gold_diff"].values()), results["gold_diff"]
