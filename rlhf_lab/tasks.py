"""Gold-reward tasks: prompts with a programmatic ground truth that a reward model cannot game.

    task = lab.task("concise")                    # or lab.TASKS["arithmetic"]
    task.prompts("train"), task.prompts("test")   # plain strings; task.dataset(split) for lab.load_prompts
    task.gold("What is 7 + 5? Reply with the number only.", "12")   # 1.0
    task(prompts, completions)                    # batch gold: a reward for PPO, GRPO and evaluate

Prompts are generated here from fixed word lists (never downloaded) and carry everything gold
needs, so gold reads a plain string, a conversation, or a dataset row alike. Splits are fixed:
the test split holds out whole topics (concise) or number pairs (arithmetic). A simulated
annotator that labels by gold is in `rlhf_lab.labeling.annotator`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlhf_lab.models.chat import to_messages

SPLITS = ("train", "test")


def prompt_text(prompt: Any) -> str:
    """The last user turn of a prompt: a string, a conversation, or a row with a "prompt"."""
    messages = to_messages(prompt)
    users = [m["content"] for m in messages if m.get("role") == "user"]
    if not users:
        raise ValueError(f"prompt {prompt!r} has no user turn; give a string or a conversation with one")
    return users[-1]


class Task:
    """A named set of prompts (train/test) with a programmatic `gold(prompt, completion) -> float`."""

    name = "task"
    description = ""

    def __init__(self) -> None:
        train, test = self._make_prompts()
        self._prompts = {"train": train, "test": test}

    def _make_prompts(self) -> tuple[list[str], list[str]]:
        raise NotImplementedError

    def gold(self, prompt: Any, completion: str) -> float:
        raise NotImplementedError

    def prompts(self, split: str = "train") -> list[str]:
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; use 'train' or 'test'")
        return list(self._prompts[split])

    def dataset(self, split: str = "train"):
        """The split as a prompts Dataset (a `prompt` column of messages), as `lab.load_prompts` gives."""
        from rlhf_lab.data import load_prompts

        return load_prompts(self.prompts(split))

    def score(self, prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
        """Gold for each (prompt, completion): a reward callable for PPO, evaluate and panels."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions; pass one per prompt")
        return [float(self.gold(p, c)) for p, c in zip(prompts, completions)]

    __call__ = score

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(self._prompts[s])}" for s in SPLITS)
        return f"{type(self).__name__}(name={self.name!r}, {sizes})"


def _split(items: list, test_fraction: float, seed: str) -> tuple[list, list]:
    items = list(items)
    random.Random(seed).shuffle(items)
    cut = round(len(items) * (1 - test_fraction))
    return items[:cut], items[cut:]


# ---------------------------------------------------------------------------------------------
# Response quality: short, on-topic answers

