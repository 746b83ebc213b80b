"""Self-play sessions as runs on a LangGraph server (``langgraph dev``, ``langgraph up``, a
self-hosted deployment or LangGraph Platform), through ``langgraph_sdk``.

Each session is a background run on its own thread. The thread id is derived from the run
folder's id and the session id, so a resumed client finds the thread again: it joins a run
still in flight, takes the record of a run that finished while no client was watching, and
starts a new run (continuing from the thread's last checkpoint) where a run ended without one.
The server's queue, persistence and workers do the rest.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import httpx
from langgraph_sdk import get_client
from langgraph_sdk.errors import NotFoundError
from langgraph_sdk.schema import ThreadState

from mentalarena.agents.context import Context
from mentalarena.agents.profiles import PatientProfile

if TYPE_CHECKING:
    from langgraph_sdk.client import LangGraphClient

IN_FLIGHT = ("pending", "running")
# What has to match between the client's arena graph and the server's for their records to be
# the same kind of record: the graph's nodes and edges, and its context, input, output and state schemas.
SCHEMAS = ("context_schema", "input_schema", "output_schema", "state_schema")

Play = Callable[[str, PatientProfile], Awaitable[dict]]


class ServerError(RuntimeError):
    """A server the run cannot use: unreachable, without the assistant, or serving another graph."""


class ServerRunError(RuntimeError):
    """A session's run that ended on the server without a record; the message is the server's reason."""


def session_thread_id(run_id: str, session_id: str) -> str:
    """The thread a session runs on: the same for the same run folder and session, on any machine."""
    return str(uuid.uuid5(uuid.UUID(run_id), session_id))


def graph_signature(drawing: dict, schemas: Mapping[str, Any]) -> dict:
    """The parts of a served graph that decide what its records hold, in a comparable form."""
    return {
        "nodes": sorted(node["id"] for node in drawing["nodes"]),
        "edges": sorted(
            f"{edge['source']}->{edge['target']}" + (" (conditional)" if edge.get("conditional") else "")
            for edge in drawing["edges"]
        ),
        **{name: sorted((schemas.get(name) or {}).get("properties", {})) for name in SCHEMAS},
    }


def local_graph_signature() -> dict:
    """:func:`graph_signature` of this client's arena graph, computed as a server computes it."""
    from mentalarena.graphs.arena import graph

    drawing = graph.get_graph().to_json()
    schemas = {
        "context_schema": graph.get_context_jsonschema(),
        "input_schema": graph.get_input_jsonschema(),
        "output_schema": graph.get_output_jsonschema(),
        # The server's state schema has a property per stream channel (langgraph_api's _state_jsonschema).
        "state_schema": {"properties": dict.fromkeys(graph.stream_channels_list)},
    }
    return graph_signature(drawing, schemas)


def describe_difference(client_side: dict, server_side: dict) -> str:
    """What differs between two graph signatures, part by part; '' when they match."""
    parts = []
    for key in client_side:
        ours, theirs = set(client_side[key]), set(server_side.get(key, []))
        if ours != theirs:
            only = [
                f"only here: {', '.join(sorted(ours - theirs))}" if ours - theirs else "",
                f"only on the server: {', '.join(sorted(theirs - ours))}" if theirs - ours else "",
            ]
            parts.append(f"{key.replace('_', ' ')} ({'; '.join(p for p in only if p)})")
    return "; ".join(parts)


async def resolve_assistant(client: LangGraphClient, url: str, assistant: str) -> str:
    """The id of ``assistant`` (an assistant id, or a graph id for its default assistant) on the server.

    Raises :class:`ServerError` when the server cannot be reached or serves no such assistant."""
    try:
        try:
            if is_uuid(assistant):
                return (await client.assistants.get(assistant))["assistant_id"]
            found = await client.assistants.search(graph_id=assistant, limit=1)
            if found:
                return found[0]["assistant_id"]
        except NotFoundError:
            pass
        served = sorted({a["graph_id"] for a in await client.assistants.search(limit=100)})
    except httpx.TransportError as exc:
        raise ServerError(
            f"--server: cannot reach a LangGraph server at {url} ({type(exc).__name__}: {exc}); "
            "start one (langgraph dev, langgraph up) or check the URL"
        ) from None
    except httpx.HTTPStatusError as exc:
        raise ServerError(
            f"--server: {url} is not a LangGraph server that serves assistants "
            f"(HTTP {exc.response.status_code} for {exc.request.url.path})"
        ) from None
    raise ServerError(
        f"--assistant: the server at {url} has no assistant or graph {assistant!r}"
        + (f"; it serves {', '.join(served)}" if served else "")
    )


