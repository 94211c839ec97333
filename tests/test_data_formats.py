"""Every supported source and row format loads into the same TRL conversational form."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from datasets import Dataset, DatasetDict

from rlhf_lab.data import load_preferences, load_prompts, load_ratings, load_sft, validate

FIXTURES = Path(__file__).parent / "fixtures" / "data"
PROMPT = "What color is the sky?"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def bot(text: str) -> dict:
    return {"role": "assistant", "content": text}


SKY_PAIR = {"prompt": [user(PROMPT)], "chosen": [bot("Blue.")], "rejected": [bot("Green.")]}


def write(tmp_path: Path, name: str, rows: list) -> Path:
    """Write rows in the file type named by ``name``'s extension."""
    path = tmp_path / name
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    elif suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            for r in rows:
                writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    elif suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    return path


def as_dataset(rows: list[dict]) -> Dataset:
    # Dataset.from_list takes its columns from the first row; rows of mixed keys need the union.
    keys = dict.fromkeys(k for r in rows for k in r)
    return Dataset.from_dict({k: [r.get(k) for r in rows] for k in keys})


def core(example: dict) -> dict:
    return {k: example[k] for k in ("prompt", "chosen", "rejected")}


HH = {
    "chosen": f"\n\nHuman: {PROMPT}\n\nAssistant: Blue.",
    "rejected": f"\n\nHuman: {PROMPT}\n\nAssistant: Green.",
}
SAME_PAIR_FORMATS = {
    "trl_explicit_standard": [{"prompt": PROMPT, "chosen": "Blue.", "rejected": "Green."}],
    "trl_explicit_conversational": [{"prompt": [user(PROMPT)], "chosen": [bot("Blue.")], "rejected": [bot("Green.")]}],
    "trl_implicit_conversational": [
        {"chosen": [user(PROMPT), bot("Blue.")], "rejected": [user(PROMPT), bot("Green.")]}
    ],
    "trl_implicit_standard": [{"chosen": f"{PROMPT} Blue.", "rejected": f"{PROMPT} Green."}],
    "anthropic_hh": [HH],
    "anthropic_hh_loose_whitespace": [
        {
            "chosen": f"Human: {PROMPT}\n\nAssistant: Blue.\n",
            "rejected": f"  \n\nHuman: {PROMPT}\n\nAssistant:  Green.  ",
        }
    ],
    "hh_prompt_string": [{"prompt": f"\n\nHuman: {PROMPT}\n\nAssistant:", "chosen": "Blue.", "rejected": "Green."}],
    "ultrafeedback": [
        {
            "instruction": PROMPT,
            "completions": [
                {"response": "Green.", "overall_score": 2},
                {"response": "Blue.", "overall_score": 9},
            ],
        }
    ],
    "ultrafeedback_text_rating": [
        {"prompt": PROMPT, "completions": [{"text": "Blue.", "rating": 5}, {"text": "Green.", "rating": 1}]}
    ],
    "binarized_full_conversations": [
        {"prompt": PROMPT, "chosen": [user(PROMPT), bot("Blue.")], "rejected": [user(PROMPT), bot("Green.")]}
    ],
    "ratings_rows": [
        {"prompt": PROMPT, "response": "Green.", "score": 2},
        {"prompt": PROMPT, "completion": "Blue.", "score": 9},
    ],
    "ranking": [{"prompt": PROMPT, "responses": ["Green.", "Blue."], "ranking": [1, 0]}],
    "scored_list": [{"prompt": PROMPT, "completions": ["Green.", "Blue."], "scores": [0.1, 0.8]}],
}


