"""Browser-test fixtures: a JupyterLab server on 127.0.0.1 and headless Debian Chromium driven by
Playwright. Both are always torn down (their whole process trees), even when a test fails.

Set-up (once per machine; never `playwright install`, never a downloaded browser):
    apt-get update && apt-get install -y chromium       # /usr/bin/chromium
    .venv/bin/pip install playwright                    # the Python package only
Run: .venv/bin/python -m pytest tests/browser -m browser -o addopts=""
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("RLHF_LAB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
SETUP_HINT = (
    "Fix: apt-get update && apt-get install -y chromium (Debian Chromium at /usr/bin/chromium) and "
    ".venv/bin/pip install playwright (the Python package only; never `playwright install`)"
)
SERVER_START_S = 90


@pytest.fixture(scope="session")
def browser_artifacts() -> Path:
    """Where screenshots and logs go: $BROWSER_ARTIFACTS, else runs/browser-artifacts (git-ignored)."""
    folder = Path(os.environ.get("BROWSER_ARTIFACTS") or ROOT / "runs" / "browser-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_mentioning(marker: str) -> list:
    """Our own processes: those whose command line names a temporary path only we created."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid != os.getpid() and any(marker in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _kill_all(procs: list, grace_s: float = 5.0) -> None:
    """SIGTERM, wait, then SIGKILL whatever is left of ``procs`` (psutil.Process objects)."""
    import psutil

    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for proc in procs:
            try:
                proc.send_signal(sig)
                alive.append(proc)
            except psutil.NoSuchProcess:
                continue
        _, procs = psutil.wait_procs(alive, timeout=grace_s)
        if not procs:
            return


def _stop_process_tree(popen: subprocess.Popen, marker: str) -> None:
    """Stop a process started in its own session: its group first (SIGTERM lets the Jupyter server
    shut its kernels down), then anything still running that names ``marker`` (kernels start in
    sessions of their own, so the group alone would miss them)."""
    import psutil

    try:
        descendants = psutil.Process(popen.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    if popen.poll() is None:
        try:
            os.killpg(popen.pid, signal.SIGTERM)
            popen.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(timeout=10)
    _kill_all([p for p in descendants if p.is_running()] + _processes_mentioning(marker))


@dataclass
class LabServer:
    url: str
    token: str
    notebook_dir: Path
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as err:
            return f"(no Jupyter log: {err})"
        return f"--- last {min(chars, len(text))} characters of {self.log_path} ---\n{text[-chars:]}"

    def lab_url(self, notebook: Path) -> str:
        return f"{self.url}/lab/tree/{notebook.relative_to(self.notebook_dir).as_posix()}?token={self.token}"


def _wait_for_status(server: LabServer) -> None:
    request = urllib.request.Request(f"{server.url}/api/status", headers={"Authorization": f"token {server.token}"})
    deadline, last = time.monotonic() + SERVER_START_S, None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {server.process.returncode}\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    json.load(response)
                    return
        except (urllib.error.URLError, OSError, ValueError) as err:
            last = err
        time.sleep(0.25)
    pytest.fail(f"JupyterLab did not answer /api/status within {SERVER_START_S}s (last: {last})\n{server.log_tail()}")


@pytest.fixture
def lab_server(tmp_path_factory, browser_artifacts) -> LabServer:
    """JupyterLab from this venv on 127.0.0.1 with its own config/data/runtime dirs and a token;
    the notebook dir is empty (tests write notebooks into it). The venv's ``python3`` kernelspec
    (sys.prefix/share/jupyter) still resolves, so kernels run this interpreter."""
    base = tmp_path_factory.mktemp("jupyterlab")
    dirs = {name: base / name for name in ("config", "data", "runtime", "ipython", "notebooks")}
    for path in dirs.values():
        path.mkdir()
    # No news or update checks (they would try the network and pop toasts over the panel).
    settings = dirs["config"] / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "IPYTHONDIR": str(dirs["ipython"]),
        "RLHF_LAB_MONITOR": "html",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("JUPYTER_PATH", None)
    token, port = secrets.token_hex(24), _free_port()
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--notebook-dir={dirs['notebooks']}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log_path = base / "jupyter.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd,
            cwd=dirs["notebooks"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = LabServer(f"http://127.0.0.1:{port}", token, dirs["notebooks"], log_path, process)
    try:
        _wait_for_status(server)
        yield server
    finally:
        _stop_process_tree(process, str(base))
        shutil.copyfile(log_path, browser_artifacts / "jupyter.log")


@pytest.fixture
def page(tmp_path_factory, browser_artifacts):
    """A Playwright page in headless Debian Chromium with a fresh profile; console messages and
    page errors are kept in ``page.rlhf_console`` and written to the artifacts folder."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing. {SETUP_HINT}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        pytest.fail(f"the playwright package is missing ({err}). {SETUP_HINT}")
    profile = tmp_path_factory.mktemp("chromium-profile")
    console: list[str] = []
    pw = sync_playwright().start()
    context = None
    try:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
            timeout=60_000,
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(30_000)
        page.on("console", lambda m: console.append(f"console.{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.rlhf_console = console
        yield page
    finally:
        try:
            if context is not None:
                context.close()
        finally:
            try:
                pw.stop()
            finally:
                _kill_all(_processes_mentioning(str(profile)))
                (browser_artifacts / "browser-console.log").write_text("\n".join(console) + "\n")
