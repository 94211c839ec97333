"""Models as bundles: a model and the tokenizer that goes with it.

`Policy` answers chat prompts (`generate`, `chat`); `RewardModel` scores (prompt, completion)
pairs with a scalar head. Loading them is `rlhf_lab.models.loading`'s job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhf_lab.models.chat import Prompt, render_conversations, tokenize_prompts


@dataclass
class ModelBundle:
    """A model and the tokenizer that goes with it."""

    model: Any
    tokenizer: Any
    name: str = "model"
    meta: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def save(self, path: str | Path) -> Path:
        """Write the weights as safetensors (adapters only, with LoRA) and the tokenizer."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        return path

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad or not trainable_only)

    def __repr__(self) -> str:
        params = self.num_parameters() / 1e6
        return f"{type(self).__name__}(name={self.name!r}, params={params:.1f}M, device={self.device})"


class Policy(ModelBundle):
    """A causal LM that answers chat prompts."""

    @torch.no_grad()
    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
        batch_size: int = 16,
        stop: Sequence[str] = (),
        system_prompt: str | None = None,
    ) -> list[str]:
        """Complete each prompt (chat-templated, left-padded, batched); returns the new text only.

        `temperature=0` is greedy decoding; a positive one samples (with `seed` for repeatability).
        Text is cut at EOS and at the first of `stop`.
        """
        if isinstance(prompts, str) or is_conversation(prompts):
            prompts = [prompts]
        sample = temperature > 0
        if seed is not None:
            torch.manual_seed(seed)
        options = dict(
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_p=top_p if sample else None,
            top_k=top_k if sample else None,
            repetition_penalty=repetition_penalty,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        was_training = self.model.training
        self.model.eval()
        outputs: list[str] = []
        try:
            for start in range(0, len(prompts), batch_size):
                batch = tokenize_prompts(
                    self.tokenizer, prompts[start : start + batch_size], system_prompt=system_prompt
                ).to(self.device)
                tokens = self.model.generate(**batch, **options)
                new = tokens[:, batch["input_ids"].shape[1] :]
                for text in self.tokenizer.batch_decode(new, skip_special_tokens=True):
                    outputs.append(_cut_at_stop(text, stop))
        finally:
            self.model.train(was_training)
        return outputs

    def chat(self, message: Prompt, **sampling) -> str:
        """Answer one message (a string or a conversation)."""
        return self.generate([message], **sampling)[0]


NORMALIZATION_FILE = "reward_normalization.json"


@dataclass(repr=False)
class RewardModel(ModelBundle):
    """A sequence classifier with one output: a scalar score for (prompt, completion).

    Scores are `(raw - offset) / scale`; the reward stage sets offset and scale so scores have
    mean 0 and std 1 on the training responses, and saves them next to the weights.
    """

    offset: float = 0.0
    scale: float = 1.0

    def save(self, path: str | Path) -> Path:
        path = super().save(path)
        self.save_normalization(path)
        return path

    def save_normalization(self, path: str | Path) -> None:
        (Path(path) / NORMALIZATION_FILE).write_text(json.dumps({"offset": self.offset, "scale": self.scale}) + "\n")

    def load_normalization(self, path: str | Path) -> None:
        file = Path(path) / NORMALIZATION_FILE
        if file.exists():
            values = json.loads(file.read_text())
            self.offset, self.scale = float(values["offset"]), float(values["scale"])

    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[Prompt],
        completions: Sequence[str],
        *,
        batch_size: int = 16,
        max_length: int = 1024,
    ) -> list[float]:
        """Score each completion of its prompt. Text is re-tokenized with this model's tokenizer,
        so any reward model pairs with any policy."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions; pass one per prompt")
        was_training = self.model.training
        self.model.eval()
        scores: list[float] = []
        try:
            for start in range(0, len(prompts), batch_size):
                stop = start + batch_size
                batch = self._encode(prompts[start:stop], completions[start:stop], max_length).to(self.device)
                logits = self.model(**batch).logits[:, 0].float()
                scores.extend(((logits - self.offset) / self.scale).tolist())
        finally:
            self.model.train(was_training)
        return scores

    __call__ = score

    def token_ids(
        self, prompts: Sequence[Prompt], completions: Sequence[str], *, max_length: int = 1024
    ) -> list[list[int]]:
        """The unpadded token ids `score` feeds the model for each (prompt, completion); the reward
        stage trains on exactly these when the tokenizer has no chat template (an encoder)."""
        batch = self._encode(prompts, completions, max_length)
        return [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]

    def _encode(self, prompts, completions, max_length):
        tok = self.tokenizer
        if tok.chat_template:
            texts = render_conversations(tok, prompts, completions)
            return tok(
                texts,
                padding=True,
                truncation=True,
                max_length=max_length,
                add_special_tokens=False,
                return_tensors="pt",
            )
        # An encoder without a chat template reads (prompt, response) as a sentence pair. Right
        # padding: it pools the first ([CLS]) token and has absolute positions, so left padding
        # would change its scores. No token_type_ids: training batches (TRL's collator) carry none.
        firsts = [_plain_text(p) for p in prompts]
        return tok(
            firsts,
            list(completions),
            padding=True,
            truncation=True,
            max_length=max_length,
            padding_side="right",
            return_token_type_ids=False,
            return_tensors="pt",
        )


def is_conversation(obj) -> bool:
    return isinstance(obj, (list, tuple)) and len(obj) > 0 and isinstance(obj[0], dict)


def _plain_text(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m["content"] for m in prompt)


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    return text[:cut] if cut >= 0 else text
