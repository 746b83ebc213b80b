"""Evaluation reports: ``<kind>.json`` (results), ``<kind>_items.jsonl`` (what each model answered),
``<kind>.md`` (Markdown tables) and PNG bar charts comparing the models, in one results folder.
"""

from __future__ import annotations

import json
from pathlib import Path


def percent(value: float | None) -> str:
    """A share as a percentage with one decimal, or '-' for None."""
    return "-" if value is None else f"{100 * value:.1f}"


def interval(summary: dict) -> str:
    """A summary's confidence interval as '[low, high]' in percent."""
    return f"[{percent(summary['ci_low'])}, {percent(summary['ci_high'])}]"


def number(value: float | None) -> str:
    """A number with two decimals, or '-' for None."""
    return "-" if value is None else f"{value:.2f}"


def table(header: list[str], rows: list[list]) -> list[str]:
    """The lines of a Markdown table with this header and these rows."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(c) for c in row) + " |" for row in rows),
    ]


def bar_chart(
    values: dict[str, dict[str, float | None]],
    path: Path,
    ylabel: str,
    intervals: dict[str, dict[str, tuple[float, float]]] | None = None,
    ymax: float | None = None,
) -> None:
    """Grouped bars: one group per key of the inner dicts (task, set, metric), one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(group for per_model in values.values() for group in per_model))
    width = 0.8 / max(len(values), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) * max(len(values), 1) ** 0.5 + 2), 4))
    for index, (model, per_model) in enumerate(values.items()):
        xs = [g + (index - (len(values) - 1) / 2) * width for g in range(len(groups))]
        heights = [per_model.get(group) or 0.0 for group in groups]
        errors = None
        if intervals:
            bounds = [intervals[model].get(group, (h, h)) for group, h in zip(groups, heights)]
            errors = [
                [h - low for h, (low, _) in zip(heights, bounds)],
                [high - h for h, (_, high) in zip(heights, bounds)],
            ]
        ax.bar(xs, heights, width=width, yerr=errors, capsize=3, label=model)
    ax.set_xticks(
        range(len(groups)), groups, rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center"
    )
    ax.set_ylabel(ylabel)
    if ymax is not None:
        ax.set_ylim(0, ymax)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def model_label(key: str) -> str:
    """A short legend label: the spec, or the folder name for a path."""
    return Path(key).name if "/" in key else key


def qa_markdown(results: dict) -> list[str]:
    """The lines of the QA report: accuracy per model and task, then per subject."""
    rows, subject_rows = [], []
    for key, model in results["models"].items():
        for task, s in model["tasks"].items():
            rows.append([key, task, percent(s["accuracy"]), interval(s), s["n"], s["unparsed"], s["seconds"]])
            subject_rows += [
                [key, task, subject, percent(t["accuracy"]), interval(t), t["n"]]
                for subject, t in s["subjects"].items()
            ]
    return [
        f"# Multiple-choice QA ({results['scorer']} scorer, {results['source']} data)",
        "",
        "Accuracy in %, with its 95% Wilson interval.",
        "",
        *table(["model", "task", "accuracy", "95% CI", "n", "unparsed", "seconds"], rows),
        "",
        "## Per subject",
        "",
        *table(["model", "task", "subject", "accuracy", "95% CI", "n"], subject_rows),
        "",
        "![accuracy](qa_accuracy.png)",
    ]


def qa_charts(results: dict, out: Path) -> None:
    """Write ``qa_accuracy.png``: accuracy per task and model, with intervals."""
    models = {model_label(k): m["tasks"] for k, m in results["models"].items()}
    bar_chart(
        {m: {t: s["accuracy"] for t, s in tasks.items()} for m, tasks in models.items()},
        out / "qa_accuracy.png",
        "accuracy",
        intervals={m: {t: (s["ci_low"], s["ci_high"]) for t, s in tasks.items()} for m, tasks in models.items()},
        ymax=1.0,
    )


