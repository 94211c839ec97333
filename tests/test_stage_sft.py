"""The SFT stage on TRL's SFTTrainer: it learns, writes a complete run folder, and reloads."""

import json

import pytest
import torch
import yaml
from transformers import TrainerCallback

import rlhf_lab.stages.common as common
from rlhf_lab.config import ConfigError, from_yaml
from rlhf_lab.runs import load_run
from rlhf_lab.stages.sft import PROBES, SFTConfig, sft, training_chat_template

# a learnable toy set: the answer repeats a word taken from the question
WORDS = ["apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "candle"]
DEMOS = [
    {"messages": [{"role": "user", "content": f"Repeat {w} ({i})."}, {"role": "assistant", "content": f"{w} {w} {w}"}]}
    for i, w in enumerate(WORDS * 3)
]


def config(tmp_path, name="run", **overrides):
    values = dict(
        output_dir=str(tmp_path / name),
        max_steps=24,
        learning_rate=3e-3,
        per_device_train_batch_size=8,
        logging_steps=4,
        num_samples=2,
        seed=0,
    )
    return SFTConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_policy):
    before = {n: p.detach().clone() for n, p in tiny_policy.model.named_parameters()}
    run = sft(tiny_policy, DEMOS, config(tmp_path_factory.mktemp("sft")))
    return run, before


def test_loss_drops_and_every_parameter_changes(trained, tiny_policy):
    run, before = trained
    losses = run.metrics["loss"].dropna().tolist()
    assert len(losses) >= 5 and losses[-1] < 0.7 * losses[0]
    after = dict(run.model.named_parameters())
    unchanged = [n for n, p in before.items() if torch.equal(p, after[n])]
    assert not unchanged
    # the caller's model is untouched: the stage trained a copy
    assert all(torch.equal(before[n], p) for n, p in tiny_policy.model.named_parameters())


def test_run_folder_is_complete(trained):
    run, _ = trained
    folder = run.output_dir
    assert {p.name for p in folder.iterdir()} >= {
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "samples.jsonl",
        "run.json",
        "model",
    }
    assert (folder / "model" / "model.safetensors").exists() and not list(folder.rglob("*.bin"))
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [4, 8, 12, 16, 20, 24]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stage"] == "sft" and summary["steps"] == 24 and summary["final"]["loss"] == rows[-2]["loss"]
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and all("completion" in s for s in samples)
    # config.yaml round-trips into the same config
    assert yaml.safe_load((folder / "config.yaml").read_text())["learning_rate"] == 3e-3
    reread = from_yaml(SFTConfig, folder / "config.yaml")
    assert (reread.max_steps, reread.learning_rate, reread.eos_token) == (24, 3e-3, run.config.eos_token)


def test_reloaded_run_gives_identical_outputs(trained):
    run, _ = trained
    again = load_run(run.output_dir)
    prompts = ["Repeat river (99).", "Repeat piano (98)."]
    assert again.bundle.generate(prompts, max_new_tokens=8) == run.bundle.generate(prompts, max_new_tokens=8)
    assert again.summary == run.summary and len(again.metrics) == len(run.metrics)


def test_training_template_renders_the_same_and_masks_only_the_assistant(tiny_policy):
    tok = tiny_policy.tokenizer
    template = training_chat_template(tok)
    assert "{% generation %}" in template
    for conversation in PROBES:
        assert tok.apply_chat_template(conversation, tokenize=False) == tok.apply_chat_template(
            conversation, tokenize=False, chat_template=template
        )
    out = tok.apply_chat_template(
        PROBES[1], tokenize=True, return_dict=True, return_assistant_tokens_mask=True, chat_template=template
    )
    kept = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tok.decode(kept) == "a1<|im_end|>a2<|im_end|>"


def test_lora_saves_adapters_only_and_reloads(tmp_path, tiny_policy):
    run = sft(tiny_policy, DEMOS, config(tmp_path, max_steps=4), lora={"r": 4})
    trainable = [n for n, p in run.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    model_dir = run.output_dir / "model"
    assert (model_dir / "adapter_model.safetensors").exists() and not (model_dir / "model.safetensors").exists()
    again = load_run(run.output_dir)
    prompt = ["Repeat stone (7)."]
    assert again.bundle.generate(prompt, max_new_tokens=6) == run.bundle.generate(prompt, max_new_tokens=6)


def test_callbacks_receive_the_logs(tmp_path, tiny_policy):
    seen = []

    class Spy(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append(dict(logs or {}))

    sft(tiny_policy, DEMOS, config(tmp_path, max_steps=4, logging_steps=2, num_samples=0), callbacks=[Spy()])
    assert sum("loss" in row for row in seen) == 2


@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(common, "tiny_model", refuse)
    monkeypatch.setattr(common, "load_policy", refuse)


def test_bad_configs_fail_before_any_model_loads(tmp_path, no_model_loads):
    with pytest.raises(ConfigError, match=r"learning_rate must be a number >= 0, got -1e-05 \(0 freezes the weights\)"):
        config(tmp_path, learning_rate=-1e-5)
    assert config(tmp_path, learning_rate=0).learning_rate == 0  # a control run: the weights stay as they were
    with pytest.raises(
        ConfigError, match=r"batch_size=10 is not a multiple of per_device_train_batch_size x processes = 4"
    ):
        config(tmp_path, batch_size=10, per_device_train_batch_size=4)
    with pytest.raises(ConfigError, match="SFT data is empty"):
        sft("tiny", [], config(tmp_path))


def test_batch_size_sets_gradient_accumulation(tmp_path):
    assert config(tmp_path, batch_size=16, per_device_train_batch_size=4).gradient_accumulation_steps == 4


def test_every_run_has_a_monitor_unless_switched_off(trained, tmp_path, tiny_policy):
    run, _ = trained
    html = (run.output_dir / "monitor.html").read_text()
    assert "plotly" in html.lower() and "mean_token_accuracy" in html
    assert run.summary["alerts"] == [] and json.loads((run.output_dir / "summary.json").read_text())["alerts"] == []
    quiet = sft(tiny_policy, DEMOS, config(tmp_path, max_steps=2, num_samples=0, monitor=False))
    assert not (quiet.output_dir / "monitor.html").exists() and "alerts" not in quiet.summary


def test_a_copy_of_the_trained_model_runs_its_own_weights(tiny_policy, tmp_path):
    """TRL patches the trained model's forward on the instance; a deepcopy (the next stage's private
    copy) would still run the original weights through that closure unless the stage removes it."""
    import copy

    data = [
        {"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": "Hello"}]}
        for i in range(4)
    ]
    config = SFTConfig(
        output_dir=str(tmp_path / "sft"), max_steps=1, per_device_train_batch_size=2, num_samples=0, monitor=False
    )
    run = sft(tiny_policy, data, config)
    clone = copy.deepcopy(run.model)
    with torch.no_grad():
        for p in clone.parameters():
            p.add_(0.5)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert not torch.allclose(clone(ids).logits, run.model(ids).logits)
