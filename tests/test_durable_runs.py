"""Durable runs: a SIGKILL mid-run and --resume; injected model faults across concurrent sessions."""

import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from mentalarena.agents.context import Context
from mentalarena.agents.profiles import builtin_profiles
from mentalarena.agents.scripted import RoleScript
from mentalarena.graphs.run import run_sessions

SESSIONS = 6
RUNNER = """
import sys, time
from mentalarena.agents.models import register_chat_model
from mentalarena.agents.scripted import RoleScript, ScriptedChatModel
from mentalarena.cli import main

script = RoleScript()
def slow(messages):
    time.sleep(0.05)
    return script(messages)

register_chat_model("slow-scripted", ScriptedChatModel(respond=slow))
sys.exit(main(["run", "--model", "slow-scripted", "--quiet", "--concurrency", "2", *sys.argv[1:]]))
"""


def run_cli(tmp_path, *args):
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    return subprocess.Popen(
        [sys.executable, str(runner), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def record_lines(folder: Path) -> list[str]:
    path = folder / "records.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def test_a_killed_run_resumes_and_every_session_ends_exactly_once(tmp_path):
    folder = tmp_path / "run"
    options = [
        "--out",
        str(folder),
        "--sessions",
        str(SESSIONS),
        "--inquiry-turns",
        "2",
        "--treatment-tries",
        "1",
        "--medication-tries",
        "1",
    ]
    process = run_cli(tmp_path, *options)
    deadline = time.monotonic() + 120
    while len(record_lines(folder)) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_with = len(record_lines(folder))
    assert 2 <= killed_with < SESSIONS, "the kill should land mid-run"

    refused = run_cli(tmp_path, *options)
    assert refused.wait(timeout=120) == 2 and "--resume" in refused.stdout.read()

    resumed = run_cli(tmp_path, *options, "--resume")
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    records = [json.loads(line) for line in record_lines(folder)]  # every line is valid JSON
    ids = [r["session_id"] for r in records]
    assert sorted(ids) == sorted(f"{i:04d}-builtin-{i + 1:02d}" for i in range(SESSIONS))
    assert len(ids) == len(set(ids)) == SESSIONS
    assert all(r["status"] == "done" and r["treatment"] for r in records)
    assert f"{killed_with} already finished before this run" in output


class FaultyScript:
    """The role script, but 20% of calls raise, time out, or answer empty or garbled text."""

    def __init__(self, seed: int):
        self.script, self.random, self.lock = RoleScript(), random.Random(seed), threading.Lock()
        self.injected = {"exception": 0, "timeout": 0, "empty": 0, "garbled": 0}

    def __call__(self, messages):
        with self.lock:
            fault = self.random.choice(list(self.injected)) if self.random.random() < 0.2 else None
            if fault:
                self.injected[fault] += 1
        if fault == "exception":
            raise RuntimeError("injected model failure")
        if fault == "timeout":
            raise TimeoutError("injected timeout")
        if fault == "empty":
            return ""
        if fault == "garbled":
            return "@@ ## 17 ;;"
        return self.script(messages)


def test_injected_faults_end_every_session_with_reasons(scripted, tmp_path):
    faults = FaultyScript(seed=7)
    spec, model = scripted(faults)
    context = Context(
        model=spec,
        inquiry_turns=2,
        max_redirections=1,
        treatment_tries=2,
        medication_tries=2,
        call_retries=2,
        retry_backoff_seconds=0.01,
        parse_retries=2,
    )
    summary = run_sessions(builtin_profiles(), context, tmp_path, sessions=12, progress=False, concurrency=4)

    assert all(n > 0 for n in faults.injected.values()), faults.injected
    records = [json.loads(line) for line in record_lines(tmp_path)]
    assert sorted(r["session_id"] for r in records) == [f"{i:04d}-builtin-{i + 1:02d}" for i in range(12)]
    assert summary.done + summary.failed == 12
    for record in records:
        if record["status"] == "failed":
            assert record["error"]  # e.g. an unretried RuntimeError, or a turn still empty after retries
        else:
            assert all(f["reason"] for f in record["failures"])
    # Timeouts are retried with backoff: some sessions hit one and still finished.
    assert summary.done > 0


def test_a_crash_after_a_nodes_writes_but_before_its_checkpoint_resumes_where_it_stopped(tmp_path):
    """SIGKILL can land between the two saves of a step: the node's writes are on disk, the next
    checkpoint is not. That thread's last checkpoint has no `next` left but is not finished."""
    context = Context(model="scripted", inquiry_turns=2, treatment_tries=1, medication_tries=1)
    run_sessions(builtin_profiles()[:1], context, tmp_path, sessions=1, progress=False)
    [whole] = [json.loads(line) for line in record_lines(tmp_path)]
    with sqlite3.connect(tmp_path / "checkpoints.sqlite") as db:
        # Keep the checkpoints up to the one before the third node (steps -1, 0, 1) and every saved write.
        steps = db.execute("SELECT checkpoint_id FROM checkpoints ORDER BY checkpoint_id").fetchall()
        db.execute("DELETE FROM checkpoints WHERE checkpoint_id > ?", (steps[2][0],))
    (tmp_path / "records.jsonl").unlink()

    summary = run_sessions(builtin_profiles()[:1], context, tmp_path, sessions=1, progress=False)

    assert summary.done == 1 and summary.failed == 0
    [resumed] = [json.loads(line) for line in record_lines(tmp_path)]
    assert resumed["transcript"] == whole["transcript"] and resumed["illness"] == whole["illness"]
