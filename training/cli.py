"""The training layer's commands: `export`, `train` and `iterate`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from mentalarena.agents.profiles import load_profile_source
from mentalarena.graphs.cli import (
    add_context_options,
    add_dataclass_options,
    build_context,
    check_options,
    dataclass_from_options,
    share,
    whole_number_at_least_one,
)
from mentalarena.training.export import ExportArgs
from mentalarena.training.finetune import TrainArgs
from mentalarena.training.heldout import HELDOUT_RATIO
from mentalarena.training.loop import IterateArgs

# Given the MCQ set names, an item limit and a local data folder (None: the hub), returns what
# scores one model on them: {metric: value}.
MCQEvaluator = Callable[[list[str], "int | None", "Path | None"], Callable[[str], dict[str, float]]]


def cmd_export(args: argparse.Namespace) -> int:
    """Run `mentalarena export`: turn session records into an SFT dataset and print its report."""
    from mentalarena.training.export import export

    report = export(dataclass_from_options(ExportArgs, args))
    print(json.dumps(report.as_dict(), indent=2))
    print(f"dataset card: {Path(args.out) / 'README.md'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Run `mentalarena train`: LoRA fine-tuning on an exported dataset; prints the loss and where the model went."""
    from mentalarena.training.finetune import train

    metrics = train(dataclass_from_options(TrainArgs, args))
    print(f"loss {metrics['first_loss']:.3f} -> {metrics['final_loss']:.3f} over {metrics['steps']} steps")
    print(
        f"adapter: {metrics['adapter']}"
        + (f"\nmerged model (use as --model): {metrics['merged']}" if "merged" in metrics else "")
    )
    return 0


def cmd_iterate(args: argparse.Namespace) -> int:
    """Run `mentalarena iterate`: the self-play, export and train loop, with held-out patients set aside."""
    from mentalarena.training.heldout import HeldoutError, split_patients
    from mentalarena.training.loop import iterate

    context = build_context(args)
    profiles = load_profile_source(args.profiles)
    if not check_options(context, args.sessions, args.concurrency):  # model 0; later models are trained here
        return 2
    if args.teacher and not check_options(replace(context, model=args.teacher), args.sessions, args.concurrency):
        return 2
    eval_tasks = [task for task in args.eval_tasks.split(",") if task]
    if eval_tasks and args.mcq_evaluator is None:
        print(
            "error: --eval-tasks: this command line has no MCQ evaluation (run it as `mentalarena iterate`)",
            file=sys.stderr,
        )
        return 2
    try:
        training, heldout = (
            split_patients(profiles, args.heldout_ratio, context.seed) if args.heldout_ratio > 0 else (profiles, [])
        )
    except HeldoutError as exc:
        print(f"error: --heldout-ratio: {exc}", file=sys.stderr)
        return 2
    evaluate = args.mcq_evaluator(eval_tasks, args.eval_limit, args.eval_data) if eval_tasks else None
    report = iterate(
        dataclass_from_options(
            IterateArgs, args, profiles=training, context=context, evaluate=evaluate, heldout_profiles=heldout
        )
    )
    for metrics in report["iterations"]:
        print(
            f"iteration {metrics['iteration']}: treatment score {metrics['mean_treatment_score']}, "
            f"loss {metrics['final_train_loss']}, next model {metrics['next_model']}"
        )
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def make_parser(commands: argparse._SubParsersAction, mcq_evaluator: MCQEvaluator | None = None) -> None:
    """Add `export`, `train` and `iterate`, their options made from ExportArgs, TrainArgs and
    IterateArgs. ``mcq_evaluator`` (from the evaluation layer) backs `iterate --eval-tasks`; without
    it the option is refused."""
    export = commands.add_parser(
        "export",
        help="turn session records and MentalArena's released records into SFT data (messages JSONL, HF dataset, card)",
    )
    add_dataclass_options(export, ExportArgs)
    export.set_defaults(func=cmd_export)

    train = commands.add_parser("train", help="LoRA fine-tuning (TRL SFTTrainer) on an exported dataset")
    add_dataclass_options(train, TrainArgs)
    train.set_defaults(func=cmd_train)

    loop = commands.add_parser("iterate", help="self-play, export, train, repeat with the new model")
    add_dataclass_options(loop, IterateArgs)
    # What the loop's patients, context and MCQ check are made from.
    loop.add_argument("--profiles", default="builtin", help="'builtin' or a Patient-Psi JSON / JSONL file of profiles")
    loop.add_argument("--model", default="embedded", help="model 0: 'embedded' or a local Hugging Face folder")
    loop.add_argument("--budget", choices=("small", "full"), default=None)
    loop.add_argument(
        "--heldout-ratio",
        type=share,
        default=HELDOUT_RATIO,
        help="share of the patients (grouped by identity) never trained on, "
        "played by the base model and after each iteration; "
        f"0 turns the held-out evaluation off (default {HELDOUT_RATIO})",
    )
    loop.add_argument(
        "--eval-tasks",
        default="",
        help="MCQ sets to score each trained model on, e.g. 'medqa,mmlu' (log-likelihood; needs the data)",
    )
    loop.add_argument(
        "--eval-limit", type=whole_number_at_least_one, default=None, help="first N items of each evaluation set"
    )
    loop.add_argument(
        "--eval-data", type=Path, default=None, help="folder holding <task>/*.jsonl for --eval-tasks; else the hub's"
    )
    add_context_options(loop)
    loop.set_defaults(func=cmd_iterate, mcq_evaluator=mcq_evaluator)
