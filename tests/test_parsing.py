import pytest

from mentalarena.agents.parsing import (
    ParseError, clean_turn, is_refusal, parse_choice, parse_labelled_fields,
    parse_numbered_items, parse_proposal, parse_score, require_text,
)


@pytest.mark.parametrize("text, expected", [
    ("Score: 7", 7),
    ("I'd rate it 8/10.", 8),
    ("maybe **6** out of 10", 6),
    ("I think I'd feel about seven", 7),
    ("After 12 weeks I would feel 4/10", 4),
    ("Rating - 10", 10),
    ("On day 3 I would feel better, score 9", 9),  # a labelled score wins over an earlier number
])
def test_scores(text, expected):
    assert parse_score(text) == expected


@pytest.mark.parametrize("text", ["", "I feel great", "Score: 0", "about 11/10", "2.5"])
def test_scores_out_of_range_or_missing(text):
    with pytest.raises(ParseError):
        parse_score(text)


CANDIDATES = ["Major depressive disorder", "Generalized anxiety disorder"]


@pytest.mark.parametrize("text, expected", [
    ("1", 0), ("2.", 1), ("Option 2 fits me", 1), ("The second one.", 1), ("(1) because...", 0),
    ("I think generalized anxiety fits me better", 1), ("Depressive, for sure", 0), ("b) is closer", 1),
])
def test_choices(text, expected):
    assert parse_choice(text, CANDIDATES) == expected


@pytest.mark.parametrize("text", ["I don't know", "both disorders", "7"])
def test_choice_without_a_pick(text):
    with pytest.raises(ParseError):
        parse_choice(text, CANDIDATES)


def test_numbered_items_in_many_shapes():
    text = "Summary: tired.\n1. **Major depressive disorder**\n2) Dysthymia\n3. Other"
    assert parse_numbered_items(text, 2) == ["Major depressive disorder", "Dysthymia"]
    assert parse_numbered_items("- PTSD\n- Panic disorder", 2) == ["PTSD", "Panic disorder"]
    assert parse_numbered_items("Diagnosis 1: OCD\nDiagnosis 2: GAD", 2) == ["OCD", "GAD"]
    with pytest.raises(ParseError):
        parse_numbered_items("1. PTSD\n2. ptsd", 2)  # duplicates do not count twice
    assert parse_numbered_items("1. PTSD\n2. ptsd", 2, minimum=1) == ["PTSD"]
    with pytest.raises(ParseError):
        parse_numbered_items("no list at all", 2, minimum=1)


def test_labelled_fields_are_read_leniently():
    labels = {"coping": ("coping strategies", "coping"), "situation": ("situation",)}
    text = "Here is what I think.\n**Coping strategies**: avoids people\nand stays home\n- Situation: a party invite"
    assert parse_labelled_fields(text, labels) == {"coping": "avoids people and stays home", "situation": "a party invite"}
    assert parse_labelled_fields("Situation: x", labels) == {"coping": "", "situation": "x"}
    with pytest.raises(ParseError):
        parse_labelled_fields("no labels here", labels)


def test_proposals():
    assert parse_proposal("Treatment: CBT\nExplanation: evidence-based", "Treatment") == ("CBT", "evidence-based")
    assert parse_proposal("Try weekly CBT sessions. They help with rumination.", "Treatment") == ("Try weekly CBT sessions.", "They help with rumination.")
    with pytest.raises(ParseError):
        parse_proposal("Treatment: <one treatment>", "Treatment")  # an echoed template is not a proposal


def test_turn_cleaning():
    assert clean_turn('Patient: "I feel stuck."\nTherapist: Why?') == "I feel stuck."
    assert require_text("Therapist: How do you sleep?") == "How do you sleep?"
    for garbled in ("", "   ", "!!! ...", "12 34"):
        with pytest.raises(ParseError):
            require_text(garbled)


@pytest.mark.parametrize("text, refusal", [("None", True), ("N/A.", True), ("", True), ("no medication", True), ("Sertraline 50 mg", False)])
def test_refusals(text, refusal):
    assert is_refusal(text) is refusal
