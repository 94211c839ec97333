"""The diagnostics' rules: each reads the tracked metrics and says, in one sentence, what it sees.

A rule has inputs (it is checked only on logs that carry one of them), a check that returns a
message or None, and a cause and a remedy that a person can act on. `Diagnostics` runs them; a
rule fires once per run, after its condition held for `Thresholds.persist` logs in a row.

RL rules read TRL's names for each method: PPO's `objective/*` and `policy/*`, GRPO's and RLOO's
`reward`, `reward_std`, `frac_reward_zero_std`, `kl` (per token), `entropy`. SFT logs `entropy`
too, and KTO `kl`: rules on those names also ask for `reward_std`, which only the critic-free RL
stages log, so a healthy SFT run's falling entropy never reads as a collapse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlhf_lab import defaults

if TYPE_CHECKING:
    from rlhf_lab.monitor.diagnostics import Diagnostics, Track


@dataclass(frozen=True)
class Rule:
    name: str
    inputs: tuple[str, ...]  # the rule is checked only on logs that carry one of these
    cause: str
    remedy: str | Callable[[Diagnostics], str]  # a callable writes it from the run's context (its config, model)
    check: Callable[[Diagnostics], str | None]
    severity: str = "warning"
    persist: bool = True  # False: fire on the first log that shows it (a NaN needs no confirmation)


def _first(diag: Diagnostics, names: tuple[str, ...], *, baseline: bool = False) -> tuple[str, Track] | None:
    for name in names:
        track = diag.tracks.get(name)
        if track is not None and (track.has_baseline if baseline else track.full):
            return name, track
    return None


def check_kl_negative(diag: Diagnostics) -> str | None:
    found = _first(diag, ("objective/kl",))
    if found is None:
        return None
    name, kl = found
    t = diag.thresholds
    if kl.now < -t.kl_negative_tol and kl.now + 2 * kl.sem() < 0:
        return f"{name} averaged {kl.now:.3g} over the last {t.window} logs, below 0 beyond noise"
    return None


def check_kl_target(diag: Diagnostics) -> str | None:
    found = _first(diag, ("objective/kl",))
    if found is None:
        return None
    name, kl = found
    target = diag.kl_target()
    limit = diag.thresholds.kl_factor * target
    if kl.now > limit:
        return (
            f"{name} averaged {kl.now:.3g}, above {diag.thresholds.kl_factor:g} x its target {target:g} = {limit:.3g}"
        )
    return None


def check_clipfrac(diag: Diagnostics) -> str | None:
    found = _first(diag, ("policy/clipfrac_avg",))
    if found is None or found[1].now <= diag.thresholds.clipfrac_max:
        return None
    name, clip = found
    return f"{name} averaged {clip.now:.2f} over the last {diag.thresholds.window} logs (limit {diag.thresholds.clipfrac_max:g})"


def check_ratio(diag: Diagnostics) -> str | None:
    found = _first(diag, ("val/ratio",))
    if found is None or abs(found[1].now - 1) <= diag.thresholds.ratio_drift:
        return None
    return f"val/ratio averaged {found[1].now:.3f}, more than {diag.thresholds.ratio_drift:g} away from 1"


def check_length_hacking(diag: Diagnostics) -> str | None:
    length = _first(diag, ("completions/mean_length",), baseline=True)
    reward = _first(diag, ("objective/scores", "objective/rlhf_reward", *_group_rl(diag, "reward")), baseline=True)
    if length is None or reward is None:
        return None
    (_, ln), (rname, rw) = length, reward
    growth = ln.now / ln.start - 1 if ln.start > 0 else 0.0
    if growth > diag.thresholds.length_growth and rw.now > rw.start:
        return (
            f"mean completion length grew {growth:.0%} ({ln.start:.1f} -> {ln.now:.1f} tokens) while "
            f"{rname} rose {rw.start:.3g} -> {rw.now:.3g}"
        )
    return None


def check_entropy(diag: Diagnostics) -> str | None:
    found = _first(diag, ("objective/entropy", "policy/entropy_avg", *_group_rl(diag, "entropy")), baseline=True)
    if found is None:
        return None
    name, ent = found
    if ent.start > 0 and ent.now < diag.thresholds.entropy_fraction * ent.start:
        return f"{name} fell to {ent.now / ent.start:.0%} of its starting value ({ent.start:.3g} -> {ent.now:.3g})"
    return None


def check_dpo_both_falling(diag: Diagnostics) -> str | None:
    names = ("rewards/chosen", "rewards/rejected", "rewards/margins")
    tracks = [diag.tracks.get(n) for n in names]
    if not all(t is not None and t.has_baseline for t in tracks):
        return None
    chosen, rejected, margin = tracks
    t = diag.thresholds
    grown = margin.now - margin.start
    # a small dip in the chosen reward while the margin widens a lot is normal DPO; a fall that is a
    # sizeable share of the margin's growth is the model pushing good answers down to win the margin
    fall = max(t.dpo_fall_min, t.dpo_fall_fraction * grown) + 2 * chosen.change_noise()
    if grown > t.dpo_fall_min and chosen.now < chosen.start - fall and rejected.now < rejected.start - t.dpo_fall_min:
        return (
            f"rewards/chosen fell {chosen.start:.3g} -> {chosen.now:.3g} and rewards/rejected fell "
            f"{rejected.start:.3g} -> {rejected.now:.3g} while rewards/margins grew to {margin.now:.3g}"
        )
    return None


def _group_rl(diag: Diagnostics, name: str) -> tuple[str, ...]:
    """`name` when this is a GRPO/RLOO run (it logs reward_std), where the plain name means the RL metric."""
    return (name,) if "reward_std" in diag.tracks else ()


def check_no_group_signal(diag: Diagnostics) -> str | None:
    found = _first(diag, ("frac_reward_zero_std",))
    if found is None or found[1].now <= diag.thresholds.zero_std_max:
        return None
    return (
        f"{found[1].now:.0%} of the prompt groups got the same reward for every sample (frac_reward_zero_std, "
        f"mean of the last {diag.thresholds.window} logs)"
    )


def check_token_kl(diag: Diagnostics) -> str | None:
    found = _first(diag, _group_rl(diag, "kl"))
    if found is None or found[1].now <= diag.thresholds.token_kl_max:
        return None
    return f"kl averaged {found[1].now:.3g} nats per token, above {diag.thresholds.token_kl_max:g}"


# ---- not learning: the run moves nothing, usually a learning rate far too small for the model and budget


def learning_rate_remedy(diag: Diagnostics) -> str:
    """Name the field and a value: what the lab's defaults would use for this stage and model."""
    ctx = diag.context
    lr, params, stage, steps = ctx.get("learning_rate"), ctx.get("parameters"), ctx.get("stage"), ctx.get("steps")
    if lr is None or not params or stage not in defaults.LEARNING_RATES:
        return (
            "Raise learning_rate (leave it unset and the lab derives one from the model's size), or train for "
            "more steps."
        )
    full, lora = defaults.learning_rate(stage, params), defaults.learning_rate(stage, params, lora=True)
    size, budget = defaults.describe_size(params), f" trained for {steps} steps" if steps else ""
    if lr < (lora if ctx.get("lora") else full) / 2:
        return f"learning_rate {lr:g} is small for a {size}-parameter model{budget}; try {full:g} ({lora:g} with LoRA)."
    return (
        f"learning_rate {lr:g} should move a {size}-parameter model; check that the data carries a signal "
        "(chosen and rejected differ, rewards vary within a batch) or train for more steps."
    )


