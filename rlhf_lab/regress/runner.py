"""`rlhf-lab regress`: run notebooks with papermill, print the table, write runs/regress/, exit 1 on a regression.

    rlhf-lab regress --profile ci --jobs 2
    rlhf-lab regress --notebooks '01_*' --notebooks 02_reward_model --update-baselines

`regress(...)` is the whole command as a function (the tests call it); `add_regress_parser` wires
it into the CLI. The output folder holds each executed notebook (`<name>.ipynb`, records in its
metadata) and its HTML export with every chart (`<name>.html`), its records (`<name>.records.json`), its working folder (`work/<name>/`: the run
folders the notebook wrote), `results.json` and `report.html`. What is compared, and how, is in rlhf_lab/regress.py.
"""

from __future__ import annotations

import fnmatch
import html
import os
import re
import shutil
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from rlhf_lab.files import atomic_write
from rlhf_lab.regress.baselines import (
    ENV_VAR,
    Check,
    Failure,
    NotebookRun,
    RegressError,
    baseline_diff,
    compare,
    describe,
    dump_baselines,
    load_baselines,
    load_profile,
    read_records,
    store_in_notebook,
    updated_baselines,
    write_records,
)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
COLUMNS = ("notebook", "metric", "baseline", "value", "check", "status")


def regress(
    notebooks: list[str] | None = None,
    profile: str = "ci",
    *,
    update_baselines: bool = False,
    jobs: int = 1,
    notebooks_dir: str | os.PathLike = "notebooks",
    baselines: str | os.PathLike | None = None,
    profiles: str | os.PathLike | None = None,
    out: str | os.PathLike = "runs/regress",
    kernel: str = "python3",
    cell_timeout: float | None = None,
    log=print,
) -> int:
    """Run the selected notebooks under `profile` and compare with the baselines; returns the exit code."""
    if jobs < 1:
        raise RegressError(f"--jobs {jobs}: must be 1 or more")
    folder = Path(notebooks_dir)
    baselines_path = Path(baselines) if baselines else folder / "baselines.json"
    profiles_path = Path(profiles) if profiles else folder / "profiles.yaml"
    sources = select_notebooks(folder, notebooks)
    parameters = load_profile(profiles_path, profile, folder)
    missing = [s.stem for s in sources if s.stem not in parameters]
    if missing and profile != "full":  # it would run with the notebook's defaults: the embedded model, for long
        raise RegressError(
            f"{profiles_path}: profile {profile!r} has no entry for {', '.join(missing)}. Fix: add "
            f"'{missing[0]}: {{model: tiny, ...}}' under '{profile}:', or leave it out with --notebooks"
        )
    known = load_baselines(baselines_path)  # bad baselines fail before anything runs
    out = Path(out)
    log(f"regress: {len(sources)} notebook(s), profile {profile}, {jobs} job(s) -> {out}/")
    started = time.perf_counter()
    runs = run_notebooks(sources, out, parameters, jobs=jobs, kernel=kernel, cell_timeout=cell_timeout)
    wall = time.perf_counter() - started
    checks = compare(runs, known.get(profile, {}))
    log(format_table(checks))
    log(format_timings(runs, wall))
    failures = format_failures(runs)
    if failures:
        log(failures)
    failing = any(c.failing for c in checks)
    (out / "report.html").write_text(html_report(runs, checks, profile, wall))
    write_records(out / "results.json", results(runs, checks, profile, wall))
    if update_baselines:
        old_text = baselines_path.read_text() if baselines_path.exists() else ""
        new_text = dump_baselines(updated_baselines(known, profile, runs))
        diff = baseline_diff(old_text, new_text, str(baselines_path))
        if diff:
            atomic_write(baselines_path, new_text)
            log(f"updated {baselines_path}:\n{diff}")
        else:
            log(f"{baselines_path}: unchanged")
        # the point of an update is to accept new values: only a notebook that did not run fails it
        failing = any(not run.ok for run in runs)
    verdict = ("FAILED" if failing else "passed") + (" (baselines updated)" if update_baselines else "")
    log(
        f"regress {verdict}: {sum(c.status == 'pass' for c in checks)} pass, "
        f"{sum(c.failing for c in checks)} failing, {sum(c.status == 'new' for c in checks)} new; "
        f"report: {out / 'report.html'}"
    )
    return 1 if failing else 0


