"""Batch self-play: run sessions through the arena graph into a resumable run folder.

A run folder holds ``manifest.json`` (run id, settings, models, package versions, seed),
``records.jsonl`` (one line per ended session, appended atomically) and ``checkpoints.sqlite``
(the SQLite checkpointer, so an interrupted session continues from its last finished node).
Sessions run in this process, or as runs on a LangGraph server (:mod:`mentalarena.graphs.remote`).
Resuming a run re-runs its failed sessions (unless told not to); a retried session's new line
replaces its failed one when the run settles its records file.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from tqdm import tqdm

from mentalarena.agents.context import Context
from mentalarena.agents.models import ModelSpecError, check_model_spec
from mentalarena.agents.profiles import PatientProfile
from mentalarena.graphs.arena import build_arena_graph
from mentalarena.graphs.remote import Play, server_player
from mentalarena.graphs.run_folder import (
    CHECKPOINTS,
    MANIFEST,
    RECORDS,
    append_record,
    redact_url,
    redact_urls_in,
    run_id,
    settle_records,
    write_manifest,
)

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph.state import CompiledStateGraph

    from mentalarena.agents.state import ArenaInput, ArenaOutput, ArenaState

MODEL_OPTIONS = (
    "model",
    "patient_model",
    "therapist_model",
    "decoder_model",
    "risk_guard_model",
)  # the Context's model specs


class RunOptionError(ValueError):
    """A run setting that cannot work, found before anything is written; names the setting."""

    def __init__(self, option: str, reason: str):
        """The setting's Context name (``option``) and what is wrong with it (``reason``)."""
        super().__init__(f"{option}: {reason}")
        self.option, self.reason = option, reason


@dataclass
class RunSummary:
    """What a run came to: sessions done, failed, retried and skipped, its time, diagnoses and treatment scores."""

    folder: Path
    done: int = 0
    failed: int = 0
    retried: int = 0  # sessions of this run that had failed before
    skipped: int = 0  # finished before this run
    failed_not_retried: int = 0  # failed before, left as they were (retry_failed=False)
    seconds: float = 0.0
    illnesses: Counter = field(default_factory=Counter)
    treatment_scores: list[int] = field(default_factory=list)

    def add(self, record: dict) -> None:
        """Count a finished session, with its diagnosis and best treatment score."""
        self.done += 1
        if record["illness"]:
            self.illnesses[record["illness"]] += 1
        if record["treatment_score"] is not None:
            self.treatment_scores.append(record["treatment_score"])

    def lines(self) -> list[str]:
        """The summary as lines to print: folder, session counts, mean best treatment score, top diagnoses."""
        mean = sum(self.treatment_scores) / len(self.treatment_scores) if self.treatment_scores else None
        counts = [f"{self.done} done", f"{self.failed} failed"]
        if self.retried:
            counts.append(f"{self.retried} of them retried after failing before")
        counts.append(f"{self.skipped} already finished before this run")
        if self.failed_not_retried:
            counts.append(f"{self.failed_not_retried} failed before and not retried")
        lines = [
            f"run folder: {self.folder}",
            f"sessions: {', '.join(counts)} ({self.seconds:.0f} s)",
            f"mean best treatment score: {mean:.1f}/10"
            if mean is not None
            else "mean best treatment score: no rated treatment",
        ]
        if self.illnesses:
            lines.append("diagnoses: " + "; ".join(f"{name} x{n}" for name, n in self.illnesses.most_common(5)))
        return lines


def session_plan(profiles: list[PatientProfile], sessions: int) -> list[tuple[str, PatientProfile]]:
    """(session id, profile) for each of ``sessions`` sessions, cycling through the profiles."""
    return [(f"{i:04d}-{profiles[i % len(profiles)].id}", profiles[i % len(profiles)]) for i in range(sessions)]


