"""The TRL stage configs' side of the lab config: fields only TRL stages have, and TRL defaults that suit a lab.

    @dataclass
    class SFTConfig(TRLStageConfig, trl.SFTConfig): ...

The shared lab fields (model, data, num_samples, monitor, lora_r, bf16) and their checks come from
`rlhf_lab.config.LabConfig`, which `PPOConfig` uses too; what is here has no meaning for our PPO
engine (save_strategy, use_cpu, an effective batch over processes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhf_lab.config import ConfigError, LabConfig


@dataclass
class TRLStageConfig(LabConfig):
    """The lab's fields for a TRL config, and the lab's defaults for some of TRL's.

    Put first among the bases (`class SFTConfig(TRLStageConfig, trl.SFTConfig)`) so these win.
    """

    eval_data: str | None = field(default=None, metadata={"help": "Held-out data file, or 'starter'."})
    batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Effective batch per optimizer step; sets gradient_accumulation_steps = batch_size / "
            "(per_device_train_batch_size x processes), which must divide evenly."
        },
    )
    # TRL / transformers defaults that do not suit a lab on a laptop:
    save_strategy: Any = field(default="no", metadata={"help": "Final weights are always saved; checkpoints: 'steps'."})
    logging_steps: float = field(default=5, metadata={"help": "Log every N optimizer steps."})
    activation_checkpointing: bool | None = field(default=False, metadata={"help": "Trade compute for memory."})
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Old name of activation_checkpointing."}
    )

    def __post_init__(self) -> None:
        if not torch.cuda.is_available():
            # Without this, processes started by `accelerate launch` on a CPU-only machine each
            # train alone; with it, accelerate joins them in one gloo process group.
            self.use_cpu = True
        if self.run_name is None and self.output_dir:
            self.run_name = Path(self.output_dir).name
        super().__post_init__()  # LabConfig's checks, then TRL's own set-up
        if self.batch_size is not None:
            per_step = self.per_device_train_batch_size * self.world_size
            if self.batch_size < 1 or self.batch_size % per_step:
                raise ConfigError(
                    f"batch_size={self.batch_size} is not a multiple of per_device_train_batch_size x processes "
                    f"= {self.per_device_train_batch_size} x {self.world_size} = {per_step}. Fix: set batch_size "
                    f"to a multiple of {per_step}, or change per_device_train_batch_size."
                )
            self.gradient_accumulation_steps = self.batch_size // per_step
