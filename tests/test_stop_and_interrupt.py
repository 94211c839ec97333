"""Stopping a run: `monitor.stop()` ends it after the current step with a complete run folder that PPO
resumes exactly; a kernel interrupt (SIGINT) leaves a complete folder marked interrupted, then re-raises.
And the one progress display: it speaks before a PPO update's first log, and TRL's printers give way."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from run_helpers import assert_same_run
from transformers import TrainerCallback

import rlhf_lab as lab
from rlhf_lab.stages.ppo.callbacks import InterruptGuard

PROMPTS = ["Say hi.", "Name a colour.", "Count to three.", "Pick a fruit."]


def vowels(prompts, completions):
    return [sum(ch in "aeiou" for ch in c) / max(1, len(c)) for c in completions]


def ppo_config(tmp_path, name, **overrides):
    values = dict(output_dir=str(tmp_path / name), total_updates=4, batch_size=4, mini_batch_size=2, ppo_epochs=2,
                  max_new_tokens=8, learning_rate=1e-3, num_samples=2, seed=0, normalize_rewards=True,
                  adaptive_kl=True, target_kl=0.5, kl_horizon=100)  # fmt: skip
    return lab.PPOConfig(**{**values, **overrides})


class StopAt(TrainerCallback):
    """Presses Stop when `step` ends (placed before the monitor, so the monitor sees it at once)."""

    def __init__(self, monitor, step):
        self.monitor, self.step = monitor, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.monitor.stop()


def test_stop_after_update_2_leaves_a_complete_run_that_resumes_exactly(tmp_path):
    policy = lab.tiny_model("causal", seed=0)
    whole = lab.ppo(policy, vowels, PROMPTS, ppo_config(tmp_path, "whole"))
    monitor = lab.LiveMonitor(live=False)
    stopped = lab.ppo(policy, vowels, PROMPTS, ppo_config(tmp_path, "stopped"), callbacks=[StopAt(monitor, 2), monitor])
    folder = tmp_path / "stopped"
    assert stopped.summary["stopped_at"] == 2 and stopped.summary["interrupted"] is False
    assert (folder / "checkpoints" / "update-000002" / "state.json").exists()
    assert (folder / "run.json").exists() and (folder / "model" / "model.safetensors").exists()
    reloaded = lab.load_run(folder)
    assert reloaded.summary["stopped_at"] == 2 and list(reloaded.metrics["step"]) == [1, 2]

    resumed = lab.ppo(policy, vowels, PROMPTS, ppo_config(tmp_path, "stopped"), resume_from=folder)
    assert_same_run(whole, resumed, 4)
    assert "stopped_at" not in resumed.summary


def test_stop_ends_a_trl_stage_after_the_current_step(tmp_path):
    monitor = lab.LiveMonitor(live=False)
    config = lab.SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=50, logging_steps=1, per_device_train_batch_size=2,
                           max_length=64, seed=0)  # fmt: skip
    run = lab.sft(lab.tiny_model("causal", seed=0), "starter", config, callbacks=[StopAt(monitor, 3), monitor])
    assert run.summary["steps"] == 3 and run.summary["stopped_at"] == 3 and not run.summary["interrupted"]
    assert lab.load_run(tmp_path / "sft").summary["stopped_at"] == 3


def test_the_interrupt_guard_holds_an_interrupt_until_the_update_ends():
    done = []
    with pytest.raises(KeyboardInterrupt, match="after the PPO update"), InterruptGuard() as guard:
        guard.hold()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        done.append("the rest of the update ran")
    assert done == ["the rest of the update ran"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the usual handler is back"
    with pytest.raises(KeyboardInterrupt), InterruptGuard():  # before hold(): at once
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)
        done.append("never")
    assert done == ["the rest of the update ran"]


SCRIPT = """
import sys
import rlhf_lab as lab
stage, out = sys.argv[1], sys.argv[2]
policy = lab.tiny_model("causal", seed=0)
if stage == "ppo":
    lab.ppo(policy, "task:variety", ["Say hi.", "Name a colour."], lab.PPOConfig(output_dir=out, total_updates=10000, batch_size=4,
            mini_batch_size=2, max_new_tokens=8, seed=0))
