"""Rewards for PPO: one adapter from whatever scores text to `f(prompts, completions) -> (B,)` tensor.

`make_reward_fn(reward)` accepts

- a `RewardModel` bundle, a `RewardRun` or `RewardEnsemble` (anything with `.score(prompts, completions)`);
- a `(sequence-classification model, tokenizer)` pair, wrapped in `models.RewardModel` so text is
  re-tokenized with the reward model's own tokenizer (any reward model pairs with any policy);
- a plain callable `f(prompts, completions) -> list[float]` (rule-based rewards);
- a list of these: a weighted sum with `weights=`, else `aggregate="mean"` or `"mean_minus_std"`
  (mean - lam * population std over members, as `reward.aggregate_scores`, PPO-Max style).

The result validates every member's output (one finite number per completion) so a broken reward
fails at the first rollout with its name in the message, not as a NaN loss many updates later.

`RunningNorm` is the running reward normalization (`PPOConfig.normalize_rewards`, `reward_clip`):
Welford/Chan mean and variance over every score seen so far, with a state dict for exact resume.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ...models import RewardModel

AGGREGATES: tuple[str, ...] = ("mean", "mean_minus_std")  # the same names as the reward stage's ensembles

ScoreFn = Callable[[Sequence[Any], Sequence[str]], Any]


class RewardFunction:
    """Callable `(prompts, completions) -> torch.FloatTensor (B,)` combining one or more rewards.

    `members` are `(name, fn)` pairs, each `fn(prompts, completions)` returning B numbers.
    `components(...)` also returns every member's scores, for samples.jsonl.
    """

    def __init__(
        self,
        members: Sequence[tuple[str, ScoreFn]],
        *,
        weights: Sequence[float] | None = None,
        aggregate: str = "mean",
        lam: float = 1.0,
    ) -> None:
        if not members:
            raise ValueError("a reward function needs at least one reward; got an empty list")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
        if not math.isfinite(lam):
            raise ValueError(f"lam must be a finite number, got {lam!r}")
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != len(members):
                raise ValueError(
                    f"got {len(weights)} weights for {len(members)} rewards; pass one weight per reward"
                )
            if not all(math.isfinite(w) for w in weights):
                raise ValueError(f"weights must be finite numbers, got {weights}")
            if aggregate != "mean":
                # A weighted sum and an uncertainty penalty are two different combinations; picking
                # one silently would hide a config mistake.
                raise ValueError(
                    f"weights give a weighted sum; they cannot be combined with aggregate={aggregate!r}"
                )
        self.members = list(members)
        self.names = [name for name, _ in self.members]
        self.weights = weights
        self.aggregate = aggregate
        self.lam = float(lam)

    def components(
        self, prompts: Sequence[Any], completions: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, list[float]]]:
        """The combined score (B,) and each member's validated scores by name."""
        if len(prompts) != len(completions):
            raise ValueError(
                f"got {len(prompts)} prompts but {len(completions)} completions; pass one per prompt"
            )
        n = len(completions)
        matrix = np.stack([_validated(name, fn(prompts, completions), n) for name, fn in self.members])
        if self.weights is not None:
            combined = np.asarray(self.weights, dtype=np.float64) @ matrix
        else:
            combined = matrix.mean(axis=0)
            if self.aggregate == "mean_minus_std":
                combined = combined - self.lam * matrix.std(
                    axis=0
                )  # population std (ddof=0), as the reward stage
        parts = {name: row.tolist() for name, row in zip(self.names, matrix)}
        return torch.as_tensor(combined, dtype=torch.float32), parts

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str]) -> torch.Tensor:
        return self.components(prompts, completions)[0]

    def __repr__(self) -> str:
        how = f"weights={self.weights}" if self.weights is not None else f"aggregate={self.aggregate!r}"
        if self.aggregate == "mean_minus_std":
            how += f", lam={self.lam}"
        return f"RewardFunction(members={self.names}, {how})"


def make_reward_fn(
    reward: Any,
    *,
    weights: Sequence[float] | None = None,
    aggregate: str = "mean",
    lam: float = 1.0,
    batch_size: int = 16,
) -> RewardFunction:
    """Adapt `reward` (see the module docstring) to a validated `RewardFunction`.

    `batch_size` is how many texts a reward model scores per forward pass (ignored by callables).
    """
    if isinstance(reward, RewardFunction) and weights is None and aggregate == "mean":
        return reward
    # A list is several rewards, except a (model, tokenizer) pair, which is one.
    is_list = isinstance(reward, (list, tuple)) and not _is_model_pair(reward)
    items = list(reward) if is_list else [reward]
    members = [_member(item, index, len(items), batch_size) for index, item in enumerate(items)]
    return RewardFunction(members, weights=weights, aggregate=aggregate, lam=lam)


