from __future__ import annotations

import itertools
import uuid
from pathlib import Path

import pytest

from mentalarena.agents.encoder import encoded_fields, shortlist_groups
from mentalarena.agents.models import register_chat_model, unregister_chat_model
from mentalarena.agents.profiles import find_profile
from mentalarena.agents.scripted import ScriptedChatModel

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

INFERENCE_LABELS = {
    "intermediate_belief": "Intermediate beliefs",
    "intermediate_belief_depression": "Beliefs during depression",
    "coping_strategies": "Coping strategies",
    "situation": "Situation, thoughts, emotions and behaviour",
    "behaviour_principles": "Behaviour principles",
}
WRONG_INFERENCE = "\n".join(f"{label}: The patient enjoys gardening on sunny days." for label in INFERENCE_LABELS.values())


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"fixture data {path} is absent (it lives in the workspace's shared/data)")
    return path


def exact_inference(profile_id: str) -> str:
    """The therapist's inference when it has understood the patient perfectly."""
    profile = find_profile(profile_id)
    group = shortlist_groups(profile.coping_strategies, "minilm", 3)[0]
    encoded = encoded_fields(profile, group["principles"])
    return "\n".join(f"{INFERENCE_LABELS[key]}: {value}" for key, value in encoded.items())


class Script:
    """Role-aware scripted answers; lists are consumed in order, the last item repeats."""

    def __init__(self, inferences=(WRONG_INFERENCE,), treatment_scores=(9,), medication_scores=(9,), rating_reply="I would feel better. Score: {score}"):
        self.inferences = _repeat_last(inferences)
        self.scores = {"treatment": _repeat_last(treatment_scores), "medication": _repeat_last(medication_scores)}
        self.rating_reply = rating_reply
        self.proposals = itertools.count(1)

    def __call__(self, messages) -> str:
        system, last = messages[0].content, messages[-1].content
        if "Which group of behaviour principles" in last:
            return "1"
        if system.startswith("Imagine you are"):
            if "Which one fits you better" in last:
                return "2. It matches how I have felt."
            for kind in ("treatment", "medication"):
                if f"The therapist suggests this {kind}" in last:
                    return self.rating_reply.format(score=next(self.scores[kind]))
            return "I have been feeling low and tired, and I keep to myself."
        if "state what you have inferred" in last:
            return next(self.inferences)
        if "two most likely diagnoses" in last:
            return "Summary: Low mood and withdrawal for months.\n1. Major depressive disorder\n2. Adjustment disorder"
        if "Propose one treatment" in last:
            return f"Treatment: Behavioural activation plan {next(self.proposals)}\nExplanation: It rebuilds routine."
        if "Propose one medication" in last:
            return f"Medication: Sertraline option {next(self.proposals)}\nExplanation: First-line for depression."
        return "How have you been sleeping lately?"


def _repeat_last(items):
    items = list(items)
    return itertools.chain(items, itertools.repeat(items[-1]))


@pytest.fixture
def scripted():
    """Register a scripted model under a fresh spec name; returns (spec, model)."""
    names = []

    def make(script) -> tuple[str, ScriptedChatModel]:
        name = f"scripted-{uuid.uuid4().hex[:8]}"
        model = ScriptedChatModel(respond=script)
        register_chat_model(name, model)
        names.append(name)
        return name, model

    yield make
    for name in names:
        unregister_chat_model(name)