class TestPreferenceFormats:
    # A CSV has one set of columns (an empty cell is an empty value, not a missing key), so the
    # format that mixes "response" and "completion" rows is not written as CSV.
    @pytest.mark.parametrize(
        ("fmt", "container"),
        [
            (fmt, container)
            for fmt, rows in SAME_PAIR_FORMATS.items()
            for container in ["list", "dataset", "p.jsonl", "p.json", "p.csv", "p.parquet"]
            if container != "p.csv" or len({tuple(r) for r in rows}) == 1
        ],
    )
    def test_same_logical_pair_in_every_format_normalizes_identically(self, tmp_path, fmt, container):
        rows = SAME_PAIR_FORMATS[fmt]
        source = {"list": rows, "dataset": as_dataset(rows)}.get(container) or write(tmp_path, container, rows)
        ds = load_preferences(source)
        assert ds.num_rows == 1
        assert core(ds[0]) == SKY_PAIR

    @pytest.mark.parametrize("name", ["p.jsonl", "p.json", "p.csv", "p.parquet", "dataset", "list"])
    @pytest.mark.parametrize("style", ["standard", "conversational"])
    def test_every_container_reads_the_same(self, tmp_path, name, style):
        rows = SAME_PAIR_FORMATS[f"trl_explicit_{style}"] + [
            {
                "prompt": "Name a prime." if style == "standard" else [user("Name a prime.")],
                "chosen": "7" if style == "standard" else [bot("7")],
                "rejected": "8" if style == "standard" else [bot("8")],
            }
        ]
        source = {"dataset": lambda: Dataset.from_list(rows), "list": lambda: rows}.get(
            name, lambda: write(tmp_path, name, rows)
        )()
        ds = load_preferences(source)
        assert ds.column_names == ["prompt", "chosen", "rejected"]
        assert [core(r) for r in ds] == [
            SKY_PAIR,
            {"prompt": [user("Name a prime.")], "chosen": [bot("7")], "rejected": [bot("8")]},
        ]

    def test_multi_turn_hh_fixture(self):
        ds = load_preferences(FIXTURES / "hh_rlhf_sample.jsonl")  # has a blank line, which is skipped
        assert ds.num_rows == 2
        assert ds[1]["prompt"] == [user("Hi!"), bot("Hello, how can I help?"), user("Name a prime number.")]
        assert ds[1]["chosen"] == [bot("7 is prime.")]
        assert ds[1]["rejected"] == [bot("8 is prime.")]

    def test_implicit_conversational_multi_turn_uses_longest_shared_prefix(self):
        shared = [{"role": "system", "content": "Be brief."}, user("Hi"), bot("Hello"), user("2+2?")]
        ds = load_preferences([{"chosen": shared + [bot("4")], "rejected": shared + [bot("5")]}])
        assert ds[0]["prompt"] == shared
        assert (ds[0]["chosen"], ds[0]["rejected"]) == ([bot("4")], [bot("5")])

    def test_implicit_conversational_shared_assistant_turn_stays_in_the_responses(self):
        # The pair shares an assistant tool call and diverges after it: the prompt must still end
        # with the user turn, so the shared call is repeated at the start of both responses.
        call, tool = bot("calling calculator"), "tool"
        ds = load_preferences(
            [
                {
                    "chosen": [user("6*7?"), call, {"role": tool, "content": "42"}, bot("42")],
                    "rejected": [user("6*7?"), call, {"role": tool, "content": "41"}, bot("41")],
                }
            ]
        )
        assert ds[0]["prompt"] == [user("6*7?")]
        assert ds[0]["chosen"] == [call, {"role": "tool", "content": "42"}, bot("42")]
        assert ds[0]["rejected"][1:] == [{"role": "tool", "content": "41"}, bot("41")]

    def test_implicit_standard_never_cuts_inside_a_word(self):
        ds = load_preferences([{"chosen": "Q: best sky color? A: blue", "rejected": "Q: best sky color? A: black"}])
        assert ds[0]["prompt"] == [user("Q: best sky color? A:")]
        assert (ds[0]["chosen"], ds[0]["rejected"]) == ([bot("blue")], [bot("black")])

    def test_csv_json_list_cells_are_conversational(self, tmp_path):
        path = write(
            tmp_path,
            "p.csv",
            [{"chosen": [user(PROMPT), bot("Blue.")], "rejected": [user(PROMPT), bot("Green.")]}],
        )
        assert path.read_text().splitlines()[1].startswith('"[{')
        assert core(load_preferences(path)[0]) == SKY_PAIR

    def test_score_columns_only_when_the_format_carries_scores(self):
        plain = load_preferences(SAME_PAIR_FORMATS["trl_explicit_standard"])
        ranked = load_preferences(SAME_PAIR_FORMATS["ranking"])
        scored = load_preferences(SAME_PAIR_FORMATS["ultrafeedback"])
        assert "score_chosen" not in plain.column_names and "score_chosen" not in ranked.column_names
        assert (scored[0]["score_chosen"], scored[0]["score_rejected"]) == (9.0, 2.0)
        binarized = load_preferences(
            [{**SAME_PAIR_FORMATS["trl_explicit_standard"][0], "score_chosen": 8, "score_rejected": "3.5"}]
        )
        assert (binarized[0]["score_chosen"], binarized[0]["score_rejected"]) == (8.0, 3.5)

    def test_mixed_formats_in_one_source_share_one_schema(self):
        ds = load_preferences(
            SAME_PAIR_FORMATS["trl_explicit_standard"]
            + [
                {"prompt": "Name a prime.", "response": "7", "score": 9},
                {"prompt": "Name a prime.", "response": "8", "score": 1},
            ]
        )
        assert ds.num_rows == 2
        assert ds["score_chosen"] == [None, 9.0]

    def test_ultrafeedback_json_array_fixture(self):
        ds = load_preferences(FIXTURES / "ultrafeedback_sample.json", pairing="best_vs_worst")
        assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in ds] == [
            ("7", "8"),
            ("Blue.", "Green."),
        ]


