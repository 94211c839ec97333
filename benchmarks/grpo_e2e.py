"""GRPO end to end on the embedded model: does it beat the start policy on held-out gold, and what does
a step cost next to our PPO at the same number of generated completions?

    .venv/bin/python benchmarks/grpo_e2e.py --out runs/grpo_e2e            # SmolLM2-135M, concise, 40 steps
    .venv/bin/python benchmarks/grpo_e2e.py --tiny --steps 2                 # the pipeline on a tiny model, seconds

1. GRPO from the start policy with `lab.GRPOConfig`'s defaults (only output_dir, max_steps and the
   seed given) on the task's train prompts, rewarded by the task's gold rule.
2. PPO from the same start for the same number of generated completions (updates x batch = steps x
   per_device_train_batch_size), also with its defaults, unless `--no-ppo`.
3. Gold of the start policy and of each trained one on the task's held-out test prompts (`--repeats`
   samples per prompt at temperature 1, the same seeds for every policy); paired differences against
   the start with bootstrap 95% CIs (`lab.compare`).

`--resume` reuses finished run folders in `--out`. Prints and writes `--out/results.json`: gold with CIs,
differences with CIs, seconds per step, and completions per second of each method.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="concise", help="a gold task: concise or arithmetic")
    p.add_argument("--steps", type=int, default=40, help="GRPO optimizer steps (at most 40 on a CPU)")
    p.add_argument("--eval-prompts", type=int, default=64, help="held-out test prompts")
    p.add_argument("--repeats", type=int, default=2, help="samples per held-out prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ppo", action="store_true", help="skip the PPO comparison")
    p.add_argument("--tiny", action="store_true", help="a tiny random model: checks the pipeline in seconds")
    p.add_argument("--resume", action="store_true", help="reuse finished run folders in --out (their wall_s)")
    p.add_argument("--out", default="runs/grpo_e2e")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import rlhf_lab as lab

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy = lab.tiny_model("causal", seed=args.seed) if args.tiny else lab.load_policy()
    task = lab.task(args.task)
    test = task.prompts("test")[: args.eval_prompts] * args.repeats
    config = lab.GRPOConfig(output_dir=str(out / "grpo"), max_steps=args.steps, seed=args.seed, disable_tqdm=True)

    def stage(name: str, train):
        """Train, or with --resume load the finished run folder; its summary's wall_s is the time."""
        done = out / name / "run.json"
        run = lab.load_run(out / name) if args.resume and done.exists() else train()
        seconds[name] = run.summary["wall_s"]
        return run

    seconds: dict[str, float] = {}
    grpo = stage("grpo", lambda: lab.grpo(policy, task, task, config))
    completions = args.steps * config.per_device_train_batch_size
    runs = {"start": policy, "grpo": grpo}
    if not args.no_ppo:
        batch = config.per_device_train_batch_size
        ppo_config = lab.PPOConfig(
            output_dir=str(out / "ppo"),
            total_updates=completions // batch,
            batch_size=batch,
            max_new_tokens=config.max_completion_length,
            seed=args.seed,
        )
        runs["ppo"] = stage("ppo", lambda: lab.ppo(policy, task, task, ppo_config))
    table = lab.compare(
        list(runs.values()), test, gold=task, max_new_tokens=config.max_completion_length, seed=args.seed, show=False
    )
    table.index = list(runs)
    steps = {"grpo": args.steps, "ppo": completions // config.per_device_train_batch_size}
    results = {
        "task": task.name,
        "model": policy.name,
        "grpo_config": {"max_steps": args.steps, "learning_rate": grpo.summary["defaults"].get("learning_rate")},
        "completions_per_method": completions,
        "eval_samples": len(test),
        "gold": {n: [table.loc[n, "gold_mean"], table.loc[n, "gold_lo"], table.loc[n, "gold_hi"]] for n in runs},
        "gold_diff": {
            n: [table.loc[n, "gold_diff_mean"], table.loc[n, "gold_diff_lo"], table.loc[n, "gold_diff_hi"]]
            for n in runs
            if n != "start"
        },
        "seconds": seconds,
        "seconds_per_step": {n: seconds[n] / steps[n] for n in seconds},
        "completions_per_second": {n: completions / seconds[n] for n in seconds},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    for name in runs:
        g = results["gold"][name]
        line = f"{name:6s} gold {g[0]:.3f} [{g[1]:.3f}, {g[2]:.3f}]"
        if name in results["gold_diff"]:
            d = results["gold_diff"][name]
            line += f"  diff vs start {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
        if name in seconds:
            line += f"  {seconds[name]:.0f} s, {results['seconds_per_step'][name]:.1f} s/step"
        print(line, flush=True)
    return results


if __name__ == "__main__":
    main()
