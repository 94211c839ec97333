"""The `rlhf-lab` command line: validate, models, demo, version, stage overrides."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_lab.cli.main import main

GOOD = {"prompt": "What is 2+2?", "chosen": "4.", "rejected": "5."}


def write_jsonl(path, rows):
    path.write_bytes(b"".join(r if isinstance(r, bytes) else (json.dumps(r) + "\n").encode() for r in rows))
    return path


def five_bad_rows(tmp_path):
    return write_jsonl(
        tmp_path / "prefs.jsonl",
        [
            GOOD,  # line 1: fine
            b'{"prompt": "Hi", "chosen": "Hello", "rejected": \n',  # line 2: broken JSON
            b'{"prompt": "Caf\xe9?", "chosen": "Yes.", "rejected": "No."}\n',  # line 3: invalid UTF-8
            {"prompt": "Name a color.", "chosen": "", "rejected": "Blue."},  # line 4: empty field
            {"prompt": [{"role": "robot", "content": "Hi"}], "chosen": "a", "rejected": "b"},  # line 5: unknown role
            {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "Hi!"},  # line 6: identical sides
            {"prompt": "Is ice cold?", "chosen": "Yes.", "rejected": "No."},  # line 7: fine
        ],
    )


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
    path = write_jsonl(tmp_path / "ok.jsonl", [GOOD, {"prompt": "Is ice cold?", "chosen": "Yes.", "rejected": "No."}])
    assert main(["validate", str(path), "--kind", "preference"]) == 0


def test_console_script_is_installed(tmp_path):
    # the script sits next to the interpreter that runs the tests (the venv's bin/)
    exe = shutil.which("rlhf-lab", path=str(Path(sys.executable).parent))
    assert exe, "the rlhf-lab console script is not installed"
    out = subprocess.run(
        [exe, "validate", str(five_bad_rows(tmp_path)), "--kind", "preference"], capture_output=True, text=True
    )
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


def test_demo_runs_the_quickstart_notebook_and_exports_html(tmp_path):
    """`rlhf-lab demo` is `make demo`: 00_quickstart under the full profile, executed and exported."""
    import nbformat

    folder = tmp_path / "notebooks"
    folder.mkdir()
    notebook = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    notebook.cells = [
        nbformat.v4.new_code_cell("steps = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import rlhf_lab as lab\nlab.record('demo/steps', steps + 1)"),
    ]
    nbformat.write(notebook, folder / "00_quickstart.ipynb")
    (folder / "profiles.yaml").write_text("full: {}\n")
    (folder / "baselines.json").write_text('{"full": {"00_quickstart": {"demo/steps": {"value": 2}}}}\n')
    out = tmp_path / "demo"
    assert main(["demo", "--notebooks-dir", str(folder), "--out", str(out)]) == 0
    assert json.loads((out / "00_quickstart.records.json").read_text()) == {"demo/steps": 2}
    assert "demo/steps" in (out / "00_quickstart.html").read_text()


@pytest.mark.parametrize(
    "override, message",
    [
        ("max_stepz=3", "did you mean 'max_steps'"),
        ("num_samples=-1", "num_samples must be an integer >= 0, got -1"),
    ],
)
def test_stage_bad_override_is_one_clear_line(override, message, capsys):
    assert main(["sft", "--set", override]) == 1
    assert message in capsys.readouterr().err


def test_prefs_import_stats_export_agreement(tmp_path, capsys):
    from rlhf_lab import load_preferences
    from rlhf_lab.labeling.store import PreferenceStore

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
