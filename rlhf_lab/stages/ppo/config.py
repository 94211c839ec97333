"""`PPOConfig`: every knob of our PPO engine, checked before any model loads.

Our own dataclass on `RunConfig`, not a transformers `TrainingArguments`: the PPO loop is ours
(rollout, KL, GAE, minibatch updates), so the hundred Trainer fields that would not apply are left
out, and the ones that do keep TRL 1.10's PPO names so configs port over. It reads and writes YAML
through `rlhf_lab.config` (`load_config(PPOConfig, "ppo.yaml", ["kl_coef=0.1"])`, `to_yaml`).

Batch arithmetic, per update:

    batch_size prompts are rolled out, then for each of ppo_epochs epochs they are shuffled into
    batch_size / mini_batch_size minibatches; every gradient_accumulation_steps minibatches make one
    optimizer step. So batch_size must be a multiple of mini_batch_size * gradient_accumulation_steps,
    or the last optimizer step of an epoch would see a partial (differently weighted) batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rlhf_lab.config import ConfigError, RunConfig, default_run_dir
from rlhf_lab.rewards import AGGREGATES
from rlhf_lab.stages.common import gpu_bf16, model_field
from rlhf_lab.stages.ppo.kl import KL_ESTIMATORS, check_kl_estimator

CRITICS: tuple[str, ...] = ("shared", "separate")
BACKENDS: tuple[str, ...] = ("auto", "hf", "vllm")


@dataclass
class PPOConfig(RunConfig):
    """Configuration of one PPO run (`lab.ppo(..., config=PPOConfig(...))`, `rlhf-lab ppo --config`)."""

    output_dir: str = field(
        default_factory=lambda: default_run_dir("ppo"),
        metadata={"help": "The run folder (default: runs/ppo-<time>)."},
    )
    # --- what to train on (as LabFields, for the CLI) -------------------------------------------
    model: str | None = model_field()
    data: str = field(default="starter", metadata={"help": "Prompts file, or 'starter' for the shipped prompts."})
    num_samples: int = field(default=4, metadata={"help": "Completions per update written to samples.jsonl (0: none)."})
    # --- schedule and batch shape ---------------------------------------------------------------
    total_updates: int = field(default=100, metadata={"help": "PPO updates (one rollout of batch_size prompts each)."})
    batch_size: int = field(default=16, metadata={"help": "Prompts rolled out per update."})
    mini_batch_size: int = field(
        default=4, metadata={"help": "Rollouts per forward/backward pass; batch_size must divide evenly."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Minibatches per optimizer step."})
    ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch per update."})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate (policy and critic)."})
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
    reward: str | None = field(
        default=None,
        metadata={
            "help": "From the CLI: a reward run folder or model folder, task:NAME (a gold task, e.g. "
            "task:concise), or 'module:function' naming a Python f(prompts, completions) -> list[float]."
        },
    )
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "With a list of rewards: a weighted sum, one weight per reward."}
    )
    reward_aggregate: str = field(
        default="mean",
        metadata={"help": "With a list of rewards and no weights: 'mean' or 'mean_minus_std'."},
    )
    reward_lam: float = field(default=1.0, metadata={"help": "λ of mean - λ·std (reward_aggregate)."})
    # --- model and optimisation details ----------------------------------------------------------
    lora_r: int = field(
        default=0,
        metadata={
            "help": "LoRA rank (0: train every weight). With LoRA the reference is the base with the "
            "adapters disabled: no second copy."
        },
    )
    lr_scheduler_type: str = field(
        default="linear",
        metadata={"help": "transformers scheduler name over all optimizer steps (linear, constant...)."},
    )
    warmup_steps: int = field(default=0, metadata={"help": "Learning-rate warm-up, in optimizer steps."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 autocast; default: on a GPU that supports it, never on CPU."}
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in the backward pass: less memory, slower."}
    )
    generation_backend: str = field(
        default="auto",
        metadata={
            "help": "'hf' (transformers generate with KV cache), 'vllm' (GPU, weights synced after each "
            "update) or 'auto': vLLM when it is installed and a GPU is present, else hf."
        },
    )
    monitor: bool = field(default=True, metadata={"help": "Attach a LiveMonitor (live plots, monitor.html, alerts)."})
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
        super().__post_init__()
        if self.bf16 is None:
            self.bf16 = gpu_bf16()
        # Each message names the field, the value and a fix: a config error is read by a person.
        for name in (
            "total_updates",
            "batch_size",
            "mini_batch_size",
            "gradient_accumulation_steps",
            "ppo_epochs",
            "max_new_tokens",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}. Fix: set {name} >= 1.")
        for name, example in (("learning_rate", "1.0e-5"), ("temperature", "1.0")):
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                raise ConfigError(f"{name} must be a number > 0, got {value!r}. Fix: e.g. {name}={example}.")
        per_step = self.mini_batch_size * self.gradient_accumulation_steps
        if self.batch_size % per_step:
            raise ConfigError(
                f"batch_size={self.batch_size} is not divisible by mini_batch_size x gradient_accumulation_steps "
                f"= {self.mini_batch_size} x {self.gradient_accumulation_steps} = {per_step}. Fix: set batch_size "
                f"to a multiple of {per_step}, or lower mini_batch_size / gradient_accumulation_steps."
            )
        if not _finite(self.cliprange) or self.cliprange <= 0:
            raise ConfigError(f"cliprange must be > 0, got {self.cliprange!r}. Fix: e.g. cliprange=0.2.")
        if self.cliprange_value is not None and (not _finite(self.cliprange_value) or self.cliprange_value <= 0):
            raise ConfigError(
                f"cliprange_value must be > 0 or None (unclipped), got {self.cliprange_value!r}. "
                f"Fix: e.g. cliprange_value=0.2."
            )
        if not _finite(self.kl_coef) or self.kl_coef < 0:
            raise ConfigError(f"kl_coef must be >= 0, got {self.kl_coef!r}. Fix: e.g. kl_coef=0.05 (0: no KL).")
        for name in ("gamma", "lam"):
            value = getattr(self, name)
            if not _finite(value) or not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"{name} must be in [0, 1], got {value!r}. Fix: e.g. {name}=1.0 for gamma, 0.95 for lam."
                )
        try:
            check_kl_estimator(self.kl_estimator)
        except ValueError as err:
            raise ConfigError(f"kl_estimator: {err}. Fix: set kl_estimator to one of them.") from err
        if self.target_kl is not None and (not _finite(self.target_kl) or self.target_kl <= 0):
            raise ConfigError(f"target_kl must be > 0 or None, got {self.target_kl!r}. Fix: e.g. target_kl=6.0.")
        if self.adaptive_kl:
            if self.target_kl is None:
                raise ConfigError(
                    "adaptive_kl needs a positive target_kl, got None. Fix: set target_kl "
                    "(e.g. 6.0), or adaptive_kl=false for a fixed kl_coef."
                )
            if self.kl_coef <= 0:
                # The controller is multiplicative: a β of 0 could never move.
                raise ConfigError(
                    f"adaptive_kl needs kl_coef > 0 as the starting β, got {self.kl_coef!r}. Fix: e.g. kl_coef=0.05."
                )
        if isinstance(self.kl_horizon, bool) or not isinstance(self.kl_horizon, int) or self.kl_horizon < 1:
            raise ConfigError(f"kl_horizon must be a positive integer, got {self.kl_horizon!r}. Fix: e.g. 10000.")
        if self.critic not in CRITICS:
            raise ConfigError(
                f"critic must be one of {', '.join(map(repr, CRITICS))}, got {self.critic!r}. "
                f"Fix: critic='shared' (value head on the policy) or 'separate'."
            )
        if not _finite(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p!r}. Fix: top_p=1.0 turns it off.")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError(f"top_k must be an integer >= 0, got {self.top_k!r}. Fix: top_k=0 turns it off.")
        if self.reward_clip is not None and (not _finite(self.reward_clip) or self.reward_clip <= 0):
            raise ConfigError(f"reward_clip must be > 0 or None, got {self.reward_clip!r}. Fix: e.g. reward_clip=5.0.")
        if self.missing_eos_penalty is not None and not _finite(self.missing_eos_penalty):
            raise ConfigError(f"missing_eos_penalty must be a finite number or None, got {self.missing_eos_penalty!r}.")
        for name in ("vf_coef", "entropy_coef"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value!r}. Fix: e.g. {name}=0.1.")
        if self.max_grad_norm is not None and (not _finite(self.max_grad_norm) or self.max_grad_norm <= 0):
            raise ConfigError(f"max_grad_norm must be > 0 or None (no clipping), got {self.max_grad_norm!r}.")
        for name in ("save_every", "num_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}. Fix: 0 turns it off.")
        if self.max_approx_kl is not None and (not _finite(self.max_approx_kl) or self.max_approx_kl <= 0):
            raise ConfigError(f"max_approx_kl must be > 0 or None, got {self.max_approx_kl!r}. Fix: e.g. 0.02.")
        if self.reward_aggregate not in AGGREGATES:
            raise ConfigError(
                f"reward_aggregate must be one of {', '.join(AGGREGATES)}, got "
                f"{self.reward_aggregate!r}. Fix: reward_aggregate=mean."
            )
        if self.generation_backend not in BACKENDS:
            raise ConfigError(
                f"generation_backend must be one of {', '.join(BACKENDS)}, got "
                f"{self.generation_backend!r}. Fix: generation_backend=auto."
            )
        for name in ("lora_r", "warmup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}.")
        if not isinstance(self.stop, list) or not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(
                f"stop must be a list of non-empty strings, got {self.stop!r}. Fix: e.g. stop: ['\\n\\n']."
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


def _finite(value: object) -> bool:
    """A real number that is not NaN or ±inf (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
