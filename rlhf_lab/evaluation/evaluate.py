"""Evaluate policies on held-out prompts, with honest uncertainty.

    lab.evaluate(ppo, task, reward=rm, ref=sft, baseline=sft)      # one dict of figures
    lab.compare([sft, ppo, dpo], task, reward=rm)                   # a DataFrame + side-by-side panel

`prompts`: a list of strings or conversations, a prompts Dataset, or a Task (its test split; its
gold function is used unless `gold=` says otherwise). Every policy samples one completion per
prompt with the same seed (pure sampling at temperature 1 by default), and the figures are:

- reward_* / gold_*: mean score from `reward` (anything `rewards.as_scorer` takes) / the gold function;
- kl_k1, kl_k3 (+ _se): sequence-level KL(policy || ref), a Monte-Carlo mean over the policy's
  samples of the summed per-token k1 or k3 estimator (`stages.ppo.kl`), with standard errors. Both
  are unbiased only for samples from the policy itself, so when `temperature`/`top_p`/`top_k` are
  not pure sampling, the KL uses a second, purely sampled set. k3 leans on E_p[ref/p] = 1: where
  the policy has all but dropped tokens the reference still likes, samples miss that mass and k3
  reads low, so a k3 well below k1 is a warning sign;
- ppl_ref_samples: perplexity of the reference's (purely sampled) completions under the policy;
  best-of-n (`lab.best_of_n`) reports its closed-form KL to its base instead, and no perplexity;
- length_* (tokens before EOS), distinct_1, distinct_2 (stats.distinct_n);
- win_rate_reward / win_rate_gold against `baseline` on the same prompts (ties count 0.5), and
  gold_diff (mean gold - baseline gold over the same prompts, paired).

`*_lo`/`*_hi` are seeded percentile-bootstrap intervals at `level` (see `stats`). Completions are
always shown as escaped text, never as HTML.
"""

from __future__ import annotations

import html
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_lab.evaluation import stats
from rlhf_lab.evaluation.best_of_n import BestOfN
from rlhf_lab.evaluation.sampling import PURE, Samples, completion_logprobs, perplexity, sample, sequence_kl
from rlhf_lab.labeling.annotator import gold_scorer
from rlhf_lab.models import Policy, as_policy
from rlhf_lab.monitor.frontend import in_kernel
from rlhf_lab.rewards import as_scorer
from rlhf_lab.tasks import Task, prompt_text


def evaluate(
    policy: Any,
    prompts: Any,
    reward: Any = None,
    ref: Any = None,
    baseline: Any = None,
    gold: Any = None,
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    batch_size: int = 16,
    level: float = stats.LEVEL,
    n_boot: int = stats.N_BOOT,
) -> dict[str, Any]:
    """Figures for `policy` on `prompts` (see the module docstring); `samples` holds each prompt's
    completion and scores."""
    prompts, gold = _prompts_and_gold(prompts, gold)
    ev = _Evaluation(
        prompts,
        reward,
        gold,
        dict(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            batch_size=batch_size,
        ),
        dict(level=level, n_boot=n_boot, seed=seed),
    )
    return ev.figures(as_policy(policy), ref=ref, baseline=baseline)