def check_preference_still(diag: Diagnostics) -> str | None:
    names = ("rewards/chosen", "rewards/rejected", "rewards/margins")
    tracks = [diag.tracks.get(n) for n in names]
    if not all(t is not None and t.full for t in tracks):
        return None
    limit = diag.thresholds.still_reward
    if any(abs(t.now) >= limit for t in tracks):
        return None
    chosen, rejected, margin = (t.now for t in tracks)
    return (
        f"rewards/chosen {chosen:+.4f}, rewards/rejected {rejected:+.4f} and rewards/margins {margin:+.4f} "
        f"(means of the last {diag.thresholds.window} logs) have not left 0"
    )


def check_reward_model_still(diag: Diagnostics) -> str | None:
    accuracy = diag.tracks.get("accuracy")
    margin = diag.tracks.get("margin")
    # early logs of a healthy reward model sit near chance too: judge after three windows, not one
    if accuracy is None or margin is None or accuracy.count < 3 * diag.thresholds.window or not margin.has_baseline:
        return None
    near_chance = abs(accuracy.now - 0.5) <= max(0.05, 2 * accuracy.sem())
    rising = accuracy.now - accuracy.start > 2 * accuracy.change_noise() + 0.02
    margin_still = (
        abs(margin.now) < diag.thresholds.still_margin and margin.now - margin.start < 2 * margin.change_noise()
    )
    if near_chance and not rising and margin_still:
        return f"accuracy {accuracy.start:.2f} -> {accuracy.now:.2f} and margin {margin.now:+.3f}: still at chance"
    return None


