"""How long `load_policy()` takes: the one-time GGUF conversion against a cached load, side by side.

    python benchmarks/load_policy.py [--repeats 3]

Each timing runs in a fresh process (so nothing is shared through the import cache) with
HF_HUB_OFFLINE=1. `cold` converts into an empty temporary cache; `warm` loads from that cache.
Timings cover the `load_policy()` call itself; imports are reported separately.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

PROBE = r"""
import json, time
t0 = time.perf_counter()
import rlhf_lab as lab, torch, transformers
t1 = time.perf_counter()
policy = lab.load_policy()
t2 = time.perf_counter()
answer = policy.chat("What is the capital of France?", max_new_tokens=16)
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "answer": answer}))
"""


def run(cache: str) -> dict:
    env = {**os.environ, "RLHF_LAB_CACHE": cache, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        cold = run(cache)
        warm = [run(cache) for _ in range(args.repeats)]
    warm_load = statistics.median(w["load_s"] for w in warm)
    print(f"cold (convert GGUF -> safetensors): load {cold['load_s']:.2f} s, import {cold['import_s']:.2f} s")
    print(
        f"warm (cached safetensors), median of {args.repeats}: load {warm_load:.2f} s, "
        f"import {statistics.median(w['import_s'] for w in warm):.2f} s"
    )
    print(f"warm / cold load time: {warm_load / cold['load_s']:.3f}  (target: warm load < 3 s)")
    print(f"answer: {warm[-1]['answer']!r}")


if __name__ == "__main__":
    main()
