"""Counselling judges: the question set, metric scores, pairwise order-swapping, arena records, the command."""

import json
import re

import pytest

from mentalarena.agents.schemas import parse_verdict
from mentalarena.benchmarks.judges import (
    DEFAULT_QUESTIONS,
    METRICS,
    JudgeArgs,
    evaluate_judges,
    load_questions,
    record_exchanges,
)
from mentalarena.benchmarks.qa import DataError
from mentalarena.cli import main

WARM = "That sounds really hard, and it makes sense you feel this way. What has helped a little so far?"
COLD = "Just try to think positively."
# The judge's fixed scores for the warm responses, per metric; cold ones get 3 everywhere.
WARM_SCORES = {
    "Active listening": 8,
    "Empathy and validation": 9,
    "Safety and trustworthiness": 7,
    "Open-mindedness and non-judgment": 8,
    "Clarity and encouragement": 6,
    "Boundaries and ethics": 7,
    "Holistic approach": 5,
}


def metric_judge(messages) -> str:
    prompt = messages[-1].content
    title = re.search(r"one criterion only: (.+?)\.\n", prompt).group(1)
    if title == "Holistic approach" and COLD in prompt:
        return "I cannot rate this."  # unparseable: recorded, left out of the mean
    return f"Score: {WARM_SCORES[title] if WARM in prompt else 3}/10. It is what it is."


def pairwise_judge(prefer_warm: bool):
    def respond(messages) -> str:
        prompt = messages[-1].content
        if "Which response is better" not in prompt:
            return metric_judge(messages)
        if not prefer_warm:
            return "Better: 1, the first one reads better."  # position bias: always the first shown
        first = prompt.split("Response 1:")[1].split("Response 2:")[0]
        return "Better: 1" if WARM in first else "Response 2 is better."

    return respond


def test_the_shipped_question_set():
    questions = load_questions(DEFAULT_QUESTIONS)
    assert len(questions) >= 20
    assert len({q["id"] for q in questions}) == len(questions)
    assert all(len(q["message"].split()) >= 25 and q["topic"] for q in questions)


def test_a_malformed_question_file_is_a_clear_error(tmp_path):
    path = tmp_path / "q.json"
    path.write_text('[{"id": "a", "message": "Help me."}, {"id": "b"}]')
    with pytest.raises(DataError, match=r"question 1: field 'message' is missing"):
        load_questions(path)
    path.write_text('[{"id": "a",\n "message": }]')
    with pytest.raises(DataError, match=r"q\.json, line 2: not valid JSON"):
        load_questions(path)


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Better: 2", "2"),
        ("**Better:** tie", "tie"),
        ("Response 1 is better because it validates.", "1"),
        ("The second one is more empathetic.", "2"),
        ("They are equally good.", "tie"),
        ("better: Response 2", "2"),
    ],
)
def test_verdicts_are_read_leniently(reply, expected):
    assert parse_verdict(reply) == expected


def test_a_scripted_judge_gives_exactly_the_known_scores(scripted, tmp_path):
    warm, _ = scripted(lambda messages: WARM)
    cold, _ = scripted(lambda messages: COLD)
    judge, judge_model = scripted(metric_judge)
    results, rows = evaluate_judges(JudgeArgs(judge=judge, models=[warm, cold], limit=3, progress=False))
    warm_result, cold_result = results["models"][warm], results["models"][cold]
    assert {METRICS[m][0]: s["mean"] for m, s in warm_result["metrics"].items()} == WARM_SCORES
    assert warm_result["overall"] == pytest.approx(50 / 7) and warm_result["unparsed"] == 0 and warm_result["n"] == 3
    assert cold_result["metrics"]["active_listening"] == {"mean": 3.0, "n": 3, "unparsed": 0}
    assert cold_result["metrics"]["holistic_approach"] == {"mean": None, "n": 0, "unparsed": 3}
    assert cold_result["overall"] == 3.0 and cold_result["unparsed"] == 3
    failed = [row["holistic_approach"] for row in rows if row["model"] == cold]
    assert all(f["score"] is None and f["reply"] == "I cannot rate this." and f["error"] for f in failed)
    assert len(judge_model.calls) == 2 * 3 * 7  # one call per response and metric, no retries by default
    assert "1-2: ignores or misreads the message" in judge_model.calls[0][-1].content


