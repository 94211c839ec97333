"""torch's thread count (issue 17, "no collapse under contention"): the rule on given numbers, the overrides
(lab.set_threads, RLHF_LAB_THREADS, OMP_NUM_THREADS, the user's own torch.set_num_threads), the error for a
bad value, every stage start applying it, the pair prefetch thread computing on one thread without touching
the stage's count, and results that do not depend on the count."""

import subprocess
import sys
import threading
import time

import pytest
import torch
from run_helpers import assert_same_run

import rlhf_lab as lab
from rlhf_lab import threads

PROMPTS = ["Say hi.", "Name a colour.", "Count to three.", "Pick a fruit.", "Tell a joke.", "Greet me."]


def vowels(prompts, completions):
    return [sum(ch in "aeiou" for ch in c) / max(1, len(c)) for c in completions]


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """Every test starts as a fresh process would (no override, nothing applied, nothing measured, torch at
    its default count) and leaves torch's count as it found it."""
    found = torch.get_num_threads()
    for name in ("RLHF_LAB_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "_override", None)
    monkeypatch.setattr(threads, "_applied", None)
    monkeypatch.setattr(threads, "_measured", None)
    torch.set_num_threads(threads.torch_default())
    yield
    torch.set_num_threads(found)


def machine(monkeypatch, cpus: int, busy: float) -> None:
    """Pretend this process may use `cpus` CPUs of which other processes keep `busy` busy."""
    monkeypatch.setattr(threads, "usable_cpus", lambda: cpus)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda reuse=True: busy)
    monkeypatch.setattr(threads, "torch_default", lambda: torch.get_num_threads())


class TestRule:
    @pytest.mark.parametrize(
        ("cpus", "busy", "background", "expected"),
        [
            (2, 0.0, 0, 2),  # alone: every CPU
            (2, 0.4, 0, 2),  # a little noise is not a competitor
            (2, 0.5, 0, 1),  # half a core busy already stalls a team: rounded half up
            (2, 1.0, 0, 1),  # the case: one busy process beside us
            (2, 5.0, 0, 1),  # never below one
            (8, 2.6, 1, 4),  # 8 - 3 - one background worker
            (4, -0.2, 0, 4),  # a negative reading (clock skew) counts as idle
            (1, 0.0, 3, 1),
        ],
    )
    def test_threads_are_the_free_cpus(self, cpus, busy, background, expected):
        assert threads.choose_threads(cpus, busy, background) == expected

    def test_our_own_cpu_time_is_not_a_competitor(self):
        before, after = [(0, 0), (0, 0)], [(20, 20), (10, 20)]  # CPU 0 fully busy, CPU 1 half
        assert threads.busy_from_ticks(before, after, own_s=0.0, elapsed_s=0.2) == pytest.approx(1.5)
        # our own previous run, still spinning down, used 0.2 s of CPU in the 0.2 s window: one CPU is ours
        assert threads.busy_from_ticks(before, after, own_s=0.2, elapsed_s=0.2) == pytest.approx(0.5)
        assert threads.busy_from_ticks(before, after, own_s=0.4, elapsed_s=0.2) == 0.0

    def test_a_process_busy_on_one_of_our_cpus_is_seen(self):
        cpus = sorted(threads.allowed_cpus())
        pinned = f"import os, time\nos.sched_setaffinity(0, {{{cpus[-1]}}})\nend = time.time() + 20\n"
        busy = subprocess.Popen([sys.executable, "-c", pinned + "while time.time() < end: pass"])
        try:
            time.sleep(0.5)
            assert threads.busy_elsewhere(reuse=False) >= 0.7
        finally:
            busy.kill()
            busy.wait()


class TestOverrides:
    def test_the_environment_variable_sets_the_count(self, monkeypatch):
        machine(monkeypatch, cpus=2, busy=0.0)
        monkeypatch.setenv("RLHF_LAB_THREADS", "1")
        choice = threads.apply_threads()
        assert (choice.threads, choice.source, torch.get_num_threads()) == (1, "RLHF_LAB_THREADS", 1)
        monkeypatch.setenv("RLHF_LAB_THREADS", "auto")
        assert threads.apply_threads().threads == torch.get_num_threads() == 2

    def test_lab_set_threads_wins_and_none_goes_back(self, monkeypatch):
        machine(monkeypatch, cpus=2, busy=1.0)
        monkeypatch.setenv("RLHF_LAB_THREADS", "2")
        assert lab.set_threads(1).source == "lab.set_threads" and torch.get_num_threads() == 1
        assert threads.apply_threads().threads == 1  # a stage start keeps it
        assert lab.set_threads(None).threads == torch.get_num_threads() == 2  # back to RLHF_LAB_THREADS
        monkeypatch.delenv("RLHF_LAB_THREADS")
        assert threads.apply_threads().threads == 1  # the rule: one CPU of two is busy

    def test_off_and_what_the_user_fixed_elsewhere_are_kept(self, monkeypatch):
        machine(monkeypatch, cpus=2, busy=1.0)
        monkeypatch.setattr(threads, "torch_default", lambda: 2)
        torch.set_num_threads(2)
        monkeypatch.setenv("RLHF_LAB_THREADS", "off")
        assert threads.apply_threads().source == "off" and torch.get_num_threads() == 2
        monkeypatch.delenv("RLHF_LAB_THREADS")
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert threads.apply_threads().source == "OMP_NUM_THREADS" and torch.get_num_threads() == 2
        monkeypatch.setenv("RLHF_LAB_THREADS", "auto")  # asked for explicitly: the rule, despite OMP_NUM_THREADS
        assert threads.apply_threads().threads == torch.get_num_threads() == 1
        monkeypatch.delenv("RLHF_LAB_THREADS")
        monkeypatch.delenv("OMP_NUM_THREADS")
        torch.set_num_threads(3)  # the user's own call, neither torch's default nor the lab's last
        assert threads.apply_threads().source == "torch.set_num_threads" and torch.get_num_threads() == 3
        torch.set_num_threads(2)  # torch's default again: the lab chooses
        assert threads.apply_threads().threads == torch.get_num_threads() == 1

    @pytest.mark.parametrize("value", ["two", "0", "-1", "1.5"])
    def test_a_bad_value_names_the_variable_the_value_and_the_fix(self, monkeypatch, value):
        monkeypatch.setenv("RLHF_LAB_THREADS", value)
        with pytest.raises(ValueError, match=rf"RLHF_LAB_THREADS={value} is not a thread count\. Fix: .*'auto'.*'off'"):
            threads.apply_threads()
        for bad in (value, 0, True, 2.0):
            with pytest.raises(ValueError, match=r"lab\.set_threads\(.*\) is not a thread count\. Fix: .*None"):
                lab.set_threads(bad)


