"""Our PPO engine (`lab.ppo`) against trl 1.10's PPOTrainer: time per update and peak RSS, as ratios.

    .venv/bin/pip install --no-deps --target /tmp/trl110 trl==1.10.0      # never a project dependency
    .venv/bin/python benchmarks/ppo_vs_trl.py --trl-dir /tmp/trl110 [--configs tiny smol smol-lora smol-lora-ckpt]
        [--rounds-tiny 2] [--rounds-smol 2] [--updates-tiny 8] [--updates-smol 3] [--json FILE]

Every measurement is a fresh child process (this script with `--child ours|trl`), so its peak RSS
(`getrusage(RUSAGE_SELF).ru_maxrss`, read in `on_train_end`, before either side saves anything)
belongs to that run alone. Only the trl child gets `--trl-dir` on PYTHONPATH; ours runs with the
project's environment (the trl child checks that it imported 1.10, ours that it did not). The order
of the sides rotates every round. Time per update is taken between `on_step_end` events, as in
/work/shared/tools/trl110_ppo_baseline.py, and summarized as the median over updates excluding the
first; a ratio is ours / trl within one round, and the headline is the median over rounds.

Both sides get the same models (built from the same seed, or loaded from the same checkpoint), the
same 64 prompts, batch, response length, 4 PPO epochs with one minibatch per update, fp32, lr 3e-6,
missing_eos_penalty 1.0, temperature 0.7 (trl 1.10's default), k1 KL with kl_coef 0.05, vf_coef 0.1,
cliprange(_value) 0.2, gamma 1, lam 0.95, no gradient checkpointing, no grad-norm clipping (trl 1.10's
PPO loop never clips), 2 torch threads. The reward model is a LlamaForSequenceClassification (tiny
random, or the SmolLM2 checkpoint with a fresh 1-output head). trl's critic is a second
LlamaForSequenceClassification; ours is the value head on the policy trunk (critic='shared').

Configs: `tiny` (the baseline's tiny Llama: hidden 64, 2 layers, batch 8, 24 new tokens), `smol` (the
embedded SmolLM2-135M, batch 4, 32 new tokens, full fine-tuning on both sides) and `smol-lora` (ours
with LoRA r=16: policy, critic head and reference share one base; against the same trl full runs);
`smol-lora-ckpt` is ours with LoRA and `gradient_checkpointing=True` (activations recomputed in the
backward pass: the one flag a user adds for less memory), against the same trl full runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

CONFIGS = {"tiny": {"batch": 8, "new_tokens": 24}, "smol": {"batch": 4, "new_tokens": 32}}
# Identical on both sides; the names are shared by trl 1.10's PPOConfig and ours.
COMMON = dict(
    learning_rate=3e-6,
    missing_eos_penalty=1.0,
    kl_coef=0.05,
    kl_estimator="k1",
    cliprange=0.2,
    cliprange_value=0.2,
    vf_coef=0.1,
    gamma=1.0,
    lam=0.95,
    whiten_rewards=False,
    seed=0,
)
PPO_EPOCHS = 4
TOPICS = [
    "cats",
    "the moon",
    "rain",
    "coffee",
    "trains",
    "python",
    "music",
    "the sea",
    "bread",
    "winter",
    "bicycles",
    "gardens",
    "stars",
    "books",
    "mountains",
    "tea",
]
TEMPLATES = [
    "Tell me a fact about {}.",
    "Write one sentence about {}.",
    "Why do people like {}?",
    "Describe {} briefly.",
]
PROMPTS = [t.format(x) for t in TEMPLATES for x in TOPICS]  # the baseline script's 64 prompts
PAD = "<|endoftext|>"  # trl 1.10 masks `ids != pad_token_id`: SmolLM2's pad (= <|im_end|>) would hide prompt tokens
GIB = 1024**3


# ---------------------------------------------------------------------------------------------
# Child processes: one measurement each


def _setup_torch():
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    return torch


def _tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    tok.pad_token = PAD
    return tok


def _tiny_models(tok):
    """The baseline script's tiny models, built in its order from seed 0: policy, ref, reward, value."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=128,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    policy = LlamaForCausalLM(cfg)
    ref = LlamaForCausalLM(cfg)
    ref.load_state_dict(policy.state_dict())
    cfg_rm = LlamaConfig(**{**cfg.to_dict(), "num_labels": 1})
    reward = LlamaForSequenceClassification(cfg_rm)
    value = LlamaForSequenceClassification(cfg_rm)
    policy.generation_config.pad_token_id = tok.pad_token_id
    return policy, ref, reward, value


