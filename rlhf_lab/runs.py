"""Run folders: every stage writes the same files, so any run can be read back the same way.

    <run>/config.yaml     the config the run used
    <run>/metrics.jsonl   one row per logged step
    <run>/samples.jsonl   prompts, completions (and rewards when there are any)
    <run>/summary.json    final figures
Files are replaced atomically (write a temporary file, then rename), so an interrupted run never
leaves a half-written summary or config.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from rlhf_lab.config import to_yaml


class RunFolder:
    """Writes one run's files."""

    def __init__(self, path: str | Path, *, overwrite: bool = True):
        self.path = Path(path)
        if self.path.exists() and any(self.path.iterdir()) and not overwrite:
            raise FileExistsError(f"run folder {self.path} already exists and is not empty; pick another run_name")
        self.path.mkdir(parents=True, exist_ok=True)

    RUN_FILES = ("run.json", "metrics.jsonl", "summary.json", "samples.jsonl", "config.yaml", "monitor.html")

    def reset(self) -> None:
        """Remove an earlier run's files (run.json first: a half-replaced run never looks finished)."""
        for name in self.RUN_FILES:
            (self.path / name).unlink(missing_ok=True)

    def write_config(self, config: Any) -> Path:
        return self._atomic("config.yaml", to_yaml(config))

    def write_summary(self, summary: dict) -> Path:
        return self._atomic("summary.json", json.dumps(_finite(summary), indent=2, ensure_ascii=False) + "\n")

    def write_samples(self, rows: list[dict]) -> Path:
        return self._atomic("samples.jsonl", "".join(json.dumps(_finite(r), ensure_ascii=False) + "\n" for r in rows))

    def log_metrics(self, row: dict) -> None:
        """Append one metrics row (flushed at once, so a crash keeps every earlier step)."""
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(_finite(row), ensure_ascii=False) + "\n")
            handle.flush()

    def _atomic(self, name: str, text: str) -> Path:
        target = self.path / name
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.path)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null rather than producing an unreadable file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
