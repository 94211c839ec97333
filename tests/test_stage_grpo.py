"""GRPO and RLOO on TRL's trainers, with the lab's rewards, run folders and checks: tiny models only."""

import json

import numpy as np
import pytest
import torch

import rlhf_lab as lab
from rlhf_lab.config import ConfigError, from_dict
from rlhf_lab.rewards import RewardEnsemble
from rlhf_lab.stages.grpo import GRPO_LOSS_TYPES
from rlhf_lab.stages.online import is_trl_reward

PROMPTS = ["Say hi.", "Name a colour.", "Count to three.", "What is 2+2?"]
STAGES = {"grpo": (lab.grpo, lab.GRPOConfig), "rloo": (lab.rloo, lab.RLOOConfig)}


def vowels(prompts, completions):
    """Dense and varied on a random model's text: every group has something to compare."""
    return [sum(ch in "aeiou" for ch in c) / max(1, len(c)) for c in completions]


def letters(prompts, completions):
    return [float(sum(ch.isalpha() for ch in c)) for c in completions]


def config(stage, tmp_path, name="run", **overrides):
    values = dict(
        output_dir=str(tmp_path / name),
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        learning_rate=1e-2,
        num_samples=2,
        seed=0,
        disable_tqdm=True,
        monitor=False,
    )
    return STAGES[stage][1](**{**values, **overrides})


def train(stage, tmp_path, policy, reward=vowels, **overrides):
    return STAGES[stage][0](policy, reward, PROMPTS, config(stage, tmp_path, **overrides))


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_a_step_changes_every_trainable_parameter_and_not_the_callers_model(stage, tmp_path, tiny_policy):
    before = {n: p.detach().clone() for n, p in tiny_policy.model.named_parameters()}
    run = train(stage, tmp_path, tiny_policy, max_steps=1, beta=0.0)
    unchanged = [n for n, p in run.model.named_parameters() if torch.equal(p.detach().cpu(), before[n])]
    assert unchanged == []
    assert all(torch.equal(p, before[n]) for n, p in tiny_policy.model.named_parameters())
    assert run.summary["steps"] == 1 and run.summary["reference"].startswith("none")


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_the_run_folder_holds_every_file_and_reloads(stage, tmp_path, tiny_policy):
    run = train(stage, tmp_path, tiny_policy, monitor=True)
    folder = run.output_dir
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "samples.jsonl", "run.json", "monitor.html"):
        assert (folder / name).is_file(), name
    assert (folder / "model" / "model.safetensors").is_file()
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1, 2]
    assert {"reward", "reward_std", "frac_reward_zero_std", "kl", "entropy", "completions/mean_length"} <= set(rows[0])
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [1, 1, 2, 2]  # num_samples=2 per logged step
    for s in samples:
        assert s["rewards"]["vowels"] == pytest.approx(vowels([], [s["completion"]])[0])
        assert s["reward"] == pytest.approx(s["rewards"]["vowels"])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stage"] == stage and summary["reference"] == "caller's model" and summary["beta"] > 0
    again = lab.load_run(folder)
    ids = again.tokenizer(["Say hi."], return_tensors="pt")
    torch.testing.assert_close(again.model(**ids).logits, run.model(**ids).logits)


def test_every_reward_form_works(tmp_path, tiny_policy, tiny_reward):
    member = lab.RewardModel(model=tiny_reward.model, tokenizer=tiny_reward.tokenizer, name="rm")

    class Fixed:
        name = "fixed"

        def score(self, prompts, completions, **kwargs):
            return [float(len(c) % 3) for c in completions]

    forms = {
        "bundle": member,
        "pair": (tiny_reward.model, tiny_reward.tokenizer),
        "ensemble": RewardEnsemble(members=[member, Fixed()], aggregate="mean_minus_std", lam=0.5),
        "callable": vowels,
        "task": lab.task("arithmetic"),
        "list": [vowels, letters],
    }
    for name, reward in forms.items():
        extra = {"reward_weights": [1.0, 0.1]} if name == "list" else {}
        prompts = reward.prompts("train")[:8] if name == "task" else PROMPTS
        run = lab.grpo(tiny_policy, reward, prompts, config("grpo", tmp_path, name, max_steps=1, **extra))
        assert np.isfinite(run.summary["reward"]), name
    assert run.summary["reward_functions"] == ["vowels", "letters"]


