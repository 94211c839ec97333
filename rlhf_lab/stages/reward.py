"""Reward modelling: a Bradley-Terry scalar head trained on preference pairs with TRL's RewardTrainer.

    rm = lab.train_reward_model(sft, "starter", lab.RewardConfig())
    rm(["How do I boil an egg?"], ["Simmer it for nine minutes."])     # normalized scores
    ens = lab.train_reward_model("tiny", prefs, lab.RewardConfig(ensemble=3, ensemble_aggregate="mean_minus_std"))

After training, scores are normalized to mean 0 / std 1 over the distinct training responses
(offset and scale are saved in model/reward_normalization.json). The summary carries
`evaluate_reward_model` figures on a held-out set: `eval_data` if given, else the starter test split
when training on "starter", else the prompts whose SHA-1 falls in the first `eval_fraction` of the
hash range (all pairs of a prompt stay on one side, and the split moves with neither seed nor order).

An ensemble (`ensemble=k`) trains k models with seeds seed..seed+k-1, each a complete run in
`member-<i>/` that `load_run` reloads on its own (see `rlhf_lab.stages.reward_ensemble`). The top
folder holds config.yaml, summary.json, samples.jsonl, metrics.jsonl (with a `member` column) and,
written last, run.json of kind "ensemble"; `load_run` and `load_reward_run` reload it as a
`RewardEnsemble`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import trl
from datasets import Dataset

from rlhf_lab import defaults
from rlhf_lab.config import ConfigError, default_run_dir
from rlhf_lab.data import describe_source, load_preferences
from rlhf_lab.defaults import Derived, derived_rate
from rlhf_lab.models import RewardModel, load_reward_model, tiny_model
from rlhf_lab.models.lora import apply_lora
from rlhf_lab.rewards import AGGREGATES, RewardEnsemble
from rlhf_lab.runs import RewardRun, RunResult, is_run, load_run
from rlhf_lab.stages.common import check_not_empty, lora_spec, resolve_data, run_trainer, start_run
from rlhf_lab.stages.plan import announce
from rlhf_lab.stages.reference import release
from rlhf_lab.stages.reward_ensemble import train_ensemble
from rlhf_lab.stages.reward_eval import (
    expected_calibration_error,
    pair_metrics,
    pair_samples,
    score_pairs,
    split_response,
)
from rlhf_lab.stages.reward_trainer import ChunkedRewardTrainer
from rlhf_lab.stages.trl_config import TRLStageConfig


@dataclass
class RewardConfig(TRLStageConfig, trl.RewardConfig):
    """`trl.RewardConfig` (center_rewards_coefficient and every TRL option stay) with the lab's fields."""

    output_dir: str = field(default_factory=lambda: default_run_dir("reward"), metadata={"help": "Run folder."})
    learning_rate: float = field(
        default=derived_rate("reward"),
        metadata={"help": "AdamW learning rate; default: derived from the model's size."},
    )
    num_train_epochs: float = field(
        default=Derived(1.0),
        metadata={"help": "Passes over the data (max_steps wins); default: 1, more for under 1000 pairs."},
    )
    max_length: int | None = field(default=512, metadata={"help": "Pairs with a longer side are dropped."})
    num_samples: int = field(default=32, metadata={"help": "Held-out pairs written to samples.jsonl."})
    use_margin: bool = field(
        default=False,
        metadata={
            "help": "Bradley-Terry with a margin: loss = -log sigmoid(r_c - r_r - (score_chosen - score_rejected)). "
            "Needs score_chosen / score_rejected in the data."
        },
    )
    ensemble: int = field(
        default=1,
        metadata={
            "help": "Train k reward models, seeds seed..seed+k-1, each a run in member-<i>/; the top "
            "folder's run.json (kind 'ensemble') names them, and load_run reloads them as one."
        },
    )
    ensemble_aggregate: str = field(default="mean", metadata={"help": "'mean' or 'mean_minus_std' of scores."})
    ensemble_lambda: float = field(default=1.0, metadata={"help": "lambda in mean - lambda * std (ddof=0)."})
    normalize: bool = field(
        default=True,
        metadata={
            "help": "After training, one forward pass over the training responses sets offset/scale "
            "so scores have mean 0 and std 1 on them; False keeps raw scores."
        },
    )
    eval_fraction: float = field(
        default=0.1,
        metadata={"help": "Held out from non-starter training data when eval_data is unset (by prompt hash); 0: none."},
    )

    def __post_init__(self):
        # Checked before TRL's own set-up so a bad value fails fast, long before any model loads.
        if isinstance(self.ensemble, bool) or not isinstance(self.ensemble, int) or self.ensemble < 1:
            raise ConfigError(
                f"ensemble must be a whole number of reward models >= 1, got {self.ensemble!r}. "
                f"Fix: ensemble=1 for a single model, or e.g. ensemble=3."
            )
        if self.ensemble_aggregate not in AGGREGATES:
            raise ConfigError(
                f"ensemble_aggregate must be one of {', '.join(AGGREGATES)}, got "
                f"{self.ensemble_aggregate!r}. Fix: ensemble_aggregate='mean'."
            )
        if not math.isfinite(self.ensemble_lambda) or self.ensemble_lambda < 0:
            raise ConfigError(
                f"ensemble_lambda must be >= 0 (it penalizes disagreement), got {self.ensemble_lambda}. "
                f"Fix: e.g. ensemble_lambda=1.0."
            )
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(
                f"eval_fraction must be in [0, 1), got {self.eval_fraction}. Fix: e.g. 0.1, or 0 "
                f"to hold nothing out (or pass eval_data)."
            )
        if self.center_rewards_coefficient is not None and self.center_rewards_coefficient < 0:
            raise ConfigError(
                f"center_rewards_coefficient must be >= 0 or None, got "
                f"{self.center_rewards_coefficient}. Fix: e.g. 0.01 (Eisenstein et al.)."
            )
        super().__post_init__()


