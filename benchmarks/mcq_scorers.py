"""Log-likelihood scoring vs generate-and-parse, on the same multiple-choice items, in one run.

Per task: accuracy of each scorer (and how many generated answers could not be parsed), the
seconds each took, and the time ratio generate / loglik. Models are loaded and warmed up before
the clock starts, so the times are scoring only. Run:

    python -m mentalarena.benchmarks.mcq_scorers [--model embedded] [--tasks medqa,...] [--limit N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mentalarena.benchmarks.qa import TASKS, MCQItem, QAArgs, accuracy_summary, load_items, predict


def timed_scores(items: list[MCQItem], spec: str, args: QAArgs) -> tuple[dict, float]:
    """(accuracy summary, seconds) of scoring ``items`` with the model ``spec`` and the scorer in ``args``."""
    started = time.perf_counter()
    predictions = predict(items, spec, args)
    return accuracy_summary(predictions), time.perf_counter() - started


def main() -> None:
    """Score each task with loglik and with generate, and print accuracy and seconds of both, per task and overall."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="a local model: 'embedded' or a Hugging Face folder")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--data", default=None, help="folder holding <task>/*.jsonl; without it, the hub's sets")
    parser.add_argument("--limit", type=int, default=None, help="first N items of each task")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    options = parser.parse_args()
    base = QAArgs(
        models=[options.model],
        tasks=options.tasks.split(","),
        data_root=Path(options.data) if options.data else None,
        limit=options.limit,
        max_new_tokens=options.max_new_tokens,
        batch_size=options.batch_size,
        progress=False,
    )
    items = load_items(base)
    for scorer in ("loglik", "generate"):  # load the model and warm up its first pass outside the clock
        base.scorer = scorer
        predict(next(iter(items.values()))[:1], options.model, base)

    print(
        f"model {options.model}; generate: max {options.max_new_tokens} new tokens; loglik: batch {options.batch_size}"
    )
    print(
        f"{'task':<9} {'n':>4} {'loglik acc':>10} {'generate acc':>12} {'unparsed':>8} "
        f"{'loglik s':>9} {'generate s':>10} {'time ratio gen/loglik':>22}"
    )
    totals = {"loglik": [0, 0.0], "generate": [0, 0.0]}
    for task, task_items in items.items():
        results = {}
        for scorer in ("loglik", "generate"):
            base.scorer = scorer
            results[scorer] = timed_scores(task_items, options.model, base)
            totals[scorer][0] += results[scorer][0]["correct"]
            totals[scorer][1] += results[scorer][1]
        (loglik, loglik_s), (generate, generate_s) = results["loglik"], results["generate"]
        print(
            f"{task:<9} {len(task_items):>4} {loglik['accuracy']:>10.3f} "
            f"{generate['accuracy']:>12.3f} {generate['unparsed']:>8} "
            f"{loglik_s:>9.1f} {generate_s:>10.1f} {generate_s / loglik_s:>21.1f}x"
        )
    n = sum(len(task_items) for task_items in items.values())
    print(
        f"{'all':<9} {n:>4} {totals['loglik'][0] / n:>10.3f} {totals['generate'][0] / n:>12.3f} {'':>8} "
        f"{totals['loglik'][1]:>9.1f} {totals['generate'][1]:>10.1f} "
        f"{totals['generate'][1] / totals['loglik'][1]:>21.1f}x"
    )


if __name__ == "__main__":
    main()