TOPICS = [
    ("a volcano", "lava", "eruption"),
    ("photosynthesis", "sunlight", "plants"),
    ("a rainbow", "light", "colors"),
    ("gravity", "force", "mass"),
    ("a thermometer", "temperature", "measure"),
    ("the moon", "orbit", "Earth"),
    ("a glacier", "ice", "slowly"),
    ("an earthquake", "ground", "plates"),
    ("a battery", "energy", "chemical"),
    ("a vaccine", "immune", "disease"),
    ("a library", "books", "borrow"),
    ("a compass", "north", "magnetic"),
    ("a bridge", "river", "cross"),
    ("a desert", "dry", "sand"),
    ("a forest", "trees", "animals"),
    ("a calendar", "days", "months"),
    ("an island", "water", "land"),
    ("a telescope", "stars", "distant"),
    ("a microscope", "small", "cells"),
    ("a map", "places", "roads"),
    ("the ocean", "salt", "water"),
    ("a cloud", "water", "sky"),
    ("a seed", "grow", "plant"),
    ("a bee", "honey", "flowers"),
    ("a river", "water", "flows"),
    ("a clock", "time", "hours"),
    ("a piano", "keys", "music"),
    ("a recipe", "ingredients", "cooking"),
    ("a passport", "travel", "identity"),
    ("an umbrella", "rain", "dry"),
    ("a hospital", "doctors", "patients"),
    ("a password", "secret", "account"),
    ("a farm", "crops", "animals"),
    ("a thunderstorm", "lightning", "rain"),
    ("the heart", "blood", "pumps"),
    ("a bicycle", "wheels", "pedals"),
    ("a camera", "photos", "light"),
    ("a museum", "art", "history"),
    ("a dictionary", "words", "meanings"),
    ("a tide", "moon", "sea"),
    ("a satellite", "orbit", "signals"),
    ("a fossil", "rock", "ancient"),
    ("an election", "vote", "candidates"),
    ("a budget", "money", "spending"),
    ("a fever", "temperature", "body"),
    ("a lighthouse", "ships", "light"),
    ("a spider", "web", "legs"),
    ("a kettle", "water", "boil"),
    ("a tornado", "wind", "spinning"),
    ("an orchestra", "musicians", "instruments"),
    ("a tree", "leaves", "roots"),
    ("a harbor", "boats", "safe"),
    ("a snowflake", "ice", "crystal"),
    ("a magnet", "iron", "attracts"),
    ("a wheel", "round", "roll"),
    ("the sun", "star", "heat"),
    ("a newspaper", "news", "printed"),
    ("a refrigerator", "cold", "food"),
    ("a vote", "choice", "election"),
    ("a cactus", "desert", "water"),
    ("a penguin", "bird", "swim"),
    ("a fire", "heat", "burn"),
    ("a mountain", "high", "peak"),
    ("a wave", "water", "energy"),
]

CONCISE_TEMPLATES = [
    "What is {subject}? Answer in one short sentence that uses the words '{a}' and '{b}'.",
    "Explain {subject} to a ten-year-old in one short sentence. Use the words '{a}' and '{b}'.",
    "In a single short sentence, describe {subject}. Include the words '{a}' and '{b}'.",
    "Give a one-sentence definition of {subject} that mentions '{a}' and '{b}'.",
]
_KEYWORDS = re.compile(r"'([^']+)' and '([^']+)'\.?\s*$")