SCORED = {
    "prompt": "Name a prime.",
    "completions": [{"response": r, "overall_score": s} for r, s in [("7", 9), ("9", 7), ("8", 2)]],
}


def pairs(ds) -> list[tuple[str, str]]:
    return [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in ds]


class TestPairing:
    @pytest.mark.parametrize(
        ("pairing", "expected"),
        [
            ("all", [("7", "9"), ("7", "8"), ("9", "8")]),
            ("best_vs_rest", [("7", "9"), ("7", "8")]),
            ("best_vs_worst", [("7", "8")]),
        ],
    )
    def test_pairing_strategies(self, pairing, expected):
        assert pairs(load_preferences([SCORED], pairing=pairing)) == expected

    @pytest.mark.parametrize(
        ("pairing", "margin", "count"),
        [
            ("all", 0.0, 3),
            ("all", 3.0, 2),
            ("all", 6.0, 1),
            ("all", 7.5, 0),
            ("best_vs_rest", 3.0, 1),
            ("best_vs_worst", 7.0, 1),
            ("best_vs_worst", 7.5, 0),
        ],
    )
    def test_min_margin_drops_close_pairs(self, pairing, margin, count):
        ds, report = load_preferences([SCORED], pairing=pairing, min_margin=margin, strict=False)
        assert ds.num_rows == count
        assert report.ok  # dropping close pairs is policy, not a data problem
        assert all(r["score_chosen"] - r["score_rejected"] >= margin for r in ds)

    def test_ties_are_dropped_and_noted(self):
        row = {"prompt": "P", "responses": ["a", "b", "c"], "scores": [5, 5, 3]}
        ds, report = load_preferences([row], strict=False)
        assert pairs(ds) == [("a", "c"), ("b", "c")]
        assert any("1 candidate pair(s) dropped as ties" in n for n in report.notes)
        ds, _ = load_preferences([row], pairing="best_vs_rest", strict=False)
        assert pairs(ds) == [("a", "c")]  # the other best is a tie with the best, not a pair

    def test_all_tied_row_gives_no_pair(self):
        ds, report = load_preferences([{"prompt": "P", "responses": ["a", "b"], "scores": [1, 1]}], strict=False)
        assert ds.num_rows == 0 and report.kept == 1 and report.ok

    def test_ratings_rows_are_grouped_by_prompt_across_the_whole_source(self, tmp_path):
        rows = [
            {"prompt": "A", "response": "a1", "reward": 1.0},
            {"prompt": "B", "response": "b1", "reward": 0.5},
            {"prompt": "A", "response": "a2", "reward": 3.0},
            {"prompt": "C", "response": "c1", "reward": 1},
            {"prompt": "B", "response": "b2", "reward": 0.5},
            {"prompt": "A", "response": "a3", "reward": 2.0},
        ]
        ds, report = load_preferences(write(tmp_path, "r.csv", rows), strict=False)
        assert pairs(ds) == [("a2", "a3"), ("a2", "a1"), ("a3", "a1")]
        assert ds[0]["prompt"] == [user("A")] and ds[0]["score_chosen"] == 3.0
        assert report.kept == 6 and report.examples == 3
        assert any("1 prompt(s) had a single response" in n for n in report.notes)  # prompt C
        assert any("1 prompt(s) gave no pair" in n for n in report.notes)  # prompt B: a tie
        assert pairs(load_preferences(rows, pairing="best_vs_worst")) == [("a2", "a1")]

    def test_ranking_pairs_follow_rank_order(self):
        row = {"prompt": "P", "responses": ["x", "y", "z"], "ranking": [2, 0, 1]}
        assert pairs(load_preferences([row])) == [("z", "x"), ("z", "y"), ("x", "y")]
        assert pairs(load_preferences([row], pairing="best_vs_worst", min_margin=100)) == [("z", "y")]

    def test_bad_pairing_argument(self):
        with pytest.raises(ValueError, match="best_vs_rest"):
            load_preferences([SCORED], pairing="random")


