"""PPO's fused AdamW against torch's for-loop AdamW: our engine's time per update on the embedded model.

    .venv/bin/python benchmarks/ppo_optimizer.py [--rounds 2] [--updates 4]

Each run is a fresh child process running benchmarks/ppo_vs_trl.py's `smol` configuration of our engine
(SmolLM2-135M full fine-tuning, batch 4, 32 new tokens, 4 PPO epochs, one optimizer step per epoch, 2
threads); the `loop` side replaces `rlhf_lab.stages.ppo.trainer.adamw` with `torch.optim.AdamW(...)`, the
engine's optimizer before. The order of the sides alternates per round; a ratio is fused / loop within a
round (median s/update excluding the first, and the update phase alone: the PPO epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(side: str, updates: int) -> dict:
    sys.path.insert(0, str(HERE))
    import ppo_vs_trl
    import torch

    from rlhf_lab.models import embedded
    from rlhf_lab.stages.ppo import trainer

    if side == "loop":
        trainer.adamw = lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    with tempfile.TemporaryDirectory(prefix=f"ppo-optimizer-{side}-") as out:  # the run folder goes with it
        args = argparse.Namespace(
            mode="smol", updates=updates, model_dir=str(embedded.embedded_path()), temperature=0.7,
            output_dir=out, lora=0, checkpointing=0,
        )  # fmt: skip
        res = ppo_vs_trl.child_ours(args)
    return {k: res[k] for k in ("median_s", "median_cpu_s", "rollout_s", "update_s", "sec_per_update")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--updates", type=int, default=4)
    p.add_argument("--child", choices=["fused", "loop"], help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.child:
        print("RESULT " + json.dumps(child(opts.child, opts.updates)))
        return
    runs: dict[str, list[dict]] = {"fused": [], "loop": []}
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    for rnd in range(opts.rounds):
        for side in ("fused", "loop") if rnd % 2 == 0 else ("loop", "fused"):
            cmd = [sys.executable, __file__, "--child", side, "--updates", str(opts.updates)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if not found:
                raise SystemExit(f"the {side} child failed:\n{proc.stderr[-3000:]}")
            runs[side].append(json.loads(found[0][len("RESULT ") :]))
            r = runs[side][-1]
            print(f"round {rnd + 1} {side:<5} {r['median_s']:.2f} s/update (rollout {r['rollout_s']:.2f} s, "
                  f"update {r['update_s']:.2f} s; per update {r['sec_per_update']})", flush=True)  # fmt: skip
    for key, title in (("median_s", "s/update"), ("update_s", "update phase")):
        per = [f[key] / lo[key] for f, lo in zip(runs["fused"], runs["loop"])]
        print(f"fused / loop, {title}: {statistics.median(per):.3f} ({', '.join(f'{x:.3f}' for x in per)})")


if __name__ == "__main__":
    main()
