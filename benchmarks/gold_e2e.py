"""End to end on a gold task: SFT -> reward model -> PPO, and DPO on the same labels, judged by gold.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gold_e2e.py --out runs/gold_e2e   # SmolLM2-135M, about 90 min on 1 core
    .venv/bin/python benchmarks/gold_e2e.py --quick       # a smoke run of every stage, a few minutes
    .venv/bin/python benchmarks/gold_e2e.py --tiny        # the same pipeline on a tiny random model, seconds

Pipeline (task "concise" by default; every number below is a flag):

1. Labels: `--labels` pairs of the start policy's own samples (two per train prompt, temperature 1,
   `--max-new-tokens` tokens) labelled by `lab.SimulatedAnnotator` (Bradley-Terry on gold,
   temperature `--bt-temperature`; equal-gold pairs are ties and left out, except with `--tiny`).
2. SFT data: the better response of each labelled pair, by gold, kept when its gold is at least
   `--sft-min-gold` (best-of-2 rejection sampling from the model's own samples: on-distribution
   demonstrations that cost no extra generation, and leave room for RLHF above them).
3. SFT from the start policy; a Bradley-Terry reward model on the labels (`--rm-backbone`: the
   embedded MiniLM cross-encoder by default, or the SFT model); PPO from SFT against that reward model
   on the task's train prompts; DPO from SFT on the labels.
4. Gold of SFT, PPO and DPO on the task's held-out test prompts (`--eval-repeats` samples each at
   temperature 1, the same seeds for every policy), paired differences PPO - SFT and DPO - SFT with
   bootstrap 95% CIs (`lab.paired_difference`), the proxy reward model's mean score, and how well
   proxy and gold agree on those samples (Pearson r; within-prompt pairwise accuracy).

Everything is written to `--out` (run folders per stage) and `--out/results.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

STAGES = ("sft", "reward", "ppo", "dpo", "evaluate")
QUICK = dict(
    labels=16,
    ppo_updates=2,
    max_new_tokens=16,
    eval_prompts=8,
    eval_repeats=1,
    ppo_batch=4,
    rm_epochs=1.0,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="concise", help="a gold task: concise or arithmetic")
    p.add_argument("--labels", type=int, default=400, help="simulated preference labels (at most 2000)")
    p.add_argument("--bt-temperature", type=float, default=0.1, help="annotator Bradley-Terry T, in gold units")
    p.add_argument("--ppo-updates", type=int, default=40, help="PPO updates (at most 40)")
    p.add_argument("--ppo-batch", type=int, default=16, help="PPO prompts per update")
    p.add_argument("--ppo-lr", type=float, default=1e-5)
    p.add_argument("--ppo-epochs", type=int, default=2)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--sft-min-gold", type=float, default=0.5)
    p.add_argument("--sft-epochs", type=float, default=1.0)
    p.add_argument(
        "--rm-backbone",
        default="minilm",
        choices=("minilm", "sft"),
        help="reward model trunk: the embedded MiniLM encoder or the SFT policy's",
    )
    p.add_argument("--rm-epochs", type=float, default=3.0)
    p.add_argument("--rm-lr", type=float, default=5e-5)
    p.add_argument("--dpo-epochs", type=float, default=1.0)
    p.add_argument("--dpo-lr", type=float, default=2e-5)
    p.add_argument("--dpo-beta", type=float, default=0.1)
    p.add_argument("--eval-prompts", type=int, default=0, help="held-out prompts to judge on (0: all)")
    p.add_argument("--eval-repeats", type=int, default=2, help="samples per held-out prompt and policy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    p.add_argument("--out", default="runs/gold_e2e", help="output folder")
    p.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK}")
    p.add_argument("--tiny", action="store_true", help="a tiny random model instead of SmolLM2 (tests)")
    p.add_argument("--resume", action="store_true", help="reuse labels and finished stages found in --out")
    p.add_argument(
        "--stages",
        default=",".join(STAGES),
        help="stages to run (others only reused with --resume); e.g. sft,dpo in a second process",
    )
    args = p.parse_args(argv)
    if args.quick or args.tiny:
        for name, value in QUICK.items():
            if getattr(args, name) == p.get_default(name):
                setattr(args, name, value)
    if not (1 <= args.labels <= 2000 and 1 <= args.ppo_updates <= 40):
        p.error("the issue's budget: 1 <= --labels <= 2000 and 1 <= --ppo-updates <= 40")
    return args


def sft_demonstrations(prefs, min_gold: float, at_least: int = 8):
    """The better response of each labelled pair by gold (best of 2), kept when gold >= min_gold;
    at least `at_least` of the best ones, so a weak start policy still gets a few demonstrations."""
    from datasets import Dataset

    best = []
    for row in prefs:
        side = "chosen" if row["gold_chosen"] >= row["gold_rejected"] else "rejected"
        best.append((max(row["gold_chosen"], row["gold_rejected"]), row["prompt"] + row[side]))
    best.sort(key=lambda item: -item[0])
    keep = [messages for gold, messages in best if gold >= min_gold] or []
    if len(keep) < at_least:
        keep = [messages for _, messages in best[:at_least]]
    return Dataset.from_dict({"messages": keep}), sum(g for g, _ in best[: len(keep)]) / len(keep)


def judge(policies: dict[str, Any], task, reward, args, out_dir: Path) -> dict[str, Any]:
    """Gold (and proxy reward) of each policy on the held-out prompts; paired differences to SFT.

    Each policy samples `eval_repeats` completions per prompt (seeds 1000, 1001, ...); a prompt's
    figure is the mean over its repeats, so CIs resample prompts, the unit the repeats share."""
    import numpy as np

    import rlhf_lab as lab
    from rlhf_lab.evaluation.sampling import sample
    from rlhf_lab.evaluation.stats import mean_ci

    prompts = task.prompts("test")
    prompts = prompts[: args.eval_prompts] if args.eval_prompts else prompts
    out: dict[str, Any] = {"n_prompts": len(prompts), "repeats": args.eval_repeats, "policies": {}}
    gold: dict[str, np.ndarray] = {}
    pooled: list[tuple[str, float, float]] = []  # (prompt, gold, proxy) of every sample, for agreement
    with open(out_dir / "eval_samples.jsonl", "w") as file:
        for name, policy in policies.items():
            texts = []
            for r in range(args.eval_repeats):
                drawn = sample(policy, prompts, max_new_tokens=args.max_new_tokens, seed=1000 + r, batch_size=32)
                texts += drawn.texts
            items = prompts * args.eval_repeats
            scores, proxy = np.asarray(task(items, texts)), np.asarray(reward(items, texts), dtype=float)
            for prompt, text, g, s in zip(items, texts, scores, proxy):
                file.write(
                    json.dumps({"policy": name, "prompt": prompt, "completion": text, "gold": g, "proxy": s}) + "\n"
                )
            pooled += [(json.dumps(p), float(g), float(s)) for p, g, s in zip(items, scores, proxy)]
            gold[name] = scores.reshape(args.eval_repeats, len(prompts)).mean(0)
            out["policies"][name] = {
                "gold": mean_ci(gold[name]),
                "proxy": mean_ci(proxy.reshape(args.eval_repeats, len(prompts)).mean(0)),
                "mean_words": float(np.mean([len(t.split()) for t in texts])),
                "examples": [{"prompt": p, "completion": t} for p, t in zip(items[:3], texts[:3])],
            }
    for name in policies:
        if name != "sft":
            out[f"{name}_minus_sft"] = lab.paired_difference(gold[name], gold["sft"])
    out["proxy_gold_agreement"] = agreement(pooled)
    return out


def agreement(samples: list[tuple[str, float, float]]) -> dict[str, float]:
    """How well the proxy reward tracks gold on (prompt, gold, proxy) samples: Pearson r over all of
    them, and the share of same-prompt pairs with different gold that the proxy orders the same way."""
    import numpy as np

    gold, proxy = np.array([g for _, g, _ in samples]), np.array([s for _, _, s in samples])
    by_prompt: dict[str, list[int]] = {}
    for i, (prompt, _, _) in enumerate(samples):
        by_prompt.setdefault(prompt, []).append(i)
    pairs = [(a, b) for idx in by_prompt.values() for a in idx for b in idx if a < b and gold[a] != gold[b]]
    agree = [(proxy[a] > proxy[b]) == (gold[a] > gold[b]) for a, b in pairs]
    r = float(np.corrcoef(gold, proxy)[0, 1]) if gold.std() > 0 and proxy.std() > 0 else float("nan")
    return {"pearson_r": r, "pair_accuracy": float(np.mean(agree)) if agree else float("nan"), "pairs": len(pairs)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    import rlhf_lab as lab

    out, started, times = Path(args.out), time.perf_counter(), {}
    out.mkdir(parents=True, exist_ok=True)

    def mark(stage: str, since: float) -> float:
        times[stage] = round(time.perf_counter() - since, 1)
        print(f"[gold_e2e] {stage}: {times[stage]} s (total {time.perf_counter() - started:.0f} s)", flush=True)
        return time.perf_counter()

    task = lab.task(args.task)
    policy = lab.tiny_model("causal", seed=args.seed) if args.tiny else lab.load_policy()
    annotator = lab.SimulatedAnnotator(task, args.bt_temperature, seed=args.seed, ties=not args.tiny)
    common = dict(monitor=False, num_samples=0, seed=args.seed, logging_steps=5)

    def stage(name: str, train):  # with --resume, a finished run folder is loaded instead of trained again
        if args.resume and (out / name / "run.json").exists():
            print(f"[gold_e2e] {name}: reusing {out / name}", flush=True)
            return (lab.load_reward_run if name == "reward" else lab.load_run)(out / name)
        return train() if name in args.stages.split(",") else None

    t = time.perf_counter()
    if args.resume and (out / "labels.jsonl").exists():
        from datasets import Dataset

        prefs = Dataset.from_json(str(out / "labels.jsonl"))
    else:
        prefs = lab.preference_dataset(
            policy,
            task.prompts("train"),
            annotator,
            n_pairs=args.labels,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            batch_size=32,
        )
        prefs.to_json(out / "labels.jsonl")
    t = mark("labels", t)
    demos, demo_gold = sft_demonstrations(prefs, args.sft_min_gold)
    sft = stage(
        "sft",
        lambda: lab.sft(
            policy,
            demos,
            lab.SFTConfig(
                output_dir=str(out / "sft"), num_train_epochs=args.sft_epochs, per_device_train_batch_size=8, **common
            ),
        ),
    )
    t = mark("sft", t)
    backbone = "minilm" if args.rm_backbone == "minilm" and not args.tiny else sft
    rm = stage(
        "reward",
        lambda: lab.train_reward_model(
            backbone,
            prefs,
            lab.RewardConfig(
                output_dir=str(out / "reward"),
                num_train_epochs=args.rm_epochs,
                per_device_train_batch_size=8,
                learning_rate=args.rm_lr,
                **common,
            ),
        ),
    )
    t = mark("reward_model", t)
    ppo = stage(
        "ppo",
        lambda: lab.ppo(
            sft,
            rm,
            task.prompts("train"),
            lab.PPOConfig(
                output_dir=str(out / "ppo"),
                total_updates=args.ppo_updates,
                batch_size=args.ppo_batch,
                mini_batch_size=min(8, args.ppo_batch),
                ppo_epochs=args.ppo_epochs,
                learning_rate=args.ppo_lr,
                kl_coef=args.kl_coef,
                max_new_tokens=args.max_new_tokens,
                monitor=False,
                num_samples=2,
                seed=args.seed,
                logging_steps=1,
            ),
        ),
    )
    t = mark("ppo", t)
    dpo = stage(
        "dpo",
        lambda: lab.dpo(
            sft,
            prefs,
            lab.DPOConfig(
                output_dir=str(out / "dpo"),
                num_train_epochs=args.dpo_epochs,
                per_device_train_batch_size=8,
                learning_rate=args.dpo_lr,
                beta=args.dpo_beta,
                **common,
            ),
        ),
    )
    t = mark("dpo", t)
    if "evaluate" not in args.stages.split(",") or None in (sft, rm, ppo, dpo):
        print(f"[gold_e2e] stopping before the evaluation; times {times}", flush=True)
        return {"times_s": times}
    evaluation = judge({"sft": sft, "ppo": ppo, "dpo": dpo}, task, rm, args, out)
    mark("evaluate", t)

    ppo_rows = ppo.metrics.to_dict("records") if len(ppo.metrics) else []
    results = {
        "command": " ".join(["benchmarks/gold_e2e.py", *(sys.argv[1:] if argv is None else argv)]),
        "args": vars(args),
        "model": policy.name,
        "task": task.name,
        "labels": len(prefs),
        "sft_examples": len(demos),
        "sft_demo_gold": demo_gold,
        "reward_model": {k: v for k, v in rm.summary.items() if isinstance(v, (int, float, str))},
        "ppo_curve": [{k: r.get(k) for k in ("step", "objective/scores", "objective/kl") if k in r} for r in ppo_rows],
        "evaluation": evaluation,
        "times_s": times,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    ev = evaluation
    print(json.dumps({name: round(p["gold"]["mean"], 3) for name, p in ev["policies"].items()}))
    for name in ("ppo", "dpo"):
        d = ev[f"{name}_minus_sft"]
        print(f"{name} - sft gold: {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] significant={d['significant']}")
    print(f"proxy vs gold on the evaluation samples: {ev['proxy_gold_agreement']}")
    print(f"wall {results['wall_s']} s -> {out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
