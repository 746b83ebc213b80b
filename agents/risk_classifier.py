"""The risk classifier: a sentence encoder tuned to the task, and a linear layer over its embeddings.

A message is embedded by the encoder the classifier was trained with (the bundled MiniLM by
default, or a local sentence-transformers folder) with the LoRA adapter that training fitted
merged into its weights: the mean of its token states, scaled to length 1. Links are removed and
@-handles made ``@user`` first; a message left with no words is no risk. A linear layer scores
that embedding against each risk category and ``none``. The risk probability is ``1 - P(none)``;
a message counts as a risk at or above the threshold, which
``python -m mentalarena.training.risk_classifier`` chose on validation data for recall (see
docs/safety.md). Its category is the most probable risk category.

The adapter, the layer and the training card ship with the package (``agents/data/``); scoring
runs offline, in float32, and gives the same numbers for the same text every time.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mentalarena.agents.embeddings import embedding_folder
from mentalarena.agents.models import model_loading_lock

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

NONE = "none"
WEIGHTS = "risk_classifier.npz"
CARD = "risk_classifier.json"
ADAPTER = "risk_classifier_adapter"  # the encoder's LoRA adapter, a PEFT folder
MAX_TOKENS = 256  # longer messages are cut, as sentence-transformers cuts them for MiniLM
BATCH = 64
LINK = re.compile(r"(?:https?://|www\.|pic\.twitter\.com/)\S+", re.I)
HANDLE = re.compile(r"(?<!\w)@\w+")


@dataclass(frozen=True)
class RiskScore:
    """The classifier's score of one message: its risk probability and its most probable risk category."""

    probability: float  # 1 - P(none)
    category: str  # the most probable risk category (reported whether or not the message counts as a risk)
    category_probability: float


def normalise(text: str) -> str:
    """``text`` with links removed and @-handles made ``@user``, as tweet classifiers commonly prepare posts.

    A link or a handle says nothing about risk, but the corpus's few links are all in safe messages
    (news shares), so a classifier that saw them would learn that a link means safety."""
    return HANDLE.sub("@user", LINK.sub("", text)).strip()


def unit_embeddings(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> torch.Tensor:
    """The mean of each text's token states once :func:`normalise` has prepared it, scaled to length 1:
    (texts, hidden size). Training and scoring share it."""
    import torch

    batch = tokenizer(
        [normalise(t) for t in texts], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
    )
    states = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
    return torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)


def embed_in_batches(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str], dimension: int
) -> np.ndarray:
    """:func:`unit_embeddings` of many texts without gradients, in batches of similar length (little
    padding), returned in the texts' order: (texts, dimension)."""
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vectors = np.zeros((len(texts), dimension), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), BATCH):
            rows = order[start : start + BATCH]
            vectors[rows] = unit_embeddings(model, tokenizer, [texts[i] for i in rows]).numpy()
    return vectors


def class_probabilities(
    vectors: np.ndarray, texts: list[str], classes: tuple[str, ...], weights: np.ndarray, bias: np.ndarray
) -> np.ndarray:
    """The softmax of the linear layer over the texts' unit embeddings: (texts, classes), rows summing to 1.
    A text left with no words by :func:`normalise` (empty, or only a link) states no risk: it is ``none`` for
    certain. Training chooses the threshold with it, and scoring uses it, so the two agree."""
    logits = vectors.astype(np.float64) @ np.asarray(weights, dtype=np.float64).T + bias
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    probabilities = exp / exp.sum(axis=1, keepdims=True)
    wordless = [i for i, text in enumerate(texts) if not normalise(text)]
    probabilities[wordless] = np.eye(len(classes))[classes.index(NONE)]
    return probabilities


def risk_scores(probabilities: np.ndarray, classes: tuple[str, ...]) -> list[RiskScore]:
    """A :class:`RiskScore` per row of class probabilities, rounded to 4 places, so that a text scores the
    same alone or in any batch. Training chooses the threshold on these numbers."""
    none = classes.index(NONE)
    risky = [i for i in range(len(classes)) if i != none]
    scores = []
    for row in probabilities:
        best = max(risky, key=lambda i: row[i])
        scores.append(RiskScore(round(float(1.0 - row[none]), 4), classes[best], round(float(row[best]), 4)))
    return scores


@dataclass(frozen=True)
class RiskClassifier:
    """A fitted classifier: its classes, linear layer, threshold, encoder, adapter and training card."""

    classes: tuple[str, ...]  # NONE among them
    weights: np.ndarray  # (classes, embedding dimension)
    bias: np.ndarray  # (classes,)
    threshold: float  # the risk probability at which a message counts as a risk
    embedding_model: str
    card: dict  # how it was trained and what it measured
    adapter: str = ""  # folder of the encoder's LoRA adapter; empty: the encoder as it ships

    def embed(self, texts: list[str]) -> np.ndarray:
        """Each text's unit embedding by the tuned encoder: (texts, dimension)."""
        model, tokenizer = tuned_encoder(self.embedding_model, self.adapter)
        return embed_in_batches(model, tokenizer, texts, self.weights.shape[1])

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Each text's probability of each class: (texts, classes), rows summing to 1."""
        return class_probabilities(self.embed(texts), texts, self.classes, self.weights, self.bias)

    def score(self, texts: list[str]) -> list[RiskScore]:
        """A :class:`RiskScore` per text."""
        return risk_scores(self.probabilities(texts), self.classes)

    def save(self, folder: Path) -> None:
        """Writes the layer and the card into ``folder``, as :func:`load_risk_classifier` reads them.
        The adapter is written there by training (``ADAPTER``)."""
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / WEIGHTS, weights=self.weights, bias=self.bias)
        card = {
            **self.card,
            "classes": list(self.classes),
            "threshold": self.threshold,
            "embedding_model": self.embedding_model,
            "adapter": ADAPTER if self.adapter else "",
        }
        (folder / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


def tuned_encoder(spec: str, adapter: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The embedding model with ``adapter`` merged into it, in eval mode, and its tokenizer; loaded once,
    under :data:`~mentalarena.agents.models.model_loading_lock`."""
    with model_loading_lock:
        return _tuned_encoder(spec, adapter)


@functools.lru_cache(maxsize=4)
def _tuned_encoder(spec: str, adapter: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModel, AutoTokenizer

    folder = embedding_folder(spec)
    model = AutoModel.from_pretrained(folder)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model.float().eval(), AutoTokenizer.from_pretrained(folder)


def load_risk_classifier(folder: Path | None = None) -> RiskClassifier:
    """The classifier in ``folder`` (``risk_classifier.npz``, ``.json`` and its adapter); the shipped one by default."""
    return _load(str(folder) if folder else "")


@functools.lru_cache(maxsize=4)
def _load(folder: str) -> RiskClassifier:
    root = Path(folder) if folder else Path(str(importlib.resources.files("mentalarena.agents") / "data"))
    card = json.loads((root / CARD).read_text(encoding="utf-8"))
    with (root / WEIGHTS).open("rb") as handle:
        arrays = np.load(handle)
        weights, bias = arrays["weights"], arrays["bias"]
    adapter = str(root / card["adapter"]) if card.get("adapter") else ""
    return RiskClassifier(
        tuple(card["classes"]), weights, bias, float(card["threshold"]), card["embedding_model"], card, adapter
    )
