"""The openai:<model> backend against a real OpenAI-compatible server on localhost.

llama-cpp-python's server serves the embedded model's own GGUF file. It compiles for minutes,
so it is not a project dependency: point MENTALARENA_LLAMA_SERVER_PYTHON at a Python that has
`llama-cpp-python[server]` installed, or the test skips.
"""

import os
import subprocess
from pathlib import Path

import pytest

from mentalarena.agents.models import embedded_gguf_path
from mentalarena.agents.profiles import builtin_profiles
from mentalarena.graphs.context import Context
from mentalarena.graphs.run import run_sessions

from conftest import free_port, wait_until_up

SERVER_PYTHON = os.environ.get("MENTALARENA_LLAMA_SERVER_PYTHON", "")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    if not SERVER_PYTHON or not Path(SERVER_PYTHON).exists():
        pytest.skip("no llama.cpp server: set MENTALARENA_LLAMA_SERVER_PYTHON to a Python with llama-cpp-python[server]")
    port = free_port()
    log = open(tmp_path_factory.mktemp("llama") / "server.log", "w")
    process = subprocess.Popen([SERVER_PYTHON, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path()), "--host", "127.0.0.1",
                                "--port", str(port), "--n_ctx", "4096", "--model_alias", "smollm2"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    wait_until_up(f"{url}/models", process, log.name, seconds=120)
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_a_session_over_an_openai_compatible_endpoint(llama_server, tmp_path):
    # The same server under two names exercises the round-robin over replicas.
    replicas = f"{llama_server},{llama_server.replace('127.0.0.1', 'localhost')}"
    context = Context(model="openai:smollm2", base_url=replicas, inquiry_turns=1, max_redirections=0, treatment_tries=1,
                      medication_tries=1, max_new_tokens=48, parse_retries=1)
    summary = run_sessions(builtin_profiles()[:2], context, tmp_path, sessions=2, progress=False, concurrency=2)
    assert summary.done == 2, (tmp_path / "records.jsonl").read_text()
    manifest = (tmp_path / "manifest.json").read_text()
    assert "unused" not in manifest  # the placeholder key never reaches the run folder
