"""Validity of self-play: do sessions yield answers that can be read, and what do they say?

Plays one session on each built-in profile (the CLI's small budget by default) and reports:
- sessions with no recorded failure;
- decoder rounds with every field scored (an inference was read for each encoded field);
- diagnoses inside the vocabulary, and ratings that are integers;
- machine-read answers that parsed, and how many were answered in their schema (JSON);
- diagnosis agreement with the profile's ``presentation`` (mapped to the vocabulary): top-1, in
  either candidate, and the patient's pick. A baseline that training must beat, not a target;
- mean decoder similarity, first round and last.
Proportions carry 95% Wilson intervals. Appends a line to ``benchmarks/results.jsonl`` and prints
a Markdown table.

    python -m mentalarena.benchmarks.validity [--model embedded] [--structured-output auto] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from statistics import mean

from mentalarena.agents.context import Context
from mentalarena.agents.models import describe_model
from mentalarena.agents.profiles import builtin_profiles
from mentalarena.agents.provenance import append_result
from mentalarena.agents.schemas import diagnosis_vocabulary, vocabulary_name
from mentalarena.graphs.cli import SMALL_BUDGET
from mentalarena.graphs.run import run_sessions
from mentalarena.graphs.run_folder import read_records
from mentalarena.training.statistics import proportion

RESULTS = Path(__file__).with_name("results.jsonl")


def validity(records: list[dict]) -> dict:
    """The figures above, from a run's records (failed sessions count against every share they enter)."""
    done = [r for r in records if r.get("status") == "done"]
    rounds = [round_ for r in done for round_ in r["decoder_rounds"]]
    names = {entry["name"] for entry in diagnosis_vocabulary()}
    diagnosed = [r for r in done if r["diagnosis_candidates"]]
    trials = [t for r in done for kind in ("treatment_trials", "medication_trials") for t in r[kind]]
    answers = [a for r in done for a in r.get("answers", [])]
    expected = {r["session_id"]: vocabulary_name(r["presentation"]) for r in done}
    firsts = [r["decoder_rounds"][0] for r in done if r["decoder_rounds"]]
    lasts = [r["decoder_rounds"][-1] for r in done if r["decoder_rounds"]]
    return {
        "sessions": len(records),
        "sessions_without_failure": proportion(sum(not r["failures"] for r in done), len(records)),
        "decoder_rounds_every_field_scored": proportion(
            sum(all(rd["inferred"].get(key) for key in rd["similarities"]) for rd in rounds), len(rounds)
        ),
        "diagnoses_in_vocabulary": proportion(
            sum(all(c in names for c in r["diagnosis_candidates"]) for r in diagnosed), len(done)
        ),
        "ratings_integer": proportion(sum(isinstance(t["score"], int) for t in trials), len(trials)),
        "answers_parsed": proportion(sum(a["parsed"] for a in answers), len(answers)),
        "answers_in_json": proportion(sum(a["json"] for a in answers), len(answers)),
        "mean_attempts_per_answer": round(mean(a["attempts"] for a in answers), 2) if answers else None,
        "diagnosis_top1_agrees": proportion(
            sum(r["diagnosis_candidates"][:1] == [expected[r["session_id"]]] for r in done), len(done)
        ),
        "diagnosis_either_agrees": proportion(
            sum(expected[r["session_id"]] in r["diagnosis_candidates"] for r in done), len(done)
        ),
        "patient_pick_agrees": proportion(sum(r["illness"] == expected[r["session_id"]] for r in done), len(done)),
        "mean_decoder_similarity_first_round": _mean_similarity(firsts),
        "mean_decoder_similarity_last_round": _mean_similarity(lasts),
        "failures_by_node": _count(f["node"] for r in done for f in r["failures"]),
        "failed_sessions": [r.get("error", "") for r in records if r.get("status") != "done"],
    }


def _mean_similarity(rounds: list[dict]) -> float | None:
    values = [s for rd in rounds for s in rd["similarities"].values()]
    return round(mean(values), 3) if values else None


def _count(items: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def markdown(figures: dict) -> str:
    """The validity figures as a two-column Markdown table."""

    def share(key: str) -> str:
        p = figures[key]
        return f"{p['k']}/{p['n']} ({p['share']:.0%}, 95% CI {p['ci_low']:.0%}-{p['ci_high']:.0%})" if p["n"] else "-"

    rows = [
        ("Sessions with no recorded failure", share("sessions_without_failure")),
        ("Decoder rounds with every field scored", share("decoder_rounds_every_field_scored")),
        ("Diagnoses inside the vocabulary", share("diagnoses_in_vocabulary")),
        ("Ratings that are integers 1-10", share("ratings_integer")),
        ("Machine-read answers parsed (answered in JSON)", f"{share('answers_parsed')} ({share('answers_in_json')})"),
        ("Diagnosis agrees with the presentation: top-1", share("diagnosis_top1_agrees")),
        ("... in either candidate", share("diagnosis_either_agrees")),
        ("... the patient's pick", share("patient_pick_agrees")),
        (
            "Mean decoder similarity, first round / last",
            f"{figures['mean_decoder_similarity_first_round']} / {figures['mean_decoder_similarity_last_round']}",
        ),
    ]
    return "| | |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)


def main() -> None:
    """Play one session on each built-in profile, append the validity figures and print them as a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="model spec for every role")
    parser.add_argument(
        "--structured-output", default="auto", help="Context.structured_output: auto, json_schema, json_object or off"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--budget", choices=("small", "full"), default="small", help="the CLI's small budget or the Context defaults"
    )
    parser.add_argument("--out", default="", help="keep the run folder here (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    context = Context(
        model=args.model,
        structured_output=args.structured_output,
        seed=args.seed,
        **(SMALL_BUDGET if args.budget == "small" else {}),
    )
    profiles = builtin_profiles()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.out or scratch)
        started = time.perf_counter()
        run_sessions(profiles, context, folder, len(profiles), progress=True, concurrency=args.concurrency)
        seconds = time.perf_counter() - started
        records = read_records(folder)
    figures = validity(records)
    result = {
        "kind": "validity",
        "model": describe_model(args.model),
        "structured_output": args.structured_output,
        "budget": args.budget,
        "concurrency": args.concurrency,
        "seconds": round(seconds, 1),
        **figures,
    }
    append_result(RESULTS, result)
    print(markdown(figures))
    print(
        f"{len(records)} sessions in {seconds:.0f} s; failures by node: {figures['failures_by_node']}; "
        f"appended to {RESULTS}"
    )


if __name__ == "__main__":
    main()
