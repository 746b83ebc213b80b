"""The therapist agent: inquires, diagnoses, and proposes treatments and medications."""

from __future__ import annotations

from typing import TYPE_CHECKING

from langgraph.runtime import Runtime
from langgraph.types import interrupt

from mentalarena.agents import prompts
from mentalarena.agents.context import Context
from mentalarena.agents.llm import answer, answer_log, role_messages, speak
from mentalarena.agents.parsing import ParseError, require_text
from mentalarena.agents.patient import dialogue
from mentalarena.agents.schemas import PROPOSALS, Diagnosis
from mentalarena.agents.state import ArenaState, trials_of

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage


def next_question_task(state: ArenaState) -> str:
    """What the next question should be about, and the decoder's feedback when it redirected."""
    focus = prompts.INQUIRY_FOCI[state.get("questions_asked", 0) % len(prompts.INQUIRY_FOCI)]
    task = prompts.THERAPIST_NEXT_QUESTION.format(focus=focus)
    if state.get("feedback"):
        task += prompts.THERAPIST_FEEDBACK.format(feedback=state["feedback"])
    return task


def therapist_messages(state: ArenaState, task: str | None = None) -> list[BaseMessage]:
    """The therapist's prompt: its instructions, the dialogue so far from its side, then ``task`` if given."""
    return role_messages(prompts.THERAPIST_SYSTEM, dialogue(state), me="therapist", task=task)


def therapist(state: ArenaState, runtime: Runtime[Context]) -> dict:
    """Ask the next question; after a decoder redirection, the question acts on its feedback."""
    context = runtime.context
    redirected = bool(state.get("feedback"))
    update: dict = {}
    if redirected and context.review_feedback:
        # A person approves (resumes with it unchanged), edits, or drops ('') the feedback first.
        reviewed = str(interrupt({"role": "supervisor", "kind": "review_feedback", "feedback": state["feedback"]}))
        update["feedback_reviews"] = [
            {"round": len(state.get("decoder_rounds", [])), "original": state["feedback"], "final": reviewed}
        ]
        state = {**state, "feedback": reviewed}
    turns = dialogue(state)
    request = {
        "kind": "question",
        "patient_said": turns[-1]["text"] if turns else "",
        "feedback": state.get("feedback", ""),
    }
    task = next_question_task(state)
    reply = speak(context, "therapist", therapist_messages(state, task), require_text, request)
    if reply.value is None:
        raise ParseError(f"therapist turn: {reply.error}")  # a dialogue cannot go on without it
    turn = {
        "speaker": "therapist",
        "phase": "followup" if redirected else "inquiry",
        "text": reply.value,
        "instruction": task,
    }
    return {
        **update,
        "transcript": [turn],
        "questions_asked": state.get("questions_asked", 0) + 1,
        "feedback": "",  # used up: it shaped this question
    }


def diagnosis(state: ArenaState, runtime: Runtime[Context]) -> dict:
    """A symptom summary and two candidate diagnoses from the vocabulary, most likely first.

    An answer that never parses leaves no summary and no candidates (the failure is recorded):
    the model's words are not passed off as a diagnosis."""
    reply = answer(
        runtime.context,
        "therapist",
        therapist_messages(state, prompts.DIAGNOSIS),
        Diagnosis,
        {"kind": "diagnosis", "instruction": prompts.DIAGNOSIS},
    )
    failures = [] if reply.value else [{"node": "diagnosis", "reason": f"diagnosis unparsed, none kept: {reply.error}"}]
    return {
        "symptom_summary": reply.value.summary if reply.value else "",
        "diagnosis_candidates": reply.value.candidates if reply.value else [],
        "diagnosis_note": reply.value.note if reply.value else "",
        "transcript": [{"speaker": "therapist", "phase": "diagnosis", "text": reply.text.strip()}],
        "failures": failures,
        "answers": [answer_log("diagnosis", Diagnosis, reply)],
    }


def propose(state: ArenaState, runtime: Runtime[Context], kind: str) -> dict:
    """Propose a treatment or medication, different from those already tried."""
    context = runtime.context
    schema = PROPOSALS[kind]
    tried = trials_of(state, kind)
    previous = ""
    if tried:
        lines = "\n".join(
            f"- {t['proposal']} ({t['score'] if t['score'] is not None else 'no rating'}/10)" for t in tried
        )
        previous = prompts.PREVIOUS_TRIALS.format(trials=lines, kind=kind)
    task = prompts.THERAPIST_PROPOSAL.format(
        illness=state.get("illness") or "not yet settled",
        summary=state.get("symptom_summary") or "(see the conversation)",
        previous=previous,
        kind=kind,
        answer_format=prompts.PROPOSAL_FORMATS[kind],
        extra=prompts.MEDICATION_EXTRA if kind == "medication" else "",
    )
    reply = answer(context, "therapist", therapist_messages(state, task), schema, {"kind": kind, "instruction": task})
    proposal, explanation = (reply.value.proposal, reply.value.explanation) if reply.value else ("", "")
    failures = (
        [] if reply.value else [{"node": f"propose_{kind}", "reason": f"no {kind} found in the answer: {reply.error}"}]
    )
    return {
        "proposal": {"proposal": proposal, "explanation": explanation, "reaction": "", "score": None},
        "transcript": [{"speaker": "therapist", "phase": kind, "text": reply.text.strip()}],
        "failures": failures,
        "answers": [answer_log(f"propose_{kind}", schema, reply)],
    }
