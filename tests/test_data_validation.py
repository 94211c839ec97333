"""Bad input gives located problems: file, line or row, field, what is wrong and how to fix it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from datasets import Dataset

from rlhf_lab.data import DataError, Problem, load_preferences, load_prompts, load_ratings, load_sft, validate

GOOD = {"prompt": "What color is the sky?", "chosen": "Blue.", "rejected": "Green."}
USER, BOT = {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}


def jsonl(tmp_path: Path, rows: list, name: str = "prefs.jsonl") -> Path:
    """Write rows one per line; bytes and str rows are written as they are (to break things)."""
    path = tmp_path / name
    lines = [r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode() for r in rows]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def only_problem(report) -> Problem:
    assert len(report.problems) == 1, str(report)
    return report.problems[0]


class TestFiveBadRows:
    ROWS = [
        GOOD,  # line 1
        '{"prompt": "P2", "chosen": "a" "rejected": "b"}',  # line 2: broken JSON
        b'{"prompt": "caf\xe9?", "chosen": "a", "rejected": "b"}',  # line 3: Latin-1 byte
        {"prompt": "P4", "chosen": "", "rejected": "b"},  # line 4: empty chosen
        "",  # line 5: blank, skipped
        {"prompt": [{"role": "narrator", "content": "P6"}], "chosen": "a", "rejected": "b"},  # line 6
        {"prompt": "P7", "chosen": "same", "rejected": "same"},  # line 7: identical
        {"prompt": "P8", "chosen": [BOT], "rejected": "b"},  # line 8
        {"chosen": [USER, BOT], "rejected": [USER, {"role": "assistant", "content": "Bye"}]},  # line 9
    ]
    EXPECTED = [  # (line, field, words in the problem, words in the fix)
        (2, None, "is not valid JSON", "one complete JSON object"),
        (3, None, "is not valid UTF-8 (byte 0xe9", "re-save the file as UTF-8"),
        (4, "chosen", "is empty", "put the preferred response text in 'chosen'"),
        (6, "prompt[0].role", "has unknown role 'narrator'", "system, user, assistant, tool"),
        (7, "rejected", "is identical to 'chosen'", "worse response"),
    ]

    def test_lenient_load_reports_exactly_five_and_keeps_the_good_rows(self, tmp_path):
        ds, report = load_preferences(jsonl(tmp_path, self.ROWS), strict=False)
        assert ds.num_rows == 3
        assert [r["prompt"][0]["content"] for r in ds] == ["What color is the sky?", "P8", "Hi"]
        assert len(report.problems) == 5
        for problem, (line, field, what, fix) in zip(report.problems, self.EXPECTED, strict=True):
            assert (problem.source, problem.location, problem.field) == ("prefs.jsonl", f"line {line}", field)
            assert what in problem.problem and fix in problem.fix
            assert str(problem).startswith(f"prefs.jsonl, line {line}")
        assert report.summary() == "5 problems in 8 rows; 3 rows kept"
        assert report.dropped == [f"prefs.jsonl, line {n}" for n in (2, 3, 4, 6, 7)]

    def test_strict_load_raises_one_error_listing_all_five(self, tmp_path):
        with pytest.raises(DataError) as info:
            load_preferences(jsonl(tmp_path, self.ROWS))
        message = str(info.value)
        for line, field, what, fix in self.EXPECTED:
            where = f"prefs.jsonl, line {line}" + (f", field '{field}'" if field else "")
            assert f"{where}: {what}" in message and fix in message
        assert "5 problems in 8 rows; 3 rows kept" in message
        assert isinstance(info.value, ValueError) and len(info.value.report.problems) == 5

    def test_validate_gives_the_same_report_without_raising(self, tmp_path):
        report = validate(jsonl(tmp_path, self.ROWS), "preference")
        assert not report.ok and len(report.problems) == 5 and report.kept == 3


def test_problem_reads_as_one_sentence_with_a_fix(tmp_path):
    path = jsonl(tmp_path, [GOOD, GOOD | {"prompt": "Q"}, GOOD | {"prompt": "R", "chosen": ""}])
    problem = only_problem(validate(path, "preference"))
    assert (
        str(problem)
        == "prefs.jsonl, line 3, field 'chosen': is empty. Fix: put the preferred response text in 'chosen'."
    )


PREFERENCE_CASES = {
    "missing_field": ({"prompt": "P", "chosen": "a"}, "rejected", "is missing", "dispreferred response"),
    "whitespace_prompt": (
        {"prompt": " \t", "chosen": "a", "rejected": "b"},
        "prompt",
        "only whitespace",
        "put the prompt text in 'prompt'",
    ),
    "non_string_text": (
        {"prompt": "P", "chosen": 5, "rejected": "b"},
        "chosen",
        "is not a string or a list of messages (got a number)",
        "give 'chosen' as a string",
    ),
    "non_string_content": (
        {"prompt": [{"role": "user", "content": ["x"]}], "chosen": "a", "rejected": "b"},
        "prompt[0].content",
        "is not a string (got a list)",
        "make 'prompt[0].content' a string",
    ),
    "message_not_a_list": (
        {"prompt": "P", "chosen": BOT, "rejected": "b"},
        "chosen",
        "or a list of messages (got an object)",
        '[{"role": "user"',
    ),
    "message_missing_content": (
        {"prompt": "P", "chosen": [{"role": "assistant"}], "rejected": "b"},
        "chosen[0].content",
        "is missing",
        "add 'chosen[0].content'",
    ),
    "message_wrong_keys": (
        {"prompt": "P", "chosen": [{"speaker": "x"}], "rejected": "b"},
        "chosen[0]",
        "instead of 'role' and 'content'",
        '{"role": ..., "content": ...}',
    ),
    "unknown_role": (
        {"prompt": "P", "chosen": [{"role": "bot", "content": "a"}], "rejected": "b"},
        "chosen[0].role",
        "unknown role 'bot'",
        "one of: system, user, assistant, tool",
    ),
    "prompt_ends_with_assistant": (
        {"prompt": [USER, BOT], "chosen": "a", "rejected": "b"},
        "prompt",
        "must end with a user message",
        "end the prompt with the user turn",
    ),
    "response_starts_with_user": (
        {"prompt": "P", "chosen": [USER], "rejected": "b"},
        "chosen[0]",
        "is a 'user' message, but a response holds only assistant and tool turns",
        "put earlier turns in 'prompt'",
    ),
    "identical": (
        {"prompt": "P", "chosen": [BOT], "rejected": "Hello"},
        "rejected",
        "identical to 'chosen'",
        "worse response",
    ),
    "no_shared_prompt": (
        {"chosen": "Blue.", "rejected": "Green."},
        "prompt",
        "share no prompt",
        "add a 'prompt' field",
    ),
    "no_shared_conversational_prompt": (
        {"chosen": [BOT], "rejected": [USER, BOT]},
        "prompt",
        "share no prompt",
        "add a 'prompt' field",
    ),
    "mixed_implicit_types": (
        {"chosen": [USER, BOT], "rejected": "Hi Hello"},
        "rejected",
        "'chosen' is a list",
        "both responses as strings or both as lists",
    ),
    "hh_empty_turn": (
        {"chosen": "\n\nHuman: Hi\n\nAssistant:", "rejected": "\n\nHuman: Hi\n\nAssistant: Yo"},
        "chosen",
        "empty 'Assistant:' turn",
        "write the turn's text",
    ),
    "unrecognised_shape": (
        {"question": "q", "answer": "a"},
        None,
        "has keys ['question', 'answer']",
        "{prompt, chosen, rejected}",
    ),
    "non_object_row": ([1, 2], None, "is a JSON array, not a JSON object", "named fields"),
    "bad_score": (
        {
            "prompt": "P",
            "completions": [
                {"response": "a", "overall_score": 1},
                {"response": "b", "overall_score": "high"},
            ],
        },
        "completions[1].overall_score",
        "is not a number ('high')",
        "a number such as",
    ),
    "contradictory_scores": (
        {"prompt": "P", "responses": ["a", "a"], "scores": [1, 2]},
        "responses[1]",
        "repeats responses[0] with a different score",
        "remove one copy",
    ),
    "bad_ranking": (
        {"prompt": "P", "responses": ["a", "b"], "ranking": [1, 1]},
        "ranking",
        "is not an ordering of the 2 responses",
        "best first",
    ),
    "scores_length": (
        {"prompt": "P", "responses": ["a", "b"], "scores": [1]},
        "scores",
        "one score per response",
        "the same length",
    ),
    "ranked_without_ranking": (
        {"prompt": "P", "responses": ["a", "b"]},
        "ranking",
        "is missing",
        "'scores' (one per response)",
    ),
    "rated_row_bad_reward": (
        {"prompt": "P", "response": "a", "reward": True},
        "reward",
        "is not a number (got a boolean)",
        "make 'reward' a number",
    ),
}


@pytest.mark.parametrize("case", list(PREFERENCE_CASES))
def test_preference_problem_is_located_with_a_fix(tmp_path, case):
    row, field, what, fix = PREFERENCE_CASES[case]
    ds, report = load_preferences(jsonl(tmp_path, [GOOD, row]), strict=False)
    problem = only_problem(report)
    assert (problem.source, problem.location, problem.field) == ("prefs.jsonl", "line 2", field)
    assert what in problem.problem, problem.problem
    assert fix in problem.fix, problem.fix
    assert ds.num_rows == 1 and report.kept == 1


OTHER_CASES = {  # kind -> row, field, words in the problem, words in the fix
    "sft_ends_with_user": (
        "sft",
        {"messages": [USER]},
        "messages",
        "must end with an assistant message",
        "ending with the assistant reply",
    ),
    "sft_turns_not_alternating": (
        "sft",
        {"messages": [USER, USER, BOT]},
        "messages[1]",
        "right after a 'user' message",
        "alternating",
    ),
    "sft_system_in_the_middle": (
        "sft",
        {"messages": [USER, BOT, {"role": "system", "content": "S"}, BOT]},
        "messages[2]",
        "'system' message right after",
        "optional system",
    ),
    "sft_alpaca_missing_output": ("sft", {"instruction": "Do it"}, "output", "is missing", "add 'output'"),
    "sft_text_not_a_transcript": (
        "sft",
        {"text": "just text"},
        "text",
        "not a 'Human:'/'Assistant:' transcript",
        "'messages'",
    ),
    "sft_sharegpt_unknown_speaker": (
        "sft",
        {"conversations": [{"from": "narrator", "value": "x"}]},
        "conversations[0].from",
        "unknown role 'narrator'",
        "human'/'gpt'",
    ),
    "prompts_only_replies": (
        "prompts",
        {"messages": [BOT]},
        "messages",
        "has no user message",
        "one user turn",
    ),
    "prompts_empty_string": ("prompts", '""', "prompt", "is empty", "put the prompt text"),
    "prompts_unrecognised": ("prompts", {"title": "x"}, None, "has keys ['title']", "{question|instruction"),
    "ratings_bad_label": (
        "ratings",
        {"prompt": "P", "completion": "a", "label": "maybe"},
        "label",
        "is not a label ('maybe')",
        "good/bad, up/down or 1/0",
    ),
    "ratings_no_label_or_score": (
        "ratings",
        {"prompt": "P", "completion": "a"},
        "label",
        "is missing (and there is no score)",
        "give 'label' (true/false) or a 'score'",
    ),
    "ratings_unrecognised": (
        "ratings",
        {"prompt": "P", "chosen": "a", "rejected": "b"},
        None,
        "has keys ['prompt', 'chosen', 'rejected']",
        "{prompt, completion|response, label}",
    ),
}


@pytest.mark.parametrize("case", list(OTHER_CASES))
def test_other_kinds_locate_problems(tmp_path, case):
    kind, row, field, what, fix = OTHER_CASES[case]
    good = {
        "sft": {"messages": [USER, BOT]},
        "prompts": '"Hi"',  # a JSON string line
        "ratings": {"prompt": "P", "completion": "ok", "label": True},
    }[kind]
    problem = only_problem(validate(jsonl(tmp_path, [good, row], "data.jsonl"), kind))
    assert (problem.source, problem.location, problem.field) == ("data.jsonl", "line 2", field)
    assert what in problem.problem and fix in problem.fix, str(problem)


class TestDuplicates:
    def test_duplicate_pair_names_the_first_location(self, tmp_path):
        conversational = {
            "prompt": [{"role": "user", "content": GOOD["prompt"]}],
            "chosen": [{"role": "assistant", "content": "Blue."}],
            "rejected": "Green.",
        }
        path = jsonl(tmp_path, [GOOD, GOOD | {"prompt": "Other"}, conversational])
        problem = only_problem(validate(path, "preference"))
        assert problem.location == "line 3"
        assert "duplicates line 1 (same prompt, chosen and rejected)" in problem.problem
        assert "remove the repeated row" in problem.fix

    def test_duplicates_in_other_kinds(self):
        assert "duplicates row 0" in only_problem(validate(["Hi", "Hi"], "prompts")).problem
        row = {"messages": [USER, BOT]}
        assert only_problem(validate([row, row], "sft")).location == "row 1"
        rated = {"prompt": "P", "response": "a", "score": 1}
        problem = only_problem(validate([rated, rated | {"score": 2}], "ratings"))
        assert "duplicates row 0 (same prompt and completion)" in problem.problem
        problem = only_problem(validate([rated, rated | {"score": 2}], "preference"))
        assert "duplicates row 0 (same prompt and response)" in problem.problem


class TestLocations:
    def test_csv_rows_are_located_by_their_real_line(self, tmp_path):
        path = tmp_path / "prefs.csv"
        path.write_text(
            'prompt,chosen,rejected\n"Two\nlines",a,b\n\nP,,b\nP,a,b,extra\nP,"[{""role"": ""assistant""",b\n',
            encoding="utf-8",
        )
        ds, report = load_preferences(path, strict=False)
        assert ds[0]["prompt"][0]["content"] == "Two\nlines"
        assert [(p.location, p.field) for p in report.problems] == [
            ("line 5", "chosen"),
            ("line 6", None),
            ("line 7", "chosen"),
        ]
        assert "has 4 cells but the header (line 1) has 3 columns" in report.problems[1].problem
        assert "looks like a JSON list but is not valid JSON" in report.problems[2].problem
        assert report.rows == 4

    def test_json_array_rows_are_located_by_the_line_they_start_on(self, tmp_path):
        path = tmp_path / "prefs.json"
        path.write_bytes(
            b'[\n  {"prompt": "P", "chosen": "a",\n   "rejected": "b"},\n  {"prompt": "Q",\n'
            b'   "chosen": ""},\n {"prompt": "\xff", "chosen": "a", "rejected": "b"},\n  7\n]\n'
        )
        ds, report = load_preferences(path, strict=False)
        assert ds.num_rows == 1
        assert [(p.location, p.field) for p in report.problems] == [
            ("line 4", "rejected"),
            ("line 4", "chosen"),
            ("line 6", None),
            ("line 7", None),
        ]
        assert "is missing" in report.problems[0].problem and "is empty" in report.problems[1].problem
        assert "not valid UTF-8" in report.problems[2].problem
        assert "is a JSON number, not a JSON object" in report.problems[3].problem

    def test_broken_json_array_stops_with_its_line(self, tmp_path):
        path = tmp_path / "prefs.json"
        path.write_text('[\n {"prompt": "P", "chosen": "a", "rejected": "b"},\n {"prompt": oops}\n]')
        ds, report = load_preferences(path, strict=False)
        assert ds.num_rows == 1
        assert str(only_problem(report)).startswith("prefs.json, line 3: is not valid JSON")

    @pytest.mark.parametrize("container", ["parquet", "dataset", "list"])
    def test_tables_are_located_by_zero_based_row(self, tmp_path, container):
        rows = [GOOD, GOOD | {"rejected": "   "}]
        if container == "parquet":
            pd.DataFrame(rows).to_parquet(tmp_path / "prefs.parquet")
            source, name = tmp_path / "prefs.parquet", "prefs.parquet"
        else:
            source, name = (Dataset.from_list(rows), "dataset") if container == "dataset" else (rows, "list")
        problem = only_problem(validate(source, "preference"))
        assert str(problem).startswith(f"{name}, row 1, field 'rejected': is only whitespace. Fix:")

    def test_list_of_non_dicts(self):
        problem = only_problem(validate([GOOD, 3.5], "preference"))
        assert (problem.location, problem.problem) == ("row 1", "is a float, not a dict")

    def test_one_row_with_two_bad_fields_gives_two_problems(self, tmp_path):
        report = validate(jsonl(tmp_path, [{"prompt": "P", "chosen": "", "rejected": 3}]), "preference")
        assert [p.field for p in report.problems] == ["chosen", "rejected"]
        assert report.summary() == "2 problems in 1 row; 0 rows kept"

    def test_empty_and_utf16_files(self, tmp_path):
        (tmp_path / "empty.jsonl").write_text("\n\n")
        assert "has no rows" in str(validate(tmp_path / "empty.jsonl", "sft"))
        (tmp_path / "broken.parquet").write_bytes(b"not parquet")
        assert "broken.parquet: could not be read as Parquet" in str(validate(tmp_path / "broken.parquet", "sft"))
        (tmp_path / "wide.jsonl").write_text('{"prompt": "x"}\n', encoding="utf-16")
        assert str(only_problem(validate(tmp_path / "wide.jsonl", "prompts"))).startswith(
            "wide.jsonl: is UTF-16 encoded. Fix: re-save the file as UTF-8"
        )

    def test_strict_never_returns_a_partial_dataset(self, tmp_path):
        path = jsonl(tmp_path, [{"messages": [USER, BOT]}, '{"messages": ['], "data.jsonl")
        with pytest.raises(DataError, match=r"data.jsonl, line 2: is not valid JSON") as info:
            load_sft(path)
        assert info.value.report.kept == 1  # the good row existed but nothing was returned
        with pytest.raises(DataError, match="is not a label"):
            load_ratings([{"prompt": "P", "completion": "a", "label": "?"}])
        with pytest.raises(DataError, match="has no user message"):
            load_prompts([{"messages": [BOT]}])


