"""Graph logic with a scripted chat model: no network, real sentence embeddings."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from conftest import WRONG_INFERENCE, exact_inference
from mentalarena.agents import prompts
from mentalarena.agents.context import Context
from mentalarena.agents.scripted import RoleScript
from mentalarena.graphs.arena import build_arena_graph

PROFILE = "builtin-01"


def run(spec, **settings):
    graph = build_arena_graph().compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    context = Context(model=spec, inquiry_turns=2, **settings)
    return graph.invoke({"profile_id": PROFILE}, config, context=context)["record"]


def question_calls(model):
    """The therapist's question turns (not its labelled-format tasks)."""
    return [
        call
        for call in model.calls
        if call[0].content.startswith("You are a psychiatrist") and prompts.ANSWER_FIELDS not in call[-1].content
    ]


def test_deviation_goes_back_to_the_therapist_with_the_feedback_in_its_prompt(scripted):
    spec, model = scripted(RoleScript(inferences=[WRONG_INFERENCE, exact_inference(PROFILE)]))
    record = run(spec, max_redirections=2)

    first, second = record["decoder_rounds"]
    assert first["redirected"] and first["deviations"]
    assert "coping strategies" in first["feedback"]
    assert not second["deviations"] and not second["redirected"]
    questions = question_calls(model)
    assert len(questions) == 3  # two inquiry questions, one follow-up after the redirection
    assert "Supervisor feedback" not in questions[1][-1].content
    assert first["feedback"] in questions[2][-1].content
    phases = [turn["phase"] for turn in record["transcript"]]
    assert phases.count("followup") == 2  # the follow-up question and its answer
    assert record["illness"]


def test_no_deviation_goes_straight_on_to_diagnosis(scripted):
    spec, model = scripted(RoleScript(inferences=[exact_inference(PROFILE)]))
    record = run(spec)

    assert len(record["decoder_rounds"]) == 1
    assert record["decoder_rounds"][0]["deviations"] == []
    assert all(sim > 0.99 for sim in record["decoder_rounds"][0]["similarities"].values())
    assert "followup" not in {turn["phase"] for turn in record["transcript"]}
    assert not any("Supervisor feedback" in call[-1].content for call in question_calls(model))
    assert record["diagnosis_candidates"] == ["Major depressive disorder", "Adjustment disorder"]
    assert record["symptom_summary"] == "Low mood and withdrawal for months."
    assert record["illness"] == "Adjustment disorder"  # the patient picked the second


@pytest.mark.parametrize("bound", [0, 2])
def test_the_bound_on_redirections_holds(scripted, bound):
    spec, _ = scripted(RoleScript(inferences=[WRONG_INFERENCE]))
    record = run(spec, max_redirections=bound)

    rounds = record["decoder_rounds"]
    assert len(rounds) == bound + 1
    assert [r["redirected"] for r in rounds] == [True] * bound + [False]
    assert all(r["deviations"] for r in rounds)
    assert sum(1 for t in record["transcript"] if t["phase"] == "followup" and t["speaker"] == "therapist") == bound


def test_try_and_reflect_stops_at_the_target_score_and_keeps_the_best(scripted):
    spec, _ = scripted(
        RoleScript(inferences=[exact_inference(PROFILE)], treatment_scores=[3, 9, 5], medication_scores=[6, 8])
    )
    record = run(spec, treatment_tries=3, medication_tries=3, target_score=8)

    assert [t["score"] for t in record["treatment_trials"]] == [3, 9]
    assert record["treatment_score"] == 9
    assert record["treatment"] == record["treatment_trials"][1]["proposal"]
    assert [t["score"] for t in record["medication_trials"]] == [6, 8]
    assert record["medicine_score"] == 8


def test_try_and_reflect_stops_at_the_bound_and_keeps_the_best(scripted):
    spec, model = scripted(
        RoleScript(inferences=[exact_inference(PROFILE)], treatment_scores=[3, 5, 4], medication_scores=[2])
    )
    record = run(spec, treatment_tries=3, medication_tries=2, target_score=8)

    assert [t["score"] for t in record["treatment_trials"]] == [3, 5, 4]
    assert record["treatment"] == record["treatment_trials"][1]["proposal"]
    assert record["treatment_score"] == 5
    assert len(record["medication_trials"]) == 2
    # Each new proposal is asked to differ from what was tried, with the patient's ratings.
    third = [c for c in model.calls if "Propose one treatment" in c[-1].content][2][-1].content
    assert "Already tried" in third and "(3/10)" in third and "(5/10)" in third


def test_an_unparseable_rating_is_recorded_as_a_failure_not_a_crash(scripted):
    spec, _ = scripted(RoleScript(inferences=[exact_inference(PROFILE)], rating_reply="I honestly cannot say."))
    record = run(spec, treatment_tries=2, medication_tries=1, parse_retries=1)

    assert [t["score"] for t in record["treatment_trials"]] == [None, None]
    reasons = [f for f in record["failures"] if f["node"] == "rate_treatment"]
    assert len(reasons) == 2 and "unparsed" in reasons[0]["reason"]
    assert record["treatment"]  # the session still ends with a treatment


