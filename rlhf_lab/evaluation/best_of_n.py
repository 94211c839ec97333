"""Best-of-n sampling: the simplest use of a reward, and the baseline of over-optimization studies.

    bon = lab.best_of_n(policy, rm, n=8)          # a policy: generate, chat, evaluate, compare, PairGenerator
    bon.generate(["Name a fruit."], temperature=1.0)
    bon.kl                                         # log n - (n - 1) / n, its KL to the base policy

For each prompt it draws n samples of the base policy and keeps the one the reward scores highest
(the first on ties). Its KL to the base is known in closed form, log n - (n - 1)/n (Stiennon et al.
2020, and exact for a reward without ties; Beirami et al. 2024 show it bounds the true KL), so no
log-probabilities of the selected text are needed: `lab.evaluate` reports it as the KL when the
reference is the base policy. n = 1 is the base policy itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlhf_lab.evaluation.sampling import Samples, sample
from rlhf_lab.models import Policy, as_policy
from rlhf_lab.models.bundles import is_conversation
from rlhf_lab.rewards import as_scorer


def best_of_n_kl(n: int) -> float:
    """log n - (n - 1) / n nats: the KL from best-of-n to its base policy."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a whole number >= 1, got {n!r}")
    return math.log(n) - (n - 1) / n


class BestOfN(Policy):
    """A policy that samples its base n times per prompt and answers with the best-scored sample."""

    def __init__(self, base: Any, reward: Any, n: int, *, name: str | None = None, batch_size: int = 16) -> None:
        self.kl = best_of_n_kl(n)
        base = as_policy(base)
        super().__init__(model=base.model, tokenizer=base.tokenizer, name=name or f"{base.name}-best-of-{n}")
        self.base, self.n, self.scorer = base, n, as_scorer(reward, batch_size=batch_size)

    def sample_completions(self, prompts: Sequence[Any], *, seed: int = 0, batch_size: int = 16, **options) -> Samples:
        """n samples per prompt from the base (with `seed`), the best one kept: the `Samples` evaluate reads."""
        prompts = list(prompts)
        if options.get("temperature", 1.0) == 0 and self.n > 1:
            raise ValueError("best-of-n needs sampling: n greedy answers are all the same. Fix: temperature > 0")
        drawn = sample(
            self.base, [p for p in prompts for _ in range(self.n)], seed=seed, batch_size=batch_size, **options
        )
        scores = self.scorer(drawn.prompts, drawn.texts).reshape(len(prompts), self.n)
        best = [i * self.n + int(np.argmax(row)) for i, row in enumerate(scores)]
        return Samples(
            prompts=prompts,
            texts=[drawn.texts[i] for i in best],
            prompt_ids=[drawn.prompt_ids[i] for i in best],
            completion_ids=[drawn.completion_ids[i] for i in best],
            lengths=[drawn.lengths[i] for i in best],
        )

    def generate(self, prompts: Any, *, temperature: float = 1.0, seed: int | None = None, **sampling) -> list[str]:
        """Like `Policy.generate`, but each answer is the best of n samples (sampling, temperature 1 by default)."""
        if isinstance(prompts, str) or is_conversation(prompts):
            prompts = [prompts]
        prompts = list(prompts)
        if temperature == 0 and self.n > 1:
            raise ValueError("best-of-n needs sampling: n greedy answers are all the same. Fix: temperature > 0")
        texts = self.base.generate(
            [p for p in prompts for _ in range(self.n)], temperature=temperature, seed=seed, **sampling
        )
        scores = self.scorer([p for p in prompts for _ in range(self.n)], texts).reshape(len(prompts), self.n)
        return [texts[i * self.n + int(np.argmax(row))] for i, row in enumerate(scores)]

    def __repr__(self) -> str:
        return f"BestOfN(base={self.base.name!r}, n={self.n}, kl={self.kl:.3f})"


def best_of_n(policy: Any, reward: Any, n: int, **kwargs: Any) -> BestOfN:
    """`policy` answering with the best of `n` of its samples under `reward` (anything `as_scorer` takes)."""
    return BestOfN(policy, reward, n, **kwargs)
