"""Defaults that learn, end to end: every stage called with only `output_dir` on the embedded model,
trained from a few hundred simulated labels, judged by gold on held-out prompts.

    .venv/bin/python benchmarks/defaults_e2e.py --out runs/defaults_e2e                  # every stage (hours)
    .venv/bin/python benchmarks/defaults_e2e.py --out runs/defaults_e2e --stages dpo,kto # then --resume for more
    .venv/bin/python benchmarks/defaults_e2e.py --tiny --quick                           # the pipeline, a tiny model

1. Labels: `--labels` pairs of the start policy's own samples (two per train prompt of the gold task,
   temperature 1, 64 tokens) labelled by `lab.SimulatedAnnotator` (Bradley-Terry on gold, temperature
   0.1, ties dropped); written to `--out/labels.jsonl`.
2. From the start policy, each with its config's defaults (only output_dir, and seed 0):
   - `dpo`: `lab.dpo` on the labels;
   - `kto`: `lab.kto` on the same labels split into desirable (chosen) and undesirable (rejected) rows;
   - `ppo`: `lab.train_reward_model` on the labels, then `lab.ppo` against it on the task's train prompts;
   - `grpo`: `lab.grpo` against the same reward model (trained once, shared with `ppo`).
3. Gold of the start policy and of each trained one on the task's held-out test prompts (`--repeats`
   samples each at temperature 1, the same seeds for every policy; `lab.compare`), with paired bootstrap
   95% CIs of the difference against the start.

`--quick` shrinks every budget (steps, updates, labels) to check the pipeline: then the defaults are not
what runs. `--resume` reuses the labels and every finished run folder in `--out`. Writes
`--out/results.json`: gold and differences with CIs, the settings each stage derived, wall times.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

STAGES = ("dpo", "kto", "ppo", "grpo")
QUICK = {  # budgets for checking the pipeline, not the defaults
    "dpo": {"max_steps": 2},
    "kto": {"max_steps": 2},
    "reward": {"max_steps": 2},
    "ppo": {"total_updates": 2, "batch_size": 4, "mini_batch_size": 2, "max_new_tokens": 8},
    "grpo": {"max_steps": 2, "max_completion_length": 8},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="concise", help="a gold task: concise or arithmetic")
    p.add_argument("--labels", type=int, default=300, help="simulated preference labels (the issue's bar: at most 300)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    p.add_argument("--eval-prompts", type=int, default=64, help="held-out test prompts")
    p.add_argument("--repeats", type=int, default=2, help="samples per held-out prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="a tiny random model")
    p.add_argument("--quick", action="store_true", help="tiny budgets everywhere: checks the pipeline only")
    p.add_argument("--resume", action="store_true", help="reuse labels and finished run folders in --out")
    p.add_argument("--out", default="runs/defaults_e2e")
    args = p.parse_args(argv)
    unknown = set(args.stages.split(",")) - set(STAGES)
    if unknown:
        p.error(f"--stages: unknown {', '.join(sorted(unknown))}; choose from {', '.join(STAGES)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import rlhf_lab as lab
    from rlhf_lab.stages.kto import unpair

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = args.stages.split(",")
    policy = lab.tiny_model("causal", seed=args.seed) if args.tiny else lab.load_policy()
    task = lab.task(args.task)
    seconds: dict[str, float] = {}

    def config(cls, name: str):
        return cls(output_dir=str(out / name), seed=args.seed, **(QUICK[name] if args.quick else {}))

    def stage(name: str, train):
        """Train, or with --resume load the finished run folder; times what it trains."""
        if args.resume and (out / name / "run.json").exists():
            print(f"[defaults_e2e] {name}: reusing {out / name}", flush=True)
            return lab.load_run(out / name)
        started = time.perf_counter()
        result = train()
        seconds[name] = time.perf_counter() - started
        print(f"[defaults_e2e] {name}: {seconds[name]:.0f} s", flush=True)
        return result

    labels_file = out / "labels.jsonl"
    if args.resume and labels_file.exists():
        from datasets import Dataset

        prefs = Dataset.from_json(str(labels_file))
    else:
        started = time.perf_counter()
        annotator = lab.SimulatedAnnotator(task, 0.1, seed=args.seed, ties=not args.tiny)
        n_labels = 8 if args.quick else args.labels
        prefs = lab.preference_dataset(policy, task.prompts("train"), annotator, n_pairs=n_labels, seed=args.seed)
        prefs.to_json(labels_file)
        seconds["labels"] = time.perf_counter() - started

    runs: dict[str, Any] = {"start": policy}
    if "dpo" in wanted:
        runs["dpo"] = stage("dpo", lambda: lab.dpo(policy, prefs, config(lab.DPOConfig, "dpo")))
    if "kto" in wanted:
        runs["kto"] = stage("kto", lambda: lab.kto(policy, unpair(prefs), config(lab.KTOConfig, "kto")))
    if {"ppo", "grpo"} & set(wanted):
        rm = stage("reward", lambda: lab.train_reward_model(policy, prefs, config(lab.RewardConfig, "reward")))
        prompts = task.prompts("train")
        if "ppo" in wanted:
            runs["ppo"] = stage("ppo", lambda: lab.ppo(policy, rm, prompts, config(lab.PPOConfig, "ppo")))
        if "grpo" in wanted:
            runs["grpo"] = stage("grpo", lambda: lab.grpo(policy, rm, prompts, config(lab.GRPOConfig, "grpo")))

    test = task.prompts("test")[: args.eval_prompts] * args.repeats
    started = time.perf_counter()
    table = lab.compare(list(runs.values()), test, gold=task, temperature=1.0, seed=args.seed, show=False)
    seconds["evaluate"] = time.perf_counter() - started
    table.index = list(runs)
    results = {
        "task": task.name,
        "model": policy.name,
        "labels": len(prefs),
        "quick": args.quick,
        "eval_samples": len(test),
        "gold": {n: [table.loc[n, c] for c in ("gold_mean", "gold_lo", "gold_hi")] for n in runs},
        "gold_diff": {
            n: [table.loc[n, c] for c in ("gold_diff_mean", "gold_diff_lo", "gold_diff_hi")]
            for n in runs
            if n != "start"
        },
        "derived": {n: r.summary.get("defaults", {}) for n, r in runs.items() if n != "start"},
        "seconds": seconds,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    for name in runs:
        g = results["gold"][name]
        line = f"{name:6s} gold {g[0]:.3f} [{g[1]:.3f}, {g[2]:.3f}]"
        if name in results["gold_diff"]:
            d = results["gold_diff"][name]
            line += f"  diff vs start {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
        print(line, flush=True)
    return results


if __name__ == "__main__":
    main()
