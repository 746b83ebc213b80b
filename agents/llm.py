"""One place where the agents talk to chat models: role -> model, and ask-parse-retry."""

from __future__ import annotations

from typing import Callable, TypeVar

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from mentalarena.agents.models import load_chat_model
from mentalarena.agents.parsing import ParseError

T = TypeVar("T")


def chat_model(context, role: str):
    """The chat model playing ``role`` (patient, therapist, decoder) under the run's Context."""
    return load_chat_model(context.model_for(role), context.generation())


def ask(model, messages: list[BaseMessage], parse: Callable[[str], T], attempts: int) -> T:
    """Invoke the model and parse its text; a ParseError triggers a new sample, up to ``attempts``."""
    for attempt in Retrying(stop=stop_after_attempt(attempts), retry=retry_if_exception_type(ParseError), reraise=True):
        with attempt:
            return parse(model.invoke(messages).text)
    raise AssertionError("unreachable: tenacity reraises the last ParseError")


def ask_or_record(model, messages: list[BaseMessage], parse: Callable[[str], T], attempts: int) -> tuple[T | None, str, str]:
    """Like :func:`ask`, but past the bound returns (None, last reply, reason) instead of raising."""
    replies: list[str] = []

    def parse_and_keep(text: str) -> T:
        replies.append(text)
        return parse(text)

    try:
        return ask(model, messages, parse_and_keep, attempts), replies[-1], ""
    except ParseError as exc:
        return None, replies[-1], str(exc)


def role_messages(system: str, turns: list[dict], me: str, opening: str | None = None, task: str | None = None) -> list[BaseMessage]:
    """A role's view of the dialogue: its own turns as the assistant's, the other's as the user's."""
    messages: list[BaseMessage] = [SystemMessage(system)]
    if opening:
        messages.append(HumanMessage(opening))
    for turn in turns:
        messages.append(AIMessage(turn["text"]) if turn["speaker"] == me else HumanMessage(turn["text"]))
    if task:
        messages.append(HumanMessage(task))
    return messages
