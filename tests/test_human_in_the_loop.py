"""A person in either role, a person reviewing the decoder's feedback, and streaming."""

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from conftest import WRONG_INFERENCE, exact_inference
from mentalarena.agents.context import Context
from mentalarena.agents.scripted import RoleScript
from mentalarena.graphs.arena import build_arena_graph

PERSON_AS_PATIENT = {
    "turn": "I can't sleep and I avoid my friends.",
    "diagnosis_review": "1",
    "treatment_rating": "Score: 7",
    "medication_rating": "maybe 6/10",
}


def drive(graph, config, context, answer):
    """Run to the end, answering every interrupt with answer(payload); returns (payloads, final state)."""
    payloads = []
    result = graph.invoke({"profile_id": "builtin-01"}, config, context=context)
    while "__interrupt__" in result:
        payload = result["__interrupt__"][0].value
        payloads.append(payload)
        result = graph.invoke(Command(resume=answer(payload)), config, context=context)
    return payloads, result


def test_a_person_plays_the_patient(scripted):
    spec, model = scripted(RoleScript(inferences=[exact_inference("builtin-01")]))
    graph = build_arena_graph().compile(checkpointer=InMemorySaver())
    context = Context(model=spec, human_role="patient", inquiry_turns=2, treatment_tries=1, medication_tries=1)
    payloads, result = drive(
        graph, {"configurable": {"thread_id": "p"}}, context, lambda p: PERSON_AS_PATIENT[p["kind"]]
    )

    assert [p["kind"] for p in payloads] == [
        "turn",
        "turn",
        "turn",
        "diagnosis_review",
        "treatment_rating",
        "medication_rating",
    ]
    assert {p["role"] for p in payloads} == {"patient"}  # an app can tell whose turn it is
    assert payloads[0]["instruction"] and payloads[1]["therapist_said"] == "How have you been sleeping lately?"
    record = result["record"]
    assert [t["text"] for t in record["transcript"] if t["speaker"] == "patient"][:3] == [PERSON_AS_PATIENT["turn"]] * 3
    assert record["illness"] == "Major depressive disorder"  # the person picked 1
    assert (record["treatment_score"], record["medicine_score"]) == (7, 6)
    # The model never played the patient; the therapist heard the person.
    assert not any(call[0].content.startswith("Imagine you are") for call in model.calls)
    therapist_calls = [c for c in model.calls if c[0].content.startswith("You are a psychiatrist")]
    assert therapist_calls[0][1].content == PERSON_AS_PATIENT["turn"]


def test_a_person_plays_the_therapist(scripted):
    spec, model = scripted(RoleScript())
    graph = build_arena_graph().compile(checkpointer=InMemorySaver())
    context = Context(
        model=spec, human_role="therapist", inquiry_turns=1, max_redirections=0, treatment_tries=1, medication_tries=1
    )
    answers = {
        "question": "What keeps you awake at night?",
        "inference": exact_inference("builtin-01").as_text(),
        "diagnosis": "Summary: Low mood.\n1. Major depressive disorder\n2. Insomnia disorder",
        "treatment": "Treatment: Behavioural activation\nExplanation: Rebuilds routine.",
        "medication": "Medication: None\nExplanation: Try therapy first.",
    }
    payloads, result = drive(graph, {"configurable": {"thread_id": "t"}}, context, lambda p: answers[p["kind"]])
    assert [p["kind"] for p in payloads] == ["question", "inference", "diagnosis", "treatment", "medication"]
    assert {p["role"] for p in payloads} == {"therapist"}
    record = result["record"]
    assert record["decoder_rounds"][0]["deviations"] == []  # the person understood the patient
    assert record["treatment"] == "Behavioural activation" and record["medicine"] == "None"
    assert not any(call[0].content.startswith("You are a psychiatrist") for call in model.calls)


def test_a_person_edits_the_decoder_feedback_before_the_therapist_sees_it(scripted):
    spec, model = scripted(RoleScript(inferences=[WRONG_INFERENCE, exact_inference("builtin-01")]))
    graph = build_arena_graph().compile(checkpointer=InMemorySaver())
    context = Context(
        model=spec, review_feedback=True, inquiry_turns=1, max_redirections=1, treatment_tries=1, medication_tries=1
    )
    edited = "Ask how they spend their weekends."
    payloads, result = drive(graph, {"configurable": {"thread_id": "r"}}, context, lambda p: edited)

    assert [p["kind"] for p in payloads] == ["review_feedback"]
    original = result["record"]["decoder_rounds"][0]["feedback"]
    assert payloads[0]["feedback"] == original
    followup = [
        c
        for c in model.calls
        if c[0].content.startswith("You are a psychiatrist") and "Supervisor feedback" in c[-1].content
    ]
    assert len(followup) == 1 and edited in followup[0][-1].content and original not in followup[0][-1].content
    assert result["record"]["feedback_reviews"] == [{"round": 1, "original": original, "final": edited}]


def test_streams_name_the_speaker_and_carry_decoder_scores(scripted):
    spec, _ = scripted(RoleScript(inferences=[WRONG_INFERENCE]))
    graph = build_arena_graph().compile()
    context = Context(model=spec, inquiry_turns=1, max_redirections=1, treatment_tries=1, medication_tries=1)
    custom, speakers = [], []
    for mode, chunk in graph.stream({"profile_id": "builtin-01"}, context=context, stream_mode=["custom", "messages"]):
        if mode == "custom":
            custom.append(chunk)
        else:
            message, metadata = chunk
            speakers.append((metadata["langgraph_node"], metadata.get("speaker")))
    assert [event["round"] for event in custom if event["event"] == "decoder_round"] == [1, 2]
    assert all(0.0 <= s <= 1.0 for event in custom for s in event["similarities"].values())
    assert ("patient", "patient") in speakers and ("therapist", "therapist") in speakers
    assert ("symptom_decoder", "therapist") in speakers  # the therapist states its inference
