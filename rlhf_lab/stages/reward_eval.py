"""How good is a reward model? Held-out preference pairs in, one dict of figures out.

    lab.evaluate_reward_model(rm, "starter")        # the starter preference test split
    lab.evaluate_reward_model(rm, "heldout.jsonl")  # anything load_preferences reads

`rm` is any callable `(prompts, completions) -> scores`: a RewardModel, a reward run, an ensemble,
or a plain function. Each distinct (prompt, response) is scored once, however many pairs share it.

The figures, and the choices behind them:
- accuracy: share of pairs with r_chosen > r_rejected (a tie counts as wrong, as in TRL).
- mean_margin: mean of r_chosen - r_rejected.
- kendall_tau: for each prompt with more than 2 distinct responses, Kendall's tau-b between the
  RM's scores and the human ordering implied by the pairs (each response's win count); the mean
  over those prompts. A prompt whose win counts are all equal (no human ordering) is skipped; one
  where the RM gives every response the same score counts as 0. None when no prompt qualifies.
- ece: expected calibration error of p = sigmoid(r_chosen - r_rejected) as the probability that
  the chosen response wins. Confidence is max(p, 1 - p), a pair is correct when p > 0.5, and pairs
  go into `n_bins` equal-width bins over [0, 1], each (lo, hi] (Guo et al. 2017; with two classes
  only the upper half is ever used). ECE = sum over bins of (bin share) x |accuracy - confidence|.
- length_spearman: Spearman's rho between reward and response length in characters, over every
  distinct response (None when either is constant). Far from 0 means the RM tracks length.
- accuracy_chosen_shorter: accuracy on the pairs whose chosen response is the shorter one (None
  when there are none): a length-biased RM does badly here.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlhf_lab.monitor.progress import track
from rlhf_lab.rewards import as_scorer

METRICS = (
    "accuracy",
    "mean_margin",
    "kendall_tau",
    "ece",
    "length_spearman",
    "accuracy_chosen_shorter",
    "n_pairs",
)


@dataclass
class PairScores:
    """Scores of a preference set: per pair, and per distinct (prompt, response)."""

    prompts: list  # per pair: the pair's prompt (messages)
    chosen: list[str]  # per pair: the completion texts that were scored
    rejected: list[str]
    r_chosen: np.ndarray
    r_rejected: np.ndarray
    prompt_keys: list[str]  # per pair: which prompt it belongs to (for the ranking metric)
    chosen_ids: list[int]  # per pair: index of its responses in `responses`
    rejected_ids: list[int]
    responses: list[str]  # distinct responses, with their scores
    response_scores: np.ndarray


def evaluate_reward_model(rm: Callable, prefs: Any, *, batch_size: int = 16, n_bins: int = 10) -> dict:
    """Accuracy, mean margin, Kendall's tau, ECE and length bias of `rm` on preference pairs `prefs`.

    `prefs`: a Dataset in the lab's preference format, "starter" (the starter test split), or
    anything `load_preferences` reads. Keys: see `METRICS` and this module's docstring.
    """
    return pair_metrics(score_pairs(rm, prefs, batch_size=batch_size), n_bins=n_bins)


def as_preference_dataset(prefs: Any):
    """A Dataset with prompt/chosen/rejected columns from anything the loaders read."""
    from datasets import Dataset

    if isinstance(prefs, Dataset) and {"prompt", "chosen", "rejected"} <= set(prefs.column_names):
        return prefs
    if isinstance(prefs, str) and prefs == "starter":
        from rlhf_lab.starter import starter_data

        return starter_data("preference", "test")
    from rlhf_lab.data import load_preferences

    dataset = load_preferences(prefs)
    if not isinstance(dataset, Dataset):
        raise ValueError(f"{prefs!r} holds several splits ({', '.join(dataset)}); pass one, e.g. prefs['test']")
    return dataset


def split_response(prompt: Any, response: Any) -> tuple[list, str]:
    """(prompt messages, completion text) for one side of a pair, as a reward model scores it.

    A response of several messages (an implicit-prompt pair that diverges early) keeps all but its
    last message in the prompt, so the RM still sees the whole conversation.
    """
    from rlhf_lab.models.chat import to_messages

    messages = to_messages(prompt)
    if isinstance(response, str):
        return messages, response
    response = list(response)
    return messages + [dict(m) for m in response[:-1]], response[-1]["content"]


def score_pairs(rm: Callable, prefs: Any, *, batch_size: int = 16) -> PairScores:
    """Score every distinct (prompt, response) of `prefs` once with `rm`, and map scores back to pairs."""
    dataset = as_preference_dataset(prefs)
    if len(dataset) == 0:
        raise ValueError("no preference pairs to evaluate: the dataset is empty")
    index: dict[tuple[str, str], int] = {}
    prompts, texts = [], []
    sides: dict[str, list[int]] = {"chosen": [], "rejected": []}
    pair_prompts, pair_texts = [], {"chosen": [], "rejected": []}
    for row in dataset:
        pair_prompts.append(row["prompt"])
        for side in ("chosen", "rejected"):
            prompt, text = split_response(row["prompt"], row[side])
            key = (_key(prompt), text)
            if key not in index:
                index[key] = len(texts)
                prompts.append(prompt)
                texts.append(text)
            sides[side].append(index[key])
            pair_texts[side].append(text)
    scorer, chunk = as_scorer(rm, batch_size=batch_size), 4 * batch_size  # whole batches: the same scores
    parts = [
        scorer(prompts[i : i + chunk], texts[i : i + chunk]) for i in track(range(0, len(texts), chunk), "scoring")
    ]
    scores = np.concatenate([np.asarray(part, dtype=np.float64) for part in parts]) if parts else np.zeros(0)
    return PairScores(
        prompts=pair_prompts,
        chosen=pair_texts["chosen"],
        rejected=pair_texts["rejected"],
        r_chosen=scores[sides["chosen"]],
        r_rejected=scores[sides["rejected"]],
        prompt_keys=[_key(p) for p in pair_prompts],
        chosen_ids=sides["chosen"],
        rejected_ids=sides["rejected"],
        responses=texts,
        response_scores=scores,
    )


def pair_metrics(scores: PairScores, *, n_bins: int = 10) -> dict:
    """The figures of `evaluate_reward_model` from already computed scores."""
    margins = scores.r_chosen - scores.r_rejected
    correct = margins > 0
    shorter = np.array([len(c) < len(r) for c, r in zip(scores.chosen, scores.rejected)])
    lengths = np.array([len(text) for text in scores.responses], dtype=float)
    return {
        "accuracy": float(correct.mean()),
        "mean_margin": float(margins.mean()),
        "kendall_tau": kendall_tau(scores),
        "ece": expected_calibration_error(margins, n_bins=n_bins),
        "length_spearman": _spearman(scores.response_scores, lengths),
        "accuracy_chosen_shorter": float(correct[shorter].mean()) if shorter.any() else None,
        "n_pairs": len(margins),
    }


def pair_samples(scores: PairScores, n: int, members: np.ndarray | None = None) -> list[dict]:
    """The first `n` scored pairs as samples.jsonl rows; `members` (members, pairs, 2) adds each
    member's (r_chosen, r_rejected), to see where an ensemble disagrees."""
    rows = []
    for i in range(min(n, len(scores.chosen))):
        prompt = scores.prompts[i]
        rows.append(
            {
                "prompt": prompt if isinstance(prompt, str) else prompt[-1]["content"],
                "chosen": scores.chosen[i],
                "rejected": scores.rejected[i],
                "r_chosen": float(scores.r_chosen[i]),
                "r_rejected": float(scores.r_rejected[i]),
            }
        )
        if members is not None:
            rows[-1]["members"] = members[:, i].tolist()
    return rows


