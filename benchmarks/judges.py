"""Counselling judges: MentalGPT's seven metrics scored 1-10 by a judge model, and pairwise comparison.

What is judged: each model's responses to a set of help-seeking messages (the default set is
``benchmarks/data/counselling_questions.json``), or the therapist turns of arena runs
(``records.jsonl``), each with the patient turn it answers. The judge rates one metric per call,
against that metric's rubric (benchmarks/prompts.py). The pairwise judge sees two models'
responses to the same message twice, in both orders; verdicts that change with the order are
counted as position-inconsistent and score as a tie. Judge answers are structured
(:class:`MetricScore`, :class:`PairwiseVerdict`): constrained to their schema where the judge's
backend can be, read leniently where not; what cannot be read is recorded and left out of the
means, never crashed on.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage

from mentalarena.agents.llm import RoleModel, answer_or_record
from mentalarena.agents.models import GenerationSettings, describe_model, load_chat_model
from mentalarena.agents.schemas import MetricScore, PairwiseVerdict
from mentalarena.benchmarks import prompts
from mentalarena.benchmarks.qa import LIMIT_OPTION, MODELS_HELP, QUIET_OPTION, DataError
from mentalarena.graphs.cli import comma_list
from mentalarena.training.export import iter_records

METRICS = prompts.COUNSELLING_METRICS
DEFAULT_QUESTIONS = Path(__file__).resolve().parent / "data" / "counselling_questions.json"


@dataclass(frozen=True)
class Exchange:
    """A message from someone seeking help and the response being judged."""

    id: str
    message: str
    response: str


@dataclass
class JudgeArgs:
    """What `mentalarena eval judge` judges: the judge model, whose responses, and the answer budgets and retries."""

    judge: str = field(metadata={"description": "the judge's model spec, e.g. 'openai:gpt-4o'"})
    models: list[str] = field(
        default_factory=list,
        metadata={"type": comma_list, "description": MODELS_HELP + "; each answers the questions"},
    )
    questions: Path = field(
        default=DEFAULT_QUESTIONS,
        metadata={"description": "JSON list of {id, message} help-seeking messages (default: the 25 shipped ones)"},
    )
    records: list[Path] = field(
        default_factory=list,
        metadata={"nargs": "*", "description": "records.jsonl files of arena runs: judge their therapist turns"},
    )
    pairwise: bool = field(
        default=False,
        metadata={"description": "also compare every pair of --models, asking twice with the order swapped"},
    )
    limit: int | None = field(default=None, metadata=LIMIT_OPTION)
    max_new_tokens: int = field(
        default=160, metadata={"description": "generation budget per answer of the judged models"}
    )
    judge_max_new_tokens: int = field(default=64, metadata={"description": "generation budget per judge answer"})
    parse_retries: int = field(
        default=0, metadata={"description": "re-ask the judge this many times when its answer cannot be parsed"}
    )
    progress: bool = field(default=True, metadata=QUIET_OPTION)


# --- what is judged ---------------------------------------------------------------------------


def load_questions(path: Path) -> list[dict]:
    """A JSON list of {"id", "message"} objects (other keys, such as "topic", are kept)."""
    try:
        questions = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(questions, list) or not questions:
        raise DataError(f"{path}: expected a non-empty JSON list of questions")
    for number, question in enumerate(questions):
        for key in ("id", "message"):
            if not isinstance(question, dict) or not str(question.get(key) or "").strip():
                raise DataError(f"{path}, question {number}: field {key!r} is missing or empty")
    return questions


def record_exchanges(path: Path) -> list[Exchange]:
    """Every therapist turn of the finished sessions in a records.jsonl, with the patient turn before it."""
    exchanges = []
    for _, record in iter_records([Path(path)]):
        if record.get("status") != "done":
            continue
        turns = record.get("transcript") or []
        for index, (before, turn) in enumerate(zip(turns, turns[1:]), start=1):
            if turn.get("speaker") == "therapist" and before.get("speaker") == "patient":
                exchanges.append(
                    Exchange(f"{record['session_id']}#{index}", before.get("text", ""), turn.get("text", ""))
                )
    return exchanges


def answer_questions(spec: str, questions: list[dict], max_new_tokens: int, progress: bool) -> list[Exchange]:
    """The model's response, as a counsellor, to each question's message."""
    from tqdm import tqdm

    model = load_chat_model(spec, GenerationSettings.reproducible(max_new_tokens))
    return [
        Exchange(
            q["id"],
            q["message"],
            model.invoke([SystemMessage(prompts.COUNSELLOR_SYSTEM), HumanMessage(q["message"])]).text.strip(),
        )
        for q in tqdm(questions, desc=f"answer {spec}", disable=not progress)
    ]


# --- metric scores --------------------------------------------------------------------------------


def judge_metric(judge_model: RoleModel, exchange: Exchange, metric: str, attempts: int) -> dict:
    """{"score": 1-10 or None, "reply": the judge's answer, "error": why it did not parse}."""
    title, rubric = METRICS[metric]
    prompt = prompts.JUDGE_METRIC.format(
        message=exchange.message, response=exchange.response, metric=title, rubric=rubric
    )
    reply = answer_or_record(
        judge_model, [SystemMessage(prompts.JUDGE_SYSTEM), HumanMessage(prompt)], MetricScore, attempts
    )
    return {"score": reply.value.score if reply.value else None, "reply": reply.text, "error": reply.error}


def metric_summary(judgements: list[dict]) -> dict:
    """One metric's mean score over the parsed judgements, their number, and the number left unparsed."""
    scores = [j["score"] for j in judgements if j["score"] is not None]
    return {
        "mean": sum(scores) / len(scores) if scores else None,
        "n": len(scores),
        "unparsed": len(judgements) - len(scores),
    }


def score_exchanges(
    judge_model: RoleModel, exchanges: list[Exchange], attempts: int, progress: bool
) -> tuple[dict, list[dict]]:
    """(per-metric summary with an overall mean of the metric means, per-exchange judgements)."""
    from tqdm import tqdm

    rows = [
        {
            "id": e.id,
            "message": e.message,
            "response": e.response,
            **{m: judge_metric(judge_model, e, m, attempts) for m in METRICS},
        }
        for e in tqdm(exchanges, desc="judge", disable=not progress)
    ]
    metrics = {m: metric_summary([row[m] for row in rows]) for m in METRICS}
    means = [s["mean"] for s in metrics.values() if s["mean"] is not None]
    return {
        "metrics": metrics,
        "overall": sum(means) / len(means) if means else None,
        "unparsed": sum(s["unparsed"] for s in metrics.values()),
        "n": len(exchanges),
    }, rows


# --- pairwise -----------------------------------------------------------------------------------


def ask_verdict(judge_model: RoleModel, message: str, first: str, second: str, attempts: int) -> tuple[str | None, str]:
    """(the better response: '1', '2', 'tie', or None when unparsed; the judge's reply) for two shown in order."""
    prompt = prompts.JUDGE_PAIRWISE.format(message=message, first=first, second=second)
    reply = answer_or_record(
        judge_model, [SystemMessage(prompts.JUDGE_SYSTEM), HumanMessage(prompt)], PairwiseVerdict, attempts
    )
    return (reply.value.better if reply.value else None), reply.text


def compare(judge_model: RoleModel, a: Exchange, b: Exchange, attempts: int) -> dict:
    """Ask with a shown first, then with b first; the outcome is 'a', 'b', 'tie', 'inconsistent' or 'unparsed'."""
    in_order, in_order_reply = ask_verdict(judge_model, a.message, a.response, b.response, attempts)
    swapped, swapped_reply = ask_verdict(judge_model, a.message, b.response, a.response, attempts)
    first = {"1": "a", "2": "b", "tie": "tie"}.get(in_order or "")
    second = {"1": "b", "2": "a", "tie": "tie"}.get(swapped or "")
    if first is None or second is None:
        outcome = "unparsed"
    else:
        outcome = first if first == second else "inconsistent"
    return {"id": a.id, "outcome": outcome, "a_first": in_order_reply, "b_first": swapped_reply}


def pairwise_summary(spec_a: str, spec_b: str, comparisons: list[dict]) -> dict:
    """Counts of each outcome of two models' comparisons, and a's win rate with ties as half a win."""
    counts = {
        outcome: sum(c["outcome"] == outcome for c in comparisons)
        for outcome in ("a", "b", "tie", "inconsistent", "unparsed")
    }
    judged = len(comparisons) - counts["unparsed"]
    # An order-dependent verdict says the judge could not tell them apart: half a win each, as a tie.
    win_rate = (counts["a"] + 0.5 * (counts["tie"] + counts["inconsistent"])) / judged if judged else None
    return {
        "a": spec_a,
        "b": spec_b,
        "wins_a": counts["a"],
        "wins_b": counts["b"],
        "ties": counts["tie"],
        "inconsistent": counts["inconsistent"],
        "unparsed": counts["unparsed"],
        "n": len(comparisons),
        "win_rate_a": win_rate,
    }


# --- the whole evaluation -----------------------------------------------------------------------


def judged_sources(args: JudgeArgs) -> dict[str, tuple[str, list[Exchange]]]:
    """source key -> (display name, exchanges): the models' answers, or the runs' therapist turns."""
    if args.pairwise and len(args.models) < 2:
        raise ValueError("pairwise comparison needs two or more --models answering the same questions")
    sources = {}
    if args.models:
        questions = load_questions(args.questions)[: args.limit or None]
        for spec in args.models:
            sources[spec] = (
                describe_model(spec),
                answer_questions(spec, questions, args.max_new_tokens, args.progress),
            )
    for path in args.records:
        sources[str(path)] = (f"therapist turns of {path}", record_exchanges(Path(path))[: args.limit or None])
    if not sources:
        raise ValueError("nothing to judge: give --models (they answer the questions) or --records")
    return sources


def evaluate_judges(args: JudgeArgs) -> tuple[dict, list[dict]]:
    """(results, per-item rows): metric scores per source, and pairwise comparisons when asked for."""
    settings = GenerationSettings.reproducible(args.judge_max_new_tokens)
    judge_model = RoleModel(load_chat_model(args.judge, settings), settings, role="judge")
    attempts = args.parse_retries + 1
    sources = judged_sources(args)
    results: dict[str, Any] = {
        "kind": "judge",
        "judge": describe_model(args.judge),
        "metrics": {m: title for m, (title, _) in METRICS.items()},
        "models": {},
        "pairwise": [],
    }
    rows = []
    for key, (name, exchanges) in sources.items():
        summary, judged = score_exchanges(judge_model, exchanges, attempts, args.progress)
        results["models"][key] = {"name": name, **summary}
        rows += [{"model": key, **row} for row in judged]
    if args.pairwise:
        for spec_a, spec_b in itertools.combinations(args.models, 2):
            comparisons = [compare(judge_model, a, b, attempts) for a, b in zip(sources[spec_a][1], sources[spec_b][1])]
            results["pairwise"].append(pairwise_summary(spec_a, spec_b, comparisons))
            rows += [{"pair": [spec_a, spec_b], **c} for c in comparisons]
    return results, rows
