"""Chat-mode graphs for LangGraph Studio and apps: a person talks with one agent.

- ``patient``: a simulated patient built from a profile; the person plays the therapist. A message
  starting with ``/decode`` and holding the labelled inference is scored by the symptom decoder.
- ``therapist``: the therapist agent; the person (or another app) plays the patient.
"""

from __future__ import annotations

import operator
from dataclasses import asdict
from typing import Annotated

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime

# Pydantic (Studio's input forms) needs this one before Python 3.12.
from typing_extensions import TypedDict

from mentalarena.agents import prompts
from mentalarena.agents.context import Context
from mentalarena.agents.decoder import score_inference
from mentalarena.agents.encoder import symptom_encoder
from mentalarena.agents.llm import ask, ask_or_record, chat_model
from mentalarena.agents.parsing import ParseError, require_text
from mentalarena.agents.patient import patient_messages
from mentalarena.agents.safety import check_therapist_turns, screen_turn
from mentalarena.agents.schemas import DecoderInference
from mentalarena.agents.state import ArenaState, Turn


class ChatInput(TypedDict, total=False):
    """The person's message."""

    messages: Annotated[list[AnyMessage], add_messages]


class PatientChatInput(ChatInput, total=False):
    """The person's message, and on the first turn which patient to simulate."""

    profile_id: str
    profile: dict


class PatientChatState(ArenaState, total=False):
    """The arena's state for one simulated patient, plus the chat's messages."""

    messages: Annotated[list[AnyMessage], add_messages]


class PatientChatOutput(TypedDict, total=False):
    """The chat's messages, and the decoder's rounds so far."""

    messages: Annotated[list[AnyMessage], add_messages]
    decoder_rounds: list[dict]


def _last_text(state: PatientChatState | TherapistChatState) -> str:
    return state["messages"][-1].text if state.get("messages") else ""


def after_start(state: PatientChatState) -> str:
    """Encode the patient on the first message; after that, route as :func:`after_encoding` does."""
    if not state.get("encoded"):
        return "symptom_encoder"
    return after_encoding(state)


def after_encoding(state: PatientChatState) -> str:
    """A ``/decode`` message goes to the symptom decoder, any other to the patient."""
    return (
        "decode_inference"
        if _last_text(state).lstrip().startswith(prompts.PATIENT_CHAT_DECODE_COMMAND)
        else "patient_reply"
    )


def patient_reply(state: PatientChatState, runtime: Runtime[Context]) -> dict:
    """The simulated patient's answer to the person's last message."""
    # The person's messages are the therapist's turns; the model's replies are the patient's.
    turns: list[Turn] = [
        {"speaker": "therapist" if isinstance(m, HumanMessage) else "patient", "phase": "inquiry", "text": m.text}
        for m in state["messages"]
    ]
    context = runtime.context
    text = ask(
        chat_model(context, "patient"),
        patient_messages({**state, "transcript": turns}),  # type: ignore[typeddict-unknown-key]  # the chat's own keys ride along
        require_text,
        context.parse_retries + 1,
    )
    return {"messages": [AIMessage(text, name="patient")]}


def decode_inference(state: PatientChatState, runtime: Runtime[Context]) -> dict:
    """Score the person's ``/decode`` inference against the encoded patient and reply with the similarities."""
    body = _last_text(state).lstrip()[len(prompts.PATIENT_CHAT_DECODE_COMMAND) :]
    try:
        inferred = DecoderInference.partial(body)
    except ParseError:
        return {"messages": [AIMessage(prompts.PATIENT_CHAT_DECODE_HELP, name="symptom_decoder")]}
    context = runtime.context
    round_record = score_inference(
        inferred, state["encoded"], context, round_number=len(state.get("decoder_rounds", [])) + 1, may_redirect=False
    )
    wording = DecoderInference.feedback_wording
    lines = "\n".join(f"- {wording[key][0]}: {value:.2f}" for key, value in round_record["similarities"].items())
    verdict = round_record["feedback"] or "No deviations: your picture matches the patient's."
    text = prompts.PATIENT_CHAT_SCORES.format(
        round=round_record["round"], threshold=context.similarity_threshold, lines=lines, verdict=verdict
    )
    return {"decoder_rounds": [round_record], "messages": [AIMessage(text, name="symptom_decoder")]}


