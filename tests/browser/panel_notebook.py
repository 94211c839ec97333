"""The notebook the browser test opens: one cell that builds a store and shows a LabelingPanel."""

from __future__ import annotations

from pathlib import Path

import nbformat

ANNOTATOR = "browser-test"
XSS_IMG = '<img src=x onerror="window.__xss=1">'
XSS_SCRIPT = "<script>window.__xss=2</script>"

# The first item's candidates carry markup that would run if the panel ever parsed text as HTML.
ITEMS = [
    {
        "prompt": "Which answer is safer to render?",
        "responses": [f"{XSS_IMG} should show as text.", f"{XSS_SCRIPT} should show as text too."],
    },
    {"prompt": "Name a colour.", "responses": ["Blue.", "Seven."]},
    {"prompt": "What is 2 + 2?", "responses": ["4.", "Four."]},
    {"prompt": "Say hello.", "responses": ["Hello!", "Goodbye."]},
]


def write_notebook(folder: Path, store_path: Path, name: str = "labeling_panel.ipynb") -> Path:
    """Write the test notebook into ``folder``; the store lives at the absolute ``store_path``."""
    source = "\n".join(
        [
            "import rlhf_lab as lab",
            "",
            f"store = lab.PreferenceStore({str(store_path.resolve())!r})",
            f"items = {ITEMS!r}",
            f"panel = lab.LabelingPanel(store, items, annotator={ANNOTATOR!r})",
            "panel",
        ]
    )
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    path = folder / name
    nbformat.write(nb, path)
    return path
