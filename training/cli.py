"""The training layer's commands: `export`, `train` and `iterate`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from mentalarena.agents.profiles import load_profile_source
from mentalarena.graphs.cli import (
    DEFAULT_SESSIONS,
    add_context_options,
    build_context,
    check_options,
    share,
    whole_number_at_least_one,
)

# Given the MCQ set names, an item limit and a local data folder (None: the hub), returns what
# scores one model on them: {metric: value}.
MCQEvaluator = Callable[[list[str], "int | None", "Path | None"], Callable[[str], dict[str, float]]]


def cmd_export(args: argparse.Namespace) -> int:
    """Run `mentalarena export`: turn session records into an SFT dataset and print its report."""
    from mentalarena.training.export import ExportArgs, export

    report = export(
        ExportArgs(
            records=[Path(p) for p in args.records],
            out=Path(args.out),
            validation_ratio=args.validation_ratio,
            similarity_floor=args.similarity_floor,
            seed=args.seed,
            record_format=args.record_format,
            sharegpt=args.sharegpt,
            keep_unsafe=args.keep_unsafe,
            keep_failed=args.keep_failed,
        )
    )
    print(json.dumps(report.as_dict(), indent=2))
    print(f"dataset card: {Path(args.out) / 'README.md'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Run `mentalarena train`: LoRA fine-tuning on an exported dataset; prints the loss and where the model went."""
    from mentalarena.training.finetune import TrainArgs, train

    metrics = train(
        TrainArgs(
            model=args.model,
            dataset=Path(args.dataset),
            out=Path(args.out),
            preset=args.preset,
            max_steps=args.max_steps,
            qlora=args.qlora,
            merge=not args.no_merge,
            resume=args.resume,
            seed=args.seed,
            sft=dict(args.sft or []),
            lora=dict(args.lora or []),
        )
    )
    print(f"loss {metrics['first_loss']:.3f} -> {metrics['final_loss']:.3f} over {metrics['steps']} steps")
    print(
        f"adapter: {metrics['adapter']}"
        + (f"\nmerged model (use as --model): {metrics['merged']}" if "merged" in metrics else "")
    )
    return 0


