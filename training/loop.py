"""The iterative self-play loop: model k plays, its dialogues are exported, training yields model k+1.

The loop plays on the training patients only. With held-out patients, it plays them with the base
model first and with each trained model after its iteration (:mod:`mentalarena.training.heldout`),
so the report shows what training changed on patients no model trained on. A teacher, when given,
plays the self-play instead of the student, which still trains on it.

Each iteration has its own folder (``iter-<k>/selfplay``, ``dataset``, ``model``, ``heldout``,
``metrics.json``); every step is skipped when its output is complete, so an interrupted loop
resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mentalarena.agents.context import Context
from mentalarena.agents.profiles import PatientProfile
from mentalarena.graphs.cli import DEFAULT_SESSIONS, share, whole_number_at_least_one
from mentalarena.graphs.run import run_sessions
from mentalarena.graphs.run_folder import RECORDS, read_records
from mentalarena.training import heldout
from mentalarena.training.export import ExportArgs, export, last_mean_similarity
from mentalarena.training.finetune import LORA_OPTION, PRESET_OPTION, SFT_OPTION, TrainArgs, plot_series, train

REPORT_METRICS = (
    "mean_treatment_score",
    "mean_medicine_score",
    "mean_decoder_similarity",
    "failures_per_session",
    "final_train_loss",
)
BASE = "base"


@dataclass
class IterateArgs:
    """What the loop runs: its folder, iterations, patients and context, the training settings and held-out play."""

    out: Path = field(metadata={"description": "loop folder; an existing one is resumed"})
    iterations: int = field(default=2, metadata={"type": whole_number_at_least_one})
    # The training patients: self-play plays only these (the CLI sets the held-out ones apart first).
    profiles: list[PatientProfile] = field(default_factory=list, metadata={"cli": False})
    context: Context = field(default_factory=Context, metadata={"cli": False})
    sessions: int = field(
        default=DEFAULT_SESSIONS,
        metadata={"type": whole_number_at_least_one, "description": "self-play sessions per iteration"},
    )
    preset: str = field(default="cpu-small", metadata=PRESET_OPTION)
    sft: dict[str, Any] = field(default_factory=dict, metadata=SFT_OPTION)
    lora: dict[str, Any] = field(default_factory=dict, metadata=LORA_OPTION)
    max_steps: int = field(default=-1, metadata={"description": "training steps per iteration (overrides epochs)"})
    qlora: bool = field(
        default=False,
        metadata={"description": "train each iteration on a 4-bit base model (needs a CUDA GPU and bitsandbytes)"},
    )
    validation_ratio: float = field(
        default=0.1,
        metadata={"type": share, "description": "share of each iteration's patients exported for validation"},
    )
    progress: bool = field(default=True, metadata={"flag": "--quiet", "description": "no progress bars"})
    concurrency: int = field(
        default=1, metadata={"type": whole_number_at_least_one, "description": "self-play sessions run at once"}
    )
    # Scores each trained model ({metric: value}, e.g. MCQ accuracy as a forgetting guard); the
    # metrics join the iteration's. The CLI passes the evaluation layer's MCQ scorer.
    evaluate: Callable[[str], dict[str, float]] | None = field(default=None, metadata={"cli": False})
    # Played by the base model and after each iteration.
    heldout_profiles: list[PatientProfile] = field(default_factory=list, metadata={"cli": False})
    heldout_sessions_per_patient: int = field(default=1, metadata={"type": whole_number_at_least_one})
    format_check: bool = field(
        default=True,
        metadata={
            "flag": "--no-format-check",
            "description": "skip the held-out sessions with constraints off (format adherence)",
        },
    )
    teacher: str = field(
        default="",
        metadata={
            "flag": "--teacher-model",
            "description": "a model spec that plays the self-play instead of the student (which still trains on it)",
        },
    )


def selfplay_metrics(folder: Path) -> dict:
    """Sessions done and failed in a run folder, and the finished sessions' mean scores, similarity and failures."""
    done = read_records(folder)
    finished = [r for r in done if r.get("status") == "done"]

    def mean(values: Iterable[Any]) -> float | None:
        values = [v for v in values if v is not None]
        return round(sum(values) / len(values), 3) if values else None

    return {
        "sessions_done": len(finished),
        "sessions_failed": len(done) - len(finished),
        "mean_treatment_score": mean(r["treatment_score"] for r in finished),
        "mean_medicine_score": mean(r["medicine_score"] for r in finished),
        "mean_decoder_similarity": mean(last_mean_similarity(r) for r in finished),
        "failures_per_session": mean(len(r["failures"]) for r in finished),
    }