def kendall_tau(scores: PairScores) -> float | None:
    """Mean Kendall's tau-b, over prompts with more than 2 responses, of RM score vs human win count."""
    from scipy.stats import kendalltau

    wins: dict[str, dict[int, int]] = defaultdict(dict)
    for key, chosen, rejected in zip(scores.prompt_keys, scores.chosen_ids, scores.rejected_ids):
        group = wins[key]
        group[chosen] = group.get(chosen, 0) + 1
        group.setdefault(rejected, 0)
    taus = []
    for group in wins.values():
        if len(group) <= 2 or len(set(group.values())) == 1:
            continue  # a pair alone is what accuracy measures; equal win counts give no ordering
        ids = list(group)
        tau = kendalltau([group[i] for i in ids], scores.response_scores[ids]).statistic
        taus.append(0.0 if np.isnan(tau) else float(tau))  # nan: the RM scored them all the same
    return float(np.mean(taus)) if taus else None


def expected_calibration_error(margins: Sequence[float] | np.ndarray, *, n_bins: int = 10) -> float:
    """ECE of p = sigmoid(margin) as P(chosen wins); bins (lo, hi] of width 1/n_bins over [0, 1]."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    from scipy.special import expit  # a sigmoid that does not overflow on large margins

    p = expit(np.asarray(margins, dtype=float))
    confidence = np.maximum(p, 1.0 - p)
    correct = (p > 0.5).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        members = bins == b
        ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def _spearman(values: np.ndarray, other: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(values) < 2 or np.ptp(values) == 0 or np.ptp(other) == 0:
        return None  # correlation is undefined when either side is constant
    return float(spearmanr(values, other).statistic)


def _key(prompt: Any) -> str:
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)
