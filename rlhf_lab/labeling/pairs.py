"""Candidates for human labelling, generated ahead of the annotator.

``PairGenerator`` turns prompts into items of N responses: N samples of one policy (different
seeds, and temperatures if ``sampling`` says so), or one sample from each of N models, which is
a blind human A/B evaluation. A background thread fills a bounded queue, so the next item is
ready before the person needs it. ``human_win_rate`` reads the A/B result back from a store.

    with lab.PairGenerator([ppo, sft], prompts, sampling={"max_new_tokens": 64}) as pairs:
        panel = lab.LabelingPanel(store, pairs, annotator="ana")      # or lab.LabelingSession(...)
    lab.human_win_rate(store)             # WinRate: ppo vs sft, wins, losses, ties, Wilson 95% CI

Each item is a dict that ``PreferenceStore.add_item`` and ``LabelingSession`` read:
``{"prompt", "responses": [{"text", "model", "sampling", "seed", "metadata"}, ...], "metadata"}``
with ``metadata["models"]`` the model at each shown position and ``metadata["generator"]``
holding ``models`` (the order you gave), ``order`` (the given index shown at each position),
``seed``, ``prompt_index`` and, with active learning, ``uncertainty`` or ``disagreement``.
Positions are shuffled for every item (also for one policy, so no temperature always sits on
the same side) by an RNG seeded from ``(seed, prompt_index, attempt)``: an item is reproducible on
its own, whatever came before it. Each response records the seed and sampling settings that
``policy.generate(prompt, seed=seed, **sampling)`` reproduces.

Handled inputs: an empty sample, or one identical to another, is drawn again with fresh seeds
(``retries`` times); then the prompt is dropped, logged and listed in ``dropped``.

Active learning (``reward_model`` plus ``active``) works on windows of ``window`` items: the
worker generates a window, scores every response, and queues that window reordered, stable for
equal keys. ``"uncertainty"``: smallest ``min over pairs |sigmoid(r_i - r_j) - 0.5|`` first (the
reward model's coin flips). ``"disagreement"`` (an ensemble: ``RewardEnsemble`` or a list of
reward models): largest ``max over pairs std_members sigmoid(r_mi - r_mj)`` first. The order is
only within a window, because the prompt stream may be endless; the queue then holds up to
``max(prefetch, window)`` items so the next window is generated while this one is labelled. Any
reward model also stores each response's score as ``metadata["reward"]`` (for the panel's toggle).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any

from rlhf_lab.labeling.active import disagreement, uncertainty
from rlhf_lab.labeling.agreement import WinRate
from rlhf_lab.monitor.progress import ProgressLine
from rlhf_lab.rewards import as_scorer
from rlhf_lab.threads import background

log = logging.getLogger(__name__)

ACTIVE = ("none", "uncertainty", "disagreement")
DEFAULT_SAMPLING = {"temperature": 0.7}
_GENERATE_KEYS = {"max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "stop"}
_DONE = object()  # the worker's end-of-stream marker; an exception in the queue is its failure


class PairGenerator:
    """Items of ``n`` candidate responses per prompt, prefetched in a background thread.

    ``models``: one policy (n samples), or a list / ``{name: policy}`` of n models (one sample
    each, blind A/B). Anything with ``generate(prompts, seed=, **sampling)`` works; a run result
    is turned into a policy. ``prompts``: strings, conversations, or rows with a ``prompt``
    (a ``load_prompts`` dataset); any iterable, endless ones too. ``sampling``: one dict for every
    candidate or a list of n (per model, in the order given), with ``Policy.generate`` keywords.
    ``prefetch``: items kept ready (0: generate on demand in ``next``). Use ``close()`` or
    ``with`` to stop the thread; an error in it is raised by the next ``next()``. The thread
    switches each model to eval mode while it generates: do not train a model it is sampling.
    """

    def __init__(
        self,
        models: Any,
        prompts: Iterable[Any],
        n: int = 2,
        sampling: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        seed: int = 0,
        prefetch: int = 2,
        reward_model: Any = None,
        active: str = "none",
        *,
        window: int = 8,
        retries: int = 3,
    ) -> None:
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"n={n!r}: an item needs at least 2 responses to compare. Fix: pass n=2 or more")
        self.names, self.policies = _models(models, n)
        self.n = n
        self.sampling = _sampling(sampling, n)
        if active not in ACTIVE:
            raise ValueError(f"active={active!r} is unknown. Fix: use one of {', '.join(ACTIVE)}")
        if active != "none" and reward_model is None:
            raise ValueError(f"active={active!r} ranks by reward-model scores. Fix: pass reward_model=...")
        self.scorer = None if reward_model is None else as_scorer(reward_model)
        if active == "disagreement" and len(self.scorer.members) < 2:
            raise ValueError(
                "active='disagreement' needs several reward models. Fix: pass a RewardEnsemble or a list "
                "of reward models, or use active='uncertainty'"
            )
        for name, value in (("prefetch", prefetch), ("window", window), ("retries", retries)):
            if not isinstance(value, int) or value < (0 if name != "window" else 1):
                raise ValueError(f"{name}={value!r} must be a whole number >= {int(name == 'window')}")
        self.seed, self.prefetch, self.reward_model, self.active = seed, prefetch, reward_model, active
        self.window = window if active != "none" else 1
        self.retries = retries
        self.dropped: list[tuple[int, str]] = []  # (prompt index, why) for prompts given up on
        self._total = len(prompts) if isinstance(prompts, Sized) else None
        self._prompts = iter(prompts)
        self._produced = self._yielded = 0
        self._error: BaseException | None = None
        self._finished = False
        self._stop = threading.Event()
        self._items = self._generate()
        self._thread: threading.Thread | None = None
        if prefetch > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=max(prefetch, self.window))
            # background(): torch on one thread in the worker, and stages leave it a core (rlhf_lab.threads)
            self._thread = threading.Thread(target=background(self._work), name="rlhf-lab-pairs", daemon=True)
            self._thread.start()

    # -- consumer side ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        if self._error is not None:
            raise self._error  # sticky: a dead generator keeps saying why
        if self._finished or self._stop.is_set():
            raise StopIteration
        if self._thread is None:  # prefetch=0: generate here, on demand
            try:
                got = next(self._items, _DONE)
            except Exception as err:
                got = err
        else:
            got = self._take()
        if got is _DONE:
            self._finished = True
            raise StopIteration
        if isinstance(got, BaseException):
            self._error = got
            raise got
        self._yielded += 1
        return got

    def _take(self) -> Any:
        # Poll rather than block for good, so a close() from another thread ends the wait; a wait over a
        # second shows a progress line ("preparing pair 3 of 12"), so a slow model is never silence.
        started, progress = time.monotonic(), None
        try:
            while True:
                try:
                    return self._queue.get(timeout=0.1)
                except queue.Empty:
                    if self._stop.is_set():
                        return _DONE
                    if not self._thread.is_alive() and self._queue.empty():
                        raise RuntimeError("PairGenerator: the worker thread ended without a result") from None
                    if progress is None and time.monotonic() - started > 1.0:
                        progress = ProgressLine(name="labelling", unit="pair")
                        of = f" of {self._total}" if self._total is not None else ""
                        progress.begin(self._total, doing=f"preparing pair {self._yielded + 1}{of}")
                        progress.step = self._yielded
                    elif progress is not None:
                        progress.show()
        finally:
            if progress is not None:
                progress.advance(self._yielded, "ready", force=True)
                progress.close()

    @property
    def ready(self) -> int:
        """Items generated and waiting in the queue."""
        return max(self._produced - self._yielded, 0) if self._thread is not None else 0

    @property
    def remaining(self) -> int | None:
        """Prompts not yet handed out (ready ones included, dropped ones not); None if unsized."""
        if self._total is None:
            return None
        return max(self._total - self._yielded - len(self.dropped), 0)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker; a generation in flight finishes first (up to ``timeout`` seconds)."""
        self._stop.set()
        if self._thread is None:
            return
        while True:  # drain, so a worker blocked on a full queue sees the stop
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("PairGenerator.close: the worker is still generating after %ss", timeout)

    def __enter__(self) -> PairGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- worker side --------------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            for item in self._items:
                self._produced += 1  # generated counts as ready, even while the queue is full
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as err:  # never swallowed: the consumer re-raises it
            log.error("PairGenerator: generation failed; the next next() raises it", exc_info=True)
            self._put(err)

    def _put(self, value: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _generate(self) -> Iterator[dict]:
        """Items in the order they should be shown: one window at a time, reordered if active."""
        batch: list[dict] = []
        for index, prompt in enumerate(self._prompts):
            if self._stop.is_set():
                return
            item = self._item(_prompt(prompt, index), index)
            if item is not None:
                batch.append(item)
            if len(batch) >= self.window:
                yield from self._rank(batch)
                batch = []
        yield from self._rank(batch)

    def _item(self, prompt: Any, index: int) -> dict | None:
        for attempt in range(self.retries + 1):
            rng = random.Random(f"rlhf-lab:{self.seed}:{index}:{attempt}")
            seeds = [rng.randrange(2**31) for _ in range(self.n)]
            order = list(range(self.n))
            rng.shuffle(order)  # order[position] = which candidate (model / sampling) is shown there
            texts = []
            for given in order:
                policy = self.policies[given if len(self.policies) > 1 else 0]
                texts.append(policy.generate([prompt], seed=seeds[given], **self.sampling[given])[0])
            problem = _problem(texts)
            if problem is None:
                break
        else:
            log.warning("PairGenerator: dropped prompt %d: %s", index, problem)
            self.dropped.append((index, problem))
            return None
        one = len(self.names) == 1  # one policy: every response is its sample
        responses = [
            {
                "text": text,
                "model": self.names[0 if one else g],
                "sampling": dict(self.sampling[g]),
                "seed": seeds[g],
            }
            for text, g in zip(texts, order)
        ]
        generator = {"models": list(self.names), "order": order, "seed": self.seed, "prompt_index": index}
        if attempt:
            generator["attempt"] = attempt
        metadata = {"models": [r["model"] for r in responses], "generator": generator}
        return {"prompt": prompt, "responses": responses, "metadata": metadata}

    def _rank(self, batch: list[dict]) -> list[dict]:
        if not batch or self.scorer is None:
            return batch
        prompts = [item["prompt"] for item in batch for _ in item["responses"]]
        texts = [r["text"] for item in batch for r in item["responses"]]
        combined, parts = self.scorer.components(prompts, texts)
        means, members = combined.tolist(), list(parts.values())  # members: (members, responses)
        keys = []
        for i, item in enumerate(batch):
            span = slice(i * self.n, (i + 1) * self.n)
            for response, score in zip(item["responses"], means[span]):
                response["metadata"] = {"reward": score}
            if self.active == "uncertainty":
                keys.append(uncertainty(means[span]))
                item["metadata"]["generator"]["uncertainty"] = keys[-1]
            elif self.active == "disagreement":
                keys.append(-disagreement([row[span] for row in members]))
                item["metadata"]["generator"]["disagreement"] = -keys[-1]
        if self.active == "none":
            return batch
        return [batch[i] for i in sorted(range(len(batch)), key=lambda i: keys[i])]


# -- argument checks ------------------------------------------------------------------------------


def _models(models: Any, n: int) -> tuple[list[str], list[Any]]:
    if isinstance(models, Mapping):
        names, policies = [str(k) for k in models], list(models.values())
    elif isinstance(models, (list, tuple)):
        policies = list(models)
        names = [getattr(m, "name", None) or f"model{i}" for i, m in enumerate(policies)]
    else:
        policies = [models]
        names = [getattr(models, "name", None) or "model"]
    if not policies:
        raise ValueError("models is empty. Fix: pass one policy, or a list of models to compare")
    if len(policies) > 1 and len(policies) != n:
        raise ValueError(
            f"{len(policies)} models give one response each, but n={n}. Fix: pass n={len(policies)}, "
            "or one policy to draw n samples from"
        )
    if len(set(names)) != len(names):
        raise ValueError(
            f"models share a name ({names}); the blind A/B mapping would be ambiguous. Fix: pass "
            "{'name': model, ...} or set each policy's .name"
        )
    from rlhf_lab.models import as_policy

    return names, [m if callable(getattr(m, "generate", None)) else as_policy(m) for m in policies]


def _sampling(sampling: Any, n: int) -> list[dict]:
    if sampling is None:
        sampling = DEFAULT_SAMPLING
    listed = list(sampling) if isinstance(sampling, (list, tuple)) else [sampling] * n
    if len(listed) != n:
        raise ValueError(f"sampling has {len(listed)} settings for n={n} responses. Fix: pass one dict or {n}")
    out = []
    for i, entry in enumerate(listed):
        if not isinstance(entry, Mapping):
            raise ValueError(
                f"sampling[{i}] is a {type(entry).__name__}. Fix: pass a dict such as {{'temperature': 0.7}}"
            )
        unknown = sorted(set(entry) - _GENERATE_KEYS)
        if unknown:
            raise ValueError(
                f"sampling[{i}] has unknown key(s) {unknown}. Fix: use {', '.join(sorted(_GENERATE_KEYS))}; "
                "seeds come from seed= so that every item is reproducible"
            )
        out.append({**DEFAULT_SAMPLING, **entry})
    return out


def _prompt(value: Any, index: int) -> Any:
    if isinstance(value, Mapping) and "prompt" in value:
        value = value["prompt"]
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(m, Mapping) for m in value):
        return [dict(m) for m in value]
    raise ValueError(
        f"prompts[{index}] is {value!r:.80}. Fix: give each prompt as a non-empty string, a conversation "
        "(a list of {'role', 'content'} messages) or a row with a 'prompt'"
    )


