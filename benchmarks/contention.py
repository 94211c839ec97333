"""No collapse under contention (issue 17): a tiny PPO update alone and beside one busy process pinned to
one core, with the lab's automatic thread count and with torch's default (the old behaviour), as ratios.

    .venv/bin/python benchmarks/contention.py [--rounds 3] [--updates 6] [--json FILE]

Target: with competitor / alone <= 2.0 for the automatic setting. The issue's notebook fell from about
35 to 0.65 tokens/s beside two other torch processes.

Every measurement is a fresh child process (this script with `--child`), so each starts as a notebook
kernel does and the lab chooses its threads at the session's start, the competitor already running:
- "old: torch default": RLHF_LAB_THREADS=off, the lab leaves torch alone (one thread per core);
- "new: automatic": RLHF_LAB_THREADS unset, the rule of `rlhf_lab.threads`.
OMP_NUM_THREADS is removed from the children's environment, which would otherwise fix the count.
The competitor is a process pinned (os.sched_setaffinity) to the last CPU this process may use,
multiplying 256x256 matrices on one torch thread without pause; it starts 1 s before the child.

A child builds `lab.PPOSession` on the tiny model (`lab.tiny_model("causal")`: hidden 64, 2 layers,
a 49k vocabulary) with a function reward, batch 8, 24 new tokens, 4 PPO epochs in 2 minibatches, and
times `rollout -> score -> step` for 1 + `--updates` updates; its figure is the median over updates
excluding the first. Each round runs the four cells in a rotated order; a cell's figure is the median
over rounds, and a setting's ratio is the median of its per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

SETTINGS = {"old: torch default": "off", "new: automatic": None}
PROMPTS = [f"Write one sentence about {topic}." for topic in ("cats", "rain", "bread", "trains", "music", "snow")]
COMPETITOR = """
import os, torch
os.sched_setaffinity(0, {{{cpu}}})
torch.set_num_threads(1)
a = torch.randn(256, 256)
while True:
    a = torch.tanh(a @ a)
"""


def child(updates: int) -> dict:
    """Time `updates` PPO updates (after one warm-up) in this process; what the lab chose for threads."""
    warnings.filterwarnings("ignore")
    import torch
    from transformers.utils import logging as hf_logging

    import rlhf_lab as lab

    hf_logging.set_verbosity_error()

    def length(prompts, completions):
        return [min(len(c), 80) / 80 for c in completions]

    with tempfile.TemporaryDirectory() as folder:
        config = lab.PPOConfig(
            output_dir=folder, total_updates=updates + 1, batch_size=8, mini_batch_size=4, ppo_epochs=4,
            max_new_tokens=24, num_samples=0, seed=0, monitor=False,
        )  # fmt: skip
        session = lab.PPOSession(lab.tiny_model("causal"), length, PROMPTS, config)
        seconds, tokens = [], []
        for _ in range(updates + 1):
            start = time.perf_counter()
            batch = session.rollout()
            session.score(batch)
            logs = session.step(batch)
            seconds.append(time.perf_counter() - start)
            tokens.append(logs.get("completions/mean_length", 0.0) * len(batch))
        threads = session.run.threads
    return {
        "s_per_update": statistics.median(seconds[1:]),
        "tokens_per_s": statistics.median(t / s for t, s in zip(tokens[1:], seconds[1:])),
        "threads": torch.get_num_threads(),
        "choice": threads,
    }


def measure(setting: str | None, competitor: bool, updates: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "RLHF_LAB_THREADS")}
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if setting is not None:
        env["RLHF_LAB_THREADS"] = setting
    busy = None
    if competitor:
        cpu = max(os.sched_getaffinity(0))
        busy = subprocess.Popen([sys.executable, "-c", COMPETITOR.format(cpu=cpu)], env=env)
        time.sleep(1.0)
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--updates", str(updates)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=6)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.updates)), flush=True)
        return
    cells = [(name, competitor) for name in SETTINGS for competitor in (False, True)]
    results: dict[tuple[str, bool], list[dict]] = {cell: [] for cell in cells}
    for round_ in range(args.rounds):
        for name, competitor in cells[round_ % len(cells) :] + cells[: round_ % len(cells)]:
            got = measure(SETTINGS[name], competitor, args.updates)
            results[name, competitor].append(got)
            where = "with competitor" if competitor else "alone"
            print(f"round {round_ + 1}, {name}, {where}: {got['s_per_update']:.3f} s/update, "
                  f"{got['threads']} thread(s)", file=sys.stderr, flush=True)  # fmt: skip
    rows = []
    for name in SETTINGS:
        alone, beside = results[name, False], results[name, True]
        ratios = [b["s_per_update"] / a["s_per_update"] for a, b in zip(alone, beside)]
        rows.append(
            {
                "setting": name,
                "threads": f"{alone[-1]['threads']} / {beside[-1]['threads']}",
                "alone_s": statistics.median(r["s_per_update"] for r in alone),
                "beside_s": statistics.median(r["s_per_update"] for r in beside),
                "alone_tok_s": statistics.median(r["tokens_per_s"] for r in alone),
                "beside_tok_s": statistics.median(r["tokens_per_s"] for r in beside),
                "ratio": statistics.median(ratios),
                "ratios": ratios,
            }
        )
    print(f"tiny PPO update, {args.updates} updates x {args.rounds} rounds, {len(os.sched_getaffinity(0))} CPUs; "
          f"competitor: one busy process pinned to CPU {max(os.sched_getaffinity(0))}")  # fmt: skip
    print("| setting | threads (alone / with) | alone s/update | with competitor s/update | ratio with / alone |")
    print("|---|---|---|---|---|")
    for row in rows:
        per_round = ", ".join(f"{r:.2f}" for r in row["ratios"])
        print(f"| {row['setting']} | {row['threads']} | {row['alone_s']:.3f} | {row['beside_s']:.3f} | "
              f"**{row['ratio']:.2f}** ({per_round}) |")  # fmt: skip
    new = next(r for r in rows if r["setting"] == "new: automatic")
    print(f"target with / alone <= 2.0 (automatic): {'met' if new['ratio'] <= 2.0 else 'NOT met'} ({new['ratio']:.2f})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
