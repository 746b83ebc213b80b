"""Symptom encoder: what the simulated patient knows, and what the decoder will check against.

The behaviour-principle group is chosen as in the paper: shortlist the groups whose description is
closest to the profile's coping strategies (sentence embeddings), then let the model pick one of
the shortlist. If the model's answer names none of them, the closest group is kept and the
failure is recorded.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import random

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from mentalarena.agents import prompts
from mentalarena.agents.context import Context
from mentalarena.agents.embeddings import similarities_to_library
from mentalarena.agents.llm import answer_log, answer_or_record, chat_model
from mentalarena.agents.profiles import CONVERSATIONAL_STYLES, PatientProfile, ProfileError, find_profile
from mentalarena.agents.schemas import PrincipleChoice
from mentalarena.agents.state import ArenaState


@functools.lru_cache(maxsize=1)
def principle_groups() -> tuple[dict, ...]:
    """The behaviour-principle groups shipped with the package, each with an id, description and principles."""
    resource = importlib.resources.files("mentalarena.agents") / "data" / "behaviour_principles.json"
    return tuple(json.loads(resource.read_text(encoding="utf-8")))


def resolve_profile(state: ArenaState) -> PatientProfile:
    """The session's patient profile: the one given in the input, else the built-in one with the given id."""
    if state.get("profile"):
        from mentalarena.agents.profiles import parse_profiles

        return parse_profiles([state["profile"]], "input 'profile'")[0]
    if state.get("profile_id"):
        return find_profile(state["profile_id"])
    raise ProfileError("input: give 'profile' (a CCD in Patient-Psi format) or 'profile_id' (a built-in id)")


def choose_style(profile: PatientProfile, context: Context, session_key: str) -> str:
    """The patient's conversational style: the forced one, else one of the profile's, the same for the same seed."""
    if context.style:
        if context.style not in CONVERSATIONAL_STYLES:
            raise ValueError(f"Context.style: {context.style!r} is not one of {', '.join(CONVERSATIONAL_STYLES)}")
        return context.style
    return random.Random(f"{context.seed}:{session_key}").choice(profile.styles)


def shortlist_groups(coping_strategies: str, embedding_model: str, size: int) -> list[dict]:
    """The ``size`` principle groups whose description is closest to the coping strategies, closest first."""
    groups = principle_groups()
    scores = similarities_to_library(embedding_model, coping_strategies, tuple(g["description"] for g in groups))
    order = sorted(range(len(groups)), key=lambda i: -scores[i])
    return [groups[i] for i in order[:size]]


def encoded_fields(profile: PatientProfile, principles: list[str]) -> dict[str, str]:
    """What the decoder compares a :class:`DecoderInference` with, under the same keys."""
    encoded = {
        "intermediate_belief": profile.intermediate_belief,
        "intermediate_belief_depression": profile.intermediate_belief_depression,
        "coping_strategies": profile.coping_strategies,
        "situation": (
            f"Situation: {profile.situation} Thoughts: {profile.auto_thought} "
            f"Emotions: {'; '.join(profile.emotion)}. Behaviour: {profile.behavior}"
        ),
        "behaviour_principles": " ".join(principles),
    }
    return {key: value for key, value in encoded.items() if value.strip()}


def symptom_encoder(state: ArenaState, runtime: Runtime[Context]) -> dict:
    """Graph node: sets up the patient (profile, style, behaviour principles) and what the decoder checks against."""
    context = runtime.context
    profile = resolve_profile(state)
    session_id = state.get("session_id") or profile.id
    style = choose_style(profile, context, session_id)
    shortlist = shortlist_groups(profile.coping_strategies, context.embedding_model, context.principle_shortlist)
    failures, answers = [], []
    chosen = shortlist[0]
    if len(shortlist) > 1:
        options = "\n".join(f"{i}. {g['description']}" for i, g in enumerate(shortlist, start=1))
        messages = [
            SystemMessage(prompts.ENCODER_SYSTEM),
            HumanMessage(
                prompts.ENCODER_PRINCIPLE_CHOICE.format(coping_strategies=profile.coping_strategies, options=options)
            ),
        ]
        schema = PrincipleChoice.among([g["description"] for g in shortlist])
        reply = answer_or_record(chat_model(context, "decoder"), messages, schema, context.parse_retries + 1)
        answers.append(answer_log("symptom_encoder", schema, reply))
        if reply.value is None:
            failures.append(
                {
                    "node": "symptom_encoder",
                    "reason": f"principle choice unparsed, kept the closest group: {reply.error}",
                }
            )
        chosen = shortlist[reply.value.choice - 1 if reply.value else 0]
    return {
        "session_id": session_id,
        "patient": profile.to_patient_psi(),
        "style": style,
        "principles_group": chosen["id"],
        "principles": list(chosen["principles"]),
        "encoded": encoded_fields(profile, chosen["principles"]),
        "questions_asked": 0,
        "redirections": 0,
        "feedback": "",
        "failures": failures,
        "answers": answers,
    }
