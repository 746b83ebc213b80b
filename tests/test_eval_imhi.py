"""IMHI: label extraction (and the faults of the original rules), weighted F1, loading, scripted runs."""

import csv
from collections import Counter

import pytest

from conftest import shared_file
from mentalarena.benchmarks.imhi import (
    IMHI_SETS,
    UNPARSED,
    IMHIArgs,
    evaluate_imhi,
    extract_label,
    load_imhi_set,
    weighted_f1,
)
from mentalarena.benchmarks.qa import DataError
from mentalarena.cli import main


@pytest.mark.parametrize(
    "answer, expected",
    [
        # MentalLLaMA's rules tested `'no' in answer`: these matched 'no' inside 'know' and 'not'.
        ("I don't know.", None),
        ("I do not know whether the poster is depressed.", None),
        ("I know the poster feels low at times.", None),
        ("It is not clear to me, I am not sure.", None),
        ("The poster does not suffer from depression.", "no"),
        ("The poster doesn't suffer from depression. Reasoning: they ask about a website.", "no"),
        ("No, the poster does not suffer from depression.", "no"),
        ("There are no signs of depression.", "no"),
        ("Yes, the poster suffers from depression.", "yes"),
        ("The poster suffers from depression. Reasoning: they say nothing feels worth it.", "yes"),
        ("Yes. Reasoning: not eating, no sleep.", "yes"),  # words in the reasoning do not count
    ],
)
def test_yes_no_answers_respect_word_boundaries_and_negation(answer, expected):
    assert extract_label(answer, IMHI_SETS["DR"]) == expected


@pytest.mark.parametrize(
    "answer, expected",
    [
        # The gold answer says 'emotion turmoil', the label is 'emotional turmoil': the original matched neither.
        ("This post shows the stress cause related to emotion turmoil. Reasoning: ...", "emotional turmoil"),
        ("This post shows the stress cause related to emotional turmoil.", "emotional turmoil"),
        ("Emotional Turmoil", "emotional turmoil"),
        ("The stress cause is financial problems.", "financial problem"),
        ("Stress cause: finacial problem", "financial problem"),  # misspelt: fuzzy match
        ("This post shows other stress causes.", "other causes"),
        ("The cause is not work but family issues.", "family issues"),  # a negated label is skipped
        ("It is about school, not work.", "school"),
        ("I cannot tell what the cause is.", None),
    ],
)
def test_multi_class_labels_are_normalised_negation_aware_and_fuzzy(answer, expected):
    assert extract_label(answer, IMHI_SETS["SAD"]) == expected


@pytest.mark.parametrize(
    "set_name, answer, expected",
    [
        ("CAMS", "This post shows no causes of depression.", "none"),  # the original looked for 'none' only
        ("CAMS", "This post shows causes of depression related to jobs and career.", "jobs and career"),
        ("CAMS", "The cause is bias or abuse.", "bias or abuse"),
        ("CAMS", "This post is biased towards work.", "bias or abuse"),
        ("Irf", "The post shows potential risks of thwarted belongingness.", "yes"),
        ("Irf", "There is no risk of perceived burdensomeness.", "no"),
        ("swmh", "This post does not show depression; it shows anxiety.", "anxiety"),
        ("swmh", "This post shows no mental disorder symptoms.", "no mental disorder"),
        ("swmh", "Suicidal ideation.", "suicide"),
        ("t-sid", "This post shows suicide or self-harm tendency.", "suicide or self-harm tendency"),
        ("t-sid", "This post shows no mental disorders.", "no mental disorder"),
        ("t-sid", "PTSD", "ptsd"),
        ("MultiWD", "No, this wellness dimension does not exist in the post.", "no"),
        ("MultiWD", "This wellness dimension exists in the post.", "yes"),
        ("Irf", "The post shows this risk.", "yes"),
        ("loneliness", "The poster is lonely.", "yes"),
    ],
)
def test_every_set_reads_its_own_vocabulary(set_name, answer, expected):
    assert extract_label(answer, IMHI_SETS[set_name]) == expected


