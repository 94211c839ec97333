"""The shipped starter data: sizes, a fixed disjoint split, no duplicates, validated formats."""

from collections import Counter

import pytest

from rlhf_lab import starter_data
from rlhf_lab.starter import first_user_text, read_rows, split_of

MINIMUM = {"sft": 200, "preference": 300, "prompts": 200}


@pytest.mark.parametrize("kind", sorted(MINIMUM))
def test_sizes_and_fixed_disjoint_split(kind):
    train, test = starter_data(kind, "train"), starter_data(kind, "test")
    assert train.num_rows + test.num_rows >= MINIMUM[kind]
    assert test.num_rows >= 0.08 * (train.num_rows + test.num_rows)
    texts = {s: {_user_text(r) for r in d} for s, d in (("train", train), ("test", test))}
    assert not texts["train"] & texts["test"]
    for row in read_rows(kind):  # the stored split is the documented hash rule
        assert row["split"] == split_of(first_user_text(row))


@pytest.mark.parametrize("kind", sorted(MINIMUM))
def test_deduplicated(kind):
    keys = [" ".join(first_user_text(r).lower().split()) for r in read_rows(kind)]
    duplicates = [k for k, n in Counter(keys).items() if n > 1]
    assert not duplicates


def test_formats_are_trl_conversational():
    sft = starter_data("sft", "train")
    assert sft.column_names[:1] == ["messages"] and all(r["messages"][-1]["role"] == "assistant" for r in sft)
    prompts = starter_data("prompts", "train")
    assert all(r["prompt"][-1]["role"] == "user" for r in prompts)
    prefs = starter_data("preference", "train")
    assert prefs.column_names[:3] == ["prompt", "chosen", "rejected"]
    assert all(r["chosen"] != r["rejected"] and r["chosen"][0]["role"] == "assistant" for r in prefs)


def test_preferences_cover_categories_and_flaws_and_length_does_not_decide():
    rows = read_rows("preference")
    assert set(Counter(r["category"] for r in rows)) >= {
        "helpfulness",
        "honesty",
        "harmlessness",
        "coding",
        "reasoning",
    }
    flaws = Counter(r["flaw"] for r in rows)
    assert set(flaws) == {"wrong", "evasive", "rude", "unsafe", "rambling", "off-topic"}
    assert min(flaws.values()) >= 20
    longer = sum(len(r["chosen"]) > len(r["rejected"]) for r in rows) / len(rows)
    assert 0.35 < longer < 0.65, "a reward model must not be able to win on length alone"


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind must be one of sft, preference, prompts"):
        starter_data("ratings")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        starter_data("sft", "validation")


def _user_text(row):
    messages = row.get("messages") or row["prompt"]
    return next(m["content"] for m in messages if m["role"] == "user")
