"""The session record: the seed's fields plus the transcript, decoder rounds and scores."""

from __future__ import annotations

from collections.abc import Sequence

from langgraph.runtime import Runtime

from mentalarena.agents.context import Context
from mentalarena.agents.models import describe_model
from mentalarena.agents.safety import check_therapist_turns
from mentalarena.agents.state import ArenaState, Trial


def best_trial(trials: Sequence[Trial]) -> Trial | None:
    """The highest-rated trial with a proposal; the earliest wins a tie, unrated trials rank last.

    A trial whose proposal never parsed (left empty) is never kept, however the patient rated it."""
    proposed = [t for t in trials if t["proposal"].strip()]
    return max(proposed, key=lambda t: -1 if t["score"] is None else t["score"], default=None)


def build_record(state: ArenaState, runtime: Runtime[Context]) -> dict:
    """Graph node: the session record, with the best-rated treatment and medication and the therapist's safety flags."""
    context = runtime.context
    treatment: Trial | dict = best_trial(state.get("treatment_trials", [])) or {}
    medication: Trial | dict = best_trial(state.get("medication_trials", [])) or {}
    return {
        "record": {
            "session_id": state["session_id"],
            "profile_id": state["patient"]["id"],
            "presentation": state["patient"].get("presentation", ""),
            "style": state["style"],
            "principles_group": state["principles_group"],
            "principles": state["principles"],
            "profile": state["patient"],
            "symptom_summary": state.get("symptom_summary", ""),
            "diagnosis_candidates": state.get("diagnosis_candidates", []),
            "diagnosis_note": state.get("diagnosis_note", ""),
            "illness": state.get("illness", ""),
            "treatment": treatment.get("proposal", ""),
            "treatment_explanation": treatment.get("explanation", ""),
            "treatment_score": treatment.get("score"),
            "medicine": medication.get("proposal", ""),
            "medicine_explanation": medication.get("explanation", ""),
            "medicine_score": medication.get("score"),
            "transcript": state.get("transcript", []),
            "decoder_rounds": state.get("decoder_rounds", []),
            "treatment_trials": state.get("treatment_trials", []),
            "medication_trials": state.get("medication_trials", []),
            "failures": state.get("failures", []),
            "answers": state.get("answers", []),
            "feedback_reviews": state.get("feedback_reviews", []),
            "risk_events": state.get("risk_events", []),
            "safety_flags": check_therapist_turns(
                state.get("transcript", []), {e["turn"]: e for e in state.get("risk_events", [])}
            ),
            "models": {role: describe_model(context.model_for(role)) for role in ("patient", "therapist", "decoder")},
        }
    }
