"""The answer schemas: one table from which prompts, parsers, scripted answers and JSON schemas come."""

import json

import pytest

from mentalarena.agents import prompts
from mentalarena.agents.engine.generator import json_schema_of
from mentalarena.agents.openai_compatible import OpenAICompatibleChat
from mentalarena.agents.parsing import ParseError
from mentalarena.agents.schemas import (
    DecoderInference,
    Diagnosis,
    DiagnosisReview,
    MedicationProposal,
    MetricScore,
    PairwiseVerdict,
    PrincipleChoice,
    Rating,
    TreatmentProposal,
)

ANSWERS = [
    PrincipleChoice(choice=2),
    DecoderInference(**{key: f"what the patient says about {key}" for key in DecoderInference.model_fields}),
    Diagnosis(
        summary="Low mood for months.", first="Major depressive disorder", second="Adjustment disorder", note="none"
    ),
    DiagnosisReview(choice=1, reason="It fits my sleep."),
    TreatmentProposal(treatment="Behavioural activation", explanation="It rebuilds routine."),
    MedicationProposal(medication="None", explanation="Therapy first."),
    Rating(reaction="A little lighter.", score=7),
    MetricScore(reason="Warm and clear.", score=8),
    PairwiseVerdict(reason="The first listens.", better="1"),
]


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: type(a).__name__)
def test_every_answer_reads_back_from_json_and_from_its_labelled_format(answer):
    schema = type(answer)
    if schema is PrincipleChoice:
        schema = PrincipleChoice.among(["copes by avoiding", "copes by working harder"])
    if schema is DiagnosisReview:
        schema = DiagnosisReview.between(["Major depressive disorder", "Adjustment disorder"])
    assert schema.parse_text(answer.model_dump_json()).model_dump() == answer.model_dump()
    assert schema.parse_text(answer.as_text()).model_dump() == answer.model_dump()
    schema_json = schema.json_schema()
    assert schema_json["required"] == list(schema.model_fields) and schema_json["additionalProperties"] is False
    assert schema.token_budget() > 0


def test_prompts_end_with_the_format_their_schema_generates():
    assert prompts.DECODER_INFERENCE.endswith(DecoderInference.format_instruction())
    assert prompts.DIAGNOSIS.endswith(Diagnosis.format_instruction())
    assert prompts.PATIENT_RATING.endswith(Rating.format_instruction())
    assert "Intermediate beliefs: <the rules and assumptions the patient lives by>" in prompts.DECODER_INFERENCE
    assert all(title in prompts.PATIENT_CHAT_DECODE_HELP for title in DecoderInference.titles().values())


def test_a_behaviour_line_inside_the_situation_stays_there_and_the_principles_are_kept():
    text = (
        "Intermediate beliefs: I must never fail\nBeliefs during depression: if I fail, I am "
        "worthless\nCoping strategies: works late\n"
        "Situation, thoughts, emotions and behaviour: Situation: a missed deadline\nBehaviour: stayed up all night\n"
        "Behaviour principles: guarded, answers briefly"
    )
    answer = DecoderInference.parse_text(text)
    assert answer.situation == "Situation: a missed deadline Behaviour: stayed up all night"
    assert answer.behaviour_principles == "guarded, answers briefly"


def test_a_partial_inference_keeps_what_it_states():
    partial = DecoderInference.partial("Coping strategies: avoids friends\nSomething else entirely")
    assert partial["coping_strategies"] == "avoids friends Something else entirely" and partial["situation"] == ""
    with pytest.raises(ParseError):
        DecoderInference.parse_text("Coping strategies: avoids friends")  # four fields missing


def test_diagnoses_are_read_as_vocabulary_names_and_must_differ():
    listed = Diagnosis.parse_text(
        "Summary: Panic attacks at work.\n1. **Panic disorder**\n2) post-traumatic stress disorder"
    )
    assert (listed.summary, listed.candidates) == (
        "Panic attacks at work.",
        ["Panic disorder", "Posttraumatic stress disorder"],
    )
    with pytest.raises(ParseError, match="field first: Input should be"):
        Diagnosis.parse_text("Summary: Sad.\nFirst diagnosis: Sleepwalking\nSecond diagnosis: Panic disorder")
    with pytest.raises(ParseError, match="the same"):
        Diagnosis.parse_text(
            json.dumps({"summary": "Sad.", "first": "Panic disorder", "second": "Panic disorder", "note": ""})
        )


def test_ratings_and_choices_out_of_their_range_do_not_parse():
    with pytest.raises(ParseError):
        Rating.parse_text('{"reaction": "fine", "score": 11}')
    with pytest.raises(ParseError):
        PrincipleChoice.among(["a", "b"]).parse_text('{"choice": 3}')
    assert (
        Rating.parse_text('{"reaction": "line one\nline two", "score": 4}').score == 4
    )  # raw newlines, as llama-cpp-python lets through


def test_the_response_format_reaches_every_backend_in_its_dialect():
    assert json_schema_of(Rating.response_format()) == Rating.json_schema()
    assert json_schema_of({"type": "json_object", "schema": Rating.json_schema()}) == Rating.json_schema()
    server = OpenAICompatibleChat(
        model="m",
        base_url="http://127.0.0.1:1/v1",
        api_key="unused",
        max_completion_tokens=9,
        json_dialect="json_object",
    )
    payload = server._get_request_payload([("user", "hi")], response_format=Rating.response_format())
    assert payload["max_tokens"] == payload["max_completion_tokens"] == 9
    assert payload["response_format"] == {"type": "json_object", "schema": Rating.json_schema()}
    openai = OpenAICompatibleChat(model="gpt-4o-mini", api_key="sk-test", max_completion_tokens=9)
    payload = openai._get_request_payload([("user", "hi")], response_format=Rating.response_format())
    assert (
        "max_tokens" not in payload and payload["response_format"]["type"] == "json_schema"
    )  # OpenAI's own API: its names


@pytest.mark.parametrize(
    "echo", ["<one treatment>", "[insert treatment]", "/more treatments available", "#Please note"]
)
def test_an_echoed_placeholder_is_not_a_proposal(echo):
    with pytest.raises(ParseError, match="placeholder"):
        TreatmentProposal.parse_text(json.dumps({"treatment": echo, "explanation": "It helps."}))
