"""Rollouts: sample completions for a batch of prompts and mark which tokens are the response.

    query = tokenize_prompts(tokenizer, prompts)                 # chat template, left padding
    tokens = generator.generate(query.input_ids, query.attention_mask)
    rollout = make_rollout(tokenizer, prompts, query, tokens, stop=["\\n\\n"])

A completion ends at its first EOS (kept: the policy is paid for ending) or at the token that
completes a stop string; every later token is masked out and replaced by the pad token, so nothing
after the stop can reach a loss or a metric. `ended` says which completions stopped on their own
(the rest hit max_new_tokens and pay `missing_eos_penalty`).

Generators: `HFGenerator` (transformers generate, KV cache, sampling at `temperature`, top-k and
top-p off unless set; LoRA adapters merged into the base while it samples, so adapters cost nothing per
token, and unmerged after) and `VLLMGenerator` (a GPU with vLLM installed; the trained weights are
loaded into the engine after each update). `make_generator` picks one for `generation_backend`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)


@dataclass
class Rollout:
    """One batch of sampled completions, padded: queries on the left, responses on the right."""

    prompts: list
    query_ids: Tensor  # (B, P) left-padded chat-templated prompts
    query_mask: Tensor  # (B, P)
    response_ids: Tensor  # (B, R) pad token after each completion's stop
    response_mask: Tensor  # (B, R) 1 at real response tokens (through EOS / the stop string)
    completions: list[str]  # decoded text, cut before any stop string
    ended: Tensor  # (B,) True where the completion ended with EOS or a stop string

    def __len__(self) -> int:
        return self.query_ids.shape[0]

    def model_inputs(self) -> tuple[Tensor, Tensor, Tensor]:
        """input_ids, attention_mask and position_ids of prompt + response, as generation saw them.

        Position ids count real tokens only (left padding shifts nothing), as generate computes
        them; a plain forward would otherwise number the padding and see different positions.
        """
        input_ids = torch.cat([self.query_ids, self.response_ids], dim=1)
        attention_mask = torch.cat([self.query_mask, torch.ones_like(self.response_ids)], dim=1)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
        return input_ids, attention_mask, position_ids

    def select(self, index: Tensor) -> Rollout:
        """The rows in `index`, trimmed to the columns any of them uses (cheaper forward passes)."""
        rows = index.tolist()
        query_mask = self.query_mask[index]
        response_mask = self.response_mask[index]
        first = int(query_mask.any(0).nonzero().min()) if query_mask.any() else 0
        last = int(response_mask.any(0).nonzero().max()) + 1 if response_mask.any() else 1
        return Rollout(
            prompts=[self.prompts[i] for i in rows],
            query_ids=self.query_ids[index][:, first:],
            query_mask=query_mask[:, first:],
            response_ids=self.response_ids[index][:, :last],
            response_mask=response_mask[:, :last],
            completions=[self.completions[i] for i in rows],
            ended=self.ended[index],
        )

    def sample_rows(self, update: int, scores: Tensor, parts: dict[str, list[float]], n: int) -> list[dict]:
        """The first `n` completions as samples.jsonl rows: text, the score paid, each reward's score."""
        rows = []
        for i in range(min(n, len(self))):
            prompt = self.prompts[i]
            rows.append(
                {
                    "update": update,
                    "prompt": prompt if isinstance(prompt, str) else prompt[-1]["content"],
                    "completion": self.completions[i],
                    "score": float(scores[i]),
                    "ended": bool(self.ended[i]),
                    "components": {name: values[i] for name, values in parts.items()},
                }
            )
        return rows

    def to(self, device: torch.device | str) -> Rollout:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, Tensor):
                moved[name] = value.to(device)
        return Rollout(**moved)


def make_rollout(
    tokenizer: Any, prompts: Sequence[Any], query: Any, response_ids: Tensor, stop: Sequence[str] = ()
) -> Rollout:
    """Mask each response after its EOS or stop string and decode the completions."""
    response_ids = response_ids.clone()
    eos_ids = _eos_ids(tokenizer)
    batch, length = response_ids.shape
    lengths, ended, completions = [], [], []
    for row in range(batch):
        ids = response_ids[row].tolist()
        end = next((i + 1 for i, t in enumerate(ids) if t in eos_ids), None)
        stopped_at, text = _stop_index(tokenizer, ids[: end or length], stop)
        if stopped_at is not None:
            end = stopped_at
        lengths.append(end or length)
        ended.append(end is not None)
        completions.append(text)
    positions = torch.arange(length, device=response_ids.device)
    mask = (positions[None, :] < torch.tensor(lengths, device=response_ids.device)[:, None]).long()
    response_ids[mask == 0] = tokenizer.pad_token_id
    return Rollout(
        list(prompts),
        query["input_ids"],
        query["attention_mask"],
        response_ids,
        mask,
        completions,
        torch.tensor(ended, device=response_ids.device),
    )


def _eos_ids(tokenizer: Any) -> set[int]:
    eos = tokenizer.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else {eos}


