"""Embedding example: a parent graph that runs the arena for several profiles at once.

``Send`` fans out one arena subgraph run per profile id; the records are gathered in the parent's
state. Pass your own checkpointer to ``compile``; the subgraph shares it.
"""

from __future__ import annotations

import operator
from typing import Annotated

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from mentalarena.agents.context import Context
from mentalarena.agents.state import ArenaInput
from mentalarena.graphs.arena import build_arena_graph


class CohortState(TypedDict, total=False):
    """The profile ids to run, and the records of the sessions that ended."""

    profile_ids: list[str]
    records: Annotated[list[dict], operator.add]


def fan_out(state: CohortState) -> list[Send]:
    """One arena session per profile id, each with its own numbered session id."""
    return [
        Send("arena_session", {"profile_id": pid, "session_id": f"{i:04d}-{pid}"})
        for i, pid in enumerate(state["profile_ids"])
    ]


def build_cohort_graph() -> StateGraph[CohortState, Context, CohortState, CohortState]:
    """The parent graph, uncompiled: the arena as a subgraph run once per profile id, at the same time."""
    arena = build_arena_graph().compile()

    def arena_session(start: ArenaInput, runtime: Runtime[Context]) -> dict:
        return {"records": [arena.invoke(start, context=runtime.context)["record"]]}

    builder = StateGraph(CohortState, context_schema=Context)
    builder.add_node("arena_session", arena_session)  # type: ignore[call-overload]  # its input is the Send payload
    builder.add_conditional_edges(START, fan_out, ["arena_session"])
    builder.add_edge("arena_session", END)
    return builder
