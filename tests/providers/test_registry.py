"""The registry: lazy built-ins, settings through configure, scripted providers through register."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Sequence

import pytest

from providers.base import (
    ChatMessage,
    ChatProvider,
    Finished,
    GenerationOptions,
    ProviderError,
    ProviderStatus,
    StreamEvent,
    TextDelta,
    ToolSpec,
    Usage,
)
from providers.gemini import GeminiProvider
from providers.local import LocalProvider
from providers.ollama import OllamaProvider
from providers.openai_compat import OpenAIProvider
from providers.registry import BUILTIN, ProviderRegistry, get_provider, registry
from tests.fakes import FakeOllama


class ScriptedProvider:
    """A provider whose reply is fixed in advance: what other engineers' tests register."""

    name = "scripted"

    def __init__(self, reply: str = "scripted reply", *, greeting: str = "") -> None:
        self.reply = greeting + reply

    async def stream_chat(
        self,
        *,
        model: str,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] = (),
        options: GenerationOptions,
    ) -> AsyncIterator[StreamEvent]:
        yield TextDelta(text=self.reply)
        yield Finished(reason="stop", usage=Usage(output_tokens=1))

    async def status(self, *, options: GenerationOptions) -> ProviderStatus:
        return ProviderStatus(name=self.name, reachable=True, models=["script"])


def test_it_knows_the_builtin_providers() -> None:
    assert ProviderRegistry().names() == ["gemini", "local", "ollama", "openai"]


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("local", LocalProvider),
        ("ollama", OllamaProvider),
        ("openai", OpenAIProvider),
        ("gemini", GeminiProvider),
    ],
)
def test_it_builds_each_builtin_once(name: str, cls: type) -> None:
    reg = ProviderRegistry()

    provider = reg.get(name)

    assert isinstance(provider, cls)
    assert isinstance(provider, ChatProvider)
    assert provider.name == name
    assert reg.get(name) is provider


def test_builtins_are_imported_only_when_asked_for() -> None:
    code = (
        "import sys; from providers.registry import registry; registry.names();"
        "assert not any(m in sys.modules for m in ('openai', 'google.genai', 'llama_cpp',"
        " 'providers.openai_compat', 'providers.gemini', 'providers.local')), sorted(sys.modules);"
        "registry.get('openai'); assert 'openai' in sys.modules and 'google.genai' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_an_unknown_name_is_a_bad_request() -> None:
    with pytest.raises(ProviderError) as caught:
        ProviderRegistry().get("nope")

    assert caught.value.kind == "bad_request"
    assert "nope" in caught.value.message


def test_configure_passes_settings_to_the_factory_and_rebuilds() -> None:
    reg = ProviderRegistry()
    first = reg.get("ollama")

    reg.configure("ollama", base_url="http://ollama.internal:11434/")
    second = reg.get("ollama")

    assert first.base_url == "http://localhost:11434"
    assert second is not first
    assert second.base_url == "http://ollama.internal:11434"


def test_configure_all_gives_each_factory_only_what_it_accepts() -> None:
    reg = ProviderRegistry()
    reg.register("scripted", ScriptedProvider)
    reg.configure("*", retry_after_cap=3.0)
    reg.configure("local", model_path="/models/x.gguf", threads=4)

    assert reg.get("openai").retry.retry_after_cap == 3.0
    assert reg.get("gemini").retry.retry_after_cap == 3.0
    local = reg.get("local")
    assert (local.retry.retry_after_cap, local.n_threads, str(local.path)) == (3.0, 4, "/models/x.gguf")
    assert reg.get("scripted").reply == "scripted reply"  # takes no retry_after_cap, so got none


def test_configuring_an_unknown_provider_is_an_error() -> None:
    with pytest.raises(ProviderError):
        ProviderRegistry().configure("nope", base_url="x")


async def test_a_scripted_provider_comes_in_through_the_same_door() -> None:
    reg = ProviderRegistry()
    reg.register("scripted", ScriptedProvider("hi"))

    events = [
        e async for e in reg.get("scripted").stream_chat(model="m", messages=[], options=GenerationOptions())
    ]

    assert events[0] == TextDelta(text="hi")
    assert "scripted" in reg.names()


def test_a_factory_or_a_dotted_path_can_be_registered() -> None:
    reg = ProviderRegistry()
    reg.register("by-factory", ScriptedProvider)
    reg.register("by-path", "tests.providers.test_registry.ScriptedProvider")
    reg.configure("by-path", greeting="hello, ")

    assert reg.get("by-factory").reply == "scripted reply"
    assert reg.get("by-path").reply == "hello, scripted reply"


def test_override_restores_what_was_there() -> None:
    reg = ProviderRegistry()
    original = reg.get("ollama")
    fake = ScriptedProvider()

    with reg.override("ollama", fake):
        assert reg.get("ollama") is fake
    with reg.override("temporary", fake):
        assert reg.get("temporary") is fake

    assert reg.get("ollama") is original
    assert "temporary" not in reg.names()


async def test_the_default_registry_reaches_a_configured_server() -> None:
    with FakeOllama() as server, registry.override("ollama", OllamaProvider(base_url=server.base_url)):
        provider = get_provider("ollama")
        status = await provider.status(options=GenerationOptions())

    assert status.reachable
    assert set(BUILTIN) <= set(registry.names())
