"""KTO stage: learns from thumbs-up/down labels, turns the starter pairs into balanced unpaired rows, trains
LoRA adapters against the base with adapters disabled, reloads with identical outputs, and rejects bad
configs before any model loads."""

import inspect
import json
import math

import pytest
import torch
import trl

# The DPO tests' helpers: the same checks apply to every preference stage.
from test_stage_dpo import assert_same_outputs, refuse_to_load, snapshot, watch_stage

from rlhf_lab import tiny_model
from rlhf_lab.config import ConfigError, from_dict
from rlhf_lab.runs import load_run
from rlhf_lab.stages.kto import KTO_LOSS_TYPES, KTOConfig, kto, load_unpaired, unpair
from rlhf_lab.starter import starter_data

# Desirable replies are one pattern, undesirable another; labels alternate, so every batch has both.
ROWS = [
    {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Colour {i}?"}],
        "completion": "blue blue blue" if i % 2 == 0 else "red red red",
        "label": i % 2 == 0,
    }
    for i in range(16)
]


def make_config(tmp, name, **overrides) -> KTOConfig:
    values = dict(
        output_dir=str(tmp / name),
        max_steps=6,
        learning_rate=1e-3,
        per_device_train_batch_size=4,
        logging_steps=1,
        num_samples=1,
        seed=0,
    )
    return KTOConfig(**{**values, **overrides})


def run_watched(tmp, name, model, *, lora=None, **overrides):
    config = make_config(tmp, name, **overrides)
    result, watch, trainer, before = watch_stage(kto, "KTOTrainer", model, ROWS, config, lora=lora)
    return dict(result=result, watch=watch, trainer=trainer, copies_before=before)


@pytest.fixture(scope="module")
def caller():
    return tiny_model("causal", seed=0)


@pytest.fixture(scope="module")
def full(caller, tmp_path_factory):
    before = snapshot(caller.model)
    return {**run_watched(tmp_path_factory.mktemp("kto"), "full", caller), "caller_before": before}


@pytest.fixture(scope="module")
def lora(caller, tmp_path_factory):
    return run_watched(tmp_path_factory.mktemp("kto"), "lora", caller, lora=8, learning_rate=1e-2)


class TestFullFineTuning:
    def test_loss_drops_and_desirable_gains(self, full):
        result = full["result"]
        losses = result.metrics["loss"].dropna().tolist()
        assert len(losses) == 6
        assert losses[0] == pytest.approx(0.5, abs=1e-3)  # 1 - sigmoid(0): policy == reference at step 1
        assert losses[-1] < losses[0] - 0.04
        summary = result.summary
        assert summary["rewards/chosen"] > 0 > summary["rewards/rejected"] and summary["rewards/margins"] > 0.1
        assert (summary["loss_type"], summary["desirable"], summary["undesirable"]) == ("kto", 8, 8)

    def test_every_trainable_parameter_changed(self, full):
        trained = dict(full["result"].model.named_parameters())
        assert set(full["watch"].start) == set(trained)
        assert not [n for n, p in full["watch"].start.items() if torch.equal(p, trained[n])]

    def test_callers_model_untouched_and_served_as_reference(self, full, caller):
        assert all(torch.equal(v, caller.model.state_dict()[k]) for k, v in full["caller_before"].items())
        assert not caller.model.training and all(p.requires_grad for p in caller.model.parameters())
        assert "forward" not in caller.model.__dict__
        assert full["trainer"].ref_model is caller.model
        assert full["result"].summary["reference"] == "caller's model"
        assert full["watch"].copies == full["copies_before"] + 1

    def test_reload_gives_identical_outputs(self, full):
        result = full["result"]
        assert (result.output_dir / "model" / "model.safetensors").exists()
        reloaded = load_run(result.output_dir)
        assert reloaded.stage == "kto"
        assert_same_outputs(reloaded.bundle, result.bundle)


class TestLoRA:
    def test_only_adapters_train_and_all_of_them_change(self, lora, caller):
        model = lora["result"].model
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable and all("lora_" in n for n in trainable) and set(lora["watch"].start) == trainable
        current = dict(model.named_parameters())
        assert not [n for n, p in lora["watch"].start.items() if torch.equal(p, current[n])]
        ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
        with torch.no_grad(), model.disable_adapter():
            assert torch.equal(model(input_ids=ids).logits, caller.model(input_ids=ids).logits)

    def test_loss_drops(self, lora):
        losses = lora["result"].metrics["loss"].dropna().tolist()
        assert losses[0] == pytest.approx(0.5, abs=1e-3) and losses[-1] < losses[0] - 0.04

    def test_reference_is_base_with_adapters_disabled_no_second_copy(self, lora):
        assert lora["trainer"].ref_model is None
        assert set(lora["trainer"].model.peft_config) == {"default"}
        assert lora["result"].summary["reference"] == "base with adapters disabled"
        assert lora["watch"].copies == lora["copies_before"] + 1

    def test_saved_adapter_only_and_reload_gives_identical_outputs(self, lora):
        result = lora["result"]
        assert (result.output_dir / "model" / "adapter_model.safetensors").exists()
        assert not (result.output_dir / "model" / "model.safetensors").exists()
        assert json.loads((result.output_dir / "run.json").read_text())["adapter"]
        assert_same_outputs(load_run(result.output_dir).bundle, result.bundle)


