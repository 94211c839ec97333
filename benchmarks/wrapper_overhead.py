"""What the lab's stage wrappers cost on top of raw TRL: same tiny DPO, reward-model and GRPO runs,
interleaved A/B in one process, printed as a time ratio (target: lab / raw <= 1.03).

    python benchmarks/wrapper_overhead.py [--rounds 5] [--dpo-steps 30] [--reward-steps 600] [--grpo-steps 20]
                                          [--stages dpo reward reward_no_norm grpo]

"raw" is what a TRL user writes: build the trainer on a ready dataset, train, save the model.
"lab" is `lab.dpo(...)` / `lab.train_reward_model(...)`: data validation, a private copy of the
model, the metrics callback, the run folder and the saved weights, with held-out samples and
the reward model's held-out evaluation switched off (num_samples=0, eval_fraction=0) so both
train on the same data. "reward" keeps the stage's normalization pass (one forward over the
training responses, a feature raw TRL does not have); "reward_no_norm" turns it off
(normalize=False), which leaves the wrapper's own cost. The tiny reward model trains ~30x faster
per step than tiny DPO (no LM head over a 49k vocabulary), so it runs more steps to make runs of
similar length. "grpo" trains on the starter RL prompts with a rule reward written the way each
side would: raw TRL gets a TRL-style function `f(completions, **kwargs)`, the lab the same rule as
`f(prompts, completions)` through its reward adapter (validation, samples.jsonl); both without a
KL term (beta=0), so neither builds a reference. The order alternates every round; the ratio is the median of per-round ratios,
and the fixed cost is the median per-round difference in seconds.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import trl  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

import rlhf_lab as lab  # noqa: E402
from rlhf_lab.stages.common import STARTER_EXTRA  # noqa: E402

hf_logging.set_verbosity_error()
COMMON = dict(
    per_device_train_batch_size=4,
    learning_rate=1e-4,
    logging_steps=5,
    max_length=128,
    seed=0,
    report_to="none",
    save_strategy="no",
    bf16=False,
    use_cpu=True,
    disable_tqdm=True,
)


def starter_pairs():
    data = lab.starter_data("preference", "train")
    return data.remove_columns([c for c in STARTER_EXTRA if c in data.column_names])


def raw_dpo(policy, data, out, steps):
    args = trl.DPOConfig(output_dir=out, max_steps=steps, activation_checkpointing=False, **COMMON)
    model, ref = copy.deepcopy(policy.model), copy.deepcopy(policy.model)
    trainer = trl.DPOTrainer(
        model=model, ref_model=ref, args=args, train_dataset=data, processing_class=policy.tokenizer
    )
    trainer.train()
    trainer.save_model(out)


def lab_dpo(policy, data, out, steps):
    lab.dpo(policy, data, lab.DPOConfig(output_dir=out, max_steps=steps, num_samples=0, **COMMON))


def raw_reward(rm, data, out, steps):
    args = trl.RewardConfig(output_dir=out, max_steps=steps, activation_checkpointing=False, **COMMON)
    trainer = trl.RewardTrainer(
        model=copy.deepcopy(rm.model), args=args, train_dataset=data, processing_class=rm.tokenizer
    )
    trainer.train()
    trainer.save_model(out)


def lab_reward(rm, data, out, steps, normalize=True):
    config = lab.RewardConfig(
        output_dir=out, max_steps=steps, num_samples=0, eval_fraction=0, normalize=normalize, **COMMON
    )
    lab.train_reward_model(rm, data, config)


def lab_reward_no_norm(rm, data, out, steps):
    lab_reward(rm, data, out, steps, normalize=False)


GRPO = dict(
    max_completion_length=16,
    num_generations=4,
    beta=0.0,
    learning_rate=1e-4,
    logging_steps=5,
    seed=0,
    report_to="none",
    save_strategy="no",
    bf16=False,
    use_cpu=True,
    disable_tqdm=True,
    per_device_train_batch_size=8,
)


def vowel_share(prompts, completions):
    return [sum(ch in "aeiou" for ch in c) / max(1, len(c)) for c in completions]


def trl_vowel_share(completions, **kwargs):
    return vowel_share(None, [c[-1]["content"] for c in completions])


def starter_prompts():
    return lab.load_prompts(lab.starter_data("prompts", "train").select_columns(["prompt"]))


def raw_grpo(policy, prompts, out, steps):
    args = trl.GRPOConfig(output_dir=out, max_steps=steps, **GRPO)
    trainer = trl.GRPOTrainer(
        model=copy.deepcopy(policy.model),
        reward_funcs=trl_vowel_share,
        args=args,
        train_dataset=prompts,
        processing_class=policy.tokenizer,
    )
    trainer.train()
    trainer.save_model(out)


def lab_grpo(policy, prompts, out, steps):
    lab.grpo(policy, vowel_share, prompts, lab.GRPOConfig(output_dir=out, max_steps=steps, num_samples=4, **GRPO))


def timed(fn, *args) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        fn(*args[:-1], out, args[-1])
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dpo-steps", type=int, default=30)
    parser.add_argument("--reward-steps", type=int, default=600)
    parser.add_argument("--grpo-steps", type=int, default=20)
    parser.add_argument(
        "--stages",
        nargs="+",
        default=["dpo", "reward", "reward_no_norm", "grpo"],
        choices=["dpo", "reward", "reward_no_norm", "grpo"],
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = starter_pairs()
    policy, rm = lab.tiny_model("causal"), lab.tiny_model("reward")
    prompts = starter_prompts()
    cases = {
        "dpo": (raw_dpo, lab_dpo, policy, data, args.dpo_steps),
        "reward": (raw_reward, lab_reward, rm, data, args.reward_steps),
        "reward_no_norm": (raw_reward, lab_reward_no_norm, rm, data, args.reward_steps),
        "grpo": (raw_grpo, lab_grpo, policy, prompts, args.grpo_steps),
    }
    for name in args.stages:
        raw, ours, model, data, steps = cases[name]
        timed(raw, model, data, 2)  # warm-up: imports, tokenizer caches
        timed(ours, model, data, 2)
        ratios, raws, labs = [], [], []
        for round_ in range(args.rounds):
            order = [("raw", raw), ("lab", ours)] if round_ % 2 == 0 else [("lab", ours), ("raw", raw)]
            seconds = {label: timed(fn, model, data, steps) for label, fn in order}
            raws.append(seconds["raw"])
            labs.append(seconds["lab"])
            ratios.append(seconds["lab"] / seconds["raw"])
        fixed = statistics.median(lab_s - raw_s for lab_s, raw_s in zip(labs, raws))
        print(
            f"{name}: raw TRL median {statistics.median(raws):.2f} s, lab median {statistics.median(labs):.2f} s, "
            f"lab/raw ratio median {statistics.median(ratios):.3f} (per round: "
            f"{', '.join(f'{r:.3f}' for r in ratios)}), fixed cost {fixed:+.2f} s; "
            f"{steps} steps x {args.rounds} rounds",
            flush=True,
        )


if __name__ == "__main__":
    main()
