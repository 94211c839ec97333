"""Read training data from files, datasets and Python lists into located rows.

This is the only place that knows about file formats. Every loader reads through
:func:`read_source`, so a JSONL file, a CSV, a Parquet file, a ``datasets.Dataset`` and a list of
dicts all arrive as the same thing: :class:`Row`\\s that remember where they came from
("prefs.jsonl", "line 7"), plus the problems found while reading (broken JSON, invalid UTF-8,
rows that are not objects). Files are read as bytes and decoded line by line so a bad byte or a
broken line costs one row, not the whole file, and every problem has a real line number.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from rlhf_lab.data.errors import Problem

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")

# A CSV cell that starts like a JSON list of objects or strings was meant to be JSON; if it fails to
# parse we say so instead of silently treating it as text. "[1] see ..." stays text.
_LOOKS_LIKE_JSON_LIST = re.compile(r'\s*\[\s*(\{|"|\]|$)')
_JSON_TYPES = {list: "a JSON array", str: "a JSON string", bool: "a JSON boolean", type(None): "JSON null"}


@dataclass(frozen=True)
class Row:
    source: str  # "prefs.jsonl", "dataset[train]", "list"
    location: str  # "line 7" for files read as text, "row 3" (0-based) for tables and lists
    data: Any  # a dict with None values removed, or a str where plain strings are allowed


@dataclass
class Table:
    """The rows of one file, one dataset or one split, with what went wrong reading them."""

    name: str
    rows: list[Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    count: int = 0  # rows seen, unreadable ones included

    def problem(self, location: str | None, problem: str, fix: str, field: str | None = None) -> None:
        self.problems.append(Problem(self.name, location, field, problem, fix))

    def add(self, location: str, value: Any, allow_strings: bool, what: str = "JSON") -> None:
        """Keep ``value`` as a row if it is an object (or an allowed string); else report it."""
        if isinstance(value, dict):
            # Columnar sources fill absent keys with None; treating None as absent lets a row's
            # shape be recognised the same way whether it came from JSONL or from Parquet.
            self.rows.append(Row(self.name, location, {k: v for k, v in value.items() if v is not None}))
        elif isinstance(value, str) and allow_strings:
            self.rows.append(Row(self.name, location, value))
        else:
            name = type(value).__name__
            kind = (
                _JSON_TYPES.get(type(value), "a JSON number")
                if what == "JSON"
                else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
            )
            container = "a JSON object" if what == "JSON" else "a dict"
            fix = f'make each row {container} with named fields, e.g. {{"prompt": ...}}'
            self.problem(location, f"is {kind}, not {container}", fix)


def read_source(source: Any, split: str | None = None, *, allow_strings: bool = False) -> tuple[dict[str, Table], bool]:
    """Read any accepted source into tables keyed by split name.

    Returns ``(tables, is_dict)``: ``is_dict`` says the caller should hand back a DatasetDict
    (a DatasetDict read with ``split=None``); otherwise there is exactly one table.
    """
    if isinstance(source, DatasetDict):
        if split is None:
            return {
                name: _read_records(ds.to_list(), f"dataset[{name}]", allow_strings) for name, ds in source.items()
            }, True
        if split not in source:
            raise ValueError(f"split {split!r} not found; the DatasetDict has: {', '.join(source)}")
        return {split: _read_records(source[split].to_list(), f"dataset[{split}]", allow_strings)}, False
    if split is not None:
        raise ValueError("split= selects one split of a datasets.DatasetDict; this source has no splits")
    if isinstance(source, Dataset):
        return {"": _read_records(source.to_list(), "dataset", allow_strings)}, False
    if isinstance(source, (str, os.PathLike)):
        return {"": read_file(Path(source), allow_strings)}, False
    if isinstance(source, (list, tuple)):
        return {"": _read_records(list(source), "list", allow_strings, what="Python")}, False
    raise TypeError(
        f"cannot read data from a {type(source).__name__}; pass a path to a "
        f"{'/'.join(SUPPORTED_SUFFIXES)} file, a datasets.Dataset or DatasetDict, or a list of dicts "
        "(for a pandas DataFrame use datasets.Dataset.from_pandas(df))"
    )


def _read_records(records: list, name: str, allow_strings: bool, what: str = "JSON") -> Table:
    table = Table(name, count=len(records))
    for index, record in enumerate(records):
        table.add(f"row {index}", record, allow_strings, what)
    return table


def read_file(path: Path, allow_strings: bool = False) -> Table:
    """Read one file; its suffix picks the format."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = ", ".join(SUPPORTED_SUFFIXES)
        raise ValueError(f"{path.name}: unsupported file type {suffix or '(none)'!r}; supported: {supported}")
    if not path.is_file():
        # Offline first: a hub id passed as a path is not fetched behind the user's back.
        what = "is a directory, not a file" if path.is_dir() else "no such file"
        hub = "" if path.parent.exists() else " (for a hub dataset, pass datasets.load_dataset(...) instead)"
        raise FileNotFoundError(f"{path}: {what}{hub}")
    table = Table(path.name)
    if suffix == ".parquet":
        _read_parquet(path, table)
    else:
        lines, bad = _decode_lines(path.read_bytes(), table)
        if suffix == ".csv":
            _read_csv(lines, bad, table)
        elif suffix == ".json" and "\n".join(lines).lstrip().startswith("["):
            _read_json_array(lines, bad, table, allow_strings)
        else:  # .jsonl, and .json files that hold one object per line
            _read_jsonl(lines, bad, table, allow_strings)
    if table.count == 0 and not table.problems:
        table.problem(None, "has no rows", "add at least one example to the file")
    return table


