"""Session records -> supervised fine-tuning data.

Items: the seed's QA items (symptom summary -> diagnosis / treatment / medication), whole
dialogues with the therapist as the assistant, and whole dialogues with the patient as the
assistant. Written as conversational ``messages`` JSONL (TRL's SFTTrainer, OpenAI fine-tuning),
optionally ShareGPT JSONL, and a Hugging Face ``datasets`` dataset on disk, with a dataset card.

What gets through: sessions that ended, with no recorded failure (unless ``keep_failed``), that
passed the safety check (unless ``keep_unsafe``) and the similarity floor. QA targets come only
from parsed answers. The therapist's dialogue teaches only the kept (best-rated) treatment and
medication proposal: rejected proposals and the patient's ratings of them are left out, because a
``messages`` item trains every assistant turn (TRL has no per-turn mask in that format), so a
rejected proposal carried as context would be trained as well. Splits group sessions by patient
(:func:`~mentalarena.agents.profiles.patient_identity`), drawn among the sessions that pass.

MentalArena's released self-play records (the seed's format: one object a line with ``symptom``,
``illness``, ``treatment``, ``explain_t``, ``medicine``, ``explain_m``) are read as session records
with those fields and nothing else (:func:`seed_session_record`), so they give the same QA items,
go through the same filters and de-duplication, and can be mixed with the project's own records.

Records are streamed line by line (twice: once to find the patients, once to write) and
de-duplication keys live in a SQLite table on disk, so memory stays flat however many records
there are.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mentalarena.agents import prompts
from mentalarena.agents.jsonl import read_json_lines
from mentalarena.agents.parsing import is_refusal
from mentalarena.agents.patient import patient_system_prompt
from mentalarena.agents.profiles import patient_identity
from mentalarena.graphs.cli import share

KINDS = ("diagnosis", "treatment", "medication", "therapist_dialogue", "patient_dialogue", "structured_answers")
SPLITS = ("train", "validation")
# "records": this project's records.jsonl; "mentalarena": the seed's released self-play records;
# "auto": each file's format told by its first record (see file_format).
RECORD_FORMATS = ("auto", "records", "mentalarena")
SEED_FIELDS = ("symptom", "illness", "treatment", "explain_t", "medicine", "explain_m")
# The seed's data_process.py writes no medication item for a medicine containing any of these.
SEED_MEDICINE_REFUSALS = ("none", "n/a", "not", "explanation")
# The seed's arena_med.py writes a symptom as "Patient History: <history>\n\nCognitive Conceptualization
# Diagram: ... Situation: ...". One Patient-Psi patient's CCDs share the history and differ in the rest.
SEED_HISTORY = re.compile(r"Patient History:(?P<history>.*?)\n\nCognitive Conceptualization Diagram:", re.S)


class ExportError(ValueError):
    """A records file that cannot be exported; the message names file and line."""


@dataclass
class ExportArgs:
    """What an export reads and writes: the records files, the dataset folder, the item kinds, split and filters."""

    records: list[Path] = field(
        metadata={
            "flag": "FILE",
            "description": "records.jsonl files of one or more runs, and/or MentalArena's released self-play records "
            "(JSONL with symptom, illness, treatment, explain_t, medicine, explain_m)",
        }
    )
    out: Path = field(metadata={"description": "dataset folder"})
    kinds: tuple[str, ...] = field(default=KINDS, metadata={"cli": False})
    validation_ratio: float = field(
        default=0.1,
        metadata={
            "type": share,
            "description": "share of patients held out for validation "
            "(0: no validation split; otherwise an empty one is an error)",
        },
    )
    similarity_floor: float = field(
        default=0.0, metadata={"description": "drop sessions whose last decoder round's mean similarity is lower"}
    )
    keep_unsafe: bool = field(
        default=False,
        metadata={"description": "keep sessions whose therapist turns failed the safety check (dropped by default)"},
    )
    keep_failed: bool = field(
        default=False,
        metadata={
            "description": "keep sessions with recorded failures, such as an unparsed answer (dropped by default); "
            "unparsed fields still give no item"
        },
    )
    # Else a validation_ratio that leaves validation empty is an error (the loop's small runs allow it).
    empty_validation_ok: bool = field(default=False, metadata={"cli": False})
    seed: int = 0
    record_format: str = field(
        default="auto",
        metadata={
            "flag": "--format",
            "choices": RECORD_FORMATS,
            "description": "auto: each file's format is told by its first line, so both kinds mix in one export; "
            "records or mentalarena: every file must be of that format",
        },
    )
    sharegpt: bool = field(default=False, metadata={"description": "also write ShareGPT JSONL (LLaMA-Factory)"})
    hf_dataset: bool = field(default=True, metadata={"cli": False})


@dataclass
class ExportReport:
    """What an export read, wrote per split and kind, and removed, and which patients and profiles each split holds."""

    sessions_read: int = 0
    seed_records_read: int = 0  # of sessions_read, MentalArena seed records
    items_written: Counter = field(default_factory=Counter)  # (split, kind) -> n, flattened below
    removed: Counter = field(default_factory=Counter)
    profiles: dict = field(default_factory=dict)  # split -> sorted profile ids
    patients: dict = field(default_factory=dict)  # split -> how many patients

    def as_dict(self) -> dict:
        """The report as JSON-ready data, with items written keyed 'split/kind'."""
        written = {f"{split}/{kind}": n for (split, kind), n in sorted(self.items_written.items())}
        return {
            "sessions_read": self.sessions_read,
            "seed_records_read": self.seed_records_read,
            "items_written": written,
            "removed": dict(self.removed),
            "patients": self.patients,
            "profiles": self.profiles,
        }


def iter_records(paths: list[Path], record_format: str = "records") -> Iterator[tuple[Path, dict]]:
    """Session records, line by line; a MentalArena seed record comes out as a session record (seed_session_record)."""
    for path in paths:
        format_of_file = None if record_format == "auto" else record_format
        for where, record in read_json_lines(path, ExportError):
            format_of_file = format_of_file or file_format(record, where)
            if format_of_file == "mentalarena":
                yield path, seed_session_record(record, where)
                continue
            if not isinstance(record, dict) or "session_id" not in record:
                raise ExportError(f"{where}: field 'session_id': missing, not a session record")
            yield path, record


def file_format(first_record: object, where: str) -> str:
    """A file's format, told by its first record: 'session_id' marks a session record, 'symptom' (a key
    session records never have; theirs is 'symptom_summary') a MentalArena seed record."""
    if isinstance(first_record, dict) and "session_id" in first_record:
        return "records"
    if isinstance(first_record, dict) and "symptom" in first_record:
        return "mentalarena"
    found = (
        ", ".join(map(repr, first_record))
        if isinstance(first_record, dict)
        else f"a JSON {type(first_record).__name__}"
    )
    raise ExportError(
        f"{where}: field 'session_id': missing; neither a session record (with 'session_id') nor a MentalArena "
        f"seed record ({', '.join(SEED_FIELDS)}); found {found or 'an empty object'}"
    )


def seed_session_record(seed: object, where: str) -> dict:
    """A MentalArena seed record as a session record with only the QA fields: no transcript, profile,
    failures log, safety flags or decoder rounds, so it gives QA items only and passes those filters.

    Seed records name no patient. The split groups them by the patient history in the symptom (see
    SEED_HISTORY), hashed as patient_identity hashes a profile's history: grouping by the whole symptom
    would put one patient's CCDs, which differ only in the situation, on both sides of the split."""
    if not isinstance(seed, dict):
        raise ExportError(f"{where}: a JSON {type(seed).__name__}, not a MentalArena seed record object")
    for name in SEED_FIELDS:
        if name not in seed:
            raise ExportError(f"{where}: field {name!r}: missing from a MentalArena seed record")
        if not isinstance(seed[name], str):
            raise ExportError(f"{where}: field {name!r}: {json.dumps(seed[name])} is not a string")
    unknown = [name for name in seed if name not in SEED_FIELDS]
    if unknown:
        raise ExportError(
            f"{where}: field {unknown[0]!r}: unknown in a MentalArena seed record "
            f"(its fields: {', '.join(SEED_FIELDS)})"
        )
    history = SEED_HISTORY.match(seed["symptom"].strip())
    patient = "seed" + patient_identity({"history": history["history"].strip() if history else seed["symptom"].strip()})
    return {
        "session_id": where,
        "profile_id": patient,
        "source_format": "mentalarena",
        "symptom_summary": seed["symptom"],
        "illness": seed["illness"],
        "treatment": seed["treatment"],
        "treatment_explanation": seed["explain_t"],
        "medicine": "" if seed_refuses_medicine(seed["medicine"]) else seed["medicine"],
        "medicine_explanation": seed["explain_m"],
    }


