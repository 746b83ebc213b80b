"""One place where the agents talk to chat models: role -> model, and ask-parse-retry."""

from __future__ import annotations

from typing import Callable, TypeVar

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.types import interrupt
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from mentalarena.agents.models import load_chat_model
from mentalarena.agents.parsing import ParseError

T = TypeVar("T")


def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors worth another try with backoff: timeouts, dropped connections, rate limits, 5xx."""
    import httpx
    import openai

    return (TimeoutError, ConnectionError, httpx.TransportError, openai.APITimeoutError, openai.APIConnectionError,
            openai.RateLimitError, openai.InternalServerError)


def chat_model(context, role: str):
    """The chat model playing ``role`` (patient, therapist, decoder) under the run's Context.

    Transient errors are retried with exponential backoff and jitter, up to ``call_retries`` times;
    the model is tagged with the role, so a ``messages``-mode stream says who is speaking.
    """
    model = load_chat_model(context.model_for(role), context.generation())
    if context.call_retries:
        model = model.with_retry(
            retry_if_exception_type=transient_errors(),
            stop_after_attempt=context.call_retries + 1,
            exponential_jitter_params={"multiplier": context.retry_backoff_seconds, "jitter": context.retry_backoff_seconds, "max": 30.0},
        )
    return model.with_config(tags=[role], metadata={"speaker": role})


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


def speak(context, role: str, messages: list[BaseMessage], parse: Callable[[str], T], request: dict) -> tuple[T | None, str, str]:
    """One turn of ``role``, returned as (parsed or None, text, parse error or '').

    When the Context gives the role to a person, the graph pauses with ``interrupt(request)`` and
    resumes with the person's text; otherwise the role's model answers.
    """
    if context.human_role == role:
        text = str(interrupt({"role": role, **request}))
        try:
            return parse(text), text, ""
        except ParseError as exc:
            return None, text, str(exc)
    return ask_or_record(chat_model(context, role), messages, parse, context.parse_retries + 1)


def role_messages(system: str, turns: list[dict], me: str, opening: str | None = None, task: str | None = None) -> list[BaseMessage]:
    """A role's view of the dialogue: its own turns as the assistant's, the other's as the user's.

    Each of its own turns follows the instruction it was given for that turn, as that turn's
    prompt had it: so every prompt extends the role's previous prompt and reply, and a local
    model's prefix cache prefills only the new turns.
    """
    messages: list[BaseMessage] = [SystemMessage(system)]
    if opening:
        messages.append(HumanMessage(opening))
    for turn in turns:
        if turn["speaker"] != me:
            messages.append(HumanMessage(turn["text"]))
            continue
        if turn.get("instruction"):
            messages.append(HumanMessage(turn["instruction"]))
        messages.append(AIMessage(turn["text"]))
    if task:
        messages.append(HumanMessage(task))
    return messages
