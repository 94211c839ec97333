"""Gold-reward tasks and a simulated annotator: ground truth that a reward model cannot game.

    task = lab.task("concise")                    # or lab.TASKS["arithmetic"]
    task.prompts("train"), task.prompts("test")   # plain strings; task.dataset(split) for lab.load_prompts
    task.gold("What is 7 + 5? Reply with the number only.", "12")   # 1.0
    task(prompts, completions)                    # batch gold: a reward for PPO / evaluate
    annotator = lab.SimulatedAnnotator(task, temperature=0.1, seed=0)
    prefs = lab.preference_dataset(policy, task.prompts("train"), annotator, n_pairs=500)

Prompts are generated here from fixed word lists (never downloaded) and carry everything gold
needs, so gold reads a plain string, a conversation, or a dataset row alike. Splits are fixed:
the test split holds out whole topics (concise) or number pairs (arithmetic).

The annotator prefers A with P = sigmoid((gold_A - gold_B) / T) (Bradley-Terry; T in gold units).
T = 0 always picks the higher gold. Equal gold is a "tie" (with `ties=False`: a fair coin).
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .chat import to_messages

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
        from .data import load_prompts

        return load_prompts(self.prompts(split))

    def score(self, prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
        """Gold for each (prompt, completion): a reward callable for PPO, evaluate and panels."""
        if len(prompts) != len(completions):
            raise ValueError(
                f"got {len(prompts)} prompts but {len(completions)} completions; pass one per prompt"
            )
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
    ("a volcano", "lava", "eruption"), ("photosynthesis", "sunlight", "plants"), ("a rainbow", "light", "colors"),
    ("gravity", "force", "mass"), ("a thermometer", "temperature", "measure"), ("the moon", "orbit", "Earth"),
    ("a glacier", "ice", "slowly"), ("an earthquake", "ground", "plates"), ("a battery", "energy", "chemical"),
    ("a vaccine", "immune", "disease"), ("a library", "books", "borrow"), ("a compass", "north", "magnetic"),
    ("a bridge", "river", "cross"), ("a desert", "dry", "sand"), ("a forest", "trees", "animals"),
    ("a calendar", "days", "months"), ("an island", "water", "land"), ("a telescope", "stars", "distant"),
    ("a microscope", "small", "cells"), ("a map", "places", "roads"), ("the ocean", "salt", "water"),
    ("a cloud", "water", "sky"), ("a seed", "grow", "plant"), ("a bee", "honey", "flowers"),
    ("a river", "water", "flows"), ("a clock", "time", "hours"), ("a piano", "keys", "music"),
    ("a recipe", "ingredients", "cooking"), ("a passport", "travel", "identity"), ("an umbrella", "rain", "dry"),
    ("a hospital", "doctors", "patients"), ("a password", "secret", "account"), ("a farm", "crops", "animals"),
    ("a thunderstorm", "lightning", "rain"), ("the heart", "blood", "pumps"), ("a bicycle", "wheels", "pedals"),
    ("a camera", "photos", "light"), ("a museum", "art", "history"), ("a dictionary", "words", "meanings"),
    ("a tide", "moon", "sea"), ("a satellite", "orbit", "signals"), ("a fossil", "rock", "ancient"),
    ("an election", "vote", "candidates"), ("a budget", "money", "spending"), ("a fever", "temperature", "body"),
    ("a lighthouse", "ships", "light"), ("a spider", "web", "legs"), ("a kettle", "water", "boil"),
    ("a tornado", "wind", "spinning"), ("an orchestra", "musicians", "instruments"), ("a tree", "leaves", "roots"),
    ("a harbor", "boats", "safe"), ("a snowflake", "ice", "crystal"), ("a magnet", "iron", "attracts"),
    ("a wheel", "round", "roll"), ("the sun", "star", "heat"), ("a newspaper", "news", "printed"),
    ("a refrigerator", "cold", "food"), ("a vote", "choice", "election"), ("a cactus", "desert", "water"),
    ("a penguin", "bird", "swim"), ("a fire", "heat", "burn"), ("a mountain", "high", "peak"),
    ("a wave", "water", "energy"),
]  # fmt: skip

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
            raise ValueError(f"not a concise-task prompt (no \"'word' and 'word'\" at its end): {prompt_text(prompt)!r}")  # fmt: skip
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
        return tuple([f"What is {a} {op} {b}? Reply with the number only." for a, op, b in part]
                     for part in _split(pairs, 0.2, "arithmetic"))  # fmt: skip

    def answer(self, prompt: Any) -> str:
        match = _SUM.search(prompt_text(prompt))
        if match is None:
            raise ValueError(f"not an arithmetic-task prompt (no 'What is A + B?'): {prompt_text(prompt)!r}")
        a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
        return str(a + b if op == "+" else a - b)

    def _contains(self, answer: str, completion: str) -> bool:
        numbers = re.findall(r"-?\d+", completion)
        return bool(numbers) and numbers[-1] == answer


TASKS: dict[str, Task] = {t.name: t for t in (ConciseTask(), ArithmeticTask())}


def task(name: str | Task) -> Task:
    """A gold task by name: one of `TASKS` ("concise", "arithmetic")."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}")
    return TASKS[name]


