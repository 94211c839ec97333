"""Notebooks as a regression suite: what a notebook records, the profiles it runs under, and the
baselines its records are held to. `rlhf-lab regress` (rlhf_lab/regress_cli.py) runs them.

    lab.record("sft/final_loss", run.summary["final"]["loss"])   # a notebook's last cell
    rlhf-lab regress --profile ci --jobs 2                       # every notebook, exit 1 on a regression

`lab.record(name, value)` keeps JSON scalars (numbers, strings, booleans, None; numpy and torch
scalars are converted) in memory and prints them, so it is harmless in an interactive notebook.
Under `rlhf-lab regress` the runner names a sidecar JSON per notebook in the kernel's environment
(`RLHF_LAB_RECORD`); each call rewrites it atomically, and the runner copies the values into the
executed notebook's metadata (`metadata["rlhf_lab"]["records"]`). A name recorded twice keeps the
last value.

Two files in notebooks/ say what to expect:
- `profiles.yaml`: per profile, per notebook, the parameters papermill injects
  (`ci: {01_sft: {model: tiny, max_steps: 8}}`). The `full` profile is the notebooks' own
  defaults plus whatever `full:` lists. tests/test_notebooks.py reads the same file.
- `baselines.json`: per profile, per notebook, per metric a spec: `{"value": 0.8, "abs": 0.05}`
  (|x - 0.8| <= 0.05), `{"value": 0.8, "rel": 0.1}` (|x - 0.8| <= 10% of 0.8),
  `{"value": 0.6, "direction": "at_least"}` (x >= 0.6; "at_most": x <= 0.6; an `abs` or `rel`
  next to a direction is slack), or `{"value": 8}` (exactly equal; also for strings and booleans).

Statuses: pass, new (recorded, no baseline yet: informational), REGRESSION, MISSING (in the
baseline, not recorded), FAILED (the notebook raised, or recorded nothing). Anything in capitals
makes `rlhf-lab regress` exit 1.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_lab.files import atomic_write

ENV_VAR = "RLHF_LAB_RECORD"
METADATA_KEY = "rlhf_lab"
DIRECTIONS = ("at_least", "at_most")
SPEC_KEYS = ("value", "abs", "rel", "direction")
DEFAULT_REL = 0.1  # tolerance given to a new float metric by --update-baselines (edit it to taste)
FAILING = ("REGRESSION", "MISSING", "FAILED")

_values: dict[str, Any] = {}  # what lab.record kept in this process


# -- lab.record and its sidecar file -----------------------------------------------------------


def record(name: str, value: Any) -> Any:
    """Record one scalar result under `name`; returns the (converted) value."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"record name must be a non-empty string, got {name!r}. Fix: lab.record('accuracy', acc)")
    value = as_scalar(name, value)
    _values[name] = value
    sidecar = os.environ.get(ENV_VAR, "").strip()
    if sidecar:
        write_records(sidecar, {**read_records(sidecar, missing_ok=True), name: value})
    print(f"recorded {name} = {value!r}")
    return value


def recorded() -> dict[str, Any]:
    """The values recorded in this process so far (a copy)."""
    return dict(_values)


def clear() -> None:
    """Forget the values recorded in this process (the sidecar file, if any, is left alone)."""
    _values.clear()


