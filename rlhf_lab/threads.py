"""How many threads torch computes with: the CPUs this process may use, less those other processes keep busy.

torch's default is one thread per core, as if the machine were ours alone. Beside other busy processes its
OpenMP teams then wait at every barrier for a member the scheduler has parked: a notebook's PPO rollout fell
from 35 to 0.65 tokens/s beside two other torch processes (issue 17). So every stage start (`start_run`: the
TRL stages and PPO, `PPOSession` included) and evaluation sampling call `apply_threads()`, which sets
`torch.set_num_threads` from the rule below, logs the choice (logger `rlhf_lab.threads`) and returns it; a
run's summary.json keeps it under "threads".

The rule (`choose_threads`, a pure function): threads = cpus - round(busy) - background, at least 1.
- cpus: the CPUs this process may run on (`os.sched_getaffinity`, else `os.cpu_count()`), capped by a
  cgroup v2 CPU quota (a container given 2 CPUs of a 64-core host gets 2).
- busy: how many of those CPUs other processes keep busy *now*: the per-CPU counters of /proc/stat over
  WINDOW_S seconds, less this process's own CPU time in the same window. The 1-minute load average is only
  the fallback (no /proc/stat, e.g. macOS; there less this process's own CPU rate since the last call):
  it lags a minute and counts our own previous run as a competitor, so a second stage started right after
  the first would shrink for no one. Rounded half up: a core busy half the time already stalls a team.
- background: the lab's own background workers alive (`background`, e.g. the pair prefetch thread), one
  thread each: they compute beside the stage, so the stage leaves them a core. Close them to give it back.

Overrides, strongest first: `lab.set_threads(n)` (an int; "auto"; "off": leave torch alone; None: back to
what follows), the environment variable RLHF_LAB_THREADS (the same values), then anything the user fixed
outside the lab: OMP_NUM_THREADS in the environment, or a `torch.set_num_threads(n)` call (the lab only
changes a count that is torch's default or the one it set last). Those are kept, and the report says so.

Threads of one process: `torch.set_num_threads` sets the calling thread's own OpenMP team size and a global
value that each *new* thread copies on its first parallel op (torch 2.13, CPU build: GNU OpenMP, MKL); the
other threads' teams do not change. So a background worker sets its count inside itself, after the thread
that creates it has fixed its own, and puts the global value back when the last worker ends.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV_VAR = "RLHF_LAB_THREADS"
WINDOW_S = 0.2  # how long other processes' CPU use is watched at a stage start
REUSE_S = 5.0  # a measurement this recent is reused (several stage starts and samplings in a row)
BACKGROUND_THREADS = 1  # torch threads of one background worker

_override: int | str | None = None  # lab.set_threads
_applied: int | None = None  # the count the lab set last
_measured: tuple[float, float] | None = None  # (when, busy) of the last measurement
_own_mark = (time.monotonic(), time.process_time())  # the fallback's "own CPU rate since the last call"
_workers = {"alive": 0, "saved": None}
_workers_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class ThreadChoice:
    """What `apply_threads` did: torch's thread count now, and why."""

    threads: int
    source: str  # auto, lab.set_threads, RLHF_LAB_THREADS, OMP_NUM_THREADS, torch.set_num_threads, off
    cpus: int | None = None
    busy_elsewhere: float | None = None  # CPUs kept busy by other processes (auto only)
    background: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        if self.source != "auto":
            return f"torch uses {self.threads} thread(s), as {self.source} says"
        return (
            f"torch uses {self.threads} thread(s): {self.cpus} CPU(s), {self.busy_elsewhere:.1f} busy with other "
            f"processes, {self.background} background worker(s) ({ENV_VAR}=N or lab.set_threads(N) overrides)"
        )


def choose_threads(cpus: int, busy: float, background: int = 0) -> int:
    """The rule: `cpus` usable, less `busy` (CPUs other processes keep busy, rounded half up), less
    `background` (our own background workers); at least 1, at most `cpus`."""
    taken = int(max(0.0, busy) + 0.5)
    return max(1, min(cpus, cpus - taken - max(0, background)))