# ---------------------------------------------------------------------------------------------
# Simulated annotator


def gold_scorer(gold: Any) -> Callable[[Sequence[Any], Sequence[str]], np.ndarray]:
    """`gold` as a batch scorer: a Task or task name, anything with `.score(prompts, completions)`,
    or a per-pair callable `gold(prompt, completion) -> float`."""
    if isinstance(gold, str):
        gold = task(gold)
    batch = getattr(gold, "score", None)
    if callable(batch):
        fn = batch
    elif callable(gold):
        fn = lambda prompts, completions: [gold(p, c) for p, c in zip(prompts, completions)]  # noqa: E731
    else:
        raise TypeError(
            f"gold must be a Task, a task name or a callable gold(prompt, completion), got {type(gold).__name__}"
        )

    def scores(prompts, completions) -> np.ndarray:
        values = np.asarray(fn(list(prompts), list(completions)), dtype=np.float64).reshape(-1)
        if values.shape[0] != len(completions) or not np.isfinite(values).all():
            raise ValueError(f"gold returned {values.tolist()[:8]} for {len(completions)} completions; "
                             "it must give one finite number per completion")  # fmt: skip
        return values

    return scores


class SimulatedAnnotator:
    """Labels pairs by gold with Bradley-Terry noise: P(A preferred) = sigmoid((gold_A - gold_B) / T).

    `temperature` T >= 0 is in gold units (T = 0: always the higher gold). `ties=True`: equal gold
    is a "tie"; False: a fair coin. Seeded: the same calls in the same order give the same labels.
    """

    def __init__(self, gold: Any, temperature: float = 0.0, *, seed: int = 0, ties: bool = True) -> None:
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
            raise ValueError(
                f"temperature must be a finite number >= 0, got {temperature!r}; 0 means noiseless"
            )
        self.temperature, self.ties, self.seed = float(temperature), ties, seed
        self.scores = gold_scorer(gold)
        self.rng = np.random.default_rng(seed)

    def probability(self, gold_a: Any, gold_b: Any) -> np.ndarray:
        """P(A preferred) for gold values of A and B (arrays or numbers)."""
        diff = np.asarray(gold_a, dtype=np.float64) - np.asarray(gold_b, dtype=np.float64)
        if self.temperature == 0:
            return np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
        return 1.0 / (1.0 + np.exp(-diff / self.temperature))

    def decide(self, gold_a: np.ndarray, gold_b: np.ndarray) -> list[str]:
        """Decisions ("A", "B" or "tie") for pairs of gold values; one random draw per pair, tie or not."""
        gold_a, gold_b = np.asarray(gold_a, dtype=np.float64), np.asarray(gold_b, dtype=np.float64)
        prefer_a = self.rng.random(gold_a.shape[0]) < self.probability(gold_a, gold_b)
        tie = (gold_a == gold_b) & self.ties
        return ["tie" if t else "A" if p else "B" for t, p in zip(tie, prefer_a)]

    def label(self, prompts: Sequence[Any], a: Sequence[str], b: Sequence[str]) -> list[str]:
        """Decisions ("A", "B" or "tie") for each (prompt, a, b)."""
        if not len(prompts) == len(a) == len(b):
            raise ValueError(
                f"got {len(prompts)} prompts, {len(a)} A and {len(b)} B responses; pass one of each per pair"
            )
        return self.decide(self.scores(prompts, a), self.scores(prompts, b))

    def choice(self, item: Any, a: str | None = None, b: str | None = None) -> str:
        """One decision for `(prompt, a, b)` or a PairGenerator item {"prompt", "responses": [A, B]}."""
        if a is None and b is None:
            if not (isinstance(item, dict) and len(item.get("responses", ())) == 2):
                raise ValueError(
                    "choice(item) needs {'prompt': ..., 'responses': [A, B]}; or call choice(prompt, a, b)"
                )
            a, b = (r["text"] if isinstance(r, dict) else r for r in item["responses"])
            item = item["prompt"]
        return self.label([item], [a], [b])[0]

    def rank(self, prompt: Any, responses: Sequence[str]) -> list[int]:
        """Indices best first, by gold + T x Gumbel noise (Plackett-Luce; for two: the same BT law)."""
        gold = self.scores([prompt] * len(responses), responses)
        noisy = gold + self.temperature * self.rng.gumbel(size=len(responses))
        return [int(i) for i in np.argsort(-noisy, kind="stable")]

    def label_panel(self, panel: Any, limit: int | None = None) -> int:
        """Label a LabelingPanel's queue headless through `panel.submit`; returns how many were labelled."""
        done = 0
        while not panel.done and (limit is None or done < limit):
            responses = list(panel.responses)
            decision = (
                self.choice(panel.prompt, *responses)
                if len(responses) == 2
                else self.rank(panel.prompt, responses)
            )
            panel.submit(decision)
            done += 1
        return done

    def __repr__(self) -> str:
        return f"SimulatedAnnotator(temperature={self.temperature}, ties={self.ties}, seed={self.seed})"


