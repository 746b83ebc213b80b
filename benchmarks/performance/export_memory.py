"""Does export memory stay flat as the number of records grows?

Writes synthetic session records (every one distinct, so the de-duplication table grows too),
exports N and 10 x N of them, each in a fresh subprocess, and prints peak RSS of both and their
ratio. Run: python -m mentalarena.benchmarks.performance.export_memory [--records 20000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def synthetic_record(i: int) -> dict:
    """A finished session record, distinct for each ``i``."""
    return {
        "status": "done",
        "session_id": f"s{i}",
        "profile_id": f"p{i % 50}",
        "style": "plain",
        "symptom_summary": f"Session {i}: low mood, poor sleep and withdrawal for {i % 12 + 1} months.",
        "illness": "Major depressive disorder",
        "treatment": f"Behavioural activation, plan {i}",
        "treatment_explanation": "Rebuilds routine.",
        "medicine": f"Sertraline {i % 7 * 25 + 25} mg",
        "medicine_explanation": "First-line SSRI.",
        "transcript": [
            {"speaker": "patient", "phase": "inquiry", "text": f"I have felt low since week {i}."},
            {"speaker": "therapist", "phase": "inquiry", "text": f"What happened in week {i}?"},
            {"speaker": "patient", "phase": "inquiry", "text": "I lost my job and stopped seeing friends."},
            {
                "speaker": "therapist",
                "phase": "diagnosis",
                "text": "Summary: low mood.\n1. MDD\n2. Adjustment disorder",
            },
        ],
        "decoder_rounds": [{"similarities": {"coping_strategies": 0.7}}],
        "failures": [],
    }


def write_records(path: Path, count: int) -> None:
    """Write ``count`` synthetic records to ``path`` as JSONL."""
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            handle.write(json.dumps(synthetic_record(i)) + "\n")


def export_peak_rss(records: Path, out: Path) -> float:
    """Peak RSS (MiB) of a subprocess that exports ``records``."""
    code = (
        "import resource, sys; from pathlib import Path; "
        "from mentalarena.training.export import ExportArgs, export; "
        f"export(ExportArgs(records=[Path({str(records)!r})], out=Path({str(out)!r}), hf_dataset=False)); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    """Export N and 10 x N synthetic records and print the peak RSS of each export and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for count in (args.records, args.records * 10):
            path = Path(tmp) / f"records-{count}.jsonl"
            write_records(path, count)
            rows.append((count, path.stat().st_size / 2**20, export_peak_rss(path, Path(tmp) / f"out-{count}")))
        for count, size, rss in rows:
            print(f"{count:>9} records ({size:7.1f} MiB of JSONL): peak RSS {rss:7.1f} MiB")
        print(
            f"peak RSS ratio, {rows[1][0]} vs {rows[0][0]} records: {rows[1][2] / rows[0][2]:.2f}x "
            f"for {rows[1][0] / rows[0][0]:.0f}x the records"
        )


if __name__ == "__main__":
    main()
