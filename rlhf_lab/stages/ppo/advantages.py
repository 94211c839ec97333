"""From a rollout to PPO's targets: masked statistics, KL-shaped per-token rewards, and GAE.

All tensors are padded `(B, T)` batches over response tokens with a `mask` (1 = real token). A
row's real tokens form one contiguous run, normally a prefix: the response, including its EOS
token, followed by padding. Masked-out positions are replaced before any arithmetic (with
`torch.where`, not by multiplying by the mask: NaN · 0 is NaN), so nothing stored there can change
a result or a gradient, and every per-token output is 0 there.

Conventions (TRL's PPO, except where noted):

- reward_t = -β·KL_t at every real token, plus the sequence score at the row's LAST real token
  (TRL put it one position later, on the token after its own mask; ours is the final token
  that was actually generated, usually EOS);
- objective/kl = Σ_t KL_t per sequence, averaged over the batch; objective/non_score_reward
  likewise for -β·KL_t; objective/rlhf_reward = score + non_score_reward, averaged;
- GAE is terminal after the last real token (V = 0 beyond it), also for truncated responses.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from rlhf_lab.stages.ppo.kl import per_token_kl

# Added to the variance before the inverse square root, so a constant batch whitens to 0, not NaN.
WHITEN_EPS = 1e-8


def _bool_mask(values: Tensor, mask: Tensor) -> Tensor:
    if mask.shape != values.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match values shape {tuple(values.shape)}")
    return mask.bool()


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Σ m·x / Σ m over the masked entries (all of them, or along `dim`).

    An empty mask (or an empty row along `dim`) gives 0, not NaN: no tokens contribute nothing,
    and a NaN here would look like a diverged loss to the trainer's NaN guard.
    """
    m = _bool_mask(values, mask)
    total = torch.where(m, values, 0.0)
    count = m.to(values.dtype)
    if dim is None:
        return total.sum() / count.sum().clamp_min(1)
    return total.sum(dim, keepdim=keepdim) / count.sum(dim, keepdim=keepdim).clamp_min(1)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = True, dim: int | None = None) -> Tensor:
    """Variance of the masked entries: Σ m·(x - mean)² / (n - 1) if `unbiased`, else / n.

    With fewer than two entries the Bessel correction is undefined; the biased variance is returned
    (0 for a single entry), so whitening one token gives 0 rather than NaN and no sync is needed.
    """
    m = _bool_mask(values, mask)
    keep = dim is not None
    mean = masked_mean(values, m, dim=dim, keepdim=keep)
    centered = torch.where(m, values - mean, 0.0)
    count = m.to(values.dtype)
    n = count.sum() if dim is None else count.sum(dim)
    squares = centered.square().sum() if dim is None else centered.square().sum(dim)
    var = squares / n.clamp_min(1)
    if unbiased:
        var = torch.where(n > 1, var * n / (n - 1).clamp_min(1), var)
    return var


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """(x - mean) / sqrt(var + 1e-8) over the masked entries (unbiased var, as TRL); 0 at padding.

    With `shift_mean=False` the mean is added back: only the scale changes. Reward whitening uses
    that, because shifting every token's reward by a constant would change what the policy is
    paid for producing longer or shorter responses.
    """
    m = _bool_mask(values, mask)
    mean = masked_mean(values, m)
    var = masked_var(values, m, unbiased=True)
    whitened = (values - mean) * torch.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(m, whitened, 0.0)


def check_contiguous(mask: Tensor) -> None:
    """Reject masks whose real tokens are not one contiguous run per row (holes in the middle).

    GAE bootstraps from the next position, so a hole would silently end the episode early. Leading
    zeros are allowed (their outputs are 0); a response mask is a prefix.
    """
    m = mask.bool()
    starts = m[:, :1].sum(1) + (m[:, 1:] & ~m[:, :-1]).sum(1)
    bad = (starts > 1).nonzero().flatten()
    if bad.numel():
        rows = bad[:5].tolist()
        raise ValueError(
            f"mask rows {rows} have padding between real tokens; each row's real tokens must be one "
            "contiguous run (the response followed by padding): mask everything after the stop"
        )


