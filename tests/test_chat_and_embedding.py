"""The chat graphs and the fan-out embedding example, with a scripted model."""

from langgraph.checkpoint.memory import InMemorySaver

from conftest import exact_inference
from mentalarena.agents.context import Context
from mentalarena.agents.scripted import RoleScript
from mentalarena.graphs.chat import build_patient_chat_graph, build_therapist_chat_graph
from mentalarena.graphs.fan_out import build_cohort_graph


def test_a_person_talks_with_the_simulated_patient_and_has_their_inference_scored(scripted):
    spec, model = scripted(RoleScript())
    graph = build_patient_chat_graph().compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "c"}}
    context = Context(model=spec)

    out = graph.invoke(
        {"profile_id": "builtin-01", "messages": [("human", "What brings you here?")]}, config, context=context
    )
    assert out["messages"][-1].content.startswith("I have been feeling low")
    patient_call = model.calls[-1]
    assert "You are Daniel" in patient_call[0].content and patient_call[-1].content == "What brings you here?"

    out = graph.invoke(
        {"messages": [("human", "/decode\n" + exact_inference("builtin-01").as_text())]}, config, context=context
    )
    assert "No deviations" in out["messages"][-1].content
    assert out["decoder_rounds"][0]["deviations"] == []

    out = graph.invoke({"messages": [("human", "/decode\nCoping strategies: plays chess")]}, config, context=context)
    assert "coping strategies" in out["messages"][-1].content and len(out["decoder_rounds"]) == 2
    calls_before = len(model.calls)
    out = graph.invoke({"messages": [("human", "/decode nothing labelled")]}, config, context=context)
    assert out["messages"][-1].content.startswith("To have the symptom decoder score")
    assert len(model.calls) == calls_before  # the encoder ran once, on the first turn


def test_a_person_talks_with_the_therapist(scripted):
    spec, model = scripted(RoleScript())
    graph = build_therapist_chat_graph().compile()
    out = graph.invoke({"messages": [("human", "I have not slept well for weeks.")]}, context=Context(model=spec))
    assert out["messages"][-1].content == "How have you been sleeping lately?"
    assert "not a human clinician" in model.calls[-1][0].content


def test_the_arena_embeds_as_a_subgraph_fanned_out_with_send(scripted):
    spec, _ = scripted(RoleScript())
    graph = build_cohort_graph().compile(checkpointer=InMemorySaver())
    context = Context(model=spec, inquiry_turns=1, max_redirections=0, treatment_tries=1, medication_tries=1)
    out = graph.invoke(
        {"profile_ids": ["builtin-01", "builtin-02", "builtin-03"]},
        {"configurable": {"thread_id": "f"}},
        context=context,
    )
    assert sorted(r["profile_id"] for r in out["records"]) == ["builtin-01", "builtin-02", "builtin-03"]
    assert all(r["treatment"] and r["transcript"] for r in out["records"])
