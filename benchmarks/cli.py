"""`mentalarena eval`: multiple-choice QA, IMHI and counselling judges, each into a results folder."""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from mentalarena.benchmarks.imhi import IMHIArgs
from mentalarena.benchmarks.judges import JudgeArgs
from mentalarena.benchmarks.qa import MODELS_HELP, QAArgs
from mentalarena.graphs.cli import (
    add_context_options,
    add_dataclass_options,
    comma_list,
    dataclass_from_options,
    share,
    whole_number_at_least_one,
)
from mentalarena.training.heldout import HELDOUT_RATIO


def results_folder(args: argparse.Namespace) -> Path:
    """The results folder: ``--out``, or one under ``results/`` named for the eval kind and the time."""
    return Path(args.out) if args.out else Path("results") / f"{args.eval_kind}-{datetime.now():%Y%m%d-%H%M%S}"


def cmd_qa(args: argparse.Namespace) -> int:
    """Run `mentalarena eval qa`: multiple-choice accuracy of each model per task, printed and written to a report."""
    from mentalarena.benchmarks.qa import evaluate_qa

    results, rows = evaluate_qa(dataclass_from_options(QAArgs, args))
    for spec, model in results["models"].items():
        for task, s in model["tasks"].items():
            print(
                f"{spec} {task}: accuracy {s['accuracy']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}] "
                f"n={s['n']} unparsed={s['unparsed']} ({s['seconds']} s)"
            )
    return finish(args, results, rows)


def cmd_imhi(args: argparse.Namespace) -> int:
    """Run `mentalarena eval imhi`: weighted F1 and accuracy of each model per IMHI set, printed and reported."""
    from mentalarena.benchmarks.imhi import evaluate_imhi

    results, rows = evaluate_imhi(dataclass_from_options(IMHIArgs, args))
    for spec, model in results["models"].items():
        for name, s in model["sets"].items():
            print(
                f"{spec} {name}: weighted F1 {s['weighted_f1']:.3f}, accuracy {s['accuracy']:.3f} "
                f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}] n={s['n']} unparsed={s['unparsed']}"
            )
    return finish(args, results, rows)


def cmd_judge(args: argparse.Namespace) -> int:
    """Run `mentalarena eval judge`: a judge model scores answers and arena records, optionally pair by pair."""
    from mentalarena.benchmarks.judges import evaluate_judges

    results, rows = evaluate_judges(dataclass_from_options(JudgeArgs, args))
    for key, model in results["models"].items():
        overall = "-" if model["overall"] is None else f"{model['overall']:.2f}"
        print(
            f"{key}: mean judge score {overall} over {model['n']} responses, {model['unparsed']} unparsed judge answers"
        )
    for pair in results["pairwise"]:
        print(
            f"{pair['a']} vs {pair['b']}: {pair['wins_a']}-{pair['wins_b']}, {pair['ties']} ties, "
            f"{pair['inconsistent']} position-inconsistent, {pair['unparsed']} unparsed"
        )
    return finish(args, results, rows)


def cmd_arena(args: argparse.Namespace) -> int:
    """Run `mentalarena eval arena`: each model plays the held-out patients and is compared with the first."""
    from mentalarena.agents.profiles import load_profile_source
    from mentalarena.graphs.cli import build_context, check_options
    from mentalarena.training.heldout import (
        METRICS,
        HeldoutError,
        compare,
        play_heldout,
        split_patients,
        verdict,
        write_reports,
    )

    args.model = args.models[0]
    context = build_context(args)
    if not all(check_options(replace(context, model=spec), 1, args.concurrency) for spec in args.models):
        return 2
    try:
        _, patients = split_patients(load_profile_source(args.profiles), args.heldout_ratio, context.seed)
    except HeldoutError as exc:
        print(f"error: --heldout-ratio: {exc}", file=sys.stderr)
        return 2
    out = results_folder(args)
    played = {
        spec: play_heldout(
            spec,
            patients,
            context,
            out / model_folder_name(spec),
            args.sessions_per_patient,
            format_check=args.format_check,
            concurrency=args.concurrency,
            progress=not args.quiet,
        )
        for spec in args.models
    }
    report = {
        "patients": [p.id for p in patients],
        "sessions_per_patient": args.sessions_per_patient,
        **compare(played, context.seed),
    }
    for spec, summary in report["models"].items():
        top1, adherence = summary["diagnosis_top1"], summary["format_adherence"]
        print(
            f"{spec}: diagnosis top-1 {top1['share'] if top1 else '-'}, "
            f"format adherence {adherence['share'] if adherence else '-'}"
        )
    for spec, differences in report["differences"].items():
        moved = [
            f"{m.name} {verdict(m, differences[m.name])}" for m in METRICS if differences[m.name]["outside_interval"]
        ]
        print(f"{spec} against {report['baseline']}: " + ("; ".join(moved) or "no difference outside its interval"))
    print(f"report: {write_reports(report, out)}")
    return 0