def select_notebooks(notebooks_dir: str | os.PathLike, patterns: list[str] | None) -> list[Path]:
    """Notebooks in `notebooks_dir` whose name matches any pattern ('01_sft', '0[12]_*', '*.ipynb'
    or a path such as 'notebooks/02_*.ipynb'); all of them without patterns."""
    folder = Path(notebooks_dir)
    available = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if not available:
        raise RegressError(f"{folder}: no notebooks (*.ipynb) here. Fix: pass --notebooks-dir")
    if not patterns:
        return available
    chosen = []
    for pattern in patterns:
        name = Path(pattern).name
        hits = [p for p in available if fnmatch.fnmatch(p.name, name) or fnmatch.fnmatch(p.stem, name)]
        if not hits:
            raise RegressError(
                f"--notebooks {pattern!r} matches no notebook in {folder}; there are: "
                f"{', '.join(p.stem for p in available)}. Fix: use a name or a glob like '0[12]_*'"
            )
        chosen += [p for p in hits if p not in chosen]
    return sorted(chosen)


def run_notebook(
    source: Path,
    out_dir: Path,
    parameters: dict,
    *,
    kernel: str = "python3",
    cell_timeout: float | None = None,
    threads: int | None = None,
) -> NotebookRun:
    """Execute one notebook with papermill into `out_dir`/<name>.ipynb, its cwd `out_dir`/work/<name>/.

    Never raises for a failing notebook: the failure (cell source and traceback) is in the result.
    """
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    name, out_dir = source.stem, Path(out_dir).resolve()
    executed = out_dir / f"{name}.ipynb"
    sidecar = out_dir / f"{name}.records.json"
    work = out_dir / "work" / name  # the kernel's cwd: the run folders the notebook writes land here
    for stale in (executed, sidecar):
        stale.unlink(missing_ok=True)  # never read a value an earlier run left behind
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {
        ENV_VAR: str(sidecar),
        "RLHF_LAB_MONITOR": os.environ.get("RLHF_LAB_MONITOR", "html"),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
    }
    if threads and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(threads)  # parallel kernels on few cores: do not oversubscribe
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the kernel papermill starts inherits this environment
    failure, started = None, time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source),
            str(executed),
            parameters=parameters,
            kernel_name=kernel,
            cwd=str(work),
            progress_bar=False,
            execution_timeout=cell_timeout,
        )
    except PapermillExecutionError as err:
        failure = Failure(err.ename, err.evalue, _ANSI.sub("", "\n".join(err.traceback)), err.cell_index, err.source)
    except Exception as err:  # kernel died, timeout, unreadable notebook
        failure = Failure(type(err).__name__, str(err), traceback.format_exc())
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    seconds = time.perf_counter() - started
    records = read_records(sidecar, missing_ok=True)
    if executed.exists():
        notebook = nbformat.read(executed, as_version=4)
        store_in_notebook(notebook, records)
        notebook.metadata["rlhf_lab"].update(parameters=parameters, seconds=round(seconds, 1))
        nbformat.write(notebook, executed)
        export_html(executed)
    return NotebookRun(name, executed, seconds, records, failure)


def export_html(executed: Path) -> Path:
    """`<name>.html` beside an executed notebook: one page with every output, its charts drawn offline
    (they carry plotly.js, `rlhf_lab.monitor.static`)."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(executed))
    target = executed.with_suffix(".html")
    atomic_write(target, body)
    return target


def run_notebooks(
    sources: list[Path], out_dir: Path, profile: dict, *, jobs: int = 1, **options: Any
) -> list[NotebookRun]:
    """Run `sources` (in parallel processes when jobs > 1); results in the order of `sources`."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if jobs == 1 or len(sources) == 1:
        return [run_notebook(s, out_dir, profile.get(s.stem, {}), **options) for s in sources]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(run_notebook, s, out_dir, profile.get(s.stem, {}), threads=threads, **options) for s in sources
        ]
        return [f.result() for f in futures]


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def rows(checks: list[Check]) -> list[tuple[str, ...]]:
    return [
        (
            c.notebook,
            c.metric,
            _value(c.spec["value"]) if c.spec else "-",
            _value(c.value),
            describe(c.spec),
            c.status + (f" ({c.detail})" if c.detail else ""),
        )
        for c in checks
    ]


def format_table(checks: list[Check]) -> str:
    """A plain-text table, one line per metric; a failing line starts with '!'."""
    body = rows(checks)
    widths = [max(len(COLUMNS[i]), *(len(r[i]) for r in body)) if body else len(COLUMNS[i]) for i in range(5)]
    line = lambda mark, r: f"{mark} " + "  ".join(f"{r[i]:{widths[i]}}" for i in range(5)) + f"  {r[5]}"  # noqa: E731
    out = [line(" ", COLUMNS), line(" ", tuple("-" * w for w in widths) + ("------",))]
    out += [line("!" if c.failing else " ", r) for c, r in zip(checks, body)]
    return "\n".join(out)


