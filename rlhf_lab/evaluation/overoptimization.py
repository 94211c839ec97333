"""Reward-model over-optimization (Gao, Schulman & Hilton 2022): gold and proxy reward against √KL.

    table = lab.overoptimization(policy, "concise", labels=[50, 200, 800], updates=40, eval_every=5)
    table.attrs["figure"]                 # plotly: gold (solid) and proxy (dashed) vs √KL, per label count
    lab.plot_overoptimization(table)      # the same figure from a saved table

For each label count k: k pairs of the start policy's samples are labelled by the task's simulated
annotator (Bradley-Terry on gold; the k-label sets are nested, drawn once for the largest k), a
proxy reward model is trained on them (on the policy's trunk), and PPO optimizes that proxy. At the
start and every `eval_every` updates, the current policy samples one completion per held-out prompt
(the task's test split, pure sampling, the same seed each time) and we record:

- `gold`: the task's gold reward, the ground truth the proxy stands in for;
- `proxy`: the proxy reward model's score (in its own, normalized units);
- `kl`: sequence-level KL(policy || start policy), the Monte-Carlo mean of summed per-token k1 over
  those samples (`evaluate.sequence_kl`), and `sqrt_kl` = √max(kl, 0), Gao et al.'s x axis.

Best-of-n against the same proxy is the other curve of Gao et al.: for each n in `best_of`, each
held-out prompt gets the proxy's favourite of its first n samples from the start policy (one pool of
max(best_of) samples per prompt, shared by every n and every proxy), at the closed-form KL
log n - (n - 1)/n. Those rows have `method` "best-of-n" and `update` = n.

With enough optimization, the proxy keeps rising while gold rises and then falls, and falls sooner
for proxies trained on fewer labels. The table (one row per label count and measurement) is written
to `output_dir/overoptimization.csv`, the figure (self-contained, offline) to `overoptimization.html`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback

from rlhf_lab.config import default_run_dir
from rlhf_lab.evaluation import stats
from rlhf_lab.evaluation.best_of_n import best_of_n_kl
from rlhf_lab.evaluation.sampling import completion_logprobs, sample, sequence_kl
from rlhf_lab.labeling.annotator import SimulatedAnnotator, preference_dataset
from rlhf_lab.models import Policy, as_policy
from rlhf_lab.rewards import as_scorer
from rlhf_lab.tasks import task as get_task

COLUMNS = ["method", "labels", "update", "kl", "kl_se", "sqrt_kl", "proxy", "proxy_se", "gold", "gold_se", "length"]


class _Probe(TrainerCallback):
    """Measures the policy being trained at the start and every `every` updates (and the last one)."""

    def __init__(self, measure, every: int) -> None:
        self.measure, self.every, self.rows = measure, every, []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.rows.append(self.measure(model.policy, state.global_step))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == args.total_updates:
            self.rows.append(self.measure(model.policy, state.global_step))


def overoptimization(
    policy: Any,
    task: Any,
    *,
    labels: int | Sequence[int] = 200,
    updates: int = 20,
    eval_every: int = 5,
    eval_prompts: int | None = 32,
    temperature: float = 0.1,
    annotator: SimulatedAnnotator | None = None,
    config: Any = None,
    reward_config: Any = None,
    max_new_tokens: int = 32,
    output_dir: str | Path | None = None,
    seed: int = 0,
    best_of: Sequence[int] | None = (1, 2, 4, 8, 16),
    show: bool | None = None,
):
    """Run the over-optimization experiment; returns a DataFrame (`COLUMNS`), figure in `.attrs["figure"]`.

    `policy`: the start policy (also the KL reference and the proxy's backbone). `task`: a Task or
    task name. `labels`: one label count or several. `annotator`: default
    `SimulatedAnnotator(task, temperature, seed=seed)`. `config`: a `PPOConfig` to start from
    (total_updates, output_dir and max_new_tokens are set here); `reward_config`: a `RewardConfig`.
    `best_of`: the n of the best-of-n curve (None or () skips it).
    """
    import pandas as pd

    from rlhf_lab.stages.ppo import PPOConfig, ppo
    from rlhf_lab.stages.reward import RewardConfig, train_reward_model

    counts = sorted({int(k) for k in ([labels] if isinstance(labels, (int, np.integer)) else labels)})
    if not counts or counts[0] < 1:
        raise ValueError(f"labels must be one positive count or a list of them, got {labels!r}")
    if updates < 1 or eval_every < 1:
        raise ValueError(f"updates and eval_every must be >= 1, got {updates} and {eval_every}")
    task = get_task(task)
    start = as_policy(policy)
    folder = Path(output_dir or default_run_dir("overopt"))
    folder.mkdir(parents=True, exist_ok=True)
    prompts = task.prompts("test")[:eval_prompts] if eval_prompts else task.prompts("test")
    annotator = annotator or SimulatedAnnotator(task, temperature, seed=seed)
    all_pairs = preference_dataset(
        start, task.prompts("train"), annotator, n_pairs=counts[-1], max_new_tokens=max_new_tokens, seed=seed
    )
    all_pairs.to_json(folder / "labels.jsonl")
    ns = sorted({int(n) for n in best_of or ()})
    pool = None
    if ns:  # n samples per prompt, drawn once: prompt i's samples are pool.texts[i * max_n : (i + 1) * max_n]
        pool = sample(start, [p for p in prompts for _ in range(ns[-1])], max_new_tokens=max_new_tokens, seed=seed)

    rows = []
    for k in counts:
        rm_config = copy.deepcopy(reward_config) if reward_config is not None else RewardConfig(monitor=False)
        rm_config.output_dir, rm_config.seed = str(folder / f"labels-{k}" / "reward"), seed
        proxy = train_reward_model(start, all_pairs.select(range(k)), rm_config)
        proxy_fn = as_scorer(proxy)

        def measure(model, update: int, k: int = k, proxy_fn=proxy_fn) -> dict:
            current = Policy(model=model, tokenizer=start.tokenizer, name=f"ppo-{k}-labels")
            drawn = sample(current, prompts, max_new_tokens=max_new_tokens, seed=seed)
            logprobs, mask = completion_logprobs(current, drawn)
            kl = sequence_kl(logprobs, completion_logprobs(start, drawn)[0], mask)
            gold, gold_se = stats.mean_se(task(drawn.prompts, drawn.texts))
            score, score_se = stats.mean_se(proxy_fn(drawn.prompts, drawn.texts))
            return {
                "method": "ppo",
                "labels": k,
                "update": update,
                "kl": kl["kl_k1"],
                "kl_se": kl["kl_k1_se"],
                "sqrt_kl": math.sqrt(max(kl["kl_k1"], 0.0)),
                "proxy": score,
                "proxy_se": score_se,
                "gold": gold,
                "gold_se": gold_se,
                "length": float(np.mean(drawn.lengths)),
            }

        probe = _Probe(measure, eval_every)
        run_config = copy.deepcopy(config) if config is not None else PPOConfig(monitor=False, seed=seed)
        run_config.total_updates, run_config.max_new_tokens = updates, max_new_tokens
        run_config.output_dir = str(folder / f"labels-{k}" / "ppo")
        ppo(start, proxy, task.prompts("train"), run_config, callbacks=[probe])
        rows += probe.rows
        if pool is not None:
            rows += best_of_n_rows(task, proxy_fn, pool, ns, k)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.to_csv(folder / "overoptimization.csv", index=False)
    figure = plot_overoptimization(table)
    figure.write_html(folder / "overoptimization.html", include_plotlyjs=True)  # offline: plotly.js inside
    table.attrs["figure"], table.attrs["output_dir"] = figure, str(folder)
    if show:
        from rlhf_lab.monitor.static import show_figure

        show_figure(figure)
    return table


def best_of_n_rows(task: Any, proxy_fn: Any, pool: Any, ns: list[int], k: int) -> list[dict]:
    """Gold and proxy of the proxy's favourite among each prompt's first n pooled samples, for each n."""
    width = ns[-1]
    proxy = np.asarray(proxy_fn(pool.prompts, pool.texts)).reshape(-1, width)
    gold = np.asarray(task(pool.prompts, pool.texts), dtype=float).reshape(-1, width)
    lengths = np.asarray(pool.lengths, dtype=float).reshape(-1, width)
    rows = []
    for n in ns:
        pick = proxy[:, :n].argmax(axis=1)  # the first best on ties
        chosen = np.arange(len(pick))
        (g, g_se), (p, p_se) = stats.mean_se(gold[chosen, pick]), stats.mean_se(proxy[chosen, pick])
        kl = best_of_n_kl(n)
        rows.append({"method": "best-of-n", "labels": k, "update": n, "kl": kl, "kl_se": 0.0,
                     "sqrt_kl": math.sqrt(kl), "proxy": p, "proxy_se": p_se, "gold": g, "gold_se": g_se,
                     "length": float(lengths[chosen, pick].mean())})  # fmt: skip
    return rows


def plot_overoptimization(table: Any):
    """Gold (left axis) and proxy reward (right axis) against √KL, one colour per label count: PPO solid and
    dashed, best-of-n dotted with diamonds."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    missing = {"labels", "sqrt_kl", "gold", "proxy"} - set(table.columns)
    if missing:
        raise ValueError(f"the table lacks columns {sorted(missing)}; pass lab.overoptimization's result")
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    table = table if "method" in table.columns else table.assign(method="ppo")  # a table saved before best-of-n
    counts = sorted(table["labels"].unique())
    groups = table.sort_values(["labels", "update"]).groupby(["method", "labels"], sort=False)
    for (method, k), part in sorted(groups, key=lambda g: (g[0][0] != "ppo", g[0][1])):  # PPO first, then best-of-n
        color = qualitative.Plotly[counts.index(k) % len(qualitative.Plotly)]
        ppo = method == "ppo"
        text = [f"update {u}" if ppo else f"n = {u}" for u in part["update"]]
        label = f"{k} labels" + ("" if ppo else ", best-of-n")
        for column, dash, axis in (
            ("gold", None if ppo else "dot", False),
            ("proxy", "dash" if ppo else "dashdot", True),
        ):
            figure.add_trace(
                go.Scatter(
                    x=part["sqrt_kl"],
                    y=part[column],
                    name=f"{column}, {label}",
                    text=text,
                    mode="lines+markers",
                    marker=dict(symbol="circle" if ppo else "diamond"),
                    line=dict(color=color, dash=dash),
                ),
                secondary_y=axis,
            )
    figure.update_layout(title="Reward-model over-optimization (Gao et al. 2022)", template="plotly_white")
    figure.update_xaxes(title_text="√KL(policy ‖ start policy), nats^½")
    figure.update_yaxes(title_text="gold reward", secondary_y=False)
    figure.update_yaxes(title_text="proxy reward (RM units)", secondary_y=True)
    from rlhf_lab.monitor.static import LabFigure

    return LabFigure(figure)  # a cell's value: drawn in JupyterLab and in exported HTML alike
