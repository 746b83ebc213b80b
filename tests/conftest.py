from __future__ import annotations

import socket
import subprocess
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

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

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
