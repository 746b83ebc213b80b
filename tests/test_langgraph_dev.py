"""The served graphs under the real `langgraph dev` server, driven with langgraph_sdk."""

import pytest
from langgraph_sdk import get_sync_client

SESSION = {"model": "scripted", "inquiry_turns": 1, "max_redirections": 1, "treatment_tries": 1, "medication_tries": 1}


@pytest.fixture(scope="module")
def server(langgraph_dev):
    return get_sync_client(url=langgraph_dev)


def test_lists_the_served_graphs(server):
    graphs = {a["graph_id"] for a in server.assistants.search(limit=20)}
    assert graphs == {"arena", "patient", "therapist"}


def test_the_arena_graph_shows_its_agents_and_the_deviation_edge(server):
    drawing = server.assistants.get_graph("arena")
    nodes = {node["id"] for node in drawing["nodes"]}
    assert {"symptom_encoder", "patient", "therapist", "symptom_decoder"} <= nodes
    edges = {(e["source"], e["target"], e.get("conditional", False)) for e in drawing["edges"]}
    assert ("symptom_decoder", "therapist", True) in edges


def test_a_session_with_a_scripted_model_streams_and_ends_with_a_record(server):
    thread = server.threads.create()
    modes, decoder_rounds = set(), []
    for part in server.runs.stream(
        thread["thread_id"],
        "arena",
        input={"profile_id": "builtin-02"},
        context=SESSION,
        stream_mode=["updates", "custom", "messages-tuple"],
    ):
        modes.add(part.event)
        if part.event == "custom" and part.data.get("event") == "decoder_round":
            decoder_rounds.append(part.data)
    assert {"updates", "custom", "messages"} <= modes
    assert [r["round"] for r in decoder_rounds] == [1, 2]
    record = server.threads.get_state(thread["thread_id"])["values"]["record"]
    assert record["profile_id"] == "builtin-02" and record["illness"] == "Adjustment disorder" and record["treatment"]


def test_a_human_turn_pauses_the_session_and_resumes_it(server):
    thread = server.threads.create()
    context = {**SESSION, "human_role": "patient"}
    server.runs.wait(thread["thread_id"], "arena", input={"profile_id": "builtin-01"}, context=context)
    state = server.threads.get_state(thread["thread_id"])
    assert state["next"] == ["patient"]
    assert state["interrupts"][0]["value"]["kind"] == "turn"
    server.runs.wait(thread["thread_id"], "arena", command={"resume": "I feel stuck and tired."}, context=context)
    state = server.threads.get_state(thread["thread_id"])
    assert state["values"]["transcript"][0] == {
        "speaker": "patient",
        "phase": "inquiry",
        "text": "I feel stuck and tired.",
    }
    assert state["interrupts"][0]["value"]["therapist_said"] == "How have you been sleeping lately?"
