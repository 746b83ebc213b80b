"""Multiple-choice biomedical QA: MedQA, MedMCQA, PubMedQA and MMLU's medical subjects.

Every set becomes a list of :class:`MCQItem` (question, lettered options, gold letter, subject),
read from the local record shapes (``<data root>/<task>/*.jsonl``, see shared/data/README.md) or
from the Hugging Face hub. Two scorers:

- ``loglik``: for local models, the lm-evaluation-harness way: the options are listed in a plain
  prompt ending in ``Answer:`` and each option's continuation `` <letter>`` is scored by the sum
  of its tokens' log-probabilities; the highest wins. Batched forward passes.
- ``generate``: any chat model answers in free text; the letter is extracted leniently.

Accuracy comes with a 95% Wilson interval, overall and per subject.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage

from mentalarena.agents.jsonl import read_json_lines
from mentalarena.agents.models import (
    GenerationSettings,
    ModelSpecError,
    describe_model,
    load_chat_model,
    load_local_model,
    local_model_folder,
)
from mentalarena.benchmarks import prompts
from mentalarena.graphs.cli import comma_list
from mentalarena.training.statistics import wilson_interval

TASKS = ("medqa", "medmcqa", "pubmedqa", "mmlu")
SCORERS = ("generate", "loglik")
# Options every eval kind's arguments share.
LIMIT_OPTION: dict[str, Any] = {"description": "evaluate only the first N items of each set (a quick look)"}
QUIET_OPTION: dict[str, Any] = {"flag": "--quiet", "description": "no progress bars"}
# The medical subjects of MMLU, as MultiMedQA and the MentalArena paper use them.
MMLU_MEDICAL_SUBJECTS = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)
LETTERS = "ABCDEFGHIJ"
PUBMEDQA_DECISIONS = ("yes", "no", "maybe")
# (hub name, config, split) per task; MedMCQA's test split has no answers, so its validation split is used.
HUB_DATASETS = {
    "medqa": ("GBaker/MedQA-USMLE-4-options", None, "test"),
    "medmcqa": ("openlifescienceai/medmcqa", None, "validation"),
    "pubmedqa": ("qiaojin/PubMedQA", "pqa_labeled", "train"),
    "mmlu": ("cais/mmlu", MMLU_MEDICAL_SUBJECTS, "test"),
}


class DataError(ValueError):
    """A malformed data file or record; the message names the file, the line and the field."""


@dataclass(frozen=True)
class MCQItem:
    """One multiple-choice question: its task, id and subject, the lettered options, and the gold letter."""

    task: str
    id: str
    subject: str
    question: str
    options: dict[str, str]
    answer: str


@dataclass
class Prediction:
    """The option a model picked for an item, and what it was read from."""

    item: MCQItem
    predicted: str | None  # None: no option could be read from the answer
    output: str  # the model's reply, or the options' log-probabilities

    @property
    def correct(self) -> bool:
        """Whether the picked option is the gold one."""
        return self.predicted == self.item.answer


MODELS_HELP = "comma-separated model specs to compare, e.g. 'embedded,models/psi/merged' (see `mentalarena run --help`)"


@dataclass
class QAArgs:
    """What `mentalarena eval qa` evaluates: the models, the tasks and where they come from, and how to score."""

    models: list[str] = field(
        default_factory=lambda: ["embedded"], metadata={"type": comma_list, "description": MODELS_HELP}
    )
    tasks: list[str] = field(
        default_factory=lambda: list(TASKS),
        metadata={"type": comma_list, "description": f"comma-separated, from {', '.join(TASKS)} (default all)"},
    )
    scorer: str = field(
        default="generate",
        metadata={
            "choices": SCORERS,
            "description": "generate: any chat model answers, the letter is extracted; "
            "loglik: local models only, the option letter with the highest log-likelihood",
        },
    )
    data_root: Path | None = field(
        default=None,
        metadata={
            "flag": "--data",
            "metavar": "FOLDER",
            "description": "folder holding {medqa,medmcqa,pubmedqa,mmlu}/*.jsonl",
        },
    )
    source: str = field(
        default="",
        metadata={
            "choices": ("local", "hub"),
            "description": "local JSONL under --data, or the full sets from the Hugging Face hub (network); "
            "default: local when --data is given, else hub",
        },
    )
    limit: int | None = field(default=None, metadata=LIMIT_OPTION)
    max_new_tokens: int = field(default=16, metadata={"description": "generation budget per answer"})
    batch_size: int = field(default=8, metadata={"description": "sequences per forward pass for --scorer loglik"})
    progress: bool = field(default=True, metadata=QUIET_OPTION)

    @property
    def data_source(self) -> str:
        """Where the items come from: 'local' (under ``data_root``) or 'hub'."""
        return self.source or ("local" if self.data_root else "hub")


# --- loading -------------------------------------------------------------------------------


def require(record: dict, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    """record[name], or a DataError naming where the record is and which field is wrong."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if name not in record or record[name] is None:
        raise DataError(f"{where}: field {name!r} is missing")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{where}: field {name!r} should be a non-empty {expected}, got {str(value)[:60]!r}")
    return value