def model_folder_name(spec: str) -> str:
    """A folder name for a model spec's results: readable, and distinct for distinct specs."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec.strip()).strip("_") or "model"


def finish(args: argparse.Namespace, results: dict, rows: list[dict]) -> int:
    """Write the report of ``results`` and ``rows`` to the results folder, print its path, and return 0."""
    from mentalarena.benchmarks.report import write_report

    print(f"report: {write_report(results_folder(args), results, rows)}")
    return 0


def add_out_option(parser: argparse.ArgumentParser, kind: str, resumed: bool = False) -> None:
    """Add ``--out``, the results folder of an eval kind."""
    parser.add_argument(
        "--out",
        default=None,
        help=f"results folder (default results/{kind}-<timestamp>)"
        + ("; an existing one is resumed" if resumed else ""),
    )


def make_parser(commands: argparse._SubParsersAction) -> None:
    """Register the `eval` subcommand on the top-level parser's subcommands."""
    evaluate = commands.add_parser(
        "eval",
        help="evaluate models: multiple-choice QA, IMHI, counselling judges",
        description="Evaluate one or more models; each run writes <kind>.json, <kind>.md, <kind>_items.jsonl "
        "and PNG charts to --out.",
    )
    kinds = evaluate.add_subparsers(dest="eval_kind", required=True)

    qa = kinds.add_parser(
        "qa", help="MedQA, MedMCQA, PubMedQA, MMLU medical: accuracy with 95%% Wilson intervals, per subject"
    )
    add_dataclass_options(qa, QAArgs)
    add_out_option(qa, "qa")
    qa.set_defaults(func=cmd_qa)

    imhi = kinds.add_parser("imhi", help="IMHI (MentalLLaMA) nine test sets: weighted F1 and accuracy per set")
    add_dataclass_options(imhi, IMHIArgs)
    add_out_option(imhi, "imhi")
    imhi.set_defaults(func=cmd_imhi)

    judge = kinds.add_parser(
        "judge", help="counselling quality: seven metrics scored 1-10 by a judge model, optional pairwise comparison"
    )
    add_dataclass_options(judge, JudgeArgs)
    add_out_option(judge, "judge")
    judge.set_defaults(func=cmd_judge)

    arena = kinds.add_parser(
        "arena",
        help="self-play on held-out patients: format adherence, diagnosis agreement, decoder similarity, "
        "ratings and failures, with intervals; later models paired with the first",
    )
    arena.add_argument(
        "--models", type=comma_list, default=["embedded"], help=MODELS_HELP + "; the first is the baseline"
    )
    arena.add_argument("--profiles", default="builtin", help="patient profiles; the held-out share of them is played")
    arena.add_argument(
        "--heldout-ratio",
        type=share,
        default=HELDOUT_RATIO,
        help="share of the patients set aside, as `mentalarena iterate` sets them aside with the same --seed "
        f"(default {HELDOUT_RATIO})",
    )
    arena.add_argument("--sessions-per-patient", type=whole_number_at_least_one, default=1)
    arena.add_argument(
        "--no-format-check", dest="format_check", action="store_false", help="skip the sessions with constraints off"
    )
    arena.add_argument("--concurrency", type=whole_number_at_least_one, default=1)
    arena.add_argument("--budget", choices=("small", "full"), default=None)
    add_out_option(arena, "arena", resumed=True)
    arena.add_argument("--quiet", action="store_true", help="no progress bars")
    add_context_options(arena)
    arena.set_defaults(func=cmd_arena)