class RunningNorm:
    """Running reward normalization: (x - mean) / sqrt(var + eps) over every score seen so far.

    Batches are merged with Chan et al.'s parallel form of Welford's algorithm in float64, so the
    statistics equal numpy's mean and population std over the concatenated batches (up to
    rounding) and stay stable over long runs. `normalize` updates first, then normalizes, so the
    first batch is already centered. `clip` bounds the result to [-clip, clip].
    """

    def __init__(self, clip: float | None = None, eps: float = 1e-8) -> None:
        if clip is not None and not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be a number > 0 or None, got {clip!r}")
        self.clip = None if clip is None else float(clip)
        self.eps = float(eps)
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0  # sum of squared deviations from the mean

    @property
    def var(self) -> float:
        return self.m2 / self.count if self.count else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def update(self, values: torch.Tensor | Sequence[float]) -> None:
        x = _as_float64(values)
        if x.size == 0:
            return
        if not np.isfinite(x).all():
            raise ValueError(
                "RunningNorm.update got non-finite values; one would poison the statistics for the rest of the run"
            )
        n_b = int(x.size)
        mean_b = float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        total = self.count + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / total
        self.m2 += m2_b + delta * delta * self.count * n_b / total
        self.count = total

    def normalize(self, values: torch.Tensor, update: bool = True) -> torch.Tensor:
        """`values` normalized with the running statistics (updated with them first when `update`)."""
        values = torch.as_tensor(values)
        if update:
            self.update(values)
        out = (values.double() - self.mean) / math.sqrt(self.var + self.eps)
        if self.clip is not None:
            out = out.clamp(-self.clip, self.clip)
        return out.to(values.dtype if values.is_floating_point() else torch.float32)

    __call__ = normalize

    def state_dict(self) -> dict[str, float | int | None]:
        # Python floats are float64: saving and loading them is exact, so a resumed run matches.
        return {"count": self.count, "mean": self.mean, "m2": self.m2, "clip": self.clip, "eps": self.eps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])
        self.mean = float(state["mean"])
        self.m2 = float(state["m2"])
        self.clip = None if state.get("clip") is None else float(state["clip"])
        self.eps = float(state.get("eps", self.eps))

    def __repr__(self) -> str:
        return f"RunningNorm(count={self.count}, mean={self.mean:.4g}, std={self.std:.4g}, clip={self.clip})"


# ---------------------------------------------------------------------------------------------
# Helpers


def _member(item: Any, index: int, total: int, batch_size: int) -> tuple[str, ScoreFn]:
    """A `(name, fn)` pair for one reward; the name says which reward a later error is about."""
    prefix = f"reward[{index}]" if total > 1 else "reward"
    if _is_model_pair(item):
        model, tokenizer = item
        item = RewardModel(model=model, tokenizer=tokenizer, name=_name_of(model))
    # A bare HF model is no reward: LlamaForSequenceClassification even has a `.score` (its head layer).
    if isinstance(item, torch.nn.Module):
        raise TypeError(
            f"{prefix}: got a bare {type(item).__name__}; pass it with its tokenizer as (model, tokenizer), "
            f"or as a RewardModel, so completions can be re-tokenized for it"
        )
    score = getattr(item, "score", None)
    if callable(score):
        fn = _with_batch_size(score, batch_size)
    elif callable(item):
        fn = item
    else:
        raise TypeError(
            f"{prefix}: expected a RewardModel, a reward run or ensemble, a (model, tokenizer) pair or a "
            f"callable f(prompts, completions) -> list[float], got {type(item).__name__}"
        )
    return f"{prefix} ({_name_of(item)})", fn


def _is_model_pair(obj: Any) -> bool:
    """A `(torch model, tokenizer)` pair, not a list of two rewards (both are callables)."""
    if not (isinstance(obj, (list, tuple)) and len(obj) == 2):
        return False
    model, tokenizer = obj
    return (
        isinstance(model, torch.nn.Module)
        and hasattr(tokenizer, "pad_token_id")
        and hasattr(tokenizer, "batch_decode")
    )


def _with_batch_size(score: Callable, batch_size: int) -> ScoreFn:
    """Pass `batch_size` to `.score` when it takes one (RewardModel, RewardRun, RewardEnsemble)."""
    try:
        params = inspect.signature(score).parameters.values()
    except (TypeError, ValueError):
        params = []
    if any(p.name == "batch_size" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return lambda prompts, completions: score(prompts, completions, batch_size=batch_size)
    return score


def _name_of(obj: Any) -> str:
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return name
    name = getattr(obj, "__name__", None)  # functions
    return name if isinstance(name, str) else type(obj).__name__


def _as_float64(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).numpy().reshape(-1)
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _validated(name: str, scores: Any, n: int) -> np.ndarray:
    """`scores` as a float64 vector of length n, or a ValueError naming the reward and what it returned."""
    try:
        array = (
            scores.detach().to("cpu", torch.float64).numpy()
            if isinstance(scores, torch.Tensor)
            else np.asarray(scores, dtype=np.float64)
        )
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name} returned {_preview(scores)}, which is not a list of numbers ({err})"
        ) from err
    if array.ndim == 2 and array.shape[1] == 1:  # (B, 1) logits-shaped output: one score per row
        array = array[:, 0]
    if array.ndim != 1 or array.shape[0] != n:
        raise ValueError(
            f"{name} returned {array.shape[0] if array.ndim else 'a scalar'} scores "
            f"(shape {tuple(array.shape)}) for {n} completions; it must return one number per completion"
        )
    bad = ~np.isfinite(array)
    if bad.any():
        where = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(
            f"{name} returned non-finite scores at positions {where} (values {array[where].tolist()}); "
            f"every score must be a finite number"
        )
    return array


def _preview(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
