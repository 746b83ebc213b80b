"""Trains the risk classifier (agents/risk_classifier.py) on the risk corpus, and chooses its threshold.

The corpus (``agents/data/risk_corpus/*.jsonl``, see its README) is split by paraphrase family
with scikit-learn's ``StratifiedGroupKFold`` (5 folds: one for test, one for validation, three to
train on), so no situation is on two sides. A multinomial logistic regression (scikit-learn) is
fitted on the training folds' sentence embeddings, its regularisation chosen on validation average
precision; the threshold on the risk probability is the highest that keeps validation recall at
``--target-recall``. The phrase layer (agents/safety.py) is kept beside it only if adding its hits
raises validation recall without lowering validation precision: the card records that ablation on
validation and test. Writes ``risk_classifier.npz`` and ``risk_classifier.json`` into ``--out``.

    python -m mentalarena.training.risk_classifier --out agents/data
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mentalarena.agents.embeddings import BUNDLED, load_embeddings, unit_vectors
from mentalarena.agents.jsonl import read_json_lines
from mentalarena.agents.risk_classifier import NONE, RiskClassifier
from mentalarena.agents.safety import phrase_hits
from mentalarena.agents.schemas import RISK_CATEGORIES
from mentalarena.training.statistics import proportion

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

CATEGORIES = (*RISK_CATEGORIES, NONE)
REGULARISATION = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


class CorpusError(ValueError):
    """A malformed risk corpus; the message names the file, the line and the field."""

    pass


@dataclass(frozen=True)
class Example:
    """One corpus message, with its risk category, subtype and paraphrase family."""

    text: str
    category: str
    subtype: str
    family: str


def default_corpus() -> Path:
    """The folder of the shipped risk corpus."""
    return Path(str(importlib.resources.files("mentalarena.agents") / "data" / "risk_corpus"))


def load_corpus(folder: Path) -> list[Example]:
    """Every line of every ``*.jsonl`` in ``folder``; a bad line is refused naming file, line and field."""
    files = sorted(Path(folder).glob("*.jsonl"))
    if not files:
        raise CorpusError(f"{folder}: no *.jsonl files")
    examples: list[Example] = []
    families: dict[str, str] = {}
    for path in files:
        for where, row in read_json_lines(path, CorpusError):
            for name in ("text", "category", "subtype", "family"):
                if not isinstance(row.get(name), str) or not row[name].strip():
                    raise CorpusError(f"{where}: field {name!r} is missing or empty")
            if row["category"] not in CATEGORIES:
                raise CorpusError(
                    f"{where}: field 'category': {row['category']!r} is not one of {', '.join(CATEGORIES)}"
                )
            if families.setdefault(row["family"], row["category"]) != row["category"]:
                raise CorpusError(
                    f"{where}: field 'family': {row['family']!r} already has category {families[row['family']]!r}"
                )
            examples.append(Example(row["text"].strip(), row["category"], row["subtype"], row["family"]))
    return examples


def corpus_digest(examples: list[Example]) -> str:
    """A short hash of the examples' texts, categories and families, to tell one corpus from another."""
    return hashlib.sha256(json.dumps([(e.text, e.category, e.family) for e in examples]).encode()).hexdigest()[:16]


def split_by_family(examples: list[Example], seed: int) -> dict[str, list[int]]:
    """Indices of the train, validation and test examples: whole families, each category in each split."""
    from sklearn.model_selection import StratifiedGroupKFold

    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    labels, groups = [e.category for e in examples], [e.family for e in examples]
    tests = [test for _, test in folds.split(np.zeros(len(examples)), labels, groups)]
    split = {"test": sorted(tests[0]), "validation": sorted(tests[1])}
    held = set(split["test"]) | set(split["validation"])
    split["train"] = [i for i in range(len(examples)) if i not in held]
    return split


def risk_probability(classifier: LogisticRegression, vectors: np.ndarray) -> np.ndarray:
    """Each vector's probability of any risk category: one minus that of no risk."""
    none = list(classifier.classes_).index(NONE)
    return 1.0 - classifier.predict_proba(vectors)[:, none]


def threshold_for_recall(probabilities: np.ndarray, at_risk: np.ndarray, target: float) -> float:
    """The highest threshold at which at least ``target`` of the risk messages score at or above it."""
    scores = np.sort(probabilities[at_risk])[::-1]
    needed = int(np.ceil(target * len(scores)))
    return float(scores[needed - 1]) if needed else 1.0


