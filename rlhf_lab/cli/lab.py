"""`rlhf-lab lab [DIR]`: the shipped notebooks copied into DIR/notebooks (never over the user's files), then
JupyterLab on 127.0.0.1 there, as `make lab` opens it in a checkout."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys

from rlhf_lab.regress.shipped import copy_notebooks


def add_lab_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("lab", help="copy the notebooks into DIR/notebooks and open JupyterLab there")
    parser.add_argument("dir", nargs="?", default=".", help="the lab's folder (default: here)")
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1: this machine only")
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--no-browser", action="store_true", help="start JupyterLab without opening a browser")
    parser.add_argument("--copy-only", action="store_true", help="copy the notebooks, do not start JupyterLab")
    parser.set_defaults(handler=_lab)
    return parser


def _lab(args) -> int:
    report = copy_notebooks(args.dir)
    print(report)
    print(f"run them headless: cd {args.dir} && rlhf-lab regress --profile ci")
    if args.copy_only:
        return 0
    if importlib.util.find_spec("jupyterlab") is None:
        raise ModuleNotFoundError("JupyterLab is not installed. Fix: pip install jupyterlab")
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.ip={args.host}", f"--ServerApp.port={args.port}",
               f"--ServerApp.root_dir={report.folder}"]  # fmt: skip
    if args.no_browser:
        command.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers run as root
    return subprocess.call(command)