def test_the_data_fingerprint_follows_the_content_not_the_container():
    from datasets import Dataset

    from rlhf_lab.data import fingerprint

    rows = [{"prompt": "Say hi.", "completion": "Hi!"}, {"prompt": "Count.", "completion": "1 2 3"}]
    same = fingerprint(rows)
    assert same.startswith("sha256:") and len(same) == len("sha256:") + 16
    assert fingerprint(Dataset.from_list(rows)) == same == fingerprint([dict(reversed(r.items())) for r in rows])
    assert fingerprint([rows[0], {**rows[1], "completion": "1 2 4"}]) != same  # one changed row
    assert fingerprint(rows[::-1]) != same and fingerprint(rows[:1]) != same  # reordered, dropped
    assert fingerprint(None) is None


def test_a_stage_says_where_its_data_came_from():
    from pathlib import Path

    from datasets import Dataset

    from rlhf_lab import task
    from rlhf_lab.data import describe_source

    assert describe_source("starter") == "starter" and describe_source(Path("d/prefs.jsonl")) == "d/prefs.jsonl"
    assert describe_source(task("concise")) == "task:concise"
    assert describe_source(["a", "b"]) == "passed in memory (list of 2 rows)"
    assert describe_source(Dataset.from_list([{"prompt": "a"}])) == "passed in memory (Dataset of 1 rows)"
