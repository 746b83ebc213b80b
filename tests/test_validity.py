"""The validity benchmark's figures, from scripted runs whose answers are known."""

import json

from mentalarena.agents.context import Context
from mentalarena.agents.profiles import builtin_profiles
from mentalarena.agents.schemas import Diagnosis, vocabulary_name
from mentalarena.agents.scripted import RoleScript
from mentalarena.benchmarks.validity import markdown, validity
from mentalarena.graphs.run import run_sessions
from mentalarena.graphs.run_folder import RECORDS


def test_every_builtin_presentation_is_a_vocabulary_name():
    assert all(vocabulary_name(profile.presentation) for profile in builtin_profiles())
    assert vocabulary_name("1. **PTSD**") == "Posttraumatic stress disorder"
    assert vocabulary_name("post-traumatic stress disorder") == "Posttraumatic stress disorder"
    assert vocabulary_name("What a beautiful journey, and this patient has shown incredible resilience.") is None
    assert set(Diagnosis.json_schema()["properties"]["first"]["enum"]) >= {
        vocabulary_name(p.presentation) for p in builtin_profiles()
    }


def test_the_figures_count_what_the_records_hold(scripted, tmp_path):
    script = RoleScript(rating_reply="I cannot say.")  # every rating fails to parse
    spec, _ = scripted(script)
    profiles = [
        p
        for p in builtin_profiles()
        if vocabulary_name(p.presentation) in ("Major depressive disorder", "Panic disorder")
    ]
    context = Context(
        model=spec, inquiry_turns=1, max_redirections=0, treatment_tries=1, medication_tries=1, parse_retries=0
    )
    run_sessions(profiles, context, tmp_path, len(profiles), progress=False)
    records = [json.loads(line) for line in (tmp_path / RECORDS).read_text().splitlines()]
    figures = validity(records + [{"session_id": "x", "status": "failed", "error": "RuntimeError: boom"}])

    assert figures["sessions"] == len(profiles) + 1
    assert figures["sessions_without_failure"]["k"] == 0  # the ratings failed in every session
    assert figures["ratings_integer"] == {**figures["ratings_integer"], "k": 0, "n": 2 * len(profiles)}
    assert figures["diagnoses_in_vocabulary"]["k"] == len(profiles)
    # The scripted therapist always says major depressive disorder first, adjustment disorder second;
    # the patient always picks the second.
    depressed = sum(vocabulary_name(p.presentation) == "Major depressive disorder" for p in profiles)
    assert figures["diagnosis_top1_agrees"]["k"] == figures["diagnosis_either_agrees"]["k"] == depressed
    assert figures["patient_pick_agrees"]["k"] == 0
    assert (
        figures["decoder_rounds_every_field_scored"]["k"]
        == figures["decoder_rounds_every_field_scored"]["n"]
        == len(profiles)
    )
    assert figures["failures_by_node"] == {"rate_treatment": len(profiles), "rate_medication": len(profiles)}
    assert figures["failed_sessions"] == ["RuntimeError: boom"]
    assert "| Sessions with no recorded failure | 0/" in markdown(figures)
