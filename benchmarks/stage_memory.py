"""Where the quickstart's memory goes: 00_quickstart run by papermill with its own defaults (what `make demo`
runs), each code cell's peak RSS and the RSS it leaves behind, read by the kernel itself.

    .venv/bin/python benchmarks/stage_memory.py [--tree DIR ...] [--notebook 00_quickstart]
        [-p NAME VALUE ...] [--out runs/stage_memory] [--json FILE]

Before each cell the kernel resets its peak (5 written to /proc/self/clear_refs, Linux); after it, the cell's
peak (VmHWM) and what stays resident (VmRSS, after a gc and malloc_trim) go to a JSON lines file. The kernel's peak over all
cells is the run's peak RSS (papermill's own process is small). Each `--tree` (default: this checkout) runs
its own copy of the notebook with that tree first on PYTHONPATH, one tree after the other, and the table puts
them side by side, with ratios of the last tree to the first (`--baseline FILE` puts an earlier run's trees
first: peak RSS does not depend on what else runs, as time does). `-p` overrides a notebook parameter (a
quicker look: `-p sft_steps 2 -p ppo_updates 2`); the recorded values (`lab.record`) are printed per tree so
that results can be compared too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
# Runs inside the kernel, as the notebook's first cell.
PROBE = """
import ctypes as _ctypes, gc as _gc, json as _json, time as _time
_libc = _ctypes.CDLL('libc.so.6')
def _mem(key):
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
def _mem_pre(info):
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    globals()['_mem_t0'] = _time.time()
def _mem_post(result):
    peak = _mem('VmHWM:')
    _gc.collect()
    _libc.malloc_trim(0)  # freed memory back to the system: what stays is what is still referenced
    row = {'cell': result.info.raw_cell, 'peak': peak, 'rss': _mem('VmRSS:'), 's': _time.time() - _mem_t0}
    with open(LOG, 'a') as f:
        f.write(_json.dumps(row) + '\\n')
_mem_t0 = _time.time()
get_ipython().events.register('pre_run_cell', _mem_pre)
get_ipython().events.register('post_run_cell', _mem_post)
"""


def label(cell: str) -> str:
    """A short name for a cell: the lab call it makes (`sft = lab.sft(...)` -> "lab.sft"), else its first line."""
    calls = re.findall(r"^(\w+) = lab\.(\w+)\(", cell, flags=re.M)
    if calls:
        return ", ".join(f"lab.{fn}" for _, fn in calls)
    first = next((line for line in cell.splitlines() if line.strip() and not line.startswith("#")), "")
    return first[:48]


def run_tree(tree: Path, notebook: str, params: dict, out: Path) -> dict:
    import nbformat

    out.mkdir(parents=True, exist_ok=True)
    log = out / "memory.jsonl"
    log.unlink(missing_ok=True)
    nb = nbformat.read(tree / "notebooks" / f"{notebook}.ipynb", as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(f"LOG = {str(log)!r}\n{PROBE}"))
    src = out / f"{notebook}.ipynb"
    nbformat.write(nb, src)
    records = out / "records.json"
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "HF_HUB_OFFLINE": "1",
           "RLHF_LAB_RECORD": str(records)}  # fmt: skip
    cmd = [sys.executable, "-m", "papermill", str(src), str(out / "executed.ipynb"), "--cwd", str(out)]
    for name, value in params.items():
        cmd += ["-p", name, value]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    rows = [r for r in rows if "LOG = " not in r["cell"] and "injected-parameters" not in r["cell"]]
    recorded = json.loads(records.read_text()) if records.exists() else {}
    return {"tree": str(tree), "cells": rows, "peak": max(r["peak"] for r in rows), "recorded": recorded}


def gb(n: float) -> str:
    return f"{n / 2**30:.2f}"


def table(results: list[dict]) -> str:
    head = "| cell | " + " | ".join(f"peak GB ({i}) | left GB ({i})" for i in range(len(results)))
    if len(results) > 1:
        head += " | peak ratio"
    lines = [head + " |", "|" + "---|" * (head.count("|"))]
    for index, row in enumerate(results[0]["cells"]):
        cells = [r["cells"][index] if index < len(r["cells"]) else None for r in results]
        if any(c is not None and label(c["cell"]) != label(row["cell"]) for c in cells):
            cells = [cells[0]] + [None] * (len(cells) - 1)  # the notebooks differ here: no side by side
        line = f"| {label(row['cell'])} | " + " | ".join(
            f"{gb(c['peak'])} | {gb(c['rss'])}" if c else "- | -" for c in cells
        )
        if len(results) > 1:
            line += f" | {cells[-1]['peak'] / row['peak']:.2f}" if cells[-1] else " | -"
        lines.append(line + " |")
    total = "| **whole notebook (peak)** | " + " | ".join(f"**{gb(r['peak'])}** | " for r in results)
    if len(results) > 1:
        total += f" | **{results[-1]['peak'] / results[0]['peak']:.2f}**"
    return "\n".join(lines + [total + " |"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", type=Path, help="a checkout to measure (repeatable)")
    parser.add_argument("--notebook", default="00_quickstart")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("--out", type=Path, default=Path("runs/stage_memory"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--baseline", type=Path, help="an earlier run's --json file: its trees come first")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [HERE])]
    results = json.loads(args.baseline.read_text()) if args.baseline else []
    for index, tree in enumerate(trees, start=len(results)):
        out = Path(
            tempfile.mkdtemp(prefix=f"tree{index}-", dir=args.out.mkdir(parents=True, exist_ok=True) or args.out)
        )
        results.append(run_tree(tree, args.notebook, dict(args.p), out.resolve()))
        print(
            f"tree {index}: {tree}: peak {gb(results[-1]['peak'])} GB; recorded {results[-1]['recorded']}", flush=True
        )
    print(table(results))
    if len(results) > 1:
        first = results[0]["recorded"]
        for other in results[1:]:
            diffs = {k: abs(float(v) - float(other["recorded"].get(k, float("nan")))) for k, v in first.items()}
            print("largest recorded difference against tree 0:", max(diffs.values(), default=0.0), diffs)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