@pytest.mark.parametrize(
    "set_name, answer, expected",
    [
        # The negation reaches along an 'or' list: 'self-harm' is negated too, four words past 'no'.
        ("t-sid", "no signs of suicide or self-harm tendency, rather depression", "depression"),
        ("t-sid", "This post shows no signs of suicide or self-harm tendency, rather depression.", "depression"),
        ("swmh", "No anxiety or bipolar symptoms; the post shows depression.", "depression"),
        ("swmh", "This post shows anxiety and depression.", "anxiety"),  # 'and' without a negation negates nothing
        # 'Not only' affirms.
        ("t-sid", "Not only is the poster sad, the poster suffers from depression.", "depression"),
        ("swmh", "Not only is the poster sad, the poster suffers from depression.", "depression"),
        ("DR", "Not only is the poster sad, the poster suffers from depression.", "yes"),
        # 'none' is a negation word (it used to be stemmed to 'non').
        ("SAD", "None of it is work; it is school.", "school"),
        ("CAMS", "None.", "none"),
        ("DR", "None of the posts suggests depression.", "no"),
    ],
)
def test_negation_scope_not_only_and_none(set_name, answer, expected):
    assert extract_label(answer, IMHI_SETS[set_name]) == expected


def test_weighted_f1_by_hand():
    gold = ["a", "a", "a", "b", "b", "c"]
    predicted = ["a", "a", "b", "b", UNPARSED, "a"]
    # a: P 2/3 R 2/3 F1 2/3; b: P 1/2 R 1/2 F1 1/2; c: F1 0; weights 3, 2, 1.
    assert weighted_f1(gold, predicted) == pytest.approx((3 * 2 / 3 + 2 * 0.5 + 0) / 6)
    assert weighted_f1(["x", "y"], ["x", "y"]) == 1.0
    assert weighted_f1(["x", "y"], [UNPARSED, UNPARSED]) == 0.0


def test_weighted_f1_agrees_with_scikit_learn():
    metrics = pytest.importorskip(
        "sklearn.metrics", reason="scikit-learn (not a project dependency) cross-checks the numpy F1"
    )
    gold = list("aabbbccccd" * 3)
    predicted = list("abbbccccda" * 2) + list("aabbbcc") + [UNPARSED] * 3
    assert weighted_f1(gold, predicted) == pytest.approx(metrics.f1_score(gold, predicted, average="weighted"))


def test_every_gold_answer_of_the_nine_sets_has_a_label():
    root = shared_file("imhi-expert").parent
    counts = {name: Counter(item.gold_label for item in load_imhi_set(name, root)) for name in IMHI_SETS}
    assert all(sum(c.values()) == 35 for c in counts.values())
    assert counts["SAD"]["emotional turmoil"] == 1 and counts["SAD"]["other causes"] == 2
    assert counts["CAMS"]["none"] == 11
    assert counts["swmh"] == {
        "anxiety": 9,
        "no mental disorder": 9,
        "bipolar disorder": 7,
        "depression": 6,
        "suicide": 4,
    }
    assert counts["t-sid"] == {"suicide or self-harm tendency": 20, "no mental disorder": 14, "depression": 1}
    assert counts["DR"] == {"yes": 23, "no": 12}


def write_set(root, name, rows):
    path = root / "imhi-expert" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query", "gpt-3.5-turbo"])
        writer.writerows(rows)
    return path


def test_a_malformed_row_names_file_line_and_field(tmp_path):
    path = write_set(
        tmp_path,
        "DR",
        [
            [
                'Consider this post: "line one\nline two" Question: Does the poster suffer from depression?',
                "Yes, the poster suffers from depression.",
            ],
            [
                'Consider this post: "x" Question: Does the poster suffer from depression?',
                "Perhaps. Reasoning: unclear.",
            ],
        ],
    )
    with pytest.raises(DataError, match=rf"{path}, line 4: field 'gpt-3.5-turbo' names no DR label"):
        load_imhi_set("DR", tmp_path)
    write_set(tmp_path, "DR", [["", "Yes."]])
    with pytest.raises(DataError, match=r"line 2: field 'query' is empty"):
        load_imhi_set("DR", tmp_path)