def imhi_markdown(results: dict) -> list[str]:
    """The lines of the IMHI report: weighted F1 and accuracy per model and set."""
    rows = [
        [key, name, percent(s["weighted_f1"]), percent(s["accuracy"]), interval(s), s["n"], s["unparsed"]]
        for key, model in results["models"].items()
        for name, s in model["sets"].items()
    ]
    return [
        "# IMHI (MentalLLaMA expert test sets)",
        "",
        "Weighted F1 and accuracy in %; accuracy with its 95% Wilson interval.",
        "",
        *table(["model", "set", "weighted F1", "accuracy", "95% CI", "n", "unparsed"], rows),
        "",
        "![weighted F1](imhi_weighted_f1.png)",
        "",
        "![accuracy](imhi_accuracy.png)",
    ]


def imhi_charts(results: dict, out: Path) -> None:
    """Write ``imhi_weighted_f1.png`` and ``imhi_accuracy.png``: per set and model."""
    models = {model_label(k): m["sets"] for k, m in results["models"].items()}
    bar_chart(
        {m: {n: s["weighted_f1"] for n, s in sets.items()} for m, sets in models.items()},
        out / "imhi_weighted_f1.png",
        "weighted F1",
        ymax=1.0,
    )
    bar_chart(
        {m: {n: s["accuracy"] for n, s in sets.items()} for m, sets in models.items()},
        out / "imhi_accuracy.png",
        "accuracy",
        intervals={m: {n: (s["ci_low"], s["ci_high"]) for n, s in sets.items()} for m, sets in models.items()},
        ymax=1.0,
    )


def judge_markdown(results: dict) -> list[str]:
    """The lines of the judge report: mean score per model and metric, and the pairwise table if any."""
    metrics = results["metrics"]
    rows = [
        [key, *(number(m["metrics"][name]["mean"]) for name in metrics), number(m["overall"]), m["n"], m["unparsed"]]
        for key, m in results["models"].items()
    ]
    lines = [
        f"# Counselling judges (judge: {results['judge']})",
        "",
        "Mean score (1-10) per metric over the judged responses; unparsed judge answers are left out of the means.",
        "",
        *table(["model", *metrics.values(), "mean", "responses", "unparsed"], rows),
        "",
        "![scores](judge_scores.png)",
    ]
    if results["pairwise"]:
        pairs = [
            [
                p["a"],
                p["b"],
                p["wins_a"],
                p["wins_b"],
                p["ties"],
                p["inconsistent"],
                p["unparsed"],
                percent(p["win_rate_a"]),
            ]
            for p in results["pairwise"]
        ]
        lines += [
            "",
            "## Pairwise (each pair judged twice, order swapped)",
            "",
            "An inconsistent verdict changed with the order of the responses; it counts as a tie in the win rate.",
            "",
            *table(
                ["model a", "model b", "a wins", "b wins", "ties", "inconsistent", "unparsed", "a's win rate %"], pairs
            ),
        ]
    return lines


def judge_charts(results: dict, out: Path) -> None:
    """Write ``judge_scores.png``: mean score per metric and model."""
    titles = results["metrics"]
    bar_chart(
        {
            model_label(k): {titles[name]: s["mean"] for name, s in m["metrics"].items()}
            for k, m in results["models"].items()
        },
        out / "judge_scores.png",
        "mean score (1-10)",
        ymax=10.0,
    )


WRITERS = {
    "qa": (qa_markdown, qa_charts),
    "imhi": (imhi_markdown, imhi_charts),
    "judge": (judge_markdown, judge_charts),
}


def write_report(out: Path, results: dict, rows: list[dict]) -> Path:
    """Write every file of one evaluation into ``out``; returns the Markdown report's path."""
    kind = results["kind"]
    markdown, charts = WRITERS[kind]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{kind}.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    with open(out / f"{kind}_items.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    report = out / f"{kind}.md"
    report.write_text("\n".join(markdown(results)) + "\n", encoding="utf-8")
    charts(results, out)
    return report
