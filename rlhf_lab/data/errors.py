"""Problems found in training data, and the report and the error that carry them.

Every check in ``rlhf_lab.data`` speaks in :class:`Problem`s: where (file and line, or dataset
and row), which field, what is wrong and how to fix it. A load collects all of them before it
decides anything, so one run tells the user everything that needs fixing instead of one error
per attempt. ``strict=True`` turns a non-empty report into a :class:`DataError`; ``strict=False``
hands the report back next to the rows that survived.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from rlhf_lab.data.readers import Row, Table

# What each kind of data may look like, quoted in "unrecognised row" problems so the fix
# names real alternatives rather than pointing at documentation.
ACCEPTED_FORMATS = {
    "preference": (
        "{prompt, chosen, rejected} (TRL explicit prompt); {chosen, rejected} (TRL implicit prompt or "
        "Anthropic HH 'Human:/Assistant:' strings); {prompt|instruction, completions: [{response, "
        "overall_score}]} (UltraFeedback); {prompt, response|completion, reward|score|rating} (one rated "
        "response per row); {prompt, responses|completions, ranking|scores} (ranked list)"
    ),
    "sft": (
        "{messages}; {conversations} (ShareGPT); {prompt, completion|response}; "
        "{instruction, input?, output} (Alpaca); {text} with '\\n\\nHuman: ...\\n\\nAssistant: ...' turns"
    ),
    "prompts": "a plain string; {prompt}; {messages}; {question|instruction|query|text}",
    "ratings": "{prompt, completion|response, label}; {prompt, completion|response, reward|score|rating}",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data, located precisely enough to fix it without searching."""

    source: str  # file name, "dataset", "dataset[train]" or "list"
    location: str | None  # "line 7" (files) or "row 3" (tables); None for the whole source
    field: str | None  # e.g. "chosen" or "chosen[1].role"; None when the whole row is at fault
    problem: str  # what is wrong, phrased to follow the field: "is empty"
    fix: str  # what to do about it

    @property
    def where(self) -> str:
        parts = [self.source]
        if self.location:
            parts.append(self.location)
        if self.field:
            parts.append(f"field '{self.field}'")
        return ", ".join(parts)

    def __str__(self) -> str:
        return f"{self.where}: {self.problem.rstrip('.')}. Fix: {self.fix.rstrip('.')}."


@dataclass(frozen=True)
class Issue:
    """A problem before it knows where it happened: normalizers see values, not files."""

    field: str | None
    problem: str
    fix: str


class RowError(Exception):
    """Raised by a normalizer for a row it cannot use; carries every issue it found."""

    def __init__(self, *issues: Issue) -> None:
        super().__init__("; ".join(f"{i.field}: {i.problem}" for i in issues))
        self.issues = list(issues)


def fail(field: str | None, problem: str, fix: str) -> NoReturn:
    raise RowError(Issue(field, problem, fix))


def unrecognised(data: dict, kind: str) -> NoReturn:
    keys = ", ".join(repr(k) for k in data) or "none"
    fail(
        None,
        f"has keys [{keys}], which match no accepted {kind} format",
        f"reshape the row into one of: {ACCEPTED_FORMATS[kind]}",
    )


class Issues(list):
    """Issues of one row gathered across its fields, so two bad fields give two problems."""

    def attempt(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RowError as err:
            self.extend(err.issues)
            return None

    def add(self, field: str | None, problem: str, fix: str) -> None:
        self.append(Issue(field, problem, fix))

    def raise_if_any(self) -> None:
        if self:
            raise RowError(*self)


@dataclass
class ValidationReport:
    """Everything a load found: the problems, and how many rows went in and came out."""

    kind: str
    problems: list[Problem] = field(default_factory=list)
    rows: int = 0  # rows seen, unreadable lines included (blank lines are not rows)
    kept: int = 0  # rows that passed every check
    examples: int = 0  # examples produced: a ranked or rated row can give several pairs
    notes: list[str] = field(default_factory=list)  # things dropped that are not problems (ties)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def dropped(self) -> list[str]:
        """The locations of rows dropped for problems, in order, each once."""
        seen: dict[str, None] = {}
        for p in self.problems:
            seen.setdefault(", ".join(x for x in (p.source, p.location) if x), None)
        return list(seen)

    def summary(self) -> str:
        n = len(self.problems)
        text = f"{n} problem{'s' if n != 1 else ''} in {self.rows} row{'s' if self.rows != 1 else ''}; "
        text += f"{self.kept} row{'s' if self.kept != 1 else ''} kept"
        if self.examples != self.kept:
            unit = "pairs" if self.kind == "preference" else "examples"
            text += f" ({self.examples} {unit})"
        return text

    def __str__(self) -> str:
        lines = [str(p) for p in self.problems] + [self.summary()]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


class DataError(ValueError):
    """Raised by a strict load; the message lists every problem and ``.report`` holds them."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(str(report))
        self.report = report


def _position(location: str | None) -> int:
    match = re.search(r"\d+", location or "")
    return int(match.group()) if match else -1


class Collector:
    """Accumulates one load's report while its tables and rows pass through the normalizers."""

    def __init__(self, kind: str) -> None:
        self.report = ValidationReport(kind)
        self._order: dict[str, int] = {}
        self._seen: dict[str, str] = {}

    def start(self, table: Table) -> None:
        # Duplicates are looked for within one table: a DatasetDict's splits are separate data.
        self._seen = {}
        self._order.setdefault(table.name, len(self._order))
        self.report.rows += table.count
        self.report.problems.extend(table.problems)

    def reject(self, row: Row, issues: list[Issue]) -> None:
        self.report.problems.extend(Problem(row.source, row.location, i.field, i.problem, i.fix) for i in issues)

    def keep(self) -> None:
        self.report.kept += 1

    def note(self, text: str) -> None:
        self.report.notes.append(text)

    def duplicate_of(self, keys: list[str], row: Row) -> str | None:
        """Where an example of this row appeared earlier in the table; else remember the row's."""
        for key in keys:
            if key in self._seen:
                return self._seen[key]
        for key in keys:
            self._seen[key] = row.location
        return None

    def finish(self, examples: int) -> ValidationReport:
        # Problems arrive reader-first, then normalizer; present them top to bottom of each source.
        self.report.problems.sort(key=lambda p: (self._order.get(p.source, 0), _position(p.location)))
        self.report.examples = examples
        return self.report