class TestStages:
    def test_a_stage_start_applies_the_count_and_records_it(self, monkeypatch, tmp_path):
        torch.set_num_threads(2)
        monkeypatch.setenv("RLHF_LAB_THREADS", "1")
        session = lab.PPOSession(lab.tiny_model("causal"), vowels, PROMPTS, ppo_config(tmp_path, "env"))
        assert torch.get_num_threads() == 1
        session.finish()

        monkeypatch.delenv("RLHF_LAB_THREADS")
        machine(monkeypatch, cpus=2, busy=1.0)  # the rule, at the start of lab.ppo
        torch.set_num_threads(2)
        threads._applied = 2
        run = lab.ppo(lab.tiny_model("causal"), vowels, PROMPTS, ppo_config(tmp_path, "auto", total_updates=1))
        assert torch.get_num_threads() == 1
        assert run.summary["threads"] == {
            "threads": 1, "source": "auto", "cpus": 2, "busy_elsewhere": 1.0, "background": 0
        }  # fmt: skip

    def test_evaluation_sampling_applies_the_count(self, monkeypatch, tiny_policy):
        from rlhf_lab.evaluation.sampling import sample

        torch.set_num_threads(2)
        monkeypatch.setenv("RLHF_LAB_THREADS", "1")
        sample(tiny_policy, PROMPTS[:2], max_new_tokens=2)
        assert torch.get_num_threads() == 1

    def test_the_thread_count_does_not_change_the_results(self, tmp_path):
        runs = []
        for n in (1, 2):
            lab.set_threads(n)
            runs.append(lab.ppo(lab.tiny_model("causal"), vowels, PROMPTS, ppo_config(tmp_path, f"n{n}")))
            assert runs[-1].summary["threads"]["threads"] == n
        assert_same_run(runs[0], runs[1], steps=3)


def ppo_config(tmp_path, name, **overrides):
    values = dict(output_dir=str(tmp_path / name), total_updates=3, batch_size=4, mini_batch_size=2, ppo_epochs=2,
                  max_new_tokens=8, learning_rate=1e-3, num_samples=0, seed=0, monitor=False)  # fmt: skip
    return lab.PPOConfig(**{**values, **overrides})


class ThreadCountPolicy:
    """Records torch's thread count where it generates (the prefetch thread)."""

    name = "counting"

    def __init__(self):
        self.seen: list[int] = []

    def generate(self, prompts, *, seed=None, **sampling):
        self.seen.append(torch.get_num_threads())
        return [f"reply {seed}"]


class TestBackgroundWorkers:
    def test_the_prefetch_thread_computes_on_one_thread_and_leaves_the_others_alone(self):
        torch.set_num_threads(2)
        policy = ThreadCountPolicy()
        with lab.PairGenerator(policy, PROMPTS, prefetch=1) as pairs:
            next(pairs)
            assert policy.seen and set(policy.seen) == {1}  # inside the worker
            assert torch.get_num_threads() == 2  # the worker's set_num_threads did not reach this thread
        assert threads._workers["alive"] == 0
        assert count_in_a_new_thread() == 2  # torch's global count, which new threads copy, is as it was

    def test_a_stage_leaves_a_live_worker_a_core(self, monkeypatch):
        machine(monkeypatch, cpus=2, busy=0.0)
        with lab.PairGenerator(ThreadCountPolicy(), PROMPTS, prefetch=1) as pairs:
            next(pairs)
            choice = threads.apply_threads()  # a stage starting while the worker lives
            assert (choice.threads, choice.background, torch.get_num_threads()) == (1, 1, 1)
        assert count_in_a_new_thread() == 1  # the stage's count, not the worker's saved one
        assert threads.apply_threads().threads == torch.get_num_threads() == 2  # closed: the core is back


def count_in_a_new_thread() -> int:
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]
