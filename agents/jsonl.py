"""JSON Lines: the one reader of every ``*.jsonl`` file the project reads (profiles, records, corpora, items)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def read_json_lines(path: Path, error: type[Exception] = ValueError) -> Iterator[tuple[str, Any]]:
    """``(where, value)`` for each non-blank line of ``path``; ``where`` ('<path>: line <n>') is for the
    caller's own errors about the value. A line that is not JSON raises ``error``, naming file and line."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{where}: not valid JSON ({exc.msg})") from None
            yield where, value