def _smol_reward(model_dir: str, tok):
    import torch
    from transformers import LlamaForSequenceClassification

    model = LlamaForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    return model


def _rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / GIB
    return float("nan")


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # KiB on Linux


def _cpu_s() -> float:
    """CPU seconds (user + system) used by this process so far: less sensitive than wall time to other
    jobs on the machine, though not immune (waiting OpenMP threads spin)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timer():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        """Wall and CPU time between on_step_end events (one per PPO update); RSS at train begin and end;
        the machine's 1-minute load average at train begin and end."""

        def __init__(self):
            self.t: list[float] = []
            self.cpu: list[float] = []
            self.logs: list[dict] = []
            self.rss_begin = self.peak_end = float("nan")
            self.load: list[float] = []

        def on_train_begin(self, *_, **__):
            self.rss_begin = _rss_gib()
            self.load.append(os.getloadavg()[0])
            self.t.append(time.perf_counter())
            self.cpu.append(_cpu_s())

        def on_step_end(self, *_, **__):
            self.t.append(time.perf_counter())
            self.cpu.append(_cpu_s())

        def on_log(self, *_, logs=None, **__):
            if logs:
                self.logs.append({k: v for k, v in logs.items() if isinstance(v, (int, float))})

        def on_train_end(self, *_, **__):
            self.peak_end = _peak_gib()
            self.load.append(os.getloadavg()[0])

    return Timer()


def _result(side: str, a, timer, extra: dict) -> dict:
    per = [b - a_ for a_, b in zip(timer.t, timer.t[1:])]
    cpu = [b - a_ for a_, b in zip(timer.cpu, timer.cpu[1:])]
    steady = per[1:] if len(per) > 1 else per
    return {
        "side": side,
        "mode": a.mode,
        "lora": a.lora,
        "updates": len(per),
        "sec_per_update": [round(x, 3) for x in per],
        "median_s": statistics.median(steady),
        "min_s": min(steady),
        "cpu_s_per_update": [round(x, 3) for x in cpu],
        "median_cpu_s": statistics.median(cpu[1:] if len(cpu) > 1 else cpu),
        "loadavg": timer.load,
        "rss_begin_gib": timer.rss_begin,
        "peak_rss_gib": timer.peak_end,
        "peak_rss_exit_gib": _peak_gib(),
        **extra,
    }


