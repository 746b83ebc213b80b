"""The run folder: its manifest, its records file, and the redaction of what they may not hold.

A run folder holds ``manifest.json`` (run id, settings, models, package versions, seed),
``records.jsonl`` (one line per ended session, appended atomically) and, for local runs,
``checkpoints.sqlite``. Everything that reads or writes a run's records goes through here.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote_plus, urlsplit

from mentalarena.agents.context import Context
from mentalarena.agents.jsonl import read_json_lines
from mentalarena.agents.models import describe_model
from mentalarena.agents.provenance import package_versions

RECORDS = "records.jsonl"
MANIFEST = "manifest.json"
CHECKPOINTS = "checkpoints.sqlite"


class RunFolderError(ValueError):
    """A run folder whose files cannot be continued."""


# A query or fragment parameter whose name holds one of these (case-insensitive) is dropped: over-
# redacting a harmless parameter ('monkey', 'design') costs a manifest nothing; missing one leaks it.
SECRET_PARAMETER_WORDS = ("pass", "pwd", "key", "token", "secret", "sig", "auth", "credential")
# Several URLs joined by commas (a round-robin base_url): a comma starts a new URL only where a
# scheme follows, so commas inside one URL (Postgres hosts, query values) stay in it.
_NEXT_URL = re.compile(r",(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """``url`` (or several, comma-separated) without userinfo or secret-looking parameters.

    Every URL written to a manifest, record, log or card goes through here. The host is kept as
    written, so ``[::1]:8000`` keeps its brackets and port.
    """
    return ",".join(_redact_one_url(part) for part in _NEXT_URL.split(url))


def redact_urls_in(text: str) -> str:
    """Free text (an exception's message) with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group()), text)


def _redact_one_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:  # unbalanced IPv6 brackets: nothing can be told apart, so nothing is shown
        return "<unparseable URL>"
    netloc = parts.netloc.rpartition("@")[2]  # raw text after the userinfo, so brackets and port stay
    query, fragment = _without_secret_parameters(parts.query), _without_secret_parameters(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    # Joined by hand: urlunsplit drops the '//' of an empty authority ('postgresql:///db?host=...').
    after_scheme = url[len(parts.scheme) + 1 :] if parts.scheme else url
    return "".join(
        (
            f"{parts.scheme}:" if parts.scheme else "",
            f"//{netloc}" if after_scheme.startswith("//") else "",
            parts.path,
            f"?{query}" if query else "",
            f"#{fragment}" if fragment else "",
        )
    )


def _without_secret_parameters(text: str) -> str:
    if "=" not in text:  # no parameters: a fragment's anchor, or a bare flag
        return text
    pairs = re.split(r"(?<=[&;])", text)  # each pair keeps its separator: the others come out as they were
    kept = [pair for pair in pairs if not _is_secret_parameter(pair.rstrip("&;").partition("=")[0])]
    return "".join(kept).rstrip("&;")


def _is_secret_parameter(name: str) -> bool:
    name = unquote_plus(name).lower()
    return any(word in name for word in SECRET_PARAMETER_WORDS)


def write_manifest(
    folder: Path,
    context: Context,
    profiles_source: str,
    sessions: int,
    identity: str,
    checkpoint_url: str = "",
    server_url: str = "",
    assistant: str = "arena",
) -> None:
    """Write the run's ``manifest.json`` (URLs redacted), replacing any previous one in a single rename."""
    settings = context.as_dict()
    settings["base_url"] = redact_url(settings["base_url"])
    manifest = {
        "run_id": identity,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": settings,
        "models": {role: describe_model(context.model_for(role)) for role in ("patient", "therapist", "decoder")},
        "profiles": profiles_source,
        "sessions": sessions,
        "checkpoints": redact_url(checkpoint_url or server_url)
        if checkpoint_url or server_url
        else f"sqlite:{CHECKPOINTS}",
        **({"server": {"url": redact_url(server_url), "assistant": assistant}} if server_url else {}),
        "seed": context.seed,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
    }
    staging = folder / f"{MANIFEST}.tmp"
    staging.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(staging, folder / MANIFEST)


def run_id(folder: Path) -> str:
    """The run folder's id, from its manifest: a folder made before ids existed gets one from its creation time."""
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    return manifest.get("run_id") or str(uuid.uuid5(uuid.NAMESPACE_URL, f"mentalarena-run:{manifest['created']}"))


def settle_records(records_path: Path) -> dict[str, str]:
    """Each session's status, from its last line in the records file; leaves one line per session.

    A torn last line (a killed write) is cut off. A session with several lines (a retry appends
    after the failed line) keeps its last line, in its first line's place. The settled file is
    written beside the old one and renamed over it, so a crash at any moment leaves one of the two,
    and both hold every ended session.
    """
    if not records_path.exists():
        return {}
    data = records_path.read_bytes()
    last_lines: dict[str, bytes] = {}  # session id -> its last line, in the order sessions first appear
    statuses: dict[str, str] = {}
    kept = lines = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            record = json.loads(line)
            session_id = record["session_id"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise RunFolderError(
                f"{records_path}: byte {kept}: not a session record ({exc}); fix or move the file"
            ) from exc
        last_lines[session_id] = line
        statuses[session_id] = record.get("status", "done")
        kept += len(line)
        lines += 1
    if lines > len(last_lines):
        staging = records_path.with_name(f"{records_path.name}.tmp")
        with open(staging, "wb") as handle:
            handle.write(b"".join(last_lines.values()))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, records_path)
        _fsync_folder(records_path.parent)
    elif kept < len(data):
        with open(records_path, "r+b") as handle:
            handle.truncate(kept)
    return statuses


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def append_record(records_path: Path, line: dict) -> None:
    """One write of one whole line, flushed to disk, so a crash never leaves half a record."""
    payload = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
    with open(records_path, "ab") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def read_records(folder: Path) -> list[dict]:
    """The session records of the run folder ``folder``, in the order they were written; none before the first."""
    path = folder / RECORDS
    return [record for _, record in read_json_lines(path, RunFolderError)] if path.exists() else []
