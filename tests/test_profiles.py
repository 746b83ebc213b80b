import json

import pytest

from conftest import shared_file
from mentalarena.agents.profiles import (
    CONVERSATIONAL_STYLES,
    PatientProfile,
    ProfileError,
    builtin_profiles,
    load_profiles,
)


def test_patient_psi_fixture_loads():
    profiles = load_profiles(shared_file("patient-psi/profiles.json"))
    assert [p.id for p in profiles] == ["1-1", "1-2", "1-3"]
    abe = profiles[0]
    assert sorted(abe.styles) == sorted(CONVERSATIONAL_STYLES)
    assert abe.helpless_belief == ["I am incompetent.", "I am a failture."]
    # The fixture keeps beliefs during depression inside intermediate_belief, after a marker.
    assert abe.intermediate_belief.startswith("It's important to be responsible")
    assert "[during depression]" not in abe.intermediate_belief
    assert abe.intermediate_belief_depression.startswith("(1) If I avoid challenges")


def test_key_variants_and_jsonl(tmp_path):
    record = json.loads(shared_file("patient-psi/profiles.json").read_text())[0]
    record["helpless_belief_current"] = record.pop("helpless_belief")
    record["intermediate_belief"] = "Work hard."
    record["intermediate_belief_depression"] = "If I fail, I am worthless."
    path = tmp_path / "profiles.jsonl"
    path.write_text(json.dumps(record) + "\n\n" + json.dumps({**record, "id": "x"}) + "\n")
    profiles = load_profiles(path)
    assert [p.id for p in profiles] == ["1-1", "x"]
    assert profiles[0].helpless_belief == ["I am incompetent.", "I am a failture."]
    assert profiles[0].intermediate_belief_depression == "If I fail, I am worthless."
    assert PatientProfile.model_validate(profiles[0].to_patient_psi()) == profiles[0]  # round trip


def test_malformed_records_name_file_record_and_field(tmp_path):
    good = json.loads(shared_file("patient-psi/profiles.json").read_text())[0]
    bad = dict(good, id="broken", type=["shouting"])
    del bad["situation"]
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps([good, bad]))
    with pytest.raises(ProfileError) as error:
        load_profiles(path)
    message = str(error.value)
    assert f"{path}: record 1 (id 'broken'): field 'situation': Field required" in message
    assert "field 'type.0'" in message


def test_other_malformed_files(tmp_path):
    cases = {
        "broken.json": ("[{", "not valid JSON at line 1"),
        "lines.jsonl": ('{"name": "a"}\n{oops\n', "line 2: not valid JSON"),
        "empty.json": ("[]", "holds no profiles"),
        "scalar.json": ("[1]", "record 0: expected an object"),
    }
    for name, (text, expected) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ProfileError, match=expected):
            load_profiles(path)
    with pytest.raises(ProfileError, match="cannot read"):
        load_profiles(tmp_path / "missing.json")


def test_duplicate_ids_are_refused(tmp_path):
    record = json.loads(shared_file("patient-psi/profiles.json").read_text())[0]
    path = tmp_path / "dups.json"
    path.write_text(json.dumps([record, record]))
    with pytest.raises(ProfileError, match="record 1 \\(id '1-1'\\): field 'id': duplicate"):
        load_profiles(path)


def test_builtin_library_covers_distinct_presentations():
    profiles = builtin_profiles()
    assert len(profiles) >= 20
    presentations = {p.presentation for p in profiles}
    assert len(presentations) >= 20
    for needed in (
        "depress",
        "generalized anxiety",
        "panic",
        "social anxiety",
        "post-traumatic",
        "obsessive",
        "bipolar",
        "insomnia",
        "alcohol",
        "grief",
        "bulimia",
        "adhd",
    ):
        assert any(needed in p.lower() for p in presentations), needed
    assert all(p.core_beliefs for p in profiles)


def test_the_long_style_names_of_mentalarenas_patient_set_load(tmp_path):
    record = builtin_profiles()[0].to_patient_psi()
    record["type"] = ["plain", "verbose", "go off on tangents", "hostile", "guarded", "ingratiating"]
    path = tmp_path / "Patient-Psi-CM_dataset.json"
    path.write_text(json.dumps([record, {**record, "id": "x", "type": ["Go off on tangents", "Hostile"]}]))
    first, second = load_profiles(path)
    assert first.styles == ["plain", "verbose", "tangent", "upset", "reserved", "pleasing"]
    assert second.styles == ["tangent", "upset"]
    path.write_text(json.dumps([{**record, "type": ["hostile", "shouting"]}]))
    with pytest.raises(ProfileError, match="field 'type.1': Input should be 'plain'"):
        load_profiles(path)
