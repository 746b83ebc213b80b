"""A scripted chat model: deterministic answers for testing graph logic without a network.

``ScriptedChatModel(respond=...)`` calls ``respond`` with the messages of each call and keeps every
call in ``calls``, so a test can check what each role was prompted with. ``respond`` returns text,
or an answer (agents/schemas.py): the model writes it as JSON when the call asks for its schema
(``response_format``, as the local and OpenAI-compatible backends take it) and in the labelled
free-text format otherwise. Returned text is sent as it is, which is how a test plays a backend
whose answer breaks its schema.

``RoleScript`` answers each of the arena's prompts; the model spec ``scripted`` selects it, so a
served graph (``langgraph dev``, Studio) can run a whole session with no model at all.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, TypeVar

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from mentalarena.agents import prompts
from mentalarena.agents.schemas import (
    Answer,
    DecoderInference,
    Diagnosis,
    DiagnosisReview,
    MedicationProposal,
    PrincipleChoice,
    Rating,
    TreatmentProposal,
)

UNRELATED_INFERENCE = DecoderInference(
    **{key: "The patient enjoys gardening on sunny days." for key in DecoderInference.model_fields}
)


class ScriptedChatModel(BaseChatModel):
    """A chat model whose every reply comes from ``respond``; each call's messages are kept in ``calls``."""

    respond: Callable[[list[BaseMessage]], str | Answer]
    calls: list[list[BaseMessage]] = Field(default_factory=list)
    accepts_response_format: ClassVar[bool] = True

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
        reply = self.respond(messages)
        if isinstance(reply, Answer):
            reply = reply.model_dump_json() if kwargs.get("response_format") else reply.as_text()
        return ChatResult(generations=[ChatGeneration(message=AIMessage(reply))])


T = TypeVar("T")


def _repeat_last(items: Iterable[T]) -> Iterator[T]:
    items = list(items)
    return itertools.chain(items, itertools.repeat(items[-1]))


def _marker(prompt: str) -> str:
    """A prompt's first line without placeholders: what identifies it inside a message."""
    return prompt.split("{")[0].splitlines()[0][:60]


class RoleScript:
    """Answers each arena prompt; lists are consumed in order, the last item repeats.

    ``rating_reply``, when given, is the patient's whole reply to a rating request (text, so a
    test can send one that does not parse)."""

    def __init__(
        self,
        inferences: Iterable[Answer | str] = (UNRELATED_INFERENCE,),
        treatment_scores: Iterable[int] = (9,),
        medication_scores: Iterable[int] = (9,),
        rating_reply: str | None = None,
    ) -> None:
        """Scripts the decoder inferences, the patient's treatment and medication scores, and its rating reply."""
        self.inferences = _repeat_last(inferences)
        self.scores = {"treatment": _repeat_last(treatment_scores), "medication": _repeat_last(medication_scores)}
        self.rating_reply = rating_reply
        self.proposals = itertools.count(1)

    def __call__(self, messages: list[BaseMessage]) -> str | Answer:
        """The reply to the arena prompt ``messages`` end with, recognized by its wording and the system prompt."""
        system, last = messages[0].text, messages[-1].text
        if "Which group of behaviour principles" in last:
            return PrincipleChoice(choice=1)
        if system.startswith(_marker(prompts.PATIENT_SYSTEM)):
            if "Which one fits you better" in last:
                return DiagnosisReview(choice=2, reason="It matches how I have felt.")
            for kind in ("treatment", "medication"):
                if f"The therapist suggests this {kind}" in last:
                    return self.rating_reply or Rating(reaction="I would feel better.", score=next(self.scores[kind]))
            return "I have been feeling low and tired, and I keep to myself."
        if _marker(prompts.DECODER_INFERENCE) in last:
            return next(self.inferences)
        if _marker(prompts.DIAGNOSIS) in last:
            return Diagnosis(
                summary="Low mood and withdrawal for months.",
                first="Major depressive disorder",
                second="Adjustment disorder",
                note="none",
            )
        if "Propose one treatment" in last:
            return TreatmentProposal(
                treatment=f"Behavioural activation plan {next(self.proposals)}", explanation="It rebuilds routine."
            )
        if "Propose one medication" in last:
            return MedicationProposal(
                medication=f"Sertraline option {next(self.proposals)}", explanation="First-line for depression."
            )
        return "How have you been sleeping lately?"
