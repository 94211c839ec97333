"""The numbered notebooks, their profiles and baselines as this rlhf-lab ships them, and a copy of them in a
folder of the user's own (`rlhf-lab lab DIR`), where `rlhf-lab regress` runs them as it does in a checkout.

    DIR/notebooks/00_quickstart.ipynb ... 09_method_shootout.ipynb, profiles.yaml, baselines.json

An installed wheel carries them in rlhf_lab/notebooks/ (pyproject's force-include); a checkout has them at
its top, in notebooks/. A file the folder already has is never replaced: the user's edits (and baselines
they updated) stay.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rlhf_lab.files import atomic_write

SHIPPED = ("*.ipynb", "profiles.yaml", "baselines.json")


def shipped_notebooks() -> Path:
    """The folder holding the shipped notebooks: rlhf_lab/notebooks/ in a wheel, notebooks/ in a checkout."""
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "notebooks", package.parent / "notebooks"):
        if (folder / "profiles.yaml").is_file():
            return folder
    raise FileNotFoundError(
        f"no shipped notebooks in {package / 'notebooks'} or {package.parent / 'notebooks'}. Fix: reinstall "
        f"rlhf-lab from its wheel (pip install --force-reinstall rlhf-lab), which carries them."
    )


@dataclass
class NotebookCopy:
    """What `copy_notebooks` did: each file copied, already there unchanged, or kept as the user has it."""

    folder: Path
    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # differ from this version's: the user's edits

    def __str__(self) -> str:
        lines = [f"notebooks in {self.folder}: {len(self.copied)} copied, {len(self.unchanged)} already there"]
        if self.kept:
            lines.append(
                f"kept as you have them (they differ from rlhf-lab's own, in {shipped_notebooks()}): "
                + ", ".join(self.kept)
            )
        return "\n".join(lines)


def copy_notebooks(dest: str | os.PathLike) -> NotebookCopy:
    """Copy the shipped notebooks, profiles.yaml and baselines.json into `dest`/notebooks/, each file that
    is not there yet (written whole or not at all); files already there are left exactly as they are."""
    source = shipped_notebooks()
    target = Path(dest) / "notebooks"
    report = NotebookCopy(target)
    files = sorted({path for pattern in SHIPPED for path in source.glob(pattern)})
    for path in files:
        there = target / path.name
        if not there.exists():
            atomic_write(there, path.read_text(encoding="utf-8"))
            report.copied.append(path.name)
        elif there.read_bytes() == path.read_bytes():
            report.unchanged.append(path.name)
        else:
            report.kept.append(path.name)
    return report