CONVERSATION = [user(PROMPT), bot("Blue.")]


class TestSFT:
    @pytest.mark.parametrize(
        "row",
        [
            {"messages": CONVERSATION},
            {"conversations": [{"from": "human", "value": PROMPT}, {"from": "gpt", "value": "Blue."}]},
            {"prompt": PROMPT, "completion": "Blue."},
            {"prompt": [user(PROMPT)], "completion": [bot("Blue.")]},
            {"prompt": PROMPT, "response": "Blue."},
            {"instruction": PROMPT, "output": "Blue."},
            {"instruction": PROMPT, "input": "", "output": "Blue."},
            {"text": f"\n\nHuman: {PROMPT}\n\nAssistant: Blue."},
        ],
        ids=[
            "messages",
            "sharegpt",
            "prompt_completion",
            "conversational_pc",
            "prompt_response",
            "alpaca",
            "alpaca_empty_input",
            "hh_text",
        ],
    )
    def test_formats(self, row):
        ds = load_sft([row])
        assert ds.column_names == ["messages"]
        assert ds[0]["messages"] == CONVERSATION

    def test_alpaca_input_joins_the_instruction(self):
        ds = load_sft([{"instruction": "Translate.", "input": "Bonjour", "output": "Hello"}])
        assert ds[0]["messages"] == [user("Translate.\n\nBonjour"), bot("Hello")]

    def test_sharegpt_fixture_keeps_system(self):
        ds = load_sft(FIXTURES / "sharegpt_sample.json")
        assert ds[0]["messages"] == [{"role": "system", "content": "You are terse."}] + CONVERSATION

    @pytest.mark.parametrize("name", ["s.jsonl", "s.parquet", "s.csv"])
    def test_files(self, tmp_path, name):
        assert load_sft(write(tmp_path, name, [{"messages": CONVERSATION}]))["messages"] == [CONVERSATION]


class TestPrompts:
    @pytest.mark.parametrize(
        "row",
        [
            PROMPT,
            {"prompt": PROMPT},
            {"prompt": [user(PROMPT)]},
            {"messages": CONVERSATION},
            {"question": PROMPT},
            {"instruction": PROMPT},
            {"query": PROMPT},
            {"text": PROMPT},
            {"text": f"\n\nHuman: {PROMPT}\n\nAssistant:"},
        ],
    )
    def test_formats(self, row):
        ds = load_prompts([row])
        assert ds.column_names == ["prompt"]
        assert ds[0]["prompt"] == [user(PROMPT)]

    def test_messages_keep_history_but_drop_trailing_replies(self):
        history = [{"role": "system", "content": "S"}, user("a"), bot("b"), user("c")]
        assert load_prompts([{"messages": history + [bot("d")]}])[0]["prompt"] == history

    def test_jsonl_of_plain_strings(self, tmp_path):
        path = tmp_path / "prompts.jsonl"
        path.write_text('"first"\n{"prompt": "second"}\n')
        assert [p[0]["content"] for p in load_prompts(path)["prompt"]] == ["first", "second"]


