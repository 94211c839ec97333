"""Sampling for evaluation: one completion per prompt with the exact token ids, and their log-probabilities.

    drawn = sample(policy, prompts, seed=0)                 # Samples: texts, prompt and completion ids
    logprobs, mask = completion_logprobs(ref, drawn)        # the same tokens under another model
    sequence_kl(logprobs_policy, logprobs_ref, mask)        # KL(policy || ref), k1 and k3, with errors

A policy that samples another way (best-of-n) provides `sample_completions(prompts, **options)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rlhf_lab.evaluation import stats
from rlhf_lab.models import as_policy
from rlhf_lab.models.chat import tokenize_prompts
from rlhf_lab.monitor.progress import track
from rlhf_lab.stages.ppo.kl import per_token_kl
from rlhf_lab.threads import apply_threads

PURE = {"temperature": 1.0, "top_p": 1.0, "top_k": 0}


@dataclass
class Samples:
    """One sampled completion per prompt, with the exact token ids the policy produced."""

    prompts: list
    texts: list[str]
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]  # sampled tokens, the EOS included when one was sampled
    lengths: list[int]  # tokens before EOS


@torch.no_grad()
def sample(
    policy: Any,
    prompts: Sequence[Any],
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    batch_size: int = 16,
) -> Samples:
    """Sample one completion per prompt (left-padded batches; the global RNG is left untouched)."""
    apply_threads()  # evaluation computes on the free CPUs, as a stage does
    policy = as_policy(policy)
    custom = getattr(policy, "sample_completions", None)
    if custom is not None:  # best-of-n: n samples of its base, the best one kept
        options = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
        return custom(prompts, seed=seed, batch_size=batch_size, **options)
    tok, model = policy.tokenizer, policy.model
    greedy = temperature == 0
    options = dict(
        max_new_tokens=max_new_tokens,
        do_sample=not greedy,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    if not greedy:
        options.update(temperature=temperature, top_p=top_p, top_k=top_k)
    out = Samples(list(prompts), [], [], [], [])
    was_training = model.training
    model.eval()
    devices = [policy.device] if policy.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for start in track(range(0, len(out.prompts), batch_size), "sampling"):
                batch = tokenize_prompts(tok, out.prompts[start : start + batch_size]).to(policy.device)
                tokens = model.generate(**batch, **options).cpu()
                width = batch["input_ids"].shape[1]
                for ids, mask, new in zip(batch["input_ids"].cpu(), batch["attention_mask"].cpu(), tokens[:, width:]):
                    new = new.tolist()
                    end = new.index(tok.eos_token_id) if tok.eos_token_id in new else len(new)
                    out.prompt_ids.append(ids[mask.bool()].tolist())
                    out.completion_ids.append(new[: end + 1] if end < len(new) else new)
                    out.lengths.append(end)
                    out.texts.append(tok.decode(new[:end], skip_special_tokens=True))
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def completion_logprobs(policy: Any, samples: Samples, *, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of each sampled completion token under `policy`: `(logprobs, mask)`, both
    (n, longest completion), 0 at padding. One forward pass over prompt + completion per batch:
    prompts left-padded, completions right-padded, positions counted from the first real token."""
    policy = as_policy(policy)
    model, pad = policy.model, policy.tokenizer.pad_token_id
    width = max((len(c) for c in samples.completion_ids), default=1)
    logprobs, mask = torch.zeros(len(samples.texts), width), torch.zeros(len(samples.texts), width)
    was_training = model.training
    model.eval()
    try:
        for start in track(range(0, len(samples.texts), batch_size), "log-probs"):
            prompts = samples.prompt_ids[start : start + batch_size]
            completions = samples.completion_ids[start : start + batch_size]
            p_len, c_len = max(map(len, prompts)), max(max(map(len, completions)), 1)
            ids = torch.tensor(
                [[pad] * (p_len - len(p)) + p + c + [pad] * (c_len - len(c)) for p, c in zip(prompts, completions)]
            )
            attention = torch.tensor(
                [
                    [0] * (p_len - len(p)) + [1] * (len(p) + len(c)) + [0] * (c_len - len(c))
                    for p, c in zip(prompts, completions)
                ]
            )
            positions = (attention.cumsum(-1) - 1).clamp(min=0)
            device = policy.device
            logits = (
                model(input_ids=ids.to(device), attention_mask=attention.to(device), position_ids=positions.to(device))
                .logits[:, p_len - 1 : -1]
                .float()
            )
            targets = ids[:, p_len:].to(device)
            token_lp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
            real = attention[:, p_len:]
            rows = slice(start, start + len(prompts))
            logprobs[rows, :c_len] = token_lp.cpu() * real
            mask[rows, :c_len] = real.float()
    finally:
        model.train(was_training)
    return logprobs, mask


def sequence_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Sequence-level KL(policy || ref) from samples of the policy: the mean over sequences of the
    summed per-token k1 and k3 estimates, each with its standard error."""
    out = {}
    for name in ("k1", "k3"):
        per_sequence = per_token_kl(logprobs, ref_logprobs, mask, name).sum(-1).double().numpy()
        out[f"kl_{name}"], out[f"kl_{name}_se"] = stats.mean_se(per_sequence)
    return out


def perplexity(logprobs: torch.Tensor, mask: torch.Tensor) -> float:
    """exp(- total log-probability / number of tokens) over every masked-in token."""
    tokens = float(mask.sum())
    if tokens == 0:
        raise ValueError("no completion tokens to compute a perplexity over")
    return float(np.exp(-float((logprobs * mask).sum()) / tokens))