def as_scalar(name: str, value: Any) -> Any:
    """`value` as a JSON scalar: numpy/torch scalars unwrapped; containers and NaN/inf refused."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy and torch scalars, 0-d arrays and tensors
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"record({name!r}, {value}): the value is not finite; a baseline cannot be compared with it. "
                "Fix: record a finite number (or None when there is nothing to report)"
            )
        return value
    raise TypeError(
        f"record({name!r}, ...) got a {type(value).__name__}; only numbers, strings, booleans and None "
        "can be compared with a baseline. Fix: record each figure under its own name, "
        "e.g. lab.record('eval/accuracy', metrics['accuracy'])"
    )


def read_records(path: str | os.PathLike, *, missing_ok: bool = False) -> dict[str, Any]:
    """The records in a sidecar file ({} for a missing file when `missing_ok`)."""
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return {}
        raise FileNotFoundError(f"{path}: no records file (the notebook never called lab.record)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}). Fix: delete the file and run the notebook again") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of name -> value, got {type(data).__name__}")
    return data


def write_records(path: str | os.PathLike, values: dict[str, Any]) -> None:
    """Write `values` as a JSON object (atomically)."""
    atomic_write(path, json.dumps(values, indent=2, sort_keys=True) + "\n")


def notebook_records(notebook: Any) -> dict[str, Any]:
    """The records an executed notebook carries in its metadata."""
    return dict(notebook.metadata.get(METADATA_KEY, {}).get("records", {}))


def store_in_notebook(notebook: Any, values: dict[str, Any]) -> None:
    """Put `values` into `notebook.metadata["rlhf_lab"]["records"]` (an nbformat NotebookNode)."""
    notebook.metadata.setdefault(METADATA_KEY, {})["records"] = dict(values)


# -- results ---------------------------------------------------------------------------------------


class RegressError(ValueError):
    """Bad input to the regression runner (profiles, baselines, notebook selection)."""


@dataclass
class Failure:
    """Why a notebook did not finish: the failing cell (when papermill knows it) and its traceback."""

    ename: str
    evalue: str
    traceback: str
    cell_index: int | None = None
    source: str = ""


@dataclass
class NotebookRun:
    name: str
    executed: Path
    seconds: float
    records: dict[str, Any] = field(default_factory=dict)
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass
class Check:
    """One row of the report: a metric of a notebook against its baseline."""

    notebook: str
    metric: str
    status: str
    value: Any = None
    spec: dict | None = None
    detail: str = ""

    @property
    def failing(self) -> bool:
        return self.status in FAILING


# -- profiles and baselines -----------------------------------------------------------------------


def load_profile(path: str | os.PathLike, profile: str, notebooks_dir: str | os.PathLike | None = None) -> dict:
    """{notebook name: parameters} for `profile` from profiles.yaml; "full" may be absent (defaults).

    With `notebooks_dir`, every parameter name is checked against the notebook's parameters cell.
    """
    import yaml

    path = Path(path)
    if not path.exists():
        if profile == "full":
            return {}
        raise RegressError(f"{path} not found. Fix: create it with a '{profile}:' mapping of notebook -> parameters")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RegressError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise RegressError(f"{path}: expected a mapping of profile -> notebook -> parameters")
    if profile not in data and profile != "full":
        defined = sorted({*map(str, data), "full"})
        raise RegressError(
            f"{path}: no profile {profile!r}. Fix: use one of {', '.join(defined)} "
            "(full: the notebooks' own defaults), or add it to the file"
        )
    entries = data.get(profile) or {}
    if not isinstance(entries, dict):
        raise RegressError(f"{path}: {profile}: expected a mapping of notebook name -> parameters")
    for name, params in entries.items():
        if not isinstance(params, dict):
            raise RegressError(
                f"{path}: {profile}.{name}: expected a mapping of parameter -> value, got {type(params).__name__}"
            )
        if notebooks_dir is not None:
            check_parameters(Path(notebooks_dir) / f"{name}.ipynb", params, f"{path}: {profile}.{name}")
    return {str(name): dict(params) for name, params in entries.items()}


def check_parameters(notebook: Path, params: dict, where: str) -> None:
    """Refuse parameters the notebook's `parameters` cell does not define (a typo would be ignored)."""
    import papermill

    if not notebook.exists():
        raise RegressError(f"{where}: there is no notebook {notebook}. Fix: rename or remove the entry")
    known = papermill.inspect_notebook(str(notebook))
    if not known:
        raise RegressError(f"{notebook}: no cell tagged 'parameters'. Fix: tag the cell holding the defaults")
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise RegressError(
            f"{where}: unknown parameter(s) {', '.join(unknown)}; the parameters cell of "
            f"{notebook.name} defines {', '.join(known)}. Fix: use one of those names"
        )