DR_ROWS = [
    (f'Consider this post: "post {n}" Question: Does the poster suffer from depression?', gold)
    for n, gold in enumerate(
        ["Yes, the poster suffers from depression."] * 4 + ["No, the poster does not suffer from depression."] * 2
    )
]
SAD_ROWS = [
    (
        f'Consider this post: "post {n}" Question: What is the stress cause of this post?',
        f"This post shows the stress cause related to {cause}.",
    )
    for n, cause in enumerate(["work", "work", "school", "emotion turmoil"])
]


def test_a_scripted_model_gets_exactly_its_known_f1_and_accuracy(scripted, tmp_path):
    write_set(tmp_path, "DR", DR_ROWS)
    write_set(tmp_path, "SAD", SAD_ROWS)
    replies = {
        "post 0": "Yes.",
        "post 1": "Yes, the poster suffers.",
        "post 2": "I don't know.",
        "post 3": "No.",
        "post 4": "The poster does not suffer from depression.",
        "post 5": "Yes",
    }
    sad_replies = {
        "post 0": "Work.",
        "post 1": "School",
        "post 2": "school",
        "post 3": "Emotional turmoil. Reasoning: ...",
    }

    def respond(messages):
        query = messages[-1].content
        post = query.split('"')[1]
        return (sad_replies if "stress cause" in query else replies)[post]

    spec, model = scripted(respond)
    results, rows = evaluate_imhi(IMHIArgs(models=[spec], sets=["DR", "SAD"], data_root=tmp_path, progress=False))
    dr, sad = results["models"][spec]["sets"]["DR"], results["models"][spec]["sets"]["SAD"]
    # DR: gold y y y y n n, predicted y y ? n n y. yes: P 2/3 R 2/4 F1 4/7; no: P 1/2 R 1/2 F1 1/2.
    assert (dr["n"], dr["correct"], dr["unparsed"]) == (6, 3, 1)
    assert dr["weighted_f1"] == pytest.approx((4 * 4 / 7 + 2 * 0.5) / 6)
    # SAD: gold work work school turmoil, predicted work school school turmoil.
    # work: P 1 R 1/2 F1 2/3; school: P 1/2 R 1 F1 2/3; emotional turmoil: F1 1.
    assert (sad["correct"], sad["accuracy"]) == (3, 0.75)
    assert sad["weighted_f1"] == pytest.approx((2 * 2 / 3 + 2 / 3 + 1) / 4)
    assert [r["predicted"] for r in rows[:6]] == ["yes", "yes", UNPARSED, "no", "no", "yes"]
    assert "Possible answers: school, financial problem, family issues" in model.calls[-1][-1].content


def test_the_imhi_command_reports_per_set(scripted, tmp_path, capsys):
    write_set(tmp_path, "DR", DR_ROWS)
    spec, _ = scripted(lambda messages: "Yes, the poster suffers from depression. Reasoning: low mood.")
    assert (
        main(
            [
                "eval",
                "imhi",
                "--models",
                spec,
                "--sets",
                "DR",
                "--data",
                str(tmp_path),
                "--out",
                str(tmp_path / "r"),
                "--quiet",
            ]
        )
        == 0
    )
    # Always 'yes': yes P 4/6 R 1 F1 0.8, no F1 0, weighted (4 * 0.8) / 6.
    assert f"{spec} DR: weighted F1 0.533, accuracy 0.667 [0.300, 0.903] n=6 unparsed=0" in capsys.readouterr().out
    assert f"| {spec} | DR | 53.3 | 66.7 | [30.0, 90.3] | 6 | 0 |" in (tmp_path / "r" / "imhi.md").read_text()
    assert (tmp_path / "r" / "imhi_weighted_f1.png").exists() and (tmp_path / "r" / "imhi_accuracy.png").exists()
    assert main(["eval", "imhi", "--sets", "Reddit", "--data", str(tmp_path)]) == 2
