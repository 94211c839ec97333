"""What the lab's stage wrappers cost on top of raw TRL: same tiny DPO and reward-model runs,
interleaved A/B in one process, printed as a time ratio (target: lab / raw <= 1.03).

    python benchmarks/wrapper_overhead.py [--rounds 5] [--steps 40]

"raw" is what a TRL user writes: build the trainer on a ready dataset, train, save the model.
"lab" is `lab.dpo(...)` / `lab.train_reward_model(...)`: data validation, a private copy of the
model, the metrics callback, the run folder and the saved weights, with held-out samples and
the reward model's evaluation switched off (num_samples=0, no eval data) so both do the same
training work. The order alternates every round; the ratio is the median of per-round ratios.
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
COMMON = dict(per_device_train_batch_size=8, learning_rate=1e-4, logging_steps=5, max_length=256, seed=0,
              report_to="none", save_strategy="no", bf16=False, use_cpu=True, disable_tqdm=True)  # fmt: skip


def starter_pairs():
    data = lab.starter_data("preference", "train")
    return data.remove_columns([c for c in STARTER_EXTRA if c in data.column_names])


def raw_dpo(policy, data, out, steps):
    args = trl.DPOConfig(output_dir=out, max_steps=steps, activation_checkpointing=False, **COMMON)
    model, ref = copy.deepcopy(policy.model), copy.deepcopy(policy.model)
    trainer = trl.DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=data,
                             processing_class=policy.tokenizer)  # fmt: skip
    trainer.train()
    trainer.save_model(out)


def lab_dpo(policy, data, out, steps):
    lab.dpo(policy, data, lab.DPOConfig(output_dir=out, max_steps=steps, num_samples=0, **COMMON))


def raw_reward(rm, data, out, steps):
    args = trl.RewardConfig(output_dir=out, max_steps=steps, activation_checkpointing=False, **COMMON)
    trainer = trl.RewardTrainer(model=copy.deepcopy(rm.model), args=args, train_dataset=data,
                                processing_class=rm.tokenizer)  # fmt: skip
    trainer.train()
    trainer.save_model(out)


def lab_reward(rm, data, out, steps):
    lab.train_reward_model(
        rm, data, lab.RewardConfig(output_dir=out, max_steps=steps, num_samples=0, **COMMON)
    )


def timed(fn, *args) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        fn(*args[:-1], out, args[-1])
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = starter_pairs()
    policy, rm = lab.tiny_model("causal"), lab.tiny_model("reward")
    cases = {"dpo": (raw_dpo, lab_dpo, policy), "reward": (raw_reward, lab_reward, rm)}
    for name, (raw, ours, model) in cases.items():
        timed(raw, model, data, 2)  # warm-up: imports, tokenizer caches
        timed(ours, model, data, 2)
        ratios, raws, labs = [], [], []
        for round_ in range(args.rounds):
            order = [("raw", raw), ("lab", ours)] if round_ % 2 == 0 else [("lab", ours), ("raw", raw)]
            seconds = {label: timed(fn, model, data, args.steps) for label, fn in order}
            raws.append(seconds["raw"])
            labs.append(seconds["lab"])
            ratios.append(seconds["lab"] / seconds["raw"])
        print(f"{name}: raw TRL median {statistics.median(raws):.2f} s, lab median {statistics.median(labs):.2f} s, "
              f"lab/raw ratio median {statistics.median(ratios):.3f} (per round: "
              f"{', '.join(f'{r:.3f}' for r in ratios)}); {args.steps} steps x {args.rounds} rounds")  # fmt: skip


if __name__ == "__main__":
    main()
