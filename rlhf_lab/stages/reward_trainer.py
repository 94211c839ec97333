"""TRL's RewardTrainer with the same loss, computed a few pairs at a time.

TRL pads a batch's chosen and rejected responses to its longest sequence and runs them through the model in
one forward pass. On the starter pairs about 44% of such a batch is padding, and the activations of the whole
batch stay in memory until the backward pass. The Bradley-Terry loss is a mean over pairs, so it splits:

    loss = sum over chunks of (sum over the chunk's pairs of -log sigmoid(r_chosen - r_rejected [- margin])) / B

`ChunkedRewardTrainer` sorts the batch's pairs by length, runs them in chunks of at most `CHUNK_TOKENS` padded
tokens (each chunk padded only to its own longest sequence) and back-propagates each chunk as soon as its
loss is known, so one chunk's activations are alive at a time. The gradient, the logged loss and TRL's
metrics (rewards, accuracy, margin, tokens) are the same as TRL's up to float rounding; only the order of
the additions changes. DeepSpeed (which owns the backward pass) keeps TRL's own step.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import trl
from accelerate.utils import DistributedType
from torch import nn

CHUNK_TOKENS = 512  # padded tokens per forward pass (chosen and rejected of the chunk's pairs): small, on a CPU


def pair_chunks(lengths: torch.Tensor, budget: int = CHUNK_TOKENS) -> list[torch.Tensor]:
    """Pair indices, longest pairs first, grouped so that 2 x pairs x the chunk's longest <= `budget`
    (a pair longer than that is a chunk of its own). `lengths`: (2B,) real lengths, chosen then rejected."""
    pairs = lengths.shape[0] // 2
    longest = torch.maximum(lengths[:pairs], lengths[pairs:])
    order = torch.argsort(longest, descending=True, stable=True).tolist()
    chunks, current = [], []
    for index in order:
        width = int(longest[current[0]]) if current else int(longest[index])
        if current and 2 * (len(current) + 1) * width > budget:
            chunks.append(torch.tensor(current))
            current = []
        current.append(index)
    if current:
        chunks.append(torch.tensor(current))
    return chunks


class ChunkedRewardTrainer(trl.RewardTrainer):
    """`trl.RewardTrainer`, a few pairs at a time; see the module docstring."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs or self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        lengths = mask.sum(1)  # the collator pads on the right
        pairs = ids.shape[0] // 2
        chunks = pair_chunks(lengths)
        backward_now = mode == "train" and torch.is_grad_enabled()
        rewards = torch.empty(ids.shape[0], device=ids.device)
        done, loss = torch.zeros((), device=ids.device), None
        for k, chunk in enumerate(chunks):
            rows = torch.cat([chunk, chunk + pairs]).to(ids.device)
            width = int(lengths[rows].max())
            early = backward_now and k < len(chunks) - 1  # back-propagated here; the last one by the Trainer
            with self.accelerator.no_sync(model) if early else contextlib.nullcontext():
                out = model(input_ids=ids[rows, :width], attention_mask=mask[rows, :width], use_cache=False)
                scores = out.logits.squeeze(-1)
                loss = self._pair_loss(scores, inputs.get("margin"), chunk, pairs)
                if early:
                    self.accelerator.backward(loss * self._backward_scale(num_items_in_batch))
            rewards[rows] = scores.detach().float()
            if k < len(chunks) - 1:
                done = done + loss.detach()
        self._log_batch(mode, rewards, mask)
        return loss + done  # the value of the whole loss; its gradient flows only into the last chunk

    def _pair_loss(self, scores: torch.Tensor, margins: Any, chunk: torch.Tensor, pairs: int) -> torch.Tensor:
        chosen, rejected = torch.chunk(scores, chunks=2)
        diff = chosen - rejected
        if margins is not None:
            diff = diff - margins[chunk.to(margins.device)]
        loss = -nn.functional.logsigmoid(diff).sum() / pairs
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * ((chosen + rejected) ** 2).sum() / pairs
        return loss

    def _backward_scale(self, num_items_in_batch: Any) -> float:
        """What the Trainer divides a loss by before its backward pass (gradient accumulation), as it does."""
        scaled = self.loss_is_scaled_for_ga
        if scaled is None:
            scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or bool(self.compute_loss_func)
        return 1.0 if scaled else 1.0 / self.current_gradient_accumulation_steps

    @torch.no_grad()
    def _log_batch(self, mode: str, rewards: torch.Tensor, mask: torch.Tensor) -> None:
        """TRL's metrics of a batch, from its rewards (chosen first, then rejected)."""
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(mask.sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        metrics = self._metrics[mode]
        metrics["num_tokens"] = [self._total_train_tokens]
        every = self.accelerator.gather(rewards)
        metrics["min_reward"].append(every.min().item())
        metrics["mean_reward"].append(every.mean().item())
        metrics["max_reward"].append(every.max().item())
        chosen, rejected = torch.chunk(rewards, chunks=2)
        metrics["accuracy"].append(
            self.accelerator.gather_for_metrics((chosen > rejected).float().mean()).mean().item()
        )
        metrics["margin"].append(self.accelerator.gather_for_metrics((chosen - rejected).mean()).mean().item())
