"""Notebooks are tests: each runs headlessly under papermill with tiny CI parameters."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The CI profile: tiny models and few tokens, so every notebook runs in seconds.
CI_PARAMETERS = {
    "00_quickstart": {"model": "tiny", "max_new_tokens": 8, "num_prompts": 2},
}


@pytest.mark.parametrize("name", sorted(CI_PARAMETERS))
def test_notebook_runs_under_papermill(name, tmp_path):
    import papermill

    out = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / f"{name}.ipynb"), str(out), parameters=CI_PARAMETERS[name],
        cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
    )  # fmt: skip
    import nbformat

    executed = nbformat.read(out, as_version=4)
    errors = [
        o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    assert any(c.metadata.get("tags") == ["injected-parameters"] for c in executed.cells)


def test_every_notebook_has_a_ci_profile():
    names = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert names == set(CI_PARAMETERS), "add CI parameters for each notebook"
