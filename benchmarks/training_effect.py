"""The loop's training effect: `mentalarena iterate` with its held-out evaluation, as a benchmark.

Every argument after ``--`` goes to ``mentalarena iterate`` unchanged (``--out`` is required, so
an interrupted run resumes with the same command). When the loop has finished, a line goes to
``benchmarks/results.jsonl``: the command, the machine, each iteration's in-sample metrics, and
the held-out comparison of the base model with every iteration (intervals and paired differences).
The held-out table is printed in Markdown.

    python -m mentalarena.benchmarks.training_effect -- --iterations 2 --sessions 16 --concurrency 8 \\
        --heldout-sessions-per-patient 2 --max-steps 30 --out loops/effect
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from mentalarena.agents.models import describe_model
from mentalarena.agents.provenance import append_result
from mentalarena.benchmarks.qa import mcq_evaluator
from mentalarena.training import cli as training_cli
from mentalarena.training.heldout import markdown

RESULTS = Path(__file__).with_name("results.jsonl")


def iterate_command(command: list[str]) -> int:
    """`mentalarena iterate <command>`, composed here as the command line composes it."""
    parser = argparse.ArgumentParser(prog="mentalarena")
    training_cli.make_parser(parser.add_subparsers(dest="command", required=True), mcq_evaluator=mcq_evaluator)
    args = parser.parse_args(["iterate", *command])
    return args.func(args)


def results_line(report: dict, command: list[str], seconds: float) -> dict:
    """The line for ``benchmarks/results.jsonl``: the command and the loop report's figures."""
    return {
        "kind": "training_effect",
        "command": shlex.join(["mentalarena", "iterate", *command]),
        "seconds": round(seconds, 1),  # of the invocation that finished the loop (a resumed run's last part)
        "student": describe_model(report["student"]),
        "selfplay_model": report["selfplay_model"],
        "training_patients": report["training_patients"],
        "heldout_patients": report["heldout_patients"],
        "iterations": report["iterations"],
        "heldout": report["heldout"],
    }


def main(argv: list[str] | None = None) -> int:
    """Run `mentalarena iterate` with the given arguments, then append its results line and print the held-out table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help=f"where the results line goes (default {RESULTS})"
    )
    parser.add_argument("iterate", nargs=argparse.REMAINDER, help="`mentalarena iterate` arguments, after --")
    args = parser.parse_args(argv)
    command = [a for a in args.iterate if a != "--"]
    if "--out" not in command:
        print("error: --out: give the loop a folder, so that a run this long can resume", file=sys.stderr)
        return 2
    started = time.perf_counter()
    status = iterate_command(command)
    if status:
        return status
    report = json.loads((Path(command[command.index("--out") + 1]) / "report.json").read_text(encoding="utf-8"))
    if not report["heldout"]:
        print(
            "error: the loop ran without held-out patients (--heldout-ratio 0): there is no effect to report",
            file=sys.stderr,
        )
        return 2
    append_result(args.results, results_line(report, command, time.perf_counter() - started))
    print(markdown(report["heldout"], title="Held-out patients"))
    print(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
