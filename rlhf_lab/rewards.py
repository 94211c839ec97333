"""Anything that scores completions, adapted once: `as_scorer(reward)`.

    scorer = as_scorer(rm)                                   # a RewardModel, reward run or ensemble
    scorer = as_scorer((classifier, tokenizer))              # any sequence classifier with its tokenizer
    scorer = as_scorer(lambda prompts, completions: [...])   # a rule-based reward
    scorer = as_scorer(lab.task("arithmetic"))               # a gold task's programmatic reward
    scorer = as_scorer([rm, brevity], weights=[1.0, 0.5])    # several rewards, combined
    scorer(prompts, completions)              # float64 array, one validated score per completion
    scorer.components(prompts, completions)   # (combined, {member name: scores})
    scorer.member_scores(prompts, completions)    # (members, completions), e.g. for disagreement

What counts as a reward (`Scorer`): anything with `.score(prompts, completions)` (reward models,
reward runs, ensembles, gold tasks), a `(sequence-classification model, tokenizer)` pair (wrapped
in a `RewardModel`, so text is re-tokenized with the reward model's own tokenizer and any reward
model pairs with any policy), or a plain callable `f(prompts, completions) -> list[float]`. A list
of these is several members, combined by `combine`: a weighted sum with `weights`, else the mean or
mean - lam * population std over members (`aggregate="mean_minus_std"`, PPO-Max style). An ensemble
on its own is its members, combined by its own aggregate.

PPO, evaluation, pair generation, the labelling panel, the gold tasks' annotator and
`RewardEnsemble` all score through here, so every reward fails the same way: at the first call,
with its name, when it returns anything but one finite number per completion.

`RunningNorm` is the running reward normalization (`PPOConfig.normalize_rewards`, `reward_clip`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from rlhf_lab.models import RewardModel

AGGREGATES: tuple[str, ...] = ("mean", "mean_minus_std")

ScoreFn = Callable[[Sequence[Any], Sequence[str]], Any]


@runtime_checkable
class Scorer(Protocol):
    """What every reward is adapted to: one score per (prompt, completion)."""

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str]) -> Sequence[float]: ...


def combine(
    matrix: Any, *, weights: Sequence[float] | None = None, aggregate: str = "mean", lam: float = 1.0
) -> np.ndarray:
    """Combine a (members, n) score matrix into n scores: `weights @ matrix`, the column mean, or
    the column mean - lam * population std (ddof=0)."""
    scores = np.asarray(matrix, dtype=np.float64)
    if weights is not None:
        return np.asarray(weights, dtype=np.float64) @ scores
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    combined = scores.mean(axis=0)
    if aggregate == "mean_minus_std":
        combined = combined - lam * scores.std(axis=0)
    return combined


class RewardFunction:
    """A validated scorer over one or more members: `(prompts, completions) -> float64 array (B,)`.

    Built by `as_scorer`; `members` are `(name, fn)` pairs, `reward_models` the reward-model bundles
    among them (a separate PPO critic starts from the first).
    """

    def __init__(
        self,
        members: Sequence[tuple[str, ScoreFn]],
        *,
        weights: Sequence[float] | None = None,
        aggregate: str = "mean",
        lam: float = 1.0,
        reward_models: Sequence[RewardModel] = (),
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
                raise ValueError(f"got {len(weights)} weights for {len(members)} rewards; pass one weight per reward")
            if not all(math.isfinite(w) for w in weights):
                raise ValueError(f"weights must be finite numbers, got {weights}")
            if aggregate != "mean":
                # A weighted sum and an uncertainty penalty are two different combinations; picking
                # one silently would hide a config mistake.
                raise ValueError(f"weights give a weighted sum; they cannot be combined with aggregate={aggregate!r}")
        self.members = list(members)
        self.names = [name for name, _ in self.members]
        self.weights, self.aggregate, self.lam = weights, aggregate, float(lam)
        self.reward_models = list(reward_models)

    def member_scores(self, prompts: Sequence[Any], completions: Sequence[str]) -> np.ndarray:
        """Every member's validated scores, shape (members, completions)."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions; pass one per prompt")
        n = len(completions)
        prompts, completions = list(prompts), list(completions)
        return np.stack([_validated(name, fn(prompts, completions), n) for name, fn in self.members])

    def components(self, prompts: Sequence[Any], completions: Sequence[str]) -> tuple[np.ndarray, dict]:
        """The combined scores and each member's scores by name (for samples.jsonl)."""
        matrix = self.member_scores(prompts, completions)
        combined = combine(matrix, weights=self.weights, aggregate=self.aggregate, lam=self.lam)
        return combined, {name: row.tolist() for name, row in zip(self.names, matrix)}

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str]) -> np.ndarray:
        return self.components(prompts, completions)[0]

    score = __call__

    def __repr__(self) -> str:
        how = f"weights={self.weights}" if self.weights is not None else f"aggregate={self.aggregate!r}"
        if self.aggregate == "mean_minus_std":
            how += f", lam={self.lam}"
        return f"RewardFunction(members={self.names}, {how})"