def compare(
    models: Sequence[Any],
    prompts: Any,
    reward: Any = None,
    ref: Any = None,
    gold: Any = None,
    *,
    baseline: Any = 0,
    show: bool | None = None,
    panel_rows: int = 8,
    **options: Any,
):
    """One row of `evaluate` figures per model (RunResults or policies, labelled by name), win rates
    against `baseline` (an index into `models`, a policy, or None). Shows a side-by-side panel of
    completions in a notebook (`show=None`) or when `show=True`; it is also in `df.attrs["panel_html"]`."""
    import pandas as pd

    if isinstance(models, (str, bytes)) or not isinstance(models, Sequence) or not models:
        raise TypeError("compare needs a list of runs or policies, e.g. lab.compare([sft, ppo], prompts)")
    unusable = [type(m).__name__ for m in models if not (isinstance(m, (str, Path)) or hasattr(m, "tokenizer"))]
    if unusable:  # checked before any sampling, without loading an offloaded run back
        raise TypeError(f"compare got {', '.join(unusable)}; pass runs, policies, paths or model names")
    names = _unique([_name(m) for m in models])
    prompts, gold = _prompts_and_gold(prompts, gold)
    level, n_boot = options.pop("level", stats.LEVEL), options.pop("n_boot", stats.N_BOOT)
    sampling = {"max_new_tokens": 64, **options}
    unknown = set(sampling) - {"max_new_tokens", "temperature", "top_p", "top_k", "seed", "batch_size"}
    if unknown:
        raise TypeError(f"compare got unknown options {sorted(unknown)}; it takes evaluate's keyword options")
    ev = _Evaluation(prompts, reward, gold, sampling, dict(level=level, n_boot=n_boot, seed=sampling.get("seed", 0)))
    if isinstance(baseline, int) and not isinstance(baseline, bool):
        baseline = models[baseline]
    # The baseline and the reference stay in memory; the others come in one at a time (an offloaded run is
    # loaded back for its own row only).
    baseline, ref = (None if m is None else as_policy(m) for m in (baseline, ref))
    rows, columns = [], {}
    for name, model in zip(names, models):
        policy = as_policy(model)
        figures = ev.figures(policy, ref=ref, baseline=None if _same(baseline, policy) else baseline)
        columns[name] = figures.pop("samples")
        rows.append({"model": name, **figures})
    table = pd.DataFrame(rows).set_index("model")
    table.attrs["samples"] = columns
    table.attrs["panel_html"] = completions_html(prompts, columns, limit=panel_rows)
    if show or (show is None and in_kernel()):
        from IPython.display import HTML, display

        display(HTML(table.attrs["panel_html"]))
    return table


def completions_html(prompts: Sequence[Any], columns: dict[str, list[dict]], limit: int = 8) -> str:
    """A table: one row per prompt, one column per model, every text escaped (never rendered as HTML)."""
    cell = "border:1px solid #ccc;padding:4px;vertical-align:top;text-align:left"
    pre = "white-space:pre-wrap;margin:0;font-family:inherit"
    head = "".join(f'<th style="{cell}">{html.escape(str(n))}</th>' for n in ["prompt", *columns])
    body = []
    for i, prompt in enumerate(list(prompts)[:limit]):
        cells = [f'<td style="{cell}"><pre style="{pre}">{html.escape(prompt_text(prompt))}</pre></td>']
        for rows in columns.values():
            scores = " ".join(f"{k}={rows[i][k]:.3g}" for k in ("reward", "gold") if k in rows[i])
            cells.append(
                f'<td style="{cell}"><pre style="{pre}">{html.escape(rows[i]["completion"])}</pre>'
                f"<small>{html.escape(scores)}</small></td>"
            )
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table style="border-collapse:collapse"><tr>{head}</tr>{"".join(body)}</table>'


# ---------------------------------------------------------------------------------------------
# Helpers