def check_rl_still(diag: Diagnostics) -> str | None:
    for kl_name, score_name, limit in (
        ("objective/kl", "objective/scores", diag.thresholds.still_kl),
        *((("kl", "reward", diag.thresholds.still_token_kl),) if "reward_std" in diag.tracks else ()),
    ):
        kl, score = diag.tracks.get(kl_name), diag.tracks.get(score_name)
        if kl is None or score is None or not kl.has_baseline or not score.has_baseline:
            continue
        if abs(kl.now) < limit and score.now - score.start < 2 * score.change_noise():
            return (
                f"{kl_name} averaged {kl.now:.2g} (the policy is where it started) and {score_name} went "
                f"{score.start:.3g} -> {score.now:.3g} over {kl.count} logs"
            )
    return None


def check_sft_still(diag: Diagnostics) -> str | None:
    loss = diag.tracks.get("loss")
    if "mean_token_accuracy" not in diag.tracks or loss is None or not loss.has_baseline:
        return None
    if loss.now > loss.start - max(2 * loss.change_noise(), 0.01 * abs(loss.start)):
        return f"loss {loss.start:.3f} -> {loss.now:.3f} over the first {loss.count} logs: not falling"
    return None


NOT_LEARNING_CAUSE = (
    "The weights are not moving enough to change what the model does: with a learning rate far below what "
    "this model size needs, tens of steps change nothing measurable, and the run ends where it started."
)


def check_nonfinite(diag: Diagnostics) -> str | None:
    bad = []
    for name in diag.last_keys:
        if name in diag.thresholds.nonfinite_undefined:
            continue
        track = diag.tracks[name]
        needed = diag.thresholds.window if name in diag.thresholds.nonfinite_tolerant else 1
        if track.nonfinite_run >= needed:
            bad.append(name)
    return f"non-finite value(s) logged for {', '.join(sorted(bad))}" if bad else None