def as_scorer(
    reward: Any,
    *,
    weights: Sequence[float] | None = None,
    aggregate: str | None = None,
    lam: float | None = None,
    batch_size: int = 16,
) -> RewardFunction:
    """Adapt `reward` (see the module docstring) to a validated `RewardFunction`.

    `batch_size` is how many texts a reward model scores per forward pass (callables ignore it).
    `aggregate` defaults to "mean", or to an ensemble's own when `reward` is one ensemble.
    """
    if isinstance(reward, RewardFunction) and weights is None and aggregate is None and lam is None:
        return reward
    if isinstance(reward, (str, Path)):
        raise TypeError(
            f"reward {str(reward)!r} is a name, not a reward; load it first (lab.load_run(path), "
            "lab.task(name)), or pass it where a stage config reads it"
        )
    if _is_ensemble(reward) and weights is None:
        aggregate = aggregate or reward.aggregate
        lam = reward.lam if lam is None else lam
        reward = list(reward.members)
    is_list = isinstance(reward, (list, tuple)) and not is_model_pair(reward)
    items = list(reward) if is_list else [reward]
    members = [_member(item, index, len(items), batch_size) for index, item in enumerate(items)]
    return RewardFunction(
        [(name, fn) for name, fn, _ in members],
        weights=weights,
        aggregate=aggregate or "mean",
        lam=1.0 if lam is None else lam,
        reward_models=[bundle for _, _, bundle in members if bundle is not None],
    )


@dataclass(repr=False)
class RewardEnsemble:
    """k reward runs scored together: `combine` of their normalized scores (mean, or mean - lam * std).

    std is the population std over members (ddof=0). Has the reporting fields of a RunResult
    (summary, metrics, output_dir, config) but no single `.model`: pass it where a reward is taken.
    """

    members: list
    aggregate: str = "mean"
    lam: float = 1.0
    summary: dict = field(default_factory=dict)
    metrics: Any = None
    output_dir: Path | None = None
    config: Any = None
    stage: str = "reward"

    def member_scores(self, prompts, completions, **kwargs) -> np.ndarray:
        """Scores with shape (members, completions)."""
        return np.array([m.score(prompts, completions, **kwargs) for m in self.members], dtype=float)

    def score(self, prompts, completions, **kwargs) -> list[float]:
        matrix = self.member_scores(prompts, completions, **kwargs)
        return combine(matrix, aggregate=self.aggregate, lam=self.lam).tolist()

    __call__ = score

    @property
    def name(self) -> str:
        return self.output_dir.name if self.output_dir else "ensemble"

    def __repr__(self) -> str:
        where = f", output_dir='{self.output_dir}'" if self.output_dir else ""
        return f"RewardEnsemble(members={len(self.members)}, aggregate={self.aggregate!r}{where})"


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


def is_model_pair(obj: Any) -> bool:
    """A `(torch model, tokenizer)` pair, not a list of two rewards (both are callables)."""
    if not (isinstance(obj, (list, tuple)) and len(obj) == 2):
        return False
    model, tokenizer = obj
    return (
        isinstance(model, torch.nn.Module) and hasattr(tokenizer, "pad_token_id") and hasattr(tokenizer, "batch_decode")
    )


# ---------------------------------------------------------------------------------------------
# Helpers


def _is_ensemble(obj: Any) -> bool:
    return isinstance(obj, RewardEnsemble)


def _member(item: Any, index: int, total: int, batch_size: int) -> tuple[str, ScoreFn, RewardModel | None]:
    """`(name, fn, reward-model bundle or None)` for one reward; the name says which reward an error is about."""
    prefix = f"reward[{index}]" if total > 1 else "reward"
    if is_model_pair(item):
        model, tokenizer = item
        item = RewardModel(model=model, tokenizer=tokenizer, name=_name_of(model))
    # A bare HF model is no reward: LlamaForSequenceClassification even has a `.score` (its head layer).
    if isinstance(item, torch.nn.Module):
        raise TypeError(
            f"{prefix}: got a bare {type(item).__name__}; pass it with its tokenizer as (model, tokenizer), "
            f"or as a RewardModel, so completions can be re-tokenized for it"
        )
    score = getattr(item, "score", None)
    if callable(score) or callable(item):
        fn = _with_batch_size(score if callable(score) else item, batch_size)
    else:
        raise TypeError(
            f"{prefix}: expected a RewardModel, a reward run or ensemble, a gold task, a (model, tokenizer) pair "
            f"or a callable f(prompts, completions) -> list[float], got {type(item).__name__}"
        )
    bundle = item if isinstance(item, RewardModel) else getattr(item, "bundle", None)
    return f"{prefix} ({_name_of(item)})", fn, bundle if isinstance(bundle, RewardModel) else None


def _with_batch_size(score: Callable, batch_size: int) -> ScoreFn:
    """Pass `batch_size` to a scorer that takes one (RewardModel, RewardRun, RewardEnsemble, a function)."""
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
        raise ValueError(f"{name} returned {_preview(scores)}, which is not a list of numbers ({err})") from err
    if array.ndim == 2 and array.shape[1] == 1:  # (B, 1) logits-shaped output: one score per row
        array = array[:, 0]
    if array.ndim != 1 or array.shape[0] != n:
        raise ValueError(
            f"{name} returned {array.shape[0] if array.ndim else 'a scalar'} scores "
            f"(shape {tuple(array.shape)}) for {n} completions; it must return one finite number per completion"
        )
    bad = ~np.isfinite(array)
    if bad.any():
        where = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(
            f"{name} returned non-finite scores at positions {where} (values {array[where].tolist()}); "
            f"it must return one finite number per completion"
        )
    return array


def _preview(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
