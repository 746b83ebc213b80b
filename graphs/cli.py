"""`mentalarena` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields
from datetime import datetime
from pathlib import Path

from mentalarena.agents.models import EMBEDDED_SPECS, ModelSpecError
from mentalarena.agents.profiles import ProfileError, builtin_profiles, load_profiles
from mentalarena.graphs.context import Context

# Budgets small enough for the embedded 135M model on a laptop CPU (about two minutes a session).
SMALL_BUDGET = {"inquiry_turns": 2, "max_redirections": 1, "treatment_tries": 2, "medication_tries": 2, "max_new_tokens": 64}
DEFAULT_SESSIONS = 2


def _context_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("session settings (see the Context)")
    for f in fields(Context):
        if f.name == "model":
            continue
        flag = "--" + f.name.replace("_", "-")
        group.add_argument(flag, dest=f.name, type=type(f.default), default=None, help=f.metadata.get("description"))


def build_context(args: argparse.Namespace) -> Context:
    embedded = args.model.strip().lower() in EMBEDDED_SPECS
    budget = args.budget or ("small" if embedded else "full")
    values = dict(SMALL_BUDGET) if budget == "small" else {}
    values.update({f.name: getattr(args, f.name) for f in fields(Context) if getattr(args, f.name, None) is not None})
    values["model"] = args.model
    return Context(**values)


def cmd_run(args: argparse.Namespace) -> int:
    from mentalarena.graphs.run import RunFolderError, run_sessions

    context = build_context(args)
    profiles = builtin_profiles() if args.profiles == "builtin" else load_profiles(args.profiles)
    folder = Path(args.out) if args.out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        summary = run_sessions(profiles, context, folder, args.sessions or DEFAULT_SESSIONS, profiles_source=args.profiles, progress=not args.quiet)
    except RunFolderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in summary.lines():
        print(line)
    return 0 if summary.failed == 0 else 1


def cmd_graph(args: argparse.Namespace) -> int:
    from mentalarena.graphs.arena import graph

    print(graph.get_graph().draw_mermaid(), end="")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mentalarena", description="MentalArena: self-play of patient and therapist models (a research tool, not a medical device).")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run self-play sessions and write one record per session to a run folder")
    run.add_argument("--profiles", default="builtin", help="'builtin' or a Patient-Psi JSON / JSONL file of profiles")
    run.add_argument("--sessions", type=int, default=None, help=f"number of sessions (profiles are cycled); default {DEFAULT_SESSIONS}")
    run.add_argument("--out", default=None, help="run folder; an existing one is resumed (default runs/<timestamp>)")
    run.add_argument("--model", default="embedded", help="model spec for every role (see --patient-model etc.)")
    run.add_argument("--budget", choices=("small", "full"), default=None, help="small budgets (default for the embedded model) or the Context defaults")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    _context_options(run)
    run.set_defaults(func=cmd_run)

    graph = commands.add_parser("graph", help="print the arena graph as mermaid")
    graph.set_defaults(func=cmd_graph)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ProfileError, ModelSpecError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
