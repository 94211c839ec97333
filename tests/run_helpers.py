"""Helpers shared by test files (tests/ is on sys.path through its conftest): executing a notebook
headless as papermill does, and comparing a resumed run with an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch

TIMING = ("time/", "throughput/")  # wall-clock metrics: never equal between two runs


def execute_notebook(cells: list[str], folder: Path, *, timeout: int = 300) -> Path:
    """Run `cells` in a fresh python3 kernel with `folder` as its cwd; returns folder/executed.ipynb."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    path = folder / "executed.ipynb"
    nbformat.write(nb, path)
    return path


def assert_same_run(whole, resumed, steps: int, *, weights: bool = True) -> None:
    """The resumed run logged every step of the uninterrupted one with the same values (1e-5), and ends
    with the same weights (1e-6)."""
    a, b = whole.metrics, resumed.metrics
    assert list(a["step"]) == list(b["step"]) == list(range(1, steps + 1))
    for column in a.columns:
        if not column.startswith(TIMING):
            assert b[column].tolist() == pytest.approx(a[column].tolist(), abs=1e-5, nan_ok=True), column
    if weights:
        for p, q in zip(whole.model.parameters(), resumed.model.parameters()):
            assert torch.allclose(p, q, atol=1e-6)