def lettered_options(record: dict, where: str) -> dict[str, str]:
    """record["options"], or a DataError unless it maps A, B, ... in order to non-empty texts."""
    options = require(record, "options", dict, where)
    if (
        len(options) < 2
        or list(options) != list(LETTERS[: len(options)])
        or not all(isinstance(v, str) and v.strip() for v in options.values())
    ):
        raise DataError(f"{where}: field 'options' should map A, B, ... to option texts, got {str(options)[:80]!r}")
    return options


def gold_letter(record: dict, name: str, options: dict[str, str], where: str) -> str:
    """record[name], or a DataError unless it is one of the option letters."""
    answer = require(record, name, str, where)
    if answer not in options:
        raise DataError(f"{where}: field {name!r} is {answer!r}, not one of the options {sorted(options)}")
    return answer


def medqa_item(record: dict, where: str, default_subject: str) -> MCQItem:
    """The item of a MedQA record (lettered ``options`` and ``answer_idx``)."""
    options = lettered_options(record, where)
    return MCQItem(
        "medqa",
        str(record.get("id") or where),
        str(record.get("meta_info") or default_subject),
        require(record, "question", str, where),
        options,
        gold_letter(record, "answer_idx", options, where),
    )


def medmcqa_item(record: dict, where: str, default_subject: str) -> MCQItem:
    """The item of a MedMCQA record (options ``opa`` to ``opd``, and ``cop`` the correct one's number from 1)."""
    options = {letter: require(record, f"op{letter.lower()}", str, where) for letter in "ABCD"}
    cop = require(record, "cop", int, where)
    if not 1 <= cop <= 4:
        raise DataError(f"{where}: field 'cop' is {cop}, expected 1-4 (the correct option's number)")
    return MCQItem(
        "medmcqa",
        str(record.get("id") or where),
        str(record.get("subject_name") or default_subject),
        require(record, "question", str, where),
        options,
        "ABCD"[cop - 1],
    )


def pubmedqa_item(record: dict, where: str, default_subject: str) -> MCQItem:
    """The item of a PubMedQA record: the contexts and question, answered yes, no or maybe."""
    contexts = require(record, "CONTEXTS", list, where)
    if not all(isinstance(c, str) for c in contexts):
        raise DataError(f"{where}: field 'CONTEXTS' should be a list of strings")
    decision = require(record, "final_decision", str, where).strip().lower()
    if decision not in PUBMEDQA_DECISIONS:
        raise DataError(f"{where}: field 'final_decision' is {decision!r}, expected yes, no or maybe")
    question = prompts.PUBMEDQA_QUESTION.format(
        context=" ".join(contexts), question=require(record, "QUESTION", str, where)
    )
    options = dict(zip(LETTERS, PUBMEDQA_DECISIONS))
    return MCQItem(
        "pubmedqa",
        str(record.get("id") or where),
        "pubmedqa",
        question,
        options,
        LETTERS[PUBMEDQA_DECISIONS.index(decision)],
    )


