"""`lab.HumanReward`: a rollout batch rated item by item in the label store becomes the batch's rewards. A
simulated annotator drives it headless and PPO learns its taste; a batch is refused until fully rated; a
killed process loses no acknowledged rating."""

import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

import rlhf_lab as lab
from rlhf_lab.labeling.human import item_rewards
from rlhf_lab.stages.ppo import BatchError


def test_decisions_become_rewards():
    assert item_rewards("A", 2) == [0.5, -0.5] and item_rewards("B", 2) == [-0.5, 0.5]
    assert item_rewards("tie", 2) == [0.0, 0.0] and item_rewards("both_bad", 3) == [-0.5] * 3
    assert item_rewards([2, 0, 1], 3) == [0.0, -0.5, 0.5]  # a ranking, best first
    assert item_rewards(None, 2) is None and item_rewards("skip", 2) is None


def test_scores_become_rewards():
    assert item_rewards({"scores": [1, 3, 5]}, 3) == [-0.5, 0.0, 0.5]
    assert item_rewards({"scores": [4, 2]}, 2) == [0.25, -0.25]


def test_rating_mode_scores_each_completion_and_repeats_share_a_score(tmp_path):
    human = lab.HumanReward(tmp_path / "labels.sqlite", annotator="ana", mode="rating", group=3)
    prompts = ["Say hi."] * 3 + ["Count."] * 3
    completions = ["Hi!", "Hello there!", "Hi!", "1 2 3", "1 2 3", "1 2 3"]
    session = human.ask(SimpleNamespace(prompts=prompts, completions=completions))
    assert session.rating and session.responses == ["Hi!", "Hello there!"]  # the repeat is shown once
    assert human.store.pending("ana") == 1  # three identical completions: nothing to ask
    with pytest.raises(BatchError, match=r"1 item\(s\) of this batch are not rated yet"):
        human(prompts, completions)
    session.press("5")
    session.press("2")
    assert human(prompts, completions) == [0.5, -0.25, 0.5, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="mode 'stars' is unknown"):
        lab.HumanReward(tmp_path / "labels.sqlite", mode="stars")


def test_a_simulated_annotator_rates_by_its_gold():
    annotator = lab.SimulatedAnnotator(lambda p, c: len(c) / 4, temperature=0.0)
    assert annotator.rate("p", ["", "ab", "abcd"]) == [1, 3, 5]
    noisy = lab.SimulatedAnnotator(lambda p, c: 0.5, temperature=0.5, seed=1)
    scores = [s for _ in range(50) for s in noisy.rate("p", ["a", "b"])]
    assert set(scores) > {2, 3, 4} and min(scores) >= 1 and max(scores) <= 5


def test_a_batch_is_rewarded_only_once_every_item_is_rated(tmp_path):
    human = lab.HumanReward(tmp_path / "labels.sqlite", annotator="ana")
    prompts = ["Say hi.", "Say hi.", "Name a colour.", "Name a colour.", "Count.", "Count."]
    completions = ["Hi!", "Hello there, friend!", "Blue.", "Blue.", "1 2 3", "one, two, three"]
    batch = SimpleNamespace(prompts=prompts, completions=completions)
    session = human.ask(batch)
    assert human.store.pending("ana") == 2  # the identical pair (Blue./Blue.) is not asked about
    with pytest.raises(BatchError, match=r"2 item\(s\) of this batch are not rated yet by 'ana'"):
        human(prompts, completions)
    session.submit("B")
    with pytest.raises(BatchError, match=r"1 item\(s\)"):
        human(prompts, completions)
    session.submit("tie")
    assert human(prompts, completions) == [-0.5, 0.5, 0.0, 0.0, 0.0, 0.0]


def test_ratings_survive_a_killed_kernel(tmp_path):
    store = tmp_path / "labels.sqlite"
    prompts = ["Say hi.", "Say hi.", "Count.", "Count.", "Name a fruit.", "Name a fruit."]
    completions = ["Hi!", "Hello!", "1 2 3", "one two three", "Apple.", "A ripe mango."]
    script = textwrap.dedent(f"""
        import os, signal
        from types import SimpleNamespace
        import rlhf_lab as lab
        human = lab.HumanReward({str(store)!r}, annotator="ana")
        session = human.ask(SimpleNamespace(prompts={prompts!r}, completions={completions!r}))
        session.submit("A")
        session.submit("B")
        print("acknowledged", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # the kernel dies mid-batch
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert "acknowledged" in result.stdout and result.returncode == -9, result.stderr[-2000:]
    human = lab.HumanReward(store, annotator="ana")
    with pytest.raises(BatchError, match=r"1 item\(s\) of this batch are not rated yet"):
        human(prompts, completions)
    session = human.ask(SimpleNamespace(prompts=prompts, completions=completions))
    assert human.store.pending("ana") == 1 and not session.done  # only the unrated item is asked again
    session.submit("A")
    assert human(prompts, completions) == [0.5, -0.5, -0.5, 0.5, 0.5, -0.5]


@pytest.mark.parametrize("mode", ["pairwise", "rating"])
def test_a_simulated_annotator_as_the_reward_teaches_ppo_its_taste(tmp_path, mode):
    task = lab.task("variety")
    annotator = lab.SimulatedAnnotator(task, temperature=0.1, seed=0, ties=False)
    human = lab.HumanReward(tmp_path / "labels.sqlite", annotator="sim", mode=mode, simulate=annotator)
    policy = lab.tiny_model("causal", seed=0)
    config = lab.PPOConfig(output_dir=str(tmp_path / "ppo"), total_updates=10, batch_size=8, mini_batch_size=4,
                           max_new_tokens=8, learning_rate=1e-2, lora_r=8, temperature=0.1, seed=0, monitor=False)  # fmt: skip
    session = lab.PPOSession(policy, None, task.prompts("train"), config)
    for _ in range(10):
        batch = human.rollout(session)
        assert len(batch) == 8 and batch.prompts[0] == batch.prompts[1]
        session.step(human.score(batch))
    run = session.finish()
    assert run.summary["steps"] == 10 and len(human.store.events(annotator="sim")) >= 10
    test = task.prompts("test")[:16]
    table = lab.compare([policy, run], test, gold=task, max_new_tokens=8, temperature=0.1, seed=0, show=False)
    gain = table.loc[run.name, "gold_diff_mean"]
    assert gain > 0.1 and table.loc[run.name, "gold_diff_lo"] > 0, table[["gold_mean", "gold_diff_mean"]]
