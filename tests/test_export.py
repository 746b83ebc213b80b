"""Records -> SFT data: exact items, de-duplication, filters, a split that never leaks a profile."""

import copy
import json

import pytest

from mentalarena.agents.profiles import builtin_profiles
from mentalarena.graphs.record import best_trial
from mentalarena.training.export import KINDS, ExportArgs, ExportError, export

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


def test_sessions_of_one_patient_under_several_ids_never_split(tmp_path):
    # Patient-Psi numbers one patient's CCDs 1-1, 1-2, 1-3; a 'patient' key joins another id to them.
    abe = {**PROFILES["builtin-01"], "name": "Abe"}
    ids = {"1-1": {}, "1-2": {}, "1-3": {}, "abe-followup": {"patient": "1"}, "2-1": {}, "2-2": {}}
    records = [{**make_record(f"s{i}", "builtin-01", profile={**abe, "id": pid, **extra}, symptom_summary=f"{pid}: summary."), "profile_id": pid}
               for i, (pid, extra) in enumerate(ids.items())]
    records += [make_record(f"t{i}", pid) for i, pid in enumerate(["builtin-02", "builtin-03"])]
    path = write(tmp_path, records)
    sides = set()
    for seed in range(8):
        report = export(ExportArgs(records=[path], out=tmp_path / f"ds{seed}", validation_ratio=0.5, seed=seed, hf_dataset=False))
        assert report.patients == {"train": 2, "validation": 2}  # patients 1, 2, Marcus and Priya
        side = next(split for split, profiles in report.profiles.items() if "1-1" in profiles)
        assert {"1-1", "1-2", "1-3", "abe-followup"} <= set(report.profiles[side])
        other = (tmp_path / f"ds{seed}" / f"{'train' if side == 'validation' else 'validation'}.jsonl").read_text()
        assert not any(f"{pid}: summary." in other for pid in ("1-1", "1-2", "1-3", "abe-followup"))
        sides.add(side)
        assert "- patients: train 2, validation 2; none is in two splits" in (tmp_path / f"ds{seed}" / "README.md").read_text()
    assert sides == {"train", "validation"}  # the seed moves the patient, never a part of it


def test_a_failed_parse_session_is_absent_from_the_export_and_counted(tmp_path):
    unparsed = make_record("s2", "builtin-02", illness="What a beautiful journey", diagnosis_candidates=[],
                           failures=[{"node": "diagnosis", "reason": "diagnosis unparsed, none kept"}],
                           answers=[{"node": "diagnosis", "schema": "Diagnosis", "constrained": True, "json": False, "parsed": False, "attempts": 3}])
    path = write(tmp_path, [make_record("s1", "builtin-01"), unparsed])
    report = export(ExportArgs(records=[path], out=tmp_path / "ds", validation_ratio=0, hf_dataset=False))
    assert report.removed == {"session_with_failures": 1}
    assert "builtin-02" not in (tmp_path / "ds" / "train.jsonl").read_text()
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "| session_with_failures | 1 |" in card and "recorded failures (an unparsed answer, ...): dropped" in card
    # Kept on request, the session still gives no diagnosis item: its illness never parsed.
    kept = export(ExportArgs(records=[path], out=tmp_path / "kept", validation_ratio=0, hf_dataset=False, keep_failed=True))
    assert kept.items_written[("train", "diagnosis")] == 1 and kept.items_written[("train", "treatment")] == 2
    assert "beautiful journey" not in (tmp_path / "kept" / "train.jsonl").read_text()


def test_the_therapist_dialogue_teaches_only_the_kept_proposal(tmp_path):
    base = make_record("s1", "builtin-01")
    transcript = base["transcript"] + [
        {"speaker": "therapist", "phase": "treatment", "text": "Treatment: Bed rest all week"},
        {"speaker": "patient", "phase": "treatment", "text": "That would make me worse. 2/10"},
        {"speaker": "therapist", "phase": "treatment", "text": "Treatment: Cognitive behavioural therapy"},
        {"speaker": "patient", "phase": "treatment", "text": "I could try that. 9/10"},
    ]
    trials = [{"proposal": "Bed rest all week", "explanation": "", "reaction": "", "score": 2},
              {"proposal": "Cognitive behavioural therapy", "explanation": "", "reaction": "", "score": 9}]
    path = write(tmp_path, [{**base, "transcript": transcript, "treatment_trials": trials}])
    export(ExportArgs(records=[path], out=tmp_path / "ds", validation_ratio=0, hf_dataset=False))
    items = {kind: messages for kind, messages in zip(KINDS, read(tmp_path / "ds" / "train.jsonl"))}
    therapist = json.dumps(items["therapist_dialogue"])
    assert items["therapist_dialogue"][-1]["content"] == "Treatment: Cognitive behavioural therapy"
    assert "Bed rest" not in therapist and "2/10" not in therapist
    assert "Bed rest" in json.dumps(items["patient_dialogue"])  # the patient's side keeps its rating of it


def test_best_trial_never_keeps_an_empty_proposal():
    trials = [{"proposal": "", "score": 10}, {"proposal": "Sertraline", "score": 3}, {"proposal": " ", "score": None}]
    assert best_trial(trials)["proposal"] == "Sertraline"
    assert best_trial(trials[:1]) is None


def test_a_validation_split_that_would_be_empty_is_an_error(tmp_path):
    # Priya's only session failed: the split is drawn among the sessions that pass, one patient.
    records = [make_record("s1", "builtin-01"), make_record("s2", "builtin-01", symptom_summary="other"),
               {"status": "failed", "session_id": "s3", "profile_id": "builtin-02", "error": "TimeoutError: x"}]
    path = write(tmp_path, records)
    with pytest.raises(ExportError, match="validation_ratio 0.2: the sessions that pass come from 1 patient"):
        export(ExportArgs(records=[path], out=tmp_path / "ds", validation_ratio=0.2, hf_dataset=False))
    assert not (tmp_path / "ds").exists()
    report = export(ExportArgs(records=[path], out=tmp_path / "ds", validation_ratio=0, hf_dataset=False))
    assert report.patients == {"train": 1, "validation": 0}
    with pytest.raises(ExportError, match="no session passes the filters"):
        export(ExportArgs(records=[write(tmp_path, records[2:])], out=tmp_path / "none", validation_ratio=0, hf_dataset=False))
