"""The `rlhf-lab` command line: validate, models, demo, version."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlhf_lab.cli import main

GOOD = {"prompt": "What is 2+2?", "chosen": "4.", "rejected": "5."}


def write_jsonl(path, rows):
    path.write_bytes(b"".join(r if isinstance(r, bytes) else (json.dumps(r) + "\n").encode() for r in rows))
    return path


def five_bad_rows(tmp_path):
    return write_jsonl(tmp_path / "prefs.jsonl", [
        GOOD,                                                                    # line 1: fine
        b'{"prompt": "Hi", "chosen": "Hello", "rejected": \n',                   # line 2: broken JSON
        b'{"prompt": "Caf\xe9?", "chosen": "Yes.", "rejected": "No."}\n',          # line 3: invalid UTF-8
        {"prompt": "Name a color.", "chosen": "", "rejected": "Blue."},          # line 4: empty field
        {"prompt": [{"role": "robot", "content": "Hi"}], "chosen": "a", "rejected": "b"},  # line 5: unknown role
        {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "Hi!"},               # line 6: identical sides
        {"prompt": "Is ice cold?", "chosen": "Yes.", "rejected": "No."},         # line 7: fine
    ])  # fmt: skip


def test_validate_reports_five_located_errors_and_exits_1(tmp_path, capsys):
    path = five_bad_rows(tmp_path)
    assert main(["validate", str(path), "--kind", "preference"]) == 1
    out = capsys.readouterr().out
    located = [line for line in out.splitlines() if line.lstrip().startswith("prefs.jsonl, line")]
    assert [int(line.split("line ")[1].split(",")[0].split(":")[0]) for line in located] == [2, 3, 4, 5, 6]
    for needle in ("JSON", "UTF-8", "'chosen'", "role", "identical"):
        assert needle in out, needle
    assert "Fix:" in out


def test_validate_clean_file_exits_0(tmp_path, capsys):
    path = write_jsonl(
        tmp_path / "ok.jsonl", [GOOD, {"prompt": "Is ice cold?", "chosen": "Yes.", "rejected": "No."}]
    )
    assert main(["validate", str(path), "--kind", "preference"]) == 0


def test_console_script_is_installed(tmp_path):
    # the script sits next to the interpreter that runs the tests (the venv's bin/)
    exe = shutil.which("rlhf-lab", path=str(Path(sys.executable).parent))
    assert exe, "the rlhf-lab console script is not installed"
    out = subprocess.run([exe, "validate", str(five_bad_rows(tmp_path)), "--kind", "preference"],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 1 and "prefs.jsonl, line 6" in out.stdout
    version = subprocess.run([exe, "version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("rlhf-lab ") and "transformers" in version.stdout


def test_validate_missing_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.jsonl"), "--kind", "sft"]) == 1
    assert "nope.jsonl" in capsys.readouterr().err


def test_models_list_and_cache_info(capsys):
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "smollm2-135m-instruct" in listing and "all-minilm-l6-v2" in listing
    assert main(["models", "cache-info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {m["name"] for m in info["models"]} == {"smollm2-135m-instruct", "all-minilm-l6-v2"}


def test_models_convert_rejects_unknown_name(capsys):
    assert main(["models", "convert", "gpt-9"]) == 1
    assert "not an embedded model" in capsys.readouterr().err


def test_demo_writes_a_run_folder(tmp_path, tiny_policy):
    tiny_policy.save(tmp_path / "tiny")
    args = ["demo", "--set", f"model={tmp_path / 'tiny'}", "--set", f"output_dir={tmp_path / 'runs' / 'demo'}",
            "--set", "num_prompts=3", "--set", "batch_size=2", "--set", "max_new_tokens=4"]  # fmt: skip
    assert main(args) == 0
    run = tmp_path / "runs" / "demo"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["num_prompts"] == 3 and config["run_name"] == "demo"
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all(s["prompt"] and "completion" in s for s in samples)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(m["throughput/tokens_per_s"] > 0 for m in metrics)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_samples"] == 3 and summary["model"] == "tiny"


@pytest.mark.parametrize("override, message", [
    ("num_promts=3", "did you mean 'num_prompts'"),
    ("num_prompts=0", "must be at least 1"),
])  # fmt: skip
def test_demo_bad_override_is_one_clear_line(override, message, capsys):
    assert main(["demo", "--set", override]) == 1
    assert message in capsys.readouterr().err


def test_prefs_import_stats_export_agreement(tmp_path, capsys):
    from rlhf_lab import load_preferences
    from rlhf_lab.store import PreferenceStore

    source = write_jsonl(
        tmp_path / "pairs.jsonl", [GOOD, {"prompt": "Is ice cold?", "chosen": "Yes.", "rejected": "No."}]
    )
    store = tmp_path / "labels.sqlite"
    assert main(["prefs", "import", str(source), "--store", str(store)]) == 0
    capsys.readouterr()
    assert main(["prefs", "stats", "--store", str(store), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["items"], stats["label_events"]) == (2, 2)
    with PreferenceStore(store) as opened:
        for item in opened.items():  # a second annotator labels the same items
            opened.label(item.id, "A", "ann2")
    assert main(["prefs", "agreement", "--store", str(store)]) == 0
    assert "kappa" in capsys.readouterr().out.lower()
    out = tmp_path / "export.jsonl"
    assert main(["prefs", "export", "--store", str(store), "--out", str(out)]) == 0
    exported = load_preferences(out)
    assert exported.num_rows >= 1 and {"prompt", "chosen", "rejected"} <= set(exported.column_names)


def test_prefs_stats_on_a_missing_store_is_one_clear_line(tmp_path, capsys):
    assert main(["prefs", "stats", "--store", str(tmp_path / "nope.sqlite")]) == 1
    assert "nope.sqlite" in capsys.readouterr().err
