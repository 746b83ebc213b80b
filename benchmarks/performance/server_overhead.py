"""Orchestration cost of running sessions on a LangGraph server instead of in this process.

With the instant scripted model, nearly all of a session's time is orchestration, so the same
sessions at the same concurrency, once locally (SQLite checkpoints) and once through ``--server``
(threads, background runs, the server's queue and checkpoints, HTTP), show what the server adds
per session. The two sides alternate round by round, in one run, against one server (give it
as many jobs as the concurrency: ``langgraph dev`` runs one at a time by default):

    langgraph dev --no-browser --no-reload --port 2024 --n-jobs-per-worker 4 &
    python -m mentalarena.benchmarks.performance.server_overhead --server http://127.0.0.1:2024 \\
        [--sessions 24 --concurrency 4 --rounds 2]

Appends a line to ``benchmarks/performance/results.jsonl``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mentalarena.agents.context import Context
from mentalarena.agents.profiles import builtin_profiles
from mentalarena.agents.provenance import append_result
from mentalarena.graphs.run import run_sessions
from mentalarena.graphs.run_folder import redact_url

RESULTS = Path(__file__).with_name("results.jsonl")
SCRIPTED = Context(model="scripted", inquiry_turns=2, max_redirections=1, treatment_tries=2, medication_tries=2)


def timed_run(sessions: int, concurrency: int, server_url: str) -> float:
    """Seconds for ``sessions`` scripted sessions in a fresh run folder; every one must end with a record."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        summary = run_sessions(
            builtin_profiles(),
            SCRIPTED,
            Path(folder),
            sessions,
            progress=False,
            concurrency=concurrency,
            server_url=server_url,
        )
        seconds = time.perf_counter() - started
    if summary.done != sessions:
        raise SystemExit(
            f"{summary.failed} of {sessions} sessions failed {'on the server' if server_url else 'locally'}"
        )
    return seconds


def main(argv: list[str] | None = None) -> None:
    """Time the same scripted sessions locally and on the server, round by round, then append and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--server", required=True, help="URL of a LangGraph server that serves this project's langgraph.json"
    )
    parser.add_argument("--sessions", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    timed_run(args.concurrency, args.concurrency, args.server)  # warm-up: imports, the server's first graph load
    local, server = [], []
    for _ in range(args.rounds):
        local.append(timed_run(args.sessions, args.concurrency, ""))
        server.append(timed_run(args.sessions, args.concurrency, args.server))
    per_session = {
        side: round(1000 * sum(times) / (len(times) * args.sessions), 1)
        for side, times in (("local", local), ("server", server))
    }
    result = {
        "benchmark": "server_overhead",
        "server": redact_url(args.server),
        "sessions": args.sessions,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "model": "scripted",
        "seconds_by_round": {"local": [round(t, 2) for t in local], "server": [round(t, 2) for t in server]},
        "ms_per_session": per_session,
        "server_overhead_ms_per_session": round(per_session["server"] - per_session["local"], 1),
        "ratio_server_vs_local": round(sum(server) / sum(local), 2),
    }
    append_result(RESULTS, result)
    print(
        f"{args.sessions} scripted sessions at concurrency {args.concurrency}, {args.rounds} rounds a side: "
        f"local {per_session['local']} ms a session, server {per_session['server']} ms a session "
        f"(+{result['server_overhead_ms_per_session']} ms, {result['ratio_server_vs_local']}x)"
    )
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
