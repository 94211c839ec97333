"""A person as PPO's reward: each rollout batch goes to the labelling panel as items (the completions of one
prompt side by side), and the choices or scores become the batch's rewards.

    human = lab.HumanReward("labels.sqlite", annotator="me")   # mode="pairwise" (default) or "rating"
    batch = human.rollout(session)      # each prompt sampled `group` times (default 2)
    human.panel(batch)                  # pairwise: 1 A better, 2 B better, 3 tie, 0 both bad
    session.step(human.score(batch))    # refused until every item of the batch is rated

`HumanReward(..., simulate=lab.SimulatedAnnotator(task))` rates through the same `LabelingSession` the panel
drives, so a batch runs headless. Every choice is a store event like any label (SQLite, WAL, synchronous):
a crash loses no acknowledged rating, and the ratings can later train a reward model (`store.to_preferences()`).

Rewards, pairwise: in an item of n completions, the one ranked k-th (0 = best) earns 0.5 - k/(n-1) (a pair:
+0.5 and -0.5); a tie gives each 0, "both bad" each -0.5. Identical completions are not asked about: each
earns 0. Rating mode (`mode="rating"`, keys 1-5: a score per completion in turn): a score s earns
(s - 3) / 4, from -0.5 (1) to +0.5 (5); scores are absolute, so they also compare across prompts. A
completion that repeats another of its prompt is shown once and shares its score; an item is asked only
when it holds two or more distinct, non-empty completions (else each earns 0).
A `HumanReward` is also a reward function, `human(prompts, completions)`, so `session.score(batch,
reward=human)` works the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from rlhf_lab.labeling.agreement import RATING_SCALE
from rlhf_lab.labeling.panel import LabelingPanel
from rlhf_lab.labeling.session import LabelingSession
from rlhf_lab.labeling.store import PreferenceStore
from rlhf_lab.stages.ppo.batch import BatchError, RolloutBatch

BOTH_BAD = -0.5


class HumanReward:
    """The labelling panel as a reward source for `lab.PPOSession`. `store`: a PreferenceStore or its file;
    `annotator`: whose ratings count; `mode`: "pairwise" (choose between completions) or "rating" (a score
    1-5 each); `group`: completions per prompt in `rollout` (2: pairs); `simulate`: a SimulatedAnnotator that
    rates each batch as it is asked (headless runs)."""

    __name__ = "human"

    def __init__(
        self, store: Any, annotator: str = "me", *, mode: str = "pairwise", group: int = 2, simulate: Any = None
    ) -> None:
        if not isinstance(group, int) or group < 2:
            raise ValueError(f"group must be an integer >= 2 (completions compared per prompt), got {group!r}")
        if mode not in ("pairwise", "rating"):
            raise ValueError(f"mode {mode!r} is unknown. Fix: mode='pairwise' (choices) or mode='rating' (scores 1-5)")
        self.store = store if isinstance(store, PreferenceStore) else PreferenceStore(os.fspath(store))
        self.annotator, self.mode, self.group, self.simulate = annotator, mode, group, simulate

    def rollout(self, session: Any) -> RolloutBatch:
        """The session's next batch with each of its prompts sampled `group` times, side by side: batch_size
        // group prompts of the update's own shuffle, so the batch keeps the session's size."""
        update = session.updates
        prompts = session.trainer.batch_prompts(update)[: max(1, session.config.batch_size // self.group)]
        return session.rollout([p for p in prompts for _ in range(self.group)])

    def items(self, prompts: list, completions: list[str]) -> list[tuple[list[int], dict | None]]:
        """(the completions' positions, the store item or None when it cannot be asked) for each run of
        consecutive completions of one prompt, `group` at a time (see the module docstring)."""
        out, start = [], 0
        while start < len(completions):
            end = start + 1
            while end < len(completions) and end - start < self.group and prompts[end] == prompts[start]:
                end += 1
            rows = list(range(start, end))
            texts = [completions[i] for i in rows]
            shown = list(dict.fromkeys(texts)) if self.mode == "rating" else texts
            asked = len(shown) > 1 and len(set(shown)) == len(shown) and all(t.strip() for t in shown)
            item = {"prompt": prompts[start], "responses": shown} if asked else None
            if item is not None and self.mode == "rating":
                item["metadata"] = {"rating": RATING_SCALE}
            out.append((rows, item))
            start = end
        return out

    def ask(self, batch: RolloutBatch) -> LabelingSession:
        """The batch's items in the store (idempotent: the same content is the same item) and a labelling
        session over them; with `simulate`, rated at once."""
        items = [item for _, item in self.items(batch.prompts, batch.completions) if item is not None]
        self.store.add_items(items)  # all of the batch, in one transaction, before anyone rates
        session = LabelingSession(self.store, items, self.annotator)
        if self.simulate is not None:
            self.simulate.label_session(session)
        return session

    def panel(self, batch: RolloutBatch, **kwargs: Any) -> LabelingPanel:
        """The keyboard panel over the batch's items (already-rated ones are not asked again)."""
        return LabelingPanel(session=self.ask(batch), **kwargs)

    def __call__(self, prompts: list, completions: list[str]) -> list[float]:
        """Rewards from the ratings in the store; a BatchError naming what is unrated when any is."""
        rewards: list[float] = [0.0] * len(completions)
        unrated = 0
        asked = [(rows, item) for rows, item in self.items(list(prompts), list(completions)) if item is not None]
        ids = self.store.add_items([item for _, item in asked])  # the same content is the same item: its id
        for (rows, item), item_id in zip(asked, ids):
            decision = self.store.decision(item_id, self.annotator)
            scores = item_rewards(decision, len(item["responses"]))
            if scores is None:
                unrated += 1
                continue
            for i in rows:
                rewards[i] = scores[item["responses"].index(completions[i])]
        if unrated:
            raise BatchError(
                f"{unrated} item(s) of this batch are not rated yet by {self.annotator!r}. Fix: rate them in "
                f"human.panel(batch) (or let simulate= rate them), then score the batch again."
            )
        return rewards

    def score(self, batch: RolloutBatch) -> RolloutBatch:
        """Ask for the batch's ratings (simulate rates them now), then set its rewards from them."""
        if self.simulate is not None:
            self.ask(batch)
        batch.rewards = self(batch.prompts, batch.completions)
        batch.parts = {"human": list(batch.rewards)}
        return batch

    def __repr__(self) -> str:
        who = f"simulated by {type(self.simulate).__name__}" if self.simulate is not None else "a person"
        mode = f"mode={self.mode!r}, group={self.group}"
        return f"HumanReward({str(self.store.path)!r}, annotator={self.annotator!r}, {mode}, {who})"


def item_rewards(decision: Any, n: int) -> list[float] | None:
    """Each completion's reward from one decision on an item of `n` (None: not rated, or skipped)."""
    if decision in (None, "skip"):
        return None
    if isinstance(decision, Mapping):  # ratings: 1 -> -0.5, 3 -> 0, 5 -> +0.5
        return [(s - (1 + RATING_SCALE) / 2) / (RATING_SCALE - 1) for s in decision["scores"]]
    if decision == "tie":
        return [0.0] * n
    if decision == "both_bad":
        return [BOTH_BAD] * n
    order = [0, 1] if decision == "A" else [1, 0] if decision == "B" else list(decision)
    scores = [0.0] * n
    for place, index in enumerate(order):
        scores[index] = 0.5 - place / (n - 1)
    return scores
