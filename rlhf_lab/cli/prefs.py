"""`rlhf-lab prefs stats|export|import|agreement --store FILE`, as plain functions.

Each function takes the store's path and returns the text to print, so the command line, a
notebook cell and the tests run the same code; bad input raises ValueError (or
FileNotFoundError), which the CLI prints as one line. Reading commands never create a store.
``add_prefs_parser`` wires all four into an argparse sub-parser set:

    from rlhf_lab.cli.prefs import add_prefs_parser
    add_prefs_parser(sub)          # in cli.build_parser(); handlers print and return 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

from rlhf_lab.labeling.store import PreferenceStore

StorePath = str | os.PathLike


def stats(store: StorePath, window_s: float = 300.0, as_json: bool = False) -> str:
    """Items, labelled items, events, decisions in force and a per-annotator table: the store's
    own ``PreferenceStore.report``, so a notebook prints the same with ``store.report()``."""
    with PreferenceStore(store, create=False) as opened:
        return opened.report(window_s=window_s, as_json=as_json)


def export(
    store: StorePath,
    out: StorePath,
    kind: str = "preference",
    ties: str = "exclude",
    both_bad: str = "exclude",
    min_votes: int = 1,
) -> str:
    """Write the majority-vote export as JSON lines (atomically): preference pairs, or with
    ``kind="unpaired"`` KTO rows (``ties`` and ``both_bad`` apply to pairs only)."""
    options: dict[str, Any] = {"min_votes": min_votes}
    if kind == "preference":
        options.update(ties=ties, both_bad=both_bad)
    with PreferenceStore(store, create=False) as opened:
        rows = opened.to_jsonl(out, kind=kind, **options)
    unit = "preference pairs" if kind == "preference" else "unpaired rows"
    return f"wrote {rows} {unit} to {out}"


def import_file(store: StorePath, source: StorePath, kind: str = "preference", annotator: str = "import") -> str:
    """Import a data file the loaders read (``kind`` "preference" or "ratings"); creates the store
    if needed. A file with bad rows raises the loader's DataError (a ValueError listing every
    problem) and writes nothing."""
    with PreferenceStore(store) as opened:
        result = opened.import_file(source, kind=kind, annotator=annotator)
    return f"{source} -> {store}: {result}"


def agreement(store: StorePath, annotators: list[str] | None = None, as_json: bool = False) -> str:
    """Krippendorff's alpha over shared items and Cohen's kappa per pair of annotators."""
    with PreferenceStore(store, create=False) as opened:
        data = opened.agreement(annotators)
    if as_json:
        return json.dumps(data, indent=2)  # NaN is written as NaN: Python's json reads it back
    if len(data["annotators"]) < 2:
        return f"{len(data['annotators'])} annotator(s) with decisions: agreement needs at least two"
    lines = [
        f"annotators: {', '.join(data['annotators'])}",
        f"items decided by two or more: {data['shared_items']}",
        f"Krippendorff's alpha (nominal): {_number(data['alpha'])}",
        "Cohen's kappa, per pair (shared items):",
    ]
    lines += [
        f"  {' / '.join(pair['annotators'])}: {_number(pair['kappa'])} ({pair['items']} items)"
        for pair in data["pairwise"]
    ]
    return "\n".join(lines)


def _number(value: float) -> str:
    return "undefined (no shared items, or no variation in the labels)" if math.isnan(value) else f"{value:.3f}"


def add_prefs_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``prefs`` with its four actions to the CLI's sub-parsers; each handler prints the
    function's text and returns 0 (errors propagate as ValueError/FileNotFoundError)."""
    prefs = sub.add_parser("prefs", help="the preference-label store: stats, export, import, agreement")
    actions = prefs.add_subparsers(dest="prefs_command", metavar="ACTION", required=True)

    def action(name: str, help_text: str, run: Any) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text)
        parser.add_argument("--store", required=True, metavar="FILE", help="the store's .sqlite file")
        parser.set_defaults(handler=lambda args: print(run(args)) or 0)
        return parser

    show = action("stats", "counts, decisions and per-annotator progress", lambda a: stats(a.store, a.window, a.json))
    show.add_argument("--window", type=float, default=300.0, help="seconds for labels per minute")
    show.add_argument("--json", action="store_true", help="print JSON")
    out = action(
        "export",
        "write majority-vote pairs (or KTO rows) as JSONL",
        lambda a: export(a.store, a.out, a.kind, a.ties, a.both_bad, a.min_votes),
    )
    out.add_argument("--out", required=True, metavar="FILE", help="JSONL file to write (atomically)")
    out.add_argument("--kind", choices=("preference", "unpaired"), default="preference")
    out.add_argument("--ties", choices=("exclude", "both"), default="exclude")
    out.add_argument("--both-bad", dest="both_bad", choices=("exclude", "both"), default="exclude")
    out.add_argument("--min-votes", dest="min_votes", type=int, default=1)
    add = action(
        "import",
        "add a preference or ratings file (any format the loaders read)",
        lambda a: import_file(a.store, a.file, a.kind, a.annotator),
    )
    add.add_argument("file", help="JSONL, JSON, CSV or Parquet file")
    add.add_argument("--kind", choices=("preference", "ratings"), default="preference")
    add.add_argument("--annotator", default="import", help="whose labels these are (default: import)")
    agree = action(
        "agreement",
        "Cohen's kappa and Krippendorff's alpha over shared items",
        lambda a: agreement(a.store, a.annotators, a.json),
    )
    agree.add_argument("--annotators", nargs="+", default=None, metavar="NAME", help="only these annotators")
    agree.add_argument("--json", action="store_true", help="print JSON")
    return prefs
