"""PPO math pinned to brute-force references written from the definitions (minGPT's idea).

Every vectorised function in rlhf_lab.stages.ppo is checked against a plain-Python loop over the
real tokens of each row, on random padded batches whose rows have different lengths (including an
empty row and a full one), in float64 to 1e-6 (the issue's bound) and in float32 more loosely.
Hand-worked cases pin the conventions: GAE on three steps, where clipping binds, how β moves.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_lab.stages.ppo.advantages import (
    check_contiguous,
    gae,
    last_token_index,
    masked_mean,
    masked_var,
    masked_whiten,
    token_rewards,
)
from rlhf_lab.stages.ppo.kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    check_kl_estimator,
    per_token_kl,
)
from rlhf_lab.stages.ppo.losses import entropy_from_logits, explained_variance, policy_loss, value_loss

LENGTHS = [5, 0, 8, 1, 3, 8]  # different lengths, one empty row, two full rows
T = 8
ATOL = 1e-6


def make_mask(lengths=LENGTHS, width=T) -> torch.Tensor:
    return torch.tensor([[1] * n + [0] * (width - n) for n in lengths], dtype=torch.long)


def randn(seed: int, *shape, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def junk_padding(x: torch.Tensor, mask: torch.Tensor, fill: float = float("nan")) -> torch.Tensor:
    """`x` with every masked-out position overwritten: results must not change."""
    pad = ~mask.bool()
    if x.dim() == mask.dim() + 1:  # logits: (B, T, V)
        pad = pad[..., None].expand_as(x)
    return torch.where(pad, torch.full_like(x, fill), x)


def close(actual, expected, atol=ATOL) -> bool:
    return torch.allclose(
        torch.as_tensor(actual, dtype=torch.float64),
        torch.as_tensor(expected, dtype=torch.float64),
        atol=atol,
        rtol=0,
        equal_nan=True,
    )


# ----- brute-force references: plain Python over each row's real tokens -----


def real(x: torch.Tensor, mask: torch.Tensor) -> list[list[float]]:
    """The real entries of each row, as Python floats."""
    return [[float(v) for v, m in zip(row, mrow) if m] for row, mrow in zip(x.tolist(), mask.tolist())]


def pad_rows(rows: list[list[float]], width: int = T) -> torch.Tensor:
    return torch.tensor([row + [0.0] * (width - len(row)) for row in rows], dtype=torch.float64)


def ref_mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def ref_var(xs: list[float], unbiased: bool) -> float:
    mu = ref_mean(xs)
    ss = sum((x - mu) ** 2 for x in xs)
    n = len(xs)
    if n == 0:
        return 0.0
    return ss / (n - 1) if unbiased and n > 1 else ss / n


def ref_whiten_rows(rows: list[list[float]], shift_mean: bool = True) -> list[list[float]]:
    flat = [x for row in rows for x in row]
    mu, var = ref_mean(flat), ref_var(flat, unbiased=True)
    scale = 1 / math.sqrt(var + 1e-8)
    return [[(x - mu) * scale + (0 if shift_mean else mu) for x in row] for row in rows]


def ref_kl(logp: float, logp_ref: float, estimator: str) -> float:
    if estimator == "k1":
        return logp - logp_ref
    if estimator == "k3":
        r = math.exp(logp_ref - logp)
        return (r - 1) - math.log(r)
    return abs(logp - logp_ref)


def ref_gae(rewards: list[list[float]], values: list[list[float]], gamma: float, lam: float):
    advantages, returns = [], []
    for r, v in zip(rewards, values):
        adv = [0.0] * len(r)
        next_adv = 0.0
        for t in reversed(range(len(r))):
            next_value = v[t + 1] if t + 1 < len(r) else 0.0  # terminal after the last real token
            delta = r[t] + gamma * next_value - v[t]
            next_adv = delta + gamma * lam * next_adv
            adv[t] = next_adv
        advantages.append(adv)
        returns.append([a + b for a, b in zip(adv, v)])
    return advantages, returns


# ----- masked statistics and whitening -----


class TestMaskedStats:
    @pytest.mark.parametrize("dtype,atol", [(torch.float64, ATOL), (torch.float32, 1e-5)])
    def test_mean_var_match_reference(self, dtype, atol):
        mask = make_mask()
        x = randn(0, len(LENGTHS), T, dtype=dtype) * 3 + 1
        flat = [v for row in real(x, mask) for v in row]
        assert close(masked_mean(x, mask), ref_mean(flat), atol)
        assert close(masked_var(x, mask), ref_var(flat, True), atol)
        assert close(masked_var(x, mask, unbiased=False), ref_var(flat, False), atol)
        # Per row: the empty row's mean and variance are 0, a single token's unbiased variance is 0.
        rows = real(x, mask)
        assert close(masked_mean(x, mask, dim=1), [ref_mean(r) for r in rows], atol)
        assert close(masked_var(x, mask, dim=1), [ref_var(r, True) for r in rows], atol)
        assert close(masked_var(x, mask, unbiased=False, dim=1), [ref_var(r, False) for r in rows], atol)

    def test_empty_mask_gives_zero_not_nan(self):
        x = randn(1, 2, 3)
        empty = torch.zeros(2, 3, dtype=torch.bool)
        assert masked_mean(x, empty).item() == 0.0
        assert masked_var(x, empty).item() == 0.0
        assert torch.equal(masked_whiten(x, empty), torch.zeros_like(x))

    @pytest.mark.parametrize("shift_mean", [True, False])
    def test_whiten_matches_reference(self, shift_mean):
        mask = make_mask()
        x = randn(2, len(LENGTHS), T) * 5 - 2
        expected = pad_rows(ref_whiten_rows(real(x, mask), shift_mean))
        assert close(masked_whiten(x, mask, shift_mean=shift_mean), expected)

    def test_whiten_gives_mean_zero_var_one_over_masked_entries(self):
        mask = make_mask()
        w = masked_whiten(randn(3, len(LENGTHS), T) * 7 + 4, mask)
        assert abs(masked_mean(w, mask).item()) < 1e-9
        assert abs(masked_var(w, mask).item() - 1) < 1e-6
        assert torch.all(w[~mask.bool()] == 0)

    def test_padding_values_never_matter(self):
        mask = make_mask()
        x = randn(4, len(LENGTHS), T)
        for fill in (float("nan"), float("inf"), 1e30, -5.0):
            junk = junk_padding(x, mask, fill)
            assert torch.equal(masked_mean(junk, mask), masked_mean(x, mask))
            assert torch.equal(masked_var(junk, mask), masked_var(x, mask))
            assert torch.equal(masked_mean(junk, mask, dim=1), masked_mean(x, mask, dim=1))
            assert torch.equal(masked_whiten(junk, mask), masked_whiten(x, mask))

    def test_shape_mismatch_raises(self):
        with pytest.raises(ValueError, match="does not match"):
            masked_mean(torch.zeros(2, 3), torch.ones(2, 4))


# ----- KL estimators and KL-shaped rewards -----


class TestKLEstimators:
    @pytest.mark.parametrize("estimator", KL_ESTIMATORS)
    def test_match_reference(self, estimator):
        mask = make_mask()
        logp, logp_ref = -randn(5, len(LENGTHS), T).abs(), -randn(6, len(LENGTHS), T).abs()
        expected = pad_rows(
            [
                [ref_kl(a, b, estimator) for a, b in zip(ra, rb)]
                for ra, rb in zip(real(logp, mask), real(logp_ref, mask))
            ]
        )
        assert close(per_token_kl(logp, logp_ref, mask, estimator), expected)
        junk = per_token_kl(junk_padding(logp, mask), junk_padding(logp_ref, mask, -1e30), mask, estimator)
        assert torch.equal(junk, per_token_kl(logp, logp_ref, mask, estimator))

    def test_unknown_estimator_lists_valid_ones(self):
        with pytest.raises(ValueError, match=r"'k2'.*'k1', 'k3', 'abs'"):
            check_kl_estimator("k2")
        x = torch.zeros(1, 2)
        with pytest.raises(ValueError, match="valid estimators"):
            per_token_kl(x, x, torch.ones(1, 2), "kl")

    def test_monte_carlo_k1_k3_unbiased_abs_upper_bound(self):
        # Sample tokens from the policy p; E_p[k1] = E_p[k3] = KL(p || q) exactly, E_p[abs] >= KL.
        p = torch.tensor([0.5, 0.25, 0.15, 0.1], dtype=torch.float64)
        q = torch.tensor([0.3, 0.3, 0.3, 0.1], dtype=torch.float64)
        true_kl = float((p * (p / q).log()).sum())
        true_abs = float((p * (p / q).log().abs()).sum())
        n = 400_000
        tokens = torch.multinomial(p, n, replacement=True, generator=torch.Generator().manual_seed(0))
        logp, logq = p.log()[tokens][None], q.log()[tokens][None]
        mask = torch.ones_like(logp)
        samples = {e: per_token_kl(logp, logq, mask, e) for e in KL_ESTIMATORS}
        for estimator, expected in (("k1", true_kl), ("k3", true_kl), ("abs", true_abs)):
            s = samples[estimator]
            stderr = s.std().item() / math.sqrt(n)
            assert abs(s.mean().item() - expected) < 4 * stderr, estimator
        assert samples["k3"].min().item() >= 0
        assert samples["abs"].mean().item() > true_kl  # abs is biased upwards, by design
        assert samples["k3"].var() < samples["k1"].var()  # Schulman: k3 is the low-variance one here

    def test_k3_nonnegative_everywhere(self):
        logp, logp_ref = randn(7, 64, 64) * 10, randn(8, 64, 64) * 10
        assert per_token_kl(logp, logp_ref, torch.ones_like(logp), "k3").min().item() >= 0


class TestTokenRewards:
    @pytest.mark.parametrize("estimator", KL_ESTIMATORS)
    @pytest.mark.parametrize("clip_kl", [None, 0.3])
    def test_match_reference(self, estimator, clip_kl):
        mask = make_mask()
        B = len(LENGTHS)
        logp, logp_ref = -randn(9, B, T).abs(), -randn(10, B, T).abs()
        scores, beta = randn(11, B), 0.05
        out = token_rewards(scores, logp, logp_ref, mask, beta, estimator, clip_kl)

        ref_rewards, ref_kl_rows, ref_nsr_rows = [], [], []
        for b, (ra, rb) in enumerate(zip(real(logp, mask), real(logp_ref, mask))):
            kls = [ref_kl(a, c, estimator) for a, c in zip(ra, rb)]
            paid = kls if clip_kl is None else [min(max(k, -clip_kl), clip_kl) for k in kls]
            nsr = [-beta * k for k in paid]
            rew = list(nsr)
            if rew:
                rew[-1] += float(scores[b])  # the score goes on the last real token
            ref_rewards.append(rew), ref_kl_rows.append(kls), ref_nsr_rows.append(nsr)
        assert close(out.rewards, pad_rows(ref_rewards))
        assert close(out.kl, pad_rows(ref_kl_rows))
        assert close(out.non_score_reward, pad_rows(ref_nsr_rows))

        metrics = out.metrics()
        assert close(metrics["objective/kl"], ref_mean([sum(r) for r in ref_kl_rows]))
        assert close(metrics["objective/non_score_reward"], ref_mean([sum(r) for r in ref_nsr_rows]))
        rlhf = [float(s) + sum(r) for s, r in zip(scores, ref_nsr_rows)]
        assert close(metrics["objective/rlhf_reward"], ref_mean(rlhf))
        assert close(metrics["objective/scores"], float(scores.mean()))

    def test_score_at_last_real_token_and_empty_row(self):
        mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
        zeros = torch.zeros(4, 4)
        out = token_rewards(torch.tensor([1.0, 2.0, 3.0, 4.0]), zeros, zeros, mask, kl_coef=0.1)
        expected = torch.tensor([[0, 0, 1.0, 0], [2.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 4.0]])
        assert torch.equal(out.rewards, expected)
        assert last_token_index(mask).tolist() == [2, 0, -1, 3]

    def test_padding_never_matters(self):
        mask = make_mask()
        logp, logp_ref, scores = -randn(12, 6, T).abs(), -randn(13, 6, T).abs(), randn(14, 6)
        clean = token_rewards(scores, logp, logp_ref, mask, 0.1, "k3")
        junk = token_rewards(scores, junk_padding(logp, mask), junk_padding(logp_ref, mask, 7.0), mask, 0.1, "k3")
        for a, b in zip(clean, junk):
            assert torch.equal(a, b)

    def test_holes_in_mask_rejected(self):
        x = torch.zeros(2, 4)
        with pytest.raises(ValueError, match=r"rows \[1\].*contiguous"):
            token_rewards(torch.zeros(2), x, x, torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]]), 0.1)
        check_contiguous(torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]]))  # one run each: fine


# ----- GAE -----


class TestGAE:
    def test_hand_computed_three_steps(self):
        # γ = 0.9, λ = 0.8 (γλ = 0.72), rewards r = [1, 0, 2], values V = [0.5, 1.0, 1.5], then padding.
        #   t=2: δ2 = 2 + 0.9·0   - 1.5 = 0.5    (terminal: V3 = 0)   A2 = 0.5
        #   t=1: δ1 = 0 + 0.9·1.5 - 1.0 = 0.35                         A1 = 0.35 + 0.72·0.5  = 0.71
        #   t=0: δ0 = 1 + 0.9·1.0 - 0.5 = 1.4                          A0 = 1.4  + 0.72·0.71 = 1.9112
        #   returns R = A + V = [2.4112, 1.71, 2.0]
        # The padded 4th position holds junk that must not be bootstrapped from.
        rewards = torch.tensor([[1.0, 0.0, 2.0, 99.0]], dtype=torch.float64)
        values = torch.tensor([[0.5, 1.0, 1.5, 42.0]], dtype=torch.float64)
        mask = torch.tensor([[1, 1, 1, 0]])
        adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8, whiten_advantages=False)
        assert close(adv, [[1.9112, 0.71, 0.5, 0.0]], 1e-12)
        assert close(ret, [[2.4112, 1.71, 2.0, 0.0]], 1e-12)

    @pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (0.99, 1.0), (1.0, 0.0)])
    @pytest.mark.parametrize("whiten_rewards", [False, True])
    @pytest.mark.parametrize("whiten_advantages", [False, True])
    def test_match_reference(self, gamma, lam, whiten_rewards, whiten_advantages):
        mask = make_mask()
        rewards, values = randn(15, 6, T), randn(16, 6, T)
        r_rows, v_rows = real(rewards, mask), real(values, mask)
        if whiten_rewards:
            r_rows = ref_whiten_rows(r_rows, shift_mean=False)
        ref_adv, ref_ret = ref_gae(r_rows, v_rows, gamma, lam)
        if whiten_advantages:
            ref_adv = ref_whiten_rows(ref_adv)
        adv, ret = gae(rewards, values, mask, gamma, lam, whiten_rewards, whiten_advantages)
        assert close(adv, pad_rows(ref_adv))
        assert close(ret, pad_rows(ref_ret))
        if whiten_advantages:
            assert abs(masked_mean(adv, mask).item()) < 1e-9
            assert abs(masked_var(adv, mask).item() - 1) < 1e-6

    def test_float32_close_to_reference(self):
        mask = make_mask()
        rewards, values = randn(17, 6, T, dtype=torch.float32), randn(18, 6, T, dtype=torch.float32)
        ref_adv, ref_ret = ref_gae(real(rewards, mask), real(values, mask), 0.95, 0.9)
        adv, ret = gae(rewards, values, mask, 0.95, 0.9, whiten_advantages=False)
        assert adv.dtype == torch.float32
        assert close(adv, pad_rows(ref_adv), 1e-5) and close(ret, pad_rows(ref_ret), 1e-5)

    def test_leading_padding_allowed(self):
        # A row whose real run starts later gives the same numbers as the same run left-aligned.
        rewards, values = randn(19, 1, 5), randn(20, 1, 5)
        shifted_mask = torch.tensor([[0, 0, 1, 1, 1]])
        adv, ret = gae(rewards, values, shifted_mask, 0.9, 0.8, whiten_advantages=False)
        left = gae(rewards[:, 2:], values[:, 2:], torch.ones(1, 3), 0.9, 0.8, whiten_advantages=False)
        assert torch.equal(adv[:, :2], torch.zeros(1, 2)) and close(adv[:, 2:], left[0], 1e-12)
        assert close(ret[:, 2:], left[1], 1e-12)

    def test_padding_never_matters_and_no_gradient(self):
        mask = make_mask()
        rewards, values = randn(21, 6, T), randn(22, 6, T).requires_grad_()
        clean = gae(rewards, values, mask, whiten_rewards=True)
        junk = gae(junk_padding(rewards, mask), junk_padding(values, mask, 1e9), mask, whiten_rewards=True)
        assert all(torch.equal(a, b) for a, b in zip(clean, junk))
        assert not clean[0].requires_grad and not clean[1].requires_grad

    def test_holes_rejected(self):
        x = torch.zeros(1, 4)
        with pytest.raises(ValueError, match="contiguous"):
            gae(x, x, torch.tensor([[1, 0, 1, 0]]))


# ----- PPO losses -----


def ref_policy(logp, old, adv, eps):
    ratio = math.exp(logp - old)
    unclipped, clipped = -adv * ratio, -adv * min(max(ratio, 1 - eps), 1 + eps)
    return max(unclipped, clipped), float(clipped > unclipped), ratio


class TestPolicyLoss:
    def test_match_reference(self):
        mask = make_mask()
        logp, old = -randn(23, 6, T).abs(), -randn(24, 6, T).abs()
        old = torch.where(torch.rand(6, T, generator=torch.Generator().manual_seed(0)) < 0.3, logp, old)
        adv = randn(25, 6, T)
        out = policy_loss(logp, old, adv, mask, cliprange=0.2)
        rows = [
            ref_policy(a, b, c, 0.2)
            for ra, rb, rc in zip(real(logp, mask), real(old, mask), real(adv, mask))
            for a, b, c in zip(ra, rb, rc)
        ]
        diffs = [a - b for ra, rb in zip(real(logp, mask), real(old, mask)) for a, b in zip(ra, rb)]
        ratios = [r[2] for r in rows]
        assert close(out.loss, ref_mean([r[0] for r in rows]))
        assert close(out.clipfrac, ref_mean([r[1] for r in rows]))
        assert close(out.approx_kl, 0.5 * ref_mean([d * d for d in diffs]))
        assert close(out.ratio_mean, ref_mean(ratios))
        assert close(out.ratio_var, ref_var(ratios, unbiased=False))
        assert 0 < out.clipfrac.item() < 1

    def test_clipping_by_hand(self):
        # ε = 0.2. Token 0: ρ = 1.5, A = +1 -> clipped (loss -1.2, no gradient).
        # Token 1: ρ = 1.5, A = -1 -> unclipped (loss 1.5): the pessimistic bound keeps the bad move.
        # Token 2: ρ = 0.5, A = +1 -> unclipped (loss -0.5). Token 3: ρ = 0.5, A = -1 -> clipped (0.8).
        # Token 4: ρ = 1.1, A = +1 -> inside the range (loss -1.1). Token 5: padding.
        ratios = torch.tensor([[1.5, 1.5, 0.5, 0.5, 1.1, 3.0]], dtype=torch.float64)
        adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0, 5.0]], dtype=torch.float64)
        mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
        old = torch.full_like(ratios, -2.0)
        logp = (old + ratios.log()).requires_grad_()
        out = policy_loss(logp, old, adv, mask, cliprange=0.2)
        assert close(out.loss, (-1.2 + 1.5 - 0.5 + 0.8 - 1.1) / 5, 1e-12)
        assert close(out.clipfrac, 2 / 5, 1e-12)
        out.loss.backward()
        grad = logp.grad[0].tolist()
        assert grad[0] == 0 and grad[3] == 0 and grad[5] == 0  # clipped and padded: no gradient
        # d/dlogp of -A·ρ / n = -A·ρ / n for the unclipped tokens.
        assert close(grad[1], 1.5 / 5, 1e-12) and close(grad[2], -0.5 / 5, 1e-12) and close(grad[4], -1.1 / 5, 1e-12)

    def test_first_minibatch_ratio_one_clipfrac_zero(self):
        mask = make_mask()
        logp = -randn(26, 6, T).abs()
        out = policy_loss(logp, logp.clone(), randn(27, 6, T), mask)
        assert out.ratio_mean.item() == 1 and out.ratio_var.item() == 0
        assert out.clipfrac.item() == 0 and out.approx_kl.item() == 0

    def test_padding_never_matters(self):
        mask = make_mask()
        logp, old, adv = -randn(28, 6, T).abs(), -randn(29, 6, T).abs(), randn(30, 6, T)
        a = logp.clone().requires_grad_()
        b = junk_padding(logp, mask, 50.0).requires_grad_()
        clean = policy_loss(a, old, adv, mask)
        junk = policy_loss(b, junk_padding(old, mask), junk_padding(adv, mask, float("inf")), mask)
        assert all(torch.equal(x, y) for x, y in zip(clean, junk))
        clean.loss.backward(), junk.loss.backward()
        assert torch.equal(a.grad, b.grad) and torch.all(a.grad[~mask.bool()] == 0)


class TestValueLoss:
    def test_match_reference(self):
        mask = make_mask()
        v, old, ret = randn(31, 6, T), randn(32, 6, T), randn(33, 6, T)
        out = value_loss(v, old, ret, mask, cliprange_value=0.3)
        losses, clipped = [], []
        for rv, ro, rr in zip(real(v, mask), real(old, mask), real(ret, mask)):
            for a, b, c in zip(rv, ro, rr):
                unclipped_error = (a - c) ** 2
                clipped_error = (min(max(a, b - 0.3), b + 0.3) - c) ** 2
                losses.append(max(unclipped_error, clipped_error))
                clipped.append(float(clipped_error > unclipped_error))
        assert close(out.loss, 0.5 * ref_mean(losses))
        assert close(out.clipfrac, ref_mean(clipped))
        assert 0 < out.clipfrac.item() < 1

    def test_clipping_by_hand(self):
        # ε_v = 0.2, V_old = 0. Token 0: V = 1.0, R = 1.0: unclipped error 0, clipped V = 0.2 has error
        # 0.64 -> clipped binds, no gradient. Token 1: V = 0.1 inside the range, R = 1: both errors
        # 0.81. Token 2: V = -1, R = 1: unclipped error 4 > clipped (-0.2 - 1)² = 1.44, gradient flows.
        v = torch.tensor([[1.0, 0.1, -1.0, 7.0]], dtype=torch.float64, requires_grad=True)
        ret = torch.tensor([[1.0, 1.0, 1.0, -7.0]], dtype=torch.float64)
        mask = torch.tensor([[1, 1, 1, 0]])
        out = value_loss(v, torch.zeros_like(ret), ret, mask, cliprange_value=0.2)
        assert close(out.loss, 0.5 * (0.64 + 0.81 + 4.0) / 3, 1e-12)
        assert close(out.clipfrac, 1 / 3, 1e-12)
        out.loss.backward()
        grad = v.grad[0].tolist()
        assert grad[0] == 0 and grad[3] == 0
        assert close(grad[1], (0.1 - 1.0) / 3, 1e-12) and close(grad[2], (-1.0 - 1.0) / 3, 1e-12)

    def test_padding_never_matters(self):
        mask = make_mask()
        v, old, ret = randn(34, 6, T), randn(35, 6, T), randn(36, 6, T)
        clean = value_loss(v, old, ret, mask)
        junk = value_loss(junk_padding(v, mask), junk_padding(old, mask, 3.0), junk_padding(ret, mask), mask)
        assert all(torch.equal(x, y) for x, y in zip(clean, junk))


class TestEntropyAndExplainedVariance:
    def test_entropy_matches_reference(self):
        mask = make_mask()
        logits = randn(37, 6, T, 5) * 2
        expected = []
        for b, n in enumerate(LENGTHS):
            row = []
            for t in range(n):
                z = [math.exp(x) for x in logits[b, t].tolist()]
                p = [x / sum(z) for x in z]
                row.append(-sum(q * math.log(q) for q in p))
            expected.append(row)
        assert close(entropy_from_logits(logits, mask), pad_rows(expected))
        junk = entropy_from_logits(junk_padding(logits, mask, 1e4), mask)
        assert torch.equal(junk, entropy_from_logits(logits, mask))

    def test_entropy_bfloat16_upcast_and_uniform(self):
        logits = torch.zeros(2, 3, 16, dtype=torch.bfloat16)
        h = entropy_from_logits(logits, torch.ones(2, 3))
        assert h.dtype == torch.float32 and close(h, torch.full((2, 3), math.log(16)), 1e-6)

    def test_explained_variance_matches_reference(self):
        mask = make_mask()
        ret = randn(38, 6, T)
        v = ret + 0.5 * randn(39, 6, T)
        flat_r = [x for row in real(ret, mask) for x in row]
        flat_res = [a - b for ra, rv in zip(real(ret, mask), real(v, mask)) for a, b in zip(ra, rv)]
        expected = 1 - ref_var(flat_res, False) / ref_var(flat_r, False)
        ev = explained_variance(v, ret, mask)
        assert close(ev, expected) and 0 < ev.item() < 1
        assert close(explained_variance(ret, ret, mask), 1.0)
        assert torch.equal(explained_variance(junk_padding(v, mask), junk_padding(ret, mask), mask), ev)
        assert math.isnan(explained_variance(v, torch.ones_like(ret), mask).item())  # constant returns


# ----- KL controllers -----


class TestKLControllers:
    def test_fixed_never_moves(self):
        ctl = FixedKLController(0.05)
        assert ctl.update(100.0, 256) == 0.05 and ctl.value == 0.05

    @pytest.mark.parametrize(
        "current,error",
        [(12.0, 0.2), (6.6, 0.1), (6.0, 0.0), (5.7, -0.05), (3.0, -0.2), (0.0, -0.2)],
    )
    def test_adaptive_follows_ziegler(self, current, error):
        # e = clip(KL / target - 1, -0.2, 0.2); β ← β · (1 + e · n_steps / horizon)
        ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10_000)
        new = ctl.update(torch.tensor(current, dtype=torch.float64), n_steps=256)  # a tensor KL is fine
        assert new == ctl.value
        assert math.isclose(new, 0.1 * (1 + error * 256 / 10_000), rel_tol=1e-12)
        assert (new > 0.1) == (current > 6.0) and (new < 0.1) == (current < 6.0)

    def test_adaptive_converges_direction_over_many_updates(self):
        up, down = AdaptiveKLController(0.1, 6.0, 10_000), AdaptiveKLController(0.1, 6.0, 10_000)
        for _ in range(20):
            up.update(9.0, 512), down.update(1.0, 512)
        assert math.isclose(up.value, 0.1 * (1 + 0.2 * 512 / 10_000) ** 20)
        assert math.isclose(down.value, 0.1 * (1 - 0.2 * 512 / 10_000) ** 20)

    def test_state_round_trip_and_bad_arguments(self):
        ctl = AdaptiveKLController(0.2, 4.0, 1000)
        ctl.update(10.0, 64)
        restored = AdaptiveKLController(1.0, 1.0, 1.0)
        restored.load_state_dict(ctl.state_dict())
        assert restored.state_dict() == ctl.state_dict()
        fixed = FixedKLController(0.0)
        fixed.load_state_dict(FixedKLController(0.3).state_dict())
        assert fixed.value == 0.3
        with pytest.raises(ValueError, match="target"):
            AdaptiveKLController(0.1, 0.0, 1000)
        with pytest.raises(ValueError, match="init_kl_coef"):
            AdaptiveKLController(0.0, 6.0, 1000)
        with pytest.raises(ValueError, match="kl_coef"):
            FixedKLController(-1.0)
        with pytest.raises(ValueError, match="finite"):
            ctl.update(float("nan"), 64)
