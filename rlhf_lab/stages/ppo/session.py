"""Step through PPO by hand: roll out, look, score (or set the rewards yourself), update.

    session = lab.PPOSession(policy, reward=rm, prompts=prompts, config=lab.PPOConfig(batch_size=8))
    batch = session.rollout()          # a RolloutBatch: shown as a table of prompt, completion, reward
    session.score(batch)               # the session's reward; or score(batch, reward=f); or
    batch.rewards = [1.0, 0.0, ...]    # one number per completion, by hand
    metrics = session.step(batch)      # KL penalty, advantages, PPO epochs: the same metrics and monitor
    session.save()                     # a checkpoint, the format resume_from reads (PPOSession.load)
    run = session.finish()             # the run folder, as lab.ppo writes it

`lab.ppo` is this loop (`train`: rollout, score, step, for config.total_updates updates), so the session is
the same engine with nothing copied: one update is `PPOTrainer.collect`, `.reward` and `.learn`.
`step` takes only a rewarded batch rolled out by the current policy (PPO's ratio compares with the policy
that sampled it); anything else is refused with a BatchError that says why.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from rlhf_lab import defaults
from rlhf_lab.config import ConfigError
from rlhf_lab.data import describe_source
from rlhf_lab.models import as_reward_model
from rlhf_lab.models.lora import apply_lora
from rlhf_lab.rewards import RewardFunction, as_scorer
from rlhf_lab.runs import RunResult
from rlhf_lab.stages.common import resolve_prompts, resolve_reward, start_run
from rlhf_lab.stages.plan import announce
from rlhf_lab.stages.ppo.batch import BatchError, RolloutBatch
from rlhf_lab.stages.ppo.checkpoint import find_checkpoint, load_checkpoint, restore
from rlhf_lab.stages.ppo.config import PPOConfig
from rlhf_lab.stages.ppo.model import ActorCritic, ValueHead, disable_dropout
from rlhf_lab.stages.ppo.trainer import PPOTrainer
from rlhf_lab.stages.reference import borrowed, policy_and_reference


class PPOSession:
    """One PPO run, an update at a time. `policy`, `reward`, `prompts`, `config`, `ref`, `value`, `callbacks`,
    `resume_from` and `lora` are `lab.ppo`'s. `reward` may be None here (then every batch's rewards are set by
    hand or given to `score`); the prompts are where `rollout()` takes its batches from."""

    def __init__(
        self,
        policy: Any = None,
        reward: Any = None,
        prompts: Any = None,
        config: PPOConfig | None = None,
        *,
        ref: Any = None,
        value: Any = None,
        callbacks: list | None = None,
        resume_from: Any = None,
        lora: Any = None,
    ) -> None:
        config = self.config = config or PPOConfig()
        reward = config.reward if reward is None else reward
        self.prompt_list = resolve_prompts(config.data if prompts is None else prompts)
        resume_from = config.resume_from if resume_from is None else resume_from
        self.checkpoint = find_checkpoint(resume_from) if resume_from is not None else None
        self.reward_fn = None if reward is None else self._scorer(reward)
        self.run = start_run("ppo", config, callbacks)
        self.bundle, reference, spec, self.reference_kind = policy_and_reference(
            policy, config, ref=ref, lora=lora, copy_adapter=True
        )
        self.plan = announce(config, "ppo", self.bundle.model, self.prompt_list)
        self.resolved = defaults.resolve(config, "ppo", self.bundle.model, lora=bool(spec))
        if spec:
            self.bundle.model = apply_lora(self.bundle.model, spec, seed=config.seed)
        actor = _actor_critic(self.bundle, self.reward_fn, value, config)
        disable_dropout(actor)
        self._borrowed = borrowed(reference)
        self._borrowed.__enter__()  # the caller's model serves as the reference until finish()
        try:
            self.trainer = PPOTrainer(
                actor, self.bundle.tokenizer, self.reward_fn, self.prompt_list, config,
                ref_model=reference, callbacks=self.run.callbacks, output_dir=self.run.path,
            )  # fmt: skip
            if self.checkpoint is not None:
                trainer = self.trainer
                restore(trainer, load_checkpoint(self.checkpoint, trainer.actor, trainer.optimizer, trainer.scheduler))
                for row in trainer.state.log_history:  # the resumed run's metrics.jsonl starts as the original's
                    self.run.log(row)
        except BaseException:
            self._borrowed.__exit__(None, None, None)  # the caller's model back as it was
            raise
        self.data = describe_source(config.data if prompts is None else prompts)
        self.began = self.finished = False

    @classmethod
    def load(cls, path: Any, policy: Any = None, reward: Any = None, prompts: Any = None, **kwargs) -> PPOSession:
        """A session that continues from `path` (a checkpoint folder, or a folder holding checkpoints/), as
        `resume_from` does: build it with the same policy, config and lora settings as the one saved."""
        return cls(policy, reward, prompts, resume_from=path, **kwargs)

    # ---- what the trainer's state is -------------------------------------------------------------------

    @property
    def updates(self) -> int:
        """Updates done so far (a resumed session counts the ones before it)."""
        return self.trainer.state.global_step

    @property
    def state(self):  # what run_trainer and Run.finish read
        return self.trainer.state

    @property
    def policy(self) -> Any:
        return self.trainer.actor.policy

    # ---- one update, by hand ----------------------------------------------------------------------------

    def rollout(self, prompts: Any = None) -> RolloutBatch:
        """The next update's batch: completions for its `batch_size` prompts (or for `prompts`), with the
        policy's log-probs and values and the reference's log-probs. Not scored yet."""
        self._begin()
        chosen = None if prompts is None else resolve_prompts(prompts)
        return self.trainer.collect(self.updates, chosen)

    def score(self, batch: RolloutBatch, reward: Any = None) -> RolloutBatch:
        """Fill in `batch.rewards` from `reward` (anything `lab.ppo` takes), default the session's."""
        if reward is None and self.reward_fn is None:
            raise BatchError(
                "this session has no reward to score with. Fix: session.score(batch, reward=...), or set "
                "batch.rewards = [one number per completion], or give PPOSession a reward."
            )
        return self.trainer.reward(batch, None if reward is None else self._scorer(reward))

    def step(self, batch: RolloutBatch) -> dict[str, float]:
        """One PPO update from `batch`: returns its metrics (also logged, as `lab.ppo` logs them)."""
        with self.trainer.guard:
            return self._step(batch)

    def _step(self, batch: RolloutBatch) -> dict[str, float]:
        if self.finished:
            raise BatchError("this session has finished. Fix: start a new one, or PPOSession.load(a checkpoint).")
        if batch.version != self.updates:
            raise BatchError(
                f"this batch was rolled out by the policy after {batch.version} updates; it has had {self.updates} "
                f"since. PPO's ratio needs the policy that sampled the batch. Fix: batch = session.rollout() again."
            )
        batch.checked_rewards()
        logs = self.trainer.learn(batch)
        self.stop_requested = self._end_update(batch.version, logs)
        return logs

    def save(self, path: Any = None) -> Path:
        """A checkpoint after the last update, in `path` (default: the run folder) under checkpoints/: what
        `PPOSession.load(path)` and `lab.ppo(resume_from=path)` continue from exactly."""
        folder = Path(path) if path is not None else self.run.path
        self.trainer.save_checkpoint(self.updates, folder)
        return find_checkpoint(folder)

    # ---- the whole run (lab.ppo) --------------------------------------------------------------------------

    def train(self) -> None:
        """`config.total_updates` updates (from where a resumed session stands): rollout, score, step, until
        the end or a Stop. What `lab.ppo` runs, through `run_trainer`."""
        self._begin()
        self.stop_requested = False
        while self.updates < self.config.total_updates and not self.stop_requested:
            with self.trainer.guard:
                batch = self.rollout()
                self.score(batch)
                self._step(batch)

    def finish(self) -> RunResult:
        """The run folder (weights, samples, summary, model card), as `lab.ppo` writes it; ends the session."""
        trainer, run = self.trainer, self.run
        if run.ended == "interrupted" and trainer.start_update < trainer.completed == trainer.state.global_step:
            trainer.save_checkpoint(trainer.completed)  # resume_from continues after the last finished update
        if self.began:
            trainer.callbacks.on_train_end(self.config, trainer.state, trainer.control)
        self._borrowed.__exit__(None, None, None)
        self.finished = True
        actor = trainer.actor
        actor.eval()
        self.bundle.model = actor.policy
        summary = {
            "data": self.data,
            "reference": self.reference_kind,
            "critic": self.config.critic,
            "prompts": len(self.prompt_list),
            "reward": self.reward_fn.names if self.reward_fn is not None else ["set by hand"],
            "kl_coef_final": trainer.kl_ctl.value,
            "resumed_from": str(self.checkpoint) if self.checkpoint else None,
            "defaults": self.resolved,
            "plan": self.plan,
        }
        return run.finish(trainer, self.bundle, summary=summary, samples=trainer.samples)

    def save_model(self, path: str) -> None:  # what Run.finish calls on a trainer
        self.trainer.save_model(path)

    # ---- the pieces ---------------------------------------------------------------------------------------

    def _begin(self) -> None:
        if not self.began:
            self.began = True
            self.trainer.callbacks.on_train_begin(self.config, self.trainer.state, self.trainer.control)
            self.trainer.completed = self.trainer.start_update  # updates whose weights, metrics, checkpoint are done

    def _end_update(self, update: int, logs: dict[str, float]) -> bool:
        """After update `update`: the generator's weights, the trainer state, `on_step_end`, `on_log` (every
        logging_steps) and a checkpoint (every save_every, and at a Stop); True when a Stop asks to end."""
        trainer, config = self.trainer, self.config
        trainer.generator.sync(trainer.actor.policy)
        trainer.state.global_step = update + 1
        trainer.state.epoch = logs["episode"] / max(1, len(self.prompt_list))
        trainer.control = trainer.callbacks.on_step_end(config, trainer.state, trainer.control)
        stop = trainer.control.should_training_stop  # monitor.stop(): a clean end after this update
        if (update + 1) % config.logging_steps == 0 or update + 1 == config.total_updates:
            trainer.state.log_history.append({**logs, "step": update + 1})
            trainer.callbacks.on_log(
                config, trainer.state, trainer.control, {**logs, "samples": trainer.latest_samples}
            )
        if stop or (config.save_every and (update + 1) % config.save_every == 0):
            trainer.save_checkpoint(update + 1)
        trainer.completed = update + 1
        return stop

    def _scorer(self, reward: Any) -> RewardFunction:
        config = self.config
        return as_scorer(
            resolve_reward(reward), weights=config.reward_weights, aggregate=config.reward_aggregate,
            lam=config.reward_lam,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"PPOSession({self.run.path}, updates={self.updates}/{self.config.total_updates})"


def _actor_critic(bundle, reward_fn: RewardFunction | None, value: Any, config: PPOConfig) -> ActorCritic:
    if config.critic == "shared" and value is None:
        head = ValueHead(bundle.model.config.get_text_config().hidden_size).to(bundle.device)
        return ActorCritic(bundle.model, value_head=head, temperature=config.temperature)
    if value is None and (reward_fn is None or not reward_fn.reward_models):
        raise ConfigError(
            "critic='separate' initializes the value model from the reward model, but the reward has "
            "none (only functions). Fix: pass value=<a reward model>, or use critic='shared'."
        )
    source = value if value is not None else reward_fn.reward_models[0]
    critic = as_reward_model(source)
    if critic.tokenizer.get_vocab() != bundle.tokenizer.get_vocab():
        raise ConfigError(
            f"the critic ({critic.name}) uses a different tokenizer from the policy ({bundle.name}); "
            f"a separate critic reads the policy's tokens. Fix: use critic='shared', or a value "
            f"model built on the policy's backbone (lab.load_reward_model(policy))."
        )
    model = copy.deepcopy(critic.model).to(bundle.device).requires_grad_(True)
    return ActorCritic(bundle.model, critic=model, temperature=config.temperature)