def is_uuid(text: str) -> bool:
    """Whether ``text`` reads as a UUID."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


async def check_server(client: LangGraphClient, url: str, assistant: str) -> str:
    """The assistant id to run sessions with, once ``url`` answers, serves ``assistant``, and its
    graph is this client's arena; otherwise :class:`ServerError`."""
    assistant_id = await resolve_assistant(client, url, assistant)
    drawing = await client.assistants.get_graph(assistant_id)
    schemas = await client.assistants.get_schemas(assistant_id)
    difference = describe_difference(local_graph_signature(), graph_signature(drawing, schemas))
    if difference:
        raise ServerError(
            f"--server: the graph {assistant!r} at {url} is not the arena graph this client runs: "
            f"{difference}. Choose the arena's assistant, or install the same mentalarena version on both sides"
        )
    return assistant_id


def record_of(state: ThreadState) -> dict | None:
    """The session record in a thread's state, if the session has ended."""
    values = state["values"]
    return values.get("record") if isinstance(values, dict) else None


def failure_reason(run: Mapping[str, Any], joined: object) -> str:
    """The server's reason for a run that ended without a record."""
    error = joined.get("__error__") if isinstance(joined, dict) else None
    if isinstance(error, dict):
        return f"{error.get('error', 'Error')}: {error.get('message', '')}".rstrip(": ")
    return f"the run ended with status {run['status']!r}"


async def join(client: LangGraphClient, thread_id: str, run_id: str) -> object:
    """Wait for a run however long it takes: a session on a slow model outlasts one read timeout."""
    while True:
        try:
            return await client.runs.join(thread_id, run_id)
        except httpx.ReadTimeout:
            continue


@contextlib.asynccontextmanager
async def server_player(url: str, assistant: str, context: Context, run_id: str) -> AsyncIterator[Play]:
    """A coroutine that plays one session on the server and returns its record, once the server checks out."""
    # A deployment's key comes from LANGGRAPH_API_KEY (or LANGSMITH_API_KEY). No pool timeout: with a
    # high --concurrency, a request may wait for a free connection for as long as sessions take.
    client = get_client(url=url, timeout=(10, 300, 60, None))  # connect, read, write, pool
    settings = context.as_dict()
    try:
        assistant_id = await check_server(client, url, assistant)

        async def play(session_id: str, profile: PatientProfile) -> dict:
            thread_id = session_thread_id(run_id, session_id)
            await client.threads.create(
                thread_id=thread_id,
                if_exists="do_nothing",
                metadata={"mentalarena_run": run_id, "session_id": session_id},
            )
            in_flight = [run for run in await client.runs.list(thread_id, limit=100) if run["status"] in IN_FLIGHT]
            if in_flight:
                run = in_flight[0]
            else:
                state = await client.threads.get_state(thread_id)
                if record := record_of(state):
                    return record  # finished while no client was waiting for it
                # Pending tasks, not `next`, tell an unfinished session (as in graphs.run.run_session).
                start: dict[str, Any] | None = None
                if not state["tasks"]:
                    start = {"profile": profile.to_patient_psi(), "session_id": session_id}
                run = await client.runs.create(
                    thread_id,
                    assistant_id,
                    input=start,
                    context=settings,
                    multitask_strategy="reject",
                    metadata={"mentalarena_run": run_id, "session_id": session_id},
                )
            joined = await join(client, thread_id, run["run_id"])
            run = await client.runs.get(thread_id, run["run_id"])
            if run["status"] == "success":
                state = await client.threads.get_state(thread_id)
                if record := record_of(state):
                    return record
                if state["tasks"]:
                    raise ServerRunError(
                        f"the run stopped before {', '.join(t['name'] for t in state['tasks'])} without a record "
                        "(an interrupt: a human turn or a feedback review)"
                    )
            raise ServerRunError(failure_reason(run, joined))

        yield play
    finally:
        await client.aclose()
