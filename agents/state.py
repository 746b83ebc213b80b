"""The arena's state: a narrow input, a narrow output (the session record), and the internals.

Values are plain dicts and lists so that checkpoints, Studio and JSONL exports carry them as-is.
"""

from __future__ import annotations

import operator
from typing import Annotated, Literal, NotRequired

# Pydantic (Studio's input and output schemas) needs this one before Python 3.12.
from typing_extensions import TypedDict


class Turn(TypedDict):
    """One turn of the transcript: who spoke, in which phase, and what they said."""

    speaker: Literal["patient", "therapist"]
    phase: str  # inquiry, followup, diagnosis, treatment, medication
    text: str
    # What the speaker was asked for this turn besides answering (the therapist's question focus
    # and any decoder feedback); its later prompts repeat it before the turn.
    instruction: NotRequired[str]


class DecoderRound(TypedDict):
    """One symptom-decoder round: the inference, its similarity per field, the deviations and the feedback."""

    round: int
    inferred: dict[str, str]
    similarities: dict[str, float]
    deviations: list[str]
    feedback: str
    redirected: bool


class Trial(TypedDict):
    """One proposed treatment or medication, with the patient's reaction and score (None if unparsed)."""

    proposal: str
    explanation: str
    reaction: str
    score: int | None


class Failure(TypedDict):
    """A step that fell back on a default: the node, and why."""

    node: str
    reason: str


class AnswerLog(TypedDict):
    """How one machine-read answer was asked for, and whether it parsed."""

    node: str
    schema: str  # the answer's class in agents/schemas.py
    constrained: bool  # asked for in its schema (structured output); else for free text, parsed leniently
    json: bool  # the reply was JSON (what a backend that enforced the schema sends)
    parsed: bool
    attempts: int


class SessionRecord(TypedDict):
    """The record of a finished session: its setup, outcomes, transcript and everything logged on the way."""

    session_id: str
    profile_id: str
    presentation: str
    style: str
    principles_group: str
    principles: list[str]
    profile: dict  # the CCD the patient was encoded from (fictional), so exports can rebuild its prompt
    symptom_summary: str
    diagnosis_candidates: list[str]
    diagnosis_note: str
    illness: str
    treatment: str
    treatment_explanation: str
    treatment_score: int | None
    medicine: str
    medicine_explanation: str
    medicine_score: int | None
    transcript: list[Turn]
    decoder_rounds: list[DecoderRound]
    treatment_trials: list[Trial]
    medication_trials: list[Trial]
    failures: list[Failure]
    answers: list[AnswerLog]
    feedback_reviews: list[dict]
    risk_events: list[dict]
    safety_flags: list[dict]  # therapist turns that failed the safety check; exports drop such sessions
    models: dict[str, str]


class ArenaInput(TypedDict, total=False):
    """Start a session from a built-in profile id or a full CCD profile (Patient-Psi format)."""

    profile_id: str
    profile: dict
    session_id: str


class ArenaOutput(TypedDict):
    """What a session returns: its record."""

    record: SessionRecord


class ArenaState(ArenaInput, total=False):
    """Everything the graph's nodes read and write during a session; the list fields accumulate."""

    # Symptom encoder
    patient: dict  # the validated profile, Patient-Psi format
    style: str
    principles_group: str
    principles: list[str]
    encoded: dict[str, str]  # what the decoder compares the therapist's inference with
    # Dialogue
    transcript: Annotated[list[Turn], operator.add]
    questions_asked: int
    # Symptom decoder
    decoder_rounds: Annotated[list[DecoderRound], operator.add]
    redirections: int
    feedback: str  # pending for the therapist's next question; cleared once used
    feedback_reviews: Annotated[list[dict], operator.add]  # a person's approvals and edits of feedback
    # Diagnosis, treatment, medication
    symptom_summary: str
    diagnosis_candidates: list[str]  # names from the diagnosis vocabulary (agents/data/diagnoses.json)
    diagnosis_note: str
    illness: str
    proposal: Trial  # the therapist's latest proposal, not yet rated
    treatment_trials: Annotated[list[Trial], operator.add]
    medication_trials: Annotated[list[Trial], operator.add]
    failures: Annotated[list[Failure], operator.add]
    answers: Annotated[
        list[AnswerLog], operator.add
    ]  # each machine-read answer: how it was asked for, whether it parsed
    risk_events: Annotated[list[dict], operator.add]  # patient turns the risk screen flagged
    record: SessionRecord


def trials_of(state: ArenaState, kind: str) -> list[Trial]:
    """The ``kind`` ('treatment' or 'medication') trials so far, rated or not."""
    return state.get("treatment_trials", []) if kind == "treatment" else state.get("medication_trials", [])
