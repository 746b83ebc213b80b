"""The risk classifier: multinomial logistic regression on sentence embeddings.

A message is embedded (the bundled MiniLM by default, or the local sentence-transformers folder it
was trained with) and scored against each risk category and ``none``. Its risk probability is
``1 - P(none)``; it counts as a risk at or above the threshold, which
``python -m mentalarena.training.risk_classifier`` chose on validation data for recall (see
docs/safety.md). Its category is the most probable risk category.

The fitted weights ship with the package (``agents/data/risk_classifier.npz`` and ``.json``);
scoring needs numpy and the embedding model only, so it runs offline and gives the same numbers
for the same text every time.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mentalarena.agents.embeddings import load_embeddings, unit_vectors

NONE = "none"
WEIGHTS = "risk_classifier.npz"
CARD = "risk_classifier.json"


@dataclass(frozen=True)
class RiskScore:
    """The classifier's score of one message: its risk probability and its most probable risk category."""

    probability: float  # 1 - P(none)
    category: str  # the most probable risk category (reported whether or not the message counts as a risk)
    category_probability: float


@dataclass(frozen=True)
class RiskClassifier:
    """A fitted classifier: its classes, weights and bias, threshold, embedding model and training card."""

    classes: tuple[str, ...]  # NONE among them
    weights: np.ndarray  # (classes, embedding dimension)
    bias: np.ndarray  # (classes,)
    threshold: float  # the risk probability at which a message counts as a risk
    embedding_model: str
    card: dict  # how it was trained and what it measured

    def probabilities(self, texts: list[str], embedding_model: str | None = None) -> np.ndarray:
        """Each text's probability of each class: (texts, classes), rows summing to 1."""
        vectors = unit_vectors(
            load_embeddings(embedding_model or self.embedding_model).embed_documents([t or " " for t in texts])
        )
        logits = vectors @ self.weights.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def score(self, texts: list[str]) -> list[RiskScore]:
        """A :class:`RiskScore` per text, rounded to 4 places."""
        none = self.classes.index(NONE)
        risky = [i for i in range(len(self.classes)) if i != none]
        scores = []
        for row in self.probabilities(texts):
            best = max(risky, key=lambda i: row[i])
            scores.append(RiskScore(round(float(1.0 - row[none]), 4), self.classes[best], round(float(row[best]), 4)))
        return scores

    def save(self, folder: Path) -> None:
        """Writes the weights and the card into ``folder``, as :func:`load_risk_classifier` reads them."""
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / WEIGHTS, weights=self.weights, bias=self.bias)
        card = {
            **self.card,
            "classes": list(self.classes),
            "threshold": self.threshold,
            "embedding_model": self.embedding_model,
        }
        (folder / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


def load_risk_classifier(folder: Path | None = None) -> RiskClassifier:
    """The classifier in ``folder`` (``risk_classifier.npz`` and ``.json``); the shipped one by default."""
    return _load(str(folder) if folder else "")


@functools.lru_cache(maxsize=4)
def _load(folder: str) -> RiskClassifier:
    root = Path(folder) if folder else importlib.resources.files("mentalarena.agents") / "data"
    card = json.loads((root / CARD).read_text(encoding="utf-8"))
    with (root / WEIGHTS).open("rb") as handle:
        arrays = np.load(handle)
        weights, bias = arrays["weights"], arrays["bias"]
    return RiskClassifier(
        tuple(card["classes"]), weights, bias, float(card["threshold"]), card["embedding_model"], card
    )
