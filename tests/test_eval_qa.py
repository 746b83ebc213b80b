"""Multiple-choice QA: loaders, answer extraction, Wilson intervals, both scorers, the eval command."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import shared_file
from mentalarena.benchmarks.qa import (
    DataError,
    QAArgs,
    evaluate_qa,
    extract_option,
    hub_record,
    load_local_task,
    medmcqa_item,
    mmlu_item,
    option_logprobs,
    pubmedqa_item,
    scoring_rows,
)
from mentalarena.cli import main

OPTIONS = {"A": "Agranulocytosis", "B": "Shortened QT interval", "C": "Gynecomastia", "D": "Weight loss"}


def medqa_record(number: int, answer: str, subject: str = "step1") -> dict:
    return {
        "question": f"Question number {number}: which adverse effect?",
        "options": OPTIONS,
        "answer": OPTIONS[answer],
        "answer_idx": answer,
        "meta_info": subject,
    }


def write_jsonl(path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Answer: C", "C"),
        ("The correct answer is (B) because risperidone...", "B"),
        ("**Answer: D**", "D"),
        ("C. Gynecomastia", "C"),
        ("B", "B"),
        ("(A) Agranulocytosis is the risk", "A"),
        ("I think it is gynecomastia, due to prolactin.", "C"),
        ("Option B: shortened QT interval", "B"),
        ("The correct answer would be D, weight loss.", "D"),
        ("The most likely effect would be C. Gynecomastia, from prolactin.", "C"),
        ("Vitamin D is not involved; I think it is C.", "C"),
        ("A 26-year-old man on risperidone is at risk of gynecomastia.", "C"),  # the article 'A' is no answer
        (
            "A. Agranulocytosis\nB. Shortened QT interval\nC. Gynecomastia\nD. Weight loss",
            None,
        ),  # an echo of the options
        ("Weight loss or agranulocytosis, hard to say.", None),
        ("I am not sure.", None),
    ],
)
def test_the_option_is_extracted_from_free_text(reply, expected):
    assert extract_option(reply, OPTIONS) == expected


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Option A is incorrect; the answer is C.", "C"),
        ("Option A is wrong, option D is not it either. Option B fits.", "B"),
        ("Option A isn't right; choice (b) is.", "B"),
        ("Option A is tempting, but the correct answer is B.", "B"),
        ("The correct option is not A; it is C.", "C"),
    ],
)
def test_an_explicit_answer_beats_a_rejected_option(reply, expected):
    assert extract_option(reply, OPTIONS) == expected


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("the answer is c", "C"),
        ("answer: (b)", "B"),
        ("I'd say the correct answer is d.", "D"),
        ("The answer is a.", "A"),
        ("option c", "C"),
        ("The answer is a bit unclear; I would say gynecomastia.", "C"),  # the article 'a' is no answer
        ("I cannot answer a question like this.", None),
        ("b. maybe", None),  # a lone lower-case letter is not read
    ],
)
def test_lower_case_letters_are_read_only_after_answer_or_option(reply, expected):
    assert extract_option(reply, OPTIONS) == expected


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Yes.", "A"),
        ("No, the study found no link.", "B"),
        ("maybe", "C"),
        ("I don't know", None),
        ("The answer is yes", "A"),
    ],
)
def test_yes_no_maybe_answers_are_read_on_word_boundaries(reply, expected):
    assert extract_option(reply, {"A": "yes", "B": "no", "C": "maybe"}) == expected


def test_local_records_of_every_shape_are_read(tmp_path):
    write_jsonl(tmp_path / "medqa" / "a.jsonl", [medqa_record(1, "C")])
    write_jsonl(
        tmp_path / "medmcqa" / "a.jsonl",
        [
            {
                "question": "Q?",
                "opa": "w",
                "opb": "x",
                "opc": "y",
                "opd": "z",
                "cop": 4,
                "subject_name": "Psychiatry",
                "id": "m1",
            }
        ],
    )
    write_jsonl(
        tmp_path / "pubmedqa" / "a.jsonl",
        [{"QUESTION": "Does it work?", "CONTEXTS": ["Part one.", "Part two."], "final_decision": "maybe", "id": "7"}],
    )
    write_jsonl(
        tmp_path / "mmlu" / "medical_genetics_test.jsonl",
        [{"question": "Q?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "B"}],
    )
    (medqa,) = load_local_task("medqa", tmp_path)
    assert (medqa.subject, medqa.answer, medqa.options["C"]) == ("step1", "C", "Gynecomastia")
    (medmcqa,) = load_local_task("medmcqa", tmp_path)
    assert (medmcqa.id, medmcqa.subject, medmcqa.answer, medmcqa.options["D"]) == ("m1", "Psychiatry", "D", "z")
    (pubmedqa,) = load_local_task("pubmedqa", tmp_path)
    assert pubmedqa.options == {"A": "yes", "B": "no", "C": "maybe"} and pubmedqa.answer == "C"
    assert "Part one. Part two." in pubmedqa.question and pubmedqa.question.endswith("Question: Does it work?")
    (mmlu,) = load_local_task("mmlu", tmp_path)
    assert (mmlu.subject, mmlu.answer) == ("medical_genetics", "B")


@pytest.mark.parametrize(
    "task, line, field",
    [
        ("medqa", '{"question": "Q?", "options": {"A": "x", "B": "y"}}', "answer_idx"),
        ("medqa", '{"question": "Q?", "options": {"A": "x", "B": "y"}, "answer_idx": "E"}', "answer_idx"),
        ("medqa", '{"question": "Q?", "options": ["x", "y"], "answer_idx": "A"}', "options"),
        ("medqa", '{"question": "", "options": {"A": "x", "B": "y"}, "answer_idx": "A"}', "question"),
        ("medmcqa", '{"question": "Q?", "opa": "w", "opb": "x", "opc": "y", "opd": "z", "cop": 5}', "cop"),
        ("medmcqa", '{"question": "Q?", "opa": "w", "opb": "x", "opd": "z", "cop": 1}', "opc"),
        ("pubmedqa", '{"QUESTION": "Q?", "CONTEXTS": ["c"], "final_decision": "probably"}', "final_decision"),
        ("mmlu", '{"question": "Q?", "options": {"A": "x", "C": "y"}, "answer_idx": "A"}', "options"),
    ],
)
def test_a_malformed_record_names_file_line_and_field(tmp_path, task, line, field):
    good = json.dumps(medqa_record(1, "A")) if task in ("medqa", "mmlu") else None
    path = tmp_path / task / "bad.jsonl"
    path.parent.mkdir()
    path.write_text((good + "\n\n" if good else "") + line + "\n")
    with pytest.raises(DataError) as error:
        load_local_task(task, tmp_path)
    assert f"{path}: line {3 if good else 1}: field '{field}'" in str(error.value)


def test_broken_json_and_a_missing_folder_are_data_errors(tmp_path):
    write_jsonl(tmp_path / "medqa" / "a.jsonl", [medqa_record(1, "A")])
    (tmp_path / "medqa" / "a.jsonl").write_text((tmp_path / "medqa" / "a.jsonl").read_text() + '{"question": \n')
    with pytest.raises(DataError, match=r"a\.jsonl: line 2: not valid JSON"):
        load_local_task("medqa", tmp_path)
    with pytest.raises(DataError, match="no \\*.jsonl files for mmlu"):
        load_local_task("mmlu", tmp_path)


def test_hub_rows_are_converted_to_the_local_shapes():
    """The hub loader itself needs the network; its row conversion does not."""
    medmcqa = hub_record(
        "medmcqa",
        {
            "question": "Q?",
            "opa": "w",
            "opb": "x",
            "opc": "y",
            "opd": "z",
            "cop": 0,
            "subject_name": "Anatomy",
            "id": "h1",
        },
    )
    assert medmcqa_item(medmcqa, "hub", "medmcqa").answer == "A"  # the hub counts options from 0
    pubmedqa = hub_record(
        "pubmedqa",
        {
            "pubid": 123,
            "question": "Q?",
            "context": {"contexts": ["c1", "c2"], "labels": ["A", "B"]},
            "long_answer": "...",
            "final_decision": "no",
        },
    )
    item = pubmedqa_item(pubmedqa, "hub", "pubmedqa")
    assert (item.id, item.answer) == ("123", "B")
    mmlu = hub_record("mmlu", {"question": "Q?", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": 3})
    item = mmlu_item(mmlu, "hub", "mmlu")
    assert (item.subject, item.answer, item.options["D"]) == ("anatomy", "D", "d")


def test_the_shared_samples_load_completely():
    root = shared_file("medqa").parent
    counts = {task: len(load_local_task(task, root)) for task in ("medqa", "medmcqa", "pubmedqa", "mmlu")}
    assert counts == {"medqa": 30, "medmcqa": 30, "pubmedqa": 30, "mmlu": 30}
    assert {i.subject for i in load_local_task("mmlu", root)} == {"medical_genetics"}
    assert sum(i.subject == "Dental" for i in load_local_task("medmcqa", root)) == 13


def scripted_exam(tmp_path):
    """Seven medqa items in two subjects, and a model whose reply to each is fixed: 4 right, 2 wrong, 1 unreadable."""
    answers = ["A", "B", "C", "D", "A", "B", "C"]
    write_jsonl(
        tmp_path / "medqa" / "sample.jsonl",
        [medqa_record(n, a, "step1" if n < 4 else "step2&3") for n, a in enumerate(answers)],
    )
    replies = [
        "Answer: A",
        "The correct option is (B).",
        "C. Gynecomastia",
        "Answer: A",
        "weight loss",
        "I cannot answer that.",
        "Answer: C",
    ]

    def respond(messages):
        number = int(re.search(r"Question number (\d+)", messages[-1].content).group(1))
        return replies[number]

    return respond


def test_a_scripted_model_gets_exactly_its_known_accuracy(scripted, tmp_path):
    spec, model = scripted(scripted_exam(tmp_path))
    results, rows = evaluate_qa(QAArgs(models=[spec], tasks=["medqa"], data_root=tmp_path, progress=False))
    medqa = results["models"][spec]["tasks"]["medqa"]
    assert (medqa["n"], medqa["correct"], medqa["unparsed"]) == (7, 4, 1)
    assert medqa["accuracy"] == pytest.approx(4 / 7)
    assert (medqa["ci_low"], medqa["ci_high"]) == pytest.approx((0.25046, 0.84178), abs=1e-5)
    assert medqa["subjects"]["step1"]["correct"] == 3 and medqa["subjects"]["step1"]["n"] == 4
    assert medqa["subjects"]["step2&3"]["correct"] == 1 and medqa["subjects"]["step2&3"]["n"] == 3
    assert [r["predicted"] for r in rows] == ["A", "B", "C", "A", "D", None, "C"]
    prompt = model.calls[0][-1].content
    assert "A. Agranulocytosis\nB. Shortened QT interval" in prompt and "Answer: X" in prompt


def test_the_eval_command_writes_json_markdown_items_and_plots(scripted, tmp_path, capsys):
    spec, _ = scripted(scripted_exam(tmp_path / "data"))
    always_a, _ = scripted(lambda messages: "Answer: A")
    out = tmp_path / "results"
    code = main(
        [
            "eval",
            "qa",
            "--models",
            f"{spec},{always_a}",
            "--tasks",
            "medqa",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"{spec} medqa: accuracy 0.571 [0.250, 0.842] n=7 unparsed=1" in printed
    assert f"{always_a} medqa: accuracy 0.286 [0.082, 0.641] n=7 unparsed=0" in printed
    results = json.loads((out / "qa.json").read_text())
    assert results["models"][spec]["tasks"]["medqa"]["correct"] == 4
    assert len((out / "qa_items.jsonl").read_text().splitlines()) == 14
    markdown = (out / "qa.md").read_text()
    assert f"| {spec} | medqa | 57.1 | [25.0, 84.2] | 7 | 1 |" in markdown and "| step2&3 |" in markdown
    assert (out / "qa_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_tasks_and_remote_models_for_loglik_are_refused(scripted, tmp_path, capsys):
    assert main(["eval", "qa", "--tasks", "medqa,usmle", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "unknown QA task(s) ['usmle']" in capsys.readouterr().err
    spec, _ = scripted(scripted_exam(tmp_path))
    assert (
        main(
            [
                "eval",
                "qa",
                "--models",
                spec,
                "--tasks",
                "medqa",
                "--scorer",
                "loglik",
                "--data",
                str(tmp_path),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "log-likelihood scoring needs a local model" in capsys.readouterr().err


def test_one_token_options_share_one_pass_and_longer_ones_get_their_own():
    (shared,) = scoring_rows([5, 6, 7], [[1], [2]])
    assert shared.input_ids == [5, 6, 7] and shared.targets == [[(2, 1)], [(2, 2)]]
    first, second = scoring_rows([5, 6, 7], [[1, 9], [2]])
    assert first.input_ids == [5, 6, 7, 1] and first.targets == [[(2, 1), (3, 9)]]
    assert second.input_ids == [5, 6, 7] and second.targets == [[(2, 2)]]


@pytest.mark.real_model
def test_batched_log_likelihoods_equal_one_at_a_time_and_a_plain_forward_pass():
    import torch

    from mentalarena.agents.models import embedded_model_dir, load_local_model

    model, tokenizer = load_local_model(str(embedded_model_dir()))
    requests = [
        ("Question: What colour is the sky on a clear day?\nAnswer:", [" blue", " green with purple spots"]),
        ("Question: 2+2=?\nA. 4\nB. 5\nAnswer:", [" A", " B"]),
    ]
    batched = option_logprobs(model, tokenizer, requests, batch_size=8)
    one_at_a_time = option_logprobs(model, tokenizer, requests, batch_size=1)
    for scores, expected in zip(batched, one_at_a_time):
        assert scores == pytest.approx(expected, abs=1e-3)
    context = tokenizer.encode(requests[0][0])
    continuation = tokenizer.encode(" green with purple spots", add_special_tokens=False)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([context + continuation])).logits[0], -1)
    plain = sum(logprobs[len(context) - 1 + j, token].item() for j, token in enumerate(continuation))
    assert batched[0][1] == pytest.approx(plain, abs=1e-3)
    assert batched[0][0] > batched[0][1]  # a single likely word beats an unlikely phrase


@pytest.mark.real_model
def test_both_scorers_run_on_the_embedded_model():
    root = shared_file("mmlu").parent
    args = QAArgs(models=["embedded"], tasks=["mmlu"], data_root=root, limit=2, max_new_tokens=8, progress=False)
    generated, rows = evaluate_qa(args)
    assert all(row["output"].strip() and row["predicted"] in ("A", "B", "C", "D", None) for row in rows)
    assert generated["models"]["embedded"]["tasks"]["mmlu"]["n"] == 2
    args.scorer = "loglik"
    _, rows = evaluate_qa(args)
    for row in rows:
        scores = json.loads(row["output"])
        assert list(scores) == ["A", "B", "C", "D"] and row["predicted"] == max(scores, key=scores.get)
        assert all(score < 0 for score in scores.values())


def test_without_data_the_hub_is_the_source_and_offline_that_is_a_clear_error(tmp_path):
    offline = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "mentalarena.cli", "eval", "qa", "--tasks", "medqa", "--limit", "1"]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "r")], env=offline, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot load GBaker/MedQA-USMLE-4-options from the Hugging Face hub" in done.stderr
    assert "--data FOLDER" in done.stderr and "--source hub" in done.stderr
    assert not (tmp_path / "r").exists()


def test_a_local_source_without_data_names_both_options(tmp_path, capsys):
    assert main(["eval", "qa", "--source", "local", "--tasks", "medqa", "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert "--source local needs --data FOLDER" in error and "--source hub" in error
