"""The risk classifier: shipped weights, its threshold, the guard model, and the script that trains it."""

import json

import numpy as np
import pytest

from mentalarena.agents.context import Context
from mentalarena.agents.risk_classifier import load_risk_classifier, normalise
from mentalarena.agents.safety import RISK_PHRASES, screen_risk, screen_turn
from mentalarena.agents.schemas import RISK_CATEGORIES, RiskVerdict
from mentalarena.training.risk_classifier import (
    CorpusError,
    corpus_digest,
    default_corpus,
    load_corpus,
    split_by_family,
)
from mentalarena.training.risk_classifier import (
    main as train_main,
)

AT_RISK = "I have been saving up my pills and I think tonight is the night."
SAFE = "The weather was lovely so we had lunch in the garden."


def test_the_shipped_classifier_loads_offline_and_is_deterministic():
    classifier = load_risk_classifier()
    assert set(classifier.classes) == {*RISK_CATEGORIES, "none"} and 0 < classifier.threshold < 1
    assert classifier.embedding_model == "minilm" and classifier.adapter  # the tuned encoder's adapter ships too
    first = classifier.score([AT_RISK, SAFE])
    assert first == classifier.score([AT_RISK, SAFE])  # the same numbers every time
    assert first == [classifier.score([AT_RISK])[0], classifier.score([SAFE])[0]]  # and alone as in a batch
    assert (
        first[0].probability >= classifier.threshold > first[1].probability and first[0].category == "suicidal_ideation"
    )


def test_links_and_handles_do_not_change_a_score_and_a_wordless_message_is_no_risk():
    classifier = load_risk_classifier()
    assert normalise("@sam_k im done pic.twitter.com/x1Y https://t.co/abc") == "@user im done"
    plain, shared, handle = classifier.score([AT_RISK, f"{AT_RISK} https://example.org/a?b=1", f"@jo {AT_RISK}"])
    assert plain == shared and handle == classifier.score([f"@user {AT_RISK}"])[0]
    for wordless in ("", "   ", "https://example.org/photo.jpg"):
        assert classifier.score([wordless])[0].probability == 0.0
        assert not screen_risk(wordless, "classifier", threshold=0.0001).risk


def test_the_classifier_threshold_decides_as_documented():
    probability = screen_risk(AT_RISK, "classifier").score
    assert (
        screen_risk(AT_RISK, "classifier").threshold == load_risk_classifier().threshold
    )  # the validated one by default
    assert screen_risk(AT_RISK, "classifier", threshold=probability).risk  # at the threshold: a risk
    if not load_risk_classifier().card["phrases"]:  # with the phrase layer on, a phrase may flag it anyway
        assert not screen_risk(AT_RISK, "classifier", threshold=min(0.9999, probability + 1e-4)).risk
    assert screen_risk(SAFE, "classifier", threshold=0.0001).risk  # everything scores above almost nothing
    assert (
        screen_risk(SAFE).screen == "exemplars" and screen_risk(SAFE).threshold == 0.6
    )  # the default screen and its own threshold
    with pytest.raises(ValueError, match="Context.risk_threshold"):
        Context(risk_threshold=1.5)
    with pytest.raises(ValueError, match="Context.risk_screen"):
        Context(risk_screen="vibes")


def test_the_context_chooses_the_screen():
    assert screen_turn(SAFE, Context(model="scripted")).screen == "exemplars"
    screen = screen_turn(AT_RISK, Context(model="scripted", risk_screen="classifier"))
    assert screen.screen == "classifier" and screen.risk and screen.categories == ["suicidal_ideation"]


def test_the_phrase_layer_and_the_verdict_categories_agree():
    assert tuple(RISK_PHRASES) == RISK_CATEGORIES


@pytest.mark.parametrize(
    "guard_says, text, risk, categories",
    [
        ("abuse", SAFE, True, ["abuse"]),  # the guard adds a flag the screen did not raise
        ("none", AT_RISK, True, ["medical_emergency", "suicidal_ideation"]),  # but never removes one
        ("none", SAFE, False, []),
    ],
)
def test_a_guard_model_adds_flags_and_never_removes_them(scripted, guard_says, text, risk, categories):
    spec, guard = scripted(lambda messages: RiskVerdict(category=guard_says, reason="Judged from the message."))
    screen = screen_turn(text, Context(model="scripted", risk_guard_model=spec))
    assert len(guard.calls) == 1 and text in guard.calls[0][-1].content
    assert screen.risk is risk and screen.categories == categories
    assert screen.guard == {"category": guard_says, "reason": "Judged from the message."}


def test_an_unreadable_guard_answer_leaves_the_screen_verdict(scripted):
    spec, _ = scripted(lambda messages: "{not json")
    screen = screen_turn(AT_RISK, Context(model="scripted", risk_guard_model=spec, parse_retries=0))
    assert screen.risk and "error" in screen.guard
    assert screen_turn(SAFE, Context(model="scripted")).guard is None  # no guard configured: none asked