def last_token_index(mask: Tensor) -> Tensor:
    """Index of each row's last real token, shape (B,); -1 for a row with no real tokens."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, -1).amax(dim=1)


class TokenRewards(NamedTuple):
    """Per-token rewards for GAE, and the parts TRL's PPO reported.

    rewards:          (B, T) -β·KL_t (clipped if asked), plus the score at the last real token.
    kl:               (B, T) the estimator's KL_t, NOT clipped: the true drift, which is what the
                      metric and the adaptive controller should see.
    non_score_reward: (B, T) -β·KL_t as paid (clipped if asked).
    scores:           (B,) the sequence scores.
    """

    rewards: Tensor
    kl: Tensor
    non_score_reward: Tensor
    scores: Tensor

    def metrics(self) -> dict[str, Tensor]:
        """TRL's PPO objective metrics: sums over each sequence's tokens, means over the batch."""
        non_score = self.non_score_reward.sum(1)
        return {
            "objective/kl": self.kl.sum(1).mean(),
            "objective/non_score_reward": non_score.mean(),
            "objective/rlhf_reward": (self.scores + non_score).mean(),
            "objective/scores": self.scores.mean(),
        }


def token_rewards(
    scores: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    kl_coef: float | Tensor,
    estimator: str = "k1",
    clip_kl: float | None = None,
) -> TokenRewards:
    """reward_t = -β·KL_t for every real token t, plus `scores[b]` at row b's last real token.

    `clip_kl` clamps KL_t to [-clip_kl, clip_kl] inside the penalty only, so a few tokens the
    reference finds very unlikely cannot swamp the score. A row with no real tokens gets no reward
    anywhere (there is no action to credit); its score still counts in `objective/scores`.
    """
    m = _bool_mask(logprobs, mask)
    if scores.shape != (logprobs.shape[0],):
        raise ValueError(f"scores must have shape ({logprobs.shape[0]},), got {tuple(scores.shape)}")
    check_contiguous(m)
    kl = per_token_kl(logprobs, ref_logprobs, m, estimator)
    paid = kl if clip_kl is None else kl.clamp(-clip_kl, clip_kl)
    non_score_reward = -kl_coef * paid
    # A one-hot of the last real token instead of index assignment: no host sync on GPU, and a row
    # with no real tokens (index -1) matches no position.
    positions = torch.arange(m.shape[1], device=m.device)
    at_last = positions[None, :] == last_token_index(m)[:, None]
    scores = scores.to(non_score_reward.dtype)
    rewards = non_score_reward + torch.where(at_last, scores[:, None], 0.0)
    return TokenRewards(rewards, kl, non_score_reward, scores)


def gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
    whiten_rewards: bool = False,
    whiten_advantages: bool = True,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), right to left over the real tokens.

        δ_t = r_t + γ·V_{t+1} - V_t          (V_{t+1} = 0 after the last real token: terminal)
        A_t = δ_t + γ·λ·A_{t+1}              (A = 0 after the last real token)
        R_t = A_t + V_t                      (the value target, from the un-whitened A)

    `whiten_rewards` rescales the rewards over the masked tokens first (mean kept, as TRL);
    `whiten_advantages` then whitens A over the masked tokens. Returns (advantages, returns), both 0
    at padding. Inputs are detached: they are targets, and no gradient should flow through them.
    A row's real tokens must be one contiguous run; padding in the middle raises ValueError.
    """
    m = _bool_mask(rewards, mask)
    if values.shape != rewards.shape:
        raise ValueError(f"values shape {tuple(values.shape)} does not match rewards {tuple(rewards.shape)}")
    check_contiguous(m)
    rewards = torch.where(m, rewards.detach(), 0.0)
    values = torch.where(m, values.detach(), 0.0)
    if whiten_rewards:
        rewards = masked_whiten(rewards, m, shift_mean=False)
    # Values are 0 past the last real token, so the shifted values bootstrap 0 there: no extra masking.
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    deltas = rewards + gamma * next_values - values
    # The recurrence is sequential in t but vectorised over the batch: T small kernels. (A closed form
    # as a T×T discount matmul would lose precision under TF32 and cost O(T²) memory.)
    running = torch.zeros_like(deltas[:, 0])
    reversed_advantages = []
    for t in range(deltas.shape[1] - 1, -1, -1):
        running = deltas[:, t] + gamma * lam * running
        reversed_advantages.append(running)
    advantages = torch.stack(reversed_advantages[::-1], dim=1)
    # Positions before a row's first real token (allowed, e.g. a prompt) picked up discounted
    # advantages from the run after them; zero them like the rest of the padding.
    advantages = torch.where(m, advantages, 0.0)
    returns = torch.where(m, advantages + values, 0.0)
    if whiten_advantages:
        advantages = masked_whiten(advantages, m)
    return advantages, returns
