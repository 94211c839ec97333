"""Notebooks are tests. Here: every notebook is committed clean, has a parameters cell, a CI profile
and a baseline, and ends by recording results; 00_quickstart runs under papermill with the CI
profile and meets its baselines. `rlhf-lab regress --profile ci` (make regress, run by CI) executes
every notebook, so they are not executed twice here."""

import json
from pathlib import Path

import pytest

from rlhf_lab.regress.baselines import compare, load_baselines, load_profile

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
# The one source of CI parameters, shared with `rlhf-lab regress`; loading checks every name
# against the notebook's parameters cell.
CI_PARAMETERS = load_profile(NOTEBOOKS_DIR / "profiles.yaml", "ci", NOTEBOOKS_DIR)
BASELINES = load_baselines(NOTEBOOKS_DIR / "baselines.json")


def code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_every_notebook_has_a_ci_profile_and_a_ci_baseline():
    names = {p.stem for p in NOTEBOOKS}
    assert names == set(CI_PARAMETERS), "notebooks/profiles.yaml needs a ci entry for each notebook (and no other)"
    assert names == set(BASELINES["ci"]), (
        "notebooks/baselines.json needs a ci entry for each notebook: "
        "run `rlhf-lab regress --notebooks NAME --update-baselines`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_and_ends_by_recording(path):
    notebook = json.loads(path.read_text())
    for i, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path.name} cell {i} has outputs: clear them before committing"
            assert cell["execution_count"] is None, f"{path.name} cell {i} has an execution count"
        assert not {"papermill", "execution"} & set(cell["metadata"]), f"{path.name} cell {i}: executed metadata"
    assert not {"papermill", "rlhf_lab", "widgets"} & set(notebook["metadata"]), f"{path.name}: executed metadata"
    cells = code_cells(path)
    tagged = [i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", [])]
    assert tagged == [0], f"{path.name}: the first code cell, and only it, is tagged 'parameters'"
    assert "model = None" in "".join(cells[0]["source"]), f"{path.name}: the default model is the embedded one"
    assert "lab.record(" in "".join(cells[-1]["source"]), f"{path.name}: the last code cell calls lab.record"


def test_quickstart_runs_under_papermill_and_meets_its_baselines(tmp_path):
    from rlhf_lab.regress.runner import run_notebook

    run = run_notebook(NOTEBOOKS_DIR / "00_quickstart.ipynb", tmp_path, CI_PARAMETERS["00_quickstart"])
    assert run.ok, f"{run.failure.ename}: {run.failure.evalue}\n{run.failure.traceback}"
    import nbformat

    executed = nbformat.read(run.executed, as_version=4)
    assert any(c.metadata.get("tags") == ["injected-parameters"] for c in executed.cells)
    assert executed.metadata["rlhf_lab"]["records"] == run.records
    assert run.records["generate/answers"] == CI_PARAMETERS["00_quickstart"]["num_prompts"]
    checks = compare([run], BASELINES["ci"])
    assert [c.metric for c in checks if c.failing] == []
    assert {c.metric for c in checks} == set(BASELINES["ci"]["00_quickstart"])
