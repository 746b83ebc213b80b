"""`mentalarena eval`: placeholder until the evaluation suite lands (issue 4)."""

from __future__ import annotations

import argparse


def add_eval_command(commands) -> None:
    """Register the `eval` subcommand on the top-level parser's subcommands."""
