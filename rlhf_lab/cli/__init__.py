"""The `rlhf-lab` command line: thin subcommands over the functions the notebooks call."""

from rlhf_lab.cli.main import main

__all__ = ["main"]
