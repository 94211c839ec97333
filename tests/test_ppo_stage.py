"""The PPO engine end to end on tiny models: run folder, callbacks, ratio at the start, padding,
learning a toy reward, NaN guard, LoRA reference, separate critic, kill-and-resume."""

import json
import math

import pytest
import torch
from run_helpers import assert_same_run
from transformers import TrainerCallback

import rlhf_lab as lab
from rlhf_lab.config import ConfigError
from rlhf_lab.rewards import as_scorer
from rlhf_lab.stages.ppo import trainer as trainer_module

PROMPTS = [f"Tell me about topic {i}." for i in range(24)] + [
    "Hi",
    "A much longer prompt about the sea, the moon and rain?",
]
DESIGN_METRICS = [
    "objective/kl",
    "objective/scores",
    "objective/rlhf_reward",
    "objective/non_score_reward",
    "objective/entropy",
    "policy/clipfrac_avg",
    "policy/approxkl_avg",
    "policy/entropy_avg",
    "loss/policy_avg",
    "loss/value_avg",
    "val/clipfrac_avg",
    "val/ratio",
    "val/ratio_var",
    "val/num_eos_tokens",
    "val/explained_variance",
    "completions/mean_length",
    "time/rollout_s",
    "time/update_s",
    "throughput/tokens_per_s",
    "objective/kl_coef",
]


def vowels(prompts, completions):
    return [sum(ch in "aeiou" for ch in c) / max(1, len(c)) for c in completions]


def config(tmp_path, name="run", **overrides):
    values = dict(
        output_dir=str(tmp_path / name),
        total_updates=2,
        batch_size=4,
        mini_batch_size=2,
        ppo_epochs=2,
        max_new_tokens=8,
        learning_rate=1e-4,
        monitor=False,
        num_samples=2,
        seed=0,
    )
    return lab.PPOConfig(**{**values, **overrides})