def cmd_iterate(args: argparse.Namespace) -> int:
    """Run `mentalarena iterate`: the self-play, export and train loop, with held-out patients set aside."""
    from mentalarena.training.heldout import HeldoutError, split_patients
    from mentalarena.training.loop import IterateArgs, iterate

    context = build_context(args)
    profiles = load_profile_source(args.profiles)
    if not check_options(context, args.sessions, args.concurrency):  # model 0; later models are trained here
        return 2
    if args.teacher_model and not check_options(
        replace(context, model=args.teacher_model), args.sessions, args.concurrency
    ):
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
    report = iterate(
        IterateArgs(
            out=Path(args.out),
            iterations=args.iterations,
            profiles=training,
            context=context,
            sessions=args.sessions,
            preset=args.preset,
            train_sft=dict(args.sft or []),
            train_lora=dict(args.lora or []),
            max_steps=args.max_steps,
            qlora=args.qlora,
            progress=not args.quiet,
            concurrency=args.concurrency,
            evaluate=args.mcq_evaluator(eval_tasks, args.eval_limit, Path(args.eval_data) if args.eval_data else None)
            if eval_tasks
            else None,
            heldout_profiles=heldout,
            heldout_sessions_per_patient=args.heldout_sessions_per_patient,
            format_check=args.format_check,
            teacher=args.teacher_model,
        )
    )
    for metrics in report["iterations"]:
        print(
            f"iteration {metrics['iteration']}: treatment score {metrics['mean_treatment_score']}, "
            f"loss {metrics['final_train_loss']}, next model {metrics['next_model']}"
        )
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def field_value(text: str) -> tuple[str, Any]:
    """argparse type of ``FIELD=VALUE``: the value read as YAML ('2e-4', 'true', '[q_proj, v_proj]')."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not FIELD=VALUE")
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):  # YAML 1.1 reads '2e-4' (no dot) as text; a number is meant
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return name.strip(), parsed


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """The fine-tuning preset and the SFTConfig and LoraConfig fields given over it."""
    from mentalarena.training.finetune import PRESETS

    parser.add_argument(
        "--preset",
        default="cpu-small",
        help=f"{' or '.join(PRESETS)} (training/presets/), or a YAML file with 'sft' (SFTConfig) and 'lora' "
        "(LoraConfig) sections",
    )
    parser.add_argument(
        "--sft",
        type=field_value,
        action="append",
        metavar="FIELD=VALUE",
        help="a TRL SFTConfig field over the preset's, e.g. --sft learning_rate=2e-4 (repeatable)",
    )
    parser.add_argument(
        "--lora",
        type=field_value,
        action="append",
        metavar="FIELD=VALUE",
        help="a PEFT LoraConfig field over the preset's, e.g. --lora r=16 (repeatable)",
    )


def make_parser(commands: argparse._SubParsersAction, mcq_evaluator: MCQEvaluator | None = None) -> None:
    """Add `export`, `train` and `iterate`. ``mcq_evaluator`` (from the evaluation layer) backs
    `iterate --eval-tasks`; without it the option is refused."""
    from mentalarena.training.heldout import HELDOUT_RATIO

    export = commands.add_parser(
        "export",
        help="turn session records and MentalArena's released records into SFT data (messages JSONL, HF dataset, card)",
    )
    export.add_argument(
        "records",
        nargs="+",
        metavar="FILE",
        help="records.jsonl files of one or more runs, and/or MentalArena's released self-play records (JSONL with "
        "symptom, illness, treatment, explain_t, medicine, explain_m)",
    )
    # The format is checked in export (mentalarena.training.export.RECORD_FORMATS), which this parser does not
    # import: it is slow to load.
    export.add_argument(
        "--format",
        dest="record_format",
        default="auto",
        metavar="FORMAT",
        help="auto (default): each file's format is told by its first line, so both kinds mix in one export; "
        "records or mentalarena: every file must be of that format",
    )
    export.add_argument("--out", required=True, help="dataset folder")
    export.add_argument(
        "--validation-ratio",
        type=share,
        default=0.1,
        help="share of patients held out for validation (0: no validation split; otherwise an empty one is an error)",
    )
    export.add_argument(
        "--similarity-floor",
        type=float,
        default=0.0,
        help="drop sessions whose last decoder round's mean similarity is lower",
    )
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--sharegpt", action="store_true", help="also write ShareGPT JSONL (LLaMA-Factory)")
    export.add_argument(
        "--keep-unsafe",
        action="store_true",
        help="keep sessions whose therapist turns failed the safety check (dropped by default)",
    )
    export.add_argument(
        "--keep-failed",
        action="store_true",
        help="keep sessions with recorded failures, such as an unparsed answer (dropped by default); "
        "unparsed fields still give no item",
    )
    export.set_defaults(func=cmd_export)

    train = commands.add_parser("train", help="LoRA fine-tuning (TRL SFTTrainer) on an exported dataset")
    train.add_argument("--model", default="embedded", help="'embedded' or a local Hugging Face folder")
    train.add_argument("--dataset", required=True, help="folder written by `mentalarena export`")
    train.add_argument(
        "--out", required=True, help="folder for checkpoints, adapter, merged model, metrics and loss plot"
    )
    add_training_options(train)
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
    loop.add_argument(
        "--sessions",
        type=whole_number_at_least_one,
        default=DEFAULT_SESSIONS,
        help=f"sessions per iteration; default {DEFAULT_SESSIONS}",
    )
    loop.add_argument("--model", default="embedded", help="model 0: 'embedded' or a local Hugging Face folder")
    loop.add_argument("--budget", choices=("small", "full"), default=None)
    add_training_options(loop)
    loop.add_argument(
        "--qlora",
        action="store_true",
        help="train each iteration on a 4-bit base model (needs a CUDA GPU and bitsandbytes)",
    )
    loop.add_argument("--max-steps", type=int, default=-1, help="training steps per iteration (overrides epochs)")
    loop.add_argument("--concurrency", type=whole_number_at_least_one, default=1, help="self-play sessions run at once")
    loop.add_argument(
        "--eval-tasks",
        default="",
        help="MCQ sets to score each trained model on, e.g. 'medqa,mmlu' (log-likelihood; needs the data)",
    )
    loop.add_argument(
        "--eval-limit", type=whole_number_at_least_one, default=None, help="first N items of each evaluation set"
    )
    loop.add_argument(
        "--eval-data", default=None, help="folder holding <task>/*.jsonl for --eval-tasks; without it, the hub's sets"
    )
    loop.add_argument(
        "--heldout-ratio",
        type=share,
        default=HELDOUT_RATIO,
        help="share of the patients (grouped by identity) never trained on, "
        "played by the base model and after each iteration; "
        f"0 turns the held-out evaluation off (default {HELDOUT_RATIO})",
    )
    loop.add_argument("--heldout-sessions-per-patient", type=whole_number_at_least_one, default=1)
    loop.add_argument(
        "--no-format-check",
        dest="format_check",
        action="store_false",
        help="skip the held-out sessions with constraints off (format adherence)",
    )
    loop.add_argument(
        "--teacher-model",
        default="",
        help="a model spec that plays the self-play instead of the student (which still trains on it)",
    )
    loop.add_argument("--quiet", action="store_true")
    add_context_options(loop)
    loop.set_defaults(func=cmd_iterate, mcq_evaluator=mcq_evaluator)
