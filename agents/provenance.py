"""Where a manifest or a results line was made: the date, the machine and the package versions."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The packages whose versions a run's manifest and a benchmark's results line record.
VERSIONED_PACKAGES = (
    "mentalarena",
    "langgraph",
    "langchain-core",
    "transformers",
    "torch",
    "sentence-transformers",
    "peft",
    "trl",
)


def package_versions() -> dict[str, str]:
    """The installed version of each package the manifest records, or 'not installed'."""
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine() -> dict[str, Any]:
    """The platform, the CPU count and the processor name of this machine."""
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()}


def append_result(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Append ``result`` to the JSON Lines log at ``path`` as one line, after the date, the machine
    and the package versions; returns the line."""
    line = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": package_versions(),
    }
    line.update(result)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
    return line
