"""What the training monitor costs: the same tiny DPO run with and without it, interleaved A/B in one
process, printed as a time ratio (target: with / without <= 1.02).

    python benchmarks/monitor_overhead.py [--rounds 4] [--steps 15] [--logging-steps 1]

Both arms are `lab.dpo(lab.tiny_model(), "starter", DPOConfig(...))` with held-out samples off;
"with" adds `callbacks=[LiveMonitor()]` (once the stage configs have a `monitor` flag, both arms
set it False so the stage adds none of its own). Outside a notebook the monitor runs headless: it collects every
log, runs the diagnostics and writes monitor.html (plotly.js inline) at train end, which is the
cost measured here. logging_steps=1 logs every step, the monitor's worst case. The order alternates
every round; the ratio is the median of the per-round ratios. The machine's load moves whole
runs by more than the monitor costs, so the script also prints the time spent inside the
monitor's callbacks as a share of the run: the monitor's own cost, independent of that noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

import rlhf_lab as lab  # noqa: E402
from rlhf_lab.monitor.live import LiveMonitor  # noqa: E402

hf_logging.set_verbosity_error()
HAS_FLAG = "monitor" in {f.name for f in dataclasses.fields(lab.DPOConfig)}


class TimedMonitor(LiveMonitor):
    """The monitor, plus the wall time spent inside its callbacks: its own cost, immune to machine load."""

    spent = 0.0

    def _timed(self, method, *args, **kwargs):
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            TimedMonitor.spent += time.perf_counter() - start

    def on_train_begin(self, *args, **kwargs):
        return self._timed(LiveMonitor.on_train_begin, *args, **kwargs)

    def on_log(self, *args, **kwargs):
        return self._timed(LiveMonitor.on_log, *args, **kwargs)

    def on_train_end(self, *args, **kwargs):
        return self._timed(LiveMonitor.on_train_end, *args, **kwargs)


def timed(policy, steps: int, logging_steps: int, monitored: bool) -> float:
    # With the stages' `monitor` flag present it is off in both arms, and the "with" arm passes the
    # monitor as a callback: the same class and path a default-on monitor takes.
    flag = {"monitor": False} if HAS_FLAG else {}
    with tempfile.TemporaryDirectory() as out:
        config = lab.DPOConfig(
            output_dir=out,
            max_steps=steps,
            per_device_train_batch_size=4,
            max_length=128,
            num_samples=0,
            learning_rate=1e-4,
            logging_steps=logging_steps,
            seed=0,
            bf16=False,
            disable_tqdm=True,
            log_level="error",
            **flag,
        )
        start = time.perf_counter()
        lab.dpo(policy, "starter", config, callbacks=[TimedMonitor()] if monitored else None)
        seconds = time.perf_counter() - start
        if monitored and not (Path(out) / "monitor.html").exists():
            raise SystemExit("the monitored run wrote no monitor.html: the benchmark measured nothing")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--logging-steps", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(2)
    policy = lab.tiny_model("causal")
    for monitored in (False, True):  # warm-up: imports, tokenizer and plotly caches
        timed(policy, 2, args.logging_steps, monitored)
    ratios, without, with_, own = [], [], [], []
    for round_ in range(args.rounds):
        order = (False, True) if round_ % 2 == 0 else (True, False)
        TimedMonitor.spent = 0.0
        seconds = {m: timed(policy, args.steps, args.logging_steps, m) for m in order}
        own.append(TimedMonitor.spent / seconds[True])
        without.append(seconds[False])
        with_.append(seconds[True])
        ratios.append(seconds[True] / seconds[False])
    fixed = statistics.median(w - wo for w, wo in zip(with_, without))
    print(
        f"monitor overhead (tiny DPO, {args.steps} steps x {args.rounds} rounds, logging every "
        f"{args.logging_steps} step(s)): without median {statistics.median(without):.2f} s, with median "
        f"{statistics.median(with_):.2f} s, with/without ratio median {statistics.median(ratios):.3f} "
        f"(per round: {', '.join(f'{r:.3f}' for r in ratios)}), fixed cost {fixed:+.2f} s; time inside the "
        f"monitor's callbacks: median {statistics.median(own):.2%} of the monitored run",
        flush=True,
    )


if __name__ == "__main__":
    main()
