"""Starter data written for this project: SFT demonstrations, preference pairs and RL prompts.

    lab.starter_data("preference", "train")   # datasets.Dataset in TRL's conversational format

Every row carries a `category` (helpfulness, honesty, harmlessness, coding, reasoning, ...) and a
fixed `split`: a row is in "test" when the SHA-1 of its first user message, read as a number,
is 0-14 modulo 100 (about 15%), so the split never moves between versions and a text sits in the
same split in every file. Preference rows also say what is wrong with the rejected reply (`flaw`:
wrong, evasive, rude, unsafe, rambling or off-topic).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

HERE = Path(__file__).parent
FILES = {"sft": "sft.jsonl", "preference": "preference.jsonl", "prompts": "prompts.jsonl"}
SPLITS = ("train", "test")
TEST_PERCENT = 15
# fields kept next to the normalized columns
EXTRA = ("category", "flaw")


def starter_data(kind: str, split: str = "train"):
    """The starter set `kind` ("sft", "preference" or "prompts"), `split` "train" or "test"."""
    from rlhf_lab.data import load_preferences, load_prompts, load_sft

    if kind not in FILES:
        raise ValueError(f"starter_data kind must be one of {', '.join(FILES)}; got {kind!r}")
    if split not in SPLITS:
        raise ValueError(f"starter_data split must be 'train' or 'test'; got {split!r}")
    rows = [r for r in read_rows(kind) if r["split"] == split]
    loader = {"sft": load_sft, "preference": load_preferences, "prompts": load_prompts}[kind]
    dataset = loader([{k: v for k, v in r.items() if k not in EXTRA and k != "split"} for r in rows])
    for name in EXTRA:
        if name in rows[0]:
            dataset = dataset.add_column(name, [r[name] for r in rows])
    return dataset


def read_rows(kind: str) -> list[dict]:
    """The raw rows of one starter file, as shipped."""
    with open(HERE / FILES[kind], encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def first_user_text(row: dict) -> str:
    if "messages" in row:
        return next(m["content"] for m in row["messages"] if m["role"] == "user")
    return row["prompt"]


def split_of(text: str) -> str:
    """The fixed split of a row whose first user message is `text`."""
    digest = int(hashlib.sha1(text.strip().encode("utf-8")).hexdigest(), 16)
    return "test" if digest % 100 < TEST_PERCENT else "train"
