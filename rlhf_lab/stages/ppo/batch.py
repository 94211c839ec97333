"""One PPO update's batch, as `PPOSession.rollout()` returns it: what the policy sampled, what the policy, its
critic and the reference made of it (without gradients), and its rewards once scored or set by hand.

    batch = session.rollout()
    batch                      # in a notebook: a table of prompt, completion and reward (text as text)
    batch.rewards = [1.0, 0.0, ...]   # one number per completion, instead of session.score(batch)
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from rlhf_lab.stages.ppo.rollout import Rollout


class BatchError(ValueError):
    """A batch `PPOSession.step` cannot take: unrewarded, stale, or with rewards of the wrong shape."""


@dataclass
class RolloutBatch:
    """A rollout and the no-gradient passes over it. `version`: how many updates the policy had had when it
    sampled the batch (PPO's ratio needs that policy: `step` takes only a batch of the current one)."""

    rollout: Rollout
    old: dict[str, Tensor]  # logprobs, values, ref_logprobs: (B, R) per response token
    version: int
    seconds: float  # sampling, the no-gradient passes and scoring, for time/rollout_s
    rewards: list[float] | None = None  # raw scores, one per completion (normalized, clipped later, as any)
    parts: dict[str, list[float]] = field(default_factory=dict)  # each reward's scores, when a reward scored

    def __len__(self) -> int:
        return len(self.rollout)

    @property
    def prompts(self) -> list:
        return self.rollout.prompts

    @property
    def completions(self) -> list[str]:
        return self.rollout.completions

    @property
    def token_ids(self) -> tuple[Tensor, Tensor]:
        """(prompt ids, left-padded; completion ids, right-padded)."""
        return self.rollout.query_ids, self.rollout.response_ids

    @property
    def masks(self) -> tuple[Tensor, Tensor]:
        """(prompt mask, completion mask): 1 at real tokens."""
        return self.rollout.query_mask, self.rollout.response_mask

    @property
    def logprobs(self) -> Tensor:
        return self.old["logprobs"]

    @property
    def values(self) -> Tensor:
        return self.old["values"]

    def checked_rewards(self) -> list[float]:
        """The rewards, or a BatchError that says what is wrong with them and how to fix it."""
        if self.rewards is None:
            raise BatchError(
                f"this batch of {len(self)} completions has no rewards. Fix: session.score(batch) (the session's "
                f"reward, or score(batch, reward=...)), or set batch.rewards = [one number per completion]."
            )
        rewards = list(self.rewards)
        if len(rewards) != len(self):
            raise BatchError(
                f"batch.rewards has {len(rewards)} values for {len(self)} completions. Fix: give one number per "
                f"completion, in the order of batch.completions."
            )
        for i, value in enumerate(rewards):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise BatchError(f"batch.rewards[{i}] is {value!r}, not a finite number. Fix: set a number there.")
        return [float(v) for v in rewards]

    def table(self) -> Any:
        """A pandas DataFrame: prompt (its last message), completion, reward (None until scored), ended."""
        import pandas as pd

        return pd.DataFrame(
            {
                "prompt": [p if isinstance(p, str) else p[-1]["content"] for p in self.prompts],
                "completion": self.completions,
                "reward": self.rewards if self.rewards is not None else [None] * len(self),
                "ended": [bool(e) for e in self.rollout.ended],
            }
        )

    def _repr_html_(self) -> str:
        title = f"RolloutBatch: {len(self)} completions of the policy after {self.version} updates"
        state = "rewarded" if self.rewards is not None else "not scored yet"
        return f"<p>{html.escape(title)}, {state}</p>" + self.table().to_html(escape=True)  # text stays text

    def __repr__(self) -> str:
        state = "rewarded" if self.rewards is not None else "not scored"
        return f"RolloutBatch({len(self)} completions, version={self.version}, {state})"
