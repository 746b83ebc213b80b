"""`mentalarena` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import fields, replace
from datetime import datetime
from pathlib import Path

from mentalarena.agents.models import EMBEDDED_SPECS, ModelSpecError
from mentalarena.agents.profiles import ProfileError, load_profile_source
from mentalarena.graphs.context import Context

# Budgets small enough for the embedded 135M model on a laptop CPU (about two minutes a session).
SMALL_BUDGET = {"inquiry_turns": 2, "max_redirections": 1, "treatment_tries": 2, "medication_tries": 2, "max_new_tokens": 64}
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
    group = parser.add_argument_group("session settings (see the Context)")
    for f in fields(Context):
        if f.name == "model":
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=f.metadata.get("description"))
        else:
            group.add_argument(flag, dest=f.name, type=f.metadata.get("type", type(f.default)), default=None, help=f.metadata.get("description"))


def build_context(args: argparse.Namespace) -> Context:
    embedded = args.model.strip().lower() in EMBEDDED_SPECS
    budget = args.budget or ("small" if embedded else "full")
    values = dict(SMALL_BUDGET) if budget == "small" else {}
    values.update({f.name: getattr(args, f.name) for f in fields(Context) if getattr(args, f.name, None) is not None})
    values["model"] = args.model
    return Context(**values)


def check_options(context: Context, sessions: int, concurrency: int, checkpoint_url: str = "", server_url: str = "") -> bool:
    """The run's settings, checked before any work; a bad one is printed under its option's name."""
    from mentalarena.graphs.run import RunOptionError, check_run_options

    try:
        check_run_options(context, sessions, concurrency, checkpoint_url, server_url)
    except RunOptionError as exc:
        print(f"error: --{exc.option.replace('_', '-')}: {exc.reason}", file=sys.stderr)
        return False
    return True


def cmd_run(args: argparse.Namespace) -> int:
    from mentalarena.graphs.remote import ServerError
    from mentalarena.graphs.run import RECORDS, RunFolderError, run_sessions

    context = build_context(args)
    profiles = load_profile_source(args.profiles)
    if not check_options(context, args.sessions, args.concurrency, args.checkpoint_url, args.server):
        return 2
    folder = Path(args.out) if args.out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    if (folder / RECORDS).exists() and not args.resume:
        print(f"error: {folder} already holds a run; pass --resume to continue it, or choose another --out", file=sys.stderr)
        return 2
    try:
        summary = run_sessions(profiles, context, folder, args.sessions, profiles_source=args.profiles, progress=not args.quiet,
                               concurrency=args.concurrency, checkpoint_url=args.checkpoint_url, retry_failed=args.retry_failed,
                               server_url=args.server, assistant=args.assistant)
    except (RunFolderError, ServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in summary.lines():
        print(line)
    return 0 if summary.failed == 0 else 1


def cmd_export(args: argparse.Namespace) -> int:
    from mentalarena.training.export import ExportArgs, export

    report = export(ExportArgs(records=[Path(p) for p in args.records], out=Path(args.out), validation_ratio=args.validation_ratio,
                               similarity_floor=args.similarity_floor, seed=args.seed, record_format=args.record_format,
                               sharegpt=args.sharegpt, keep_unsafe=args.keep_unsafe, keep_failed=args.keep_failed))
    print(json.dumps(report.as_dict(), indent=2))
    print(f"dataset card: {Path(args.out) / 'README.md'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from mentalarena.training.finetune import TrainArgs, train

    metrics = train(TrainArgs(model=args.model, dataset=Path(args.dataset), out=Path(args.out), preset=args.preset, max_steps=args.max_steps,
                              qlora=args.qlora, merge=not args.no_merge, resume=args.resume, seed=args.seed))
    print(f"loss {metrics['first_loss']:.3f} -> {metrics['final_loss']:.3f} over {metrics['steps']} steps")
    print(f"adapter: {metrics['adapter']}" + (f"\nmerged model (use as --model): {metrics['merged']}" if "merged" in metrics else ""))
    return 0


def cmd_iterate(args: argparse.Namespace) -> int:
    from mentalarena.training.heldout import HeldoutError, split_patients
    from mentalarena.training.loop import IterateArgs, iterate

    context = build_context(args)
    profiles = load_profile_source(args.profiles)
    if not check_options(context, args.sessions, args.concurrency):  # model 0; later models are trained here
        return 2
    if args.teacher_model and not check_options(replace(context, model=args.teacher_model), args.sessions, args.concurrency):
        return 2
    try:
        training, heldout = split_patients(profiles, args.heldout_ratio, context.seed) if args.heldout_ratio > 0 else (profiles, [])
    except HeldoutError as exc:
        print(f"error: --heldout-ratio: {exc}", file=sys.stderr)
        return 2
    report = iterate(IterateArgs(out=Path(args.out), iterations=args.iterations, profiles=training, context=context,
                                 sessions=args.sessions, preset=args.preset, max_steps=args.max_steps, qlora=args.qlora,
                                 progress=not args.quiet, concurrency=args.concurrency,
                                 eval_tasks=[t for t in args.eval_tasks.split(",") if t], eval_limit=args.eval_limit,
                                 heldout_profiles=heldout, heldout_sessions_per_patient=args.heldout_sessions_per_patient,
                                 format_check=args.format_check, teacher=args.teacher_model))
    for metrics in report["iterations"]:
        print(f"iteration {metrics['iteration']}: treatment score {metrics['mean_treatment_score']}, loss {metrics['final_train_loss']}, next model {metrics['next_model']}")
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from mentalarena.graphs.arena import graph

    print(graph.get_graph().draw_mermaid(), end="")
    return 0


def make_parser() -> argparse.ArgumentParser:
    from mentalarena.training.heldout import HELDOUT_RATIO

    parser = argparse.ArgumentParser(prog="mentalarena", description="MentalArena: self-play of patient and therapist models (a research tool, not a medical device).")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run self-play sessions and write one record per session to a run folder")
    run.add_argument("--profiles", default="builtin", help="'builtin' or a Patient-Psi JSON / JSONL file of profiles")
    run.add_argument("--sessions", type=whole_number_at_least_one, default=DEFAULT_SESSIONS,
                     help=f"number of sessions (profiles are cycled); default {DEFAULT_SESSIONS}")
    run.add_argument("--out", default=None, help="run folder (default runs/<timestamp>)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out: finished sessions are skipped; unfinished and failed ones continue from their last checkpoint")
    run.add_argument("--no-retry-failed", dest="retry_failed", action="store_false",
                     help="with --resume: leave failed sessions as they are instead of running them again")
    run.add_argument("--concurrency", type=whole_number_at_least_one, default=1, help="sessions run at once; local models generate their requests as one batch")
    run.add_argument("--checkpoint-url", default=os.environ.get("MENTALARENA_CHECKPOINT_URL", ""),
                     help="postgresql://... to keep checkpoints in Postgres (shared by many workers); default SQLite in the run folder")
    run.add_argument("--server", default="", metavar="URL",
                     help="run each session as a run on this LangGraph server (langgraph dev / up, a deployment); records still come here")
    run.add_argument("--assistant", default="arena", help="with --server: the assistant or graph id that plays a session (default arena)")
    run.add_argument("--model", default="embedded", help="model spec for every role (see --patient-model etc.)")
    run.add_argument("--budget", choices=("small", "full"), default=None, help="small budgets (default for the embedded model) or the Context defaults")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    add_context_options(run)
    run.set_defaults(func=cmd_run)

    export = commands.add_parser("export", help="turn session records and MentalArena's released records into SFT data (messages JSONL, HF dataset, card)")
    export.add_argument("records", nargs="+", metavar="FILE",
                        help="records.jsonl files of one or more runs, and/or MentalArena's released self-play records (JSONL with "
                             "symptom, illness, treatment, explain_t, medicine, explain_m)")
    # The format is checked in export (mentalarena.training.export.RECORD_FORMATS), which this parser does not import: it is slow to load.
    export.add_argument("--format", dest="record_format", default="auto", metavar="FORMAT",
                        help="auto (default): each file's format is told by its first line, so both kinds mix in one export; "
                             "records or mentalarena: every file must be of that format")
    export.add_argument("--out", required=True, help="dataset folder")
    export.add_argument("--validation-ratio", type=share, default=0.1,
                        help="share of patients held out for validation (0: no validation split; otherwise an empty one is an error)")
    export.add_argument("--similarity-floor", type=float, default=0.0, help="drop sessions whose last decoder round's mean similarity is lower")
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--sharegpt", action="store_true", help="also write ShareGPT JSONL (LLaMA-Factory)")
    export.add_argument("--keep-unsafe", action="store_true", help="keep sessions whose therapist turns failed the safety check (dropped by default)")
    export.add_argument("--keep-failed", action="store_true",
                        help="keep sessions with recorded failures, such as an unparsed answer (dropped by default); unparsed fields still give no item")
    export.set_defaults(func=cmd_export)

    train = commands.add_parser("train", help="LoRA fine-tuning (TRL SFTTrainer) on an exported dataset")
    train.add_argument("--model", default="embedded", help="'embedded' or a local Hugging Face folder")
    train.add_argument("--dataset", required=True, help="folder written by `mentalarena export`")
    train.add_argument("--out", required=True, help="folder for checkpoints, adapter, merged model, metrics and loss plot")
    train.add_argument("--preset", choices=("cpu-small", "mentalgpt"), default="cpu-small")
    train.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (overrides epochs)")
    train.add_argument("--qlora", action="store_true", help="4-bit base model (needs a CUDA GPU and bitsandbytes)")
    train.add_argument("--no-merge", action="store_true", help="save only the adapter")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=cmd_train)

    loop = commands.add_parser("iterate", help="self-play, export, train, repeat with the new model")
    loop.add_argument("--iterations", type=whole_number_at_least_one, default=2)
    loop.add_argument("--out", required=True, help="loop folder; an existing one is resumed")
    loop.add_argument("--profiles", default="builtin")
    loop.add_argument("--sessions", type=whole_number_at_least_one, default=DEFAULT_SESSIONS, help=f"sessions per iteration; default {DEFAULT_SESSIONS}")
    loop.add_argument("--model", default="embedded", help="model 0: 'embedded' or a local Hugging Face folder")
    loop.add_argument("--budget", choices=("small", "full"), default=None)
    loop.add_argument("--preset", choices=("cpu-small", "mentalgpt"), default="cpu-small")
    loop.add_argument("--qlora", action="store_true", help="train each iteration on a 4-bit base model (needs a CUDA GPU and bitsandbytes)")
    loop.add_argument("--max-steps", type=int, default=-1, help="training steps per iteration (overrides epochs)")
    loop.add_argument("--concurrency", type=whole_number_at_least_one, default=1, help="self-play sessions run at once")
    loop.add_argument("--eval-tasks", default="", help="MCQ sets to score each trained model on, e.g. 'medqa,mmlu' (log-likelihood; needs the data)")
    loop.add_argument("--eval-limit", type=whole_number_at_least_one, default=None, help="first N items of each evaluation set")
    loop.add_argument("--heldout-ratio", type=share, default=HELDOUT_RATIO,
                      help=f"share of the patients (grouped by identity) never trained on, played by the base model and after each iteration; "
                           f"0 turns the held-out evaluation off (default {HELDOUT_RATIO})")
    loop.add_argument("--heldout-sessions-per-patient", type=whole_number_at_least_one, default=1)
    loop.add_argument("--no-format-check", dest="format_check", action="store_false",
                      help="skip the held-out sessions with constraints off (format adherence)")
    loop.add_argument("--teacher-model", default="", help="a model spec that plays the self-play instead of the student (which still trains on it)")
    loop.add_argument("--quiet", action="store_true")
    add_context_options(loop)
    loop.set_defaults(func=cmd_iterate)

    from mentalarena.benchmarks.cli import add_eval_command

    add_eval_command(commands)

    graph = commands.add_parser("graph", help="print the arena graph as mermaid")
    graph.set_defaults(func=cmd_graph)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's usage errors (2, already printed) and --help (0): returned like any outcome
        return exc.code
    try:
        return args.func(args)
    except (ProfileError, ModelSpecError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