def test_each_role_sees_its_own_turns_as_the_assistant(scripted):
    spec, model = scripted(RoleScript(inferences=[exact_inference(PROFILE)]))
    run(spec)
    patient_call = next(
        c
        for c in reversed(model.calls)
        if c[0].content.startswith("Imagine you are") and "fits you better" in c[-1].content
    )
    therapist_call = question_calls(model)[-1]
    assert [m.type for m in patient_call[1:4]] == ["human", "ai", "human"]  # opening, own answer, therapist
    assert patient_call[2].content.startswith("I have been feeling low")
    assert therapist_call[1].type == "human" and therapist_call[1].content.startswith("I have been feeling low")
    # its first question's instruction, as that turn's prompt gave it, then the question itself
    assert therapist_call[2].type == "human" and therapist_call[2].content.startswith("Focus of your next question")
    assert therapist_call[3].type == "ai"


def test_each_therapist_prompt_extends_its_previous_prompt_and_reply(scripted):
    """What lets a local model's prefix cache prefill only the new turns of a therapist prompt."""
    spec, model = scripted(RoleScript(inferences=[WRONG_INFERENCE, exact_inference(PROFILE)]))
    record = run(spec, max_redirections=1)
    questions = question_calls(model)
    replies = [
        t["text"] for t in record["transcript"] if t["speaker"] == "therapist" and t["phase"] in ("inquiry", "followup")
    ]
    assert len(questions) == len(replies) == 3 and "Supervisor feedback" in questions[2][-1].content
    for earlier, later, reply in zip(questions, questions[1:], replies):
        assert [(m.type, m.content) for m in later[: len(earlier)]] == [(m.type, m.content) for m in earlier]
        assert (later[len(earlier)].type, later[len(earlier)].content) == ("ai", reply)
    # the decoder's inference prompt goes on from the last question's too
    inference = next(c for c in reversed(model.calls) if "state what you have inferred" in c[-1].content)
    assert [m.content for m in inference[: len(questions[-1])]] == [m.content for m in questions[-1]]


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="Context.inquiry_turns"):
        Context(inquiry_turns=0)
    with pytest.raises(ValueError, match="Context.similarity_threshold"):
        Context(similarity_threshold=1.5)
    with pytest.raises(ValueError, match="Context.local_dtype: 'float16' is not one of auto, bfloat16, float32"):
        Context(local_dtype="float16")


def test_a_diagnosis_outside_its_schema_is_not_kept_and_the_failure_recorded(scripted):
    """The model's words are never passed off as a diagnosis (they would become a training target)."""
    script = RoleScript(inferences=[exact_inference(PROFILE)])

    def respond(messages):
        if "two most likely diagnoses" in messages[-1].content:
            return "It sounds like depression with poor sleep. Let us talk more."
        return script(messages)

    spec, model = scripted(respond)
    record = run(spec, parse_retries=1)
    assert record["illness"] == "" and record["diagnosis_candidates"] == [] and record["symptom_summary"] == ""
    assert [f["node"] for f in record["failures"]] == ["diagnosis"]
    diagnosis = next(a for a in record["answers"] if a["node"] == "diagnosis")
    assert diagnosis == {
        "node": "diagnosis",
        "schema": "Diagnosis",
        "constrained": True,
        "json": False,
        "parsed": False,
        "attempts": 2,
    }
    assert record["treatment"]  # the session goes on, proposing without a settled diagnosis
    assert "not yet settled" in next(c for c in model.calls if "Propose one treatment" in c[-1].content)[-1].content


@pytest.mark.parametrize("structured_output, constrained", [("auto", True), ("off", False)])
def test_every_machine_read_answer_is_asked_in_its_schema_and_logged(scripted, structured_output, constrained):
    """With structured output the scripted model answers in JSON; off, in the labelled lines that
    the tolerant parser reads. Either way every answer parses."""
    spec, _ = scripted(RoleScript(inferences=[exact_inference(PROFILE)], treatment_scores=[9], medication_scores=[9]))
    record = run(spec, structured_output=structured_output)
    assert [a["node"] for a in record["answers"]] == [
        "symptom_encoder",
        "symptom_decoder",
        "diagnosis",
        "patient_diagnosis_review",
        "propose_treatment",
        "rate_treatment",
        "propose_medication",
        "rate_medication",
    ]
    assert all(
        a["parsed"] and a["constrained"] is a["json"] is constrained and a["attempts"] == 1 for a in record["answers"]
    )
    assert record["failures"] == []
    diagnosis_turn = next(
        t["text"] for t in record["transcript"] if t["phase"] == "diagnosis" and t["speaker"] == "therapist"
    )
    assert diagnosis_turn.startswith("{") is constrained
    assert record["diagnosis_candidates"] == ["Major depressive disorder", "Adjustment disorder"]
    assert record["treatment_score"] == 9
