"""Repository hygiene the project promises: clean notebooks, a parameters cell, CI calls make test."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name} cell {i} has outputs: clear them before committing"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_a_parameters_cell(path):
    nb = json.loads(path.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters' for papermill"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert readme.index("make lab") < readme.index("make test") < 1500, "README opens with the two commands"


def test_no_large_or_weight_files_tracked():
    for path in ROOT.rglob("*"):
        if any(part in {".venv", ".git", "runs", "node_modules"} for part in path.relative_to(ROOT).parts):
            continue
        if path.is_file():
            assert path.suffix not in {".safetensors", ".bin", ".gguf", ".pt"}, path
            assert path.stat().st_size < 5 * 2**20, f"{path} is over 5 MB"


MAX_MODULE_LINES = 400


def test_modules_stay_small():
    """One concept per module, readable in one sitting (DESIGN.md: aim for 100-400 lines)."""
    sizes = {p.relative_to(ROOT): len(p.read_text().splitlines()) for p in (ROOT / "rlhf_lab").rglob("*.py")}
    assert {str(p): n for p, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_ci_lints_and_the_layers_are_contracts():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make lint" in ci and "lint-imports" in (ROOT / "Makefile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    for contract in ('type = "layers"', 'type = "acyclic_siblings"', 'type = "private_names"'):
        assert contract in pyproject


@pytest.mark.parametrize(
    "line, private",
    [
        ("from rlhf_lab.models.loading import _pick_device", ["_pick_device"]),
        ("from rlhf_lab.x import a, _b as c, __version__", ["_b"]),
        ("from rlhf_lab.x import (a, _b,", ["_b"]),
        ("import rlhf_lab.models._hidden", []),  # a private module is private_modules' business
        ("from rlhf_lab import __version__", []),
    ],
)
def test_the_private_names_contract_reads_import_lines(line, private):
    from import_contracts import private_names

    assert private_names(line) == private
