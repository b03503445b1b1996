"""The bundled embedder, and provider embeddings against loopback fakes speaking the real wire."""

from __future__ import annotations

import numpy as np
import pytest

from core.egress import EgressPolicy
from knowledge.embeddings import DEFAULT_EMBEDDING_MODEL, embedder_for, embedding_model_names
from providers.base import ProviderError
from providers.resilience import RetryPolicy
from tests.fakes import FakeGemini, FakeOllama, FakeOpenAI
from tests.fakes.script import Reply

FAST_RETRY = RetryPolicy(backoff=(0.0,), jitter=0.0)
LOOPBACK = EgressPolicy.build(allow=["127.0.0.1"])


def unit_rows(matrix: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5))


async def test_default_embedder_ranks_a_paraphrase_above_unrelated_text() -> None:
    embedder = embedder_for(DEFAULT_EMBEDDING_MODEL)
    assert embedding_model_names()[0] == DEFAULT_EMBEDDING_MODEL
    vectors = await embedder.embed(
        [
            "How do I remove limescale from my coffee maker?",
            "Descaling the espresso machine: dissolve the descaler in water and run the programme.",
            "The lighthouse keeper rowed out during the gale to rescue four fishermen.",
            "Fold the flour into the batter with a metal spoon.",
            "The router restarts after a firmware update.",
        ]
    )
    scores = vectors[1:] @ vectors[0]
    assert int(np.argmax(scores)) == 0  # the paraphrase (no rare word shared) ranks first


async def test_default_embedder_shape_and_unit_rows() -> None:
    embedder = embedder_for(DEFAULT_EMBEDDING_MODEL)
    vectors = await embedder.embed(["one", "two words", ""])
    assert vectors.shape == (3, embedder.dimension) and vectors.dtype == np.float32
    assert unit_rows(vectors[:2]) and not vectors[2].any()  # an empty text has no direction
    assert (await embedder.embed([])).shape == (0, embedder.dimension)
    assert embedder_for(DEFAULT_EMBEDDING_MODEL) is embedder  # loaded once


async def test_truncated_and_baseline_models() -> None:
    for name, dimension in (("wordllama-l2-64", 64), ("hash-256", 256)):
        embedder = embedder_for(name)
        vectors = await embedder.embed(["a text", "another text"])
        assert embedder.dimension == dimension and vectors.shape == (2, dimension) and unit_rows(vectors)
    with pytest.raises(LookupError):
        embedder_for("no-such-model")
    with pytest.raises(LookupError):
        embedder_for("openai:")  # a provider with no model


async def test_openai_embeddings_wire_and_learned_dimension() -> None:
    with FakeOpenAI() as server:
        embedder = embedder_for(
            "openai:text-embedding-3-small", base_url=server.base_url, api_key="sk-test", egress=LOOPBACK
        )
        assert embedder.dimension == 0  # not known before the first answer
        vectors = await embedder.embed(["descale the machine", "descale the machine now", "lighthouse"])
        assert vectors.shape == (3, 16) and embedder.dimension == 16 and unit_rows(vectors)
        assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])
        request = server.requests[-1]
        assert request.path == "/v1/embeddings"
        assert request.headers["authorization"] == "Bearer sk-test"
        assert request.json["model"] == "text-embedding-3-small"
        assert request.json["input"] == ["descale the machine", "descale the machine now", "lighthouse"]


async def test_openai_configured_dimension_is_asked_for_and_checked() -> None:
    with FakeOpenAI() as server:
        embedder = embedder_for("openai:m", base_url=server.base_url, dimension=8, egress=LOOPBACK)
        assert embedder.dimension == 8
        assert (await embedder.embed(["x"])).shape == (1, 8)
        assert server.requests[-1].json["dimensions"] == 8
        server.script(Reply(extra={"dimension": 12}))
        other = embedder_for("ollama:m", base_url=server.url, dimension=8, egress=LOOPBACK)
        assert other.name == "ollama:m"
    with FakeOllama() as server:
        embedder = embedder_for("ollama:nomic-embed-text", base_url=server.url, dimension=8, egress=LOOPBACK)
        server.script(Reply(extra={"dimension": 12}))
        with pytest.raises(ProviderError) as caught:
            await embedder.embed(["x"])
        assert caught.value.kind == "protocol" and "12 dimensions" in caught.value.message


async def test_ollama_embed_batches() -> None:
    with FakeOllama() as server:
        embedder = embedder_for("ollama:nomic-embed-text", base_url=server.url, egress=LOOPBACK)
        embedder.batch_size = 2  # type: ignore[attr-defined]
        vectors = await embedder.embed(["a", "b", "c", "d", "e"])
        assert vectors.shape == (5, 16) and unit_rows(vectors)
        assert [r.path for r in server.requests] == ["/api/embed"] * 3
        assert [r.json["input"] for r in server.requests] == [["a", "b"], ["c", "d"], ["e"]]
        assert "authorization" not in server.requests[0].headers