def mmlu_item(record: dict, where: str, default_subject: str) -> MCQItem:
    """The item of an MMLU record (lettered ``options`` and ``answer_idx``), under its subject."""
    options = lettered_options(record, where)
    return MCQItem(
        "mmlu",
        str(record.get("id") or where),
        str(record.get("subject") or default_subject),
        require(record, "question", str, where),
        options,
        gold_letter(record, "answer_idx", options, where),
    )


ITEM_READERS = {"medqa": medqa_item, "medmcqa": medmcqa_item, "pubmedqa": pubmedqa_item, "mmlu": mmlu_item}


def file_subject(path: Path) -> str:
    """'medical_genetics.sample.jsonl' or 'medical_genetics_test.jsonl' -> 'medical_genetics'."""
    return re.sub(r"_(test|dev|val|validation)$", "", path.name.split(".")[0])


def read_jsonl_items(task: str, path: Path) -> list[MCQItem]:
    """The items of one JSONL file of ``task``, skipping blank lines; a line that is not JSON is a DataError."""
    return [ITEM_READERS[task](record, where, file_subject(path)) for where, record in read_json_lines(path, DataError)]


def load_local_task(task: str, data_root: Path) -> list[MCQItem]:
    """Every ``*.jsonl`` file of ``<data_root>/<task>/``, in name order."""
    source = Path(data_root) / task
    files = sorted(source.glob("*.jsonl"))
    if not files:
        raise DataError(f"{source}: no *.jsonl files for {task} (see --data)")
    return [item for path in files for item in read_jsonl_items(task, path)]


def hub_record(task: str, row: dict) -> dict:
    """A hub row in the local record shape (MedQA's hub rows already have it)."""
    if task == "medmcqa":
        return {**row, "cop": row["cop"] + 1}  # the hub's class label counts from 0, the local files from 1
    if task == "pubmedqa":
        return {
            "id": str(row["pubid"]),
            "QUESTION": row["question"],
            "CONTEXTS": row["context"]["contexts"],
            "final_decision": row["final_decision"],
        }
    if task == "mmlu":
        return {
            "question": row["question"],
            "subject": row["subject"],
            "options": dict(zip(LETTERS, row["choices"])),
            "answer_idx": LETTERS[row["answer"]],
        }
    return row


def load_hub_task(task: str) -> list[MCQItem]:
    """The full set from the Hugging Face hub (needs the network, or the datasets cache)."""
    from datasets import load_dataset

    name, configs, split = HUB_DATASETS[task]
    items = []
    for config in configs if isinstance(configs, tuple) else (configs,):
        try:
            rows = load_dataset(name, config, split=split)
        except (ConnectionError, OSError) as exc:  # offline: no network and nothing cached
            raise DataError(
                f"{task}: cannot load {name} from the Hugging Face hub ({type(exc).__name__}); "
                "pass --data FOLDER holding the sets as local JSONL (docs/evaluation.md), or go online for --source hub"
            ) from exc
        for number, row in enumerate(rows):
            where = f"{name}{'/' + config if config else ''} [{split}] row {number}"
            items.append(ITEM_READERS[task](hub_record(task, row), where, config or task))
    return items


def load_items(args: QAArgs) -> dict[str, list[MCQItem]]:
    """task -> its items, from the local files or the hub, cut to ``args.limit``."""
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown QA task(s) {unknown}; choose from {', '.join(TASKS)}")
    if args.data_source == "local" and args.data_root is None:
        raise DataError("--source local needs --data FOLDER holding <task>/*.jsonl; or use --source hub (network)")
    loaded = {
        task: load_local_task(task, args.data_root)
        if args.data_root and args.data_source == "local"
        else load_hub_task(task)
        for task in args.tasks
    }
    return {task: items[: args.limit] if args.limit else items for task, items in loaded.items()}