def format_timings(runs: list[NotebookRun], wall: float) -> str:
    lines = [f"  {r.name}: {'ok' if r.ok else 'FAILED'} in {r.seconds:.1f} s -> {r.executed}" for r in runs]
    return "\n".join(["time per notebook:", *lines, f"  wall time: {wall:.1f} s"])


def format_failures(runs: list[NotebookRun]) -> str:
    """For each failed notebook: the failing cell's source and its traceback."""
    parts = []
    for run in runs:
        if run.ok:
            continue
        f = run.failure
        cell = f"cell {f.cell_index} of the executed notebook" if f.cell_index is not None else "no cell ran"
        parts.append(f"=== {run.name} FAILED ({cell}): {f.ename}: {f.evalue}")
        if f.source:
            parts.append("--- cell source:\n" + f.source.rstrip())
        parts.append("--- traceback:\n" + f.traceback.rstrip())
        parts.append(f"--- executed notebook (with outputs up to the error): {run.executed}")
    return "\n".join(parts)


def results(runs: list[NotebookRun], checks: list[Check], profile: str, wall: float) -> dict:
    return {
        "profile": profile,
        "wall_s": round(wall, 1),
        "failing": any(c.failing for c in checks),
        "notebooks": {
            r.name: {
                "ok": r.ok,
                "seconds": round(r.seconds, 1),
                "executed": str(r.executed),
                "records": r.records,
                "error": r.failure and vars(r.failure),
            }
            for r in runs
        },
        "checks": [
            {
                "notebook": c.notebook,
                "metric": c.metric,
                "status": c.status,
                "value": c.value,
                "baseline": c.spec,
                "detail": c.detail,
            }
            for c in checks
        ],
    }


CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}tr.fail td{background:#fde2e2}tr.new td{background:#eef5ff}
pre{background:#f6f6f6;padding:8px;overflow:auto;white-space:pre-wrap}"""


def html_report(runs: list[NotebookRun], checks: list[Check], profile: str, wall: float) -> str:
    """A self-contained page; every name, value and traceback is escaped (text, never markup)."""
    e = html.escape
    failing = any(c.failing for c in checks)
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    body = "".join(
        f"<tr class='{'fail' if c.failing else c.status}'>" + "".join(f"<td>{e(cell)}</td>" for cell in r) + "</tr>"
        for c, r in zip(checks, rows(checks))
    )
    times = "".join(
        f"<li><a href='{e(r.executed.with_suffix('.html').name)}'>{e(r.name)}</a> "
        f"(<a href='{e(r.executed.name)}'>notebook</a>): {'ok' if r.ok else 'FAILED'} in {r.seconds:.1f} s</li>"
        for r in runs
    )
    failures = "".join(
        f"<h3>{e(r.name)}: {e(r.failure.ename)}: {e(r.failure.evalue)}</h3>"
        f"<p>cell {e(str(r.failure.cell_index))}</p><pre>{e(r.failure.source)}</pre><pre>{e(r.failure.traceback)}</pre>"
        for r in runs
        if not r.ok
    )
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>rlhf-lab regress ({e(profile)})</title>"
        f"<style>{CSS}</style></head><body><h2>rlhf-lab regress: {'FAILED' if failing else 'passed'}</h2>"
        f"<p>profile {e(profile)}, {len(runs)} notebook(s), wall time {wall:.1f} s</p><ul>{times}</ul>"
        f"<table><tr>{head}</tr>{body}</table>{'<h2>Failures</h2>' + failures if failures else ''}</body></html>\n"
    )


def demo(out: str | os.PathLike = "runs/demo", notebooks_dir: str | os.PathLike = "notebooks", log=print) -> int:
    """`make demo` / `rlhf-lab demo`: 00_quickstart with its own defaults (the embedded model), headless,
    compared with its full-profile baselines; `out` gets the executed notebook and its HTML export."""
    code = regress(["00_quickstart"], "full", notebooks_dir=notebooks_dir, out=out, log=log)
    executed = Path(out) / "00_quickstart.ipynb"
    if executed.exists():  # run_notebook exported it beside the notebook
        log(f"demo: {executed.with_suffix('.html')}")
    return code
