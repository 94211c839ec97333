"""Every CLI stage runs under `accelerate launch`: two data-parallel CPU processes (gloo) finish
with the same final metrics and the same weights on both ranks, and one run folder is written.

accelerate's own `--cpu --num_processes 2` path needs MPI (mpirun) to start several processes;
without it, it starts one. configs/accelerate/cpu_ddp_2proc.yaml uses the torchrun launcher
instead, and the stage configs switch to use_cpu (gloo) on a machine with no CUDA device.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).parent / "accelerate"
TIMING_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second"}


def write_data(path: Path, stage: str) -> Path:
    rows = []
    for i in range(16):
        if stage == "sft":
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": f"Say {i}."},
                        {"role": "assistant", "content": f"{i}"},
                    ]
                }
            )
        else:
            rows.append(
                {
                    "prompt": f"Is {i} even?",
                    "chosen": "yes" if i % 2 == 0 else "no",
                    "rejected": "no" if i % 2 == 0 else "yes",
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("stage", ["dpo", "reward", "sft"])
def test_stage_runs_on_two_processes_and_ranks_agree(stage, tmp_path):
    config = {
        "model": "tiny",
        "data": str(write_data(tmp_path / "data.jsonl", stage)),
        "output_dir": str(tmp_path / "run"),
        "max_steps": 4,
        "per_device_train_batch_size": 2,
        "logging_steps": 2,
        "num_samples": 0,
        "seed": 0,
        "learning_rate": 1e-3,
        "max_length": 64,
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [
        str(ACCELERATE),
        "launch",
        "--config_file",
        str(ROOT / "configs/accelerate/cpu_ddp_2proc.yaml"),
        "-m",
        "rlhf_lab",
        stage,
        "--config",
        str(tmp_path / "config.yaml"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    found = re.findall(r"^rank (\d)/2 final: (.*) weights: (\S+)$", out.stdout, re.M)
    ranks = {rank: (json.loads(metrics), weights) for rank, metrics, weights in found}
    assert set(ranks) == {"0", "1"}, out.stdout[-3000:]
    (metrics0, weights0), (metrics1, weights1) = ranks["0"], ranks["1"]
    assert weights0 == weights1, "the ranks' weights drifted apart: gradients were not synchronised"
    assert {k: v for k, v in metrics0.items() if k not in TIMING_KEYS} == {
        k: v for k, v in metrics1.items() if k not in TIMING_KEYS
    }
    assert metrics0["epoch"] == 1.0  # 16 rows split over 2 ranks x batch 2: 4 steps are one epoch
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 4 and out.stdout.count(f"{stage} run finished") == 1


def test_ppo_runs_on_two_processes_and_logs_identical_metrics(tmp_path):
    """The PPO engine under accelerate launch: each process rolls out its own prompts, statistics are
    all-reduced, so every logged metric (timings too: they are averaged) matches on both ranks."""
    config = {
        "model": "tiny",
        "reward": "task:concise",
        "data": "task:concise",
        "output_dir": str(tmp_path / "run"),
        "total_updates": 2,
        "batch_size": 2,
        "mini_batch_size": 2,
        "ppo_epochs": 2,
        "max_new_tokens": 8,
        "learning_rate": 1e-3,
        "num_samples": 1,
        "seed": 0,
        "monitor": False,
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [
        str(ACCELERATE),
        "launch",
        "--config_file",
        str(ROOT / "configs/accelerate/cpu_ddp_2proc.yaml"),
        "-m",
        "rlhf_lab",
        "ppo",
        "--config",
        str(tmp_path / "config.yaml"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    found = re.findall(r"^rank (\d)/2 final: (.*) weights: (\S+)$", out.stdout, re.M)
    ranks = {rank: (metrics, weights) for rank, metrics, weights in found}
    assert set(ranks) == {"0", "1"}, out.stdout[-3000:]
    (metrics0, weights0), (metrics1, weights1) = ranks["0"], ranks["1"]
    assert metrics0 == metrics1 and "objective/kl" in metrics0  # as printed: NaN == NaN here
    metrics0 = json.loads(metrics0)
    assert weights0 == weights1, "the ranks' weights drifted apart: gradients were not synchronised"
    assert metrics0["episode"] == 2 * 2 * 2  # updates x prompts per process x processes
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2  # one writer


TOY_REWARD = """def vowels(prompts, completions):
    return [sum(ch in "aeiou" for ch in c) / max(1, len(c)) for c in completions]
"""


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_critic_free_stages_run_on_two_processes_and_ranks_agree(stage, tmp_path):
    """GRPO/RLOO under accelerate launch: each process samples its own groups; gradients are synchronised,
    so both ranks end with the same weights, and the weights moved (the toy reward varies within groups)."""
    (tmp_path / "toy_reward.py").write_text(TOY_REWARD)  # the launched processes import it from their cwd
    config = {
        "model": "tiny",
        "reward": "toy_reward:vowels",
        "data": "starter",
        "output_dir": str(tmp_path / "run"),
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "num_generations": 2,
        "max_completion_length": 8,
        "learning_rate": 1e-3,
        "num_samples": 1,
        "seed": 0,
        "monitor": False,
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [str(ACCELERATE), "launch", "--config_file", str(ROOT / "configs/accelerate/cpu_ddp_2proc.yaml")]
    cmd += ["-m", "rlhf_lab", stage, "--config", str(tmp_path / "config.yaml")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    found = re.findall(r"^rank (\d)/2 final: (.*) weights: (\S+)$", out.stdout, re.M)
    ranks = {rank: (json.loads(metrics), weights) for rank, metrics, weights in found}
    assert set(ranks) == {"0", "1"}, out.stdout[-3000:]
    (metrics0, weights0), (metrics1, weights1) = ranks["0"], ranks["1"]
    assert weights0 == weights1, "the ranks' weights drifted apart: gradients were not synchronised"
    assert metrics0["reward"] == metrics1["reward"]  # TRL gathers rewards across processes
    import rlhf_lab as lab
    from rlhf_lab.cli.main import _checksum

    assert weights0 != _checksum(lab.tiny_model("causal", seed=0).model), "the weights did not move"
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3  # 2 steps + the summary; one writer