# --- generate-then-extract -------------------------------------------------------------------


def options_text(options: dict[str, str]) -> str:
    """The options as lines 'A. text'."""
    return "\n".join(f"{letter}. {text}" for letter, text in options.items())


def normalized(text: str) -> str:
    """Lower-case text without markdown emphasis, runs of whitespace or a final full stop, for matching."""
    return re.sub(r"\s+", " ", text.replace("*", "").replace("_", " ")).strip().lower().rstrip(".")


def extract_option(reply: str, options: dict[str, str]) -> str | None:
    """The option letter a free-text answer picks, or None.

    In order: an explicit answer ('Answer: C', 'the correct answer is (b)'); an option named and not
    rejected ('The correct option is (B)', 'option c', but not 'Option A is incorrect'); 'would be C.';
    a reply that starts with the letter ('C.', 'C)', a lone 'C'), unless it echoes the option list;
    '(C)' anywhere; and last, the one option whose text the first sentence (else the whole reply) names.
    Lower-case letters are read only in the first two, after 'answer', 'option' or 'choice'.
    """
    text = reply.replace("*", "").strip()
    letters = "".join(options)
    # Lower case 'a' and 'i' are also English words: they count only before punctuation or the end
    # ('the answer is a.', not 'I cannot answer a question'); other lower-case letters always count.
    letter_pattern = rf"\(?([{letters}]|[{letters.lower()}](?<![ai])|[{letters.lower()}](?=\s*(?:[^\w\s]|$)))\b(?![-'])"
    verb = r"(?:\s+(?:is|would be|should be|must be))?\s*[:\-]?\s*"
    answer = re.search(rf"(?i:\banswer){verb}{letter_pattern}", text)
    if answer:
        return answer.group(1).upper()
    rejected = r"(?!\s*(?:is|was|seems)?\s*(?:not\b|isn't|wasn't|incorrect|wrong|false|unlikely))"
    named_option = re.search(rf"(?i:\b(?:option|choice)){verb}{letter_pattern}{rejected}", text)
    if named_option:
        return named_option.group(1).upper()
    stated = re.search(rf"\b(?:is|be|in)\s+\(?([{letters}])(?:[.):]|\s*$)", text)  # 'would be D. Olanzapine'
    if stated:
        return stated.group(1)
    echoes_options = len(re.findall(rf"^\s*[{letters}][.)]\s", text, re.M)) >= 2
    leading = re.match(rf"\(?([{letters}])(?:[.):]|\s*$)", text)
    if leading and not echoes_options:
        return leading.group(1)
    bracketed = re.search(rf"\(([{letters}])\)", text)
    if bracketed and not echoes_options:
        return bracketed.group(1)
    first_sentence = re.split(r"(?<=[.!?])\s|\n", text, maxsplit=1)[0]
    for scope in (first_sentence, text):
        named = [
            letter
            for letter, option in options.items()
            if re.search(rf"(?<!\w){re.escape(normalized(option))}(?!\w)", normalized(scope))
        ]
        if len(named) == 1:
            return named[0]
    return None


def generate_predictions(
    items: list[MCQItem], spec: str, max_new_tokens: int, progress: bool = False
) -> list[Prediction]:
    """A chat model answers each item in free text; the option letter is extracted from the reply."""
    from tqdm import tqdm

    model = load_chat_model(spec, GenerationSettings.reproducible(max_new_tokens))
    predictions = []
    for item in tqdm(items, desc=f"generate {items[0].task if items else ''}", disable=not progress):
        prompt = prompts.MCQ_QUESTION.format(question=item.question, options=options_text(item.options))
        reply = model.invoke([SystemMessage(prompts.MCQ_SYSTEM), HumanMessage(prompt)]).text
        predictions.append(Prediction(item, extract_option(reply, item.options), reply))
    return predictions


