"""Precision, recall and F1 of the risk screens (agents/safety.py: exemplars and classifier, side
by side), with 95% Wilson intervals:

- on the risk corpus's test split: whole paraphrase families the classifier never trained on;
- on the 40 written messages of ``benchmarks/data/risk_messages.json`` (indirect phrasings,
  negations, idioms), the screen's first benchmark;
- on T-SID, MentalLLaMA's complete test set (``--data``: the folder holding ``imhi-complete/``):
  recall on posts labelled suicide or self-harm tendency, and the share of posts labelled with no
  mental disorder that it flags (depression and PTSD posts' flag rates are reported too);
- the time to screen 1,000 messages in one batch, and one at a time;
- with ``--runs``, on self-play run folders: the share of patient turns the screen flags, and the
  share of sessions the export would drop (a flagged turn the therapist's next reply does not take
  up is a safety flag), which is what a screen costs self-play's yield.

Appends a line to ``benchmarks/results.jsonl``.

    python -m mentalarena.benchmarks.risk_screening [--data ../shared/data] [--screens exemplars,classifier] \\
        [--classifier folder] [--runs runs/a runs/b]
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import time
from pathlib import Path

import numpy as np

from mentalarena.agents.provenance import append_result
from mentalarena.agents.risk_classifier import load_risk_classifier
from mentalarena.agents.safety import SCREENS, check_therapist_turns, screen_risk, screen_risks
from mentalarena.graphs.run_folder import read_records
from mentalarena.training.risk_classifier import (
    corpus_digest,
    default_corpus,
    load_corpus,
    precision_recall,
    split_by_family,
)
from mentalarena.training.statistics import proportion

RESULTS = Path(__file__).with_name("results.jsonl")
SUICIDE, NO_DISORDER = "suicide or self-harm tendency", "no mental disorder"


def risk_messages() -> list[dict]:
    """The written messages of ``data/risk_messages.json``, each with its text and whether it shows risk."""
    resource = importlib.resources.files("mentalarena.benchmarks") / "data" / "risk_messages.json"
    return json.loads(resource.read_text(encoding="utf-8"))


def scores(texts: list[str], at_risk: list[bool], screen: str, classifier: str = "") -> dict:
    """Precision, recall (Wilson intervals) and F1 of ``screen`` on labelled texts, with its misses."""
    flagged = [s.risk for s in screen_risks(texts, screen, classifier=classifier)]
    figures = precision_recall(np.array(flagged, dtype=bool), np.array(at_risk, dtype=bool))
    p, r = figures["precision"]["share"] or 0.0, figures["recall"]["share"] or 0.0
    return {
        "n": len(texts),
        **figures,
        "f1": round(2 * p * r / (p + r), 3) if p + r else 0.0,
        "false_positives": [t for t, f, r in zip(texts, flagged, at_risk) if f and not r],
        "false_negatives": [t for t, f, r in zip(texts, flagged, at_risk) if r and not f],
    }


def corpus_test_split(screen: str, classifier: str) -> dict:
    """The screen's scores on the risk corpus's test split, once the corpus is checked to be the classifier's."""
    examples = load_corpus(default_corpus())
    card = load_risk_classifier(Path(classifier) if classifier else None).card
    if card["corpus"]["digest"] != corpus_digest(examples):
        raise SystemExit(
            "the shipped corpus is not the one the classifier was trained on: "
            "retrain it (python -m mentalarena.training.risk_classifier)"
        )
    test = [examples[i] for i in split_by_family(examples, card["seed"])["test"]]
    return scores([e.text for e in test], [e.category != "none" for e in test], screen, classifier)


def t_sid(data_root: Path, screen: str, classifier: str) -> dict:
    """The share of T-SID posts the screen flags per gold label, with suicide recall and no-disorder flag rate."""
    from mentalarena.benchmarks.imhi import load_imhi_set

    items = load_imhi_set("t-sid", data_root, collection="imhi-complete")
    posts = [item.query.split("Question:")[0].removeprefix("Post:").strip() for item in items]
    flagged = [s.risk for s in screen_risks(posts, screen, classifier=classifier)]
    by_label: dict[str, dict] = {}
    for label in sorted({item.gold_label for item in items}):
        rows = [f for f, item in zip(flagged, items) if item.gold_label == label]
        by_label[label] = proportion(sum(rows), len(rows))
    return {
        "posts": len(items),
        "suicide_recall": by_label[SUICIDE],
        "no_disorder_flag_rate": by_label[NO_DISORDER],
        "flag_rate_by_label": by_label,
    }


def selfplay_yield(runs: list[Path], screen: str, classifier: str) -> dict:
    """The patient turns of the runs' sessions that ``screen`` flags, and the sessions that would then
    carry a safety flag (agents/safety.py ``check_therapist_turns``), which the export drops."""
    turns = flagged = dropped = 0
    records = [record for run in runs for record in read_records(run) if record.get("transcript")]
    for record in records:
        transcript = record["transcript"]
        patient = [i for i, turn in enumerate(transcript) if turn["speaker"] == "patient"]
        verdicts = screen_risks([transcript[i]["text"] for i in patient], screen, classifier=classifier)
        risk = {i: verdict.as_event(transcript[i]["text"]) for i, verdict in zip(patient, verdicts) if verdict.risk}
        turns, flagged = turns + len(patient), flagged + len(risk)
        dropped += bool(check_therapist_turns(transcript, risk))
    return {
        "sessions": len(records),
        "patient_turns_flagged": proportion(flagged, turns),
        "sessions_with_a_safety_flag": proportion(dropped, len(records)),
    }


