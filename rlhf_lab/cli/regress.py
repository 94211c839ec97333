"""`rlhf-lab regress` and `rlhf-lab demo`: the notebooks run headless, over `rlhf_lab.regress.runner`."""

from __future__ import annotations

import argparse

from rlhf_lab.regress.runner import demo, regress


def add_regress_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `regress` to the CLI's sub-parsers; its handler returns the exit code."""
    parser = sub.add_parser("regress", help="run the notebooks with papermill and compare their records with baselines")
    parser.add_argument(
        "--notebooks",
        action="append",
        default=None,
        metavar="GLOB",
        help="notebook name or glob, e.g. 01_sft or '0[12]_*' (repeatable; default: all)",
    )
    parser.add_argument(
        "--profile",
        default="ci",
        help="parameters from notebooks/profiles.yaml: ci (tiny models) or full (the notebooks' defaults); default ci",
    )
    parser.add_argument(
        "--update-baselines",
        action="store_true",
        help="write this run's values into the baselines (tolerances kept) and print the diff",
    )
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="notebooks run in parallel (default 1)")
    parser.add_argument("--notebooks-dir", default="notebooks", metavar="DIR", help="default: notebooks")
    parser.add_argument("--baselines", default=None, metavar="FILE", help="default: NOTEBOOKS_DIR/baselines.json")
    parser.add_argument("--profiles", default=None, metavar="FILE", help="default: NOTEBOOKS_DIR/profiles.yaml")
    parser.add_argument("--out", default="runs/regress", metavar="DIR", help="default: runs/regress")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    parser.add_argument(
        "--cell-timeout", type=float, default=None, metavar="S", help="seconds per cell (default: none)"
    )
    parser.set_defaults(
        handler=lambda a: regress(
            a.notebooks,
            a.profile,
            update_baselines=a.update_baselines,
            jobs=a.jobs,
            notebooks_dir=a.notebooks_dir,
            baselines=a.baselines,
            profiles=a.profiles,
            out=a.out,
            kernel=a.kernel,
            cell_timeout=a.cell_timeout,
        )
    )
    return parser


def add_demo_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `demo`: 00_quickstart with its own defaults (the embedded model), as `make demo` runs it."""
    parser = sub.add_parser("demo", help="run notebooks/00_quickstart headless with the embedded model")
    parser.add_argument("--out", default="runs/demo", metavar="DIR", help="default: runs/demo")
    parser.add_argument("--notebooks-dir", default="notebooks", metavar="DIR", help="default: notebooks")
    parser.set_defaults(handler=lambda a: demo(out=a.out, notebooks_dir=a.notebooks_dir))
    return parser
