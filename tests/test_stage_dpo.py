"""DPO stage: learns a simple preference, runs every TRL loss, trains LoRA adapters against the base with
adapters disabled (no second copy), reloads with identical outputs, and rejects bad configs before any model loads."""

import gc
import inspect
import json
import math
import re

import pytest
import torch
import trl
from transformers import TrainerCallback

from rlhf_lab import tiny_model
from rlhf_lab.config import ConfigError, from_dict, from_yaml
from rlhf_lab.runs import load_run
from rlhf_lab.stages.dpo import DPO_LOSS_TYPES, DPOConfig, dpo

# Learnable in a few steps: the chosen reply is always one short pattern, the rejected another. A short
# system message replaces the template's default one: shorter sequences, faster tests.
PREFS = [
    {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Colour {i}?"}],
        "chosen": "blue blue blue",
        "rejected": "red red red",
    }
    for i in range(16)
]
PROBES = ["Colour 99?", "Hello there", "Colour 3?"]


def make_config(tmp, name, **overrides) -> DPOConfig:
    values = dict(
        output_dir=str(tmp / name),
        max_steps=6,
        learning_rate=1e-3,
        per_device_train_batch_size=4,
        logging_steps=1,
        num_samples=1,
        seed=0,
    )
    return DPOConfig(**{**values, **overrides})


