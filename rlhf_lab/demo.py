"""The headless demo behind `make demo`: load the embedded policy, answer held-out starter
prompts, and write a run folder. (The full SFT -> reward -> PPO/DPO quickstart replaces this
when the notebooks land.)"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field

from .config import ConfigError, RunConfig, seed_everything
from .runs import RunFolder


@dataclass
class DemoConfig(RunConfig):
    output_dir: str = field(default="runs/demo", metadata={"help": "The run folder."})
    model: str | None = field(
        default=None, metadata={"help": "Policy to load; None is the embedded SmolLM2."}
    )
    num_prompts: int = field(default=8, metadata={"help": "How many held-out starter prompts to answer."})
    batch_size: int = field(default=4, metadata={"help": "Prompts per generate call."})
    max_new_tokens: int = field(default=64, metadata={"help": "Length limit of each answer."})
    temperature: float = field(default=0.0, metadata={"help": "0 is greedy; above 0 samples."})

    def __post_init__(self):
        super().__post_init__()
        if self.num_prompts < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("num_prompts, batch_size and max_new_tokens must be at least 1")


def run_demo(config: DemoConfig | None = None, *, log=print) -> dict:
    """Run the demo and return its summary; files go to `config.output_dir`."""
    from .models import load_policy
    from .starter import starter_data

    config = config or DemoConfig()
    seed_everything(config.seed)
    folder = RunFolder(config.output_dir)
    folder.write_config(config)

    start = time.perf_counter()
    policy = load_policy(config.model)
    load_s = time.perf_counter() - start
    log(f"loaded {policy.name} in {load_s:.1f} s")

    prompts = [row["prompt"] for row in starter_data("prompts", "test").select(range(config.num_prompts))]
    samples, tokens, gen_s = [], 0, 0.0
    for step, begin in enumerate(range(0, len(prompts), config.batch_size), start=1):
        batch = prompts[begin : begin + config.batch_size]
        t0 = time.perf_counter()
        answers = policy.generate(batch, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                  seed=config.seed + step)  # fmt: skip
        elapsed = time.perf_counter() - t0
        new_tokens = sum(len(policy.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
        tokens, gen_s = tokens + new_tokens, gen_s + elapsed
        folder.log_metrics({"step": step, "time/generate_s": elapsed, "throughput/tokens_per_s": new_tokens / elapsed,
                            "completions/mean_length": new_tokens / len(answers)})  # fmt: skip
        for prompt, answer in zip(batch, answers):
            samples.append({"prompt": prompt[-1]["content"], "completion": answer})
            log(f"\nQ: {prompt[-1]['content']}\nA: {answer}")
    folder.write_samples(samples)
    summary = {
        "stage": "demo",
        "model": policy.name,
        "num_parameters": policy.num_parameters(),
        "num_samples": len(samples),
        "load_s": round(load_s, 2),
        "generate_s": round(gen_s, 2),
        "tokens_per_s": round(tokens / gen_s, 1),
        "completions/mean_length": tokens / len(samples),
        "machine": platform.machine(),
        "device": str(policy.device),
    }
    folder.write_summary(summary)
    log(f"\nwrote {folder.path}/ (config.yaml, metrics.jsonl, samples.jsonl, summary.json)")
    return summary