def child_trl(a) -> dict:
    """trl 1.10's PPOTrainer, driven exactly as /work/shared/tools/trl110_ppo_baseline.py does."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    torch = _setup_torch()
    import transformers
    import trl
    from datasets import Dataset
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    if trl.__version__ != "1.10.0":
        raise SystemExit(f"the trl child imported trl {trl.__version__} from {trl.__file__}; want 1.10.0 (--trl-dir)")
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tok = _tokenizer(a.model_dir)
    bs, resp_len = CONFIGS[a.mode]["batch"], CONFIGS[a.mode]["new_tokens"]
    if a.mode == "tiny":
        policy, ref, reward, value = _tiny_models(tok)
    else:
        policy = LlamaForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
        ref = LlamaForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
        reward = _smol_reward(a.model_dir, tok)
        value = LlamaForSequenceClassification.from_pretrained(a.model_dir, num_labels=1, dtype=torch.float32)
        for m in (policy, ref, value):
            m.config.pad_token_id = tok.pad_token_id
        policy.generation_config.pad_token_id = tok.pad_token_id

    def tokenize(ex):
        ids = tok.apply_chat_template(
            [{"role": "user", "content": ex["prompt"]}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return {"input_ids": ids}

    ds = Dataset.from_dict({"prompt": PROMPTS}).map(tokenize, remove_columns=["prompt"])
    args = PPOConfig(
        output_dir=a.output_dir,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        per_device_train_batch_size=bs,
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        num_ppo_epochs=PPO_EPOCHS,
        total_episodes=bs * a.updates,
        response_length=resp_len,
        stop_token="eos",
        temperature=a.temperature,
        logging_steps=1,
        num_sample_generations=0,
        bf16=False,
        gradient_checkpointing=False,
        disable_tqdm=True,
        **COMMON,
    )
    timer = _timer()
    trainer = PPOTrainer(
        args=args,
        processing_class=tok,
        model=policy,
        ref_model=ref,
        reward_model=reward,
        value_model=value,
        train_dataset=ds,
        callbacks=[timer],
    )
    trainer.train()
    eos = [r["val/num_eos_tokens"] / bs for r in timer.logs if "val/num_eos_tokens" in r]
    return _result(
        "trl",
        a,
        timer,
        {
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
            "ended_frac": statistics.mean(eos) if eos else None,
            "trainable_params_m": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad) / 1e6,
        },
    )


def child_ours(a) -> dict:
    """`lab.ppo` with the shared value head, HF generation, no monitor, no samples, no checkpoints."""
    torch = _setup_torch()
    import rlhf_lab as lab
    from rlhf_lab.models import prepare_tokenizer

    if "trl" in sys.modules and sys.modules["trl"].__version__ == "1.10.0":
        raise SystemExit("our child imported trl 1.10: --trl-dir leaked onto its PYTHONPATH")
    tok = prepare_tokenizer(_tokenizer(a.model_dir))
    if a.mode == "tiny":
        policy_model, ref, reward, value = _tiny_models(tok)
        del ref, value  # ours: the caller's model is the frozen reference, the trained policy a private copy
        policy = lab.Policy(model=policy_model, tokenizer=tok, name="tiny")
    else:
        policy = a.model_dir  # loaded by lab.load_policy (fp32 on CPU); the reference is a copy, or the
        #                       base with adapters disabled under LoRA: no caller-held extra copy either way
        reward = _smol_reward(a.model_dir, tok)
    config = lab.PPOConfig(
        output_dir=a.output_dir,
        total_updates=a.updates,
        batch_size=CONFIGS[a.mode]["batch"],
        mini_batch_size=CONFIGS[a.mode]["batch"],
        gradient_accumulation_steps=1,
        ppo_epochs=PPO_EPOCHS,
        max_new_tokens=CONFIGS[a.mode]["new_tokens"],
        temperature=a.temperature,
        critic="shared",
        generation_backend="hf",
        max_grad_norm=None,
        bf16=False,
        gradient_checkpointing=bool(a.checkpointing),
        monitor=False,
        num_samples=0,
        save_every=0,
        **COMMON,
    )
    timer = _timer()
    lab.ppo(policy, (reward, tok), PROMPTS, config=config, lora=a.lora or False, callbacks=[timer])
    logs = timer.logs
    med = lambda key: statistics.median(r[key] for r in logs[1:] or logs) if logs else None  # noqa: E731
    return _result(
        ("ours-lora" + ("-ckpt" if a.checkpointing else "")) if a.lora else "ours",
        a,
        timer,
        {
            "versions": {"torch": torch.__version__, "rlhf_lab": getattr(lab, "__version__", "?")},
            "ended_frac": statistics.mean(r["completions/ended_frac"] for r in logs) if logs else None,
            "mean_length": statistics.mean(r["completions/mean_length"] for r in logs) if logs else None,
            "rollout_s": med("time/rollout_s"),
            "update_s": med("time/update_s"),
        },
    )


# ---------------------------------------------------------------------------------------------
# The parent: interleaved rounds, a table and the ratios


def run_child(side: str, mode: str, updates: int, opts, workdir: Path, tag: str) -> dict:
    out = workdir / f"{tag}.json"
    run_dir = workdir / f"{tag}-run"
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "trl" if side == "trl" else "ours",
        "--mode",
        mode,
        "--updates",
        str(updates),
        "--model-dir",
        opts.model_dir,
        "--temperature",
        str(opts.temperature),
        "--output-dir",
        str(run_dir),
        "--result",
        str(out),
    ]
    if side.startswith("ours-lora"):
        cmd += ["--lora", str(opts.lora_r)]
    if side.endswith("-ckpt"):
        cmd += ["--checkpointing", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p) != Path(opts.trl_dir)]
    if side == "trl":
        paths.insert(0, opts.trl_dir)  # trl 1.10 for this child only
    env["PYTHONPATH"] = os.pathsep.join(paths)
    started = time.perf_counter()
    with open(workdir / f"{tag}.log", "w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=opts.timeout)
    if proc.returncode != 0 or not out.exists():
        tail = (workdir / f"{tag}.log").read_text()[-3000:]
        raise RuntimeError(f"{tag} failed (exit {proc.returncode}):\n{tail}")
    res = json.loads(out.read_text())
    res["wall_s"] = time.perf_counter() - started
    shutil.rmtree(run_dir, ignore_errors=True)
    print(
        f"  {tag:<22} {res['median_s']:7.2f} s/update ({res['median_cpu_s']:.2f} CPU s)  peak "
        f"{res['peak_rss_gib']:.2f} GiB  (per update {res['sec_per_update']}, process {res['wall_s']:.0f} s, "
        f"load {res['loadavg']})",
        flush=True,
    )
    return res


def _pairs(results: list[dict], mode: str, ours: str) -> list[tuple[int, dict, dict]]:
    """(round, ours, trl) for every round that measured both."""
    rows = []
    for rnd in sorted({r["round"] for r in results if r["mode"] == mode}):
        pick = {r["side"]: r for r in results if r["mode"] == mode and r["round"] == rnd}
        if ours in pick and "trl" in pick:
            rows.append((rnd, pick[ours], pick["trl"]))
    return rows


RATIOS = (
    ("median_s", "time ours/trl (median s/update)"),
    ("min_s", "fastest update ours/trl"),
    ("median_cpu_s", "CPU s/update ours/trl"),
    ("peak_rss_gib", "peak RSS ours/trl"),
)


def report(results: list[dict], configs: list[str]) -> str:
    lines = [
        "| config | round | side | s/update (median, excl. first) | per update (s) | CPU s/update | "
        "peak RSS (GiB) | RSS at start (GiB) | load avg (start, end) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        load = ", ".join(f"{x:.1f}" for x in r.get("loadavg", []))
        lines.append(
            f"| {r['mode']} | {r['round'] + 1} | {r['side']} | {r['median_s']:.2f} | "
            f"{', '.join(f'{x:.2f}' for x in r['sec_per_update'])} | {r['median_cpu_s']:.2f} | "
            f"{r['peak_rss_gib']:.2f} | {r['rss_begin_gib']:.2f} | {load} |"
        )
    lines += [
        "",
        "Ratios ours / trl: median over rounds (each round's ratio in brackets).",
        "",
        "| comparison | " + " | ".join(title for _, title in RATIOS) + " |",
        "|---|" + "---|" * len(RATIOS),
    ]
    for name in configs:
        mode, ours = ("smol", "ours-" + name[len("smol-") :]) if name.startswith("smol-") else (name, "ours")
        rows = _pairs(results, mode, ours)
        if not rows:
            continue
        cells = []
        for key, _ in RATIOS:
            per = [a[key] / b[key] for _, a, b in rows]
            cells.append(f"**{statistics.median(per):.3f}** ({', '.join(f'{x:.3f}' for x in per)})")
        lines.append(f"| {mode}: {ours} vs trl | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parent(opts) -> None:
    if not opts.model_dir:
        from rlhf_lab.models import embedded

        opts.model_dir = str(embedded.embedded_path())
    if not (Path(opts.trl_dir) / "trl").is_dir():
        raise SystemExit(f"no trl in {opts.trl_dir}: pip install --no-deps --target {opts.trl_dir} trl==1.10.0")
    workdir = Path(tempfile.mkdtemp(prefix="ppo-vs-trl-"))
    print(f"model dir {opts.model_dir}; trl from {opts.trl_dir}; logs in {workdir}", flush=True)
    results: list[dict] = []
    plan = []
    if "tiny" in opts.configs:
        plan += [("tiny", opts.updates_tiny, rnd, ["ours", "trl"]) for rnd in range(opts.rounds_tiny)]
    smol_sides = [
        s
        for s, c in (("ours", "smol"), ("trl", None), ("ours-lora", "smol-lora"), ("ours-lora-ckpt", "smol-lora-ckpt"))
        if c is None or c in opts.configs
    ]
    if len(smol_sides) > 1:
        plan += [("smol", opts.updates_smol, rnd, smol_sides) for rnd in range(opts.rounds_smol)]
    started = time.perf_counter()
    for mode, updates, rnd, sides in plan:
        k = rnd % len(sides)
        order = sides[k:] + sides[:k]  # rotate the order every round
        print(f"{mode} round {rnd + 1}: {' -> '.join(order)}", flush=True)
        for side in order:
            res = run_child(side, mode, updates, opts, workdir, f"{mode}-r{rnd + 1}-{side}")
            res["round"] = rnd
            results.append(res)
    table = report(results, opts.configs)
    versions = {k: v for r in results for k, v in r.get("versions", {}).items()}
    print(f"\nversions: {versions}; total {time.perf_counter() - started:.0f} s\n")
    print(table)
    extras = [r for r in results if r["side"] != "trl"]
    for r in extras:
        print(
            f"{r['mode']} r{r['round'] + 1} {r['side']}: rollout {r['rollout_s']:.2f} s + update {r['update_s']:.2f} s"
            f" per update (median), completions ended with EOS {r['ended_frac']:.2f}, mean length "
            f"{r['mean_length']:.1f} tokens"
        )
    for r in results:
        if r["side"] == "trl" and r.get("ended_frac") is not None:
            print(f"{r['mode']} r{r['round'] + 1} trl: completions with EOS {r['ended_frac']:.2f}")
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=1))
    shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    choices = ["tiny", "smol", "smol-lora", "smol-lora-ckpt"]
    p.add_argument("--configs", nargs="+", choices=choices, default=choices[:3])
    p.add_argument("--rounds-tiny", type=int, default=2)
    p.add_argument("--rounds-smol", type=int, default=2)
    p.add_argument("--updates-tiny", type=int, default=8)
    p.add_argument("--updates-smol", type=int, default=3)
    p.add_argument("--trl-dir", default="/tmp/trl110", help="where trl 1.10 was pip-installed with --target")
    p.add_argument("--model-dir", default=None, help="plain HF SmolLM2-135M checkpoint (default: the embedded one)")
    p.add_argument("--temperature", type=float, default=0.7, help="both sides (trl 1.10's default)")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    p.add_argument("--json", default=None, help="also write every run's numbers here")
    # child-only options
    p.add_argument("--child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=list(CONFIGS), help=argparse.SUPPRESS)
    p.add_argument("--updates", type=int, help=argparse.SUPPRESS)
    p.add_argument("--lora", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--checkpointing", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--output-dir", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.child:
        warnings.filterwarnings("ignore")
        res = (child_trl if opts.child == "trl" else child_ours)(opts)
        Path(opts.result).write_text(json.dumps(res))
    else:
        parent(opts)


if __name__ == "__main__":
    main()