def test_trl_reward_functions_are_called_the_trl_way(tmp_path, tiny_policy):
    from trl.rewards import think_format_reward

    assert is_trl_reward(think_format_reward) and not is_trl_reward(vowels)
    run = lab.grpo(tiny_policy, [think_format_reward, vowels], PROMPTS, config("grpo", tmp_path, max_steps=1))
    samples = [json.loads(line) for line in (run.output_dir / "samples.jsonl").read_text().splitlines()]
    assert samples[0]["rewards"]["think_format_reward"] == 0.0  # no <think> block in a random model's text


def test_a_reward_run_folder_and_a_task_name_from_the_config(tmp_path, tiny_policy):
    run = lab.grpo(
        tiny_policy, None, "task:arithmetic", config("grpo", tmp_path, max_steps=1, reward="task:arithmetic")
    )
    assert run.summary["reward_functions"] == ["arithmetic"] and run.summary["prompts"] == len(
        lab.task("arithmetic").prompts("train")
    )


def test_lora_trains_adapters_with_the_base_as_reference(tmp_path, tiny_policy):
    run = train("grpo", tmp_path, tiny_policy, lora_r=4, max_steps=1)
    assert hasattr(run.model, "peft_config") and run.summary["reference"] == "base with adapters disabled"
    assert (run.output_dir / "model" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_generations": 1}, "num_generations must be an integer >= 2"),
        ({"num_generations": 3}, "not a whole number of groups of num_generations=3"),
        ({"batch_size": 8, "per_device_train_batch_size": 2, "num_generations": 3}, "multiple of 3"),
        ({"beta": -0.1}, "beta must be a number >= 0"),
        ({"epsilon": 0.0}, "epsilon must be a number > 0"),
        ({"epsilon_high": 0.1}, "epsilon_high must be >= epsilon"),
        ({"temperature": 0.0}, "temperature must be a number > 0"),
        ({"generation_backend": "tpu"}, "generation_backend must be one of"),
        ({"learning_rate": -1.0}, "learning_rate must be a number >= 0"),
    ],
)
@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_bad_values_fail_before_any_model_loads(stage, overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        config(stage, tmp_path, **overrides)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"loss_type": "ppo"}, f"loss_type: unknown 'ppo'. Fix: use one of {', '.join(GRPO_LOSS_TYPES)}"),
        ({"importance_sampling_level": "word"}, "importance_sampling_level: unknown 'word'"),
        ({"scale_rewards": "prompt"}, "scale_rewards: unknown 'prompt'"),
        ({"loss_type": "luspo"}, "importance_sampling_level='sequence'"),
    ],
)
def test_grpo_specific_bad_values(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        config("grpo", tmp_path, **overrides)


def test_gspo_and_every_loss_type_are_accepted(tmp_path):
    assert {"grpo", "dr_grpo", "dapo", "bnpo", "cispo"} <= set(GRPO_LOSS_TYPES)
    for loss_type in GRPO_LOSS_TYPES:
        level = "sequence" if loss_type == "luspo" else "token"
        assert config("grpo", tmp_path, loss_type=loss_type, importance_sampling_level=level).loss_type == loss_type
    assert config("grpo", tmp_path, scale_rewards=False).scale_rewards == "none"


def test_a_reward_that_returns_the_wrong_number_fails_before_the_policy_loads(tmp_path):
    def short(prompts, completions):
        return [1.0] * (len(completions) - 1)

    # the policy is a name that would take a while to load: the probe fails first, with the reward's name
    with pytest.raises(ConfigError, match=r"reward \(short\) returned 1 scores .*one finite number per completion"):
        lab.grpo("no-such-model-is-loaded", short, PROMPTS, config("grpo", tmp_path))
    with pytest.raises(ConfigError, match="reward_weights has 1 weights for 2 rewards"):
        lab.grpo("no-such-model", [vowels, letters], PROMPTS, config("grpo", tmp_path, reward_weights=[1.0]))
    with pytest.raises(ConfigError, match="GRPO needs a reward"):
        lab.grpo("no-such-model", None, PROMPTS, config("grpo", tmp_path))
    with pytest.raises(ConfigError, match="reward arithmetic failed on a training prompt .*belong together"):
        lab.grpo("no-such-model", lab.task("arithmetic"), PROMPTS, config("grpo", tmp_path))


def test_the_config_round_trips_through_yaml_and_the_shipped_configs_load(tmp_path):
    from pathlib import Path

    from rlhf_lab.config import load_config, to_dict

    root = Path(__file__).resolve().parents[1]
    for stage in ("grpo", "rloo"):
        loaded = load_config(STAGES[stage][1], root / "configs" / f"{stage}.yaml")
        assert loaded.reward == "task:arithmetic" and loaded.num_generations == 8
        again = from_dict(STAGES[stage][1], to_dict(config(stage, tmp_path)))
        assert again.num_generations == 2 and again.max_completion_length == 8


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_the_generation_backend_picks_trls_vllm_colocate_mode(stage, tmp_path, monkeypatch):
    from rlhf_lab.stages import online

    # 'hf' and 'auto' without a GPU leave TRL on transformers generate
    for backend in ("hf", "auto"):
        chosen = config(stage, tmp_path, generation_backend=backend)
        online.use_vllm(chosen)
        assert chosen.use_vllm is (backend == "auto" and torch.cuda.is_available() and online.vllm_installed())
    # 'vllm' where vLLM cannot run names what is missing and the fix
    if not (torch.cuda.is_available() and online.vllm_installed()):
        with pytest.raises(ConfigError, match="generation_backend='vllm' needs vLLM and a CUDA GPU. Fix: .*hf"):
            online.use_vllm(config(stage, tmp_path, generation_backend="vllm"))
    # where it can: vLLM inside the training process, sharing the GPU (configs built first: TrainingArguments
    # would set up the pretend GPU); a user who chose TRL's server mode keeps it
    chosen, server = config(stage, tmp_path), config(stage, tmp_path, use_vllm=True, vllm_mode="server")
    monkeypatch.setattr(online, "vllm_installed", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    online.use_vllm(chosen)
    online.use_vllm(server)
    assert (chosen.use_vllm, chosen.vllm_mode, server.vllm_mode) == (True, "colocate", "server")


def test_the_monitor_page_is_drawn_once_with_the_samples(tmp_path, tiny_policy, monkeypatch):
    from rlhf_lab.monitor.live import LiveMonitor

    pages = []
    draw = LiveMonitor.write_html
    monkeypatch.setattr(LiveMonitor, "write_html", lambda self, *a, **k: pages.append(len(self.samples)) or draw(self))
    train("grpo", tmp_path, tiny_policy, monitor=True)
    # not at train end and again when the run folder is finished: once, after the samples arrived
    assert len(pages) == 1 and pages[0] > 0
    assert "Say hi." in (tmp_path / "run" / "monitor.html").read_text()


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_the_progress_line_says_a_step_is_sampling_before_its_first_log(stage, tmp_path, tiny_policy):
    from transformers import TrainerCallback

    monitor = lab.LiveMonitor(live=False)

    class FirstLog(TrainerCallback):
        seen = None

        def on_train_begin(self, args, state, control, **kwargs):
            monitor.progress.every_s = 0  # every line (they are throttled to 2 a second)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.seen is None:
                self.seen = list(monitor.progress.history)

    first = FirstLog()
    STAGES[stage][0](tiny_policy, vowels, PROMPTS, config(stage, tmp_path), callbacks=[monitor, first])
    assert first.seen and first.seen[0].startswith(f"{stage}: step 0/2"), first.seen
    assert any("step 1: sampling and scoring groups" in line for line in first.seen), first.seen
