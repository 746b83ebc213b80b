"""A scripted chat model: deterministic answers for testing graph logic without a network.

``ScriptedChatModel(respond=...)`` calls ``respond`` with the messages of each call and keeps every
call in ``calls``, so a test can check what each role was prompted with. ``RoleScript`` answers
each of the arena's prompts in the format it asks for; the model spec ``scripted`` selects it, so
a served graph (``langgraph dev``, Studio) can run a whole session with no model at all.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from mentalarena.agents import prompts

SCRIPTED_SPEC = "scripted"
DEFAULT_INFERENCE = "\n".join(
    f"{label}: The patient enjoys gardening on sunny days."
    for label in ("Intermediate beliefs", "Beliefs during depression", "Coping strategies",
                  "Situation, thoughts, emotions and behaviour", "Behaviour principles")
)


class ScriptedChatModel(BaseChatModel):
    respond: Callable[[list[BaseMessage]], str]
    calls: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self.respond(messages)))])


def _repeat_last(items: Iterable):
    items = list(items)
    return itertools.chain(items, itertools.repeat(items[-1]))


def _marker(prompt: str) -> str:
    """A prompt's first line without placeholders: what identifies it inside a message."""
    return prompt.split("{")[0].splitlines()[0][:60]


class RoleScript:
    """Answers each arena prompt in its format; lists are consumed in order, the last item repeats."""

    def __init__(self, inferences=(DEFAULT_INFERENCE,), treatment_scores=(9,), medication_scores=(9,),
                 rating_reply="I would feel better. Score: {score}"):
        self.inferences = _repeat_last(inferences)
        self.scores = {"treatment": _repeat_last(treatment_scores), "medication": _repeat_last(medication_scores)}
        self.rating_reply = rating_reply
        self.proposals = itertools.count(1)

    def __call__(self, messages: list[BaseMessage]) -> str:
        system, last = messages[0].content, messages[-1].content
        if "Which group of behaviour principles" in last:
            return "1"
        if system.startswith(_marker(prompts.PATIENT_SYSTEM)):
            if "Which one fits you better" in last:
                return "2. It matches how I have felt."
            for kind in ("treatment", "medication"):
                if f"The therapist suggests this {kind}" in last:
                    return self.rating_reply.format(score=next(self.scores[kind]))
            return "I have been feeling low and tired, and I keep to myself."
        if _marker(prompts.DECODER_INFERENCE) in last:
            return next(self.inferences)
        if _marker(prompts.DIAGNOSIS) in last:
            return "Summary: Low mood and withdrawal for months.\n1. Major depressive disorder\n2. Adjustment disorder"
        if "Propose one treatment" in last:
            return f"Treatment: Behavioural activation plan {next(self.proposals)}\nExplanation: It rebuilds routine."
        if "Propose one medication" in last:
            return f"Medication: Sertraline option {next(self.proposals)}\nExplanation: First-line for depression."
        return "How have you been sleeping lately?"
