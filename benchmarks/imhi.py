"""IMHI (MentalLLaMA): interpretable mental-health analysis, nine test sets.

Each CSV row has ``query`` (a post and a question) and ``gpt-3.5-turbo``, the gold answer: a
label sentence, then ``Reasoning: ...``. A model answers the query; the label is extracted from
both the gold and the model answer with the set's vocabulary, and each set reports accuracy (with
a Wilson interval) and weighted F1.

MentalLLaMA's rule-based extraction tested substrings: "no" matched inside "not" and "know", a
gold "emotion turmoil" matched no label at all, and the first 70 characters were all it read.
Here matching is on word boundaries after light normalisation (case, punctuation, plural and
adjective endings, so "emotion turmoil" and "emotional turmoil" agree), a label mentioned under
a negation ("does not show depression") is skipped, "I don't know" and the like count as no
answer, and a close misspelling is matched fuzzily when nothing matches exactly.
"""

from __future__ import annotations

import csv
import difflib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from langchain_core.messages import HumanMessage, SystemMessage

from mentalarena.agents.models import GenerationSettings, describe_model, load_chat_model
from mentalarena.benchmarks import prompts
from mentalarena.benchmarks.qa import LIMIT_OPTION, MODELS_HELP, QUIET_OPTION, DataError
from mentalarena.graphs.cli import comma_list
from mentalarena.training.statistics import wilson_interval

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

QUERY, GOLD = "query", "gpt-3.5-turbo"
NEGATIONS = {"not", "no", "never", "without", "nor", "neither", "nothing", "none"}
UNSURE = (
    "not know",
    "not sure",
    "not clear",
    "not certain",
    "unsure",
    "uncertain",
    "unclear",
    "cannot determine",
    "cannot tell",
    "cannot say",
    "unable to determine",
    "hard to say",
    "hard to tell",
    "difficult to say",
    "difficult to tell",
    "impossible to tell",
)
FUZZY_CUTOFF = 0.85
UNPARSED = "(unparsed)"


@dataclass(frozen=True)
class LabelSet:
    """A set's vocabulary: label -> the phrases that name it (first phrase = the label as shown to the model).

    ``affirm`` lists the words of the question's own statement ('suffers from stress'): a yes/no
    answer that states it without 'yes' is a yes, and with a negation before it a no.
    """

    labels: dict[str, tuple[str, ...]]
    affirm: tuple[str, ...] = ()


YES_NO = {"yes": ("yes", "yeah", "indeed"), "no": ("no", "not", "never", "nothing", "none")}

