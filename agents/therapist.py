"""The therapist agent: inquires, diagnoses, and proposes treatments and medications."""

from __future__ import annotations

from langgraph.runtime import Runtime

from mentalarena.agents import prompts
from mentalarena.agents.llm import ask, chat_model, role_messages
from mentalarena.agents.parsing import ParseError, parse_labelled_fields, parse_numbered_items, parse_proposal, require_text
from mentalarena.agents.patient import dialogue

PROPOSAL_LABELS = {"treatment": "Treatment", "medication": "Medication"}


def therapist_system_prompt(state: dict) -> str:
    focus = prompts.INQUIRY_FOCI[state.get("questions_asked", 0) % len(prompts.INQUIRY_FOCI)]
    system = prompts.THERAPIST_SYSTEM.format(focus=focus)
    if state.get("feedback"):
        system += prompts.THERAPIST_FEEDBACK.format(feedback=state["feedback"])
    return system


def therapist_messages(state: dict, task: str | None = None):
    return role_messages(therapist_system_prompt(state), dialogue(state), me="therapist", task=task)


def therapist(state: dict, runtime: Runtime) -> dict:
    """Ask the next question; after a decoder redirection, the question acts on its feedback."""
    context = runtime.context
    text = ask(chat_model(context, "therapist"), therapist_messages(state), require_text, context.parse_retries + 1)
    phase = "followup" if state.get("feedback") else "inquiry"
    return {
        "transcript": [{"speaker": "therapist", "phase": phase, "text": text}],
        "questions_asked": state.get("questions_asked", 0) + 1,
        "feedback": "",  # used up: it shaped this question
    }


def diagnosis(state: dict, runtime: Runtime) -> dict:
    """A symptom summary and two candidate diagnoses, most likely first."""
    context = runtime.context
    replies: list[str] = []

    def parse(text: str) -> list[str]:
        replies.append(text)
        return parse_numbered_items(text, 2)

    failures = []
    try:
        candidates = ask(chat_model(context, "therapist"), therapist_messages(state, prompts.DIAGNOSIS), parse, context.parse_retries + 1)
    except ParseError as exc:
        candidates = []
        failures.append({"node": "diagnosis", "reason": f"two diagnoses not found: {exc}"})
    text = replies[-1]
    try:
        summary = parse_labelled_fields(text, {"summary": ("summary", "symptom summary", "symptoms")})["summary"]
    except ParseError:
        summary = ""
    summary = summary.split("\n1.")[0].strip() or text.split("\n")[0].strip()
    return {
        "symptom_summary": summary,
        "diagnosis_candidates": candidates,
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
    replies: list[str] = []

    def parse(text: str) -> tuple[str, str]:
        replies.append(text)
        return parse_proposal(text, label)

    failures = []
    try:
        proposal, explanation = ask(chat_model(context, "therapist"), therapist_messages(state, task), parse, context.parse_retries + 1)
    except ParseError as exc:
        proposal, explanation = "", replies[-1].strip()
        failures.append({"node": f"propose_{kind}", "reason": f"no {kind} found in the answer: {exc}"})
    return {
        "proposal": {"proposal": proposal, "explanation": explanation, "reaction": "", "score": None},
        "transcript": [{"speaker": "therapist", "phase": kind, "text": replies[-1].strip()}],
        "failures": failures,
    }
