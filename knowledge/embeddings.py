"""Embedding models (SPEC section 10): a bundled default, and provider embeddings.

Interface: ``embedder_for(name) -> Embedder``; ``await embedder.embed(texts)`` returns a float32
array of shape ``(len(texts), embedder.dimension)`` with rows of unit length (so a dot product
is the cosine). Names: ``DEFAULT_EMBEDDING_MODEL`` and the others in ``embedding_model_names()``.

Bundled (no download at run time, chosen by ``bench/embeddings.py``; see docs/knowledge.md):

- ``wordllama-l2-256`` (the default): WordLlama's ``l2_supercat`` static token embeddings, 256
  dimensions, whose weights (16 MB) and tokenizer ship inside the ``wordllama`` wheel. A text's
  vector is the mean of its tokens' vectors, normalised. Read here with ``safetensors`` and
  ``tokenizers`` directly: importing the ``wordllama`` package would configure the root logger.
- ``wordllama-l2-128`` / ``-64``: the same vectors truncated (they were trained Matryoshka-style).
- ``hash-256``: feature hashing of words and word pairs, no model at all (the baseline).

Provider models, ``openai:<model>``, ``ollama:<model>``, ``gemini:<model>``: see
``providers/embeddings.py``; their HTTP goes through the providers' resilience layer and egress
policy.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import itertools
import re
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.egress import EgressPolicy
from providers.base import Timeouts
from providers.embeddings import PROVIDERS as PROVIDER_PREFIXES
from providers.embeddings import provider_embedder

_TOKEN = re.compile(r"\w+", re.UNICODE)


class Embedder(Protocol):
    name: str
    dimension: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (an all-zero row stays zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32, copy=False)


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


# --- WordLlama, bundled in its wheel --------------------------------------------------------------


class BundledModelMissing(LookupError):
    """The package that carries a bundled model is not installed."""


def _wordllama_dir() -> Path:
    spec = importlib.util.find_spec("wordllama")  # located, not imported (see the module doc)
    if spec is None or not spec.submodule_search_locations:
        raise BundledModelMissing("the wordllama package (the bundled embedding model) is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def wordllama_tokenizer() -> Any:
    """The Llama 2 tokenizer shipped with WordLlama (also the chunker's token counter)."""
    from tokenizers import Tokenizer

    path = _wordllama_dir() / "tokenizers" / "l2_supercat_tokenizer_config.json"
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


_weights_lock = threading.Lock()


@lru_cache(maxsize=1)
def _wordllama_table() -> np.ndarray:
    from safetensors.numpy import load_file

    with _weights_lock:
        tensors = load_file(str(_wordllama_dir() / "weights" / "l2_supercat_256.safetensors"))
    return np.ascontiguousarray(tensors["embedding.weight"], dtype=np.float32)  # (32000, 256)


class WordLlamaEmbedder:
    """Mean of WordLlama's static token vectors, truncated to ``dimension``, normalised.

    Under 1 ms a chunk on this project's 2-core machine, busy (bench/embeddings.py); the
    tokenizer is most of it. A text longer
    than ``max_tokens`` is embedded from its first ``max_tokens`` tokens (chunks are far shorter).
    """

    def __init__(self, dimension: int = 256, *, max_tokens: int = 2048) -> None:
        if dimension not in (64, 128, 256):
            raise LookupError(f"wordllama has 64, 128 or 256 dimensions, not {dimension}")
        self.name = f"wordllama-l2-{dimension}"
        self.dimension = dimension
        self.max_tokens = max_tokens

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        table = _wordllama_table()
        encodings = wordllama_tokenizer().encode_batch(list(texts), add_special_tokens=False)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            ids = encoding.ids[: self.max_tokens]
            if ids:
                out[row] = table[ids, : self.dimension].mean(axis=0)
        return _unit_rows(out)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed_sync, texts)


# --- names ----------------------------------------------------------------------------------------

