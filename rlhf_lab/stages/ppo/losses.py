"""PPO's losses and the diagnostics logged next to them, on padded `(B, T)` batches with a mask.

    ρ_t = exp(log π(y_t) - log π_old(y_t))
    L^CLIP = mean_t max(-A_t·ρ_t, -A_t·clip(ρ_t, 1-ε, 1+ε))                 (to minimise)
    L^V    = ½ · mean_t max((V_t - R_t)², (clip(V_t, V_old-ε_v, V_old+ε_v) - R_t)²)

Means are token-level over the masked entries of the (mini)batch, as TRL's PPO. A clip fraction
counts the tokens where the clipped term is strictly the larger one, i.e. where clipping binds and
the token's gradient is zero. Old log-probs, advantages, old values and returns are detached: they
are constants of the update. Metrics are detached; only the losses carry gradients.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from rlhf_lab.stages.ppo.advantages import masked_mean, masked_var


class PolicyLoss(NamedTuple):
    """loss: L^CLIP; clipfrac: policy/clipfrac; approx_kl: ½·mean((log π - log π_old)²), the
    policy/approxkl metric; ratio_mean / ratio_var: mean and (population) variance of ρ over
    the masked tokens (val/ratio, val/ratio_var)."""

    loss: Tensor
    clipfrac: Tensor
    approx_kl: Tensor
    ratio_mean: Tensor
    ratio_var: Tensor


class ValueLoss(NamedTuple):
    """loss: L^V; clipfrac: val/clipfrac, the fraction of tokens where the clipped error binds."""

    loss: Tensor
    clipfrac: Tensor


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, cliprange: float = 0.2
) -> PolicyLoss:
    """The clipped surrogate objective (Schulman et al. 2017, eq. 7), negated to be minimised."""
    m = mask.bool()
    if not (logprobs.shape == old_logprobs.shape == advantages.shape == m.shape):
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)}, advantages "
            f"{tuple(advantages.shape)} and mask {tuple(m.shape)} must have the same shape"
        )
    # Padding becomes log ρ = 0 and A = 0 before exp and multiply, so no inf/NaN stored there leaks.
    log_ratio = torch.where(m, logprobs - old_logprobs.detach(), 0.0)
    adv = torch.where(m, advantages.detach(), 0.0)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), m)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).to(ratio.dtype), m)
        approx_kl = 0.5 * masked_mean(log_ratio.square(), m)
        ratio_mean = masked_mean(ratio, m)
        ratio_var = masked_var(ratio, m, unbiased=False)
    return PolicyLoss(loss, clipfrac, approx_kl, ratio_mean, ratio_var)


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, cliprange_value: float = 0.2
) -> ValueLoss:
    """The clipped value loss: the critic cannot move more than ε_v from its rollout-time value
    per update for free (the pessimistic max keeps the larger of the two errors)."""
    m = mask.bool()
    if not (values.shape == old_values.shape == returns.shape == m.shape):
        raise ValueError(
            f"values {tuple(values.shape)}, old_values {tuple(old_values.shape)}, returns "
            f"{tuple(returns.shape)} and mask {tuple(m.shape)} must have the same shape"
        )
    values = torch.where(m, values, 0.0)
    old = torch.where(m, old_values.detach(), 0.0)
    target = torch.where(m, returns.detach(), 0.0)
    clipped_values = torch.clamp(values, old - cliprange_value, old + cliprange_value)
    unclipped_error = (values - target).square()
    clipped_error = (clipped_values - target).square()
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), m)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_error > unclipped_error).to(values.dtype), m)
    return ValueLoss(loss, clipfrac)


def entropy_from_logits(logits: Tensor, mask: Tensor) -> Tensor:
    """Per-token entropy H_t = -Σ_v p_v log p_v of the (B, T, V) logits, shape (B, T), 0 at padding.

    Per token rather than a mean because callers aggregate differently: the entropy bonus and
    policy/entropy take `masked_mean(H, mask)`, a per-sequence entropy takes `H.sum(1)`. Computed
    in float32 at least: half-precision softmax sums lose most of the digits an entropy needs.
    Logits at padded positions must be finite (a model's always are); the result there is 0.
    """
    m = mask.bool()
    if logits.shape[:-1] != m.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match mask {tuple(m.shape)} (B, T, V vs B, T)")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return torch.where(m, entropy, 0.0)


@torch.no_grad()
def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 - Var[R - V] / Var[R] over the masked tokens: 1 is a perfect critic, 0 one no better than
    predicting the mean, negative one worse. NaN when the returns are constant (undefined), as SB3."""
    m = mask.bool()
    var_returns = masked_var(returns, m, unbiased=False)
    var_residual = masked_var(torch.where(m, returns - values, 0.0), m, unbiased=False)
    return torch.where(var_returns > 0, 1 - var_residual / var_returns, torch.nan)