RULES: tuple[Rule, ...] = (
    Rule(
        "non_finite",
        (),
        "A NaN or inf in a logged metric means the loss or gradients overflowed, so the "
        "weights are probably already corrupted.",
        "Lower the learning rate, enable gradient clipping (max_grad_norm), or use bf16/fp32 instead of fp16.",
        check_nonfinite,
        "error",
        persist=False,
    ),
    Rule(
        "kl_negative",
        ("objective/kl",),
        "The sampled KL estimate can only go negative on average when "
        "completions are not sampled from the policy being scored (a generation setting such as min_length, "
        "top-k or a different temperature).",
        "Sample with plain temperature sampling at the temperature "
        "used for scoring, without min_new_tokens, top_k or top_p.",
        check_kl_negative,
    ),
    Rule(
        "kl_above_target",
        ("objective/kl",),
        "The policy has moved far from the reference model, more than "
        "the KL penalty was set to allow, which usually precedes reward hacking.",
        "Raise kl_coef (or the adaptive controller's target horizon) or lower the learning rate.",
        check_kl_target,
    ),
    Rule(
        "clipfrac_high",
        ("policy/clipfrac_avg",),
        "A sustained clip fraction above the limit means each PPO "
        "update moves the policy too far from the one that sampled the batch.",
        "Lower the learning rate, use fewer PPO epochs per batch, or use larger mini-batches.",
        check_clipfrac,
    ),
    Rule(
        "ratio_drift",
        ("val/ratio",),
        "The new/old probability ratio drifting from 1 means the updates go off-policy within a batch.",
        "Lower the learning rate or the number of PPO epochs per batch, and "
        "check that rollouts and training use the same model and dtype.",
        check_ratio,
    ),
    Rule(
        "length_hacking",
        ("completions/mean_length", "objective/scores", "objective/rlhf_reward", "reward"),
        "Reward rising together with much longer completions suggests the policy exploits a length bias "
        "in the reward model.",
        "Add a length penalty or cap max_new_tokens (max_completion_length), raise kl_coef (beta), and check the "
        "reward model's length bias with lab.evaluate_reward_model.",
        check_length_hacking,
    ),
    Rule(
        "entropy_collapse",
        ("objective/entropy", "policy/entropy_avg", "entropy"),
        "The policy's entropy collapsed, so it has become near-deterministic and will stop exploring.",
        "Raise kl_coef (beta for GRPO/RLOO), lower the learning rate, or add an entropy bonus.",
        check_entropy,
    ),
    Rule(
        "no_group_signal",
        ("frac_reward_zero_std",),
        "GRPO and RLOO learn from differences between the samples of one prompt; when every sample of a "
        "group gets the same reward, its advantages are all zero and the group teaches nothing.",
        "Raise num_generations or the sampling temperature, give the reward partial credit so samples differ, "
        "or use easier prompts (or an SFT run first) so some samples succeed.",
        check_no_group_signal,
    ),
    Rule(
        "kl_runaway",
        ("kl",),
        "The policy has moved far from the reference per token, which usually precedes reward hacking or "
        "degenerate text.",
        "Raise beta, lower the learning rate, or lower epsilon / num_iterations.",
        check_token_kl,
    ),
    Rule(
        "preference_not_learning",
        ("rewards/margins",),
        "DPO/KTO's implicit rewards are beta x the log-ratio to the reference; all of them near 0 mean the policy "
        "has not moved from the reference, so the loss sits at its chance value (ln 2 for the sigmoid loss).",
        learning_rate_remedy,
        check_preference_still,
    ),
    Rule(
        "reward_model_not_learning", ("accuracy",), NOT_LEARNING_CAUSE, learning_rate_remedy, check_reward_model_still
    ),
    Rule("rl_not_learning", ("objective/kl", "kl"), NOT_LEARNING_CAUSE, learning_rate_remedy, check_rl_still),
    Rule("sft_not_learning", ("mean_token_accuracy",), NOT_LEARNING_CAUSE, learning_rate_remedy, check_sft_still),
    Rule(
        "dpo_both_rewards_falling",
        ("rewards/chosen", "rewards/rejected", "rewards/margins"),
        "DPO is widening the margin by pushing down the chosen responses too, which lowers the likelihood "
        "of good answers (likelihood displacement).",
        "Lower the learning rate or raise beta, or add an SFT "
        "term on the chosen responses (loss_type=['sigmoid', 'sft'] or rpo_alpha).",
        check_dpo_both_falling,
    ),
)