class Recorder(TrainerCallback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.events.append("begin")

    def on_step_end(self, args, state, control, **kwargs):
        self.events.append(f"step{state.global_step}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.events.append(f"log{state.global_step}")
        self.logs = logs

    def on_train_end(self, args, state, control, **kwargs):
        self.events.append("end")


def test_run_folder_metrics_samples_and_callback_events(tiny_policy, tmp_path):
    recorder = Recorder()
    run = lab.ppo(tiny_policy, vowels, PROMPTS, config(tmp_path, monitor=True), callbacks=[recorder])
    folder = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "samples.jsonl", "run.json", "monitor.html"):
        assert (folder / name).exists(), name
    assert (folder / "model" / "model.safetensors").exists() and (folder / "model" / "value_head.safetensors").exists()
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for name in DESIGN_METRICS:
        assert name in rows[-1], name
    assert recorder.events == ["begin", "step1", "log1", "step2", "log2", "end"]
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert [s["update"] for s in samples] == [1, 1, 2, 2]
    assert set(samples[0]) >= {"prompt", "completion", "score", "components", "ended"}
    assert samples[0]["components"]["vowels"] == pytest.approx(vowels([], [samples[0]["completion"]])[0])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stage"] == "ppo" and summary["steps"] == 2 and summary["reference"] == "caller's model"
    reloaded = lab.load_run(folder)
    assert reloaded.stage == "ppo" and len(reloaded.metrics) == 2
    # the caller's model is its own reference: never trained
    assert any(not torch.equal(a, b) for a, b in zip(run.model.parameters(), tiny_policy.model.parameters()))


def test_first_minibatch_ratio_is_one_and_nothing_clipped(tiny_policy, tmp_path, monkeypatch):
    calls = []
    real = trainer_module.policy_loss

    def spy(logprobs, old, advantages, mask, cliprange):
        out = real(logprobs, old, advantages, mask, cliprange)
        calls.append((logprobs.detach(), old.detach(), mask, out))
        return out

    monkeypatch.setattr(trainer_module, "policy_loss", spy)
    lab.ppo(tiny_policy, vowels, PROMPTS, config(tmp_path, total_updates=1, learning_rate=1e-2))
    logprobs, old, mask, out = calls[0]
    assert (logprobs - old)[mask.bool()].abs().max() < 1e-5
    assert float(out.ratio_mean) == pytest.approx(1.0, abs=1e-6)
    assert float(out.clipfrac) == 0.0
    # with a large learning rate the later minibatches did move (the spy saw real updates)
    assert max(float(c[3].approx_kl) for c in calls[1:]) > 1e-6


def test_token_ids_at_padded_positions_change_nothing(tiny_policy, tmp_path):
    from rlhf_lab.models.chat import tokenize_prompts
    from rlhf_lab.stages.ppo.advantages import gae, token_rewards
    from rlhf_lab.stages.ppo.losses import policy_loss, value_loss
    from rlhf_lab.stages.ppo.model import ActorCritic, ValueHead
    from rlhf_lab.stages.ppo.rollout import make_rollout

    tok = tiny_policy.tokenizer
    actor = ActorCritic(tiny_policy.model, value_head=ValueHead(64))
    with torch.no_grad():
        actor.value_head.summary.weight.normal_()  # non-zero values, so the value loss is tested too
    ppo_trainer = trainer_module.PPOTrainer(
        actor, tok, as_scorer(vowels), PROMPTS, config(tmp_path), ref_model=lab.tiny_model("causal", seed=1).model
    )
    prompts = ["Hi", "A much longer prompt about the sea?", "Tell me a story."]
    query = tokenize_prompts(tok, prompts)
    tokens = torch.randint(100, 5000, (3, 6))
    tokens[0, 2] = tok.eos_token_id  # ends early: 3 real tokens, then padding
    tokens[1, 4] = tok.eos_token_id
    rollout = make_rollout(tok, prompts, query, tokens)
    assert rollout.response_mask.tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0], [1] * 6]
    assert rollout.query_mask.min() == 0  # the short prompts are left-padded

    def results(r):
        old = ppo_trainer.evaluate(r)
        m = r.response_mask
        shaped = token_rewards(torch.tensor([0.3, -1.0, 2.0]), old["logprobs"], old["ref_logprobs"], m, 0.1)
        adv, ret = gae(shaped.rewards, old["values"], m)
        out = actor(*r.model_inputs(), r.response_ids.shape[1], with_entropy=True)
        shifted = old["logprobs"] - 0.1 * m  # a stale policy, so the ratio is not 1
        pg = policy_loss(out.logprobs, shifted, adv, m)
        vf = value_loss(out.values, old["values"] + 0.05, ret, m)
        return [t.detach() for t in (pg.loss, pg.clipfrac, pg.approx_kl, vf.loss, *shaped.metrics().values())]

    before = results(rollout)
    garbled = rollout.to("cpu")
    garbled.query_ids = torch.where(
        rollout.query_mask.bool(), rollout.query_ids, torch.randint(5, 9000, rollout.query_ids.shape)
    )
    garbled.response_ids = torch.where(
        rollout.response_mask.bool(), rollout.response_ids, torch.randint(5, 9000, rollout.response_ids.shape)
    )
    assert not torch.equal(garbled.response_ids, rollout.response_ids)
    after = results(garbled)
    for a, b in zip(before, after):
        assert torch.allclose(a, b, atol=1e-6), (a, b)


def test_stop_strings_end_and_mask_a_completion(tiny_policy):
    from rlhf_lab.models.chat import tokenize_prompts
    from rlhf_lab.stages.ppo.rollout import make_rollout

    tok = tiny_policy.tokenizer
    ids = tok("Yes. Done\n\nextra words here", add_special_tokens=False).input_ids
    tokens = torch.tensor([ids, ids])
    rollout = make_rollout(tok, ["a", "b"], tokenize_prompts(tok, ["a", "b"]), tokens, stop=["\n\n"])
    assert rollout.completions == ["Yes. Done", "Yes. Done"]
    kept = int(rollout.response_mask[0].sum())
    assert "\n\n" in tok.decode(ids[:kept]) and "\n\n" not in tok.decode(ids[: kept - 1])
    assert rollout.ended.tolist() == [True, True]
    assert (rollout.response_ids[0, kept:] == tok.pad_token_id).all()
    no_stop = make_rollout(tok, ["a"], tokenize_prompts(tok, ["a"]), tokens[:1])
    assert not no_stop.ended[0] and no_stop.response_mask.sum() == len(ids)


