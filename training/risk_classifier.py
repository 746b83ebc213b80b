"""Trains the risk classifier (agents/risk_classifier.py) on the risk corpus, and chooses its threshold.

The corpus (``agents/data/risk_corpus/*.jsonl``, see its README) is split by paraphrase family
with scikit-learn's ``StratifiedGroupKFold`` (5 folds: one for test, one for validation, three to
train on), so no situation is on two sides. The encoder (the bundled MiniLM by default) gets a
LoRA adapter on all its linear layers (PEFT), and a linear layer over its mean-pooled unit
embeddings scores the categories; both are fitted together with class-weighted cross-entropy and
torch's AdamW, with the learning rate warmed up and then decayed linearly (transformers' schedule).
The encoder is tuned rather than frozen (docs/safety.md compares the two). The threshold on the
risk probability is the highest that keeps validation recall at ``--target-recall``. The phrase
layer (agents/safety.py) is kept beside it only if adding its hits raises validation recall
without lowering validation precision: the card records that ablation on validation and test.
Writes ``risk_classifier.npz``, ``risk_classifier.json`` and the adapter folder into ``--out``.

    python -m mentalarena.training.risk_classifier --out agents/data
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mentalarena.agents.embeddings import BUNDLED, embedding_folder
from mentalarena.agents.jsonl import read_json_lines
from mentalarena.agents.risk_classifier import (
    ADAPTER,
    NONE,
    RiskClassifier,
    class_probabilities,
    embed_in_batches,
    risk_scores,
    unit_embeddings,
)
from mentalarena.agents.safety import phrase_hits
from mentalarena.agents.schemas import RISK_CATEGORIES
from mentalarena.training.statistics import proportion

CATEGORIES = (*RISK_CATEGORIES, NONE)
EPOCHS, LEARNING_RATE, LORA_RANK, BATCH_SIZE, WARMUP_STEPS = 6, 5e-4, 16, 32, 50
# Validation recall the threshold keeps. Above the 0.95 asked of unseen text: a threshold set at
# exactly 0.95 on validation landed below it on the test split twice (0.933, 0.937: docs/safety.md).
TARGET_RECALL = 0.97
SCALE = 20.0  # the layer scores unit vectors, whose dot products are small: logits are scaled up


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
    examples: list[Example],
    out: Path,
    embedding_model: str = BUNDLED,
    target_recall: float = TARGET_RECALL,
    seed: int = 0,
    epochs: int = EPOCHS,
    learning_rate: float = LEARNING_RATE,
    lora_rank: int = LORA_RANK,
    log: Callable[[str], None] = print,
) -> RiskClassifier:
    """The encoder's adapter and the layer fitted on the training families, saved into ``out``; the threshold
    and the phrase layer are chosen on validation."""
    import torch
    from peft import LoraConfig, get_peft_model
    from sklearn.metrics import average_precision_score
    from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    split = split_by_family(examples, seed)
    texts = [e.text for e in examples]
    labels = torch.tensor([CATEGORIES.index(e.category) for e in examples])
    at_risk = np.array([e.category != NONE for e in examples])
    folder = embedding_folder(embedding_model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    lora = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.1, target_modules="all-linear")
    encoder = get_peft_model(AutoModel.from_pretrained(folder).float(), lora)
    layer = torch.nn.Linear(encoder.config.hidden_size, len(CATEGORIES))
    train_rows = split["train"]
    counts = torch.bincount(labels[train_rows], minlength=len(CATEGORIES)).float()
    class_weights = counts.sum() / (len(CATEGORIES) * counts.clamp(min=1))  # as scikit-learn's "balanced"
    optimizer = torch.optim.AdamW(
        [p for p in encoder.parameters() if p.requires_grad] + list(layer.parameters()),
        lr=learning_rate,
        weight_decay=0.01,
    )
    steps_per_epoch = -(-len(train_rows) // BATCH_SIZE)
    schedule = get_linear_schedule_with_warmup(optimizer, WARMUP_STEPS, epochs * steps_per_epoch)
    order = torch.Generator().manual_seed(seed)

    def risk(rows: list[int]) -> np.ndarray:
        """The rows' risk probabilities, as the saved classifier will score them."""
        encoder.eval()
        chosen = [texts[i] for i in rows]
        vectors = embed_in_batches(encoder, tokenizer, chosen, layer.in_features)
        weights, bias = scaled_layer()
        scores = risk_scores(class_probabilities(vectors, chosen, CATEGORIES, weights, bias), CATEGORIES)
        return np.array([score.probability for score in scores])

    def scaled_layer() -> tuple[np.ndarray, np.ndarray]:
        """The layer's weights and bias with ``SCALE`` folded in, in float32, as they are saved."""
        return (
            (layer.weight.detach().numpy() * SCALE).astype(np.float32),
            (layer.bias.detach().numpy() * SCALE).astype(np.float32),
        )

    validation, test = split["validation"], split["test"]
    quality = []
    for epoch in range(epochs):
        encoder.train()
        total = 0.0
        shuffled = [train_rows[i] for i in torch.randperm(len(train_rows), generator=order).tolist()]
        for start in range(0, len(shuffled), BATCH_SIZE):
            batch = shuffled[start : start + BATCH_SIZE]
            logits = layer(unit_embeddings(encoder, tokenizer, [texts[i] for i in batch])) * SCALE
            loss = torch.nn.functional.cross_entropy(logits, labels[batch], weight=class_weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        validation_risk = risk(validation)
        quality.append(round(float(average_precision_score(at_risk[validation], validation_risk)), 4))
        log(f"epoch {epoch + 1}/{epochs}: training loss {total / len(shuffled):.4f}, validation AP {quality[-1]}")
    threshold = threshold_for_recall(validation_risk, at_risk[validation], target_recall)

    phrase_flags = np.array([bool(phrase_hits(e.text)[0]) for e in examples])
    ablation = {}
    for name, rows, risks in (("validation", validation, validation_risk), ("test", test, risk(test))):
        by_model = risks >= threshold
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
        "model": (
            "LoRA on every linear layer of the encoder (PEFT) and a linear layer over its mean-pooled unit "
            "embeddings, fitted together: class-weighted cross-entropy, AdamW, linear warm-up and decay"
        ),
        "epochs": epochs,
        "learning_rate": learning_rate,
        "lora_rank": lora_rank,
        "batch_size": BATCH_SIZE,
        "validation_average_precision_by_epoch": quality,
        "target_recall": target_recall,
        "seed": seed,
        "phrases": keep_phrases,
        "ablation": ablation,
    }
    # The adapter names its encoder by spec, not by this machine's path; the card (risk_classifier.json)
    # describes it, so PEFT's template model card is not kept.
    encoder.peft_config["default"].base_model_name_or_path = embedding_model
    encoder.save_pretrained(str(out / ADAPTER))
    (out / ADAPTER / "README.md").unlink(missing_ok=True)
    classifier = RiskClassifier(
        CATEGORIES,
        *scaled_layer(),
        threshold,
        embedding_model,
        card,
        str(out / ADAPTER),
    )
    classifier.save(out)
    return classifier


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
    parser.add_argument("--target-recall", type=float, default=TARGET_RECALL)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--learning-rate", type=float, default=LEARNING_RATE)
    parser.add_argument("--lora-rank", type=int, default=LORA_RANK)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    classifier = train_risk_classifier(
        load_corpus(args.corpus or default_corpus()),
        args.out,
        args.embedding_model,
        args.target_recall,
        args.seed,
        args.epochs,
        args.learning_rate,
        args.lora_rank,
    )
    for name, rows in classifier.card["ablation"].items():
        for variant, figures in rows.items():
            print(f"{name} {variant}: precision {figures['precision']['share']}, recall {figures['recall']['share']}")
    print(
        f"threshold {classifier.threshold}, "
        f"validation AP by epoch {classifier.card['validation_average_precision_by_epoch']}, "
        f"phrase layer kept: {classifier.card['phrases']}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
