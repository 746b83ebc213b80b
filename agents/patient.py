"""The patient agent: answers the therapist, reviews diagnoses, rates proposed treatments."""

from __future__ import annotations

from typing import TYPE_CHECKING

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from mentalarena.agents import prompts
from mentalarena.agents.context import Context
from mentalarena.agents.llm import answer, answer_log, role_messages, speak
from mentalarena.agents.parsing import ParseError, require_text
from mentalarena.agents.profiles import PatientProfile
from mentalarena.agents.safety import screen_turn
from mentalarena.agents.schemas import DiagnosisReview, Rating
from mentalarena.agents.state import ArenaState, Turn

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage


def patient_system_prompt(state: ArenaState) -> str:
    """The patient's instructions: its profile, conversational style and behaviour principles."""
    profile = PatientProfile.model_validate(state["patient"])
    return prompts.PATIENT_SYSTEM.format(
        name=profile.name,
        history=profile.history,
        core_beliefs=" ".join(profile.core_beliefs) or "(none stated)",
        intermediate_belief=profile.intermediate_belief,
        intermediate_belief_depression=profile.intermediate_belief_depression or "(none stated)",
        coping_strategies=profile.coping_strategies,
        situation=profile.situation,
        auto_thought=profile.auto_thought,
        emotion="; ".join(profile.emotion),
        behavior=profile.behavior,
        style_instruction=prompts.STYLE_INSTRUCTIONS[state["style"]],
        principles="\n".join(f"- {rule}" for rule in state["principles"]),
    )


def dialogue(state: ArenaState) -> list[Turn]:
    """The question-and-answer part of the transcript, which both roles keep in view."""
    return [turn for turn in state.get("transcript", []) if turn["phase"] in ("inquiry", "followup")]


def patient_messages(state: ArenaState, task: str | None = None) -> list[BaseMessage]:
    """The patient's prompt: its instructions, the dialogue so far from its side, then ``task`` if given."""
    return role_messages(
        patient_system_prompt(state), dialogue(state), me="patient", opening=prompts.PATIENT_OPENING, task=task
    )


def patient(state: ArenaState, runtime: Runtime[Context]) -> dict:
    """Open the session, or answer the therapist's last question."""
    turns = dialogue(state)
    request = {
        "kind": "turn",
        "therapist_said": turns[-1]["text"] if turns else "",
        "instruction": "" if turns else prompts.PATIENT_OPENING,
    }
    reply = speak(runtime.context, "patient", patient_messages(state), require_text, request)
    if reply.value is None:
        raise ParseError(f"patient turn: {reply.error}")  # a dialogue cannot go on without it
    phase = turns[-1]["phase"] if turns else "inquiry"
    text = reply.value
    update = {"transcript": [{"speaker": "patient", "phase": phase, "text": text}]}
    context = runtime.context
    screen = screen_turn(text, context)
    if screen.risk:  # recorded and streamed, so the session's safety check and any app can see it
        event = {**screen.as_event(text), "turn": len(state.get("transcript", []))}
        get_stream_writer()(event)
        update["risk_events"] = [event]
    return update


def patient_diagnosis_review(state: ArenaState, runtime: Runtime[Context]) -> dict:
    """The patient weighs the two candidate diagnoses against its own experience and picks one."""
    candidates = state.get("diagnosis_candidates", [])
    if len(candidates) < 2:
        return {"illness": candidates[0] if candidates else ""}
    task = prompts.PATIENT_DIAGNOSIS_REVIEW.format(first=candidates[0], second=candidates[1])
    schema = DiagnosisReview.between(candidates)
    reply = answer(
        runtime.context,
        "patient",
        patient_messages(state, task),
        schema,
        {"kind": "diagnosis_review", "candidates": candidates, "instruction": task},
    )
    failures = (
        []
        if reply.value
        else [
            {
                "node": "patient_diagnosis_review",
                "reason": f"choice unparsed, kept the therapist's first candidate: {reply.error}",
            }
        ]
    )
    return {
        "illness": candidates[reply.value.choice - 1 if reply.value else 0],
        "transcript": [{"speaker": "patient", "phase": "diagnosis", "text": reply.text.strip()}],
        "failures": failures,
        "answers": [answer_log("patient_diagnosis_review", schema, reply)],
    }


def rate_proposal(state: ArenaState, runtime: Runtime[Context], kind: str) -> dict:
    """The patient imagines the last proposed treatment or medication and rates its state 1-10."""
    proposal = state["proposal"]
    task = prompts.PATIENT_RATING.format(kind=kind, proposal=proposal["proposal"], explanation=proposal["explanation"])
    reply = answer(
        runtime.context,
        "patient",
        patient_messages(state, task),
        Rating,
        {"kind": f"{kind}_rating", "proposal": proposal["proposal"], "instruction": task},
    )
    failures = (
        []
        if reply.value
        else [{"node": f"rate_{kind}", "reason": f"rating unparsed, recorded as no score: {reply.error}"}]
    )
    return {
        f"{kind}_trials": [
            {
                **proposal,
                "reaction": reply.value.reaction if reply.value else reply.text.strip(),
                "score": reply.value.score if reply.value else None,
            }
        ],
        "transcript": [{"speaker": "patient", "phase": kind, "text": reply.text.strip()}],
        "failures": failures,
        "answers": [answer_log(f"rate_{kind}", Rating, reply)],
    }
