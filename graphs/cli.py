"""The graph layer's commands (`run`, `graph`) and the option helpers every command shares."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

from mentalarena.agents.context import Context
from mentalarena.agents.models import EMBEDDED_SPECS
from mentalarena.agents.profiles import load_profile_source

# Budgets small enough for the embedded 135M model on a laptop CPU (about two minutes a session).
SMALL_BUDGET: dict[str, Any] = {
    "inquiry_turns": 2,
    "max_redirections": 1,
    "treatment_tries": 2,
    "medication_tries": 2,
    "max_new_tokens": 64,
}
DEFAULT_SESSIONS = 2


def whole_number_at_least_one(text: str) -> int:
    """argparse type of counts: a bad one is refused under the option's name, with exit code 2, before any work."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def share(text: str) -> float:
    """argparse type of ratios: a number from 0 up to, not including, 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 0 and below 1")
    return value


def add_context_options(parser: argparse.ArgumentParser) -> None:
    """Add an option per Context setting but ``model`` (``--inquiry-turns`` ...), unset by default."""
    group = parser.add_argument_group("session settings (see the Context)")
    for f in fields(Context):
        if f.name == "model":
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            group.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f.metadata.get("description"),
            )
        else:
            group.add_argument(
                flag,
                dest=f.name,
                type=f.metadata.get("type", type(f.default)),
                default=None,
                help=f.metadata.get("description"),
            )


def build_context(args: argparse.Namespace) -> Context:
    """The Context of the parsed options, on top of the budget's defaults (small for the embedded model)."""
    embedded = args.model.strip().lower() in EMBEDDED_SPECS
    budget = args.budget or ("small" if embedded else "full")
    values: dict[str, Any] = dict(SMALL_BUDGET) if budget == "small" else {}
    values.update({f.name: getattr(args, f.name) for f in fields(Context) if getattr(args, f.name, None) is not None})
    values["model"] = args.model
    return Context(**values)


def check_options(
    context: Context, sessions: int, concurrency: int, checkpoint_url: str = "", server_url: str = ""
) -> bool:
    """The run's settings, checked before any work; a bad one is printed under its option's name."""
    from mentalarena.graphs.run import RunOptionError, check_run_options

    try:
        check_run_options(context, sessions, concurrency, checkpoint_url, server_url)
    except RunOptionError as exc:
        print(f"error: --{exc.option.replace('_', '-')}: {exc.reason}", file=sys.stderr)
        return False
    return True


def cmd_run(args: argparse.Namespace) -> int:
    """`run`: self-play sessions into a run folder; exit code 0, 1 if a session failed, 2 for bad options."""
    from mentalarena.graphs.remote import ServerError
    from mentalarena.graphs.run import run_sessions
    from mentalarena.graphs.run_folder import RECORDS, RunFolderError

    context = build_context(args)
    profiles = load_profile_source(args.profiles)
    if not check_options(context, args.sessions, args.concurrency, args.checkpoint_url, args.server):
        return 2
    folder = Path(args.out) if args.out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    if (folder / RECORDS).exists() and not args.resume:
        print(
            f"error: {folder} already holds a run; pass --resume to continue it, or choose another --out",
            file=sys.stderr,
        )
        return 2
    try:
        summary = run_sessions(
            profiles,
            context,
            folder,
            args.sessions,
            profiles_source=args.profiles,
            progress=not args.quiet,
            concurrency=args.concurrency,
            checkpoint_url=args.checkpoint_url,
            retry_failed=args.retry_failed,
            server_url=args.server,
            assistant=args.assistant,
        )
    except (RunFolderError, ServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in summary.lines():
        print(line)
    return 0 if summary.failed == 0 else 1


def cmd_graph(args: argparse.Namespace) -> int:
    """`graph`: print the arena graph as a mermaid diagram."""
    from mentalarena.graphs.arena import graph

    print(graph.get_graph().draw_mermaid(), end="")
    return 0


def make_parser(commands: argparse._SubParsersAction) -> None:
    """Add the graph layer's commands: `run` (self-play into a run folder) and `graph` (the picture)."""
    run = commands.add_parser("run", help="run self-play sessions and write one record per session to a run folder")
    run.add_argument("--profiles", default="builtin", help="'builtin' or a Patient-Psi JSON / JSONL file of profiles")
    run.add_argument(
        "--sessions",
        type=whole_number_at_least_one,
        default=DEFAULT_SESSIONS,
        help=f"number of sessions (profiles are cycled); default {DEFAULT_SESSIONS}",
    )
    run.add_argument("--out", default=None, help="run folder (default runs/<timestamp>)")
    run.add_argument(
        "--resume",
        action="store_true",
        help=(
            "continue the run in --out: finished sessions are skipped; unfinished and failed ones "
            "continue from their last checkpoint"
        ),
    )
    run.add_argument(
        "--no-retry-failed",
        dest="retry_failed",
        action="store_false",
        help="with --resume: leave failed sessions as they are instead of running them again",
    )
    run.add_argument(
        "--concurrency",
        type=whole_number_at_least_one,
        default=1,
        help="sessions run at once; local models generate their requests as one batch",
    )
    run.add_argument(
        "--checkpoint-url",
        default=os.environ.get("MENTALARENA_CHECKPOINT_URL", ""),
        help=(
            "postgresql://... to keep checkpoints in Postgres (shared by many workers); default SQLite "
            "in the run folder"
        ),
    )
    run.add_argument(
        "--server",
        default="",
        metavar="URL",
        help=(
            "run each session as a run on this LangGraph server (langgraph dev / up, a deployment); "
            "records still come here"
        ),
    )
    run.add_argument(
        "--assistant",
        default="arena",
        help="with --server: the assistant or graph id that plays a session (default arena)",
    )
    run.add_argument("--model", default="embedded", help="model spec for every role (see --patient-model etc.)")
    run.add_argument(
        "--budget",
        choices=("small", "full"),
        default=None,
        help="small budgets (default for the embedded model) or the Context defaults",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    add_context_options(run)
    run.set_defaults(func=cmd_run)

    graph = commands.add_parser("graph", help="print the arena graph as mermaid")
    graph.set_defaults(func=cmd_graph)