def stem(word: str) -> str:
    """`word` without one common suffix, keeping at least 3 letters ("plants" -> "plant", "ice" -> "ice")."""
    for suffix in ("ions", "ion", "ing", "ed", "es", "s", "ly", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


class ConciseTask(Task):
    """Short, on-topic answers. gold = coverage x (FLOOR + (1 - FLOOR) x brevity), in [0, 1].

    coverage: share of the prompt's two quoted words in the answer: 0, 0.5 or 1. A word counts when
    a word of the answer starts with its stem, any case (`stem`: "eruption" -> "erupt", so "erupts"
    and "Eruptions" count). brevity: 1 for IDEAL_WORDS words, rising
    linearly from 0 words below, falling linearly to 0 at MAX_WORDS. A long on-topic answer keeps
    FLOOR x coverage; an off-topic one gets 0 however short.
    """

    name = "concise"
    description = "answer in one short sentence that uses the two words the prompt names"
    IDEAL_WORDS = (5, 15)
    MAX_WORDS = 40
    FLOOR = 0.3

    def _make_prompts(self):
        return tuple(
            [t.format(subject=s, a=a, b=b) for s, a, b in topics for t in CONCISE_TEMPLATES]
            for topics in _split(TOPICS, 0.25, "concise")
        )

    def keywords(self, prompt: Any) -> tuple[str, str]:
        match = _KEYWORDS.search(prompt_text(prompt))
        if match is None:
            raise ValueError(
                f"not a concise-task prompt (no \"'word' and 'word'\" at its end): {prompt_text(prompt)!r}"
            )
        return match.group(1), match.group(2)

    def brevity(self, completion: str) -> float:
        words = len(completion.split())
        low, high = self.IDEAL_WORDS
        if words < low:
            return words / low
        return float(np.clip((self.MAX_WORDS - words) / (self.MAX_WORDS - high), 0.0, 1.0))

    def coverage(self, prompt: Any, completion: str) -> float:
        stems = [stem(k) for k in self.keywords(prompt)]
        found = [re.search(rf"\b{re.escape(k)}", completion, re.IGNORECASE) is not None for k in stems]
        return sum(found) / len(found)

    def gold(self, prompt: Any, completion: str) -> float:
        return self.coverage(prompt, completion) * (self.FLOOR + (1 - self.FLOOR) * self.brevity(completion))


# ---------------------------------------------------------------------------------------------
# Verifiable tasks: one exact answer per prompt


class ExactTask(Task):
    """Exact answers. gold = 1 when the reply, trimmed of spaces, quotes, `*`, backticks and a final
    period, is the answer; PARTIAL when the answer is in a wordier reply (see `_contains`); else 0."""

    PARTIAL = 0.5

    def answer(self, prompt: Any) -> str:
        raise NotImplementedError

    def _contains(self, answer: str, completion: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(answer)}(?!\w)", completion) is not None

    def gold(self, prompt: Any, completion: str) -> float:
        answer = self.answer(prompt)
        reply = completion.strip().strip("\"'`*").rstrip(".!").strip().strip("\"'`*")
        if reply == answer:
            return 1.0
        return self.PARTIAL if self._contains(answer, completion) else 0.0


_SUM = re.compile(r"What is (\d+) ([+-]) (\d+)\?")


class ArithmeticTask(ExactTask):
    """Sums and differences of numbers 1..15 (differences never negative). Partial credit when the
    answer is the last number in the reply ("7 + 5 = 12.")."""

    name = "arithmetic"
    description = "add or subtract two small numbers; reply with the number only"

    def _make_prompts(self):
        pairs = [(a, "+", b) for a in range(1, 16) for b in range(1, 16)]
        pairs += [(a, "-", b) for a in range(1, 16) for b in range(1, a)]
        return tuple(
            [f"What is {a} {op} {b}? Reply with the number only." for a, op, b in part]
            for part in _split(pairs, 0.2, "arithmetic")
        )

    def answer(self, prompt: Any) -> str:
        match = _SUM.search(prompt_text(prompt))
        if match is None:
            raise ValueError(f"not an arithmetic-task prompt (no 'What is A + B?'): {prompt_text(prompt)!r}")
        a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
        return str(a + b if op == "+" else a - b)

    def _contains(self, answer: str, completion: str) -> bool:
        numbers = re.findall(r"-?\d+", completion)
        return bool(numbers) and numbers[-1] == answer


# ---------------------------------------------------------------------------------------------
# A toy for watching PPO learn within seconds: never repeat yourself

VARIETY_TEMPLATES = [
    "Say a few different things about {subject}, never repeating yourself.",
    "Describe {subject} without using any word twice.",
    "List several different words about {subject}.",
    "Tell me about {subject} in varied words.",
]


class VarietyTask(Task):
    """Never repeat yourself: a dense toy reward that PPO moves within a few updates.

    gold = distinct / total character trigrams of the lower-cased answer, in [0, 1]: 1 for text that
    never repeats a three-character chunk, low for one chunk said over and over ("no no no no no no"
    scores 0.2), 0 for an answer under three characters. Every answer lands somewhere in between, so
    every sample carries signal. Made for watching PPO learn in seconds: the tiny random model,
    sampled at a low temperature (0.1), stutters (it repeats its last token about two times in
    three), and PPO with a LoRA adapter teaches it to stop within a few updates (the CI profile of
    notebooks 03, 06 and 07). A trained model already varies its words, so it scores near 1.
    """

    name = "variety"
    description = "say something new with every word: a toy reward that PPO moves within a few updates"

    def _make_prompts(self):
        return tuple(
            [t.format(subject=s) for s, _, _ in topics for t in VARIETY_TEMPLATES]
            for topics in _split(TOPICS, 0.25, "variety")
        )

    def gold(self, prompt: Any, completion: str) -> float:
        text = completion.lower()
        grams = [text[i : i + 3] for i in range(len(text) - 2)]
        return len(set(grams)) / len(grams) if grams else 0.0


TASKS: dict[str, Task] = {t.name: t for t in (ConciseTask(), ArithmeticTask(), VarietyTask())}


def task(name: str | Task) -> Task:
    """A gold task by name: one of `TASKS` ("concise", "arithmetic", "variety")."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}")
    return TASKS[name]
