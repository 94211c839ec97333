"""Step time and peak RSS of the reward-model and DPO stages on the embedded model, tree against tree.

    .venv/bin/python benchmarks/stage_steps.py --tree /tmp/base --tree . [--stages reward dpo] [--rounds 2]
        [--steps 4] [--pairs 48] [--json FILE]

Each run is a fresh child process (this script with `--child STAGE`) with its tree first on PYTHONPATH, so its
peak RSS (`ru_maxrss`, the whole stage: model load, training, the normalization pass and the held-out
evaluation) is that run's alone. The order of the trees rotates every round. Settings are each tree's own
example configs (configs/reward.yaml: 8 pairs per step, max_length 512; configs/dpo.yaml: 16 pairs per
optimizer step, max_length 512, one epoch; pairs per forward pass 4 before issue 17, 1 since) on the first `--pairs` starter pairs, so that one epoch is a
few steps; the reward model trains `--steps` steps. Time per optimizer step is the median between
`on_step_begin` and `on_step_end`, the first step left out; a reference pass made before training (DPO's
precomputed log-probs) is reported apart, in `before_s`. Each child prints its final logged loss and metrics,
so equal results can be checked side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def child(stage: str, steps: int, pairs: int, out: str) -> dict:
    import yaml
    from transformers import TrainerCallback

    import rlhf_lab as lab

    class Clock(TrainerCallback):
        def __init__(self):
            self.started, self.steps, self.begin = time.perf_counter(), [], None

        def on_train_begin(self, args, state, control, **kwargs):
            self.before = time.perf_counter() - self.started

        def on_step_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(time.perf_counter() - self.begin)

    clock = Clock()
    data = lab.starter_data("preference", "train").select(range(pairs))
    tree = Path(lab.__file__).resolve().parents[1]  # the tree under test: its own example configs
    settings = yaml.safe_load((tree / "configs" / f"{stage}.yaml").read_text())
    settings = {k: v for k, v in settings.items() if k not in ("model", "data")}
    settings.update(output_dir=out, monitor=False, disable_tqdm=True, report_to="none")
    if stage == "reward":
        settings.update(max_steps=steps, logging_steps=1)
        run = lab.train_reward_model(None, data, lab.RewardConfig(**settings), callbacks=[clock])
    else:
        settings.update(logging_steps=1)
        run = lab.dpo(None, data, lab.DPOConfig(**settings), callbacks=[clock])
    final = run.metrics.dropna(subset=["loss"]).iloc[-1].to_dict()
    return {
        "step_s": statistics.median(clock.steps[1:] or clock.steps),
        "steps": len(clock.steps),
        "before_s": round(clock.before, 2),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "final": {k: v for k, v in final.items() if isinstance(v, float) and "runtime" not in k and "second" not in k},
        "summary_eval": run.summary.get("eval"),
    }


def measure(tree: Path, stage: str, args) -> dict:
    with tempfile.TemporaryDirectory() as out:
        env = {
            **os.environ,
            "PYTHONPATH": f"{tree}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "HF_HUB_OFFLINE": "1",
        }
        cmd = [sys.executable, __file__, "--child", stage, "--steps", str(args.steps), "--pairs", str(args.pairs),
               "--out", f"{out}/run"]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"{stage} on {tree} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", type=Path)
    parser.add_argument("--stages", nargs="+", default=["reward", "dpo"], choices=["reward", "dpo"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.pairs, args.out)))
        return
    trees = [t.resolve() for t in (args.tree or [HERE])]
    results = []
    for stage in args.stages:
        for round_ in range(args.rounds):
            order = trees[round_ % len(trees) :] + trees[: round_ % len(trees)]
            got = {tree: measure(tree, stage, args) for tree in order}
            for tree in trees:
                results.append({"stage": stage, "round": round_ + 1, "tree": str(tree), **got[tree]})
                r = results[-1]
                print(f"{stage} round {round_ + 1} {tree}: {r['step_s']:.2f} s/step ({r['steps']} steps, "
                      f"{r['before_s']} s before training), peak {r['peak_rss'] / 2**30:.2f} GiB, final {r['final']}",
                      flush=True)  # fmt: skip
            first, last = got[trees[0]], got[trees[-1]]
            print(f"  ratio last/first: time {last['step_s'] / first['step_s']:.3f}, "
                  f"peak RSS {last['peak_rss'] / first['peak_rss']:.3f}", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