def parse_setting(value: Any, where: str) -> int | str | None:
    """An int >= 1, "auto" or "off" (None or "" for unset) from `where` (the variable or the call), else a
    ValueError naming `where`, the value and the fix."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = value.strip().lower() if isinstance(value, str) else value
    if text in ("auto", "off"):
        return text
    try:
        number = int(text) if not isinstance(text, (bool, float)) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < 1:
        if where == ENV_VAR:
            given, example, unset = f"{where}={value}", f"{where}=2", "unset it"
        else:
            given, example, unset = f"{where}({value!r})", f"{where}(2)", "None"
        raise ValueError(
            f"{given} is not a thread count. Fix: a whole number >= 1 (e.g. {example}), 'auto' (the lab chooses "
            f"from the free CPUs), 'off' (the lab leaves torch's thread count alone), or {unset}."
        )
    return number


def set_threads(n: int | str | None) -> ThreadChoice:
    """Fix torch's thread count for the lab's stages from now on: `n` threads, "auto" (the rule, also where
    OMP_NUM_THREADS is set), "off" (the lab never changes it), or None (back to RLHF_LAB_THREADS, else the
    rule). Applied at once; returns what was applied."""
    global _override
    _override = parse_setting(n, "lab.set_threads")
    return apply_threads(reuse=False)


def apply_threads(*, reuse: bool = True) -> ThreadChoice:
    """Set torch's intra-op thread count as the overrides or the rule say (module docstring); cheap enough
    for every stage start (WINDOW_S seconds at most, nothing within REUSE_S of the last measurement)."""
    global _applied
    import torch

    current = torch.get_num_threads()
    setting, source = _override, "lab.set_threads"
    if setting is None:
        setting, source = parse_setting(os.environ.get(ENV_VAR), ENV_VAR), ENV_VAR
    if setting is None:  # nothing asked of the lab: keep what the user fixed elsewhere
        if os.environ.get("OMP_NUM_THREADS", "").strip():
            return _report(ThreadChoice(current, "OMP_NUM_THREADS"))
        if current not in (_applied, torch_default()):
            return _report(ThreadChoice(current, "torch.set_num_threads"))
        setting, source = "auto", "auto"
    if setting == "off":
        return _report(ThreadChoice(current, "off"))
    if setting == "auto":
        cpus, background = usable_cpus(), _workers["alive"]
        busy = busy_elsewhere(reuse=reuse)
        choice = ThreadChoice(choose_threads(cpus, busy, background), "auto", cpus, round(busy, 2), background)
    else:
        choice = ThreadChoice(int(setting), source)
    if choice.threads != current:
        torch.set_num_threads(choice.threads)
    _applied = choice.threads
    with _workers_lock:
        if _workers["alive"]:
            _workers["saved"] = choice.threads  # torch's global count once the last worker ends
    return _report(choice)


def _report(choice: ThreadChoice) -> ThreadChoice:
    log.info("rlhf-lab: %s", choice)
    return choice


# ---- what the machine offers ---------------------------------------------------------------------------


def allowed_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return set(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """The CPUs this process may run on, capped by a cgroup v2 CPU quota."""
    cpus = len(allowed_cpus())
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, round(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def torch_default() -> int:
    """torch's own default count: its physical cores among the CPUs this process may use."""
    cpus = allowed_cpus()
    cores = set()
    for cpu in cpus:
        try:
            siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add(siblings)
    return max(1, len(cores))


def busy_elsewhere(window_s: float = WINDOW_S, *, reuse: bool = True) -> float:
    """CPUs (of those this process may use) that other processes keep busy now; see the module docstring."""
    global _measured
    if reuse and _measured is not None and time.monotonic() - _measured[0] < REUSE_S:
        return _measured[1]
    cpus = allowed_cpus()
    before, own_before, start = _cpu_ticks(cpus), time.process_time(), time.monotonic()
    if before:
        time.sleep(window_s)
        after, own = _cpu_ticks(cpus), time.process_time() - own_before
        busy = busy_from_ticks(before, after, own, time.monotonic() - start)
    else:
        busy = _busy_from_load()
    _measured = (time.monotonic(), busy)
    return busy


def busy_from_ticks(
    before: list[tuple[int, int]], after: list[tuple[int, int]], own_s: float, elapsed_s: float
) -> float:
    """CPUs kept busy by others: each CPU's busy fraction between two (busy, total) readings, summed, less
    this process's own CPU seconds over the same `elapsed_s` (its threads run on those CPUs too)."""
    fractions = [(a[0] - b[0]) / max(a[1] - b[1], 1) for b, a in zip(before, after)]
    return max(0.0, sum(fractions) - own_s / max(elapsed_s, 1e-9))


def _cpu_ticks(cpus: set[int]) -> list[tuple[int, int]]:
    """(busy, total) ticks of each CPU in `cpus` from /proc/stat; [] where it cannot be read."""
    rows = []
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[:8])
            busy = user + nice + system + irq + softirq + steal
            rows.append((busy, busy + idle + iowait))
    return rows


def _busy_from_load() -> float:
    global _own_mark
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return 0.0
    now, cpu = time.monotonic(), time.process_time()
    own = (cpu - _own_mark[1]) / max(now - _own_mark[0], 1e-9)
    _own_mark = (now, cpu)
    return max(0.0, load - own)


# ---- background workers ---------------------------------------------------------------------------------


def background(target: Callable[..., Any], threads: int = BACKGROUND_THREADS) -> Callable[..., Any]:
    """`target` for a background `threading.Thread` that runs torch: inside it torch uses `threads` threads,
    and while it lives each stage start leaves it a core. Call this in the thread that starts the worker."""
    import torch

    torch.get_num_threads()  # the caller's team size is fixed now: the worker's set_num_threads cannot reach it

    def run(*args: Any, **kwargs: Any) -> Any:
        with _workers_lock:
            if _workers["alive"] == 0:
                _workers["saved"] = torch.get_num_threads()  # a new thread reads torch's global count
            _workers["alive"] += 1
        torch.set_num_threads(threads)  # this thread's team (and, for now, torch's global count)
        try:
            return target(*args, **kwargs)
        finally:
            with _workers_lock:
                _workers["alive"] -= 1
                if _workers["alive"] == 0:
                    torch.set_num_threads(_workers["saved"])  # the global count, as found

    return run
