"""The therapist agent: inquires, diagnoses, and proposes treatments and medications."""

from __future__ import annotations

import re

from langgraph.runtime import Runtime
from langgraph.types import interrupt

from mentalarena.agents import prompts
from mentalarena.agents.llm import role_messages, speak
from mentalarena.agents.parsing import ParseError, clean_turn, first_sentence, parse_labelled_fields, parse_numbered_items, parse_proposal, require_text
from mentalarena.agents.patient import dialogue

PROPOSAL_LABELS = {"treatment": "Treatment", "medication": "Medication"}


def next_question_task(state: dict) -> str:
    """What the next question should be about, and the decoder's feedback when it redirected."""
    focus = prompts.INQUIRY_FOCI[state.get("questions_asked", 0) % len(prompts.INQUIRY_FOCI)]
    task = prompts.THERAPIST_NEXT_QUESTION.format(focus=focus)
    if state.get("feedback"):
        task += prompts.THERAPIST_FEEDBACK.format(feedback=state["feedback"])
    return task


def therapist_messages(state: dict, task: str | None = None):
    return role_messages(prompts.THERAPIST_SYSTEM, dialogue(state), me="therapist", task=task)


def therapist(state: dict, runtime: Runtime) -> dict:
    """Ask the next question; after a decoder redirection, the question acts on its feedback."""
    context = runtime.context
    redirected = bool(state.get("feedback"))
    update: dict = {}
    if redirected and context.review_feedback:
        # A person approves (resumes with it unchanged), edits, or drops ('') the feedback first.
        reviewed = str(interrupt({"role": "supervisor", "kind": "review_feedback", "feedback": state["feedback"]}))
        update["feedback_reviews"] = [{"round": len(state.get("decoder_rounds", [])), "original": state["feedback"], "final": reviewed}]
        state = {**state, "feedback": reviewed}
    turns = dialogue(state)
    request = {"kind": "question", "patient_said": turns[-1]["text"] if turns else "", "feedback": state.get("feedback", "")}
    task = next_question_task(state)
    _, text, error = speak(context, "therapist", therapist_messages(state, task), require_text, request)
    if error:
        raise ParseError(f"therapist turn: {error}")  # a dialogue cannot go on without it
    turn = {"speaker": "therapist", "phase": "followup" if redirected else "inquiry", "text": require_text(text), "instruction": task}
    return {
        **update,
        "transcript": [turn],
        "questions_asked": state.get("questions_asked", 0) + 1,
        "feedback": "",  # used up: it shaped this question
    }


def diagnosis(state: dict, runtime: Runtime) -> dict:
    """A symptom summary and two candidate diagnoses, most likely first."""
    candidates, text, error = speak(runtime.context, "therapist", therapist_messages(state, prompts.DIAGNOSIS),
                                    lambda t: parse_numbered_items(t, 2), {"kind": "diagnosis", "instruction": prompts.DIAGNOSIS})
    failures = []
    if error:
        # Keep the model's own words as the diagnosis rather than none: one listed item, else its first sentence.
        try:
            candidates = parse_numbered_items(text, 2, minimum=1)
        except ParseError:
            candidates = [first_sentence(text)] if first_sentence(text) else []
        failures.append({"node": "diagnosis", "reason": f"two diagnoses not found, kept {candidates!r}: {error}"})
    # The summary is what precedes the list of diagnoses.
    before_list = re.split(r"\n\s*(?:1[.):]|[-*•])\s", text, maxsplit=1)[0]
    try:
        summary = parse_labelled_fields(before_list, {"summary": ("summary", "symptom summary", "symptoms")})["summary"]
    except ParseError:
        summary = clean_turn(before_list)
    return {
        "symptom_summary": summary,
        "diagnosis_candidates": candidates or [],
        "transcript": [{"speaker": "therapist", "phase": "diagnosis", "text": text.strip()}],
        "failures": failures,
    }


def propose(state: dict, runtime: Runtime, kind: str) -> dict:
    """Propose a treatment or medication, different from those already tried."""
    context = runtime.context
    label = PROPOSAL_LABELS[kind]
    tried = state.get(f"{kind}_trials", [])
    previous = ""
    if tried:
        lines = "\n".join(f"- {t['proposal']} ({t['score'] if t['score'] is not None else 'no rating'}/10)" for t in tried)
        previous = prompts.PREVIOUS_TRIALS.format(trials=lines, kind=kind)
    task = prompts.THERAPIST_PROPOSAL.format(
        illness=state.get("illness") or "not yet settled",
        summary=state.get("symptom_summary") or "(see the conversation)",
        previous=previous,
        kind=kind,
        label=label,
        extra=prompts.MEDICATION_EXTRA if kind == "medication" else "",
    )
    parsed, text, error = speak(context, "therapist", therapist_messages(state, task), lambda t: parse_proposal(t, label),
                                {"kind": kind, "instruction": task})
    proposal, explanation = parsed or ("", text.strip())
    failures = [{"node": f"propose_{kind}", "reason": f"no {kind} found in the answer: {error}"}] if error else []
    return {
        "proposal": {"proposal": proposal, "explanation": explanation, "reaction": "", "score": None},
        "transcript": [{"speaker": "therapist", "phase": kind, "text": text.strip()}],
        "failures": failures,
    }
