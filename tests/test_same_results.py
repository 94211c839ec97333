"""Speed and memory changes leave results unchanged at a fixed seed (issue 17): LoRA adapters merged into
the base while PPO samples, then unmerged; results offloaded to their run folders and loaded back (see also
tests/test_runs.py::TestOffload and tests/test_evaluate.py for lab.compare over offloaded runs)."""

import contextlib

import pytest
import torch
from run_helpers import TIMING

import rlhf_lab as lab
from rlhf_lab.models.lora import apply_lora
from rlhf_lab.stages.ppo import rollout

PROMPTS = ["Say hi.", "Name a colour.", "Count to three.", "Pick a fruit.", "Tell a joke.", "Greet me."]


def vowels(prompts, completions):
    return [sum(ch in "aeiou" for ch in c) / max(1, len(c)) for c in completions]


def lora_model():
    model = apply_lora(
        lab.tiny_model("causal", seed=0).model, {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # a trained adapter, not the all-zero fresh one
                param.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return model.eval()


def test_sampling_with_merged_adapters_sees_the_same_model_and_gives_the_base_back():
    model = lora_model()
    ids = torch.randint(0, 500, (3, 10), generator=torch.Generator().manual_seed(0))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        apart = model(ids).logits
        with rollout.merged(model):
            assert all(layer.merged for layer in model.modules() if hasattr(layer, "unmerge"))
            together = model(ids).logits
    assert (together - apart).abs().max() < 1e-5 and (together - apart).abs().max() > 0  # merged, not skipped
    assert not any(layer.merged for layer in model.modules() if hasattr(layer, "unmerge"))
    for key, value in model.state_dict().items():
        assert torch.allclose(value, weights[key], atol=1e-6), key


def test_lora_ppo_learns_the_same_with_merged_sampling(tmp_path, monkeypatch):
    def run(name):
        config = lab.PPOConfig(output_dir=str(tmp_path / name), total_updates=3, batch_size=4, mini_batch_size=2,
                               ppo_epochs=2, max_new_tokens=8, learning_rate=1e-2, lora_r=8, seed=0, monitor=False)  # fmt: skip
        return lab.ppo(lab.tiny_model("causal", seed=0), vowels, PROMPTS, config)

    merged = run("merged")
    monkeypatch.setattr(rollout, "merged", lambda model: contextlib.nullcontext())
    apart = run("apart")
    a, b = merged.metrics.to_dict("records"), apart.metrics.to_dict("records")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        keys = [k for k in x if not k.startswith(TIMING)]
        assert [y[k] for k in keys] == pytest.approx([x[k] for k in keys], rel=1e-5, abs=1e-5, nan_ok=True)
    for p, q in zip(merged.model.parameters(), apart.model.parameters()):
        assert torch.allclose(p, q, atol=1e-5)
    assert merged.metrics["objective/kl"].abs().max() > 0  # it trained