def train_reward_model(
    backbone: Any = None,
    prefs: Any = None,
    config: RewardConfig | None = None,
    *,
    lora: Any = None,
    callbacks: list | None = None,
    eval_data: Any = None,
) -> RewardRun | RewardEnsemble:
    """Train a Bradley-Terry reward model on preference pairs; returns a callable run (or ensemble).

    `backbone`: a reward or policy bundle, a run, a name or path, "tiny", or None (config.model;
    None there too: the embedded SmolLM2 with a fresh scalar head). A policy gets a new scalar head
    on a copy of its trunk; the caller's model is never changed. `prefs`: anything
    `load_preferences` reads, or "starter" (None: config.data).
    """
    config = config or RewardConfig()
    source = config.data if prefs is None else prefs
    train, held_out, held_out_from = _prepare_data(
        source, eval_data if eval_data is not None else config.eval_data, config
    )
    run_args = dict(lora=lora, callbacks=callbacks, data=describe_source(source))
    if config.ensemble == 1:
        return _train_one(backbone, train, held_out, held_out_from, config, **run_args)
    return train_ensemble(
        config,
        lambda member: _train_one(backbone, train, held_out, held_out_from, member, **run_args),
        held_out,
        held_out_from,
    )


# ---------------------------------------------------------------------------------------------
# Steps


def _prepare_data(source: Any, eval_source: Any, config: RewardConfig):
    """Training and held-out pairs, validated (and margins added) before any model loads."""
    train = _one_split(resolve_data(load_preferences, "preference", source), "training")
    check_not_empty(train, "preference data", source)
    held_out_from = "eval_data" if eval_source is not None else None
    if eval_source is None and isinstance(source, str) and source == "starter":
        eval_source, held_out_from = "starter", "starter test split"
    if eval_source is not None:
        held_out = _one_split(resolve_data(load_preferences, "preference", eval_source, "test"), "held-out")
        check_not_empty(held_out, "held-out preference data", eval_source)
    else:
        train, held_out = _carve(train, config.eval_fraction)
        if held_out is not None:
            held_out_from = f"eval_fraction={config.eval_fraction} of the training prompts (by SHA-1)"
    if config.use_margin:
        train = _with_margin(train, "training data")
        if held_out is not None and {"score_chosen", "score_rejected"} <= set(held_out.column_names):
            held_out = _with_margin(held_out, "eval data")
    return train, held_out, held_out_from


def _one_split(data, what: str):
    if data is not None and not isinstance(data, Dataset):  # a DatasetDict from a multi-split source
        raise ConfigError(
            f"the {what} preference data has several splits ({', '.join(data)}). "
            f"Fix: pass one split, e.g. prefs['train']."
        )
    return data


def _carve(dataset, fraction: float):
    """Split off the prompts whose SHA-1 lands in the first `fraction` of the hash range."""
    if fraction <= 0:
        return dataset, None
    keys = [json.dumps(p, sort_keys=True, ensure_ascii=False) for p in dataset["prompt"]]
    held = [int(hashlib.sha1(k.encode()).hexdigest(), 16) % 10_000 < fraction * 10_000 for k in keys]
    if all(held):
        raise ConfigError(
            f"eval_fraction={fraction} holds out every one of the {len(dataset)} training pairs. "
            f"Fix: lower eval_fraction, set it to 0, or pass eval_data."
        )
    if not any(held):
        return dataset, None
    return (
        dataset.select([i for i, h in enumerate(held) if not h]),
        dataset.select([i for i, h in enumerate(held) if h]),
    )


