"""The reward scores a labelling session shows on request (hidden until asked: no anchoring): the
responses' own ``metadata["reward"]`` (a PairGenerator with a reward model), else a reward model's."""

from __future__ import annotations

from typing import Any

from rlhf_lab.rewards import as_scorer


class ShownScores:
    """``shown(item)``: one float per response of a store Item, or None when the item carries no
    scores and there is no ``reward_model`` (anything ``as_scorer`` takes) to compute them."""

    def __init__(self, reward_model: Any = None) -> None:
        self.reward_model, self._scorer = reward_model, None

    def __call__(self, item: Any) -> list[float] | None:
        rewards = [r.metadata.get("reward") for r in item.responses]
        if any(not isinstance(r, (int, float)) for r in rewards):
            if self.reward_model is None:
                return None
            if self._scorer is None:  # adapted once: a reward run is loaded on the first toggle only
                self._scorer = as_scorer(self.reward_model)
            texts = [r.text for r in item.responses]
            rewards = self._scorer([item.prompt] * len(texts), texts)
        return [float(r) for r in rewards]