def test_the_corpus_split_keeps_families_whole():
    examples = load_corpus(default_corpus())
    split = split_by_family(examples, seed=0)
    families = {name: {examples[i].family for i in rows} for name, rows in split.items()}
    assert not families["train"] & families["test"] and not families["train"] & families["validation"]
    assert not families["validation"] & families["test"]
    assert sum(len(rows) for rows in split.values()) == len(examples) >= 600
    for name, rows in split.items():
        assert {examples[i].category for i in rows} == {*RISK_CATEGORIES, "none"}, name


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"text": "x", "category": "sadness", "subtype": "a", "family": "f1"}', "field 'category'"),
        ('{"text": "", "category": "none", "subtype": "a", "family": "f1"}', "field 'text'"),
        ("not json", "not valid JSON"),
    ],
)
def test_a_bad_corpus_line_is_refused_by_file_line_and_field(tmp_path, line, reason):
    good = '{"text": "I like tea.", "category": "none", "subtype": "ordinary", "family": "f0"}'
    (tmp_path / "corpus.jsonl").write_text(good + "\n" + line + "\n")
    with pytest.raises(CorpusError, match=rf"corpus.jsonl: line 2: .*{reason}|corpus.jsonl: line 2: {reason}"):
        load_corpus(tmp_path)


def test_the_shipped_classifier_was_trained_on_the_shipped_corpus():
    card = load_risk_classifier().card
    assert card["corpus"]["digest"] == corpus_digest(load_corpus(default_corpus()))
    validation = card["ablation"]["validation"]["classifier"]["recall"]
    assert validation["share"] >= card["target_recall"]  # the threshold was chosen for this


def test_the_training_script_trains_the_same_classifier_twice_and_it_loads_back(tmp_path):
    """On a small corpus cut from the shipped one (five families per category), one epoch: the
    script's run is repeatable, and what it saves scores as the classifier it returned."""
    by_category: dict[str, list] = {}
    for line in (default_corpus() / "positives.jsonl").read_text().splitlines() + (
        default_corpus() / "negatives.jsonl"
    ).read_text().splitlines():
        row = json.loads(line)
        families = by_category.setdefault(row["category"], [])
        if row["family"] in {f for f, _ in families} or len({f for f, _ in families}) < 5:
            families.append((row["family"], line))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "small.jsonl").write_text("\n".join(line for rows in by_category.values() for _, line in rows) + "\n")
    runs = [tmp_path / "first", tmp_path / "second"]
    for out in runs:
        assert train_main(["--corpus", str(corpus), "--out", str(out), "--epochs", "1"]) == 0
    first, second = (load_risk_classifier(out) for out in runs)
    assert first.classes == second.classes and first.threshold == second.threshold
    assert np.array_equal(first.weights, second.weights) and np.array_equal(first.bias, second.bias)
    assert (runs[0] / "risk_classifier_adapter" / "adapter_config.json").is_file()
    assert first.score([AT_RISK, SAFE]) == second.score([AT_RISK, SAFE])
    card = json.loads((runs[0] / "risk_classifier.json").read_text())
    assert card["epochs"] == 1 and len(card["validation_average_precision_by_epoch"]) == 1
    assert card["ablation"]["validation"]["classifier"]["recall"]["share"] >= card["target_recall"]
    # Training chose the threshold with the probabilities that the saved classifier computes. Its encoder
    # keeps the adapter apart and the saved one merges it, which can move a probability's 4th place: at most
    # one message at the threshold may fall on the other side.
    examples = load_corpus(corpus)
    validation = [examples[i] for i in split_by_family(examples, 0)["validation"]]
    flagged = [s.probability >= first.threshold for s in first.score([e.text for e in validation])]
    caught = sum(f and e.category != "none" for f, e in zip(flagged, validation))
    figures = card["ablation"]["validation"]["classifier"]
    assert abs(caught - figures["recall"]["k"]) <= 1 and abs(sum(flagged) - figures["precision"]["n"]) <= 1


@pytest.mark.parametrize(
    "setting, option",
    [
        ({"risk_guard_model": "nosuchprovider:x"}, "risk_guard_model"),
        ({"risk_classifier": "/no/such/folder"}, "risk_classifier"),
    ],
)
def test_a_bad_screen_setting_is_refused_before_any_session(setting, option):
    from mentalarena.graphs.run import RunOptionError, check_run_options

    with pytest.raises(RunOptionError) as refused:
        check_run_options(Context(model="scripted", **setting), sessions=1)
    assert refused.value.option == option


@pytest.mark.real_model
def test_the_embedded_model_answers_as_a_guard_in_its_schema():
    screen = screen_turn(AT_RISK, Context(model="embedded", risk_guard_model="embedded", max_new_tokens=48))
    assert "error" not in screen.guard and screen.guard["category"] in {
        "none",
        *RISK_CATEGORIES,
    }  # constrained to RiskVerdict
    assert screen.risk  # the screen flagged it; whatever the guard said cannot take that back
