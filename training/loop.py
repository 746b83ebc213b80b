"""The iterative self-play loop: model k plays, its dialogues are exported, training yields model k+1.

Each iteration has its own folder (``iter-<k>/selfplay``, ``dataset``, ``model``, ``metrics.json``);
every step is skipped when its output is complete, so an interrupted loop resumes where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from mentalarena.agents.profiles import PatientProfile
from mentalarena.graphs.context import Context
from mentalarena.graphs.run import RECORDS, run_sessions
from mentalarena.training.export import ExportArgs, export, last_mean_similarity
from mentalarena.training.finetune import TrainArgs, plot_series, train

REPORT_METRICS = ("mean_treatment_score", "mean_medicine_score", "mean_decoder_similarity", "failures_per_session", "final_train_loss")


@dataclass
class IterateArgs:
    out: Path
    iterations: int
    profiles: list[PatientProfile]
    context: Context
    sessions: int = 4
    preset: str = "cpu-small"
    max_steps: int = -1
    validation_ratio: float = 0.1
    progress: bool = True
    concurrency: int = 1
    train_overrides: dict = field(default_factory=dict)
    eval_tasks: list[str] = field(default_factory=list)  # MCQ sets to score each trained model on (log-likelihood)
    eval_limit: int | None = None


def selfplay_metrics(records_path: Path) -> dict:
    done = [json.loads(line) for line in records_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    finished = [r for r in done if r.get("status") == "done"]

    def mean(values):
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
    folder = args.out / f"iter-{k}"
    selfplay, dataset, trained = folder / "selfplay", folder / "dataset", folder / "model"
    # Failed sessions are retried only while their records can still reach this iteration's dataset.
    run_sessions(args.profiles, replace(args.context, model=model), selfplay, args.sessions, progress=args.progress, concurrency=args.concurrency,
                 retry_failed=not (dataset / "export.json").exists())
    if not (dataset / "export.json").exists():
        # A small model's sessions nearly all record some failure, and a few sessions may be one or
        # two patients: the loop trains on what there is (QA targets still come only from parsed
        # answers) and goes without a validation split when no patient can be held out.
        export(ExportArgs(records=[selfplay / RECORDS], out=dataset, validation_ratio=args.validation_ratio, seed=args.context.seed,
                          keep_failed=True, empty_validation_ok=True))
    if (trained / "metrics.json").exists():
        training = json.loads((trained / "metrics.json").read_text())
    else:
        training = train(TrainArgs(model=model, dataset=dataset, out=trained, preset=args.preset, max_steps=args.max_steps,
                                   resume=True, seed=args.context.seed, overrides=args.train_overrides))
    evaluation = evaluate_model(training["merged"], folder / "qa.json", args) if args.eval_tasks else {}
    metrics = {
        "iteration": k,
        "model": model,
        **selfplay_metrics(selfplay / RECORDS),
        "items": json.loads((dataset / "export.json").read_text())["items_written"],
        "first_train_loss": training["first_loss"],
        "final_train_loss": training["final_loss"],
        "next_model": training["merged"],
        **evaluation,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def evaluate_model(model: str, results_path: Path, args: IterateArgs) -> dict:
    """Accuracy of ``model`` on each MCQ set, as ``qa_<task>`` metrics; kept on disk for resumes."""
    from mentalarena.benchmarks.qa import QAArgs, evaluate_qa

    if not results_path.exists():
        results, _ = evaluate_qa(QAArgs(models=[model], tasks=args.eval_tasks, scorer="loglik", limit=args.eval_limit, progress=False))
        results_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    tasks = json.loads(results_path.read_text())["models"][model]["tasks"]
    return {f"qa_{task}": round(scores["accuracy"], 4) for task, scores in tasks.items()}


def iterate(args: IterateArgs) -> list[dict]:
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.context.model
    history = []
    for k in range(args.iterations):
        metrics = run_iteration(args, k, model)
        history.append(metrics)
        model = metrics["next_model"]
    write_report(args.out, history)
    return history


def write_report(out: Path, history: list[dict]) -> None:
    names = [*REPORT_METRICS, *sorted({key for m in history for key in m if key.startswith("qa_")})]
    header = "| iteration | " + " | ".join(names) + " |"
    rows = [f"| {m['iteration']} | " + " | ".join(str(m.get(name)) for name in names) + " |" for m in history]
    lines = ["# Self-play iterations", "", header, "|" + "---|" * (len(names) + 1), *rows, ""]
    lines += [f"![{name}]({name}.png)" for name in names]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "report.json").write_text(json.dumps(history, indent=2), encoding="utf-8")
    for name in names:
        points = [(m["iteration"], m[name]) for m in history if m.get(name) is not None]
        plot_series({name: points}, out / f"{name}.png", xlabel="iteration", ylabel=name)
