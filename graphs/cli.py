"""The graph layer's commands (`run`, `graph`) and the option helpers every command shares."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Container
from dataclasses import MISSING, fields
from datetime import datetime
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

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
T = TypeVar("T")


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


# Field metadata an option may carry beside its "description" (the help): argparse's own keywords.
OPTION_KEYWORDS = ("type", "choices", "metavar", "nargs", "action", "flag")


def comma_list(text: str) -> list[str]:
    """argparse type of comma-separated lists: the stripped, non-empty items."""
    return [part.strip() for part in text.split(",") if part.strip()]


def add_dataclass_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    exclude: Container[str] = (),
    unset: bool = False,
) -> None:
    """Add an option per field of the dataclass ``cls`` (``max_steps`` -> ``--max-steps``), as
    `HfArgumentParser` does, from the field's type, default and metadata: "description" is the help,
    and "type", "choices", "metavar", "nargs" and "action" go to argparse as they are. "flag" names
    the option (``--format``, ``--quiet``; a name without dashes is a positional argument); "cli":
    False leaves a field out. A field without a default is required. A bool is a switch away from its
    default (``--no-merge`` for one that defaults to True). With ``unset`` every option defaults to
    None, so that only what was given counts (bools then take ``--x`` and ``--no-x``)."""
    # Not HfArgumentParser itself: it replaces a field's "type" with its annotation (so no checked
    # types such as `share`), has no positional arguments, and is a parser class, not options added
    # to a subcommand's parser.
    hints = get_type_hints(cls)
    for f in fields(cls):
        meta = f.metadata
        if f.name in exclude or meta.get("cli") is False:
            continue
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        kwargs: dict[str, Any] = {key: meta[key] for key in OPTION_KEYWORDS if key in meta and key != "flag"}
        kwargs["help"] = meta.get("description")
        hint = hints[f.name]
        if hint is bool:
            if unset:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs.setdefault("action", "store_false" if default else "store_true")
            flag = meta.get("flag", ("--no-" if default and not unset else "--") + f.name.replace("_", "-"))
        else:
            if "type" not in kwargs and kwargs.get("action") != "append":
                if get_origin(hint) in (Union, UnionType):  # Path | None: a Path, or nothing given
                    hint = next(a for a in get_args(hint) if a is not type(None))
                if get_origin(hint) is list:  # list[Path]: several values, each converted
                    hint = get_args(hint)[0]
                    kwargs.setdefault("nargs", "+")
                kwargs["type"] = hint
            flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        if unset or kwargs.get("action") == "append":  # argparse appends to a given default
            kwargs["default"] = None
        elif default is MISSING:
            kwargs["required"] = flag.startswith("-")
        else:
            kwargs["default"] = default
            said = "default" in (kwargs["help"] or "")
            if default not in (None, "", [], {}) and not isinstance(default, bool) and not said:
                shown = ",".join(map(str, default)) if isinstance(default, list) else default
                kwargs["help"] = f"{kwargs['help'] or ''} (default {shown})".replace("%", "%%").lstrip()
        if flag.startswith("-"):
            parser.add_argument(flag, dest=f.name, **kwargs)
        else:
            kwargs.pop("required", None)
            kwargs.setdefault("metavar", flag)
            parser.add_argument(f.name, **kwargs)


def dataclass_from_options(cls: type[T], args: argparse.Namespace, **values: Any) -> T:
    """The ``cls`` of the parsed options its fields have (``values`` win); a FIELD=VALUE list becomes a dict."""
    hints = get_type_hints(cls)
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in values or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if get_origin(hints[f.name]) is dict or hints[f.name] is dict:
            value = dict(value or [])
        values[f.name] = value
    return cls(**values)


def add_context_options(parser: argparse.ArgumentParser) -> None:
    """Add an option per Context setting but ``model`` (``--inquiry-turns`` ...), unset by default."""
    group = parser.add_argument_group("session settings (see the Context)")
    add_dataclass_options(group, Context, exclude={"model"}, unset=True)


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