# Each vocabulary comes from the set's gold label sentences (every label that occurs in the expert
# samples), its question text, and for labels absent from the samples the set's label names in
# MentalLLaMA (e.g. SAD's 'everyday decision making', t-sid's 'PTSD').
IMHI_SETS = {
    # 'What cause of depression does this post show?' / 'This post shows causes of depression related to X.'
    "CAMS": LabelSet(
        {
            "none": ("none", "no cause", "no causes of depression", "no specific cause"),
            "bias or abuse": ("bias or abuse", "bias", "abuse"),
            "jobs and career": ("jobs and career", "job", "career", "work"),
            "medication": ("medication", "medicine", "drug"),
            "relationship": ("relationship",),
            "alienation": ("alienation", "isolation"),
        }
    ),
    "DR": LabelSet(YES_NO, affirm=("suffer", "depressed")),  # 'Does the poster suffer from depression?'
    "dreaddit": LabelSet(YES_NO, affirm=("suffer", "stressed")),  # 'Does the poster suffer from stress?'
    "Irf": LabelSet(YES_NO, affirm=("risk",)),  # 'Does the post show risk of thwarted belongingness?'
    "loneliness": LabelSet(YES_NO, affirm=("suffer", "lonely")),  # 'Does the poster suffer from loneliness?'
    "MultiWD": LabelSet(YES_NO, affirm=("exist", "present")),  # 'Does the X wellness dimension exist in the post?'
    # 'What is the stress cause of this post?' / 'This post shows the stress cause related to X.'
    "SAD": LabelSet(
        {
            "school": ("school", "study", "exam"),
            "financial problem": ("financial problem", "financial", "money"),
            "family issues": ("family issues", "family"),
            "social relationships": ("social relationships", "social", "relationship", "friend"),
            "work": ("work", "job", "career"),
            "health issues": ("health issues", "health", "illness"),
            "emotional turmoil": ("emotional turmoil", "turmoil"),  # the gold also says 'emotion turmoil'
            "everyday decision making": ("everyday decision making", "decision"),
            "other causes": ("other causes", "other stress cause", "other"),
        }
    ),
    # 'What mental disorder symptoms does this post show?' / '... related to X.' or '... no mental disorder symptoms.'
    "swmh": LabelSet(
        {
            "no mental disorder": ("no mental disorder", "none"),
            "suicide": ("suicide", "suicidal"),
            "depression": ("depression", "depressive"),
            "anxiety": ("anxiety", "anxious"),
            "bipolar disorder": ("bipolar disorder", "bipolar"),
        }
    ),
    # 'What mental disorder does this post show?' / 'This post shows suicide or self-harm tendency.'
    "t-sid": LabelSet(
        {
            "no mental disorder": ("no mental disorder", "none"),
            "suicide or self-harm tendency": ("suicide or self-harm tendency", "suicide", "suicidal", "self-harm"),
            "depression": ("depression", "depressive"),
            "ptsd": ("ptsd", "post-traumatic stress", "posttraumatic stress"),
        }
    ),
}


@dataclass(frozen=True)
class IMHIItem:
    """One row of an IMHI set: the query, the gold answer and the label extracted from it, and the row's CSV line."""

    set_name: str
    line: int
    query: str
    gold_answer: str
    gold_label: str


@dataclass
class IMHIArgs:
    """What `mentalarena eval imhi` evaluates: the models, the sets, where their data is, and the answer budget."""

    data_root: Path = field(
        metadata={
            "flag": "--data",
            "metavar": "FOLDER",
            "description": "folder holding imhi-expert/<set>.csv (MentalLLaMA's IMHI test sets; see docs)",
        }
    )
    models: list[str] = field(
        default_factory=lambda: ["embedded"], metadata={"type": comma_list, "description": MODELS_HELP}
    )
    sets: list[str] = field(
        default_factory=lambda: list(IMHI_SETS),
        metadata={"type": comma_list, "description": f"comma-separated, from {', '.join(IMHI_SETS)} (default all)"},
    )
    limit: int | None = field(default=None, metadata=LIMIT_OPTION)
    max_new_tokens: int = field(default=48, metadata={"description": "generation budget per answer"})
    progress: bool = field(default=True, metadata=QUIET_OPTION)


# --- label extraction -------------------------------------------------------------------------


def stem(word: str) -> str:
    """Strip plural, past and adjective endings, so 'emotional'/'emotion', 'issues'/'issue' and
    'biased'/'bias' agree; repeated until nothing changes, so a stem is its own stem. Negation
    words stay whole: stripped, 'none' would become 'non' and no longer negate."""
    if word in NEGATIONS:
        return word
    for suffix in ("al", "es", "s", "ed", "e"):
        if word.endswith(suffix) and not word.endswith("ss") and len(word) - len(suffix) >= 3:
            return stem(word[: -len(suffix)])
    return word


def words(text: str) -> list[str]:
    """The stemmed, lower-case words of ``text``, with contractions such as "doesn't" spelled out."""
    text = re.sub(r"n['’]t\b", " not", text.lower())  # "doesn't" -> "does not"
    text = re.sub(r"\b(can not|can't)\b", "cannot", text)
    text = re.sub(r"\bnot only\b", "only", text)  # 'not only sad but depressed' negates nothing
    return [stem(w) for w in re.findall(r"[a-z0-9]+", text)]


