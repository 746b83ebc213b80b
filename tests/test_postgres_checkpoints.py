"""Checkpoints in a real Postgres server (a throwaway cluster started by the test)."""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import free_port
from mentalarena.agents.context import Context
from mentalarena.agents.profiles import builtin_profiles
from mentalarena.graphs.run import run_sessions

INITDB = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)


def as_postgres_user(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def postgres_url():
    if INITDB is None:
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine")
    bin_dir = Path(INITDB).parent
    # Outside pytest's root-only temp folder, so that the postgres user can reach it.
    root = Path(tempfile.mkdtemp(prefix="mentalarena-pg-"))
    root.chmod(0o777)
    data = root / "data"
    port = free_port()
    subprocess.run(
        as_postgres_user([str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        as_postgres_user(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-l",
                str(data.parent / "log"),
                "-o",
                f"-p {port} -k {data.parent} -c listen_addresses=127.0.0.1",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    subprocess.run(
        as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
    )
    shutil.rmtree(root, ignore_errors=True)


def test_sessions_checkpoint_to_postgres_and_resume_from_it(scripted, tmp_path, postgres_url):
    import psycopg

    from mentalarena.agents.scripted import RoleScript

    spec, model = scripted(RoleScript())
    context = Context(model=spec, inquiry_turns=1, max_redirections=0, treatment_tries=1, medication_tries=1)
    summary = run_sessions(
        builtin_profiles(), context, tmp_path, sessions=3, progress=False, concurrency=2, checkpoint_url=postgres_url
    )
    assert summary.done == 3
    assert not (tmp_path / "checkpoints.sqlite").exists()
    with psycopg.connect(postgres_url) as connection:
        threads = {row[0] for row in connection.execute("SELECT DISTINCT thread_id FROM checkpoints")}
    assert threads == {"0000-builtin-01", "0001-builtin-02", "0002-builtin-03"}

    # Lose the records file: the finished sessions' records come back from Postgres, not the model.
    (tmp_path / "records.jsonl").unlink()
    calls = len(model.calls)
    summary = run_sessions(
        builtin_profiles(), context, tmp_path, sessions=3, progress=False, concurrency=2, checkpoint_url=postgres_url
    )
    assert summary.done == 3 and len(model.calls) == calls
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 3
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["checkpoints"] == postgres_url.replace("postgres@", "")  # no user name in the manifest