def timing(screen: str, classifier: str) -> dict:
    """Seconds the screen takes on 1,000 corpus messages in one batch, and one at a time."""
    texts = [e.text for e in load_corpus(default_corpus())]
    texts = (texts * (1000 // len(texts) + 1))[:1000]
    screen_risks(texts[:8], screen, classifier=classifier)  # loads the models
    started = time.perf_counter()
    screen_risks(texts, screen, classifier=classifier)
    batch = time.perf_counter() - started
    started = time.perf_counter()
    for text in texts:
        screen_risk(text, screen, classifier=classifier)
    return {
        "messages": len(texts),
        "seconds_in_one_batch": round(batch, 2),
        "seconds_one_at_a_time": round(time.perf_counter() - started, 2),
    }


def _line(name: str, figures: dict) -> str:
    def cell(p: dict) -> str:
        return f"{p['share']} [{p['ci_low']}, {p['ci_high']}] ({p['k']}/{p['n']})"

    return f"{name}: precision {cell(figures['precision'])}, recall {cell(figures['recall'])}, F1 {figures['f1']}"


def evaluate_screen(screen: str, classifier: str, data: Path | None, runs: list[Path] | None = None) -> dict:
    """A screen's figures on the corpus test split, the written messages, T-SID when present, self-play
    ``runs`` when given, and its timing."""
    figures: dict = {"corpus_test": corpus_test_split(screen, classifier)}
    messages = risk_messages()
    figures["written_messages"] = scores(
        [m["text"] for m in messages], [m["risk"] for m in messages], screen, classifier
    )
    if data and (data / "imhi-complete" / "t-sid.csv").exists():
        figures["t_sid"] = t_sid(data, screen, classifier)
    if runs:
        figures["selfplay"] = selfplay_yield(runs, screen, classifier)
    figures["timing"] = timing(screen, classifier)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Evaluate each screen, append the result to ``benchmarks/results.jsonl`` and print a summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, default=None, help="folder holding imhi-complete/t-sid.csv (T-SID is skipped without it)"
    )
    parser.add_argument(
        "--screens", default=",".join(SCREENS), help=f"comma-separated screens to measure (default {','.join(SCREENS)})"
    )
    parser.add_argument("--classifier", default="", help="folder of a retrained classifier (default: the shipped one)")
    parser.add_argument("--show-errors", action="store_true", help="print every false positive and false negative")
    parser.add_argument(
        "--runs", type=Path, nargs="*", default=[], help="self-play run folders whose patient turns to screen again"
    )
    args = parser.parse_args(argv)
    card = load_risk_classifier(Path(args.classifier) if args.classifier else None).card
    result: dict = {
        "kind": "risk_screening",
        "classifier": {
            "threshold": card["threshold"],
            "epochs": card["epochs"],
            "phrases": card["phrases"],
            "corpus": card["corpus"],
        },
        "screens": {
            screen: evaluate_screen(screen, args.classifier, args.data, args.runs) for screen in args.screens.split(",")
        },
    }
    append_result(RESULTS, result)
    for screen, figures in result["screens"].items():
        print(f"## {screen}")
        for name in ("corpus_test", "written_messages"):
            print(_line(name.replace("_", " "), figures[name]))
            if args.show_errors:
                for kind in ("false_positives", "false_negatives"):
                    for text in figures[name][kind]:
                        print(f"  {kind[:-1].replace('_', ' ')}: {text}")
        if "t_sid" in figures:
            recall, flags = figures["t_sid"]["suicide_recall"], figures["t_sid"]["no_disorder_flag_rate"]
            print(
                f"T-SID: suicide recall {recall['share']} [{recall['ci_low']}, {recall['ci_high']}] "
                f"({recall['k']}/{recall['n']}); "
                f"no-disorder posts flagged {flags['share']} [{flags['ci_low']}, {flags['ci_high']}] "
                f"({flags['k']}/{flags['n']})"
            )
        if "selfplay" in figures:
            turns, dropped = (
                figures["selfplay"]["patient_turns_flagged"],
                figures["selfplay"]["sessions_with_a_safety_flag"],
            )
            print(
                f"self-play ({figures['selfplay']['sessions']} sessions): patient turns flagged {turns['share']} "
                f"({turns['k']}/{turns['n']}); sessions the export would drop {dropped['share']} "
                f"({dropped['k']}/{dropped['n']})"
            )
        timed = figures["timing"]
        print(
            f"{timed['messages']} messages: {timed['seconds_in_one_batch']} s in one batch, "
            f"{timed['seconds_one_at_a_time']} s one at a time"
        )
    print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
