"""Records -> SFT data: exact items, de-duplication, filters, a split that never leaks a profile."""

import copy
import json
from pathlib import Path

import pytest

from mentalarena.agents import prompts
from mentalarena.agents.profiles import builtin_profiles
from mentalarena.cli import main
from mentalarena.graphs.record import best_trial
from mentalarena.training.export import KINDS, ExportArgs, ExportError, export

PROFILES = {p.id: p.to_patient_psi() for p in builtin_profiles()[:3]}
# MentalArena's released self-play record format, fictional text: Nora (lines 1, 2 and 4, line 4 a copy
# of line 1; line 2's medicine is 'N/A'), Ivo (line 3), Ruth (line 5, medicine 'Medication is not needed ...').
SEED_RECORDS = Path(__file__).with_name("data") / "mentalarena_seed_records.jsonl"


def make_record(session_id, profile_id, **changes):
    record = {
        "status": "done",
        "session_id": session_id,
        "profile_id": profile_id,
        "profile": PROFILES[profile_id],
        "style": "plain",
        "principles": ["Keep answers short."],
        "symptom_summary": f"{profile_id}: low mood and poor sleep for months.",
        "illness": "Major depressive disorder",
        "treatment": "Cognitive behavioural therapy",
        "treatment_explanation": "It targets negative thoughts.",
        "medicine": "Sertraline",
        "medicine_explanation": "An SSRI, first line.",
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
    assert report.items_written == {
        ("train", k): 1 for k in ("diagnosis", "treatment", "medication", "therapist_dialogue", "patient_dialogue")
    }
    diagnosis, treatment, medication, therapist, patient = items
    assert diagnosis == [
        {
            "role": "user",
            "content": (
                "builtin-01: low mood and poor sleep for months.\nBased on these symptoms, what is the most "
                "likely diagnosis?"
            ),
        },
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
        make_record(
            "s3",
            "builtin-01",
            symptom_summary="BUILTIN-01: Low mood, and poor sleep for months!",
            medicine="None",
            transcript=s1["transcript"][:2] + [{"speaker": "patient", "phase": "inquiry", "text": "Different answer."}],
        ),
        {"status": "failed", "session_id": "s4", "profile_id": "builtin-02", "error": "TimeoutError: x"},
        make_record(
            "s5",
            "builtin-02",
            transcript=[
                {"speaker": "patient", "phase": "inquiry", "text": "builtin-02: I panic."},
                {"speaker": "therapist", "phase": "inquiry", "text": "..."},
            ],
        ),
        make_record("s6", "builtin-03", decoder_rounds=[{"similarities": {"a": 0.2, "b": 0.3}}]),
    ]
    report = export(
        ExportArgs(
            records=[write(tmp_path, records)],
            out=tmp_path / "ds",
            similarity_floor=0.5,
            validation_ratio=0,
            hf_dataset=False,
        )
    )
    assert report.sessions_read == 6
    assert dict(report.removed) == {
        "duplicate_exact/diagnosis": 1,
        "duplicate_exact/treatment": 1,
        "duplicate_exact/medication": 1,
        "duplicate_exact/therapist_dialogue": 1,
        "duplicate_exact/patient_dialogue": 1,
        "duplicate_normalized/diagnosis": 1,
        "duplicate_normalized/treatment": 1,  # s3: same words, other case and punctuation
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
    records = [
        make_record(f"s{i}", pid, symptom_summary=f"{pid}: summary {i}.") for i, pid in enumerate(list(PROFILES) * 3)
    ]
    report = export(
        ExportArgs(records=[write(tmp_path, records)], out=tmp_path / "ds", validation_ratio=0.34, sharegpt=True)
    )
    assert len(report.profiles["validation"]) == 1 and len(report.profiles["train"]) == 2
    for split in ("train", "validation"):
        text = (tmp_path / "ds" / f"{split}.jsonl").read_text()
        present = {pid for pid in PROFILES if pid + ":" in text}
        assert present == set(report.profiles[split])
    sharegpt = json.loads((tmp_path / "ds" / "train.sharegpt.jsonl").read_text().splitlines()[0])
    assert sharegpt["conversations"][0]["from"] == "human"
    from datasets import load_from_disk

    assert load_from_disk(str(tmp_path / "ds" / "hf"))["validation"].num_rows == sum(
        n for (split, _), n in report.items_written.items() if split == "validation"
    )


def test_a_malformed_records_file_names_file_and_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(make_record("s1", "builtin-01")) + "\n{broken\n")
    with pytest.raises(ValueError, match=f"{path}: line 2: not valid JSON"):
        export(ExportArgs(records=[path], out=tmp_path / "ds", hf_dataset=False))


def test_sessions_of_one_patient_under_several_ids_never_split(tmp_path):
    # Patient-Psi numbers one patient's CCDs 1-1, 1-2, 1-3; a 'patient' key joins another id to them.
    abe = {**PROFILES["builtin-01"], "name": "Abe"}
    ids = {"1-1": {}, "1-2": {}, "1-3": {}, "abe-followup": {"patient": "1"}, "2-1": {}, "2-2": {}}
    records = [
        {
            **make_record(
                f"s{i}", "builtin-01", profile={**abe, "id": pid, **extra}, symptom_summary=f"{pid}: summary."
            ),
            "profile_id": pid,
        }
        for i, (pid, extra) in enumerate(ids.items())
    ]
    records += [make_record(f"t{i}", pid) for i, pid in enumerate(["builtin-02", "builtin-03"])]
    path = write(tmp_path, records)
    sides = set()
    for seed in range(8):
        report = export(
            ExportArgs(records=[path], out=tmp_path / f"ds{seed}", validation_ratio=0.5, seed=seed, hf_dataset=False)
        )
        assert report.patients == {"train": 2, "validation": 2}  # patients 1, 2, Marcus and Priya
        side = next(split for split, profiles in report.profiles.items() if "1-1" in profiles)
        assert {"1-1", "1-2", "1-3", "abe-followup"} <= set(report.profiles[side])
        other = (tmp_path / f"ds{seed}" / f"{'train' if side == 'validation' else 'validation'}.jsonl").read_text()
        assert not any(f"{pid}: summary." in other for pid in ("1-1", "1-2", "1-3", "abe-followup"))
        sides.add(side)
        assert (
            "- patients: train 2, validation 2; none is in two splits"
            in (tmp_path / f"ds{seed}" / "README.md").read_text()
        )
    assert sides == {"train", "validation"}  # the seed moves the patient, never a part of it


def test_a_failed_parse_session_is_absent_from_the_export_and_counted(tmp_path):
    unparsed = make_record(
        "s2",
        "builtin-02",
        illness="What a beautiful journey",
        diagnosis_candidates=[],
        failures=[{"node": "diagnosis", "reason": "diagnosis unparsed, none kept"}],
        answers=[
            {
                "node": "diagnosis",
                "schema": "Diagnosis",
                "constrained": True,
                "json": False,
                "parsed": False,
                "attempts": 3,
            }
        ],
    )
    path = write(tmp_path, [make_record("s1", "builtin-01"), unparsed])
    report = export(ExportArgs(records=[path], out=tmp_path / "ds", validation_ratio=0, hf_dataset=False))
    assert report.removed == {"session_with_failures": 1}
    assert "builtin-02" not in (tmp_path / "ds" / "train.jsonl").read_text()
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "| session_with_failures | 1 |" in card and "recorded failures (an unparsed answer, ...): dropped" in card
    # Kept on request, the session still gives no diagnosis item: its illness never parsed.
    kept = export(
        ExportArgs(records=[path], out=tmp_path / "kept", validation_ratio=0, hf_dataset=False, keep_failed=True)
    )
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
    trials = [
        {"proposal": "Bed rest all week", "explanation": "", "reaction": "", "score": 2},
        {"proposal": "Cognitive behavioural therapy", "explanation": "", "reaction": "", "score": 9},
    ]
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
    records = [
        make_record("s1", "builtin-01"),
        make_record("s2", "builtin-01", symptom_summary="other"),
        {"status": "failed", "session_id": "s3", "profile_id": "builtin-02", "error": "TimeoutError: x"},
    ]
    path = write(tmp_path, records)
    with pytest.raises(ExportError, match="validation_ratio 0.2: the sessions that pass come from 1 patient"):
        export(ExportArgs(records=[path], out=tmp_path / "ds", validation_ratio=0.2, hf_dataset=False))
    assert not (tmp_path / "ds").exists()
    report = export(ExportArgs(records=[path], out=tmp_path / "ds", validation_ratio=0, hf_dataset=False))
    assert report.patients == {"train": 1, "validation": 0}
    with pytest.raises(ExportError, match="no session passes the filters"):
        export(
            ExportArgs(
                records=[write(tmp_path, records[2:])], out=tmp_path / "none", validation_ratio=0, hf_dataset=False
            )
        )


def seed_lines():
    return [json.loads(line) for line in SEED_RECORDS.read_text(encoding="utf-8").splitlines()]


def test_seed_records_export_as_the_seeds_qa_items(tmp_path):
    report = export(ExportArgs(records=[SEED_RECORDS], out=tmp_path / "ds", validation_ratio=0, hf_dataset=False))
    assert report.sessions_read == report.seed_records_read == 5
    # Medication: no item for line 2's 'N/A' nor line 5's 'not' (the seed's rule), none for the copied line 4.
    assert report.items_written == {("train", "diagnosis"): 4, ("train", "treatment"): 4, ("train", "medication"): 2}
    assert report.removed == {
        "duplicate_exact/diagnosis": 1,
        "duplicate_exact/treatment": 1,
        "duplicate_exact/medication": 1,
    }
    assert report.patients == {"train": 3, "validation": 0}  # Nora, Ivo and Ruth, told apart by their history
    nora = seed_lines()[0]
    diagnosis, treatment, medication = read(tmp_path / "ds" / "train.jsonl")[:3]
    assert diagnosis == [
        {"role": "user", "content": prompts.QA_DIAGNOSIS.format(summary=nora["symptom"])},
        {"role": "assistant", "content": "Generalized Anxiety Disorder"},
    ]
    assert treatment == [
        {"role": "user", "content": prompts.QA_TREATMENT.format(summary=nora["symptom"])},
        {"role": "assistant", "content": f"{nora['treatment']} {nora['explain_t']}"},
    ]
    assert medication == [
        {"role": "user", "content": prompts.QA_MEDICATION.format(summary=nora["symptom"])},
        {"role": "assistant", "content": "Sertraline An SSRI that is a first-line medication for generalized anxiety."},
    ]
    written = (tmp_path / "ds" / "train.jsonl").read_text()
    assert "N/A" not in written and "not needed" not in written and "Mirtazapine" in written
    card = (tmp_path / "ds" / "README.md").read_text()
    assert (
        "- sessions read: 5, of them 5 MentalArena seed records" in card
        and "| duplicate_exact/medication | 1 |" in card
    )
    assert json.loads((tmp_path / "ds" / "export.json").read_text())["seed_records_read"] == 5


def test_seed_records_mix_with_session_records_and_dedup_across_both(tmp_path):
    ivo = seed_lines()[2]
    # A session that reached Ivo's seed answers word for word: its QA items are the seed's, its dialogues its own.
    session = make_record(
        "s1",
        "builtin-01",
        symptom_summary=ivo["symptom"],
        illness=ivo["illness"],
        treatment=ivo["treatment"],
        treatment_explanation=ivo["explain_t"],
        medicine=ivo["medicine"],
        medicine_explanation=ivo["explain_m"],
        decoder_rounds=[],
    )
    records = write(tmp_path, [session, make_record("s2", "builtin-02")])
    # The floor drops s1, a session without decoder rounds, but no seed record: the format has none to measure.
    report = export(
        ExportArgs(
            records=[records, SEED_RECORDS],
            out=tmp_path / "floor",
            validation_ratio=0,
            similarity_floor=0.5,
            hf_dataset=False,
        )
    )
    assert report.removed["under_similarity_floor"] == 1 and report.seed_records_read == 5
    session["decoder_rounds"] = make_record("s1", "builtin-01")["decoder_rounds"]
    records = write(tmp_path, [session, make_record("s2", "builtin-02")])
    report = export(
        ExportArgs(records=[records, SEED_RECORDS], out=tmp_path / "ds", validation_ratio=0, hf_dataset=False)
    )
    assert report.sessions_read == 7 and report.seed_records_read == 5
    assert report.removed == {
        "duplicate_exact/diagnosis": 2,
        "duplicate_exact/treatment": 2,
        "duplicate_exact/medication": 2,
    }
    # The seed's 4, 4 and 2 QA items, plus s2's; s1's are Ivo's. Both sessions give their dialogues.
    assert report.items_written == {
        ("train", "diagnosis"): 5,
        ("train", "treatment"): 5,
        ("train", "medication"): 3,
        ("train", "therapist_dialogue"): 2,
        ("train", "patient_dialogue"): 2,
    }
    assert report.patients == {"train": 5, "validation": 0}


def test_a_seed_patients_records_stay_on_one_side_of_the_split(tmp_path):
    # Nora's two situations (lines 1 and 2) differ but share her history, so they are one patient.
    nora = seed_lines()[0]["symptom"].split("\n\n")[0]
    records = write(tmp_path, [make_record("s1", "builtin-01")])
    sides = set()
    for seed in range(4):
        out = tmp_path / f"ds{seed}"
        report = export(
            ExportArgs(records=[records, SEED_RECORDS], out=out, validation_ratio=0.5, seed=seed, hf_dataset=False)
        )
        assert report.patients == {"train": 2, "validation": 2}  # Daniel, Nora, Ivo and Ruth
        side = [split for split in ("train", "validation") if nora in (out / f"{split}.jsonl").read_text()]
        assert (
            len(side) == 1 and len([item for item in read(out / f"{side[0]}.jsonl") if nora in item[0]["content"]]) == 5
        )
        sides.add(side[0])
    assert sides == {"train", "validation"}


def test_the_command_reads_the_seed_format_and_refuses_a_file_of_another(tmp_path, capsys):
    assert (
        main(
            [
                "export",
                "--format",
                "mentalarena",
                str(SEED_RECORDS),
                "--out",
                str(tmp_path / "ds"),
                "--validation-ratio",
                "0",
            ]
        )
        == 0
    )
    assert '"seed_records_read": 5' in capsys.readouterr().out
    records = write(tmp_path, [make_record("s1", "builtin-01")])
    assert (
        main(["export", "--format", "mentalarena", str(SEED_RECORDS), str(records), "--out", str(tmp_path / "x")]) == 2
    )
    assert (
        f"error: {records}: line 1: field 'symptom': missing from a MentalArena seed record" in capsys.readouterr().err
    )
    assert main(["export", "--format", "seed", str(SEED_RECORDS), "--out", str(tmp_path / "x")]) == 2
    assert "argument --format: invalid choice: 'seed'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "line, error",
    [
        ("{broken", "line 3: not valid JSON"),
        (
            '{"symptom": "Low mood.", "illness": "MDD", "treatment": "CBT", "explain_t": "", "medicine": "None"}',
            "line 3: field 'explain_m': missing from a MentalArena seed record",
        ),
        (
            (
                '{"symptom": "Low mood.", "illness": "MDD", "treatment": "CBT", "explain_t": "", '
                '"medicine": null, "explain_m": ""}'
            ),
            "line 3: field 'medicine': null is not a string",
        ),
        (
            (
                '{"symptom": "Low mood.", "illness": "MDD", "treatment": "CBT", "explain_t": "", '
                '"medicine": "", "explain_m": "", "doctor": "1"}'
            ),
            "line 3: field 'doctor': unknown in a MentalArena seed record",
        ),
    ],
)
def test_a_malformed_seed_line_names_file_line_and_field_and_loses_nothing(tmp_path, line, error):
    path = tmp_path / "seed.jsonl"
    path.write_text("".join(SEED_RECORDS.read_text(encoding="utf-8").splitlines(keepends=True)[:2]) + line + "\n")
    export(ExportArgs(records=[SEED_RECORDS], out=tmp_path / "ds", validation_ratio=0, hf_dataset=False))
    before = {f.name: f.read_bytes() for f in (tmp_path / "ds").iterdir()}
    with pytest.raises(ExportError, match=f"^{path}: {error}"):
        export(ExportArgs(records=[SEED_RECORDS, path], out=tmp_path / "ds", validation_ratio=0, hf_dataset=False))
    assert {f.name: f.read_bytes() for f in (tmp_path / "ds").iterdir()} == before