class TestRatings:
    def test_labels_in_every_spelling(self):
        rows = [
            {"prompt": "P", "completion": str(i), "label": label}
            for i, label in enumerate([True, "good", "up", 1, "true", False, "bad", "down", 0, "0"])
        ]
        ds = load_ratings(rows)
        assert ds.column_names == ["prompt", "completion", "label", "score"]
        assert ds["label"] == [True] * 5 + [False] * 5
        assert ds["score"] == [None] * 10
        assert ds[0]["completion"] == [bot("0")]

    def test_threshold_and_median(self):
        rows = [{"prompt": "P", "response": str(s), "score": s} for s in (1, 2, 3, 4)]
        assert load_ratings(rows)["label"] == [False, False, True, True]  # median 2.5
        assert load_ratings(rows[:3])["label"] == [False, True, True]  # median 2: ties are desirable
        assert load_ratings(rows, threshold=4)["label"] == [False, False, False, True]
        assert load_ratings(rows)["score"] == [1.0, 2.0, 3.0, 4.0]

    def test_csv_fixture_mixes_labels_and_scores(self):
        ds, report = load_ratings(FIXTURES / "ratings_sample.csv", strict=False)
        assert report.ok, str(report)
        assert ds["label"] == [True, False, True, False]
        assert ds["score"] == [None, None, 9.0, 1.0]
        assert ds[2]["prompt"] == [user("Name a prime, please.")]


class TestSplitsAndSources:
    def test_datasetdict_normalizes_every_split(self):
        dd = DatasetDict(
            {
                "train": Dataset.from_list(SAME_PAIR_FORMATS["trl_explicit_standard"]),
                "test": Dataset.from_list([{"prompt": "Q", "chosen": "a", "rejected": "b"}] * 2),
            }
        )
        out, report = load_preferences(dd, strict=False)
        assert isinstance(out, DatasetDict) and set(out) == {"train", "test"}
        assert core(out["train"][0]) == SKY_PAIR
        assert [str(p) for p in report.problems] == [
            "dataset[test], row 1: duplicates row 0 (same prompt, chosen and rejected). Fix: remove the repeated row."
        ]

    def test_datasetdict_one_split(self):
        dd = DatasetDict(
            {
                "train": Dataset.from_list([{"messages": CONVERSATION}]),
                "test": Dataset.from_list([{"prompt": "x", "completion": "y"}]),
            }
        )
        test = load_sft(dd, split="test")
        assert isinstance(test, Dataset) and test[0]["messages"] == [user("x"), bot("y")]
        with pytest.raises(ValueError, match="train, test"):
            load_sft(dd, split="validation")

    def test_split_on_a_source_without_splits(self):
        with pytest.raises(ValueError, match="DatasetDict"):
            load_sft([{"messages": CONVERSATION}], split="train")

    def test_unknown_extension_names_supported_ones(self, tmp_path):
        path = tmp_path / "prefs.txt"
        path.write_text("x")
        with pytest.raises(ValueError, match=r"prefs\.txt.*\.jsonl, \.json, \.csv, \.parquet"):
            load_preferences(path)

    def test_missing_file_and_wrong_source_type(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="nope.jsonl"):
            validate(tmp_path / "nope.jsonl", "preference")
        with pytest.raises(TypeError, match="from_pandas"):
            load_prompts(pd.DataFrame({"prompt": ["x"]}))
        with pytest.raises(ValueError, match="preference, sft, prompts, ratings"):
            validate([], "pairs")

    def test_validate_returns_a_report(self):
        report = validate(SAME_PAIR_FORMATS["ultrafeedback"], "preference")
        assert report.ok and report.rows == 1 and report.examples == 1
        assert str(report) == "0 problems in 1 row; 1 row kept"