def seed_refuses_medicine(medicine: str) -> bool:
    """The seed's rule: no medication item for a medicine that holds None, N/A, Not or Explanation.

    data_process.py tests containment case-sensitively; this tests it case-insensitively, so the
    lowercase non-answers it let through ("Medication is not the primary treatment ...") are left
    out too, and every item the seed drops is dropped here."""
    return any(word in medicine.lower() for word in SEED_MEDICINE_REFUSALS)


def _message(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def diagnosis_parsed(record: dict) -> bool:
    """Whether the record's diagnosis came from a parsed answer. Records before the answer log
    kept a failed diagnosis's first sentence as the illness; their failures name the node."""
    unparsed = {a["node"] for a in record.get("answers", []) if not a.get("parsed", True)}
    unparsed |= {f.get("node") for f in record.get("failures", [])}
    return "diagnosis" not in unparsed


def qa_items(record: dict) -> Iterator[tuple[str, list[dict]]]:
    """The seed's QA items, from parsed fields only (a kept proposal is never empty: best_trial)."""
    summary = record.get("symptom_summary", "").strip()
    if not summary:
        return
    if record.get("illness") and diagnosis_parsed(record):
        yield (
            "diagnosis",
            [_message("user", prompts.QA_DIAGNOSIS.format(summary=summary)), _message("assistant", record["illness"])],
        )
    if record.get("treatment"):
        answer = " ".join(part for part in (record["treatment"], record.get("treatment_explanation", "")) if part)
        yield (
            "treatment",
            [_message("user", prompts.QA_TREATMENT.format(summary=summary)), _message("assistant", answer)],
        )
    if record.get("medicine") and not is_refusal(record["medicine"]):
        answer = " ".join(part for part in (record["medicine"], record.get("medicine_explanation", "")) if part)
        yield (
            "medication",
            [_message("user", prompts.QA_MEDICATION.format(summary=summary)), _message("assistant", answer)],
        )


def structured_items(record: dict) -> Iterator[tuple[str, list[dict]]]:
    """Each parsed machine-read answer with the prompt that asked for it, the answer as JSON (what
    a model must write for the arena to read it without constraints)."""
    for answer in record.get("answers", []):
        if answer.get("parsed") and answer.get("prompt") and answer.get("answer"):
            yield "structured_answers", [*answer["prompt"], _message("assistant", answer["answer"])]


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


def without_rejected_proposals(record: dict) -> list[dict]:
    """The transcript with only the kept treatment and medication proposal, each with the patient's rating.

    Proposal turns are matched to trials by order (one therapist turn and one patient turn per
    trial); the kept trial is the one whose proposal the record kept. No kept trial, no turn."""
    kept_trial = {}
    for kind, kept_field in (("treatment", "treatment"), ("medication", "medicine")):
        trials = record.get(f"{kind}_trials", [])
        kept_trial[kind] = next(
            (i for i, t in enumerate(trials) if t.get("proposal") and t["proposal"] == record.get(kept_field)), None
        )
    seen: Counter = Counter()  # (phase, speaker) -> that speaker's turns in that phase so far
    kept = []
    for turn in record.get("transcript", []):
        phase = turn.get("phase")
        if phase in kept_trial:
            index = seen[(phase, turn["speaker"])]
            seen[(phase, turn["speaker"])] += 1
            if index != kept_trial[phase]:
                continue
        kept.append(turn)
    return kept


def dialogue_items(record: dict) -> Iterator[tuple[str, list[dict]]]:
    """The therapist's dialogue without rejected proposals and, when the record has a profile, the patient's."""
    transcript = record.get("transcript", [])
    therapist = dialogue(prompts.THERAPIST_DIALOGUE_SYSTEM, without_rejected_proposals(record), "therapist")
    if therapist:
        yield "therapist_dialogue", therapist
    if record.get("profile"):
        system = patient_system_prompt(
            {"patient": record["profile"], "style": record["style"], "principles": record.get("principles", [])}
        )
        patient = dialogue(system, transcript, "patient", opening=prompts.PATIENT_OPENING)
        if patient:
            yield "patient_dialogue", patient


def is_garbled(messages: list[dict]) -> bool:
    """Whether any message has no word of two letters or more."""
    return any(not re.search(r"[A-Za-z]{2,}", m["content"]) for m in messages)


def normalize(messages: list[dict]) -> str:
    """The messages as a JSON key for near-duplicates: lower case, punctuation and spacing reduced to single spaces."""
    return json.dumps([[m["role"], re.sub(r"[^a-z0-9]+", " ", m["content"].lower()).strip()] for m in messages])


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def last_mean_similarity(record: dict) -> float | None:
    """The mean similarity of the record's last decoder round, or None without a scored round."""
    rounds = record.get("decoder_rounds") or []
    if not rounds or not rounds[-1]["similarities"]:
        return None
    values = list(rounds[-1]["similarities"].values())
    return sum(values) / len(values)


def record_patient(record: dict) -> str:
    """The patient a session record is about (see patient_identity)."""
    return patient_identity(record.get("profile") or {"id": record.get("profile_id", record["session_id"])})


def removal_reason(record: dict, args: ExportArgs) -> str | None:
    """Why a whole session is left out, or None when it is exported."""
    if record.get("status", "done") != "done":
        return "failed_session"
    if record.get("failures") and not args.keep_failed:
        return "session_with_failures"
    if record.get("safety_flags") and not args.keep_unsafe:
        return "safety_flagged_session"
    # Seed records carry no decoder rounds: the floor applies to the sessions it can measure.
    if args.similarity_floor > 0 and record.get("source_format") != "mentalarena":
        similarity = last_mean_similarity(record)
        if similarity is None or similarity < args.similarity_floor:
            return "under_similarity_floor"
    return None


def assign_splits(patients: set[str], ratio: float, seed: int) -> dict[str, str]:
    """patient -> split; every session of one patient lands on one side."""
    ordered = sorted(patients)
    random.Random(seed).shuffle(ordered)
    n_validation = round(len(ordered) * ratio)
    if ratio > 0 and len(ordered) >= 2:
        n_validation = min(max(n_validation, 1), len(ordered) - 1)
    return {patient: ("validation" if i < n_validation else "train") for i, patient in enumerate(ordered)}


def export(args: ExportArgs) -> ExportReport:
    """Write the SFT dataset of the records that pass into ``args.out``, split by patient; returns its report."""
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        raise ExportError(f"kinds: unknown {sorted(unknown)}; choose from {', '.join(KINDS)}")
    if not 0 <= args.validation_ratio < 1:
        raise ExportError(f"validation_ratio: {args.validation_ratio!r} is not in [0, 1)")
    if args.record_format not in RECORD_FORMATS:
        raise ExportError(
            f"record_format (--format): unknown {args.record_format!r}; choose from {', '.join(RECORD_FORMATS)}"
        )
    # The split is drawn among the sessions that pass, so a patient whose sessions are all left out
    # takes no place in either split.
    patients: set[str] = set()
    left_out: Counter = Counter()
    for _, record in iter_records(args.records, args.record_format):
        reason = removal_reason(record, args)
        if reason:
            left_out[reason] += 1
        else:
            patients.add(record_patient(record))
    split_of = assign_splits(patients, args.validation_ratio, args.seed)
    planned = Counter(split_of.values())
    if not planned["train"]:
        raise ExportError(
            f"{', '.join(map(str, args.records))}: no session passes the filters (left out: {dict(left_out)}), "
            "so there is nothing to train on"
        )
    if args.validation_ratio > 0 and not planned["validation"] and not args.empty_validation_ok:
        raise ExportError(
            f"validation_ratio {args.validation_ratio}: the sessions that pass come from {len(patients)} patient(s) "
            f"(left out: {dict(left_out)}), too few to hold one out; pass validation_ratio 0 (--validation-ratio 0) "
            "for no validation split"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    report = ExportReport()
    profiles_of: dict[str, set[str]] = {split: set() for split in SPLITS}
    patients_of: dict[str, set[str]] = {split: set() for split in SPLITS}
    seen_path = args.out / "dedup.sqlite"
    seen_path.unlink(missing_ok=True)
    seen = sqlite3.connect(seen_path)
    seen.execute("CREATE TABLE seen (key BLOB PRIMARY KEY)")
    outputs = {s: open(args.out / f"{s}.jsonl", "w", encoding="utf-8") for s in SPLITS}
    sharegpt = (
        {s: open(args.out / f"{s}.sharegpt.jsonl", "w", encoding="utf-8") for s in SPLITS} if args.sharegpt else {}
    )
    try:
        for _, record in iter_records(args.records, args.record_format):
            report.sessions_read += 1
            if record.get("source_format") == "mentalarena":
                report.seed_records_read += 1
            reason = removal_reason(record, args)
            if reason:
                report.removed[reason] += 1
                continue
            patient = record_patient(record)
            split = split_of[patient]
            patients_of[split].add(patient)
            profiles_of[split].add(record.get("profile_id", record["session_id"]))
            for kind, messages in (*qa_items(record), *dialogue_items(record), *structured_items(record)):
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
                    sharegpt[split].write(
                        json.dumps({"conversations": to_sharegpt(messages)}, ensure_ascii=False) + "\n"
                    )
                report.items_written[(split, kind)] += 1
    finally:
        for handle in (*outputs.values(), *sharegpt.values()):
            handle.close()
        seen.close()
        seen_path.unlink(missing_ok=True)
    shared = patients_of["train"] & patients_of["validation"]
    if shared:  # cannot happen by construction; checked because a leak would silently inflate validation scores
        raise ExportError(f"patients in both splits: {sorted(shared)}")
    report.patients = {split: len(patients_of[split]) for split in SPLITS}
    report.profiles = {split: sorted(profiles_of[split]) for split in SPLITS}
    for split in SPLITS:
        if planned[split] and not any(n for (s, _), n in report.items_written.items() if s == split):
            raise ExportError(
                f"{args.out / f'{split}.jsonl'}: no item left after de-duplication and the garbled-text filter "
                f"(removed: {dict(report.removed)})"
            )
    if args.hf_dataset:
        save_hf_dataset(args.out)
    write_card(args, report)
    return report


def _first_time(seen: sqlite3.Connection, key: bytes) -> bool:
    return seen.execute("INSERT OR IGNORE INTO seen (key) VALUES (?)", (key,)).rowcount == 1


def to_sharegpt(messages: list[dict]) -> list[dict]:
    """The messages in ShareGPT's shape: ``{"from": system, human or gpt, "value": text}``."""
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return [{"from": names[m["role"]], "value": m["content"]} for m in messages]


def save_hf_dataset(out: Path) -> None:
    """Save the non-empty split files of ``out`` as a Hugging Face dataset in ``out/hf``."""
    from datasets import DatasetDict, load_dataset

    files = {s: str(out / f"{s}.jsonl") for s in SPLITS if (out / f"{s}.jsonl").stat().st_size > 0}
    if files:
        DatasetDict(load_dataset("json", data_files=files)).save_to_disk(str(out / "hf"))


def write_card(args: ExportArgs, report: ExportReport) -> None:
    """Write the dataset card (``README.md``) and ``export.json``: the export's arguments and counts."""
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
        f"- sessions read: {report.sessions_read}"
        + (
            f", of them {report.seed_records_read} MentalArena seed records "
            "(QA items only; split by the patient history "
            "in their symptom; no failures log, safety flags or decoder rounds, so those filters pass them)"
            if report.seed_records_read
            else ""
        ),
        "- split: by patient (a profile's `patient` key, "
        "else Patient-Psi's `<patient>-<n>` id, else name and history), "
        f"drawn among the sessions that pass; validation ratio {args.validation_ratio}, seed {args.seed}",
        f"- patients: {', '.join(f'{split} {n}' for split, n in report.patients.items())}; none is in two splits",
        f"- decoder similarity floor: {args.similarity_floor or 'off'}",
        f"- sessions whose therapist turns failed the safety check: {'kept' if args.keep_unsafe else 'dropped'}",
        f"- sessions with recorded failures (an unparsed answer, ...): {'kept' if args.keep_failed else 'dropped'}; "
        "QA targets come only from parsed answers either way",
        "- therapist dialogues: only the kept (best-rated) treatment and medication proposal, "
        "with the patient's rating of it; "
        "rejected proposals are left out, because every assistant turn of an item is trained",
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
        + (", `*.sharegpt.jsonl`" if args.sharegpt else "")
        + ", `export.json` (these counts).",
    ]
    (args.out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (args.out / "export.json").write_text(
        json.dumps(
            {
                "args": {**asdict(args), "records": [str(p) for p in args.records], "out": str(args.out)},
                **report.as_dict(),
            },
            indent=2,
        ),
        encoding="utf-8",
    )