def answer_part(text: str) -> str:
    """The label sentence: what comes before 'Reasoning:' (the whole answer when there is none)."""
    head = re.split(r"reasoning\s*:", text, maxsplit=1, flags=re.I)[0]
    return head if head.strip() else text


def clauses(text: str) -> list[list[str]]:
    """Stemmed words per clause; a negation reaches only within its clause."""
    return [words(part) for part in re.split(r"[.,;:!?\n]|\bbut\b|\bhowever\b", text, flags=re.I) if part.strip()]


def find_phrase(phrase: list[str], clause: list[str], fuzzy: bool) -> list[int]:
    """Start positions of ``phrase`` in ``clause`` (exactly, or at FUZZY_CUTOFF similarity)."""
    n = len(phrase)
    target = " ".join(phrase)
    return [
        i
        for i in range(len(clause) - n + 1)
        if clause[i : i + n] == phrase
        or (
            fuzzy
            and len(target) >= 5
            and difflib.SequenceMatcher(None, " ".join(clause[i : i + n]), target).ratio() >= FUZZY_CUTOFF
        )
    ]


def label_mentions(label_set: LabelSet, clause: list[str], fuzzy: bool) -> list[tuple[int, int, str | None]]:
    """(position, -phrase length, label) of every label mention; label None for 'I don't know'."""
    binary = label_set.affirm != ()
    phrases: list[tuple[str | None, str]] = [
        (label, phrase) for label, names in label_set.labels.items() for phrase in names
    ]
    phrases += [(None, phrase) for phrase in UNSURE]
    phrases += [("yes", phrase) for phrase in label_set.affirm]
    # A negation reaches the four words after it, and four more past each 'or' within that reach,
    # so a negated list is negated throughout: 'no signs of suicide or self-harm tendency'.
    negated, reach = [], -1
    for position, word in enumerate(clause):
        negated.append(position <= reach)
        if word in NEGATIONS or (word == "or" and position <= reach):
            reach = position + 4
    found: list[tuple[int, int, str | None]] = []
    for label, phrase in phrases:
        phrase_words = words(phrase)
        for position in find_phrase(phrase_words, clause, fuzzy and label is not None):
            if negated[position] and not binary and phrase_words[0] not in NEGATIONS:
                continue  # 'does not show depression' names no label
            found.append((position, -len(phrase_words), label))
    return found


def extract_label(text: str, label_set: LabelSet) -> str | None:
    """The label an answer gives, or None. The earliest mention wins; the longest at a position.

    In yes/no sets a negation word is itself a 'no' ("the poster does not suffer from stress"),
    and it comes before the statement it negates, so the earliest-mention rule reads it right.
    """
    for fuzzy in (False, True):
        for clause in clauses(answer_part(text)):
            mentions = label_mentions(label_set, clause, fuzzy)
            if mentions:
                return min(mentions, key=lambda mention: mention[:2])[2]
    return None


# --- data ---------------------------------------------------------------------------------------


def load_imhi_set(set_name: str, data_root: Path, collection: str = "imhi-expert") -> list[IMHIItem]:
    """One set's rows from ``data_root/collection`` (``imhi-expert``, or ``imhi-complete``: the
    complete test sets); a row whose gold answer names no label of the set is a DataError."""
    if set_name not in IMHI_SETS:
        raise ValueError(f"unknown IMHI set {set_name!r}; choose from {', '.join(IMHI_SETS)}")
    path = Path(data_root) / collection / f"{set_name}.csv"
    if not path.exists():
        raise DataError(f"{path}: no such file (see --data)")
    items = []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {QUERY, GOLD} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path}, line 1: column(s) {sorted(missing)} missing from the header")
        line = reader.line_num + 1
        for row in reader:
            for column in (QUERY, GOLD):
                if not (row.get(column) or "").strip():
                    raise DataError(f"{path}, line {line}: field {column!r} is empty")
            label = extract_label(row[GOLD], IMHI_SETS[set_name])
            if label is None:
                raise DataError(f"{path}, line {line}: field {GOLD!r} names no {set_name} label: {row[GOLD][:80]!r}")
            items.append(IMHIItem(set_name, line, row[QUERY], row[GOLD], label))
            line = reader.line_num + 1  # a quoted field may span lines: the next row starts here
    return items


