"""One place where the agents talk to chat models: role -> model, structured answers, ask-parse-retry.

A machine-read answer (agents/schemas.py) is asked for in its schema wherever the backend can
enforce one, and read by the tolerant parser elsewhere:
- ``response_format``: OpenAI's parameter. OpenAI-compatible servers (each in its own dialect,
  see models.py), the local models (grammar-constrained decoding) and the scripted model take it.
- ``tools``: another provider's own ``with_structured_output``.
- ``none``: free text in the labelled format, parsed leniently (also when a person plays the
  role, or when Context.structured_output is 'off').
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.types import interrupt

from mentalarena.agents.models import GenerationSettings, load_chat_model
from mentalarena.agents.parsing import ParseError
from mentalarena.agents.schemas import Answer

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable

    from mentalarena.agents.context import Context

T = TypeVar("T")
ROLES = {"system": "system", "human": "user", "ai": "assistant"}  # langchain message types -> chat roles
A = TypeVar("A", bound=Answer)


def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors worth another try with backoff: timeouts, dropped connections, rate limits, 5xx."""
    import httpx
    import openai

    return (
        TimeoutError,
        ConnectionError,
        httpx.TransportError,
        openai.APITimeoutError,
        openai.APIConnectionError,
        openai.RateLimitError,
        openai.InternalServerError,
    )


def structured_output_support(model: BaseChatModel) -> str:
    """How ``model`` answers in a schema: 'response_format', 'tools' or 'none' (see the module docstring)."""
    replicas = getattr(model, "replicas", None)
    if replicas:
        kinds = {structured_output_support(replica) for replica in replicas}
        return kinds.pop() if len(kinds) == 1 else "none"
    if getattr(model, "accepts_response_format", False):
        return "response_format"
    if type(model).bind_tools is not BaseChatModel.bind_tools:
        return "tools"
    return "none"


@dataclass
class Reply(Generic[T]):
    """What one ask came to: the value (None when it never parsed), the last reply's text, why it
    did not parse, and whether the backend enforced the answer's schema."""

    value: T | None
    text: str
    error: str = ""
    constrained: bool = False
    attempts: int = 1
    prompt: list[dict] = field(default_factory=list)  # a model's: the messages that asked (role, content)


class RoleModel:
    """The chat model playing a role: transient errors retried with exponential backoff and jitter
    (``call_retries``), calls tagged with the role (so a ``messages``-mode stream says who is
    speaking), free text or answers in a schema."""

    def __init__(
        self,
        model: BaseChatModel,
        settings: GenerationSettings,
        role: str = "",
        call_retries: int = 0,
        backoff_seconds: float = 1.0,
        structured: bool = True,
    ):
        """Wraps ``model``; with ``structured`` False every answer is asked for as free text."""
        self.model, self.settings = model, settings
        self.support = structured_output_support(model) if structured else "none"
        self._retry: dict[str, Any] | None = (
            dict(
                retry_if_exception_type=transient_errors(),
                stop_after_attempt=call_retries + 1,
                exponential_jitter_params={"multiplier": backoff_seconds, "jitter": backoff_seconds, "max": 30.0},
            )
            if call_retries
            else None
        )
        self._config: dict[str, Any] = {"tags": [role], "metadata": {"speaker": role}} if role else {}

    @property
    def constrained(self) -> bool:
        """Whether the backend enforces an answer's schema."""
        return self.support != "none"

    def _runnable(self, runnable: Runnable[Any, Any]) -> Runnable[Any, Any]:
        if self._retry:
            runnable = runnable.with_retry(**self._retry)
        return runnable.with_config(**self._config) if self._config else runnable

    def text(self, messages: list[BaseMessage]) -> str:
        """The model's free-text reply to ``messages``."""
        return self._runnable(self.model).invoke(messages).text

    def answer(self, messages: list[BaseMessage], schema: type[Answer]) -> str:
        """The reply's text to a request for ``schema``: JSON where the backend enforces the schema
        (its text fields cut to the settings' token budget), else free text."""
        import openai

        budget = max(self.settings.max_new_tokens, schema.token_budget(self.settings.max_new_tokens))
        if self.support == "response_format":
            response_format = schema.response_format(self.settings.max_new_tokens)
            try:
                return (
                    self._runnable(self.model.bind(response_format=response_format, max_tokens=budget))
                    .invoke(messages)
                    .text
                )
            except openai.LengthFinishReasonError as exc:  # the OpenAI client refuses a truncated structured answer
                raise ParseError(f"the answer ran out of its {budget}-token budget before its JSON closed") from exc
        if self.support == "tools":
            raw = self._runnable(self.model.with_structured_output(schema, include_raw=True)).invoke(messages)
            if raw.get("parsed") is not None:
                return raw["parsed"].model_dump_json()
            return raw["raw"].text
        return (
            self._runnable(self.model.bind(max_tokens=budget) if budget != self.settings.max_new_tokens else self.model)
            .invoke(messages)
            .text
        )


