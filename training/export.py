"""Session records -> supervised fine-tuning data.

Items: the seed's QA items (symptom summary -> diagnosis / treatment / medication), whole
dialogues with the therapist as the assistant, and whole dialogues with the patient as the
assistant. Written as conversational ``messages`` JSONL (TRL's SFTTrainer, OpenAI fine-tuning),
optionally ShareGPT JSONL, and a Hugging Face ``datasets`` dataset on disk, with a dataset card.

Records are streamed line by line and de-duplication keys live in a SQLite table on disk, so
memory stays flat however many records there are.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from mentalarena.agents import prompts
from mentalarena.agents.parsing import is_refusal
from mentalarena.agents.patient import patient_system_prompt

KINDS = ("diagnosis", "treatment", "medication", "therapist_dialogue", "patient_dialogue")
SPLITS = ("train", "validation")


class ExportError(ValueError):
    """A records file that cannot be exported; the message names file and line."""


@dataclass
class ExportArgs:
    records: list[Path]
    out: Path
    kinds: tuple[str, ...] = KINDS
    validation_ratio: float = 0.1
    similarity_floor: float = 0.0  # drop sessions whose last decoder round's mean similarity is lower
    keep_unsafe: bool = False  # keep sessions whose therapist turns failed the safety check
    seed: int = 0
    sharegpt: bool = False
    hf_dataset: bool = True


@dataclass
class ExportReport:
    sessions_read: int = 0
    items_written: Counter = field(default_factory=Counter)  # (split, kind) -> n, flattened below
    removed: Counter = field(default_factory=Counter)
    profiles: dict = field(default_factory=dict)  # split -> sorted profile ids

    def as_dict(self) -> dict:
        written = {f"{split}/{kind}": n for (split, kind), n in sorted(self.items_written.items())}
        return {"sessions_read": self.sessions_read, "items_written": written, "removed": dict(self.removed), "profiles": self.profiles}


def iter_records(paths: list[Path]) -> Iterator[tuple[Path, dict]]:
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ExportError(f"{path}: line {number}: not valid JSON: {exc.msg}") from exc
                if not isinstance(record, dict) or "session_id" not in record:
                    raise ExportError(f"{path}: line {number}: field 'session_id': missing, not a session record")
                yield path, record


def _message(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def qa_items(record: dict) -> Iterator[tuple[str, list[dict]]]:
    summary = record.get("symptom_summary", "").strip()
    if not summary:
        return
    if record.get("illness"):
        yield "diagnosis", [_message("user", prompts.QA_DIAGNOSIS.format(summary=summary)), _message("assistant", record["illness"])]
    if record.get("treatment"):
        answer = " ".join(part for part in (record["treatment"], record.get("treatment_explanation", "")) if part)
        yield "treatment", [_message("user", prompts.QA_TREATMENT.format(summary=summary)), _message("assistant", answer)]
    if record.get("medicine") and not is_refusal(record["medicine"]):
        answer = " ".join(part for part in (record["medicine"], record.get("medicine_explanation", "")) if part)
        yield "medication", [_message("user", prompts.QA_MEDICATION.format(summary=summary)), _message("assistant", answer)]


def dialogue(system: str, transcript: list[dict], assistant: str, opening: str | None = None) -> list[dict]:
    """The transcript from one role's side, ending on that role's turn."""
    messages = [_message("system", system)]
    if opening:
        messages.append(_message("user", opening))
    for turn in transcript:
        role = "assistant" if turn["speaker"] == assistant else "user"
        if messages[-1]["role"] == role:  # two turns in a row from one side read as one message
            messages[-1] = _message(role, messages[-1]["content"] + "\n\n" + turn["text"])
        else:
            messages.append(_message(role, turn["text"]))
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()
    return messages if len(messages) >= 3 else []


def dialogue_items(record: dict) -> Iterator[tuple[str, list[dict]]]:
    transcript = record.get("transcript", [])
    therapist = dialogue(prompts.THERAPIST_DIALOGUE_SYSTEM, transcript, "therapist")
    if therapist:
        yield "therapist_dialogue", therapist
    if record.get("profile"):
        system = patient_system_prompt({"patient": record["profile"], "style": record["style"], "principles": record.get("principles", [])})
        patient = dialogue(system, transcript, "patient", opening=prompts.PATIENT_OPENING)
        if patient:
            yield "patient_dialogue", patient


def is_garbled(messages: list[dict]) -> bool:
    return any(not re.search(r"[A-Za-z]{2,}", m["content"]) for m in messages)


def normalize(messages: list[dict]) -> str:
    return json.dumps([[m["role"], re.sub(r"[^a-z0-9]+", " ", m["content"].lower()).strip()] for m in messages])


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def last_mean_similarity(record: dict) -> float | None:
    rounds = record.get("decoder_rounds") or []
    if not rounds or not rounds[-1]["similarities"]:
        return None
    values = list(rounds[-1]["similarities"].values())
    return sum(values) / len(values)


def assign_splits(paths: list[Path], ratio: float, seed: int) -> dict[str, str]:
    """profile id -> split; every item of one profile lands on one side."""
    profiles = sorted({record.get("profile_id", record["session_id"]) for _, record in iter_records(paths)})
    random.Random(seed).shuffle(profiles)
    n_validation = round(len(profiles) * ratio)
    if ratio > 0 and len(profiles) >= 2:
        n_validation = min(max(n_validation, 1), len(profiles) - 1)
    return {pid: ("validation" if i < n_validation else "train") for i, pid in enumerate(profiles)}


def export(args: ExportArgs) -> ExportReport:
    args.out.mkdir(parents=True, exist_ok=True)
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        raise ExportError(f"kinds: unknown {sorted(unknown)}; choose from {', '.join(KINDS)}")
    split_of = assign_splits(args.records, args.validation_ratio, args.seed)
    report = ExportReport(profiles={s: sorted(p for p, v in split_of.items() if v == s) for s in SPLITS})
    seen_path = args.out / "dedup.sqlite"
    seen_path.unlink(missing_ok=True)
    seen = sqlite3.connect(seen_path)
    seen.execute("CREATE TABLE seen (key BLOB PRIMARY KEY)")
    outputs = {s: open(args.out / f"{s}.jsonl", "w", encoding="utf-8") for s in SPLITS}
    sharegpt = {s: open(args.out / f"{s}.sharegpt.jsonl", "w", encoding="utf-8") for s in SPLITS} if args.sharegpt else {}
    try:
        for _, record in iter_records(args.records):
            report.sessions_read += 1
            if record.get("status", "done") != "done":
                report.removed["failed_session"] += 1
                continue
            if record.get("safety_flags") and not args.keep_unsafe:
                report.removed["safety_flagged_session"] += 1
                continue
            similarity = last_mean_similarity(record)
            if args.similarity_floor > 0 and (similarity is None or similarity < args.similarity_floor):
                report.removed["under_similarity_floor"] += 1
                continue
            split = split_of[record.get("profile_id", record["session_id"])]
            for kind, messages in (*qa_items(record), *dialogue_items(record)):
                if kind not in args.kinds:
                    continue
                if is_garbled(messages):
                    report.removed[f"garbled/{kind}"] += 1
                    continue
                if not _first_time(seen, b"x" + _digest(json.dumps(messages, sort_keys=True))):
                    report.removed[f"duplicate_exact/{kind}"] += 1
                    continue
                if not _first_time(seen, b"n" + _digest(normalize(messages))):
                    report.removed[f"duplicate_normalized/{kind}"] += 1
                    continue
                outputs[split].write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
                if sharegpt:
                    sharegpt[split].write(json.dumps({"conversations": to_sharegpt(messages)}, ensure_ascii=False) + "\n")
                report.items_written[(split, kind)] += 1
    finally:
        for handle in (*outputs.values(), *sharegpt.values()):
            handle.close()
        seen.close()
        seen_path.unlink(missing_ok=True)
    if args.hf_dataset:
        save_hf_dataset(args.out)
    write_card(args, report)
    return report


def _first_time(seen: sqlite3.Connection, key: bytes) -> bool:
    return seen.execute("INSERT OR IGNORE INTO seen (key) VALUES (?)", (key,)).rowcount == 1


def to_sharegpt(messages: list[dict]) -> list[dict]:
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return [{"from": names[m["role"]], "value": m["content"]} for m in messages]


def save_hf_dataset(out: Path) -> None:
    from datasets import DatasetDict, load_dataset

    files = {s: str(out / f"{s}.jsonl") for s in SPLITS if (out / f"{s}.jsonl").stat().st_size > 0}
    if files:
        DatasetDict(load_dataset("json", data_files=files)).save_to_disk(str(out / "hf"))


def write_card(args: ExportArgs, report: ExportReport) -> None:
    manifests = [p.parent / "manifest.json" for p in args.records]
    models = sorted({json.dumps(json.loads(m.read_text())["models"]) for m in manifests if m.exists()})
    lines = [
        "# MentalArena self-play SFT data",
        "",
        "Synthetic dialogues between a simulated patient and a simulated therapist, both language models.",
        "Research data for building and studying models: not clinical advice, not a medical device.",
        "",
        f"- source records: {', '.join(str(p) for p in args.records)}",
        f"- models: {'; '.join(models) or 'unknown (no manifest beside the records)'}",
        f"- sessions read: {report.sessions_read}",
        f"- split: by patient profile, validation ratio {args.validation_ratio}, seed {args.seed}",
        f"- decoder similarity floor: {args.similarity_floor or 'off'}",
        f"- sessions whose therapist turns failed the safety check: {'kept' if args.keep_unsafe else 'dropped'}",
        "",
        "| split | kind | items |",
        "|---|---|---|",
        *[f"| {split} | {kind} | {n} |" for (split, kind), n in sorted(report.items_written.items())],
        "",
        "| removed by | items or sessions |",
        "|---|---|",
        *[f"| {reason} | {n} |" for reason, n in sorted(report.removed.items())],
        "",
        "Files: `train.jsonl` / `validation.jsonl` (conversational `messages`), `hf/` (datasets.load_from_disk)"
        + (", `*.sharegpt.jsonl`" if args.sharegpt else "") + ", `export.json` (these counts).",
    ]
    (args.out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (args.out / "export.json").write_text(json.dumps({"args": {**asdict(args), "records": [str(p) for p in args.records], "out": str(args.out)}, **report.as_dict()}, indent=2), encoding="utf-8")
