"""Embedding models (SPEC section 10): a bundled default, and provider embeddings.

Interface: ``embedder_for(name) -> Embedder``; ``await embedder.embed(texts)`` returns a float32
array of shape ``(len(texts), embedder.dimension)`` with rows of unit length (so a dot product
is the cosine). Names: ``DEFAULT_EMBEDDING_MODEL`` and the others in ``embedding_model_names()``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np

_TOKEN = re.compile(r"\w+", re.UNICODE)


class Embedder(Protocol):
    name: str
    dimension: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class HashingEmbedder:
    """Feature hashing of words and word pairs: no model at all (the baseline the others beat)."""

    def __init__(self, dimension: int = 256) -> None:
        self.name = f"hash-{dimension}"
        self.dimension = dimension

    def _one(self, text: str) -> np.ndarray:
        vector = np.zeros(self.dimension, dtype=np.float32)
        words = [w.lower() for w in _TOKEN.findall(text)]
        for feature in words + [f"{a} {b}" for a, b in itertools.pairwise(words)]:
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "little") % self.dimension
            vector[index] += 1.0 if digest[4] & 1 else -1.0
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else vector

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._one(text) for text in texts])

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed_sync, texts)


DEFAULT_EMBEDDING_MODEL = "hash-256"


def embedding_model_names() -> list[str]:
    return ["hash-256"]


def embedder_for(name: str) -> Embedder:
    if name == "hash-256":
        return HashingEmbedder(256)
    raise LookupError(f"unknown embedding model {name!r}")