async def run_session(
    compiled: CompiledStateGraph[ArenaState, Context, ArenaInput, ArenaOutput],
    session_id: str,
    profile: PatientProfile,
    context: Context,
) -> dict:
    """Run or continue one session from its last checkpoint; returns its record."""
    config: RunnableConfig = {"configurable": {"thread_id": session_id}}
    snapshot = await compiled.aget_state(config)
    if snapshot.values.get("record"):
        return snapshot.values["record"]  # finished before a crash kept it from the records file
    # Pending tasks, not `next`, tell an unfinished session: a task whose writes were saved just
    # before a crash is no longer in `next`, though its step's checkpoint never came.
    start: ArenaInput | None = (
        None if snapshot.tasks else {"profile": profile.to_patient_psi(), "session_id": session_id}
    )
    return (await compiled.ainvoke(start, config, context=context))["record"]


@contextlib.asynccontextmanager
async def local_player(folder: Path, context: Context, checkpoint_url: str = "") -> AsyncIterator[Play]:
    """A coroutine that plays one session in this process (checkpointed) and returns its record."""
    async with open_checkpointer(folder, checkpoint_url) as saver:
        compiled = build_arena_graph().compile(checkpointer=saver, name="arena")
        yield lambda session_id, profile: run_session(compiled, session_id, profile, context)


async def arun_sessions(
    profiles: list[PatientProfile],
    context: Context,
    folder: Path,
    sessions: int,
    profiles_source: str = "builtin",
    progress: bool = True,
    concurrency: int = 1,
    checkpoint_url: str = "",
    retry_failed: bool = True,
    server_url: str = "",
    assistant: str = "arena",
) -> RunSummary:
    """Run the planned sessions that have no record yet, and those that failed unless
    ``retry_failed`` is false, ``concurrency`` at a time.

    Sessions run in this process, checkpointed to SQLite in the run folder or to the Postgres
    database ``checkpoint_url`` names (``postgresql://...``; needs the ``postgres`` extra). With
    ``server_url`` they run instead as runs of ``assistant`` on that LangGraph server
    (:mod:`mentalarena.graphs.remote`), which keeps their checkpoints. Either way a retried
    session continues from its last checkpoint, and records land in this folder.
    """
    check_run_options(context, sessions, concurrency, checkpoint_url, server_url)
    folder.mkdir(parents=True, exist_ok=True)
    records_path = folder / RECORDS
    statuses = settle_records(records_path)
    new_run = not (folder / MANIFEST).exists()
    identity = str(uuid.uuid4()) if new_run else run_id(folder)
    summary = RunSummary(folder=folder)
    plan = []
    for session_id, profile in session_plan(profiles, sessions):
        status = statuses.get(session_id)
        if status is None:
            plan.append((session_id, profile))
        elif status == "failed" and retry_failed:
            plan.append((session_id, profile))
            summary.retried += 1
        elif status == "failed":
            summary.failed_not_retried += 1
        else:
            summary.skipped += 1
    _seed_local_sampling(context.seed)
    # Nodes are sync functions that LangGraph runs in the loop's default executor: give it a
    # thread per concurrent session, so that many model calls can wait on one batch at once.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=concurrency + 4, thread_name_prefix="arena")
    )
    slots = asyncio.Semaphore(concurrency)
    started = time.monotonic()
    if server_url:
        player = server_player(server_url, assistant, context, identity)
    else:
        player = local_player(folder, context, checkpoint_url)
    async with player as play:  # a server that cannot take the run fails here, before anything is written
        if new_run:
            write_manifest(folder, context, profiles_source, sessions, identity, checkpoint_url, server_url, assistant)
        bar = tqdm(total=len(plan), desc="self-play sessions", unit="session", disable=not progress)

        async def one(session_id: str, profile: PatientProfile) -> None:
            async with slots:
                try:
                    record = await play(session_id, profile)
                except Exception as exc:  # one broken session must not end the run
                    error = redact_urls_in(
                        f"{type(exc).__name__}: {exc}"
                    )  # a client's message may quote the URL it called
                    append_record(
                        records_path,
                        {"session_id": session_id, "profile_id": profile.id, "status": "failed", "error": error},
                    )
                    summary.failed += 1
                else:
                    append_record(records_path, {"status": "done", **record})
                    summary.add(record)
                bar.update()

        await asyncio.gather(*(one(sid, profile) for sid, profile in plan))
        bar.close()
    settle_records(records_path)  # retried sessions: their new lines replace the failed ones
    summary.seconds = time.monotonic() - started
    return summary