# --- scores -------------------------------------------------------------------------------------


def weighted_f1(gold: list[str], predicted: list[str]) -> float:
    """F1 per gold label, averaged with the labels' supports as weights (sklearn's 'weighted').

    Written with numpy because scikit-learn is not a dependency of this project. A prediction
    that is no label (UNPARSED) only ever counts against recall.
    """
    gold_array, predicted_array = np.array(gold, dtype=object), np.array(predicted, dtype=object)
    labels, support = np.unique(gold_array, return_counts=True)
    f1 = []
    for label in labels:
        true_positive = np.sum((predicted_array == label) & (gold_array == label))
        precision = true_positive / max(np.sum(predicted_array == label), 1)
        recall = true_positive / max(np.sum(gold_array == label), 1)
        f1.append(0.0 if true_positive == 0 else 2 * precision * recall / (precision + recall))
    return float(np.average(f1, weights=support)) if len(labels) else 0.0


def set_scores(gold: list[str], predicted: list[str]) -> dict:
    """One set's scores: accuracy with its Wilson interval, weighted F1, and the count of unparsed answers."""
    correct = sum(g == p for g, p in zip(gold, predicted))
    low, high = wilson_interval(correct, len(gold))
    return {
        "n": len(gold),
        "correct": correct,
        "accuracy": correct / len(gold) if gold else 0.0,
        "ci_low": low,
        "ci_high": high,
        "weighted_f1": weighted_f1(gold, predicted),
        "unparsed": predicted.count(UNPARSED),
    }


def imhi_prompt(item: IMHIItem) -> str:
    """The user prompt for an item: its query and the labels of its set."""
    return prompts.IMHI_TASK.format(query=item.query.strip(), labels=", ".join(IMHI_SETS[item.set_name].labels))


def answer_set(items: list[IMHIItem], model: BaseChatModel, progress: bool) -> list[tuple[str, str]]:
    """(reply, extracted label or UNPARSED) per item."""
    from tqdm import tqdm

    answers: list[tuple[str, str]] = []
    for item in tqdm(items, desc=f"imhi {items[0].set_name if items else ''}", disable=not progress):
        reply = model.invoke([SystemMessage(prompts.IMHI_SYSTEM), HumanMessage(imhi_prompt(item))]).text
        answers.append((reply, extract_label(reply, IMHI_SETS[item.set_name]) or UNPARSED))
    return answers


def evaluate_imhi(args: IMHIArgs) -> tuple[dict, list[dict]]:
    """(results, per-item rows): accuracy and weighted F1 per model and set."""
    items = {name: load_imhi_set(name, args.data_root)[: args.limit or None] for name in args.sets}
    results: dict[str, Any] = {"kind": "imhi", "sets": list(args.sets), "models": {}}
    rows = []
    for spec in args.models:
        model = load_chat_model(spec, GenerationSettings.reproducible(args.max_new_tokens))
        per_set = {}
        for name, set_items in items.items():
            started = time.perf_counter()
            answers = answer_set(set_items, model, args.progress)
            per_set[name] = {
                **set_scores([i.gold_label for i in set_items], [label for _, label in answers]),
                "seconds": round(time.perf_counter() - started, 2),
            }
            rows += [
                {
                    "model": spec,
                    "set": name,
                    "line": item.line,
                    "gold": item.gold_label,
                    "predicted": label,
                    "output": reply,
                }
                for item, (reply, label) in zip(set_items, answers)
            ]
        results["models"][spec] = {"name": describe_model(spec), "sets": per_set}
    return results, rows