def test_missing_eos_penalty_is_subtracted_from_unfinished_completions(tiny_policy, tmp_path):
    run = lab.ppo(
        tiny_policy,
        lambda p, c: [1.0] * len(c),
        PROMPTS,
        config(tmp_path, total_updates=1, missing_eos_penalty=2.5, num_samples=4),
    )
    rows = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    for row in rows:  # a random tiny model almost never samples EOS within 8 tokens
        assert row["score"] == pytest.approx(1.0 if row["ended"] else -1.5)
    assert run.summary["final"]["objective/scores_raw"] == pytest.approx(1.0)


def shared_direction_policy():
    """A tiny random model cannot learn 'emit more tokens of kind X' in 30 updates: nothing links
    X's 49k-vocabulary rows. Here the space-prefixed tokens share one embedding direction (frozen), so
    raising all of them is one direction for the network to learn: a learnable toy."""
    policy = lab.tiny_model("causal", seed=0)
    spaced = [i for token, i in policy.tokenizer.get_vocab().items() if token.startswith("Ġ")]
    with torch.no_grad():
        embeddings = policy.model.get_input_embeddings().weight
        embeddings[:, 1] = 1.0
        embeddings[spaced, 1] += 1.0
        policy.model.model.norm.weight[1] = 0.1
    policy.model.get_input_embeddings().weight.requires_grad_(False)
    return policy


def test_a_learnable_toy_reward_rises_while_kl_stays_bounded(tmp_path):
    def spaced_words(prompts, completions):  # about the fraction of space-prefixed tokens
        return [min(1.0, c.count(" ") / 12) for c in completions]

    run = lab.ppo(
        shared_direction_policy(),
        spaced_words,
        PROMPTS,
        config(
            tmp_path,
            total_updates=30,
            batch_size=8,
            mini_batch_size=8,
            ppo_epochs=4,
            max_new_tokens=12,
            learning_rate=1e-2,
            kl_coef=0.05,
            lr_scheduler_type="constant",
            num_samples=0,
        ),
    )
    scores = run.metrics["objective/scores"]
    first, last = scores.iloc[:5].mean(), scores.iloc[-5:].mean()
    assert last > first + 0.08, scores.round(3).tolist()
    assert run.metrics["objective/kl"].max() < 5.0
    assert run.metrics["train/skipped_nonfinite"].sum() == 0


