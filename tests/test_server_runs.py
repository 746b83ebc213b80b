"""`mentalarena run --server`: sessions as runs on a real `langgraph dev` server, records in the local run folder."""

import json
import signal
import subprocess
import sys
import time
import uuid

from langgraph_sdk import get_sync_client

from conftest import free_port
from mentalarena.agents.profiles import builtin_profiles
from mentalarena.cli import main
from mentalarena.graphs.remote import describe_difference, local_graph_signature, session_thread_id
from mentalarena.graphs.run import session_plan

SESSION_FLAGS = [
    "--model",
    "scripted",
    "--inquiry-turns",
    "1",
    "--max-redirections",
    "1",
    "--treatment-tries",
    "1",
    "--medication-tries",
    "1",
    "--quiet",
]


def mentalarena(*args: str) -> list[str]:
    return [sys.executable, "-m", "mentalarena.cli", *args]


def read_records(folder) -> list[dict]:
    path = folder / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_killed_client_resumes_and_every_session_ends_exactly_once(langgraph_dev, tmp_path):
    out = tmp_path / "run"
    command = mentalarena(
        "run", "--server", langgraph_dev, "--sessions", "12", "--concurrency", "4", "--out", str(out), *SESSION_FLAGS
    )
    client = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while len(read_records(out)) < 2 and client.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.poll() is None, f"the client ended before it could be killed: {client.stdout.read()}"
    client.send_signal(signal.SIGKILL)
    client.wait()
    ended_before_the_kill = len(read_records(out))
    assert 2 <= ended_before_the_kill < 12

    resumed = subprocess.run(
        mentalarena(
            "run",
            "--server",
            langgraph_dev,
            "--sessions",
            "12",
            "--concurrency",
            "4",
            "--out",
            str(out),
            "--resume",
            *SESSION_FLAGS,
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{ended_before_the_kill} already finished before this run" in resumed.stdout

    records = read_records(out)
    session_ids = [session_id for session_id, _ in session_plan(builtin_profiles(), 12)]
    assert sorted(r["session_id"] for r in records) == session_ids
    assert all(r["status"] == "done" and r["illness"] and r["treatment"] and r["transcript"] for r in records)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["server"] == {"url": langgraph_dev, "assistant": "arena"}
    server = get_sync_client(url=langgraph_dev)
    for session_id in session_ids:
        runs = server.runs.list(session_thread_id(manifest["run_id"], session_id), limit=20)
        assert [run["status"] for run in runs] == ["success"], session_id  # one run per session: none repeated
        assert runs[0]["metadata"]["session_id"] == session_id


def test_a_run_that_errors_on_the_server_is_a_failed_session_with_the_servers_reason(langgraph_dev, tmp_path):
    dead_endpoint = f"http://127.0.0.1:{free_port()}/v1"
    status = main(
        [
            "run",
            "--server",
            langgraph_dev,
            "--sessions",
            "1",
            "--out",
            str(tmp_path),
            "--model",
            "openai:no-such-model",
            "--base-url",
            dead_endpoint,
            "--call-retries",
            "0",
            "--quiet",
        ]
    )
    assert status == 1
    [record] = read_records(tmp_path)
    assert record["status"] == "failed" and record["session_id"] == "0000-builtin-01"
    assert record["error"].startswith("ServerRunError: ") and "Connection" in record["error"], record["error"]


def test_a_server_that_is_down_is_a_clear_error_before_anything_runs(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    status = main(["run", "--server", url, "--out", str(tmp_path / "run"), *SESSION_FLAGS])
    assert status == 2
    error = capsys.readouterr().err
    assert f"cannot reach a LangGraph server at {url}" in error and "langgraph dev" in error
    assert not (tmp_path / "run" / "records.jsonl").exists() and not (tmp_path / "run" / "manifest.json").exists()


def test_an_unknown_assistant_is_a_clear_error(langgraph_dev, tmp_path, capsys):
    assert (
        main(["run", "--server", langgraph_dev, "--assistant", "arena-v2", "--out", str(tmp_path), *SESSION_FLAGS]) == 2
    )
    error = capsys.readouterr().err
    assert "--assistant: the server" in error and "'arena-v2'" in error and "arena, patient, therapist" in error


def test_a_server_serving_another_graph_is_refused(langgraph_dev, tmp_path, capsys):
    # The patient chat graph stands in for an arena of another version: its nodes and schemas differ.
    assert (
        main(["run", "--server", langgraph_dev, "--assistant", "patient", "--out", str(tmp_path), *SESSION_FLAGS]) == 2
    )
    error = capsys.readouterr().err
    assert (
        "is not the arena graph this client runs" in error
        and "nodes (only here: " in error
        and "symptom_decoder" in error
    )


def test_the_graph_signature_names_what_differs():
    ours = local_graph_signature()
    theirs = {
        **ours,
        "context_schema": [name for name in ours["context_schema"] if name != "risk_screen"] + ["risk_policy"],
    }
    assert describe_difference(ours, ours) == ""
    assert (
        describe_difference(ours, theirs) == "context schema (only here: risk_screen; only on the server: risk_policy)"
    )


def test_thread_ids_are_the_same_for_the_same_run_and_session():
    run = "0f6c2a8e-4d8b-4c1e-9a53-2f1d6f1f7b10"
    assert session_thread_id(run, "0000-builtin-01") == session_thread_id(run, "0000-builtin-01")
    assert session_thread_id(run, "0000-builtin-01") != session_thread_id(run, "0001-builtin-02")
    assert uuid.UUID(session_thread_id(run, "x")).version == 5  # a UUID, as the server's thread ids are
