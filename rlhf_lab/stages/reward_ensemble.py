"""Reward ensembles: k reward models trained with seeds seed..seed+k-1, scored together.

    ens = lab.train_reward_model("tiny", prefs, lab.RewardConfig(ensemble=3, ensemble_aggregate="mean_minus_std"))

Each member is a complete reward run in `member-<i>/` that `load_run` reloads on its own. The top
folder holds config.yaml, summary.json, samples.jsonl (each member's scores beside the combined
ones), metrics.jsonl (every member's rows, with a `member` column) and, written last, run.json of
kind "ensemble" naming the members, the aggregate and lambda; `load_run` (or `load_reward_run`)
reloads the ensemble from it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from rlhf_lab.rewards import RewardEnsemble, combine
from rlhf_lab.runs import RewardRun, Run, member_metrics
from rlhf_lab.stages.reward_eval import pair_metrics, pair_samples, score_pairs

if TYPE_CHECKING:
    from rlhf_lab.stages.reward import RewardConfig


def train_ensemble(
    config: RewardConfig,
    train_member: Callable[[RewardConfig], RewardRun],
    held_out: Any,
    held_out_from: str | None,
) -> RewardEnsemble:
    """Train `config.ensemble` members with `train_member(member_config)`, then write the top folder."""
    run = Run("reward", config)  # the top folder; each member opens its own run in member-<i>/
    members = []
    for i in range(config.ensemble):
        member_config = copy.deepcopy(config)
        member_config.output_dir = str(run.path / f"member-{i}")
        member_config.run_name = f"{config.run_name}-member-{i}"
        member_config.seed, member_config.ensemble = config.seed + i, 1
        members.append(train_member(member_config))
    ensemble = RewardEnsemble(
        members=members,
        aggregate=config.ensemble_aggregate,
        lam=config.ensemble_lambda,
        metrics=member_metrics(members),
        output_dir=run.path,
        config=config,
    )
    scores, per_member = None, None
    if held_out is not None:
        # Score each member once and aggregate exactly as RewardEnsemble.score does, per distinct response.
        each = [score_pairs(m, held_out, batch_size=config.per_device_eval_batch_size) for m in members]
        combined = np.array(
            combine(np.stack([s.response_scores for s in each]), aggregate=ensemble.aggregate, lam=ensemble.lam)
        )
        c, r = each[0].chosen_ids, each[0].rejected_ids
        scores = replace(each[0], response_scores=combined, r_chosen=combined[c], r_rejected=combined[r])
        per_member = np.stack([np.stack([s.r_chosen, s.r_rejected], axis=1) for s in each])
    ensemble.summary = {
        "stage": "reward",
        "ensemble": len(members),
        "aggregate": config.ensemble_aggregate,
        "lambda": config.ensemble_lambda,
        "members": [m.output_dir.name for m in members],
        "wall_s": round(time.perf_counter() - run.started, 2),
        "train_pairs": members[0].summary["train_pairs"],
        "held_out": held_out_from,
        "eval": None if scores is None else pair_metrics(scores),
        "member_eval": [m.summary["eval"] for m in members],
    }
    samples = [] if scores is None else pair_samples(scores, config.num_samples, per_member)
    run.finish_ensemble(ensemble, samples=samples)
    return ensemble
