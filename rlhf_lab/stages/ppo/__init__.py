"""Our own PPO engine (TRL removed its PPOTrainer; see issue 4). `lab.ppo` and `lab.PPOConfig`.

Split by concept, each module readable in one sitting:

- `config`: `PPOConfig`, every knob, checked before any model loads;
- `rollout`: sampling (transformers generate with KV cache, or vLLM), stop handling, response masks;
- `rewards`: any reward (models, functions, weighted lists, ensembles) as one function; running norm;
- `kl`: the per-token KL estimators (k1, k3, abs) and the fixed / adaptive KL controllers;
- `advantages`: masked statistics (mean, variance, whitening), KL-shaped per-token rewards and GAE;
- `losses`: the clipped policy surrogate, the clipped value loss, entropy and explained variance;
- `model`: the policy and its critic as one module (value head on the shared trunk, or a separate model);
- `trainer`: one update's pieces (collect, reward, learn), metrics, NaN guard;
- `batch`: `RolloutBatch`, one update's rollout and rewards, as a session hands it out;
- `session`: `PPOSession`, models, the run folder and the update loop, one step at a time or to the end;
- `checkpoint`: everything an exact resume needs;
- `stage`: `ppo(...)`, a session run to the end.

Every function works on padded `(batch, tokens)` tensors with a response mask (1 = a real response
token, 0 = padding or anything after the stop), and nothing at a masked-out position can change a
result.
"""

from rlhf_lab.stages.ppo.batch import BatchError, RolloutBatch
from rlhf_lab.stages.ppo.config import PPOConfig
from rlhf_lab.stages.ppo.session import PPOSession
from rlhf_lab.stages.ppo.stage import ppo

__all__ = ["BatchError", "PPOConfig", "PPOSession", "RolloutBatch", "ppo"]
