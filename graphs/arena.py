"""The MentalArena self-play session, as in the paper's figure.

    symptom_encoder -> patient <-> therapist -> symptom_decoder --(deviation)--> therapist
                                                      |
                                                 (no deviation)
                                                      v
    diagnosis -> patient_diagnosis_review -> propose/rate treatment (loop) -> propose/rate medication (loop) -> record

``build_arena_graph()`` returns the uncompiled builder, so an embedding app picks its own
checkpointer and store; ``graph`` is compiled without a checkpointer for ``langgraph dev``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from mentalarena.agents.context import Context
from mentalarena.agents.decoder import symptom_decoder
from mentalarena.agents.encoder import symptom_encoder
from mentalarena.agents.patient import patient, patient_diagnosis_review, rate_proposal
from mentalarena.agents.state import ArenaInput, ArenaOutput, ArenaState, trials_of
from mentalarena.agents.therapist import diagnosis, propose, therapist
from mentalarena.graphs.record import best_trial, build_record


def after_patient(state: ArenaState, runtime: Runtime[Context]) -> str:
    """Keep inquiring until the question budget is spent, then let the decoder check."""
    if state.get("questions_asked", 0) < runtime.context.inquiry_turns:
        return "therapist"
    return "symptom_decoder"


def after_decoder(state: ArenaState) -> str:
    """The deviation edge: pending feedback sends the dialogue back to the therapist."""
    return "therapist" if state.get("feedback") else "diagnosis"


def after_rating(kind: str, next_node: str) -> Callable[[ArenaState, Runtime[Context]], str]:
    """The router after a ``kind`` rating: another proposal, until one meets the target score or the tries run out."""

    def route(state: ArenaState, runtime: Runtime[Context]) -> str:
        trials = trials_of(state, kind)
        best = best_trial(trials)
        if best and best["score"] is not None and best["score"] >= runtime.context.target_score:
            return next_node
        if len(trials) >= getattr(runtime.context, f"{kind}_tries"):
            return next_node
        return f"propose_{kind}"

    route.__name__ = f"after_{kind}_rating"
    return route


def build_arena_graph() -> StateGraph[ArenaState, Context, ArenaInput, ArenaOutput]:
    """The arena session graph, uncompiled: its nodes and edges as drawn in the module docstring."""
    builder = StateGraph(ArenaState, context_schema=Context, input_schema=ArenaInput, output_schema=ArenaOutput)
    builder.add_node("symptom_encoder", symptom_encoder)
    builder.add_node("patient", patient)
    builder.add_node("therapist", therapist)
    builder.add_node("symptom_decoder", symptom_decoder)
    builder.add_node("diagnosis", diagnosis)
    builder.add_node("patient_diagnosis_review", patient_diagnosis_review)
    for kind in ("treatment", "medication"):
        builder.add_node(f"propose_{kind}", functools.partial(propose, kind=kind))
        builder.add_node(f"rate_{kind}", functools.partial(rate_proposal, kind=kind))
    builder.add_node("record", build_record)

    builder.add_edge(START, "symptom_encoder")
    builder.add_edge("symptom_encoder", "patient")
    builder.add_edge("therapist", "patient")
    builder.add_conditional_edges("patient", after_patient, ["therapist", "symptom_decoder"])
    builder.add_conditional_edges("symptom_decoder", after_decoder, ["therapist", "diagnosis"])
    builder.add_edge("diagnosis", "patient_diagnosis_review")
    builder.add_edge("patient_diagnosis_review", "propose_treatment")
    builder.add_edge("propose_treatment", "rate_treatment")
    builder.add_conditional_edges(
        "rate_treatment", after_rating("treatment", "propose_medication"), ["propose_treatment", "propose_medication"]
    )
    builder.add_edge("propose_medication", "rate_medication")
    builder.add_conditional_edges(
        "rate_medication", after_rating("medication", "record"), ["propose_medication", "record"]
    )
    builder.add_edge("record", END)
    return builder


graph = build_arena_graph().compile(name="arena")