def _with_margin(dataset, what: str):
    if not {"score_chosen", "score_rejected"} <= set(dataset.column_names):
        raise ConfigError(
            f"use_margin=True needs score_chosen and score_rejected in the {what}, which has only "
            f"{', '.join(dataset.column_names)}. Fix: set use_margin=False, or use scored data "
            f"(UltraFeedback, rated responses, or pairs with score_chosen/score_rejected)."
        )
    margins = [c - r for c, r in zip(dataset["score_chosen"], dataset["score_rejected"])]
    if "margin" in dataset.column_names:
        dataset = dataset.remove_columns("margin")
    return dataset.add_column("margin", margins)


def _train_one(backbone, train, held_out, held_out_from, config: RewardConfig, *, lora, callbacks, data) -> RewardRun:
    run = start_run("reward", config, callbacks)
    rm = _reward_backbone(backbone, config)
    spec = lora_spec(lora, config)
    plan = announce(config, "reward", rm.model, train)
    resolved = defaults.resolve(config, "reward", rm.model, lora=bool(spec), examples=len(train))
    if spec:
        rm.model = apply_lora(rm.model, spec, task="reward", seed=config.seed)
    if not rm.tokenizer.chat_template:  # an encoder: TRL has no template to apply, so hand it the ids
        train, held_out = (_encoder_ids(rm, d, config) if d is not None else None for d in (train, held_out))
    trainer = ChunkedRewardTrainer(
        model=rm.model,
        args=config,
        train_dataset=train,
        eval_dataset=held_out,
        processing_class=copy.deepcopy(rm.tokenizer),
        callbacks=run.callbacks,
    )
    run_trainer(run, trainer)
    rm.model = release(trainer.model)  # no instance patches left behind (see reference.release)
    if config.normalize:
        _normalize(rm, train, config)
    scores = None if held_out is None else score_pairs(rm, held_out, batch_size=config.per_device_eval_batch_size)
    summary = {
        "data": data,
        "train_pairs": len(train),
        "train_pairs_used": len(trainer.train_dataset),  # TRL drops pairs > max_length
        "held_out": held_out_from,
        "normalization": {"offset": rm.offset, "scale": rm.scale},
        "use_margin": config.use_margin,
        "center_rewards_coefficient": config.center_rewards_coefficient,
        "defaults": resolved,
        "plan": plan,
        "eval": None if scores is None else pair_metrics(scores),
        # Normalizing divides margins by `scale`, which changes sigmoid(margin); this is BT's own calibration.
        "ece_raw": None
        if scores is None
        else expected_calibration_error((scores.r_chosen - scores.r_rejected) * rm.scale),
    }
    samples = [] if scores is None else pair_samples(scores, config.num_samples)
    return run.finish(trainer, rm, summary=summary, samples=samples)


def _reward_backbone(backbone: Any, config: RewardConfig) -> RewardModel:
    """A private RewardModel to train: reward models are copied, policies get a fresh head on a trunk copy."""
    source = config.model if backbone is None else backbone
    if isinstance(source, (str, Path)) and source != "tiny" and is_run(source):
        source = load_run(source)  # a reward run keeps training; a policy run gets a head
    if isinstance(source, RewardEnsemble):
        raise TypeError("an ensemble cannot be a backbone; pass one of its members (ensemble.members[i])")
    # Seeded so each ensemble member gets its own fresh head, and the same seed the same head.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if isinstance(source, str) and source == "tiny":
            return tiny_model("reward", seed=config.seed)
        if source is None or isinstance(source, (str, Path)):
            return load_reward_model(source)
        bundle = (source.bundle if isinstance(source, RunResult) else None) or source  # read once: it may load
        if _is_reward_model(bundle.model):
            return RewardModel(
                model=copy.deepcopy(bundle.model),
                tokenizer=copy.deepcopy(bundle.tokenizer),
                name=getattr(bundle, "name", "reward"),
            )
        return load_reward_model(bundle)


def _encoder_ids(rm: RewardModel, dataset, config: RewardConfig):
    """chosen_ids / rejected_ids exactly as `rm.score` encodes them (TRL then skips its own tokenizing)."""

    def encode(rows):
        out = {}
        for side in ("chosen", "rejected"):
            prompts, texts = zip(*(split_response(p, r) for p, r in zip(rows["prompt"], rows[side])))
            out[f"{side}_ids"] = rm.token_ids(prompts, texts, max_length=config.max_length or 512)
        return out

    return dataset.map(encode, batched=True)


def _is_reward_model(model) -> bool:
    return "ForSequenceClassification" in type(model).__name__ and getattr(model.config, "num_labels", 0) == 1


def _normalize(rm: RewardModel, train, config: RewardConfig) -> None:
    """offset/scale = mean/std of raw rewards over the distinct training responses (chosen and rejected)."""
    rm.offset, rm.scale = 0.0, 1.0
    raw = score_pairs(rm, train, batch_size=config.per_device_eval_batch_size).response_scores
    std = float(raw.std())
    rm.offset, rm.scale = float(raw.mean()), std if std > 1e-8 else 1.0  # a constant RM: shift only
