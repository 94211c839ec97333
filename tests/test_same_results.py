"""Speed and memory changes leave results unchanged at a fixed seed (issue 17): LoRA adapters merged into
the base while PPO samples, then unmerged; PPO's fused AdamW; results offloaded to their run folders and
loaded back (see also tests/test_runs.py::TestOffload and tests/test_evaluate.py for lab.compare over
offloaded runs)."""

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


def same_run(a, b, *, rows: int, weights: float = 1e-5) -> None:
    """Two runs logged the same rows (1e-5, wall-clock figures left out) and end with the same weights."""
    x_rows, y_rows = a.metrics.to_dict("records"), b.metrics.to_dict("records")
    assert len(x_rows) == len(y_rows) >= rows
    for x, y in zip(x_rows, y_rows):
        keys = [k for k in x if not k.startswith(TIMING) and "runtime" not in k and "per_second" not in k]
        assert [y[k] for k in keys] == pytest.approx([x[k] for k in keys], rel=1e-5, abs=1e-5, nan_ok=True)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.allclose(p, q, atol=weights), float((p - q).abs().max())


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
    same_run(merged, apart, rows=3)
    assert merged.metrics["objective/kl"].abs().max() > 0  # it trained


def test_ppo_with_the_fused_adamw_learns_the_same(tmp_path, monkeypatch):
    from rlhf_lab.stages.ppo import trainer

    def run(name):
        config = lab.PPOConfig(output_dir=str(tmp_path / name), total_updates=3, batch_size=4, mini_batch_size=2,
                               ppo_epochs=2, max_new_tokens=8, learning_rate=1e-2, seed=0, monitor=False)  # fmt: skip
        return lab.ppo(lab.tiny_model("causal", seed=0), vowels, PROMPTS, config)

    kinds, real = [], trainer.adamw

    def watched(params, lr):
        optimizer = real(params, lr)
        kinds.append(optimizer.defaults["fused"])
        return optimizer

    monkeypatch.setattr(trainer, "adamw", watched)
    fused = run("fused")
    monkeypatch.setattr(trainer, "adamw", lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=0.0))
    loop = run("loop")
    assert kinds == [True]  # the fused kernel on this CPU
    same_run(fused, loop, rows=3, weights=5e-5)  # 12 steps at lr 1e-2: rounding moves a weight by up to ~1e-5
    assert fused.metrics["objective/kl"].abs().max() > 0  # it trained

    def stepped(make):
        weight = torch.nn.Parameter(torch.linspace(-1, 1, 64))
        optimizer = make([weight], 1e-3)
        for i in range(3):
            weight.grad = torch.sin(torch.arange(64.0) * (i + 1))
            optimizer.step()
        return weight.detach()

    # one optimizer, step for step: the same lr, betas, eps and no weight decay as the loop kernel
    assert torch.allclose(stepped(real), stepped(lambda params, lr: torch.optim.AdamW(params, lr, weight_decay=0.0)),
                          atol=1e-8)  # fmt: skip


def test_dpo_with_precomputed_reference_log_probs_learns_the_same(tmp_path):
    prefs = lab.starter_data("preference", "train").select(range(8))
    common = dict(num_train_epochs=1, per_device_train_batch_size=2, batch_size=4, learning_rate=1e-3, max_length=96,
                  logging_steps=1, seed=0, monitor=False, disable_tqdm=True)  # fmt: skip
    auto = lab.dpo("tiny", prefs, lab.DPOConfig(output_dir=str(tmp_path / "auto"), **common))
    assert auto.summary["precompute_ref_log_probs"] and auto.summary["reference"].startswith("the starting model's")
    live = lab.dpo("tiny", prefs,
                   lab.DPOConfig(output_dir=str(tmp_path / "live"), precompute_ref_log_probs=False, **common))  # fmt: skip
    assert not live.summary["precompute_ref_log_probs"] and live.summary["reference"] == "copy of the starting model"
    same_run(auto, live, rows=2)
    assert auto.metrics["loss"].iloc[-1] != auto.metrics["loss"].iloc[0]  # it trained


def test_precompute_only_when_every_pair_is_read():
    from rlhf_lab.stages.reference import precompute_pays

    def config(**kw):
        return lab.DPOConfig(output_dir="unused", per_device_train_batch_size=4, batch_size=16, **kw)

    assert precompute_pays(config(), 297)  # one epoch
    assert not precompute_pays(config(max_steps=6), 297)  # 96 of 297 pairs: the pass would cost more
    assert precompute_pays(config(max_steps=19), 297)  # 304 >= 297
    assert not precompute_pays(config(precompute_ref_log_probs=False), 297)  # the user's choice wins
    assert not precompute_pays(config(sync_ref_model=True), 297)


def test_pair_chunks_keep_every_pair_once_within_the_budget():
    from rlhf_lab.stages.reward_trainer import pair_chunks

    lengths = torch.tensor([300, 40, 120, 90, 60, 200, 35, 100, 50, 80])  # 5 pairs: chosen, then rejected
    chunks = pair_chunks(lengths, budget=1000)
    assert sorted(torch.cat(chunks).tolist()) == [0, 1, 2, 3, 4]
    longest = torch.maximum(lengths[:5], lengths[5:])
    assert all(2 * len(c) * int(longest[c].max()) <= 1000 or len(c) == 1 for c in chunks)
    assert [c.tolist() for c in chunks] == [[0], [2, 3, 4, 1]]  # longest first (300; 120, 90, 80, 40: 2 x 4 x 120)
    assert pair_chunks(lengths, budget=1)[0].tolist() == [0]  # a pair over the budget is a chunk of its own


def test_a_reward_model_trained_in_chunks_learns_the_same_as_trl(tmp_path, monkeypatch):
    import trl

    from rlhf_lab.stages import reward, reward_trainer

    def run(name):
        config = lab.RewardConfig(output_dir=str(tmp_path / name), max_steps=3, per_device_train_batch_size=8,
                                  learning_rate=1e-3, max_length=256, logging_steps=1, seed=0, monitor=False,
                                  normalize=False, disable_tqdm=True)  # fmt: skip
        return lab.train_reward_model("tiny", "starter", config)

    monkeypatch.setattr(reward_trainer, "CHUNK_TOKENS", 1024)  # several chunks per batch of 8 pairs
    calls = []
    real = reward_trainer.pair_chunks
    monkeypatch.setattr(reward_trainer, "pair_chunks", lambda lengths: calls.append(1) or real(lengths, 1024))
    chunked = run("chunked")
    assert calls and len(real(torch.tensor([200] * 16), 1024)) > 1
    monkeypatch.setattr(reward, "ChunkedRewardTrainer", trl.RewardTrainer)
    whole = run("whole")
    # Adam divides by the gradient's own size, so a rounding-level difference in a tiny gradient (a rare
    # token's embedding) can move that weight by up to ~lr/30 here; a wrong loss or scale moves all by ~lr
    same_run(chunked, whole, rows=3, weights=1e-4)
    numbers = {k: v for k, v in whole.summary["eval"].items() if isinstance(v, float)}
    assert numbers and {k: chunked.summary["eval"][k] for k in numbers} == pytest.approx(numbers, rel=1e-5, abs=1e-5)
