import pytest

from mentalarena.agents.parsing import (
    ParseError,
    clean_turn,
    is_refusal,
    parse_choice,
    parse_labelled_fields,
    parse_numbered_items,
    parse_proposal,
    parse_score,
    require_text,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Score: 7", 7),
        ("I'd rate it 8/10.", 8),
        ("maybe **6** out of 10", 6),
        ("I think I'd feel about seven", 7),
        ("After 12 weeks I would feel 4/10", 4),
        ("Rating - 10", 10),
        ("On day 3 I would feel better, score 9", 9),  # a labelled score wins over an earlier number
        ("eight out of ten", 8),
    ],
)
def test_scores(text, expected):
    assert parse_score(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("On a scale of 1 to 10, I'd say 7.", 7),
        ("On a scale of 1-10 I would feel a 4", 4),
        ("From 1 (much worse) to 10 (much better): 7", 7),
        ("7 on a scale of 10", 7),
        ("On a scale of one to ten, about seven", 7),
    ],
)
def test_a_repeated_scale_is_not_a_score(text, expected):
    assert parse_score(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I feel like 2 things would change. Score: 8", 8),
        ("Score: 8. It would take 2 or 3 sessions to notice.", 8),  # a labelled score wins wherever it is
        ("I'd give it a rating of 6, maybe 9 in a year", 6),
        ("I'd rate this one a 7", 7),  # 'this one' is a pronoun
        ("Seven. After a couple of weeks I'd be calmer, maybe 3 nights of good sleep", 7),  # an opening number
        ("8 - it sounds doable", 8),
        ("My rating is seven, though 3 friends would say less", 7),  # a number word is labelled like digits
    ],
)
def test_a_labelled_score_beats_other_numbers(text, expected):
    assert parse_score(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("After 2 weeks I'd feel better, maybe a 6", 6),
        ("I'd be a 6 after 2 weeks", 6),  # '2 weeks' counts weeks
        ("On 10 mg I would feel like a 5", 5),
        ("At first maybe 4, after a while I would feel a 6", 6),  # the rating comes last, as the prompt asks
        ("Maybe 3, though seven would be fair too", 7),  # a number word counts like digits, not after them
        ("I think seven. No one can be sure.", 7),  # 'no one' is no rating
    ],
)
def test_an_unlabelled_score_is_the_last_number(text, expected):
    assert parse_score(text) == expected


@pytest.mark.parametrize(
    "text", ["", "I feel great", "Score: 0", "about 11/10", "2.5", "11/10, a solid ten", "I'd need 2 weeks to know"]
)
def test_scores_out_of_range_or_missing(text):
    with pytest.raises(ParseError):
        parse_score(text)


CANDIDATES = ["Major depressive disorder", "Generalized anxiety disorder"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1", 0),
        ("2.", 1),
        ("Option 2 fits me", 1),
        ("The second one.", 1),
        ("(1) because...", 0),
        ("I think generalized anxiety fits me better", 1),
        ("Depressive, for sure", 0),
        ("b) is closer", 1),
    ],
)
def test_choices(text, expected):
    assert parse_choice(text, CANDIDATES) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I've felt like this for 2 years, so the first one fits", 0),  # '2 years' is no pick
        ("In 2 months it got worse; the second one", 1),
        ("I pick number 2", 1),
        ("My choice: 1", 0),
        ("#2 for me", 1),
        ("It is (1), I think", 0),
        ("Option two", 1),
        ("2. It matches how I have felt.", 1),
        ("The second, not the first", 1),
        ("The first, not the second", 0),  # ordinals in text order
        ("The latter fits better", 1),
        ("The former.", 0),
        ("The 2nd one", 1),
        ("1st", 0),
        ("First of all, the second one fits me better", 1),
        ("At first I doubted it, but the second one fits", 1),
        ("The second one; option 1 was close", 1),
        ("Option 1, not the second one", 0),  # numbers and ordinals in one text order
    ],
)
def test_choices_by_number_or_ordinal_stand_as_the_answer(text, expected):
    assert parse_choice(text, CANDIDATES) == expected


def test_a_numbered_candidate_is_picked_after_its_name():
    assert parse_choice("Response 2 is better, though both take 1 step", ["Response 1", "Response 2"]) == 1


@pytest.mark.parametrize("text", ["I don't know", "both disorders", "7", "For 2 years now", "The third one"])
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
    assert parse_labelled_fields(text, labels) == {
        "coping": "avoids people and stays home",
        "situation": "a party invite",
    }
    assert parse_labelled_fields("Situation: x", labels) == {"coping": "", "situation": "x"}
    with pytest.raises(ParseError):
        parse_labelled_fields("no labels here", labels)


def test_proposals():
    assert parse_proposal("Treatment: CBT\nExplanation: evidence-based", "Treatment") == ("CBT", "evidence-based")
    assert parse_proposal("Try weekly CBT sessions. They help with rumination.", "Treatment") == (
        "Try weekly CBT sessions.",
        "They help with rumination.",
    )
    with pytest.raises(ParseError):
        parse_proposal("Treatment: <one treatment>", "Treatment")  # an echoed template is not a proposal


def test_turn_cleaning():
    assert clean_turn('Patient: "I feel stuck."\nTherapist: Why?') == "I feel stuck."
    assert require_text("Therapist: How do you sleep?") == "How do you sleep?"
    for garbled in ("", "   ", "!!! ...", "12 34"):
        with pytest.raises(ParseError):
            require_text(garbled)


@pytest.mark.parametrize(
    "text, refusal", [("None", True), ("N/A.", True), ("", True), ("no medication", True), ("Sertraline 50 mg", False)]
)
def test_refusals(text, refusal):
    assert is_refusal(text) is refusal