DEFAULT_EMBEDDING_MODEL = "wordllama-l2-256"
_BUNDLED: dict[str, Callable[[], Embedder]] = {
    "wordllama-l2-256": lambda: WordLlamaEmbedder(256),
    "wordllama-l2-128": lambda: WordLlamaEmbedder(128),
    "wordllama-l2-64": lambda: WordLlamaEmbedder(64),
    "hash-256": lambda: HashingEmbedder(256),
}
_instances: dict[str, Embedder] = {}


def embedding_model_names() -> list[str]:
    """The bundled models (the default first); provider models are named ``<provider>:<model>``."""
    return [DEFAULT_EMBEDDING_MODEL, *(name for name in _BUNDLED if name != DEFAULT_EMBEDDING_MODEL)]


def is_provider_model(name: str) -> bool:
    return name.partition(":")[0] in PROVIDER_PREFIXES and bool(name.partition(":")[2])


def embedder_for(
    name: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    dimension: int | None = None,
    egress: EgressPolicy | None = None,
    timeouts: Timeouts | None = None,
) -> Embedder:
    """The embedder called ``name``; ``LookupError`` for an unknown name.

    A bundled model is made once per process. For ``<provider>:<model>`` the keyword arguments are
    the call's settings (``dimension``: the one the model is configured to give, else learned
    from its first answer); any left out come from the Django settings (the provider's URL, its
    key when the URL is a host the key is bound to, the egress policy) — see
    ``provider_settings``.
    """
    factory = _BUNDLED.get(name)
    if factory is not None:
        embedder = _instances.get(name)
        if embedder is None:
            embedder = _instances.setdefault(name, factory())
        return embedder
    if is_provider_model(name):
        provider, _, model = name.partition(":")
        defaults = provider_settings(provider, base_url=base_url)
        return provider_embedder(
            provider,
            model,
            base_url=base_url or defaults.get("base_url"),
            api_key=api_key if api_key is not None else defaults.get("api_key"),
            dimension=dimension,
            egress=egress or defaults.get("egress"),
            timeouts=timeouts or defaults.get("timeouts") or Timeouts(),
        )
    raise LookupError(f"unknown embedding model {name!r}")


# Each provider's URL setting and key variable (as agents/provider_config.py uses them for chat).
_URL_SETTINGS = {"openai": "OPENAI_BASE_URL", "ollama": "OLLAMA_BASE_URL", "gemini": "GEMINI_BASE_URL"}
_KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "gemini": "GOOGLE_API_KEY"}


def provider_settings(provider: str, *, base_url: str | None = None) -> dict[str, Any]:
    """What the Django settings say for ``provider``'s embeddings: ``base_url``, ``api_key`` (only
    when the URL is a host the key is bound to), ``egress`` and ``timeouts``. Empty without Django
    settings (scripts, the bench)."""
    try:
        from django.conf import settings

        configured = settings.configured
    except ImportError:  # pragma: no cover - Django is always installed with the server
        return {}
    if not configured:
        return {}
    from providers.registry import registry

    url = base_url or getattr(settings, _URL_SETTINGS[provider], "") or None
    out: dict[str, Any] = {"base_url": url}
    # The policy the server gives the chat providers; never none at all (public addresses only).
    egress = registry.configured_egress() or EgressPolicy.build()
    out["egress"] = egress
    variable = _KEY_VARIABLES.get(provider)
    key = (getattr(settings, "NEXUS_PROVIDER_API_KEYS", {}) or {}).get(variable) if variable else None
    default_url = {
        "openai": "https://api.openai.com/v1",
        "gemini": "https://generativelanguage.googleapis.com",
    }.get(provider)
    target = url or default_url
    if key and target and egress.key_may_go_to(variable or "", target):
        out["api_key"] = key
    out["timeouts"] = Timeouts(
        connect=float(getattr(settings, "NEXUS_PROVIDER_CONNECT_TIMEOUT", 5)),
        first_token=float(getattr(settings, "NEXUS_PROVIDER_FIRST_TOKEN_TIMEOUT", 60)),
        between_chunks=float(getattr(settings, "NEXUS_PROVIDER_CHUNK_TIMEOUT", 30)),
        total=float(getattr(settings, "NEXUS_PROVIDER_TOTAL_TIMEOUT", 600)),
    )
    return out