class PoisonValueHead(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            model.value_head.summary.bias.fill_(math.nan)


def test_nan_guard_skips_then_aborts_with_a_clear_error(tiny_policy, tmp_path):
    with pytest.raises(FloatingPointError, match=r"the advantages went non-finite.*3 updates in a row"):
        lab.ppo(tiny_policy, vowels, PROMPTS, config(tmp_path, total_updates=5), callbacks=[PoisonValueHead()])
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/skipped_nonfinite"] for r in rows] == [1.0, 1.0]


def test_lora_reference_is_the_base_with_adapters_disabled(tiny_policy, tmp_path):
    run = lab.ppo(tiny_policy, vowels, PROMPTS, config(tmp_path, lora_r=4, learning_rate=1e-2))
    assert run.summary["reference"] == "base with adapters disabled"
    # LoRA's B starts at 0: the first rollout's policy is the reference, so its KL is exactly 0
    assert run.metrics["objective/kl"].iloc[0] == pytest.approx(0.0, abs=1e-6)
    assert run.metrics["objective/kl"].iloc[1] != 0.0
    assert (tmp_path / "run" / "model" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "run" / "model" / "model.safetensors").exists()


def test_separate_critic_starts_from_the_reward_model(tiny_policy, tiny_reward, tmp_path):
    run = lab.ppo(tiny_policy, tiny_reward, PROMPTS, config(tmp_path, critic="separate", entropy_coef=0.01))
    assert (tmp_path / "run" / "model" / "critic.safetensors").exists()
    assert run.summary["critic"] == "separate"
    assert run.metrics["val/mean"].iloc[0] != 0.0  # a zero-initialized head would start at exactly 0


def test_adaptive_kl_moves_beta_and_early_stop_cuts_epochs(tiny_policy, tmp_path):
    run = lab.ppo(
        tiny_policy,
        vowels,
        PROMPTS,
        config(
            tmp_path,
            total_updates=3,
            adaptive_kl=True,
            target_kl=1e-3,
            kl_horizon=10,
            learning_rate=1e-2,
            max_approx_kl=1e-12,
            ppo_epochs=3,
        ),
    )
    beta = run.metrics["objective/kl_coef"].tolist()
    assert beta[0] == pytest.approx(0.05) and beta[-1] != pytest.approx(0.05)
    assert run.metrics["policy/epochs"].tolist()[1:] == [1.0, 1.0]


class KillAfter(TrainerCallback):
    def __init__(self, update):
        self.update = update

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.update + 1:
            raise KeyboardInterrupt("killed")


def test_killed_and_resumed_run_matches_an_uninterrupted_one(tiny_policy, tmp_path):
    settings = dict(
        total_updates=4,
        save_every=2,
        normalize_rewards=True,
        adaptive_kl=True,
        target_kl=0.5,
        kl_horizon=100,
        learning_rate=1e-3,
    )
    whole = lab.ppo(tiny_policy, vowels, PROMPTS, config(tmp_path, "whole", **settings))
    with pytest.raises(KeyboardInterrupt):
        lab.ppo(tiny_policy, vowels, PROMPTS, config(tmp_path, "killed", **settings), callbacks=[KillAfter(2)])
    assert (tmp_path / "killed" / "checkpoints" / "update-000002" / "state.json").exists()
    resumed = lab.ppo(
        tiny_policy, vowels, PROMPTS, config(tmp_path, "killed", **settings), resume_from=tmp_path / "killed"
    )
    assert_same_run(whole, resumed, 4)
    assert resumed.summary["resumed_from"].endswith("update-000002")


def test_missing_or_bad_reward_is_a_config_error(tiny_policy, tmp_path):
    with pytest.raises(ConfigError, match="PPO needs a reward"):
        lab.ppo(tiny_policy, None, PROMPTS, config(tmp_path))
    with pytest.raises(ConfigError, match="cannot import 'nope' from 'rlhf_lab.tasks'"):
        lab.ppo(tiny_policy, "rlhf_lab.tasks:nope", PROMPTS, config(tmp_path))
    with pytest.raises(ConfigError, match="prompts are empty"):
        lab.ppo(tiny_policy, vowels, [], config(tmp_path))
    with pytest.raises(FileNotFoundError, match="holds no PPO checkpoint"):
        lab.ppo(tiny_policy, vowels, PROMPTS, config(tmp_path), resume_from=tmp_path)


def test_cli_ppo_runs_the_shipped_config_on_a_tiny_model(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable,
        "-m",
        "rlhf_lab",
        "ppo",
        "--config",
        str(root / "configs" / "ppo.yaml"),
        "--set",
        "model=tiny",
        "--set",
        "reward=task:concise",
        "--set",
        "data=task:concise",
        "--set",
        f"output_dir={tmp_path / 'cli'}",
        "--set",
        "total_updates=1",
        "--set",
        "batch_size=4",
        "--set",
        "max_new_tokens=6",
        "--set",
        "monitor=false",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ppo run finished" in out.stdout and "objective/kl" in out.stdout
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["reward"] == ["reward (concise)"]
    bad = subprocess.run([*cmd[:6], "--set", "kl_estimator=k9"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1 and "kl_estimator: unknown KL estimator 'k9'" in bad.stderr
