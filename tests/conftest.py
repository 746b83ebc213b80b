from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from mentalarena.agents.encoder import encoded_fields, shortlist_groups
from mentalarena.agents.models import register_chat_model, unregister_chat_model
from mentalarena.agents.profiles import find_profile
from mentalarena.agents.schemas import DecoderInference
from mentalarena.agents.scripted import UNRELATED_INFERENCE, ScriptedChatModel

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
LANGGRAPH = Path(sys.executable).with_name("langgraph")

WRONG_INFERENCE = UNRELATED_INFERENCE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log_path, seconds: float = 90) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or never answers."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.5)
    process.kill()
    pytest.fail(f"server at {url} did not come up: {open(log_path).read()[-2000:]}")


@pytest.fixture(scope="module")
def langgraph_dev(tmp_path_factory):
    """The project's langgraph.json served by the real `langgraph dev` (in-memory), offline; yields its URL."""
    if not LANGGRAPH.exists():
        pytest.skip("langgraph-cli is not installed (pip install -e '.[test]')")
    port = free_port()
    env = {
        **os.environ,
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
    }
    log = open(tmp_path_factory.mktemp("server") / "server.log", "w")
    process = subprocess.Popen(
        [
            str(LANGGRAPH),
            "dev",
            "--no-browser",
            "--no-reload",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n-jobs-per-worker",
            "4",
            "--config",
            str(ROOT / "langgraph.json"),
        ],
        cwd=tmp_path_factory.mktemp("cwd"),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/ok", process, log.name)
    yield url
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"fixture data {path} is absent (it lives in the workspace's shared/data)")
    return path


def exact_inference(profile_id: str) -> DecoderInference:
    """The therapist's inference when it has understood the patient perfectly: the encoded text
    itself, longer than the schema lets a model write."""
    profile = find_profile(profile_id)
    group = shortlist_groups(profile.coping_strategies, "minilm", 3)[0]
    return DecoderInference(**encoded_fields(profile, group["principles"]))


@pytest.fixture
def scripted():
    """Register a scripted model under a fresh spec name; returns (spec, model)."""
    names = []

    def make(script) -> tuple[str, ScriptedChatModel]:
        name = f"scripted-{uuid.uuid4().hex[:8]}"
        model = ScriptedChatModel(respond=script)
        register_chat_model(name, model)
        names.append(name)
        return name, model

    yield make
    for name in names:
        unregister_chat_model(name)