def load_baselines(path: str | os.PathLike) -> dict:
    """baselines.json as {profile: {notebook: {metric: spec}}}, validated ({} when the file is absent)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RegressError(
            f"{path}: line {err.lineno} column {err.colno}: {err.msg}. Fix the JSON, or delete "
            "the file and run `rlhf-lab regress --update-baselines` to write it again"
        ) from err
    if not isinstance(data, dict):
        raise RegressError(f"{path}: expected an object of profile -> notebook -> metric -> spec")
    for profile, notebooks in data.items():
        if not isinstance(notebooks, dict):
            raise RegressError(f"{path}: {profile}: expected an object of notebook -> metrics")
        for notebook, metrics in notebooks.items():
            if not isinstance(metrics, dict):
                raise RegressError(f"{path}: {profile}.{notebook}: expected an object of metric -> spec")
            for metric, spec in metrics.items():
                check_spec(spec, f"{path}: {profile}.{notebook}.{metric}")
    return data


def check_spec(spec: Any, where: str) -> None:
    fix = (
        'Fix: write {"value": 0.8, "abs": 0.05}, {"value": 0.8, "rel": 0.1} or {"value": 0.6, "direction": "at_least"}'
    )
    if not isinstance(spec, dict) or "value" not in spec:
        raise RegressError(f"{where}: a spec needs a 'value'. {fix}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise RegressError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SPEC_KEYS)}. {fix}")
    if "abs" in spec and "rel" in spec:
        raise RegressError(f"{where}: give 'abs' or 'rel', not both. {fix}")
    numeric = _is_number(spec["value"])
    for key in ("abs", "rel"):
        if key in spec and not (_is_number(spec[key]) and spec[key] >= 0):
            raise RegressError(f"{where}: '{key}' must be a number >= 0, got {spec[key]!r}. {fix}")
        if key in spec and not numeric:
            raise RegressError(f"{where}: '{key}' needs a numeric 'value', got {spec['value']!r}. {fix}")
    if "direction" in spec and (spec["direction"] not in DIRECTIONS or not numeric):
        raise RegressError(
            f"{where}: 'direction' must be one of {', '.join(DIRECTIONS)} with a numeric value, "
            f"got {spec['direction']!r}. {fix}"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# -- comparison -----------------------------------------------------------------------------------


def compare_value(spec: dict, value: Any) -> tuple[bool, str]:
    """(passes, why) for one recorded value against its baseline spec."""
    expected = spec["value"]
    if not _is_number(expected):
        return value == expected, "" if value == expected else f"expected exactly {expected!r}"
    if not _is_number(value):
        return False, f"expected a number, got {value!r}"
    slack = spec.get("abs", abs(expected) * spec["rel"] if "rel" in spec else 0.0)
    direction = spec.get("direction")
    if direction == "at_least":
        return value >= expected - slack, f"below the floor {expected - slack:.6g}"
    if direction == "at_most":
        return value <= expected + slack, f"above the ceiling {expected + slack:.6g}"
    delta = value - expected
    return abs(delta) <= slack, f"off by {delta:+.6g}, allowed ±{slack:.6g}"


def describe(spec: dict | None) -> str:
    """The tolerance column: '±0.05', '±10%', '>= (-0.1)', '== exact'."""
    if spec is None:
        return "-"
    slack = f"{spec['abs']:g}" if "abs" in spec else f"{spec['rel'] * 100:g}%" if "rel" in spec else ""
    if "direction" in spec:
        sign = ">=" if spec["direction"] == "at_least" else "<="
        return f"{sign} ({'-' if sign == '>=' else '+'}{slack})" if slack else sign
    return f"±{slack}" if slack else "== exact"


def compare(runs: list[NotebookRun], baselines: dict) -> list[Check]:
    """One Check per (notebook, metric), in run order; `baselines` is one profile's {notebook: specs}."""
    checks = []
    for run in runs:
        specs = baselines.get(run.name, {})
        if not run.ok:
            checks.append(Check(run.name, "-", "FAILED", detail=f"{run.failure.ename}: {run.failure.evalue}"))
            continue
        if not run.records:
            checks.append(Check(run.name, "-", "FAILED", detail="recorded nothing: end it with lab.record(...)"))
            continue
        for metric in sorted(set(specs) | set(run.records)):
            spec, value = specs.get(metric), run.records.get(metric)
            if spec is None:
                checks.append(Check(run.name, metric, "new", value, None, "no baseline yet"))
            elif metric not in run.records:
                checks.append(Check(run.name, metric, "MISSING", None, spec, "not recorded by this run"))
            else:
                ok, why = compare_value(spec, value)
                checks.append(Check(run.name, metric, "pass" if ok else "REGRESSION", value, spec, "" if ok else why))
    return checks


def updated_baselines(baselines: dict, profile: str, runs: list[NotebookRun]) -> dict:
    """`baselines` with the values of every notebook that ran: tolerances kept, new metrics added
    (floats with rel DEFAULT_REL, others exact), metrics no longer recorded dropped. A floor or
    ceiling (`direction`) is a chosen bound, so it stays while the new value meets it. Failed
    notebooks keep their old entry."""
    new = json.loads(json.dumps(baselines))
    section = new.setdefault(profile, {})
    for run in runs:
        if not run.ok or not run.records:
            continue
        old = section.get(run.name, {})
        entry = {}
        for metric, value in sorted(run.records.items()):
            spec = {k: v for k, v in old.get(metric, {}).items() if k != "value"}
            if metric not in old and isinstance(value, float):
                spec = {"rel": DEFAULT_REL}
            if "direction" in spec and compare_value(old[metric], value)[0]:
                value = old[metric]["value"]
            entry[metric] = {"value": float(f"{value:.6g}") if isinstance(value, float) else value, **spec}
        section[run.name] = entry
    new[profile] = dict(sorted(section.items()))
    return new


def dump_baselines(baselines: dict) -> str:
    """JSON with one metric per line, so a diff shows exactly which values moved."""

    def block(items: list[str], indent: str) -> str:
        return "{\n" + ",\n".join(items) + f"\n{indent}}}" if items else "{}"

    profiles = []
    for profile, notebooks in baselines.items():
        entries = []
        for notebook, metrics in notebooks.items():
            rows = [f"      {json.dumps(m)}: {json.dumps(spec)}" for m, spec in metrics.items()]
            entries.append(f"    {json.dumps(notebook)}: {block(rows, '    ')}")
        profiles.append(f"  {json.dumps(profile)}: {block(entries, '  ')}")
    return block(profiles, "") + "\n"


def baseline_diff(old_text: str, new_text: str, path: str) -> str:
    return "".join(
        difflib.unified_diff(
            old_text.splitlines(True), new_text.splitlines(True), f"{path} (before)", f"{path} (after)"
        )
    )