@pytest.mark.parametrize(
    "prefer_warm, expected",
    [
        (True, {"wins_a": 3, "wins_b": 0, "ties": 0, "inconsistent": 0, "unparsed": 0, "win_rate_a": 1.0}),
        (False, {"wins_a": 0, "wins_b": 0, "ties": 0, "inconsistent": 3, "unparsed": 0, "win_rate_a": 0.5}),
    ],
)
def test_pairwise_asks_twice_with_the_order_swapped(scripted, prefer_warm, expected):
    warm, _ = scripted(lambda messages: WARM)
    cold, _ = scripted(lambda messages: COLD)
    judge, _ = scripted(pairwise_judge(prefer_warm))
    results, rows = evaluate_judges(JudgeArgs(judge=judge, models=[warm, cold], limit=3, pairwise=True, progress=False))
    (pair,) = results["pairwise"]
    assert {key: pair[key] for key in expected} == expected and (pair["a"], pair["b"], pair["n"]) == (warm, cold, 3)
    comparison = next(row for row in rows if "pair" in row)
    assert comparison["a_first"] != comparison["b_first"] or not prefer_warm


def test_an_unparseable_verdict_is_recorded_not_crashed_on(scripted):
    warm, _ = scripted(lambda messages: WARM)
    cold, _ = scripted(lambda messages: COLD)
    judge, _ = scripted(
        lambda messages: (
            "Better: 1"
            if "Response 1:\n" + WARM in messages[-1].content
            else "Hmm."
            if "Which response" in messages[-1].content
            else "Score: 5"
        )
    )
    results, _ = evaluate_judges(JudgeArgs(judge=judge, models=[warm, cold], limit=2, pairwise=True, progress=False))
    assert results["pairwise"][0]["unparsed"] == 2 and results["pairwise"][0]["win_rate_a"] is None


def test_pairwise_needs_two_models(scripted):
    judge, _ = scripted(metric_judge)
    with pytest.raises(ValueError, match="two or more --models"):
        evaluate_judges(JudgeArgs(judge=judge, models=[judge], pairwise=True, progress=False))


def test_therapist_turns_of_arena_records_are_judged(scripted, tmp_path):
    transcript = [
        {"speaker": "patient", "phase": "inquiry", "text": "I can't sleep."},
        {"speaker": "therapist", "phase": "inquiry", "text": WARM},
        {"speaker": "patient", "phase": "inquiry", "text": "Nothing helps."},
        {"speaker": "therapist", "phase": "inquiry", "text": COLD},
        {"speaker": "therapist", "phase": "diagnosis", "text": "Summary: ..."},
    ]  # answers no patient turn
    records = tmp_path / "records.jsonl"
    records.write_text(
        json.dumps({"status": "done", "session_id": "s1", "transcript": transcript})
        + "\n"
        + json.dumps({"status": "failed", "session_id": "s2", "error": "boom"})
        + "\n\n"
    )
    exchanges = record_exchanges(records)
    assert [(e.id, e.message, e.response) for e in exchanges] == [
        ("s1#1", "I can't sleep.", WARM),
        ("s1#3", "Nothing helps.", COLD),
    ]
    judge, _ = scripted(metric_judge)
    results, _ = evaluate_judges(JudgeArgs(judge=judge, records=[records], progress=False))
    assert results["models"][str(records)]["metrics"]["empathy_validation"]["mean"] == (9 + 3) / 2
    records.write_text(records.read_text() + '{"status": "done"\n')
    with pytest.raises(ValueError, match=r"records\.jsonl: line 4: not valid JSON"):
        record_exchanges(records)


def test_the_judge_command_writes_its_report(scripted, tmp_path, capsys):
    warm, _ = scripted(lambda messages: WARM)
    cold, _ = scripted(lambda messages: COLD)
    judge, _ = scripted(pairwise_judge(True))
    out = tmp_path / "r"
    assert (
        main(
            [
                "eval",
                "judge",
                "--judge",
                judge,
                "--models",
                f"{warm},{cold}",
                "--limit",
                "2",
                "--pairwise",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert f"{warm}: mean judge score 7.14 over 2 responses, 0 unparsed judge answers" in printed
    assert f"{warm} vs {cold}: 2-0, 0 ties, 0 position-inconsistent, 0 unparsed" in printed
    markdown = (out / "judge.md").read_text()
    assert f"| {warm} | 8.00 | 9.00 | 7.00 | 8.00 | 6.00 | 7.00 | 5.00 | 7.14 | 2 | 0 |" in markdown
    assert f"| {warm} | {cold} | 2 | 0 | 0 | 0 | 0 | 100.0 |" in markdown
    assert (out / "judge_scores.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["eval", "judge", "--judge", judge, "--out", str(out)]) == 2  # nothing to judge
