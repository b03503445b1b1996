"""Embeddings from providers: OpenAI-compatible ``POST /embeddings``, Ollama ``POST /api/embed``,
Gemini ``embedContent`` / ``batchEmbedContents``.

Each request runs as one *attempt* under the providers' one resilience layer
(``resilience.resilient_stream``): the same retries, ``Retry-After`` handling, deadlines and error
kinds as a chat reply, and the same egress policy on the HTTP client (an operator key only goes
to the hosts it is bound to). The attempt reads the whole answer, keeps the vectors and yields a
single ``Finished`` so the layer knows the call is over.

Rows come back as float32 of unit length. The dimension is the one configured (``dimension=``,
which OpenAI and Gemini are also asked for) or learned from the first answer; an answer with
another dimension, or with a different number of vectors than texts, is a ``protocol`` error.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx
import numpy as np
import orjson

from core.egress import EgressPolicy
from providers._wire import PerLoop, close_http_client, new_http_client
from providers.base import Finished, ProviderError, StreamEvent, Timeouts, Usage, safe_message
from providers.resilience import (
    RetryPolicy,
    StreamWatch,
    httpx_timeout,
    parse_retry_after,
    resilient_stream,
    retry_policy,
    status_error,
)

PROVIDERS = ("openai", "ollama", "gemini")
DEFAULT_URLS = {
    "openai": "https://api.openai.com/v1",
    "ollama": "http://localhost:11434",
    "gemini": "https://generativelanguage.googleapis.com",
}
# Texts per request: below each service's own limit (OpenAI 2,048 inputs, Gemini 100 requests).
BATCH_SIZES = {"openai": 256, "ollama": 64, "gemini": 100}

# One HTTP client per event loop and egress policy, shared by every embedder using that policy.
_clients: dict[EgressPolicy | None, PerLoop[httpx.AsyncClient]] = {}


def _client_for(egress: EgressPolicy | None) -> httpx.AsyncClient:
    per_loop = _clients.get(egress)
    if per_loop is None:
        if len(_clients) > 16:
            _clients.clear()  # settings changed many times (tests): never an unbounded map
        per_loop = _clients.setdefault(
            egress, PerLoop(lambda: new_http_client(egress), close=close_http_client)
        )
    return per_loop.get()


def _protocol(provider: str, what: str) -> ProviderError:
    return ProviderError("protocol", f"{provider}: {what}", provider=provider)


class ProviderEmbedder:
    """``<provider>:<model>`` embeddings. ``embed`` raises ``ProviderError`` (see docs/providers.md)."""

    def __init__(
        self,
        provider: str,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        dimension: int | None = None,
        egress: EgressPolicy | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        batch_size: int | None = None,
        api_version: str = "v1beta",
    ) -> None:
        if provider not in PROVIDERS:
            raise ProviderError("bad_request", f"no embeddings for provider {provider!r}")
        if not model:
            raise ProviderError("bad_request", f"{provider}: an embedding model must be named")
        self.provider = provider
        self.model = model
        self.name = f"{provider}:{model}"
        self.base_url = (base_url or DEFAULT_URLS[provider]).rstrip("/")
        self._api_key = api_key
        self.configured_dimension = dimension
        self.dimension = dimension or 0  # 0 until the first answer tells
        self.egress = egress
        self.timeouts = timeouts or Timeouts()
        self.retry = retry_policy(retry, None)
        self.batch_size = batch_size or BATCH_SIZES[provider]
        self.api_version = api_version

    def __repr__(self) -> str:
        return f"ProviderEmbedder({self.name!r}, base_url={self.base_url!r}, dimension={self.dimension})"

    # -- the wire of each provider

    def _request(self, texts: Sequence[str]) -> tuple[str, dict[str, str], dict[str, Any]]:
        headers = {"content-type": "application/json"}
        if self.provider == "openai":
            body: dict[str, Any] = {"model": self.model, "input": list(texts), "encoding_format": "float"}
            if self.configured_dimension:
                body["dimensions"] = self.configured_dimension
            headers["authorization"] = f"Bearer {self._api_key or 'not-needed'}"
            return f"{self.base_url}/embeddings", headers, body
        if self.provider == "ollama":
            if self._api_key:
                headers["authorization"] = f"Bearer {self._api_key}"
            return f"{self.base_url}/api/embed", headers, {"model": self.model, "input": list(texts)}
        # gemini
        if self._api_key:
            headers["x-goog-api-key"] = self._api_key
        model = self.model if self.model.startswith(("models/", "tunedModels/")) else f"models/{self.model}"
        prefix = f"{self.base_url}/{self.api_version}/{model}"

        def one(text: str) -> dict[str, Any]:
            item: dict[str, Any] = {"content": {"parts": [{"text": text}]}}
            if self.configured_dimension:
                item["outputDimensionality"] = self.configured_dimension
            return item

        if len(texts) == 1:
            return f"{prefix}:embedContent", headers, {"model": model, **one(texts[0])}
        return (
            f"{prefix}:batchEmbedContents",
            headers,
            {"requests": [{"model": model, **one(text)} for text in texts]},
        )

    def _vectors(self, data: Any) -> tuple[list[Any], int]:
        """The vectors of an answer (in the texts' order) and the input tokens it reports."""
        if not isinstance(data, dict):
            raise _protocol(self.provider, "the answer is not a JSON object")
        if self.provider == "openai":
            items = data.get("data")
            if not isinstance(items, list):
                raise _protocol(self.provider, "the answer has no 'data' list")
            ordered = sorted(items, key=lambda item: item.get("index", 0) if isinstance(item, dict) else 0)
            usage = data.get("usage") or {}
            tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else 0
            return [item.get("embedding") if isinstance(item, dict) else None for item in ordered], int(
                tokens or 0
            )
        if self.provider == "ollama":
            vectors = data.get("embeddings")
            if not isinstance(vectors, list):
                raise _protocol(self.provider, "the answer has no 'embeddings' list")
            return vectors, int(data.get("prompt_eval_count") or 0)
        if "embedding" in data:  # embedContent
            items = [data["embedding"]]
        else:
            items = data.get("embeddings")
            if not isinstance(items, list):
                raise _protocol(self.provider, "the answer has no 'embeddings' list")
        return [item.get("values") if isinstance(item, dict) else None for item in items], 0

    # -- one request under the resilience layer

    async def _attempt(
        self, watch: StreamWatch, texts: Sequence[str], out: list[np.ndarray]
    ) -> AsyncGenerator[list[StreamEvent], None]:
        url, headers, body = self._request(texts)
        client = _client_for(self.egress)
        request = client.build_request(
            "POST", url, content=orjson.dumps(body), headers=headers, timeout=httpx_timeout(self.timeouts)
        )
        response = await client.send(request, stream=True)
        try:
            raw = b""
            async for chunk in response.aiter_bytes():
                watch.tick()
                raw += chunk
            if response.status_code >= 400:
                raise status_error(
                    response.status_code,
                    self._error_detail(raw),
                    provider=self.provider,
                    retry_after=parse_retry_after(response.headers),
                )
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise _protocol(self.provider, "the answer is not JSON") from None
            vectors, tokens = self._vectors(data)
            out.append(self._matrix(vectors, len(texts)))
        finally:
            await response.aclose()
        yield [Finished(reason="stop", usage=Usage(input_tokens=tokens))]

    def _error_detail(self, raw: bytes) -> str:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return safe_message(raw[:500].decode("utf-8", "replace"), secrets=[self._api_key])
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            error = error.get("message") or error.get("status") or error
        return safe_message(error if error is not None else data, secrets=[self._api_key])

    def _matrix(self, vectors: list[Any], count: int) -> np.ndarray:
        if len(vectors) != count:
            raise _protocol(self.provider, f"{len(vectors)} vectors for {count} texts")
        try:
            matrix = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            raise _protocol(self.provider, "the vectors are not lists of numbers of one length") from None
        if matrix.ndim != 2 or matrix.shape[1] == 0 or not np.isfinite(matrix).all():
            raise _protocol(self.provider, "the vectors are not lists of numbers of one length")
        width = int(matrix.shape[1])
        if self.dimension and width != self.dimension:
            raise _protocol(
                self.provider,
                f"the model gave vectors of {width} dimensions where {self.dimension} were expected",
            )
        self.dimension = width
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (matrix / norms).astype(np.float32, copy=False)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length rows, one per text, in order; ``ProviderError`` on any failure."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        parts: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            out: list[np.ndarray] = []

            def attempt(
                watch: StreamWatch, batch: Sequence[str] = batch, out: list[np.ndarray] = out
            ) -> AsyncGenerator[list[StreamEvent], None]:
                out.clear()
                return self._attempt(watch, batch, out)

            async for _ in resilient_stream(
                attempt, provider=self.provider, timeouts=self.timeouts, policy=self.retry
            ):
                pass
            parts.append(out[0])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def provider_embedder(provider: str, model: str, **settings: Any) -> ProviderEmbedder:
    """``ProviderEmbedder`` for ``<provider>:<model>`` with the call's settings (see its init)."""
    return ProviderEmbedder(provider, model, **settings)
