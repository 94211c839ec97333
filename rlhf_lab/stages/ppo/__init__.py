"""Our own PPO engine (TRL removed its PPOTrainer; see issue 4).

Split by concept, each module readable in one sitting:

- `advantages`: masked statistics (mean, variance, whitening), KL-shaped per-token rewards and GAE;
- `losses`: the clipped policy surrogate, the clipped value loss, entropy and explained variance;
- `kl`: the per-token KL estimators (k1, k3, abs) and the fixed / adaptive KL controllers.

Every function works on padded `(batch, tokens)` tensors with a response mask (1 = a real response
token, 0 = padding or anything after the stop), and nothing at a masked-out position can change a
result. The rollout, config and trainer build on these pieces.
"""
