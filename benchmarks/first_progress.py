"""How long a person waits for the first sign of life: seconds from calling `lab.ppo` on the embedded model
(its defaults, one update) to the first progress line, to the first line inside the update (rollout
tokens), and to the first logged metrics.

    .venv/bin/python benchmarks/first_progress.py            # the embedded model
    .venv/bin/python benchmarks/first_progress.py --tiny     # the pipeline, a tiny model
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from transformers import TrainerCallback


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny random model")
    args = parser.parse_args(argv)

    import rlhf_lab as lab
    from rlhf_lab.monitor.progress import ProgressLine

    seen: dict[str, float] = {}
    started = time.perf_counter()
    render = ProgressLine._render

    def timed(self, text, forced):  # note when each kind of line first shows, then show it as usual
        seen.setdefault("first progress line", time.perf_counter() - started)
        if "rollout" in text:
            seen.setdefault("first line inside the update", time.perf_counter() - started)
        return render(self, text, forced)

    class FirstLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.setdefault("first logged metrics", time.perf_counter() - started)

    ProgressLine._render = timed
    policy = lab.tiny_model("causal", seed=0) if args.tiny else lab.load_policy()
    task = lab.task("concise")
    seen["model loaded (before the call)"] = time.perf_counter() - started
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        lab.ppo(policy, task, task.prompts("train"), lab.PPOConfig(output_dir=out, total_updates=1),
                callbacks=[lab.LiveMonitor(live=False), FirstLog()])  # fmt: skip
    result = {name: round(seconds, 2) for name, seconds in seen.items()}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
