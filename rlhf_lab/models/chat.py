"""Chat formatting shared by every stage: one way to turn prompts into model inputs.

A prompt is a string (one user turn) or a conversation (a list of {"role", "content"}). The
tokenizer's chat template is always applied the same way, with left padding, so that
generation, scoring and training see identical prompt tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

Message = dict
Prompt = str | Sequence[Message]


def to_messages(prompt: Prompt, *, system_prompt: str | None = None) -> list[Message]:
    """A prompt as a list of chat messages, with an optional system turn put first."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, dict) and "prompt" in prompt:  # a dataset row
        return to_messages(prompt["prompt"], system_prompt=system_prompt)
    else:
        messages = [dict(m) for m in prompt]
    if system_prompt is not None and (not messages or messages[0]["role"] != "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def render_prompts(tokenizer, prompts: Sequence[Prompt], *, system_prompt: str | None = None) -> list[str]:
    """Chat-templated prompt texts, each ending with the assistant's generation header."""
    if not tokenizer.chat_template:
        return [_plain(to_messages(p, system_prompt=system_prompt)) for p in prompts]
    return [
        tokenizer.apply_chat_template(
            to_messages(p, system_prompt=system_prompt), tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]


def render_conversations(tokenizer, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[str]:
    """Chat-templated texts of each prompt followed by its completion as the assistant's turn."""
    return [
        tokenizer.apply_chat_template(to_messages(p) + [{"role": "assistant", "content": c}], tokenize=False)
        for p, c in zip(prompts, completions)
    ]


def tokenize_prompts(tokenizer, prompts: Sequence[Prompt], *, system_prompt: str | None = None):
    """Left-padded input_ids and attention_mask for a batch of prompts (chat template applied once:
    no extra BOS is added on top of the template's own special tokens)."""
    texts = render_prompts(tokenizer, prompts, system_prompt=system_prompt)
    if tokenizer.padding_side != "left":
        raise ValueError("generation needs left padding: call rlhf_lab.models.prepare_tokenizer(tokenizer)")
    return tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")


def _plain(messages: list[Message]) -> str:
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
