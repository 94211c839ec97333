"""`PPOConfig`: every knob of our PPO engine, checked before any model loads.

Our own dataclass on `RunConfig`, not a transformers `TrainingArguments`: the PPO loop is ours
(rollout, KL, GAE, minibatch updates), so the hundred Trainer fields that would not apply are left
out, and the ones that do keep TRL 1.10's PPO names so configs port over. The lab's shared fields
(model, data, num_samples, monitor, lora_r, bf16) come from `LabConfig`, as for the TRL stages, and
the online ones (reward, generation_backend) from `OnlineConfig`, as for GRPO and RLOO.
It reads and writes YAML through `rlhf_lab.config` (`load_config(PPOConfig, "ppo.yaml",
["kl_coef=0.1"])`, `to_yaml`).

Checks: `RULES`, one line per field (see `rlhf_lab.config.Rule`), then the few that span fields.

Batch arithmetic, per update:

    batch_size prompts are rolled out, then for each of ppo_epochs epochs they are shuffled into
    batch_size / mini_batch_size minibatches; every gradient_accumulation_steps minibatches make one
    optimizer step. So batch_size must be a multiple of mini_batch_size * gradient_accumulation_steps,
    or the last optimizer step of an epoch would see a partial (differently weighted) batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf_lab.config import (
    ConfigError,
    LabConfig,
    Rule,
    RunConfig,
    check_rules,
    count,
    default_run_dir,
    number,
    one_of,
    optional,
    positive_int,
)
from rlhf_lab.defaults import derived_rate
from rlhf_lab.rewards import AGGREGATES
from rlhf_lab.stages.online import OnlineConfig
from rlhf_lab.stages.ppo.kl import KL_ESTIMATORS, check_kl_estimator

CRITICS: tuple[str, ...] = ("shared", "separate")


# Each message names the field, the value and a fix: a config error is read by a person.
RULES: dict[str, Rule] = {
    "total_updates": positive_int(),
    "batch_size": positive_int(),
    "mini_batch_size": positive_int(),
    "gradient_accumulation_steps": positive_int(),
    "ppo_epochs": positive_int(),
    "max_new_tokens": positive_int(),
    "temperature": number(0, above=True, what="a number", fix="e.g. temperature=1.0"),
    "cliprange": number(0, above=True, fix="e.g. cliprange=0.2"),
    "cliprange_value": optional(number(0, above=True, fix="e.g. cliprange_value=0.2"), "unclipped"),
    "kl_coef": number(0, fix="e.g. kl_coef=0.05 (0: no KL)"),
    "gamma": number(0, 1, fix="e.g. gamma=1.0"),
    "lam": number(0, 1, fix="e.g. lam=0.95"),
    "target_kl": optional(number(0, above=True, fix="e.g. target_kl=6.0")),
    "kl_horizon": positive_int("e.g. kl_horizon=10000"),
    "critic": one_of(CRITICS, "critic='shared' (value head on the policy) or 'separate'"),
    "top_p": number(0, 1, above=True, fix="top_p=1.0 turns it off"),
    "top_k": count("top_k=0 turns it off"),
    "reward_clip": optional(number(0, above=True, fix="e.g. reward_clip=5.0")),
    "missing_eos_penalty": optional(number()),
    "vf_coef": number(0, fix="e.g. vf_coef=0.1"),
    "entropy_coef": number(0, fix="e.g. entropy_coef=0.0"),
    "max_grad_norm": optional(number(0, above=True, fix="e.g. max_grad_norm=1.0"), "no clipping"),
    "save_every": count("0 turns it off"),
    "max_approx_kl": optional(number(0, above=True, fix="e.g. max_approx_kl=0.02")),
    "reward_aggregate": one_of(AGGREGATES, "reward_aggregate=mean"),
    "warmup_steps": count("0: no warm-up"),
    "stop": Rule(
        lambda v: isinstance(v, list) and all(isinstance(s, str) and s for s in v),
        "a list of non-empty strings",
        "e.g. stop: ['\\n\\n']",
    ),
}


@dataclass
class PPOConfig(OnlineConfig, LabConfig, RunConfig):
    """Configuration of one PPO run (`lab.ppo(..., config=PPOConfig(...))`, `rlhf-lab ppo --config`)."""

    output_dir: str = field(
        default_factory=lambda: default_run_dir("ppo"),
        metadata={"help": "The run folder (default: runs/ppo-<time>)."},
    )
    # --- schedule and batch shape ---------------------------------------------------------------
    total_updates: int = field(default=40, metadata={"help": "PPO updates (one rollout of batch_size prompts each)."})
    batch_size: int = field(default=16, metadata={"help": "Prompts rolled out per update."})
    mini_batch_size: int = field(
        default=4, metadata={"help": "Rollouts per forward/backward pass; batch_size must divide evenly."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Minibatches per optimizer step."})
    ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch per update."})
    learning_rate: float = field(
        default=derived_rate("ppo"),
        metadata={"help": "AdamW learning rate (policy and critic); default: derived from the model's size."},
    )
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Global grad-norm clip; None: no clipping."})
    # --- sampling -------------------------------------------------------------------------------
    max_new_tokens: int = field(default=64, metadata={"help": "Longest completion, in tokens."})
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature; log-probs use logits / temperature too."}
    )
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling; 1.0 is off."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling; 0 is off."})
    stop: list[str] = field(
        default_factory=list,
        metadata={"help": "Stop strings: a completion ends at the first one, later tokens are masked."},
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={"help": "Subtracted from the score of completions that end without EOS or a stop string."},
    )
    # --- rewards --------------------------------------------------------------------------------
    normalize_rewards: bool = field(
        default=False, metadata={"help": "Normalize scores with running mean/std over the run."}
    )
    reward_clip: float | None = field(
        default=None, metadata={"help": "Clip scores to [-c, c] (after normalization); None: off."}
    )
    whiten_rewards: bool = field(
        default=False, metadata={"help": "Whiten per-token rewards within each batch before GAE."}
    )
    # --- KL -------------------------------------------------------------------------------------
    kl_coef: float = field(
        default=0.05, metadata={"help": "β of the per-token penalty -β·KL (initial β with adaptive_kl)."}
    )
    kl_estimator: str = field(default="k1", metadata={"help": f"Per-token KL estimator: {', '.join(KL_ESTIMATORS)}."})
    adaptive_kl: bool = field(
        default=False, metadata={"help": "Adapt β towards target_kl (Ziegler et al.); else β is fixed."}
    )
    target_kl: float | None = field(
        default=None,
        metadata={
            "help": "Target per-sequence KL (objective/kl) for adaptive_kl, e.g. 6.0; the monitor also "
            "flags KL far beyond it. None: no target."
        },
    )
    kl_horizon: int = field(
        default=10000, metadata={"help": "Samples for the adaptive controller to react (Ziegler's horizon)."}
    )
    # --- losses and advantages ------------------------------------------------------------------
    cliprange: float = field(default=0.2, metadata={"help": "PPO ratio clip ε."})
    cliprange_value: float | None = field(
        default=0.2, metadata={"help": "Value-loss clip around the rollout values; None: unclipped."}
    )
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    entropy_coef: float = field(default=0.0, metadata={"help": "Weight of the entropy bonus."})
    gamma: float = field(default=1.0, metadata={"help": "GAE discount γ in [0, 1]."})
    lam: float = field(default=0.95, metadata={"help": "GAE λ in [0, 1]."})
    critic: str = field(
        default="shared",
        metadata={
            "help": "'shared': value head on the policy trunk; 'separate': a value model "
            "initialized from the reward model (PPO-Max)."
        },
    )
    max_approx_kl: float | None = field(
        default=None,
        metadata={
            "help": "Skip the rest of an update's PPO epochs once an epoch's mean per-token approx-KL "
            "(policy/approxkl) exceeds this, e.g. 0.02. None: always run ppo_epochs."
        },
    )
    # --- rewards: combining several ---------------------------------------------------------------
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "With a list of rewards: a weighted sum, one weight per reward."}
    )
    reward_aggregate: str = field(
        default="mean",
        metadata={"help": "With a list of rewards and no weights: 'mean' or 'mean_minus_std'."},
    )
    reward_lam: float = field(default=1.0, metadata={"help": "λ of mean - λ·std (reward_aggregate)."})
    # --- model and optimisation details ----------------------------------------------------------
    lr_scheduler_type: str = field(
        default="linear",
        metadata={"help": "transformers scheduler name over all optimizer steps (linear, constant...)."},
    )
    warmup_steps: int = field(default=0, metadata={"help": "Learning-rate warm-up, in optimizer steps."})
    gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "Recompute activations in the backward pass: less memory, slower (with LoRA on the embedded "
            "model: peak RSS 2.5 -> 1.95 GiB, about 1.3x the time per update)."
        },
    )
    # --- bookkeeping ----------------------------------------------------------------------------
    save_every: int = field(
        default=0, metadata={"help": "Checkpoint every N updates (for resume_from); 0: final weights only."}
    )
    resume_from: str | None = field(
        default=None,
        metadata={"help": "From the CLI: continue from a checkpoint folder, or a run folder's latest checkpoint."},
    )
    logging_steps: int = field(default=1, metadata={"help": "Log metrics every N updates."})

    def __post_init__(self) -> None:
        super().__post_init__()  # the online fields' checks, LabConfig's, then RunConfig's
        check_rules(self, RULES)
        per_step = self.mini_batch_size * self.gradient_accumulation_steps
        if self.batch_size % per_step:
            raise ConfigError(
                f"batch_size={self.batch_size} is not divisible by mini_batch_size x gradient_accumulation_steps "
                f"= {self.mini_batch_size} x {self.gradient_accumulation_steps} = {per_step}. Fix: set batch_size "
                f"to a multiple of {per_step}, or lower mini_batch_size / gradient_accumulation_steps."
            )
        try:
            check_kl_estimator(self.kl_estimator)
        except ValueError as err:
            raise ConfigError(f"kl_estimator: {err}. Fix: set kl_estimator to one of them.") from err
        if self.adaptive_kl and self.target_kl is None:
            raise ConfigError(
                "adaptive_kl needs a positive target_kl, got None. Fix: set target_kl "
                "(e.g. 6.0), or adaptive_kl=false for a fixed kl_coef."
            )
        if self.adaptive_kl and self.kl_coef <= 0:
            # The controller is multiplicative: a β of 0 could never move.
            raise ConfigError(
                f"adaptive_kl needs kl_coef > 0 as the starting β, got {self.kl_coef!r}. Fix: e.g. kl_coef=0.05."
            )

    @property
    def process_index(self) -> int:
        """This process's rank under `accelerate launch` (0 otherwise), as TrainingArguments has it."""
        return _state().process_index

    @property
    def world_size(self) -> int:
        return _state().num_processes

    @property
    def minibatches_per_epoch(self) -> int:
        return self.batch_size // self.mini_batch_size

    @property
    def optimizer_steps_per_update(self) -> int:
        return self.ppo_epochs * self.batch_size // (self.mini_batch_size * self.gradient_accumulation_steps)


def _state():
    """accelerate's process state; on a machine without CUDA, processes join over gloo (`cpu=True`), as
    the TRL stages' `use_cpu` does, else `accelerate launch` on CPU would start lone processes."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