def _problem(texts: list[str]) -> str | None:
    for i, text in enumerate(texts):
        if not text.strip():
            return f"response {i} is empty"
        if text in texts[:i]:
            return f"response {i} repeats response {texts.index(text)}"
    return None


# -- reading results back -------------------------------------------------------------------------


def human_win_rate(store: Any, model_a: str | None = None, model_b: str | None = None, **kwargs: Any) -> WinRate:
    """The blind A/B result in ``store``: how often people preferred ``model_a`` to ``model_b``,
    with a Wilson 95% interval (``store.win_rate``; ties and both_bad are counted apart). Without
    names, the store must hold exactly two models; ``model_a`` is then the first one given to the
    PairGenerator. ``kwargs`` go to ``store.win_rate`` (``min_votes``, ``annotators``)."""
    if model_a is None or model_b is None:
        found = _models_in(store)
        others = [m for m in found if m not in (model_a, model_b)]
        if len(others) != (model_a is None) + (model_b is None):
            raise ValueError(
                f"the store holds models {found}; cannot tell which two to compare. Fix: pass model_a= and model_b="
            )
        model_a = model_a if model_a is not None else others.pop(0)
        model_b = model_b if model_b is not None else others.pop(0)
    return store.win_rate(model_a, model_b, **kwargs)


def _models_in(store: Any) -> list[str]:
    """Model names in the order a PairGenerator was given them, then any others, sorted."""
    given: dict[str, None] = {}
    others: set[str] = set()
    for item in store.items():
        for name in (item.metadata.get("generator") or {}).get("models") or []:
            given.setdefault(name)
        others.update(m for m in item.models if m is not None)
    return [*given, *sorted(others - set(given))]
