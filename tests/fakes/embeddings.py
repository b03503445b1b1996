"""Vectors the fake servers answer embedding requests with: words hashed into ``dimension``
buckets, scaled by 3 (real services do not all send unit-length rows), so that texts sharing
words get close vectors and the client's normalising shows."""

from __future__ import annotations

import hashlib
import re

DEFAULT_DIMENSION = 16


def fake_vector(text: str, dimension: int = DEFAULT_DIMENSION) -> list[float]:
    vector = [0.0] * dimension
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.sha256(word.encode()).digest()
        vector[digest[0] % dimension] += 3.0
    if not any(vector):
        vector[0] = 3.0
    return vector
