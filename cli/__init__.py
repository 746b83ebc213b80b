"""`mentalarena`: the command line, composed from each layer's commands.

The layers only point down (agents -> graphs -> training -> benchmarks; `.importlinter`), so the
one place that sees them all is here: each adds its commands with ``make_parser(subparsers)``, and
the evaluation layer's MCQ scorer is handed to the training loop's `iterate --eval-tasks`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from mentalarena.agents.models import ModelSpecError
from mentalarena.agents.profiles import ProfileError
from mentalarena.benchmarks import cli as benchmarks_cli
from mentalarena.benchmarks.qa import mcq_evaluator
from mentalarena.graphs import cli as graphs_cli
from mentalarena.training import cli as training_cli

__all__ = ["main", "make_parser"]


def make_parser() -> argparse.ArgumentParser:
    """The whole command line: run and graph, export, train and iterate, eval."""
    parser = argparse.ArgumentParser(
        prog="mentalarena",
        description="MentalArena: self-play of patient and therapist models (a research tool, not a medical device).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    graphs_cli.make_parser(commands)
    training_cli.make_parser(commands, mcq_evaluator=mcq_evaluator)
    benchmarks_cli.make_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (2 for a usage error or bad input, printed to stderr)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's usage errors (2, already printed) and --help (0): returned like any outcome
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except (ProfileError, ModelSpecError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
