"""Records -> SFT data: exact items, de-duplication, filters, a split that never leaks a profile."""

import copy
import json

import pytest

from mentalarena.agents.profiles import builtin_profiles
from mentalarena.training.export import ExportArgs, export

PROFILES = {p.id: p.to_patient_psi() for p in builtin_profiles()[:3]}


def make_record(session_id, profile_id, **changes):
    record = {
        "status": "done", "session_id": session_id, "profile_id": profile_id, "profile": PROFILES[profile_id],
        "style": "plain", "principles": ["Keep answers short."],
        "symptom_summary": f"{profile_id}: low mood and poor sleep for months.",
        "illness": "Major depressive disorder",
        "treatment": "Cognitive behavioural therapy", "treatment_explanation": "It targets negative thoughts.",
        "medicine": "Sertraline", "medicine_explanation": "An SSRI, first line.",
        "transcript": [
            {"speaker": "patient", "phase": "inquiry", "text": f"{profile_id}: I feel low."},
            {"speaker": "therapist", "phase": "inquiry", "text": "How is your sleep?"},
            {"speaker": "patient", "phase": "inquiry", "text": "Bad, I wake at four."},
            {"speaker": "therapist", "phase": "diagnosis", "text": "Summary: low.\n1. MDD\n2. GAD"},
            {"speaker": "patient", "phase": "diagnosis", "text": "1 fits me."},
        ],
        "decoder_rounds": [{"similarities": {"a": 0.8, "b": 0.6}}],
        "failures": [],
    }
    record.update(changes)
    return record


def write(tmp_path, records):
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read(path):
    return [json.loads(line)["messages"] for line in path.read_text().splitlines()]


def test_one_session_gives_exactly_the_expected_items(tmp_path):
    path = write(tmp_path, [make_record("s1", "builtin-01")])
    report = export(ExportArgs(records=[path], out=tmp_path / "ds", validation_ratio=0, hf_dataset=False))
    items = read(tmp_path / "ds" / "train.jsonl")
    assert report.items_written == {("train", k): 1 for k in ("diagnosis", "treatment", "medication", "therapist_dialogue", "patient_dialogue")}
    diagnosis, treatment, medication, therapist, patient = items
    assert diagnosis == [
        {"role": "user", "content": "builtin-01: low mood and poor sleep for months.\nBased on these symptoms, what is the most likely diagnosis?"},
        {"role": "assistant", "content": "Major depressive disorder"},
    ]
    assert treatment[1]["content"] == "Cognitive behavioural therapy It targets negative thoughts."
    assert medication[1]["content"] == "Sertraline An SSRI, first line."
    # The therapist's side: patient turns as the user's, ending on the therapist's last turn.
    assert [m["role"] for m in therapist] == ["system", "user", "assistant", "user", "assistant"]
    assert therapist[-1]["content"].startswith("Summary: low.")
    # The patient's side: its prompt is rebuilt from the encoded profile; it ends on its own turn.
    assert [m["role"] for m in patient] == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert "You are Daniel" in patient[0]["content"] and "Keep answers short." in patient[0]["content"]
    assert patient[-1]["content"] == "1 fits me."


def test_dedup_and_filters_remove_exactly_what_they_should(tmp_path):
    s1 = make_record("s1", "builtin-01")
    records = [
        s1,
        {**copy.deepcopy(s1), "session_id": "s2"},  # exact duplicate of every item
        make_record("s3", "builtin-01", symptom_summary="BUILTIN-01: Low mood, and poor sleep for months!", medicine="None",
                    transcript=s1["transcript"][:2] + [{"speaker": "patient", "phase": "inquiry", "text": "Different answer."}]),
        {"status": "failed", "session_id": "s4", "profile_id": "builtin-02", "error": "TimeoutError: x"},
        make_record("s5", "builtin-02", transcript=[
            {"speaker": "patient", "phase": "inquiry", "text": "builtin-02: I panic."},
            {"speaker": "therapist", "phase": "inquiry", "text": "..."},
        ]),
        make_record("s6", "builtin-03", decoder_rounds=[{"similarities": {"a": 0.2, "b": 0.3}}]),
    ]
    report = export(ExportArgs(records=[write(tmp_path, records)], out=tmp_path / "ds", similarity_floor=0.5, validation_ratio=0, hf_dataset=False))
    assert report.sessions_read == 6
    assert dict(report.removed) == {
        "duplicate_exact/diagnosis": 1, "duplicate_exact/treatment": 1, "duplicate_exact/medication": 1,
        "duplicate_exact/therapist_dialogue": 1, "duplicate_exact/patient_dialogue": 1,
        "duplicate_normalized/diagnosis": 1, "duplicate_normalized/treatment": 1,  # s3: same words, other case and punctuation
        "failed_session": 1,
        "garbled/therapist_dialogue": 1,  # s5's therapist said only '...'
        "under_similarity_floor": 1,
    }
    # s1: 5 items; s3: its two dialogues (no medication item for 'None'); s5: the QA items and the
    # patient's side, which ends on the patient's turn before the garbled one.
    assert sum(report.items_written.values()) == 5 + 2 + 4
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "| under_similarity_floor | 1 |" in card and "not a medical device" in card


def test_the_split_keeps_each_profile_on_one_side(tmp_path):
    records = [make_record(f"s{i}", pid, symptom_summary=f"{pid}: summary {i}.") for i, pid in enumerate(list(PROFILES) * 3)]
    report = export(ExportArgs(records=[write(tmp_path, records)], out=tmp_path / "ds", validation_ratio=0.34, sharegpt=True))
    assert len(report.profiles["validation"]) == 1 and len(report.profiles["train"]) == 2
    for split in ("train", "validation"):
        text = (tmp_path / "ds" / f"{split}.jsonl").read_text()
        present = {pid for pid in PROFILES if pid + ":" in text}
        assert present == set(report.profiles[split])
    sharegpt = json.loads((tmp_path / "ds" / "train.sharegpt.jsonl").read_text().splitlines()[0])
    assert sharegpt["conversations"][0]["from"] == "human"
    from datasets import load_from_disk
    assert load_from_disk(str(tmp_path / "ds" / "hf"))["validation"].num_rows == sum(
        n for (split, _), n in report.items_written.items() if split == "validation")


def test_a_malformed_records_file_names_file_and_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(make_record("s1", "builtin-01")) + "\n{broken\n")
    with pytest.raises(ValueError, match=f"{path}: line 2: not valid JSON"):
        export(ExportArgs(records=[path], out=tmp_path / "ds", hf_dataset=False))