def build_patient_chat_graph() -> StateGraph[PatientChatState, Context, PatientChatInput, PatientChatOutput]:
    """The patient chat graph, uncompiled: encode once, then a patient reply or a decoder score per message."""
    builder = StateGraph(
        PatientChatState, context_schema=Context, input_schema=PatientChatInput, output_schema=PatientChatOutput
    )
    builder.add_node("symptom_encoder", symptom_encoder)
    builder.add_node("patient_reply", patient_reply)
    builder.add_node("decode_inference", decode_inference)
    builder.add_conditional_edges(START, after_start, ["symptom_encoder", "patient_reply", "decode_inference"])
    builder.add_conditional_edges("symptom_encoder", after_encoding, ["patient_reply", "decode_inference"])
    builder.add_edge("patient_reply", END)
    builder.add_edge("decode_inference", END)
    return builder


class TherapistChatState(TypedDict, total=False):
    """The chat's messages, the risk events so far, and the last turn's screen."""

    messages: Annotated[list[AnyMessage], add_messages]
    risk_events: Annotated[list[dict], operator.add]
    last_screen: dict


class TherapistChatOutput(TypedDict, total=False):
    """The chat's messages, and the risk events so far."""

    messages: Annotated[list[AnyMessage], add_messages]
    risk_events: list[dict]


def screen_person(state: TherapistChatState, runtime: Runtime[Context]) -> dict:
    """Screen the person's turn for risk; a risk is recorded and streamed so an app can escalate."""
    context = runtime.context
    text = _last_text(state)
    screen = screen_turn(text, context)
    if not screen.risk:
        return {"last_screen": asdict(screen)}
    event = screen.as_event(text)
    get_stream_writer()(event)
    return {"last_screen": asdict(screen), "risk_events": [event]}


def after_screen(state: TherapistChatState) -> str:
    """A turn flagged as a risk gets the safe reply, any other the therapist's."""
    return "safe_reply" if state["last_screen"]["risk"] else "therapist_reply"


def therapist_reply(state: TherapistChatState, runtime: Runtime[Context]) -> dict:
    """The therapist's answer to the conversation so far."""
    context = runtime.context
    messages: list[BaseMessage] = [SystemMessage(prompts.THERAPIST_CHAT_SYSTEM), *state["messages"]]
    text = ask(chat_model(context, "therapist"), messages, require_text, context.parse_retries + 1)
    return {"messages": [AIMessage(text, name="therapist")]}


def safe_reply(state: TherapistChatState, runtime: Runtime[Context]) -> dict:
    """Safe-messaging practice: acknowledge, ask directly about safety, point to crisis resources.

    The model only words the acknowledgement; if that fails the safety check (or comes back
    empty), a fixed one is used. The safety question and resources are always the fixed text.
    """
    context = runtime.context
    messages: list[BaseMessage] = [SystemMessage(prompts.THERAPIST_RISK_SYSTEM), *state["messages"]]
    reply = ask_or_record(chat_model(context, "therapist"), messages, require_text, context.parse_retries + 1)
    acknowledgement = reply.text.strip()
    if reply.error or check_therapist_turns([{"speaker": "therapist", "phase": "chat", "text": acknowledgement}], {}):
        acknowledgement = prompts.SAFE_ACKNOWLEDGEMENT
    text = "\n\n".join([acknowledgement, prompts.SAFETY_QUESTION, prompts.CRISIS_RESOURCES[context.crisis_locale]])
    return {"messages": [AIMessage(text, name="therapist")]}


def build_therapist_chat_graph() -> StateGraph[TherapistChatState, Context, ChatInput, TherapistChatOutput]:
    """The therapist chat graph, uncompiled: screen each message for risk, then a safe or a therapist reply."""
    builder = StateGraph(
        TherapistChatState, context_schema=Context, input_schema=ChatInput, output_schema=TherapistChatOutput
    )
    builder.add_node("screen_risk", screen_person)
    builder.add_node("therapist_reply", therapist_reply)
    builder.add_node("safe_reply", safe_reply)
    builder.add_edge(START, "screen_risk")
    builder.add_conditional_edges("screen_risk", after_screen, ["therapist_reply", "safe_reply"])
    builder.add_edge("therapist_reply", END)
    builder.add_edge("safe_reply", END)
    return builder


patient_graph = build_patient_chat_graph().compile(name="patient")
therapist_graph = build_therapist_chat_graph().compile(name="therapist")