def chat_model(context: Context, role: str) -> RoleModel:
    """The model playing ``role`` (patient, therapist, decoder) under the run's Context."""
    settings = context.generation()
    return RoleModel(
        load_chat_model(context.model_for(role), settings),
        settings,
        role=role,
        call_retries=context.call_retries,
        backoff_seconds=context.retry_backoff_seconds,
        structured=context.structured_output != "off",
    )


def ask(model: RoleModel, messages: list[BaseMessage], parse: Callable[[str], T], attempts: int) -> T:
    """Free text parsed by ``parse``; a ParseError triggers a new sample, up to ``attempts``, and
    past them is raised."""
    reply = ask_or_record(model, messages, parse, attempts)
    if reply.value is None:
        raise ParseError(reply.error)
    return reply.value


def ask_or_record(model: RoleModel, messages: list[BaseMessage], parse: Callable[[str], T], attempts: int) -> Reply[T]:
    """Like :func:`ask`, but past the bound returns the reply with its reason instead of raising."""
    return _until_parsed(lambda: model.text(messages), parse, attempts, constrained=False)


def answer_or_record(model: RoleModel, messages: list[BaseMessage], schema: type[A], attempts: int) -> Reply[A]:
    """An answer in ``schema``: constrained where the backend can; a reply that is not JSON after all
    (a server that ignored the schema) is read leniently too. One that does not validate triggers
    a new sample, up to ``attempts``."""
    reply = _until_parsed(
        lambda: model.answer(messages, schema), schema.parse_text, attempts, constrained=model.constrained
    )
    reply.prompt = [{"role": ROLES.get(m.type, m.type), "content": m.text} for m in messages]
    return reply


def _until_parsed(reply: Callable[[], str], parse: Callable[[str], T], attempts: int, constrained: bool) -> Reply[T]:
    text, error = "", ""
    for attempt in range(1, attempts + 1):
        try:
            text = reply()  # may itself raise ParseError: a reply the backend could not complete
            return Reply(parse(text), text, constrained=constrained, attempts=attempt)
        except ParseError as exc:
            error = str(exc)
    return Reply(None, text, error, constrained=constrained, attempts=attempts)


def speak(
    context: Context, role: str, messages: list[BaseMessage], parse: Callable[[str], T], request: dict
) -> Reply[T]:
    """One free-text turn of ``role``. When the Context gives the role to a person, the graph
    pauses with ``interrupt(request)`` and resumes with the person's text."""
    if context.human_role == role:
        return _person(role, request, parse)
    return ask_or_record(chat_model(context, role), messages, parse, context.parse_retries + 1)


def answer(context: Context, role: str, messages: list[BaseMessage], schema: type[A], request: dict) -> Reply[A]:
    """One machine-read answer of ``role`` in ``schema``; a person's answer is parsed leniently."""
    if context.human_role == role:
        return _person(role, request, schema.parse_text)
    return answer_or_record(chat_model(context, role), messages, schema, context.parse_retries + 1)


def _person(role: str, request: dict, parse: Callable[[str], T]) -> Reply[T]:
    text = str(interrupt({"role": role, **request}))
    try:
        return Reply(parse(text), text)
    except ParseError as exc:
        return Reply(None, text, str(exc))


def answer_log(node: str, schema: type[Answer], reply: Reply) -> dict:
    """What the record keeps of a machine-read answer: how it was asked for and whether it parsed;
    for a model's parsed answer also the prompt and the answer as JSON, so that the export can
    train on answering in the schema (training/export.py, kind ``structured_answers``)."""
    log = {
        "node": node,
        "schema": schema.__name__,
        "constrained": reply.constrained,
        "json": reply.text.lstrip().startswith("{"),
        "parsed": reply.value is not None,
        "attempts": reply.attempts,
    }
    if reply.value is not None and reply.prompt:
        log.update(prompt=reply.prompt, answer=reply.value.model_dump_json())
    return log


def role_messages(
    system: str, turns: Sequence[Mapping[str, Any]], me: str, opening: str | None = None, task: str | None = None
) -> list[BaseMessage]:
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