class _Evaluation:
    """Shared settings and caches: baseline and reference samples are drawn once per evaluation."""

    def __init__(self, prompts: list, reward: Any, gold: Any, sampling: dict, bootstrap: dict) -> None:
        self.prompts, self.sampling, self.bootstrap = prompts, sampling, bootstrap
        self.reward = None if reward is None else as_scorer(reward, batch_size=sampling.get("batch_size", 16))
        self.gold = None if gold is None else gold_scorer(gold)
        self.pure = all(sampling.get(k, v) == v for k, v in PURE.items())
        # key -> (a weak reference to the policy's weights, its samples, their scores)
        self._cache: dict[tuple, tuple[Any, Samples, dict]] = {}

    def samples(self, policy: Policy, pure: bool = False) -> tuple[Samples, dict[str, np.ndarray]]:
        # a run or bundle is keyed by its weights; best-of-n shares its base's weights, so also by its n and reward
        key = (id(policy.model), getattr(policy, "n", 1), id(getattr(policy, "scorer", None)), pure)
        if key not in self._cache or self._cache[key][0]() is not policy.model:  # new, or freed and its id reused
            settings = {**self.sampling, **(PURE if pure else {})}
            drawn = sample(policy, self.prompts, **settings)
            scores = {}
            if self.reward is not None:
                scores["reward"] = self.reward(drawn.prompts, drawn.texts)
            if self.gold is not None:
                scores["gold"] = self.gold(drawn.prompts, drawn.texts)
            self._cache[key] = (weakref.ref(policy.model), drawn, scores)
        return self._cache[key][1:]

    def figures(self, policy: Policy, *, ref: Any = None, baseline: Any = None) -> dict[str, Any]:
        drawn, scores = self.samples(policy)
        out: dict[str, Any] = {"n_prompts": len(drawn.texts)}
        self._add(out, "length", stats.mean_ci(drawn.lengths, **self.bootstrap))
        out["distinct_1"], out["distinct_2"] = (
            stats.distinct_n(drawn.texts, 1),
            stats.distinct_n(drawn.texts, 2),
        )
        for name, values in scores.items():
            self._add(out, name, stats.mean_ci(values, **self.bootstrap))
        if ref is not None:
            ref = as_policy(ref)
            _check_same_vocabulary(policy, ref)
            if isinstance(policy, BestOfN):
                out.update(best_of_n_figures(policy, ref))
            else:
                kl_samples = drawn if self.pure else self.samples(policy, pure=True)[0]
                batch = self.sampling.get("batch_size", 16)
                logprobs, mask = completion_logprobs(policy, kl_samples, batch_size=batch)
                out.update(sequence_kl(logprobs, completion_logprobs(ref, kl_samples, batch_size=batch)[0], mask))
                ref_samples = self.samples(ref, pure=True)[0]
                out["ppl_ref_samples"] = perplexity(*completion_logprobs(policy, ref_samples, batch_size=batch))
        if baseline is not None:
            base_scores = self.samples(as_policy(baseline))[1]
            for name, values in scores.items():
                self._add(
                    out,
                    f"win_rate_{name}",
                    stats.win_rate(values, base_scores[name], **self.bootstrap),
                    "rate",
                )
            if "gold" in scores:
                self._add(
                    out,
                    "gold_diff",
                    stats.paired_difference(scores["gold"], base_scores["gold"], **self.bootstrap),
                )
        out["samples"] = [
            {"prompt": prompt_text(p), "completion": t, **{k: float(v[i]) for k, v in scores.items()}}
            for i, (p, t) in enumerate(zip(drawn.prompts, drawn.texts))
        ]
        return out

    @staticmethod
    def _add(out: dict, name: str, result: dict, key: str = "mean") -> None:
        out[name if key == "rate" else f"{name}_mean"] = result[key]
        out[f"{name}_lo"], out[f"{name}_hi"] = result["lo"], result["hi"]


def best_of_n_figures(policy: BestOfN, ref: Policy) -> dict[str, Any]:
    """Best-of-n's KL is known in closed form against its base; its text has no tractable log-probabilities."""
    if ref.model is not policy.base.model:
        raise ValueError(
            f"{policy.name}'s KL is known only against its base policy {policy.base.name}, not {ref.name}. "
            "Fix: pass ref= the base policy, or leave ref out."
        )
    return {"kl_k1": policy.kl, "kl_k1_se": 0.0, "kl_k3": policy.kl, "kl_k3_se": 0.0, "ppl_ref_samples": None}


def _same(baseline: Any, policy: Policy) -> bool:
    """Whether `policy` is the baseline itself (no win rate against itself). Best-of-n shares its base's
    weights but is another policy."""
    if baseline is None or baseline is policy:
        return True
    return baseline.model is policy.model and not isinstance(policy, BestOfN) and not isinstance(baseline, BestOfN)


def _prompts_and_gold(prompts: Any, gold: Any) -> tuple[list, Any]:
    if isinstance(prompts, str):  # a task name: its test prompts and gold
        from rlhf_lab.tasks import task

        prompts = task(prompts)
    if isinstance(prompts, Task):
        return prompts.prompts("test"), prompts if gold is None else gold
    if hasattr(prompts, "column_names"):  # a datasets.Dataset
        if "prompt" not in prompts.column_names:
            raise ValueError(
                f"the prompts dataset has columns {prompts.column_names} but no 'prompt'; "
                "load it with lab.load_prompts(...)"
            )
        prompts = prompts["prompt"]
    prompts = [p["prompt"] if isinstance(p, dict) and "prompt" in p else p for p in prompts]
    if not prompts:
        raise ValueError("no prompts to evaluate on; pass a non-empty list, a prompts Dataset or a Task")
    return prompts, gold


def _check_same_vocabulary(policy: Policy, ref: Policy) -> None:
    a, b = policy.tokenizer, ref.tokenizer
    if len(a) != len(b) or a.eos_token_id != b.eos_token_id or a.pad_token_id != b.pad_token_id:
        raise ValueError(
            f"{policy.name} and the reference {ref.name} use different tokenizers; KL and perplexity "
            "compare token probabilities, so the reference must share the policy's tokenizer"
        )


def _name(model: Any) -> str:
    name = getattr(model, "name", None)
    return name if isinstance(name, str) and name else type(model).__name__


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out