async def test_gemini_embed_content_and_batch() -> None:
    with FakeGemini() as server:
        embedder = embedder_for(
            "gemini:text-embedding-004", base_url=server.url, api_key="g-key", egress=LOOPBACK
        )
        one = await embedder.embed(["hello"])
        many = await embedder.embed(["hello", "world"])
        assert one.shape == (1, 16) and many.shape == (2, 16)
        assert np.allclose(one[0], many[0])
        single, batch = server.requests
        assert single.path == "/v1beta/models/text-embedding-004:embedContent"
        assert single.json["content"] == {"parts": [{"text": "hello"}]}
        assert batch.path == "/v1beta/models/text-embedding-004:batchEmbedContents"
        assert [r["model"] for r in batch.json["requests"]] == ["models/text-embedding-004"] * 2
        assert single.headers["x-goog-api-key"] == "g-key"


@pytest.mark.parametrize("fake", [FakeOpenAI, FakeOllama, FakeGemini])
async def test_a_4xx_is_a_clear_error_tried_once(fake: type) -> None:
    with fake() as server:
        base = server.base_url if fake is FakeOpenAI else server.url
        provider = {FakeOpenAI: "openai", FakeOllama: "ollama", FakeGemini: "gemini"}[fake]
        embedder = embedder_for(f"{provider}:nope", base_url=base, egress=LOOPBACK)
        server.script(Reply(status=404, error_message="model 'nope' not found"))
        with pytest.raises(ProviderError) as caught:
            await embedder.embed(["x"])
        assert caught.value.kind == "bad_request" and caught.value.status == 404
        assert "not found" in caught.value.message and "HTTP 404" in caught.value.public_message
        assert len(server.requests) == 1


async def test_a_5xx_is_retried_then_reported() -> None:
    from providers.embeddings import ProviderEmbedder

    with FakeOpenAI() as server:
        embedder = ProviderEmbedder(
            "openai", "m", base_url=server.base_url, egress=LOOPBACK, retry=FAST_RETRY
        )
        server.script(Reply(status=503, error_message="busy"))
        assert (await embedder.embed(["x"])).shape == (1, 16)  # the second attempt answered
        assert len(server.requests) == 2
        server.reset()
        server.script(*[Reply(status=500, error_message="boom")] * 3)
        with pytest.raises(ProviderError) as caught:
            await embedder.embed(["x"])
        assert caught.value.kind == "unavailable" and len(server.requests) == 3


async def test_egress_refuses_a_private_host_not_allowed() -> None:
    with FakeOllama() as server:
        embedder = embedder_for("ollama:m", base_url=server.url, egress=EgressPolicy.build())
        with pytest.raises(ProviderError) as caught:
            await embedder.embed(["x"])
        assert caught.value.kind == "egress_denied"
        assert "127.0.0.1" not in caught.value.public_message
        assert server.requests == []


async def test_an_operator_key_never_goes_to_a_host_it_is_not_bound_to() -> None:
    policy = EgressPolicy.build(allow=["127.0.0.1"], keys={"OPENAI_API_KEY": "sk-operator-secret"})
    with FakeOpenAI() as server:
        embedder = embedder_for(
            "openai:m", base_url=server.base_url, api_key="sk-operator-secret", egress=policy
        )
        with pytest.raises(ProviderError) as caught:
            await embedder.embed(["x"])
        assert caught.value.kind == "egress_denied" and server.requests == []
        assert "sk-operator-secret" not in caught.value.message


def test_settings_fill_in_url_key_and_policy(settings: object) -> None:
    from providers.registry import registry

    settings.OLLAMA_BASE_URL = "http://ollama.internal:11434"  # type: ignore[attr-defined]
    settings.NEXUS_PROVIDER_API_KEYS = {"OPENAI_API_KEY": "sk-op"}  # type: ignore[attr-defined]
    settings.OPENAI_BASE_URL = ""  # type: ignore[attr-defined]
    ollama = embedder_for("ollama:m")
    assert ollama.base_url == "http://ollama.internal:11434"  # type: ignore[attr-defined]
    assert ollama.egress is not None  # type: ignore[attr-defined]  # never without a policy
    openai = embedder_for("openai:text-embedding-3-small")
    assert openai.base_url == "https://api.openai.com/v1"  # type: ignore[attr-defined]
    # the key goes with it only when the policy binds it to that host
    bound = registry.configured_egress() or EgressPolicy.build()
    assert (openai._api_key == "sk-op") == bound.key_may_go_to("OPENAI_API_KEY", openai.base_url)  # type: ignore[attr-defined]
