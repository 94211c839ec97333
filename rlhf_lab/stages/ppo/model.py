"""The actor and the critic as one module: one forward gives log-probs, values and entropy.

    actor = ActorCritic(policy_model, value_head=ValueHead(hidden))      # shared trunk (default)
    actor = ActorCritic(policy_model, critic=reward_model_copy)          # separate critic (PPO-Max)
    out = actor(input_ids, attention_mask, position_ids, response_length)

A causal LM is split into its trunk (the decoder) and its LM head, so the LM head runs only on the
positions that predict response tokens (not on the prompt: with a 49k vocabulary that is most of
the cost of a forward pass), and the shared value head reads the same hidden states at no extra
pass. Position `t` of every output is about response token `t`: its log-prob under logits /
temperature, and the value of the state just before it was generated.

The reference goes through the same `response_logprobs`, so both sides compute log-probs the same
way (a different slicing would show up as a spurious KL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn


class ForwardOut(NamedTuple):
    logprobs: Tensor  # (B, R) log π(y_t | ...) of the response tokens, at logits / temperature
    values: Tensor | None  # (B, R) V(s_t), None when the critic was not asked for
    entropy: Tensor | None  # (B, R) entropy of π(· | s_t), None when not asked for


class ValueHead(nn.Module):
    """A scalar head on the policy's last hidden state, zero-initialized: values start at 0 and the
    value loss sends no gradient into the shared trunk until the head has learned something."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


def split_lm(model: Any) -> tuple[nn.Module, nn.Module]:
    """(trunk, LM head) of a causal LM, also inside a peft wrapper (its LoRA layers stay active)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    trunk = getattr(base, base.base_model_prefix, None)
    head = base.get_output_embeddings()
    if trunk is None or head is None:
        raise TypeError(f"{type(base).__name__} is not a causal LM with a decoder and an LM head")
    return trunk, head


def split_classifier(model: Any) -> tuple[nn.Module, nn.Module]:
    """(trunk, scalar head) of a sequence-classification model (Llama-style `.score` or `.classifier`)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    trunk = getattr(base, base.base_model_prefix, None)
    head = getattr(base, "score", None) or getattr(base, "classifier", None)
    if trunk is None or not isinstance(head, nn.Linear) or head.out_features != 1:
        raise TypeError(
            f"{type(base).__name__} cannot serve as a critic: it needs a decoder and a one-output linear "
            "head (a reward model from lab.train_reward_model or load_reward_model)"
        )
    return trunk, head


def response_hidden(
    trunk: nn.Module, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, response_length: int
) -> Tensor:
    """Hidden states at the positions whose next token is a response token: (B, R, H)."""
    out = trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return out.last_hidden_state[:, -response_length - 1 : -1]


def token_logprobs(
    logits: Tensor, tokens: Tensor, temperature: float, with_entropy: bool = False, entropy_grad: bool = True
):
    """log-probs of `tokens` under softmax(logits / temperature), in float32; and the entropy if asked
    (without a graph when `entropy_grad` is False: a metric only, no backward through the vocabulary)."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    logprobs = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            source = logp if entropy_grad else logp.detach()
            entropy = -(source.exp() * source).sum(-1)
    return logprobs, entropy


@torch.no_grad()
def response_logprobs(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor,
    response_length: int,
    temperature: float,
) -> Tensor:
    """The reference's log-probs of the response tokens, computed exactly as the actor's."""
    trunk, head = split_lm(model)
    hidden = response_hidden(trunk, input_ids, attention_mask, position_ids, response_length)
    return token_logprobs(head(hidden), input_ids[:, -response_length:], temperature)[0]


class ActorCritic(nn.Module):
    """The trained policy plus its critic: a value head on the policy's trunk, or a separate model."""

    def __init__(
        self,
        policy: nn.Module,
        *,
        value_head: ValueHead | None = None,
        critic: nn.Module | None = None,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if (value_head is None) == (critic is None):
            raise ValueError("pass exactly one of value_head= (shared trunk) or critic= (separate model)")
        self.policy = policy
        self.value_head = value_head
        self.critic = critic
        self.temperature = float(temperature)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor,
        response_length: int,
        *,
        with_values: bool = True,
        with_entropy: bool = False,
        entropy_grad: bool = True,
    ) -> ForwardOut:
        trunk, head = split_lm(self.policy)
        hidden = response_hidden(trunk, input_ids, attention_mask, position_ids, response_length)
        tokens = input_ids[:, -response_length:]
        logprobs, entropy = token_logprobs(head(hidden), tokens, self.temperature, with_entropy, entropy_grad)
        values = None
        if with_values and self.value_head is not None:
            values = self.value_head(hidden).float()
        elif with_values:
            critic_trunk, critic_head = split_classifier(self.critic)
            critic_hidden = response_hidden(critic_trunk, input_ids, attention_mask, position_ids, response_length)
            values = critic_head(critic_hidden).squeeze(-1).float()
        return ForwardOut(logprobs, values, entropy)

    def critic_state(self) -> dict[str, Tensor]:
        """The critic's weights: the value head, or the whole separate critic."""
        module = self.value_head if self.value_head is not None else self.critic
        return {k: v.detach() for k, v in module.state_dict().items()}

    def save(self, path: str | Path) -> None:
        """The policy as a checkpoint (adapters only with LoRA) and the critic beside it, as safetensors."""
        from safetensors.torch import save_file

        self.policy.save_pretrained(path, safe_serialization=True)
        critic = {k: v.contiguous().cpu() for k, v in self.critic_state().items()}
        name = "value_head.safetensors" if self.value_head is not None else "critic.safetensors"
        save_file(critic, str(Path(path) / name))


def disable_dropout(model: nn.Module) -> None:
    """PPO's ratio compares two forward passes of the same weights: dropout would make them differ
    (TRL's PPO does the same). Also attention dropout, which transformers reads from an attribute."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "attention_dropout"):
        config.attention_dropout = 0.0