elif stage == "sft":
    lab.sft(policy, "starter", lab.SFTConfig(output_dir=out, max_steps=10000, logging_steps=1,
            per_device_train_batch_size=2, max_length=64))
else:
    lab.dpo(policy, "starter", lab.DPOConfig(output_dir=out, max_steps=10000, logging_steps=1,
            per_device_train_batch_size=2, max_length=64))
"""


@pytest.mark.parametrize("stage", ["ppo", "sft", "dpo"])
def test_sigint_mid_stage_leaves_a_loadable_run_marked_interrupted(stage, tmp_path):
    out = tmp_path / stage
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RLHF_LAB_MONITOR": "html"}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SCRIPT), stage, str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        metrics = out / "metrics.jsonl"
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "no metrics within 240 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, "the interrupt must still stop the process"
    assert "KeyboardInterrupt" in output and f"{stage} interrupted at step" in output, output[-3000:]
    run = lab.load_run(out)
    assert run.summary["interrupted"] is True and run.summary["stopped_at"] >= 2
    assert len(run.metrics) >= 2
    if stage == "ppo":  # the last finished update is checkpointed: resume_from continues from it
        step = run.summary["stopped_at"]
        assert (out / "checkpoints" / f"update-{step:06d}" / "state.json").exists()


class FirstLog(TrainerCallback):
    def __init__(self, monitor):
        self.monitor, self.seen = monitor, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.monitor.progress.every_s = 0  # every in-update line (they are throttled to 2 a second)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.seen is None:
            self.seen = list(self.monitor.progress.history)


def test_progress_shows_inside_the_first_ppo_update_before_its_first_log(tmp_path):
    monitor = lab.LiveMonitor(live=False)
    first = FirstLog(monitor)
    lab.ppo(lab.tiny_model("causal", seed=0), vowels, PROMPTS, ppo_config(tmp_path, "p", total_updates=1),
            callbacks=[monitor, first])  # fmt: skip
    lines = first.seen
    assert lines and lines[0].startswith("ppo: update 0/1")
    assert any("rollout 1/8 tokens" in line for line in lines), lines
    assert any("scoring" in line for line in lines) and any("epoch 2/2" in line for line in lines), lines
    assert monitor.progress.history[-1].startswith("ppo: update 1/1") and "done" in monitor.progress.history[-1]


def test_trl_printers_make_way_for_the_progress_line(tmp_path, capsys):
    def run(monitor):
        config = lab.SFTConfig(output_dir=str(tmp_path / f"sft-{monitor}"), max_steps=2, logging_steps=1,
                               per_device_train_batch_size=2, max_length=64, disable_tqdm=True, monitor=monitor)  # fmt: skip
        lab.sft(lab.tiny_model("causal", seed=0), "starter", config)
        return capsys.readouterr()

    without = run(False)
    assert "{'loss'" in without.out, "TRL prints raw log dicts when nothing replaces it"
    with_monitor = run(True)
    assert "{'loss'" not in with_monitor.out and "{'loss'" not in with_monitor.err
    assert "sft: step 2/2" in with_monitor.err


def test_long_calls_outside_training_say_where_they_are(capsys):
    from rlhf_lab.monitor.progress import track

    assert list(track(range(0, 12, 4), "sampling")) == [0, 4, 8]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("sampling: batch 0/3 | 0s elapsed") and lines[0].endswith("starting"), lines
    assert lines[-1].startswith("sampling: batch 3/3") and lines[-1].endswith("done"), lines
    assert len(lines) == 2, "a log file gets the start and the end, not every batch"


def test_hold_outside_an_update_block_leaves_the_interrupt_handler_alone():
    guard = InterruptGuard()
    guard.hold()  # a direct trainer.step() call, not inside train()'s `with guard:`
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
