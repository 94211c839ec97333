"""`lab.PPOSession`: PPO one update at a time (rollout -> score or rewards by hand -> step), the same engine as
`lab.ppo` (which runs a session to the end): same metrics and weights at the same seed, hand-set rewards
used as given, stale or unrewarded batches refused, save/load continuing exactly."""

import json

import pytest
import torch
from run_helpers import TIMING

import rlhf_lab as lab
from rlhf_lab.stages.ppo import BatchError

PROMPTS = ["Say hi.", "Name a colour.", "Count to three.", "Pick a fruit.", "Tell a joke.", "Greet me."]


def vowels(prompts, completions):
    return [sum(ch in "aeiou" for ch in c) / max(1, len(c)) for c in completions]


def config(tmp_path, name, **overrides):
    values = dict(output_dir=str(tmp_path / name), total_updates=4, batch_size=4, mini_batch_size=2, ppo_epochs=2,
                  max_new_tokens=8, learning_rate=1e-3, num_samples=2, seed=0, monitor=False)  # fmt: skip
    return lab.PPOConfig(**{**values, **overrides})


def same_metrics(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) >= 2
    for x, y in zip(a, b):
        keys = [k for k in x if not k.startswith(TIMING)]
        assert keys == [k for k in y if not k.startswith(TIMING)]
        assert [y[k] for k in keys] == pytest.approx([x[k] for k in keys], abs=1e-6, nan_ok=True), x["step"]


def same_weights(a, b) -> None:
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_a_session_stepped_by_hand_is_lab_ppo(tmp_path):
    policy = lab.tiny_model("causal", seed=0)
    whole = lab.ppo(policy, vowels, PROMPTS, config(tmp_path, "whole"))

    session = lab.PPOSession(policy, vowels, PROMPTS, config(tmp_path, "by-hand"))
    for update in range(4):
        batch = session.rollout()
        assert len(batch) == 4 and batch.version == update and batch.rewards is None
        session.score(batch)
        assert len(batch.rewards) == 4
        logs = session.step(batch)
        assert session.updates == update + 1 and "objective/kl" in logs
    by_hand = session.finish()
    same_metrics(whole.metrics.to_dict("records"), by_hand.metrics.to_dict("records"))
    same_weights(whole.model, by_hand.model)
    assert by_hand.summary["steps"] == 4 and (tmp_path / "by-hand" / "run.json").exists()
    assert lab.load_run(tmp_path / "by-hand").summary["reward"] == whole.summary["reward"]


def test_hand_set_rewards_are_used_as_given(tmp_path):
    raw = dict(normalize_rewards=False, reward_clip=None, missing_eos_penalty=None, total_updates=2)
    scored = lab.PPOSession(lab.tiny_model("causal", seed=0), vowels, PROMPTS, config(tmp_path, "scored", **raw))
    by_hand = lab.PPOSession(lab.tiny_model("causal", seed=0), None, PROMPTS, config(tmp_path, "hand", **raw))
    given = [0.25, -1.0, 2.0, 0.5]
    for session in (scored, by_hand):
        batch = session.rollout()
        if session is scored:
            session.score(batch, reward=lambda prompts, completions: given)  # a reward passed to score
        else:
            batch.rewards = list(given)  # by hand
        logs = session.step(batch)
        assert logs["objective/scores_raw"] == pytest.approx(sum(given) / 4)
        assert logs["objective/scores"] == pytest.approx(sum(given) / 4)  # no normalization: verbatim
    same_weights(scored.policy, by_hand.policy)
    run = by_hand.finish()
    assert run.summary["reward"] == ["set by hand"]
    rows = [json.loads(line) for line in (tmp_path / "hand" / "samples.jsonl").read_text().splitlines()]
    assert [r["score"] for r in rows] == given[:2]  # samples.jsonl holds the rewards paid


def test_stale_unrewarded_and_malformed_batches_are_refused(tmp_path):
    session = lab.PPOSession(lab.tiny_model("causal", seed=0), vowels, PROMPTS, config(tmp_path, "s"))
    first = session.rollout()
    with pytest.raises(BatchError, match=r"has no rewards\. Fix: session\.score\(batch\)"):
        session.step(first)
    first.rewards = [1.0, 2.0]
    with pytest.raises(BatchError, match="batch.rewards has 2 values for 4 completions"):
        session.step(first)
    first.rewards = [1.0, float("nan"), 0.0, 0.0]
    with pytest.raises(BatchError, match=r"batch.rewards\[1\] is nan, not a finite number"):
        session.step(first)
    assert session.updates == 0  # nothing changed
    stale = session.rollout()
    session.score(first)
    session.step(first)
    session.score(stale)
    with pytest.raises(BatchError, match="rolled out by the policy after 0 updates; it has had 1 since"):
        session.step(stale)
    session.step(session.score(session.rollout()))
    assert session.updates == 2
    session.finish()
    with pytest.raises(BatchError, match="this session has finished"):
        session.step(stale)


def test_without_a_reward_score_says_what_to_do(tmp_path):
    session = lab.PPOSession(lab.tiny_model("causal", seed=0), None, PROMPTS, config(tmp_path, "s"))
    with pytest.raises(BatchError, match=r"no reward to score with\. Fix: session\.score\(batch, reward=\.\.\.\)"):
        session.score(session.rollout())
    with pytest.raises(lab.ConfigError, match="PPO needs a reward"):
        lab.ppo(lab.tiny_model("causal", seed=0), None, PROMPTS, config(tmp_path, "p"))


def test_save_and_load_continue_exactly(tmp_path):
    def steps(session, n):
        return [session.step(session.score(session.rollout())) for _ in range(n)]

    session = lab.PPOSession(lab.tiny_model("causal", seed=0), vowels, PROMPTS, config(tmp_path, "a"))
    steps(session, 2)
    saved = session.save(tmp_path / "saved")
    assert saved.name == "update-000002" and (saved / "state.json").exists()
    later = steps(session, 2)
    whole = session.finish()

    loaded = lab.PPOSession.load(tmp_path / "saved", lab.tiny_model("causal", seed=0), vowels, PROMPTS,
                                 config=config(tmp_path, "b"))  # fmt: skip
    assert loaded.updates == 2
    again = steps(loaded, 2)
    same_metrics([{**r, "step": i} for i, r in enumerate(later)], [{**r, "step": i} for i, r in enumerate(again)])
    same_weights(whole.model, loaded.finish().model)


def test_a_batch_shows_as_a_table_with_text_as_text(tmp_path):
    session = lab.PPOSession(lab.tiny_model("causal", seed=0), vowels, PROMPTS, config(tmp_path, "s"))
    batch = session.rollout(["Say <b>hi</b>.", "Name a colour."])
    assert len(batch) == 2 and batch.prompts[0] == "Say <b>hi</b>."
    batch.rollout.completions[1] = "<script>alert(1)</script>"
    page = batch._repr_html_()
    assert "&lt;script&gt;" in page and "<script>" not in page and "&lt;b&gt;hi&lt;/b&gt;" in page
    assert "not scored yet" in page and list(batch.table().columns) == ["prompt", "completion", "reward", "ended"]
    query_ids, response_ids = batch.token_ids
    assert batch.logprobs.shape == batch.values.shape == response_ids.shape == batch.masks[1].shape
    session.score(batch)
    assert batch.table()["reward"].tolist() == pytest.approx(vowels(batch.prompts, batch.completions))
