"""The arena on held-out patients: what a model does with patients no training split ever held.

:func:`split_patients` sets a share of the patients aside, grouped by patient identity, so one
patient's profiles all land on one side. :func:`play_heldout` plays every held-out patient
``sessions_per_patient`` times with a model: once with structured answers constrained (diagnosis,
decoder and ratings are read from them) and, for format adherence, once with constraints off.
Every model plays the same session plan (the same patients, session ids and seed), so
:func:`compare` pairs each model's sessions with the first model's and bootstraps the differences.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import fmean

from mentalarena.agents.context import Context
from mentalarena.agents.profiles import PatientProfile, patient_identity
from mentalarena.agents.schemas import vocabulary_name
from mentalarena.graphs.run import run_sessions
from mentalarena.graphs.run_folder import read_records
from mentalarena.training.export import assign_splits
from mentalarena.training.statistics import bootstrap_mean, paired_difference, proportion

HELDOUT_RATIO = 0.25


@dataclass(frozen=True)
class Metric:
    """One held-out metric: its key, its label in reports, how its interval is drawn, and which way is better."""

    name: str
    label: str
    kind: str  # 'proportion' (Wilson interval) or 'mean' (bootstrap interval)
    higher_is_better: bool


METRICS = (
    Metric("format_adherence", "Answers that parse with constraints off", "proportion", True),
    Metric("diagnosis_top1", "Diagnosis agrees with the presentation: top-1", "proportion", True),
    Metric("diagnosis_either", "... in either candidate", "proportion", True),
    Metric("similarity_first_round", "Decoder similarity, first round", "mean", True),
    Metric("similarity_last_round", "Decoder similarity, last round", "mean", True),
    Metric("redirections", "Redirections needed", "mean", False),
    Metric("treatment_rating", "Best treatment rating (1-10)", "mean", True),
    Metric("medication_rating", "Best medication rating (1-10)", "mean", True),
    Metric("failures", "Failures per session", "mean", False),
    Metric("sessions_failed", "Sessions that failed outright", "proportion", False),
)


class HeldoutError(ValueError):
    """A held-out ratio that leaves no profile to train on, or none held out."""

    pass


def split_patients(
    profiles: list[PatientProfile], ratio: float = HELDOUT_RATIO, seed: int = 0
) -> tuple[list[PatientProfile], list[PatientProfile]]:
    """(training profiles, held-out profiles): ``ratio`` of the patients set aside, each patient whole."""
    identity = {profile.id: patient_identity(profile.to_patient_psi()) for profile in profiles}
    side = assign_splits(set(identity.values()), ratio, seed)
    training = [p for p in profiles if side[identity[p.id]] == "train"]
    heldout = [p for p in profiles if side[identity[p.id]] == "validation"]
    if not heldout or not training:
        raise HeldoutError(
            f"heldout_ratio: {ratio} of {len(set(identity.values()))} patient(s) leaves "
            f"{len(training)} profile(s) to train on and {len(heldout)} held out; both need at least one"
        )
    return training, heldout


def session_values(record: dict, unconstrained: dict | None) -> dict:
    """One session's value of each metric (None where it was not measured); ``unconstrained`` is
    the same session played with constraints off (format adherence comes from it)."""
    values: dict = {"sessions_failed": int(record.get("status") != "done")}
    if unconstrained is not None:
        answers = unconstrained.get("answers", []) if unconstrained.get("status") == "done" else []
        values["format_adherence"] = (sum(bool(a["parsed"]) for a in answers), len(answers))
    expected = vocabulary_name(record.get("presentation", "") or "")
    if values["sessions_failed"]:  # no diagnosis: it agrees with nothing; the session's means are unmeasured
        values["diagnosis_top1"] = values["diagnosis_either"] = 0 if expected else None
        return values
    candidates = record.get("diagnosis_candidates", [])
    values["diagnosis_top1"] = None if expected is None else int(candidates[:1] == [expected])
    values["diagnosis_either"] = None if expected is None else int(expected in candidates)
    rounds = [rd for rd in record.get("decoder_rounds", []) if rd.get("similarities")]
    if rounds:
        values["similarity_first_round"] = fmean(rounds[0]["similarities"].values())
        values["similarity_last_round"] = fmean(rounds[-1]["similarities"].values())
    values["redirections"] = sum(bool(rd.get("redirected")) for rd in record.get("decoder_rounds", []))
    values["treatment_rating"] = record.get("treatment_score")
    values["medication_rating"] = record.get("medicine_score")
    values["failures"] = len(record.get("failures", []))
    return values


def play_heldout(
    model: str,
    profiles: list[PatientProfile],
    context: Context,
    folder: Path,
    sessions_per_patient: int = 1,
    format_check: bool = True,
    concurrency: int = 1,
    progress: bool = False,
) -> dict[str, dict]:
    """Session id -> that session's values (:func:`session_values`). Runs resume: sessions whose
    records are in ``folder`` are not played again."""
    sessions = len(profiles) * sessions_per_patient
    constrained = replace(
        context,
        model=model,
        structured_output="auto" if context.structured_output == "off" else context.structured_output,
    )
    run_sessions(profiles, constrained, folder / "constrained", sessions, progress=progress, concurrency=concurrency)
    free: dict[str, dict] = {}
    if format_check:
        run_sessions(
            profiles,
            replace(context, model=model, structured_output="off"),
            folder / "unconstrained",
            sessions,
            progress=progress,
            concurrency=concurrency,
        )
        free = _records(folder / "unconstrained")
    return {
        sid: session_values(record, free.get(sid) if format_check else None)
        for sid, record in _records(folder / "constrained").items()
    }


def summarize(values: dict[str, dict], seed: int = 0) -> dict:
    """Each metric over the sessions: a proportion with its Wilson interval, or a mean with its bootstrap interval."""
    summary = {}
    for metric in METRICS:
        measured = [v[metric.name] for v in values.values() if v.get(metric.name) is not None]
        if metric.name == "format_adherence":
            summary[metric.name] = (
                proportion(sum(k for k, _ in measured), sum(n for _, n in measured)) if measured else None
            )
        elif metric.kind == "proportion":
            summary[metric.name] = proportion(sum(measured), len(measured)) if measured else None
        else:
            summary[metric.name] = bootstrap_mean(measured, seed)
    return summary


def compare(models: dict[str, dict[str, dict]], seed: int = 0) -> dict:
    """Summaries of each model (label -> session values, the first label the baseline) and each
    later model's paired differences from the baseline, on the sessions both played."""
    labels = list(models)
    base = models[labels[0]]
    report: dict = {
        "baseline": labels[0],
        "models": {label: summarize(values, seed) for label, values in models.items()},
        "differences": {},
    }
    for label in labels[1:]:
        shared = sorted(set(base) & set(models[label]))
        report["differences"][label] = {
            metric.name: paired_difference(
                [(_scalar(base[sid].get(metric.name)), _scalar(models[label][sid].get(metric.name))) for sid in shared],
                seed,
            )
            for metric in METRICS
        }
    return report