def _stop_index(tokenizer: Any, ids: list[int], stop: Sequence[str]) -> tuple[int | None, str]:
    """(number of tokens through the one that completes the first stop string, or None; the text cut
    before that stop string). Without a stop string the text is all of `ids`, special tokens dropped."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    hits = [(text.find(s), s) for s in stop if s in text]
    if not hits:
        return None, text
    cut = min(hits)[0]
    # The shortest prefix of tokens whose text reaches a stop string: that token is the last one kept.
    for n in range(1, len(ids) + 1):
        prefix = tokenizer.decode(ids[:n], skip_special_tokens=True)
        if any(s in prefix for s in stop):
            return n, text[:cut]
    return None, text  # unreachable: the full text holds a stop string


class TokenCounter:
    """A transformers streamer that only counts: generate calls `put` with the prompt, then once per new
    token (for the whole batch), and `end` at the end."""

    def __init__(self, progress: Callable[[str], None], max_new_tokens: int) -> None:
        self.progress, self.max_new_tokens, self.calls = progress, max_new_tokens, 0

    def put(self, value: Tensor) -> None:
        if self.calls:
            self.progress(f"rollout {self.calls}/{self.max_new_tokens} tokens")
        self.calls += 1

    def end(self) -> None:
        pass


class HFGenerator:
    """transformers `generate` with the KV cache; sampling settings fixed for the whole run."""

    name = "hf"
    progress: Callable[[str], None] | None = None  # told "rollout n/max tokens" as tokens are sampled

    def __init__(
        self, tokenizer: Any, *, max_new_tokens: int, temperature: float, top_k: int = 0, top_p: float = 1.0
    ) -> None:
        from transformers import GenerationConfig

        # A fresh GenerationConfig: nothing inherited from the checkpoint's (top_k=50, repetition
        # penalties...) may change the sampling distribution the log-probs assume.
        self.config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            eos_token_id=sorted(_eos_ids(tokenizer)),
            pad_token_id=tokenizer.pad_token_id,
            use_cache=True,
        )

    @torch.no_grad()
    def generate(self, model: Any, query_ids: Tensor, query_mask: Tensor) -> Tensor:
        was_training = model.training
        model.eval()
        try:
            streamer = None if self.progress is None else TokenCounter(self.progress, self.config.max_new_tokens)
            with merged(model):
                tokens = model.generate(
                    input_ids=query_ids, attention_mask=query_mask, generation_config=self.config, streamer=streamer
                )
        finally:
            model.train(was_training)
        return tokens[:, query_ids.shape[1] :]

    def sync(self, model: Any) -> None:
        """HF generate uses the trained model itself: nothing to copy."""


@contextlib.contextmanager
def merged(model: Any):
    """A LoRA model's adapters folded into its base weights for the block (one matmul per layer instead of
    three per token), then taken out again: the base comes back within float rounding (about 1e-7)."""
    if not hasattr(model, "merge_adapter"):
        yield
        return
    model.merge_adapter()
    try:
        yield
    finally:
        model.unmerge_adapter()


class VLLMGenerator:
    """vLLM on the local GPU. After each update `sync` loads the trained weights into the engine
    (LoRA merged on the fly), so rollouts always come from the current policy."""

    name = "vllm"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int,
        temperature: float,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        gpu_memory_utilization: float = 0.3,
    ) -> None:
        import os
        import tempfile

        from vllm import LLM, SamplingParams

        os.environ.setdefault(
            "VLLM_ENABLE_V1_MULTIPROCESSING", "0"
        )  # the engine in this process: weights can be loaded
        self.tokenizer = tokenizer
        self._dir = tempfile.TemporaryDirectory(prefix="rlhf-lab-vllm-")
        plain = copy.deepcopy(model).merge_and_unload() if hasattr(model, "merge_and_unload") else model
        plain.save_pretrained(self._dir.name, safe_serialization=True)
        tokenizer.save_pretrained(self._dir.name)
        self.llm = LLM(
            model=self._dir.name,
            dtype="bfloat16",
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=True,
        )
        self.params = SamplingParams(
            temperature=temperature,
            top_k=top_k or -1,
            top_p=top_p,
            max_tokens=max_new_tokens,
            stop_token_ids=sorted(_eos_ids(tokenizer)),
            seed=None,
        )

    @torch.no_grad()
    def generate(self, model: Any, query_ids: Tensor, query_mask: Tensor) -> Tensor:
        prompts = [{"prompt_token_ids": ids[mask.bool()].tolist()} for ids, mask in zip(query_ids, query_mask)]
        outputs = self.llm.generate(prompts, self.params, use_tqdm=False)
        rows = [list(o.outputs[0].token_ids) for o in outputs]
        width = max(1, max(len(r) for r in rows))
        pad = self.tokenizer.pad_token_id
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=query_ids.device)

    def sync(self, model: Any) -> None:
        if hasattr(model, "merge_adapter"):  # peft: fold the adapters in, copy, unfold
            model.merge_adapter()
            state = {
                k.replace("base_model.model.", "").replace(".base_layer", ""): v
                for k, v in model.state_dict().items()
                if "lora_" not in k
            }
            model.unmerge_adapter()
        else:
            state = model.state_dict()
        # The in-process engine's model (V1 wraps the worker once more than V0 did).
        worker = self.llm.llm_engine.model_executor.driver_worker
        worker = getattr(worker, "worker", worker)
        worker.model_runner.model.load_weights(state.items())


def make_generator(model: Any, tokenizer: Any, config: Any):
    """The generator for `generation_backend`: 'auto' is vLLM with a GPU and vLLM installed, else HF."""
    options = dict(
        max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p
    )
    if config.wants_vllm():
        try:
            return VLLMGenerator(model, tokenizer, seed=config.seed, **options)
        except Exception as err:  # noqa: BLE001 - any engine start failure falls back to HF
            if config.generation_backend == "vllm":
                raise
            log.warning(f"vLLM could not start ({err}); falling back to transformers generate")
    return HFGenerator(tokenizer, **options)