def precision_recall(flagged: np.ndarray, at_risk: np.ndarray) -> dict:
    """Precision and recall of the flags against the labels, each a proportion with its Wilson interval."""
    return {
        "precision": proportion(int((flagged & at_risk).sum()), int(flagged.sum())),
        "recall": proportion(int((flagged & at_risk).sum()), int(at_risk.sum())),
    }


def train_risk_classifier(
    examples: list[Example], embedding_model: str = BUNDLED, target_recall: float = 0.95, seed: int = 0
) -> RiskClassifier:
    """The classifier fitted on the training families; its C, threshold and phrase layer are chosen on validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    split = split_by_family(examples, seed)
    vectors = unit_vectors(load_embeddings(embedding_model).embed_documents([e.text for e in examples]))
    labels = np.array([e.category for e in examples])
    at_risk = labels != NONE

    def fit(c: float, rows: list[int]) -> LogisticRegression:
        return LogisticRegression(C=c, class_weight="balanced", max_iter=5000, random_state=seed).fit(
            vectors[rows], labels[rows]
        )

    validation, test = split["validation"], split["test"]
    quality = {
        c: average_precision_score(at_risk[validation], risk_probability(fit(c, split["train"]), vectors[validation]))
        for c in REGULARISATION
    }
    best_c = max(REGULARISATION, key=lambda c: (round(quality[c], 6), -c))
    model = fit(best_c, split["train"])
    threshold = threshold_for_recall(risk_probability(model, vectors[validation]), at_risk[validation], target_recall)

    phrase_flags = np.array([bool(phrase_hits(e.text)[0]) for e in examples])
    ablation = {}
    for name, rows in (("validation", validation), ("test", test)):
        by_model = risk_probability(model, vectors[rows]) >= threshold
        ablation[name] = {
            "classifier": precision_recall(by_model, at_risk[rows]),
            "classifier_or_phrases": precision_recall(by_model | phrase_flags[rows], at_risk[rows]),
            "phrases": precision_recall(phrase_flags[rows], at_risk[rows]),
        }
    alone, both = ablation["validation"]["classifier"], ablation["validation"]["classifier_or_phrases"]
    keep_phrases = (
        both["recall"]["share"] > alone["recall"]["share"] and both["precision"]["share"] >= alone["precision"]["share"]
    )
    card = {
        "trained_by": "python -m mentalarena.training.risk_classifier",
        "corpus": {
            "examples": len(examples),
            "families": len({e.family for e in examples}),
            "digest": corpus_digest(examples),
            "split": {name: len(rows) for name, rows in split.items()},
        },
        "model": "scikit-learn LogisticRegression (multinomial, class_weight=balanced)",
        "C": best_c,
        "validation_average_precision": {str(c): round(q, 4) for c, q in quality.items()},
        "target_recall": target_recall,
        "seed": seed,
        "phrases": keep_phrases,
        "ablation": ablation,
    }
    return RiskClassifier(
        tuple(str(c) for c in model.classes_),
        model.coef_.astype(np.float32),
        model.intercept_.astype(np.float32),
        round(threshold, 4),
        embedding_model,
        card,
    )


def main(argv: list[str] | None = None) -> int:
    """Train the risk classifier on the corpus, save it to ``--out``, and print its ablation and threshold."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--corpus", type=Path, default=None, help="folder of *.jsonl examples (default: the shipped corpus)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for risk_classifier.npz and risk_classifier.json"
    )
    parser.add_argument(
        "--embedding-model", default=BUNDLED, help="'minilm' (bundled) or a local sentence-transformers folder"
    )
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    classifier = train_risk_classifier(
        load_corpus(args.corpus or default_corpus()), args.embedding_model, args.target_recall, args.seed
    )
    classifier.save(args.out)
    for name, rows in classifier.card["ablation"].items():
        for variant, figures in rows.items():
            print(f"{name} {variant}: precision {figures['precision']['share']}, recall {figures['recall']['share']}")
    print(
        f"threshold {classifier.threshold}, C {classifier.card['C']}, "
        f"phrase layer kept: {classifier.card['phrases']}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