def test_a_file_of_neither_format_names_its_fields(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "Why?", "answer": "Because."}\n')
    with pytest.raises(
        ExportError,
        match=f"^{path}: line 1: field 'session_id': missing; neither a session record .* nor a MentalArena "
        "seed record .*; found 'question', 'answer'",
    ):
        export(ExportArgs(records=[path], out=tmp_path / "ds", hf_dataset=False))


def test_a_sessions_parsed_answers_export_with_their_prompts_and_parse_back(scripted, tmp_path):
    """The structured_answers kind: each answer the arena read, after the prompt that asked for it,
    as the JSON the arena would read from a model with no constraints."""
    from mentalarena.agents.context import Context
    from mentalarena.agents.schemas import DecoderInference, Diagnosis, Rating
    from mentalarena.agents.scripted import RoleScript
    from mentalarena.graphs.arena import build_arena_graph

    spec, _ = scripted(RoleScript())
    context = Context(model=spec, inquiry_turns=1, max_redirections=0, treatment_tries=1, medication_tries=1)
    record = build_arena_graph().compile().invoke({"profile_id": "builtin-01"}, context=context)["record"]
    path = write(tmp_path, [{"status": "done", "session_id": "s1", **record}])
    report = export(
        ExportArgs(
            records=[path], out=tmp_path / "ds", validation_ratio=0, hf_dataset=False, kinds=("structured_answers",)
        )
    )
    items = [json.loads(line)["messages"] for line in (tmp_path / "ds" / "train.jsonl").read_text().splitlines()]
    assert (
        report.items_written[("train", "structured_answers")]
        == len(items)
        == sum(a["parsed"] for a in record["answers"])
    )
    for messages in items:
        assert (
            messages[0]["role"] == "system" and messages[-2]["role"] == "user" and messages[-1]["role"] == "assistant"
        )
    by_task = {
        schema: [m for m in items if marker in m[-2]["content"]]
        for schema, marker in (
            (Diagnosis, "two most likely diagnoses"),
            (DecoderInference, "inferred"),
            (Rating, "Score"),
        )
    }
    for schema, found in by_task.items():
        assert found, schema
        for messages in found:
            schema.parse_text(messages[-1]["content"])  # the target parses as the arena would read it, unconstrained
