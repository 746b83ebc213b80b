"""Precision and recall of the risk screen on a labelled message set written for it.

The messages (benchmarks/data/risk_messages.json) are distinct from the screen's exemplars and
include indirect phrasings, negations ("I would never hurt myself") and idioms ("this exam is
killing me"). Run: python -m mentalarena.benchmarks.risk_screening [--threshold 0.6 --margin 0.05]
"""

from __future__ import annotations

import argparse
import importlib.resources
import json

from mentalarena.agents.safety import screen_risk


def risk_messages() -> list[dict]:
    resource = importlib.resources.files("mentalarena.benchmarks") / "data" / "risk_messages.json"
    return json.loads(resource.read_text(encoding="utf-8"))


def evaluate(threshold: float, margin: float) -> dict:
    rows = [(m, screen_risk(m["text"], threshold=threshold, margin=margin)) for m in risk_messages()]
    tp = sum(m["risk"] and s.risk for m, s in rows)
    fp = sum(not m["risk"] and s.risk for m, s in rows)
    fn = sum(m["risk"] and not s.risk for m, s in rows)
    return {
        "messages": len(rows), "precision": round(tp / (tp + fp), 3) if tp + fp else None, "recall": round(tp / (tp + fn), 3) if tp + fn else None,
        "false_positives": [m["text"] for m, s in rows if not m["risk"] and s.risk],
        "false_negatives": [m["text"] for m, s in rows if m["risk"] and not s.risk],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threshold", type=float, default=0.6)
    parser.add_argument("--margin", type=float, default=0.05)
    args = parser.parse_args()
    result = evaluate(args.threshold, args.margin)
    print(f"{result['messages']} messages: precision {result['precision']}, recall {result['recall']} "
          f"(threshold {args.threshold}, margin {args.margin})")
    for kind in ("false_positives", "false_negatives"):
        for text in result[kind]:
            print(f"  {kind[:-1].replace('_', ' ')}: {text}")


if __name__ == "__main__":
    main()
