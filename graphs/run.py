"""Batch self-play: run sessions through the arena graph into a resumable run folder.

A run folder holds ``manifest.json`` (settings, models, package versions, seed),
``records.jsonl`` (one line per ended session, appended atomically) and ``checkpoints.sqlite``
(the SQLite checkpointer, so an interrupted session continues from its last finished node).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from tqdm import tqdm

from mentalarena.agents.models import describe_model
from mentalarena.agents.profiles import PatientProfile
from mentalarena.graphs.arena import build_arena_graph
from mentalarena.graphs.context import Context

RECORDS = "records.jsonl"
MANIFEST = "manifest.json"
CHECKPOINTS = "checkpoints.sqlite"
VERSIONED_PACKAGES = ("mentalarena", "langgraph", "langchain-core", "transformers", "torch", "sentence-transformers", "peft", "trl")


class RunFolderError(ValueError):
    """A run folder whose files cannot be continued."""


@dataclass
class RunSummary:
    folder: Path
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    illnesses: Counter = field(default_factory=Counter)
    treatment_scores: list[int] = field(default_factory=list)

    def add(self, record: dict) -> None:
        self.done += 1
        if record["illness"]:
            self.illnesses[record["illness"]] += 1
        if record["treatment_score"] is not None:
            self.treatment_scores.append(record["treatment_score"])

    def lines(self) -> list[str]:
        mean = sum(self.treatment_scores) / len(self.treatment_scores) if self.treatment_scores else None
        lines = [
            f"run folder: {self.folder}",
            f"sessions: {self.done} done, {self.failed} failed, {self.skipped} already finished before this run ({self.seconds:.0f} s)",
            f"mean best treatment score: {mean:.1f}/10" if mean is not None else "mean best treatment score: no rated treatment",
        ]
        if self.illnesses:
            lines.append("diagnoses: " + "; ".join(f"{name} x{n}" for name, n in self.illnesses.most_common(5)))
        return lines


def redact_url(url: str) -> str:
    """Drop any user:password part of a URL before it is written anywhere."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_manifest(folder: Path, context: Context, profiles_source: str, sessions: int, checkpoint_url: str = "") -> None:
    settings = context.as_dict()
    settings["base_url"] = redact_url(settings["base_url"])
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "models": {role: describe_model(context.model_for(role)) for role in ("patient", "therapist", "decoder")},
        "profiles": profiles_source,
        "sessions": sessions,
        "checkpoints": redact_url(checkpoint_url) if checkpoint_url else f"sqlite:{CHECKPOINTS}",
        "seed": context.seed,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
    }
    staging = folder / f"{MANIFEST}.tmp"
    staging.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(staging, folder / MANIFEST)


def read_finished(records_path: Path) -> set[str]:
    """Session ids already in the records file; a torn last line (a killed write) is cut off."""
    if not records_path.exists():
        return set()
    finished: set[str] = set()
    data = records_path.read_bytes()
    keep = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            finished.add(json.loads(line)["session_id"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise RunFolderError(f"{records_path}: byte {keep}: not a session record ({exc}); fix or move the file") from exc
        keep += len(line)
    if keep < len(data):
        with open(records_path, "r+b") as handle:
            handle.truncate(keep)
    return finished


def append_record(records_path: Path, line: dict) -> None:
    """One write of one whole line, flushed to disk, so a crash never leaves half a record."""
    payload = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
    with open(records_path, "ab") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def session_plan(profiles: list[PatientProfile], sessions: int) -> list[tuple[str, PatientProfile]]:
    return [(f"{i:04d}-{profiles[i % len(profiles)].id}", profiles[i % len(profiles)]) for i in range(sessions)]


async def run_session(compiled, session_id: str, profile: PatientProfile, context: Context) -> dict:
    """Run or continue one session from its last checkpoint; returns its record."""
    config = {"configurable": {"thread_id": session_id}}
    snapshot = await compiled.aget_state(config)
    if snapshot.values and not snapshot.next:
        return snapshot.values["record"]  # finished before a crash kept it from the records file
    start = None if snapshot.next else {"profile": profile.to_patient_psi(), "session_id": session_id}
    return (await compiled.ainvoke(start, config, context=context))["record"]


async def arun_sessions(
    profiles: list[PatientProfile],
    context: Context,
    folder: Path,
    sessions: int,
    profiles_source: str = "builtin",
    progress: bool = True,
    concurrency: int = 1,
    checkpoint_url: str = "",
) -> RunSummary:
    """Run the planned sessions that have no record yet, ``concurrency`` at a time.

    Checkpoints go to SQLite in the run folder, or to the Postgres database ``checkpoint_url``
    names (``postgresql://...``; needs the ``postgres`` extra), which many workers can share.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency: {concurrency!r} must be at least 1")
    folder.mkdir(parents=True, exist_ok=True)
    records_path = folder / RECORDS
    finished = read_finished(records_path)
    if not (folder / MANIFEST).exists():
        write_manifest(folder, context, profiles_source, sessions, checkpoint_url)
    summary = RunSummary(folder=folder)
    plan = [(sid, p) for sid, p in session_plan(profiles, sessions) if sid not in finished]
    summary.skipped = sessions - len(plan)
    _seed_local_sampling(context.seed)
    # Nodes are sync functions that LangGraph runs in the loop's default executor: give it a
    # thread per concurrent session, so that many model calls can wait on one batch at once.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=concurrency + 4, thread_name_prefix="arena"))
    slots = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(plan), desc="self-play sessions", unit="session", disable=not progress)
    started = time.monotonic()

    async def one(compiled, session_id: str, profile: PatientProfile) -> None:
        async with slots:
            try:
                record = await run_session(compiled, session_id, profile, context)
            except Exception as exc:  # one broken session must not end the run
                append_record(records_path, {"session_id": session_id, "profile_id": profile.id, "status": "failed", "error": f"{type(exc).__name__}: {exc}"})
                summary.failed += 1
            else:
                append_record(records_path, {"status": "done", **record})
                summary.add(record)
            bar.update()

    async with open_checkpointer(folder, checkpoint_url) as saver:
        compiled = build_arena_graph().compile(checkpointer=saver, name="arena")
        await asyncio.gather(*(one(compiled, sid, profile) for sid, profile in plan))
    bar.close()
    summary.seconds = time.monotonic() - started
    return summary


def run_sessions(*args, **kwargs) -> RunSummary:
    """Synchronous :func:`arun_sessions`, for scripts and the CLI."""
    return asyncio.run(arun_sessions(*args, **kwargs))


@contextlib.asynccontextmanager
async def open_checkpointer(folder: Path, checkpoint_url: str = ""):
    if checkpoint_url.startswith(("postgres://", "postgresql://")):
        try:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        except ImportError as exc:
            raise RunFolderError("checkpoint_url: Postgres needs pip install 'mentalarena[postgres]'") from exc
        async with AsyncPostgresSaver.from_conn_string(checkpoint_url) as saver:
            await saver.setup()
            yield saver
    elif checkpoint_url:
        raise RunFolderError(f"checkpoint_url: {redact_url(checkpoint_url)!r} is not a postgresql:// URL")
    else:
        async with AsyncSqliteSaver.from_conn_string(str(folder / CHECKPOINTS)) as saver:
            yield saver


def _seed_local_sampling(seed: int) -> None:
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