class TestStarterData:
    def test_pairs_become_balanced_rows_whose_neighbours_never_share_a_prompt(self):
        pairs = starter_data("preference", "train")
        rows = unpair(pairs)
        assert len(rows) == 2 * len(pairs) and sum(r["label"] for r in rows) == len(pairs)
        chosen = {(json.dumps(p["prompt"]), json.dumps(p["chosen"])) for p in pairs}
        assert all((json.dumps(r["prompt"]), json.dumps(r["completion"])) in chosen for r in rows if r["label"])
        # KTO's KL term pairs each prompt with the previous row's completion: it must be a different prompt
        assert all(a["prompt"] != b["prompt"] for a, b in zip(rows, rows[1:]))
        assert all(a["label"] != b["label"] for a, b in zip(rows[:100], rows[1:100]))

    def test_starter_run(self, tmp_path):
        config = make_config(tmp_path, "starter", max_steps=2, max_length=128, num_samples=0)
        result = kto("tiny", "starter", config)
        n = len(starter_data("preference", "train"))
        assert (result.summary["desirable"], result.summary["undesirable"]) == (n, n)
        assert all(math.isfinite(x) for x in result.metrics["loss"].dropna())
        assert result.summary["reference"] == "copy of the starting model"
        assert load_unpaired("starter", "test").column_names == ["prompt", "completion", "label"]


class TestLossTypes:
    def test_list_matches_trl(self):
        source = inspect.getsource(trl.KTOTrainer._compute_loss)
        assert set(KTO_LOSS_TYPES) == {"kto", "apo_zero_unpaired"}
        assert all(f'self.loss_type == "{name}"' in source for name in KTO_LOSS_TYPES)

    def test_apo_zero_unpaired_runs_without_a_kl_batch(self, tmp_path):
        # no KL term, so a batch of one is fine here (it is not for "kto")
        config = make_config(
            tmp_path, "apo", loss_type="apo_zero_unpaired", per_device_train_batch_size=1, max_steps=2, num_samples=0
        )
        result = kto("tiny", ROWS[:4], config)
        losses = result.metrics["loss"].dropna().tolist()
        assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
        assert result.summary["loss_type"] == "apo_zero_unpaired"


class TestBadConfig:
    @pytest.mark.parametrize(
        "overrides, message",
        [
            ({"loss_type": "ktoo"}, r"loss_type: unknown 'ktoo'\. Fix: use one of kto, apo_zero_unpaired"),
            ({"beta": 0}, r"beta must be > 0"),
            ({"desirable_weight": 0}, r"desirable_weight must be > 0, got 0"),
            ({"undesirable_weight": -1.0}, r"undesirable_weight must be > 0, got -1.0"),
            ({"per_device_train_batch_size": 1}, r"'kto' needs per_device_train_batch_size >= 2"),
            ({"train_sampling_strategy": "random"}, r"needs train_sampling_strategy='sequential'"),
            ({"batch_size": 6, "per_device_train_batch_size": 4}, r"batch_size=6 is not a multiple"),
        ],
    )
    def test_rejected_before_any_model_loads(self, overrides, message, tmp_path, monkeypatch):
        refuse_to_load(monkeypatch)
        with pytest.raises(ConfigError, match=message):
            kto("tiny", ROWS, KTOConfig(output_dir=str(tmp_path / "run"), **overrides))
        with pytest.raises(ConfigError, match=message):
            from_dict(KTOConfig, {"output_dir": str(tmp_path / "run"), **overrides})
        assert not (tmp_path / "run").exists()

    def test_the_guard_catches_a_model_load(self, tmp_path, monkeypatch):
        refuse_to_load(monkeypatch)
        with pytest.raises(AssertionError, match="loaded before"):
            kto("tiny", ROWS, KTOConfig(output_dir=str(tmp_path / "run")))

    def test_empty_data_rejected_before_any_model_loads(self, tmp_path, monkeypatch):
        refuse_to_load(monkeypatch)
        with pytest.raises(ConfigError, match=r"KTO rating data is empty"):
            kto("tiny", [], KTOConfig(output_dir=str(tmp_path / "run")))
        assert not (tmp_path / "run").exists()
