"""Training data for every stage, in TRL's conversational format, validated on load.

    from rlhf_lab.data import load_preferences
    prefs = load_preferences("prefs.jsonl")                 # raises DataError listing every problem
    prefs, report = load_preferences("prefs.jsonl", strict=False)   # drops bad rows, says which

Sources: a .jsonl/.json/.csv/.parquet path, a datasets.Dataset or DatasetDict, or a list of dicts.
Formats are detected per row (TRL explicit/implicit prompt, Anthropic HH, UltraFeedback, rated
rows, rankings, ShareGPT, Alpaca, ...); see each loader's docstring and ``errors.ACCEPTED_FORMATS``.
"""

from rlhf_lab.data.errors import DataError, Problem, ValidationReport
from rlhf_lab.data.loaders import (
    describe_source,
    fingerprint,
    load_preferences,
    load_prompts,
    load_ratings,
    load_sft,
    validate,
)
from rlhf_lab.data.messages import ROLES
from rlhf_lab.data.preferences import PAIRINGS

__all__ = [
    "PAIRINGS",
    "ROLES",
    "DataError",
    "Problem",
    "ValidationReport",
    "describe_source",
    "fingerprint",
    "load_preferences",
    "load_prompts",
    "load_ratings",
    "load_sft",
    "validate",
]