def verdict(metric: Metric, difference: dict) -> str:
    """A difference in words: whether it lies outside its interval, and which way is better."""
    if difference["mean"] is None:
        return "not measured on both"
    if not difference["outside_interval"]:
        return "no difference outside the interval"
    higher = difference["mean"] > 0
    return ("higher" if higher else "lower") + (", better" if higher == metric.higher_is_better else ", worse")


def markdown(report: dict, title: str = "Held-out arena evaluation") -> str:
    """The report as Markdown: a table of each metric per model, then each model's differences from the baseline."""
    labels = list(report["models"])
    lines = [
        f"# {title}",
        "",
        f"95% intervals: Wilson for proportions, bootstrap for means. Differences are paired with "
        f"`{report['baseline']}` on the same sessions.",
        "",
        "| metric | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for metric in METRICS:
        lines.append(
            f"| {metric.label} | " + " | ".join(_cell(report["models"][label][metric.name]) for label in labels) + " |"
        )
    for label, differences in report["differences"].items():
        lines += ["", f"**{label} against {report['baseline']}** (difference, 95% interval):", ""]
        for metric in METRICS:
            d = differences[metric.name]
            if d["mean"] is not None:
                lines.append(
                    f"- {metric.label}: {d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]: "
                    f"{verdict(metric, d)}"
                )
            else:
                lines.append(f"- {metric.label}: {verdict(metric, d)}")
    return "\n".join(lines) + "\n"


def write_reports(report: dict, out: Path, title: str = "Held-out arena evaluation") -> Path:
    """``report.json``, ``report.md`` and ``report.png`` (each metric, each model, with its interval) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (out / "report.md").write_text(markdown(report, title), encoding="utf-8")
    plot(report, out / "report.png")
    return out / "report.md"


def plot(report: dict, path: Path) -> None:
    """Save a PNG with one bar chart per metric: each model's value with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(report["models"])
    columns = 5
    fig, axes = plt.subplots(-(-len(METRICS) // columns), columns, figsize=(3.2 * columns, 5.6))
    for ax, metric in zip(axes.flat, METRICS):
        points = [report["models"][label][metric.name] for label in labels]
        centres = [_centre(p) for p in points]
        errors = [
            [c - p["ci_low"] if p and c is not None else 0 for p, c in zip(points, centres)],
            [p["ci_high"] - c if p and c is not None else 0 for p, c in zip(points, centres)],
        ]
        ax.bar(range(len(labels)), [c or 0 for c in centres], yerr=errors, capsize=4, color="#8a7fd8")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(metric.label, fontsize=8)
    for ax in list(axes.flat)[len(METRICS) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _records(folder: Path) -> dict[str, dict]:
    return {record["session_id"]: record for record in read_records(folder)}


def _scalar(value: float | tuple[int, int] | list[int] | None) -> float | None:
    """A session's value as one number (format adherence: its share of answers that parsed)."""
    if isinstance(value, (tuple, list)):
        parsed, answers = value
        return parsed / answers if answers else None
    return value


def _centre(summary: dict | None) -> float | None:
    if summary is None:
        return None
    return summary["share"] if "share" in summary else summary["mean"]


def _cell(summary: dict | None) -> str:
    centre = _centre(summary)
    if centre is None or summary is None:
        return "-"
    count = f"{summary['k']}/{summary['n']}, " if "k" in summary else f"n={summary['n']}, "
    return f"{centre:.3f} [{summary['ci_low']:.3f}, {summary['ci_high']:.3f}] ({count.rstrip(', ')})"
