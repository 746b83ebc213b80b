"""Self-play throughput on the embedded model, and the graph's own overhead per node.

Measured side by side in one run (this machine is shared and noisy, so ratios, not timings, are
the claim):
1. self-play at concurrency 1 and at concurrency 8: generated tokens/s and sessions/hour
   (concurrency 1 runs before, between and after the concurrency-8 runs; each side is pooled);
2. raw batched ``generate`` of the same model at batch 8 on the prompts the arena sent in (1):
   the limit that batching across sessions can reach;
3. orchestration overhead: wall time not spent inside nodes, per node, with the instant scripted
   model.
Prints the ratios against the targets and appends the figures to ``benchmarks/results.jsonl``.

    python -m mentalarena.benchmarks.throughput [--rounds 2 --sessions-1 1 --sessions-8 24]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from mentalarena.agents.local import local_generator, sessions_in_flight
from mentalarena.agents.models import embedded_model_dir
from mentalarena.agents.profiles import builtin_profiles
from mentalarena.graphs.arena import build_arena_graph
from mentalarena.graphs.context import Context
from mentalarena.graphs.run import package_versions, run_sessions

RESULTS = Path(__file__).with_name("results.jsonl")
SMALL = dict(inquiry_turns=2, max_redirections=1, treatment_tries=2, medication_tries=2, max_new_tokens=64, temperature=0.7)


COUNTS = ("generated_tokens", "batches", "requests", "prompt_tokens", "cached_prompt_tokens", "generate_seconds", "prefill_seconds")


def selfplay(sessions: int, concurrency: int, prompts: list[str] | None = None, first_profile: int = 0) -> dict:
    """Run sessions on the embedded model (starting from the ``first_profile``-th built-in profile);
    returns the generator's counts over the run, its wall time and its finished sessions, and the
    part of the run during which ``concurrency`` sessions were in flight."""
    generator = local_generator(str(embedded_model_dir()))
    submit, generate = generator.submit, generator.generate
    if prompts is not None:
        def recording_submit(prompt, settings):
            prompts.append(prompt)
            return submit(prompt, settings)
        generator.submit = recording_submit
    full: list[tuple[float, int, float, int]] = []  # batches begun with every slot taken: (start, tokens before, end, tokens after)

    def so_far() -> tuple[float, int]:  # seconds into the run, tokens generated in it
        return time.perf_counter() - started, generator.stats["generated_tokens"] - before.get("generated_tokens", 0)

    def logging_generate(batch, settings):
        slots_taken = sessions_in_flight.count >= concurrency
        began = so_far()
        texts = generate(batch, settings)
        if slots_taken:
            full.append((*began, *so_far()))
        return texts
    generator.generate = logging_generate
    generator.prefix_cache.clear()  # each run starts cold: no run reuses another's prompts
    profiles = builtin_profiles()
    first_profile %= len(profiles)
    before = dict(generator.stats)
    try:
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            summary = run_sessions(profiles[first_profile:] + profiles[:first_profile], Context(model="embedded", **SMALL),
                                   Path(folder), sessions, progress=False, concurrency=concurrency)
            seconds = time.perf_counter() - started
    finally:
        generator.submit, generator.generate = submit, generate
    # From the first to the last batch begun with every slot taken (what came between included).
    full_seconds, full_tokens = (full[-1][2] - full[0][0], full[-1][3] - full[0][1]) if full else (None, None)
    return {"sessions": sessions, "concurrency": concurrency, "done": summary.done, "seconds": seconds,
            "full_seconds": full_seconds, "full_generated_tokens": full_tokens,
            **{key: generator.stats[key] - before.get(key, 0) for key in COUNTS}}


def figures(*runs: dict) -> dict:
    """Tokens/s, sessions/hour and where the time went, over one run or several pooled."""
    total = {key: sum(run[key] for run in runs) for key in ("sessions", "done", "seconds", *COUNTS)}
    measured_full = all(run["full_seconds"] for run in runs)  # not when a run never had all its slots taken
    full_seconds = sum(run["full_seconds"] for run in runs) if measured_full else None
    seconds, busy = total["seconds"], total["generate_seconds"]
    return {
        "sessions": total["sessions"], "concurrency": runs[0]["concurrency"], "done": total["done"], "seconds": round(seconds, 1),
        "generated_tokens": total["generated_tokens"], "tokens_per_second": round(total["generated_tokens"] / seconds, 2),
        # A run's end, when fewer sessions are left than slots, batches less: without it, what a long run keeps up.
        "tokens_per_second_while_all_slots_taken": round(sum(run["full_generated_tokens"] for run in runs) / full_seconds, 2) if measured_full else None,
        "share_of_run_with_all_slots_taken": round(full_seconds / seconds, 3) if measured_full else None,
        "sessions_per_hour": round(total["done"] * 3600 / seconds, 1),
        "mean_batch": round(total["requests"] / max(total["batches"], 1), 2), "prompt_tokens": total["prompt_tokens"],
        "prompt_tokens_from_prefix_cache": round(total["cached_prompt_tokens"] / max(total["prompt_tokens"], 1), 3),
        # Where the wall time went: generating at all, and prefilling within that.
        "generator_busy_fraction": round(busy / seconds, 3), "prefill_fraction_of_busy": round(total["prefill_seconds"] / max(busy, 1e-9), 3),
    }


def raw_batched_generate(prompts: list[str], batch: int = 8, batches: int = 4) -> dict:
    """Plain ``model.generate`` (no prefix cache) on batches of prompts taken evenly across the
    run, so every kind of arena prompt is in them."""
    generator = local_generator(str(embedded_model_dir()))
    settings = Context(model="embedded", **SMALL).generation()
    step = max(1, len(prompts) // (batch * batches))
    sample = prompts[::step][: batch * batches]
    tokens = 0
    started = time.perf_counter()
    for i in range(0, len(sample) - batch + 1, batch):
        tokens += int((generator.generate_plain(sample[i:i + batch], settings) != generator.tokenizer.pad_token_id).sum())
    seconds = time.perf_counter() - started
    return {"batch": batch, "seconds": round(seconds, 1), "generated_tokens": tokens, "tokens_per_second": round(tokens / seconds, 2)}


async def _overhead(sessions: int) -> dict:
    graph = build_arena_graph().compile()
    context = Context(model="scripted", inquiry_turns=3, max_redirections=2, treatment_tries=3, medication_tries=3)
    inside, nodes = 0.0, 0
    started = time.perf_counter()
    for i in range(sessions):
        task_start: dict[str, float] = {}
        async for event in graph.astream({"profile_id": builtin_profiles()[i % 5].id}, context=context, stream_mode="debug"):
            stamp = datetime.fromisoformat(event["timestamp"]).timestamp()
            if event["type"] == "task":
                task_start[event["payload"]["id"]] = stamp
            elif event["type"] == "task_result":
                inside += stamp - task_start.pop(event["payload"]["id"])
                nodes += 1
    total = time.perf_counter() - started
    return {"sessions": sessions, "nodes": nodes, "ms_per_node_total": round(1000 * total / nodes, 3),
            "ms_per_node_inside_nodes": round(1000 * inside / nodes, 3), "ms_per_node_overhead": round(1000 * (total - inside) / nodes, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="concurrency-8 runs, each between two concurrency-1 runs")
    parser.add_argument("--sessions-1", type=int, default=1, help="sessions in each concurrency-1 run")
    parser.add_argument("--sessions-8", type=int, default=24,
                        help="sessions in each concurrency-8 run (many more than 8, so the run's tail, with fewer sessions left to batch, weighs little)")
    parser.add_argument("--overhead-sessions", type=int, default=10)
    args = parser.parse_args()
    if args.rounds < 1 or args.sessions_1 < 1 or args.sessions_8 < 1:
        parser.error("--rounds, --sessions-1 and --sessions-8 must each be at least 1")

    overhead = asyncio.run(_overhead(args.overhead_sessions))
    prompts: list[str] = []
    # This machine's speed drifts (it is shared), by 1.6x within one benchmark once. So
    # concurrency 1 runs before, between and after the concurrency-8 runs, and each concurrency-8
    # run is also set against the concurrency-1 runs on either side of it.
    runs_1 = [selfplay(args.sessions_1, concurrency=1)]
    runs_8 = []
    for done_rounds in range(1, args.rounds + 1):
        runs_8.append(selfplay(args.sessions_8, concurrency=8, prompts=prompts))
        runs_1.append(selfplay(args.sessions_1, concurrency=1, first_profile=done_rounds * args.sessions_1))
    by_run_1 = [figures(run)["tokens_per_second"] for run in runs_1]
    by_run_8 = [figures(run)["tokens_per_second"] for run in runs_8]
    at_1 = {**figures(*runs_1), "tokens_per_second_by_run": by_run_1}
    at_8 = {**figures(*runs_8), "tokens_per_second_by_run": by_run_8}
    raw = raw_batched_generate(prompts)
    ratios = {
        "concurrency_8_vs_raw_batch_8": round(at_8["tokens_per_second"] / raw["tokens_per_second"], 2),
        "concurrency_8_vs_concurrency_1": round(at_8["tokens_per_second"] / at_1["tokens_per_second"], 2),
        "concurrency_8_vs_concurrency_1_while_all_slots_taken": round(
            at_8["tokens_per_second_while_all_slots_taken"] / at_1["tokens_per_second_while_all_slots_taken"], 2)
        if at_8["tokens_per_second_while_all_slots_taken"] else None,
        "concurrency_8_vs_concurrency_1_by_round": [round(tps / ((earlier + later) / 2), 2) for tps, earlier, later in zip(by_run_8, by_run_1, by_run_1[1:])],
    }
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()},
        "versions": package_versions(),
        "selfplay_concurrency_1": at_1, "selfplay_concurrency_8": at_8, "raw_generate_batch_8": raw,
        "ratios": ratios, "orchestration": overhead,
    }
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(result) + "\n")
    print(f"self-play, concurrency 1: {at_1['tokens_per_second']} tokens/s, {at_1['sessions_per_hour']} sessions/h "
          f"(tokens/s by run, in order: {by_run_1})")
    print(f"self-play, concurrency 8: {at_8['tokens_per_second']} tokens/s, {at_8['sessions_per_hour']} sessions/h, "
          f"mean batch {at_8['mean_batch']} (tokens/s by run: {by_run_8})")
    if at_8["tokens_per_second_while_all_slots_taken"]:
        print(f"while all 8 slots were taken ({at_8['share_of_run_with_all_slots_taken']:.0%} of the concurrency-8 runs): "
              f"{at_8['tokens_per_second_while_all_slots_taken']} tokens/s; concurrency 1 from its first batch to its last: "
              f"{at_1['tokens_per_second_while_all_slots_taken']} tokens/s")
    print(f"prompt tokens served from the prefix cache: {at_1['prompt_tokens_from_prefix_cache']:.0%} at concurrency 1, "
          f"{at_8['prompt_tokens_from_prefix_cache']:.0%} at concurrency 8")
    for at in (at_1, at_8):
        print(f"concurrency {at['concurrency']}: generator busy {at['generator_busy_fraction']:.0%} of the wall time, "
              f"{at['prefill_fraction_of_busy']:.0%} of that prefilling")
    print(f"raw generate, batch 8:    {raw['tokens_per_second']} tokens/s on {len(prompts)} arena prompts")
    print(f"concurrency 8 / raw batch 8 = {ratios['concurrency_8_vs_raw_batch_8']} (target >= 0.75)")
    print(f"concurrency 8 / concurrency 1 = {ratios['concurrency_8_vs_concurrency_1']} (target >= 3.5; "
          f"by round, against the concurrency-1 runs on either side: {ratios['concurrency_8_vs_concurrency_1_by_round']}; "
          f"while all slots were taken: {ratios['concurrency_8_vs_concurrency_1_while_all_slots_taken']})")
    print(f"orchestration overhead: {overhead['ms_per_node_overhead']} ms per node outside node code "
          f"({overhead['ms_per_node_total']} ms per node in all, scripted model, {overhead['nodes']} nodes; target <= 1 ms)")
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