def _decode_lines(data: bytes, table: Table) -> tuple[list[str], set[int]]:
    """Split bytes into lines and decode each one, so a bad byte is pinned to its line."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        table.problem(None, "is UTF-16 encoded", "re-save the file as UTF-8")
        return [], set()
    data = data.removeprefix(codecs.BOM_UTF8)
    lines, bad = [], set()
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            # Still keep a placeholder line so later line numbers stay right.
            lines.append(raw.decode("utf-8", errors="replace"))
            bad.add(number)
            table.problem(
                f"line {number}",
                f"is not valid UTF-8 (byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the line)",
                "re-save the file as UTF-8, or replace the corrupted characters on that line",
            )
    return lines, bad


def _read_jsonl(lines: list[str], bad: set[int], table: Table, allow_strings: bool) -> None:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        table.count += 1
        if number in bad:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            table.problem(
                f"line {number}",
                f"is not valid JSON ({err.msg} at column {err.colno})",
                "fix the JSON on that line: each line must hold one complete JSON object",
            )
            continue
        table.add(f"line {number}", value, allow_strings)


def _read_json_array(lines: list[str], bad: set[int], table: Table, allow_strings: bool) -> None:
    """Parse a JSON array element by element so each row knows the line it starts on."""
    text = "\n".join(lines)
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)

    def line_of(offset: int) -> int:
        return bisect_right(starts, offset)

    decoder, ws = json.JSONDecoder(), re.compile(r"\s*")
    pos = ws.match(text).end() + 1  # just past "["
    while True:
        pos = ws.match(text, pos).end()
        if text.startswith("]", pos):
            break
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            table.count += 1
            table.problem(
                f"line {err.lineno}",
                f"is not valid JSON ({err.msg} at column {err.colno}); the rest of the file could not be read",
                "fix the JSON syntax at that point",
            )
            return
        table.count += 1
        first, last = line_of(pos), line_of(end - 1)
        if not bad.intersection(range(first, last + 1)):  # rows with bad bytes are already reported
            table.add(f"line {first}", value, allow_strings)
        pos = ws.match(text, end).end()
        if text.startswith(",", pos):
            pos += 1
        elif text.startswith("]", pos):
            break
        else:
            table.problem(
                f"line {line_of(pos)}",
                "is not valid JSON (expected ',' or ']' after an element); the rest of the file could not be read",
                "separate the array's elements with commas",
            )
            return


def _read_csv(lines: list[str], bad: set[int], table: Table) -> None:
    reader = csv.reader(io.StringIO("\n".join(lines), newline=""))
    header: list[str] | None = None
    previous_end = 0  # reader.line_num after the previous record: records may span lines
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            table.count += 1
            table.problem(f"line {reader.line_num}", f"is not valid CSV ({err})", "fix the quoting on that line")
            previous_end = reader.line_num
            continue
        first, last, previous_end = previous_end + 1, reader.line_num, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if header is None:
            header = [cell.strip() for cell in cells]
            continue
        table.count += 1
        location = f"line {first}"
        if bad.intersection(range(first, last + 1)):
            continue
        if len(cells) != len(header):
            fix = "quote cells that contain commas, quotes or newlines"
            table.problem(location, f"has {len(cells)} cells but the header (line 1) has {len(header)} columns", fix)
            continue
        row, broken = {}, False
        for name, cell in zip(header, cells, strict=True):
            row[name], error = _csv_cell(cell)
            if error:
                broken = True
                table.problem(
                    location,
                    f"looks like a JSON list but is not valid JSON ({error})",
                    "fix the JSON in that cell (CSV doubles the quotes inside a quoted cell)",
                    field=name,
                )
        if not broken:
            table.add(location, row, allow_strings=False)


def _csv_cell(cell: str) -> tuple[Any, str | None]:
    """A JSON list cell (messages, responses, scores, a ranking) becomes a list; others stay text."""
    if not cell.lstrip().startswith("["):
        return cell, None
    try:
        value = json.loads(cell)
    except json.JSONDecodeError as err:
        return cell, (f"{err.msg} at column {err.colno}" if _LOOKS_LIKE_JSON_LIST.match(cell) else None)
    return (value, None) if isinstance(value, list) else (cell, None)


def _read_parquet(path: Path, table: Table) -> None:
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types for corrupt files; all mean the same here
        table.problem(None, f"could not be read as Parquet ({err})", "re-export the file as Parquet")
        return
    table.count = len(records)
    for index, record in enumerate(records):
        table.add(f"row {index}", record, allow_strings=False)