def run_iteration(args: IterateArgs, k: int, model: str) -> dict:
    """Iteration ``k``: self-play, export and training of ``model``, skipping finished steps; returns its metrics."""
    folder = args.out / f"iter-{k}"
    selfplay, dataset, trained = folder / "selfplay", folder / "dataset", folder / "model"
    player = args.teacher or model
    # Failed sessions are retried only while their records can still reach this iteration's dataset.
    # Each iteration draws its own sessions (seed + k): a teacher would otherwise play the same ones again.
    run_sessions(
        args.profiles,
        replace(args.context, model=player, seed=args.context.seed + k),
        selfplay,
        args.sessions,
        progress=args.progress,
        concurrency=args.concurrency,
        retry_failed=not (dataset / "export.json").exists(),
    )
    if not (dataset / "export.json").exists():
        # A small model's sessions nearly all record some failure, and a few sessions may be one or
        # two patients: the loop trains on what there is (QA targets still come only from parsed
        # answers) and goes without a validation split when no patient can be held out.
        export(
            ExportArgs(
                records=[selfplay / RECORDS],
                out=dataset,
                validation_ratio=args.validation_ratio,
                seed=args.context.seed,
                keep_failed=True,
                empty_validation_ok=True,
            )
        )
    if (trained / "metrics.json").exists():
        training = json.loads((trained / "metrics.json").read_text())
    else:
        training = train(
            TrainArgs(
                model=model,
                dataset=dataset,
                out=trained,
                preset=args.preset,
                max_steps=args.max_steps,
                qlora=args.qlora,
                resume=True,
                seed=args.context.seed,
                sft=args.sft,
                lora=args.lora,
            )
        )
    evaluation = evaluate_model(training["merged"], folder / "evaluation.json", args.evaluate) if args.evaluate else {}
    metrics = {
        "iteration": k,
        "model": model,
        "selfplay_model": player,
        **selfplay_metrics(selfplay),
        "items": json.loads((dataset / "export.json").read_text())["items_written"],
        "first_train_loss": training["first_loss"],
        "final_train_loss": training["final_loss"],
        "next_model": training["merged"],
        **evaluation,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def evaluate_model(model: str, results_path: Path, evaluate: Callable[[str], dict[str, float]]) -> dict[str, float]:
    """``evaluate(model)``, kept on disk so that a resumed loop does not score a model twice."""
    if not results_path.exists():
        results_path.write_text(json.dumps(evaluate(model), indent=2), encoding="utf-8")
    return json.loads(results_path.read_text(encoding="utf-8"))


def play_heldout(args: IterateArgs, model: str, folder: Path) -> dict[str, dict]:
    """The held-out patients played by ``model`` in ``folder``, with the loop's settings: session id -> values."""
    return heldout.play_heldout(
        model,
        args.heldout_profiles,
        args.context,
        folder,
        args.heldout_sessions_per_patient,
        format_check=args.format_check,
        concurrency=args.concurrency,
        progress=args.progress,
    )


def iterate(args: IterateArgs) -> dict:
    """Runs the loop; returns its report: each iteration's metrics and, with held-out patients,
    the held-out comparison of the base model and every trained model."""
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.context.model
    played = {BASE: play_heldout(args, model, args.out / "heldout-base")} if args.heldout_profiles else {}
    history = []
    for k in range(args.iterations):
        metrics = run_iteration(args, k, model)
        history.append(metrics)
        model = metrics["next_model"]
        if args.heldout_profiles:
            played[f"iteration {k + 1}"] = play_heldout(args, model, args.out / f"iter-{k}" / "heldout")
    report = {
        "student": args.context.model,
        "selfplay_model": args.teacher or "the student (self-play)",
        "training_patients": sorted({p.id for p in args.profiles}),
        "heldout_patients": sorted({p.id for p in args.heldout_profiles}),
        "iterations": history,
        "heldout": heldout.compare(played, args.context.seed) if played else None,
    }
    write_report(args.out, report)
    return report


def write_report(out: Path, report: dict) -> None:
    """Write ``report.md``, ``report.json`` and a chart per metric over the iterations (and held-out) into ``out``."""
    history = report["iterations"]
    names = [*REPORT_METRICS, *sorted({key for m in history for key in m if key.startswith("qa_")})]
    header = "| iteration | self-play by | " + " | ".join(names) + " |"
    rows = [
        f"| {m['iteration']} | {m['selfplay_model']} | " + " | ".join(str(m.get(name)) for name in names) + " |"
        for m in history
    ]
    lines = [
        "# Self-play iterations",
        "",
        f"Student: `{report['student']}`. Self-play data generated by: {report['selfplay_model']}.",
        "",
        "## Training (in-sample: the sessions each iteration trained on)",
        "",
        header,
        "|" + "---|" * (len(names) + 2),
        *rows,
        "",
    ]
    lines += [f"![{name}]({name}.png)" for name in names]
    if report["heldout"]:
        lines += [
            "",
            heldout.markdown(report["heldout"], title="Held-out patients").replace("# Held-out", "## Held-out", 1),
            f"Held-out patients ({len(report['heldout_patients'])}): {', '.join(report['heldout_patients'])}.",
            "",
            "![held-out](heldout.png)",
        ]
        heldout.plot(report["heldout"], out / "heldout.png")
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    for name in names:
        points = [(m["iteration"], m[name]) for m in history if m.get(name) is not None]
        plot_series({name: points}, out / f"{name}.png", xlabel="iteration", ylabel=name)
