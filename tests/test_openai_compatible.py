"""The openai:<model> backend against a real OpenAI-compatible server on localhost.

llama-cpp-python's server (the ``test`` extra installs it) serves the embedded model's own GGUF
file. It is the strictest dialect the project meets: it ignores ``max_completion_tokens`` and
refuses the ``json_schema`` response format, so passing here means the budget and the structured
answers reach a server that honours only ``max_tokens`` and ``json_object`` with a schema.
"""

import json
import subprocess
import sys

import pytest

from conftest import free_port, wait_until_up
from mentalarena.agents.context import Context
from mentalarena.agents.models import GenerationSettings, embedded_gguf_path, load_chat_model
from mentalarena.agents.profiles import builtin_profiles
from mentalarena.agents.schemas import Rating
from mentalarena.graphs.run import run_sessions


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("llama") / "server.log", "w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(embedded_gguf_path()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "4096",
            "--model_alias",
            "smollm2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    wait_until_up(f"{url}/models", process, log.name, seconds=120)
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_the_endpoint_gets_its_own_dialect_and_budget(llama_server):
    model = load_chat_model(
        "openai:smollm2", GenerationSettings(temperature=0, max_new_tokens=5, base_url=llama_server)
    )
    assert model.dialect() == "json_object"  # detected: the server refused json_schema
    payload = model._get_request_payload([("user", "hi")], response_format=Rating.response_format())
    assert payload["max_tokens"] == payload["max_completion_tokens"] == 5
    assert payload["response_format"] == {"type": "json_object", "schema": Rating.json_schema()}
    reply = model.invoke("Write a long story about a cat.")
    assert reply.response_metadata["token_usage"]["completion_tokens"] <= 5  # the server honoured the budget


def test_sessions_over_an_openai_compatible_endpoint_answer_in_their_schemas(llama_server, tmp_path):
    # The same server under two names exercises the round-robin over replicas: one session's calls
    # alternate between them (the server answers one request at a time, so more sessions only add time).
    replicas = f"{llama_server},{llama_server.replace('127.0.0.1', 'localhost')}"
    context = Context(
        model="openai:smollm2",
        base_url=replicas,
        inquiry_turns=1,
        max_redirections=0,
        treatment_tries=1,
        medication_tries=1,
        max_new_tokens=48,
        parse_retries=2,
        request_timeout=120,
    )
    summary = run_sessions(builtin_profiles()[:1], context, tmp_path, sessions=1, progress=False)
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert summary.done == 1 and summary.failed == 0, records
    for record in records:
        assert record["failures"] == [], record["failures"]
        answers = record["answers"]
        assert {a["node"] for a in answers} >= {
            "symptom_decoder",
            "diagnosis",
            "patient_diagnosis_review",
            "propose_treatment",
            "rate_treatment",
            "propose_medication",
            "rate_medication",
        }
        assert all(a["constrained"] and a["json"] and a["parsed"] for a in answers), (
            answers
        )  # the server held each to its schema
    manifest = (tmp_path / "manifest.json").read_text()
    assert "unused" not in manifest  # the placeholder key never reaches the run folder