# --- log-likelihood ----------------------------------------------------------------------------


def loglik_model_folder(spec: str) -> str:
    """The model folder a spec names ('embedded' or a folder); any other spec is a ModelSpecError."""
    folder = local_model_folder(spec)
    if folder is not None:
        return str(folder)
    raise ModelSpecError(
        f"model spec {spec!r}: log-likelihood scoring needs a local model ('embedded' or a model folder)"
    )


@dataclass
class ScoringRow:
    """One sequence to run, and per option the (position, token) pairs whose log-probs sum to its score."""

    input_ids: list[int]
    targets: list[list[tuple[int, int]]]


def scoring_rows(context_ids: list[int], continuations: list[list[int]]) -> list[ScoringRow]:
    """The sequences that score every continuation after the context: one row if all are one token, else one each."""
    if all(len(ids) == 1 for ids in continuations):
        # lm-evaluation-harness's shortcut: one pass over the context scores every one-token option.
        last = len(context_ids) - 1
        return [ScoringRow(context_ids, [[(last, ids[0])] for ids in continuations])]
    return [
        ScoringRow(context_ids + ids[:-1], [[(len(context_ids) - 1 + j, token) for j, token in enumerate(ids)]])
        for ids in continuations
    ]


def run_rows(model: Any, pad_id: int, rows: list[ScoringRow]) -> list[list[float]]:
    """Each row's option scores, from one left-padded forward pass over all rows."""
    import torch

    width = max(len(row.input_ids) for row in rows)
    # Left padding lines the rows' ends up, so only the last `keep` positions' logits are needed.
    keep = max(len(row.input_ids) - min(p for target in row.targets for p, _ in target) for row in rows)
    ids = torch.tensor([[pad_id] * (width - len(row.input_ids)) + row.input_ids for row in rows])
    mask = torch.tensor([[0] * (width - len(row.input_ids)) + [1] * len(row.input_ids) for row in rows])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return [
        [sum(logprobs[b, p - len(row.input_ids) + keep, token].item() for p, token in target) for target in row.targets]
        for b, row in enumerate(rows)
    ]


def option_logprobs(
    model: Any, tokenizer: Any, requests: list[tuple[str, list[str]]], batch_size: int, progress: bool = False
) -> list[list[float]]:
    """For each (context, continuations): the summed log-probability of every continuation."""
    from tqdm import tqdm

    limit = getattr(model.config, "max_position_embeddings", None) or 4096
    rows: list[tuple[int, ScoringRow]] = []  # (request index, row), in option order
    for index, (context, continuations) in enumerate(requests):
        continuation_ids = [tokenizer.encode(c, add_special_tokens=False) for c in continuations]
        # Left-truncate long contexts, as the harness does: the question's end matters most.
        context_ids = tokenizer.encode(context)[-(limit - max(map(len, continuation_ids))) :]
        rows += [(index, row) for row in scoring_rows(context_ids, continuation_ids)]
    row_scores: list[list[float]] = [[] for _ in rows]
    by_length = sorted(range(len(rows)), key=lambda k: -len(rows[k][1].input_ids))  # less padding
    for start in tqdm(range(0, len(rows), batch_size), desc="loglik", disable=not progress):
        batch = by_length[start : start + batch_size]
        for k, scores in zip(batch, run_rows(model, tokenizer.pad_token_id, [rows[k][1] for k in batch])):
            row_scores[k] = scores
    per_request: list[list[float]] = [[] for _ in requests]
    for (index, _), scores in zip(rows, row_scores):
        per_request[index] += scores
    return per_request


