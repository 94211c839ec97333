"""Per-token KL between the policy and the reference, and the controllers that set its coefficient β.

The rollout samples each response token y_t from the policy p, so any function of
log r_t = log p_ref(y_t) - log p(y_t) whose expectation under p is KL(p || p_ref) is an unbiased
per-token estimate (Schulman, "Approximating KL Divergence", 2020):

    k1 = log p - log p_ref = -log r           unbiased, high variance, negative on some tokens
    k3 = (r - 1) - log r                      unbiased, low variance when p ≈ p_ref, always >= 0
    abs = |log p - log p_ref|                 >= 0 but biased upwards: E_p|log p/p_ref| >= KL

The penalty -β·KL_t is added to the rewards (see `advantages.token_rewards`). β is either fixed or
adapted towards a target KL (Ziegler et al. 2019, "Fine-Tuning Language Models from Human
Preferences", eq. 2):

    e_t = clip(KL_t / KL_target - 1, -0.2, 0.2)
    β_{t+1} = β_t · (1 + K_β · e_t),   K_β = n_steps / horizon

where n_steps is the number of samples (episodes) the update consumed.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

KL_ESTIMATORS: tuple[str, ...] = ("k1", "k3", "abs")

# Ziegler et al. clip the proportional error so that one noisy KL measurement moves β by a bounded factor.
ADAPTIVE_KL_ERROR_CLIP = 0.2


def check_kl_estimator(estimator: str) -> str:
    """`estimator` if it is one of `KL_ESTIMATORS`; a ValueError that lists the valid names otherwise."""
    if estimator not in KL_ESTIMATORS:
        valid = ", ".join(repr(name) for name in KL_ESTIMATORS)
        raise ValueError(f"unknown KL estimator {estimator!r}: valid estimators are {valid}")
    return estimator


def per_token_kl(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token KL estimate between the policy and the reference, 0 at masked-out positions.

    `logprobs` and `ref_logprobs` are the log-probabilities of the sampled tokens, shape (B, T),
    under the policy and the reference; `mask` is 1 at real response tokens. Padded positions are
    set to log r = 0 before the estimator is applied, so whatever they hold (even NaN, or the
    INVALID_LOGPROB filler TRL used) never reaches the result or its gradient.
    """
    check_kl_estimator(estimator)
    if logprobs.shape != ref_logprobs.shape or logprobs.shape != mask.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, ref_logprobs {tuple(ref_logprobs.shape)} and mask "
            f"{tuple(mask.shape)} must have the same shape"
        )
    # log p - log p_ref, i.e. -log r with r = p_ref / p.
    log_ratio = torch.where(mask.bool(), logprobs - ref_logprobs, 0.0)
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        # (r - 1) - log r with log r = -log_ratio; expm1 keeps precision when r ≈ 1, which is the
        # usual case (policy close to the reference) and where a plain exp(x) - 1 cancels badly.
        return torch.expm1(-log_ratio) + log_ratio
    return log_ratio.abs()


class KLController(Protocol):
    """What the trainer needs from a KL controller: the current β and a way to update it."""

    value: float

    def update(self, current_kl: float | Tensor, n_steps: int) -> float: ...

    def state_dict(self) -> dict[str, float]: ...

    def load_state_dict(self, state: dict[str, float]) -> None: ...


class FixedKLController:
    """A constant β. `update` exists so the trainer treats both controllers alike."""

    def __init__(self, kl_coef: float) -> None:
        if not (math.isfinite(kl_coef) and kl_coef >= 0):
            raise ValueError(f"kl_coef must be a finite number >= 0, got {kl_coef!r}")
        self.value = float(kl_coef)

    def update(self, current_kl: float | Tensor, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])

    def __repr__(self) -> str:
        return f"FixedKLController(kl_coef={self.value})"


class AdaptiveKLController:
    """β adapted towards a target KL with Ziegler et al.'s clipped proportional controller.

    `current_kl` is the per-sequence KL summed over tokens and averaged over the batch (the
    `objective/kl` metric); `n_steps` the number of samples in the update. With the error clipped to
    ±0.2, β moves by at most a factor (1 ± 0.2·n_steps/horizon) per update, so `horizon` is roughly
    how many samples it takes β to react to a sustained KL error.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if not (math.isfinite(init_kl_coef) and init_kl_coef > 0):
            # A multiplicative controller can never leave 0: an adaptive β must start positive.
            raise ValueError(f"init_kl_coef must be a finite number > 0, got {init_kl_coef!r}")
        if not (math.isfinite(target) and target > 0):
            raise ValueError(f"target must be a finite KL > 0, got {target!r}")
        if not (math.isfinite(horizon) and horizon > 0):
            raise ValueError(f"horizon must be a finite number of samples > 0, got {horizon!r}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float | Tensor, n_steps: int) -> float:
        current = float(current_kl)
        if not math.isfinite(current):
            # One NaN would poison β for the rest of the run; the trainer's NaN guard handles the step.
            raise ValueError(f"current_kl must be finite, got {current!r}")
        error = min(max(current / self.target - 1.0, -ADAPTIVE_KL_ERROR_CLIP), ADAPTIVE_KL_ERROR_CLIP)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = float(state["horizon"])

    def __repr__(self) -> str:
        return f"AdaptiveKLController(value={self.value}, target={self.target}, horizon={self.horizon})"
