"""The PPO engine: roll out, score, shape rewards with KL, estimate advantages, update in minibatches.

One update, in the pieces `PPOSession` (and so `lab.ppo`) calls: (1) `collect`: sample completions for the
next `batch_size` prompts (a seeded shuffle per pass; each process its own slice) and run the actor-critic
and the reference over them without gradients; (2) `reward`: score them (or the rewards are set by hand);
(3) `learn`: normalization, clipping and missing-EOS penalty, the per-token rewards -β·KL_t + score and GAE
targets, `ppo_epochs` passes over shuffled minibatches (clipped surrogate + value loss − entropy bonus,
accumulation, grad-norm clipping; early stop past `max_approx_kl`), β's update and the all-reduced metrics.
The session then emits the transformers callback events (`on_step_end`, `on_log`; `on_progress` comes
from within an update), so every stage's monitor serves PPO.

A non-finite advantage, loss or gradient norm skips the update (`train/skipped_nonfinite`); three in a
row abort with an error naming it. Each update reseeds torch from (seed, update, process), so a resumed
run samples what an uninterrupted one would. An interrupt during the optimization is held until the
update ends (`InterruptGuard`), so the weights are always a finished update's.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch
from transformers import TrainerControl, TrainerState

from rlhf_lab.models.chat import tokenize_prompts
from rlhf_lab.rewards import RewardFunction, RunningNorm
from rlhf_lab.stages.ppo.advantages import gae, masked_mean, token_rewards
from rlhf_lab.stages.ppo.batch import RolloutBatch
from rlhf_lab.stages.ppo.callbacks import Callbacks, InterruptGuard
from rlhf_lab.stages.ppo.checkpoint import save_checkpoint
from rlhf_lab.stages.ppo.kl import AdaptiveKLController, FixedKLController
from rlhf_lab.stages.ppo.losses import explained_variance, policy_loss, value_loss
from rlhf_lab.stages.ppo.model import ActorCritic, response_logprobs
from rlhf_lab.stages.ppo.rollout import Rollout, make_generator, make_rollout

MAX_NONFINITE_IN_A_ROW = 3
# Averaged over every minibatch of an update, under TRL's PPO names.
MINIBATCH_METRICS = ("policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg")
MINIBATCH_METRICS += ("val/clipfrac_avg", "policy/entropy_avg", "val/ratio", "val/ratio_var")


class NonFiniteError(FloatingPointError):
    """Raised after MAX_NONFINITE_IN_A_ROW updates in a row were skipped for NaN/inf."""


class PPOTrainer:
    """Runs PPO on an `ActorCritic`. Built by `lab.ppo`, which also handles models and the run folder."""

    def __init__(
        self,
        actor: ActorCritic,
        tokenizer: Any,
        reward_fn: RewardFunction,
        prompts: list,
        config: Any,
        *,
        ref_model: Any = None,
        callbacks: list | None = None,
        output_dir: Any = None,
    ) -> None:
        from accelerate import Accelerator
        from transformers import get_scheduler

        self.config = config
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.prompts = list(prompts)
        self.ref_model = ref_model  # None: the policy with its LoRA adapters disabled
        self.output_dir = output_dir  # where checkpoints go (the run folder)
        self.accelerator = Accelerator(
            cpu=not torch.cuda.is_available(), mixed_precision="bf16" if config.bf16 else "no"
        )
        if config.gradient_checkpointing:
            actor.policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        params = [p for p in actor.parameters() if p.requires_grad]
        optimizer = adamw(params, config.learning_rate)
        total_steps = config.total_updates * config.optimizer_steps_per_update
        # Stepped by hand: accelerate's wrapper would step it once per process.
        self.scheduler = get_scheduler(
            config.lr_scheduler_type, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=total_steps
        )
        self.model, self.optimizer = self.accelerator.prepare(actor, optimizer)
        if ref_model is not None:
            ref_model.to(self.accelerator.device)
        self.kl_ctl = (
            AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
            if config.adaptive_kl
            else FixedKLController(config.kl_coef)
        )
        self.norm = RunningNorm(config.reward_clip) if config.normalize_rewards else None
        self.generator = make_generator(self.actor.policy, tokenizer, config)
        self.state = TrainerState(
            max_steps=config.total_updates, logging_steps=config.logging_steps, save_steps=config.save_every
        )
        self.state.is_world_process_zero = self.accelerator.is_main_process
        self.state.is_local_process_zero = self.accelerator.is_local_main_process
        self.control = TrainerControl()
        self.callbacks = Callbacks(
            callbacks or [],
            model=self.actor,
            processing_class=tokenizer,
            optimizer=self.optimizer,
            lr_scheduler=self.scheduler,
        )
        self.generator.progress = self.callbacks.progress  # rollout tokens as they are sampled
        self.guard = InterruptGuard()
        self.samples: list[dict] = []
        self.nonfinite_in_a_row = 0
        self.start_update = 0

    # ---- the pieces -----------------------------------------------------------------------------

    @property
    def actor(self) -> ActorCritic:
        return self.accelerator.unwrap_model(self.model)

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    def batch_prompts(self, update: int) -> list:
        """This process's prompts for `update`: a seeded shuffle per pass, sliced by process."""
        size = self.config.batch_size
        n = len(self.prompts)
        start = update * size * self.world + self.accelerator.process_index * size
        picked = []
        for position in range(start, start + size):
            epoch, offset = divmod(position, n)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed + epoch))
            picked.append(self.prompts[int(order[offset])])
        return picked

    @torch.no_grad()
    def rollout(self, prompts: list) -> Rollout:
        device = self.accelerator.device
        query = tokenize_prompts(self.tokenizer, prompts).to(device)
        with self.accelerator.autocast():
            tokens = self.generator.generate(self.actor.policy, query["input_ids"], query["attention_mask"])
        return make_rollout(self.tokenizer, prompts, query, tokens, self.config.stop)

    @torch.no_grad()
    def evaluate(self, rollout: Rollout) -> dict[str, torch.Tensor]:
        """Old log-probs, values and reference log-probs, in minibatch-sized chunks."""
        parts: dict[str, list] = {"logprobs": [], "values": [], "ref_logprobs": []}
        size = self.config.mini_batch_size
        length = rollout.response_ids.shape[1]
        for start in range(0, len(rollout), size):
            index = torch.arange(start, min(start + size, len(rollout)))
            chunk = rollout.select(index)
            inputs = chunk.model_inputs()
            width = chunk.response_ids.shape[1]
            with self.accelerator.autocast():
                out = self.actor(*inputs, width)
                ref = self._ref_logprobs(inputs, width)
            for name, value in (("logprobs", out.logprobs), ("values", out.values), ("ref_logprobs", ref)):
                parts[name].append(torch.nn.functional.pad(value.float(), (0, length - width)))
        return {name: torch.cat(values) for name, values in parts.items()}

    def _ref_logprobs(self, inputs: tuple, width: int) -> torch.Tensor:
        temperature = self.config.temperature
        if self.ref_model is not None:
            return response_logprobs(self.ref_model, *inputs, width, temperature)
        with self.actor.policy.disable_adapter():  # LoRA: the base model is the reference
            return response_logprobs(self.actor.policy, *inputs, width, temperature)

    @torch.no_grad()
    def collect(self, update: int, prompts: list | None = None) -> RolloutBatch:
        """Update `update`'s batch: completions for this process's share of its prompts (or `prompts`), and
        the actor-critic's and the reference's passes over them, without gradients. Not scored yet."""
        torch.manual_seed(self.config.seed * 1_000_003 + update * 101 + self.accelerator.process_index)
        started = time.perf_counter()
        rollout = self.rollout(self.batch_prompts(update) if prompts is None else list(prompts))
        self.callbacks.progress("scoring")
        old = self.evaluate(rollout)
        return RolloutBatch(rollout, old, version=update, seconds=time.perf_counter() - started)

    def reward(self, batch: RolloutBatch, reward_fn: RewardFunction | None = None) -> RolloutBatch:
        """Fill in the batch's rewards (and each reward's scores) from `reward_fn`, default the run's."""
        started = time.perf_counter()
        combined, parts = (reward_fn or self.reward_fn).components(batch.prompts, batch.completions)
        batch.rewards, batch.parts = [float(v) for v in combined], parts
        batch.seconds += time.perf_counter() - started
        return batch

    def scores(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores paid, raw scores): the batch's rewards normalized or clipped, less the missing-EOS penalty."""
        raw = torch.as_tensor(batch.checked_rewards(), dtype=torch.float32, device=self.accelerator.device)
        scores = raw
        if self.norm is not None:
            # Every process updates its normalizer with every process's scores: the same state everywhere.
            self.norm.update(self.accelerator.gather(raw) if self.world > 1 else raw)
            scores = self.norm.normalize(raw, update=False)
        elif self.config.reward_clip is not None:
            scores = scores.clamp(-self.config.reward_clip, self.config.reward_clip)
        if self.config.missing_eos_penalty is not None:
            scores = scores - self.config.missing_eos_penalty * (~batch.rollout.ended).float()
        return scores, raw

    # ---- one update -----------------------------------------------------------------------------

    def learn(self, batch: RolloutBatch) -> dict[str, float]:
        """One PPO update from a rewarded batch of the current policy; returns the update's metrics."""
        config, update, rollout, old, parts = self.config, batch.version, batch.rollout, batch.old, batch.parts
        started = time.perf_counter()
        scores, raw = self.scores(batch)
        mask = rollout.response_mask
        beta = self.kl_ctl.value
        shaped = token_rewards(scores, old["logprobs"], old["ref_logprobs"], mask, beta, config.kl_estimator)
        advantages, returns = gae(
            shaped.rewards, old["values"], mask, config.gamma, config.lam, whiten_rewards=config.whiten_rewards
        )
        rollout_s = batch.seconds + time.perf_counter() - started

        started = time.perf_counter()
        self.guard.hold()  # from here on the update changes weights: an interrupt waits for its end
        bad = None if torch.isfinite(advantages).all() and torch.isfinite(returns).all() else "advantages"
        stats, epochs = ({}, 0) if self._any(bad) else self.optimize(rollout, old, advantages, returns, update)
        bad = bad or stats.pop("nonfinite", None)
        update_s = time.perf_counter() - started

        metrics = {name: value for name, value in shaped.metrics().items()}
        tokens = mask.sum()
        metrics.update(
            {
                "objective/entropy": (-torch.where(mask.bool(), old["logprobs"], 0.0)).sum(1).mean(),
                "objective/scores_raw": raw.mean(),
                "objective/kl_coef": torch.tensor(beta),
                "val/num_eos_tokens": rollout.ended.float().sum() * self.world,
                "val/explained_variance": explained_variance(old["values"], returns, mask),
                "val/mean": masked_mean(old["values"], mask),
                "completions/mean_length": mask.sum(1).float().mean(),
                "completions/ended_frac": rollout.ended.float().mean(),
                "policy/epochs": torch.tensor(float(epochs)),
                "time/rollout_s": torch.tensor(rollout_s),
                "time/update_s": torch.tensor(update_s),
                "throughput/tokens_per_s": tokens / (rollout_s + update_s),
                "train/skipped_nonfinite": torch.tensor(float(bad is not None)),
                **{
                    f"objective/scores/{_short(name)}": torch.tensor(sum(v) / len(v))
                    for name, v in parts.items()
                    if len(parts) > 1
                },
                **stats,
            }
        )
        logs = self._reduce(metrics)
        logs["lr"] = self.scheduler.get_last_lr()[0]
        logs["episode"] = (update + 1) * config.batch_size * self.world
        if bad is None:
            self.nonfinite_in_a_row = 0
            self.kl_ctl.update(logs["objective/kl"], len(rollout) * self.world)
        else:
            self.nonfinite_in_a_row += 1
            if self.nonfinite_in_a_row >= MAX_NONFINITE_IN_A_ROW:
                raise NonFiniteError(
                    f"PPO update {update + 1}: the {bad} went non-finite (NaN/inf) in {self.nonfinite_in_a_row} "
                    f"updates in a row, so training stopped. Usual causes: a learning rate too high "
                    f"(now {config.learning_rate}), rewards on a huge scale (try normalize_rewards=true or "
                    f"reward_clip), or fp16 overflow. The last good weights are in the latest checkpoint."
                )
        self._keep_samples(update, rollout, scores, parts)
        return logs

    def optimize(
        self, rollout: Rollout, old: dict, advantages: torch.Tensor, returns: torch.Tensor, update: int
    ) -> tuple[dict, int]:
        """`ppo_epochs` passes of minibatch updates; returns the averaged stats and epochs run."""
        config = self.config
        shuffle = torch.Generator().manual_seed(config.seed * 7919 + update)
        cliprange_value = math.inf if config.cliprange_value is None else config.cliprange_value
        sums: dict[str, float] = {}
        count, epochs_run = 0, 0
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.model.train()
        for _epoch in range(config.ppo_epochs):
            self.callbacks.progress(f"epoch {_epoch + 1}/{config.ppo_epochs}")
            epoch_kl = []
            order = torch.randperm(len(rollout), generator=shuffle)
            for micro, start in enumerate(range(0, len(rollout), config.mini_batch_size)):
                index = order[start : start + config.mini_batch_size]
                chunk = rollout.select(index)
                width = chunk.response_ids.shape[1]
                m = chunk.response_mask
                last = (micro + 1) % config.gradient_accumulation_steps == 0
                with self.accelerator.no_sync(self.model) if not last else contextlib.nullcontext():
                    # the entropy is a metric; it carries a gradient only when the bonus uses it
                    out = self.model(
                        *chunk.model_inputs(), width, with_entropy=True, entropy_grad=config.entropy_coef > 0
                    )
                    pg = policy_loss(
                        out.logprobs, old["logprobs"][index, :width], advantages[index, :width], m, config.cliprange
                    )
                    vf = value_loss(
                        out.values, old["values"][index, :width], returns[index, :width], m, cliprange_value
                    )
                    entropy = masked_mean(out.entropy, m)
                    loss = pg.loss + config.vf_coef * vf.loss - config.entropy_coef * entropy
                    if self._any(None if torch.isfinite(loss) else "loss"):
                        self.optimizer.zero_grad(set_to_none=True)
                        return {"nonfinite": "loss", **_averaged(sums, count)}, epochs_run
                    self.accelerator.backward(loss / config.gradient_accumulation_steps)
                if last:
                    norm = self.accelerator.clip_grad_norm_(params, config.max_grad_norm or math.inf)
                    if self._any(None if torch.isfinite(torch.as_tensor(norm)) else "gradient norm"):
                        self.optimizer.zero_grad(set_to_none=True)
                        return {"nonfinite": "gradient norm", **_averaged(sums, count)}, epochs_run
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                values = (
                    pg.approx_kl,
                    pg.clipfrac,
                    pg.loss,
                    vf.loss,
                    vf.clipfrac,
                    entropy,
                    pg.ratio_mean,
                    pg.ratio_var,
                )
                for name, value in zip(MINIBATCH_METRICS, values):
                    sums[name] = sums.get(name, 0.0) + float(value.detach())
                count += 1
                epoch_kl.append(float(pg.approx_kl))
            epochs_run += 1
            if config.max_approx_kl is not None:
                mean_kl = float(self._reduce({"kl": torch.tensor(sum(epoch_kl) / len(epoch_kl))})["kl"])
                if mean_kl > config.max_approx_kl:
                    break
        return _averaged(sums, count), epochs_run

    def _any(self, reason: str | None) -> bool:
        """Whether any process has a non-finite value (all processes must skip together)."""
        flag = torch.tensor(float(reason is not None), device=self.accelerator.device)
        if self.world > 1:
            flag = self.accelerator.reduce(flag, "sum")
        return bool(flag > 0)

    def _reduce(self, metrics: dict[str, Any]) -> dict[str, float]:
        """Mean over processes, so every process logs the same numbers."""
        names = list(metrics)
        stacked = torch.stack([torch.as_tensor(metrics[n], dtype=torch.float32).reshape(()) for n in names])
        stacked = stacked.to(self.accelerator.device)
        if self.world > 1:
            stacked = self.accelerator.reduce(stacked, "mean")
        return dict(zip(names, stacked.tolist()))

    def _keep_samples(self, update: int, rollout: Rollout, scores: torch.Tensor, parts: dict) -> None:
        parts = {_short(name): values for name, values in parts.items()}
        self.latest_samples = rollout.sample_rows(update + 1, scores, parts, self.config.num_samples)
        self.samples.extend(self.latest_samples)

    # ---- checkpoints --------------------------------------------------------------------------------

    def save_checkpoint(self, update: int, folder: Any = None) -> None:
        """checkpoints/update-N/ in `folder` (default: the run folder)."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            state = {
                "kl_controller": self.kl_ctl.state_dict(),
                "reward_norm": self.norm.state_dict() if self.norm is not None else None,
                "log_history": self.state.log_history,
                "samples": self.samples,
                "nonfinite_in_a_row": self.nonfinite_in_a_row,
            }
            save_checkpoint(folder or self.output_dir, update, self.actor, self.optimizer, self.scheduler, state)
        self.accelerator.wait_for_everyone()

    # ---- what finish_run needs --------------------------------------------------------------------

    def is_world_process_zero(self) -> bool:
        return self.accelerator.is_main_process

    def save_model(self, path: str) -> None:
        """The policy (adapters only with LoRA) and the critic, main process only."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.actor.save(path)


def adamw(params: list, lr: float) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where the parameters' device has one (CPU and CUDA): the same update to
    float rounding (1e-11), about 6x faster on a laptop CPU, and what transformers' Trainer (so every TRL stage)
    uses by default; the for-loop kernel elsewhere."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
    except RuntimeError:  # a device or dtype without the fused kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def _averaged(sums: dict[str, float], count: int) -> dict[str, float]:
    return {name: value / count for name, value in sums.items()} if count else {}


def _short(name: str) -> str:
    """'reward[1] (gold)' -> 'gold' for metric and sample keys."""
    return name.split("(", 1)[1].rstrip(")") if "(" in name else name