def loglik_predictions(items: list[MCQItem], spec: str, batch_size: int, progress: bool = False) -> list[Prediction]:
    """For each item, the option letter a local model gives the highest log-likelihood."""
    model, tokenizer = load_local_model(loglik_model_folder(spec))
    requests = [
        (
            prompts.LOGLIK_CONTEXT.format(question=item.question, options=options_text(item.options)),
            [f" {letter}" for letter in item.options],
        )
        for item in items
    ]
    predictions = []
    for item, scores in zip(items, option_logprobs(model, tokenizer, requests, batch_size, progress)):
        by_letter = dict(zip(item.options, scores))
        predictions.append(
            Prediction(
                item,
                max(by_letter, key=lambda letter: by_letter[letter]),
                json.dumps({k: round(v, 4) for k, v in by_letter.items()}),
            )
        )
    return predictions


def predict(items: list[MCQItem], spec: str, args: QAArgs) -> list[Prediction]:
    """The model's predictions for ``items`` with the scorer ``args`` names."""
    if args.scorer == "loglik":
        return loglik_predictions(items, spec, args.batch_size, args.progress)
    if args.scorer == "generate":
        return generate_predictions(items, spec, args.max_new_tokens, args.progress)
    raise ValueError(f"unknown scorer {args.scorer!r}; choose from {', '.join(SCORERS)}")


# --- scores -----------------------------------------------------------------------------------


def accuracy_summary(predictions: list[Prediction]) -> dict:
    """Accuracy with its Wilson interval, and the count of answers no option could be read from."""
    correct = sum(p.correct for p in predictions)
    low, high = wilson_interval(correct, len(predictions))
    return {
        "n": len(predictions),
        "correct": correct,
        "accuracy": correct / len(predictions) if predictions else 0.0,
        "ci_low": low,
        "ci_high": high,
        "unparsed": sum(p.predicted is None for p in predictions),
    }


def task_scores(predictions: list[Prediction]) -> dict:
    """A task's accuracy summary, overall and per subject."""
    subjects = sorted({p.item.subject for p in predictions})
    return {
        **accuracy_summary(predictions),
        "subjects": {s: accuracy_summary([p for p in predictions if p.item.subject == s]) for s in subjects},
    }


def prediction_rows(spec: str, predictions: list[Prediction]) -> list[dict]:
    """One JSON-ready line per item, to see what each model answered."""
    return [
        {
            "model": spec,
            "task": p.item.task,
            "id": p.item.id,
            "subject": p.item.subject,
            "answer": p.item.answer,
            "predicted": p.predicted,
            "correct": p.correct,
            "output": p.output,
        }
        for p in predictions
    ]


def evaluate_qa(args: QAArgs) -> tuple[dict, list[dict]]:
    """(results, per-item rows): accuracy with its interval per model and task, and the time taken."""
    items = load_items(args)
    results: dict[str, Any] = {
        "kind": "qa",
        "scorer": args.scorer,
        "source": args.data_source,
        "tasks": list(args.tasks),
        "models": {},
    }
    rows = []
    for spec in args.models:
        per_task = {}
        for task, task_items in items.items():
            started = time.perf_counter()
            predictions = predict(task_items, spec, args)
            per_task[task] = {**task_scores(predictions), "seconds": round(time.perf_counter() - started, 2)}
            rows += prediction_rows(spec, predictions)
        results["models"][spec] = {"name": describe_model(spec), "tasks": per_task}
    return results, rows


def mcq_evaluator(tasks: list[str], limit: int | None, data_root: Path | None) -> Callable[[str], dict[str, float]]:
    """What scores one model on ``tasks`` by log-likelihood: ``{"qa_<task>": accuracy}`` (the loop's
    forgetting guard), from local JSONL under ``data_root`` or, without it, from the hub."""

    def evaluate(model: str) -> dict[str, float]:
        qa = QAArgs(models=[model], tasks=tasks, scorer="loglik", data_root=data_root, limit=limit, progress=False)
        results, _ = evaluate_qa(qa)
        return {
            f"qa_{task}": round(scores["accuracy"], 4) for task, scores in results["models"][model]["tasks"].items()
        }

    return evaluate