def full_size_weights(shape) -> int:
    """Live tensors shaped like the embedding matrix: one per copy of the model's weights in memory."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is torch.nn.Parameter and o.shape == shape)


class Watch(TrainerCallback):
    """Records, when training starts, the trainable weights and how many model copies are in memory."""

    def __init__(self, shape):
        self.shape, self.start, self.copies = shape, {}, None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.copies = full_size_weights(self.shape)


def watch_stage(stage, trainer_name: str, model, data, config, *, lora=None):
    """Run a stage with a Watch callback and keep the TRL trainer it built, so tests can look at
    what TRL was given. Returns (result, watch, trainer, full-size weight copies before)."""
    shape = model.model.get_input_embeddings().weight.shape
    watch, trainers = Watch(shape), []

    class Keep(getattr(trl, trainer_name)):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    before = full_size_weights(shape)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trl, trainer_name, Keep)
        result = stage(model, data, config, lora=lora, callbacks=[watch])
    return result, watch, trainers[0], before


def run_watched(tmp, name, model, *, lora=None, **overrides):
    return watch_stage(dpo, "DPOTrainer", model, PREFS, make_config(tmp, name, **overrides), lora=lora)


def assert_same_outputs(a, b) -> None:
    """Same logits, and the same greedy and seeded-sampled generations (sampling shows more than greedy
    does: a tiny random model's greedy text is often only newlines)."""
    ids = a.tokenizer(PROBES[0], return_tensors="pt").input_ids
    a.model.eval(), b.model.eval()  # a reloaded adapter comes back in train mode, with LoRA dropout on
    with torch.no_grad():
        torch.testing.assert_close(a.model(input_ids=ids).logits, b.model(input_ids=ids).logits, rtol=0, atol=0)
    for options in ({}, {"temperature": 1.0, "seed": 0}):
        texts = a.generate(PROBES, max_new_tokens=12, **options)
        assert texts == b.generate(PROBES, max_new_tokens=12, **options)
    assert any(t.strip() for t in texts)


def snapshot(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def caller():
    return tiny_model("causal", seed=0)


@pytest.fixture(scope="module")
def full(caller, tmp_path_factory):
    before = snapshot(caller.model)
    result, watch, trainer, copies_before = run_watched(tmp_path_factory.mktemp("dpo"), "full", caller)
    return dict(result=result, watch=watch, trainer=trainer, copies_before=copies_before, caller_before=before)


@pytest.fixture(scope="module")
def lora(full, tmp_path_factory):
    start = full["result"]  # a finished run as the starting point, as a notebook would chain stages
    before = snapshot(start.model)
    result, watch, trainer, copies_before = run_watched(
        tmp_path_factory.mktemp("dpo"), "lora", start, lora=8, learning_rate=1e-2
    )
    return dict(result=result, watch=watch, trainer=trainer, copies_before=copies_before, start_before=before)


class TestFullFineTuning:
    def test_loss_drops_and_chosen_wins(self, full):
        result = full["result"]
        losses = result.metrics["loss"].dropna().tolist()
        assert len(losses) == 6
        assert losses[0] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at step 1
        assert losses[-1] < losses[0] - 0.1
        assert result.summary["rewards/accuracies"] == 1.0 and result.summary["rewards/margins"] > 0.2
        assert result.summary["loss_type"] == ["sigmoid"]

    def test_every_trainable_parameter_changed(self, full):
        trained = dict(full["result"].model.named_parameters())
        assert set(full["watch"].start) == set(trained)  # full fine-tuning: everything trains
        unchanged = [n for n, p in full["watch"].start.items() if torch.equal(p, trained[n])]
        assert not unchanged

    def test_callers_model_untouched_and_served_as_reference(self, full, caller):
        assert all(torch.equal(v, caller.model.state_dict()[k]) for k, v in full["caller_before"].items())
        assert not caller.model.training and all(p.requires_grad for p in caller.model.parameters())
        assert "forward" not in caller.model.__dict__  # TRL's patched forward was taken off again
        assert full["result"].summary["reference"] == "caller's model"
        assert full["trainer"].ref_model is caller.model
        assert full["watch"].copies == full["copies_before"] + 1  # only the private copy being trained

    def test_run_folder_and_reload_gives_identical_generations(self, full):
        result = full["result"]
        files = {p.name for p in result.output_dir.iterdir()}
        assert {"config.yaml", "metrics.jsonl", "samples.jsonl", "summary.json", "run.json", "model"} <= files
        assert (result.output_dir / "model" / "model.safetensors").exists()
        samples = [json.loads(line) for line in (result.output_dir / "samples.jsonl").read_text().splitlines()]
        assert len(samples) == 1 and isinstance(samples[0]["completion"], str)
        assert "forward" not in result.model.__dict__  # safe to deep-copy into the next stage
        assert from_yaml(DPOConfig, result.output_dir / "config.yaml").loss_type == ["sigmoid"]
        reloaded = load_run(result.output_dir)
        assert reloaded.stage == "dpo" and reloaded.summary["rewards/accuracies"] == 1.0
        assert_same_outputs(reloaded.bundle, result.bundle)


class TestLoRA:
    def test_only_adapters_train_and_all_of_them_change(self, lora):
        model = lora["result"].model
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable and all("lora_" in n for n in trainable)
        assert set(lora["watch"].start) == trainable
        current = dict(model.named_parameters())
        assert not [n for n, p in lora["watch"].start.items() if torch.equal(p, current[n])]

    def test_base_weights_and_starting_model_untouched(self, lora, full):
        start = full["result"].model
        assert all(torch.equal(v, start.state_dict()[k]) for k, v in lora["start_before"].items())
        ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
        with torch.no_grad(), lora["result"].model.disable_adapter():
            base_logits = lora["result"].model(input_ids=ids).logits
        with torch.no_grad():
            assert torch.equal(base_logits, start(input_ids=ids).logits)

    def test_loss_drops(self, lora):
        losses = lora["result"].metrics["loss"].dropna().tolist()
        assert losses[0] == pytest.approx(math.log(2), abs=1e-3) and losses[-1] < losses[0] - 0.1

    def test_reference_is_base_with_adapters_disabled_no_second_copy(self, lora):
        trainer = lora["trainer"]
        assert trainer.ref_model is None
        assert set(trainer.model.peft_config) == {"default"}  # no frozen "ref" adapter either
        assert lora["result"].summary["reference"] == "base with adapters disabled"
        assert lora["watch"].copies == lora["copies_before"] + 1

    def test_saved_adapter_only_and_reload_gives_identical_generations(self, lora, full):
        result = lora["result"]
        model_dir = result.output_dir / "model"
        assert (model_dir / "adapter_model.safetensors").exists()
        assert not (model_dir / "model.safetensors").exists() and not (model_dir / "ref").exists()
        manifest = json.loads((result.output_dir / "run.json").read_text())
        # the base is the DPO run it started from, not the untrained checkpoint that one began as
        assert manifest["adapter"] and manifest["base"] == str(full["result"].output_dir / "model")
        reloaded = load_run(result.output_dir)
        assert_same_outputs(reloaded.bundle, result.bundle)


class TestReferenceAndEval:
    def test_an_explicit_reference_is_used_and_handed_back(self, caller, tmp_path):
        other = tiny_model("causal", seed=1)
        before = snapshot(other.model)
        config = make_config(tmp_path, "ref", max_steps=1, per_device_train_batch_size=2, num_samples=0)
        result = dpo(caller, PREFS[:2], config, ref=other, eval_data=PREFS[2:4])
        assert result.summary["reference"] == "given"
        # a reference that differs from the policy: the very first loss is no longer log(2)
        assert result.metrics["loss"].dropna().iloc[0] != pytest.approx(math.log(2), abs=1e-3)
        assert all(torch.equal(v, other.model.state_dict()[k]) for k, v in before.items())
        assert "forward" not in other.model.__dict__ and all(p.requires_grad for p in other.model.parameters())
        # held-out pairs are scored once training ends, into the summary and metrics.jsonl
        assert math.isfinite(result.summary["eval"]["eval_loss"])
        assert "eval_rewards/accuracies" in result.summary["eval"]
        assert "eval_loss" in result.metrics.columns


class TestStartingFromAnAdapter:
    def test_retrains_its_adapter_against_a_frozen_copy_of_it(self, lora, tmp_path):
        result = dpo(lora["result"], PREFS, make_config(tmp_path, "again", max_steps=1, per_device_train_batch_size=2))
        assert result.summary["reference"] == "frozen copy of the starting adapter"
        assert set(result.model.peft_config) == {"default"}  # TRL's "ref" adapter is not part of the result
        assert not (result.output_dir / "model" / "ref").exists()
        reloaded = load_run(result.output_dir)
        assert_same_outputs(reloaded.bundle, result.bundle)

    def test_an_adapter_run_as_reference_is_used_merged(self, caller, lora, tmp_path):
        config = make_config(tmp_path, "ref", max_steps=1, per_device_train_batch_size=2, num_samples=0)
        result = dpo(caller, PREFS[:2], config, ref=lora["result"])
        assert result.summary["reference"] == "given"
        assert math.isfinite(result.metrics["loss"].dropna().iloc[0])
        assert set(lora["result"].model.peft_config) == {"default"}  # the caller's adapter model is kept

    def test_new_lora_on_top_saves_the_merged_base(self, lora, tmp_path):
        result = dpo(
            lora["result"],
            PREFS,
            make_config(tmp_path, "stacked", max_steps=1, per_device_train_batch_size=2),
            lora=4,
        )
        assert result.summary["reference"] == "base with adapters disabled"
        assert json.loads((result.output_dir / "run.json").read_text())["base"] == "base"
        reloaded = load_run(result.output_dir)
        assert_same_outputs(reloaded.bundle, result.bundle)


class TestLossTypes:
    def test_list_matches_the_losses_trls_trainer_implements(self):
        implemented = set(re.findall(r'loss_type == "(\w+)"', inspect.getsource(trl.DPOTrainer._compute_loss)))
        assert set(DPO_LOSS_TYPES) == implemented and len(DPO_LOSS_TYPES) >= 15

    @pytest.mark.parametrize("name", DPO_LOSS_TYPES)
    def test_every_trl_loss_type_is_accepted(self, name, tmp_path):
        # label_smoothing > 0 is what exo_pair needs and robust allows; the others ignore it
        config = DPOConfig(output_dir=str(tmp_path), loss_type=name, label_smoothing=0.1)
        assert config.loss_type == [name]
        assert from_dict(
            DPOConfig, {"output_dir": str(tmp_path), "loss_type": [name, "sigmoid"], "label_smoothing": 0.1}
        ).loss_type == [name, "sigmoid"]

    @pytest.mark.parametrize(
        "loss_type, weights",
        [("sigmoid", None), ("ipo", None), ("hinge", None), (["sigmoid", "sft"], [1.0, 0.2])],
    )
    def test_runs_and_logs_a_finite_loss(self, loss_type, weights, tmp_path):
        config = make_config(
            tmp_path,
            "run",
            max_steps=2,
            per_device_train_batch_size=2,
            loss_type=loss_type,
            loss_weights=weights,
            num_samples=0,
        )
        result = dpo("tiny", PREFS[:4], config)
        losses = result.metrics["loss"].dropna().tolist()
        assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
        assert result.summary["loss_type"] == config.loss_type
        # from a name, nothing of the caller's to borrow; 2 steps of 2 read all 4 pairs, so the reference's
        # log-probs are computed before training from the starting model itself: no copy in memory
        assert result.summary["reference"] == "the starting model's log-probs, computed before training"


def refuse_to_load(monkeypatch):
    """Make every way a model could load raise, so a test proves its error came first."""
    import transformers

    from rlhf_lab.stages import common

    def boom(*args, **kwargs):
        raise AssertionError("a model was loaded before the config and data were checked")

    for name in ("tiny_model", "load_policy", "load_run"):
        monkeypatch.setattr(common, name, boom)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)


class TestBadConfig:
    @pytest.mark.parametrize(
        "overrides, message",
        [
            ({"loss_type": "sigmod"}, r"loss_type: unknown 'sigmod'\. Fix: use one of sigmoid, hinge, ipo"),
            ({"loss_type": ["sigmoid", "dpo"]}, r"loss_type: unknown 'dpo'.*apo_zero"),
            ({"beta": 0}, r"beta must be > 0.*got 0"),
            ({"beta": -0.1}, r"beta must be > 0"),
            (
                {"loss_type": ["sigmoid", "ipo"], "loss_weights": [1.0]},
                r"loss_weights has 1 weights but loss_type "
                r"has 2 losses",
            ),
            ({"batch_size": 6, "per_device_train_batch_size": 4}, r"batch_size=6 is not a multiple"),
            ({"loss_type": "exo_pair"}, r"'exo_pair' needs label_smoothing > 0"),
            ({"f_divergence_type": "kl"}, r"f_divergence_type: unknown 'kl'"),
        ],
    )
    def test_rejected_before_any_model_loads(self, overrides, message, tmp_path, monkeypatch):
        refuse_to_load(monkeypatch)
        with pytest.raises(ConfigError, match=message):
            dpo("tiny", PREFS, DPOConfig(output_dir=str(tmp_path / "run"), **overrides))
        with pytest.raises(ConfigError, match=message):  # the YAML / CLI path gives the same message
            from_dict(DPOConfig, {"output_dir": str(tmp_path / "run"), **overrides})
        assert not (tmp_path / "run").exists()

    def test_the_guard_catches_a_model_load(self, tmp_path, monkeypatch):
        refuse_to_load(monkeypatch)  # so the tests above cannot pass merely because nothing ever loads
        with pytest.raises(AssertionError, match="loaded before"):
            dpo("tiny", PREFS, DPOConfig(output_dir=str(tmp_path / "run")))

    def test_empty_data_rejected_before_any_model_loads(self, tmp_path, monkeypatch):
        refuse_to_load(monkeypatch)
        with pytest.raises(ConfigError, match=r"DPO preference data is empty \(\[\]\)"):
            dpo("tiny", [], DPOConfig(output_dir=str(tmp_path / "run")))
        assert not (tmp_path / "run").exists()

    def test_lora_with_sync_ref_model_rejected_before_any_model_loads(self, tmp_path, monkeypatch):
        refuse_to_load(monkeypatch)
        with pytest.raises(ConfigError, match="sync_ref_model=True does not work with LoRA"):
            dpo("tiny", PREFS, DPOConfig(output_dir=str(tmp_path / "run"), sync_ref_model=True), lora=8)