def check_run_options(
    context: Context, sessions: int, concurrency: int = 1, checkpoint_url: str = "", server_url: str = ""
) -> None:
    """Everything about a run that can be checked without a model call, so a bad setting fails
    before the first session and before anything is written. Raises :class:`RunOptionError`."""
    for name, value in (("sessions", sessions), ("concurrency", concurrency)):
        if not isinstance(value, int) or value < 1:
            raise RunOptionError(name, f"{value!r} is not a whole number of at least 1")
    for name in MODEL_OPTIONS:
        spec = getattr(context, name)
        if spec:
            try:
                check_model_spec(spec)
            except ModelSpecError as exc:
                raise RunOptionError(name, str(exc)) from None
            # A named response_format dialect is an OpenAI-compatible endpoint's: elsewhere it would mean nothing.
            if context.structured_output in ("json_schema", "json_object") and not spec.strip().startswith("openai:"):
                raise RunOptionError(
                    "structured_output",
                    f"{context.structured_output!r} names an OpenAI-compatible endpoint's dialect, "
                    f"but --{name.replace('_', '-')} is {spec!r}; use 'auto' or 'off'",
                )
    if context.risk_classifier and not (Path(context.risk_classifier) / "risk_classifier.json").is_file():
        raise RunOptionError(
            "risk_classifier",
            f"{context.risk_classifier!r} holds no risk_classifier.json "
            "(write one with python -m mentalarena.training.risk_classifier --out)",
        )
    if checkpoint_url and not checkpoint_url.startswith(("postgres://", "postgresql://")):
        raise RunOptionError("checkpoint_url", f"{redact_url(checkpoint_url)!r} is not a postgresql:// URL")
    if checkpoint_url and importlib.util.find_spec("langgraph.checkpoint.postgres") is None:
        raise RunOptionError("checkpoint_url", "Postgres needs pip install 'mentalarena[postgres]'")
    if server_url and not server_url.startswith(("http://", "https://")):
        raise RunOptionError("server", f"{redact_url(server_url)!r} is not an http:// or https:// URL")
    if server_url and checkpoint_url:
        raise RunOptionError(
            "checkpoint_url", "a LangGraph server keeps its own checkpoints; drop --checkpoint-url with --server"
        )
    if server_url and context.human_role:
        raise RunOptionError(
            "human_role", "a batch on a server has nobody to take the human turns; use Studio or the chat graphs"
        )
    if server_url and context.review_feedback:
        raise RunOptionError(
            "review_feedback", "a batch on a server has nobody to review the decoder's feedback; use Studio"
        )


def run_sessions(*args: Any, **kwargs: Any) -> RunSummary:
    """Synchronous :func:`arun_sessions`, for scripts and the CLI."""
    return asyncio.run(arun_sessions(*args, **kwargs))


@contextlib.asynccontextmanager
async def open_checkpointer(folder: Path, checkpoint_url: str = "") -> AsyncIterator[BaseCheckpointSaver[str]]:
    """The checkpointer :func:`check_run_options` has accepted ``checkpoint_url`` for."""
    if checkpoint_url:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        async with AsyncPostgresSaver.from_conn_string(checkpoint_url) as saver:
            await saver.setup()
            yield saver
    else:
        async with AsyncSqliteSaver.from_conn_string(str(folder / CHECKPOINTS)) as saver:
            yield saver


def _seed_local_sampling(seed: int) -> None:
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
