"""A simulated annotator: labels pairs by a gold reward with Bradley-Terry noise, headless.

    annotator = lab.SimulatedAnnotator(lab.task("concise"), temperature=0.1, seed=0)
    annotator.label(prompts, a, b)                 # "A", "B" or "tie" per pair
    annotator.label_session(session)               # labels a LabelingSession (or a panel) to the end
    prefs = lab.preference_dataset(policy, task.prompts("train"), annotator, n_pairs=500)

The annotator prefers A with P = sigmoid((gold_A - gold_B) / T) (Bradley-Terry; T in gold units).
T = 0 always picks the higher gold. Equal gold is a "tie" (with `ties=False`: a fair coin).
Asked for ratings, it scores each response 1-5 from its gold (0 -> 1, 1 -> 5) plus T x normal noise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlhf_lab.labeling.agreement import RATING_SCALE
from rlhf_lab.models.chat import to_messages
from rlhf_lab.rewards import RewardFunction, as_scorer
from rlhf_lab.tasks import task


def gold_scorer(gold: Any) -> RewardFunction:
    """`gold` as a validated batch scorer: a Task or task name, anything with `.score(prompts,
    completions)`, or a per-pair callable `gold(prompt, completion) -> float` (as `Task.gold`)."""
    if isinstance(gold, str):
        gold = task(gold)
    if callable(getattr(gold, "score", None)):
        return as_scorer(gold)
    if not callable(gold):
        raise TypeError(
            f"gold must be a Task, a task name or a callable gold(prompt, completion), got {type(gold).__name__}"
        )

    def per_pair(prompts, completions):
        return [gold(p, c) for p, c in zip(prompts, completions)]

    per_pair.__name__ = getattr(gold, "__name__", "gold")
    return as_scorer(per_pair)


class SimulatedAnnotator:
    """Labels pairs by gold with Bradley-Terry noise: P(A preferred) = sigmoid((gold_A - gold_B) / T).

    `temperature` T >= 0 is in gold units (T = 0: always the higher gold). `ties=True`: equal gold
    is a "tie"; False: a fair coin. Seeded: the same calls in the same order give the same labels.
    """

    def __init__(self, gold: Any, temperature: float = 0.0, *, seed: int = 0, ties: bool = True) -> None:
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}; 0 means noiseless")
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

    def rate(self, prompt: Any, responses: Sequence[str]) -> list[int]:
        """A score 1-5 per response: gold in [0, 1] mapped onto 1..5, plus T x normal noise, rounded and clipped."""
        gold = np.asarray(self.scores([prompt] * len(responses), responses), dtype=np.float64)
        noisy = gold + self.temperature * self.rng.standard_normal(len(responses))
        return [int(x) for x in np.clip(np.rint(1 + (RATING_SCALE - 1) * noisy), 1, RATING_SCALE)]

    def label_session(self, session: Any, limit: int | None = None) -> int:
        """Label a ``LabelingSession``'s queue to the end (or ``limit`` items) through
        ``session.submit``: a pair by ``choice``, N > 2 responses by ``rank``, a rating item by
        ``rate``; returns how many were labelled. A ``LabelingPanel`` works too: its traits follow
        the session."""
        done = 0
        while not session.done and (limit is None or done < limit):
            responses, prompt = list(session.responses), session.prompt
            if session.rating:
                session.submit({"scores": self.rate(prompt, responses)})
            else:
                session.submit(self.choice(prompt, *responses) if len(responses) == 2 else self.rank(prompt, responses))
            done += 1
        return done

    def label_panel(self, panel: Any, limit: int | None = None) -> int:
        """``label_session`` for a ``LabelingPanel`` (or a session); kept for older notebooks."""
        return self.label_session(panel, limit)

    def __repr__(self) -> str:
        return f"SimulatedAnnotator(temperature={self.temperature}, ties={self.ties}, seed={self.seed})"


def _preference_features() -> dict:
    from datasets import Value

    messages = [{"role": Value("string"), "content": Value("string")}]
    return {
        "prompt": messages,
        "chosen": messages,
        "rejected": messages,
        "gold_chosen": Value("float64"),
        "gold_rejected": Value("float64"),
    }


def label_pairs(prompts: Sequence[Any], a: Sequence[str], b: Sequence[str], annotator: SimulatedAnnotator):
    """A preference Dataset (prompt/chosen/rejected messages, plus gold_chosen/gold_rejected) from
    labelled pairs; ties and pairs with an empty or identical response are left out."""
    from datasets import Dataset, Features

    if not len(prompts) == len(a) == len(b):
        raise ValueError(f"got {len(prompts)} prompts, {len(a)} A and {len(b)} B responses; pass one of each per pair")
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


def preference_dataset(
    policy: Any,
    prompts: Sequence[Any],
    annotator: SimulatedAnnotator,
    n_pairs: int,
    *,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 16,
    max_rounds: int | None = None,
):
    """`n_pairs` labelled pairs of `policy`'s samples: two samples per prompt, round after round over
    `prompts` with fresh seeds, ties and identical pairs dropped. In TRL's preference format, ready for
    `lab.train_reward_model` and `lab.dpo`."""
    from datasets import concatenate_datasets

    from rlhf_lab.models import as_policy
    from rlhf_lab.monitor.progress import ProgressLine

    prompts = list(prompts)
    if not prompts or n_pairs < 1:
        raise ValueError(f"need prompts and n_pairs >= 1; got {len(prompts)} prompts and n_pairs={n_pairs}")
    policy = as_policy(policy)
    chunk = max(1, min(batch_size // 2, len(prompts)))  # prompts per generate call (two samples each)
    max_rounds = max_rounds or 5 + 3 * math.ceil(n_pairs / len(prompts))
    stream, parts, have = itertools.cycle(prompts), [], 0
    progress = ProgressLine(name="preference_dataset", unit="pair")
    progress.begin(n_pairs, "sampling")
    for step in range(max_rounds * math.ceil(len(prompts) / chunk)):
        batch = [next(stream) for _ in range(chunk)]
        texts = policy.generate(
            [p for p in batch for _ in (0, 1)],
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed + step,
            batch_size=2 * chunk,
        )
        part = label_pairs(batch, texts[0::2], texts[1::2], annotator)
        parts.append(part.select(range(min(len(part), n_pairs - have))))
        have += len(parts[-1])
        progress.advance(have, "done" if have >= n_pairs else "sampling")
        if have >= n_pairs:
            progress.close()
            return concatenate_datasets(parts)
    progress.close()
    raise ValueError(
        f"only {have} of {n_pairs} pairs after {max_rounds} rounds over {len(prompts)} prompts (the "
        "rest tied or were identical). Fix: raise temperature, pass ties=False to the annotator, "
        "or max_rounds="
    )