def _preference_features() -> dict:
    from datasets import Value

    messages = [{"role": Value("string"), "content": Value("string")}]
    return {"prompt": messages, "chosen": messages, "rejected": messages,
            "gold_chosen": Value("float64"), "gold_rejected": Value("float64")}  # fmt: skip


def label_pairs(prompts: Sequence[Any], a: Sequence[str], b: Sequence[str], annotator: SimulatedAnnotator):
    """A preference Dataset (prompt/chosen/rejected messages, plus gold_chosen/gold_rejected) from
    labelled pairs; ties and pairs with an empty or identical response are left out."""
    from datasets import Dataset, Features

    if not len(prompts) == len(a) == len(b):
        raise ValueError(
            f"got {len(prompts)} prompts, {len(a)} A and {len(b)} B responses; pass one of each per pair"
        )
    keep = [i for i in range(len(prompts)) if a[i].strip() and b[i].strip() and a[i] != b[i]]
    sub, sub_a, sub_b = [prompts[i] for i in keep], [a[i] for i in keep], [b[i] for i in keep]
    gold_a, gold_b = annotator.scores(sub, sub_a), annotator.scores(sub, sub_b)
    features = _preference_features()
    rows: dict[str, list] = {name: [] for name in features}
    for j, label in enumerate(annotator.decide(gold_a, gold_b)):
        if label == "tie":
            continue
        win, lose = (0, 1) if label == "A" else (1, 0)
        texts, golds = (sub_a[j], sub_b[j]), (gold_a[j], gold_b[j])
        rows["prompt"].append(to_messages(sub[j]))
        rows["chosen"].append([{"role": "assistant", "content": texts[win]}])
        rows["rejected"].append([{"role": "assistant", "content": texts[lose]}])
        rows["gold_chosen"].append(float(golds[win]))
        rows["gold_rejected"].append(float(golds[lose]))
    return Dataset.from_dict(rows, features=Features(features))


def preference_dataset(policy: Any, prompts: Sequence[Any], annotator: SimulatedAnnotator, n_pairs: int, *,
                       temperature: float = 1.0, max_new_tokens: int = 64, seed: int = 0, batch_size: int = 16,
                       max_rounds: int | None = None):  # fmt: skip
    """`n_pairs` labelled pairs of `policy`'s samples: two samples per prompt, round after round over
    `prompts` with fresh seeds, ties and identical pairs dropped. In TRL's preference format, ready for
    `lab.train_reward_model` and `lab.dpo`."""
    from datasets import concatenate_datasets

    from .models import as_policy

    prompts = list(prompts)
    if not prompts or n_pairs < 1:
        raise ValueError(f"need prompts and n_pairs >= 1; got {len(prompts)} prompts and n_pairs={n_pairs}")
    policy = as_policy(policy)
    chunk = max(1, min(batch_size // 2, len(prompts)))  # prompts per generate call (two samples each)
    max_rounds = max_rounds or 5 + 3 * math.ceil(n_pairs / len(prompts))
    stream, parts, have = itertools.cycle(prompts), [], 0
    for step in range(max_rounds * math.ceil(len(prompts) / chunk)):
        batch = [next(stream) for _ in range(chunk)]
        texts = policy.generate([p for p in batch for _ in (0, 1)], temperature=temperature,
                                max_new_tokens=max_new_tokens, seed=seed + step, batch_size=2 * chunk)  # fmt: skip
        part = label_pairs(batch, texts[0::2], texts[1::2], annotator)
        parts.append(part.select(range(min(len(part), n_pairs - have))))
        have += len(parts[-1])
        if have >= n_pairs:
            return concatenate_datasets(parts)
    raise ValueError(f"only {have} of {n_pairs} pairs after {max_rounds} rounds over {len(prompts)} prompts (the "
                     "rest tied or were identical). Fix: raise temperature, pass ties=False to the annotator, "
                     "or max_rounds=")  # fmt: skip
