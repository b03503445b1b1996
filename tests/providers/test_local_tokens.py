"""The local provider's token counts against what llama.cpp itself evaluates (the real bundled model)."""

from __future__ import annotations

import pytest

from providers.base import ChatMessage, GenerationOptions, ToolCall
from providers.local import LocalProvider, bundled_model_path, to_llama_messages

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHATS = [
    [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Hello, how are you?"),
    ],
    [ChatMessage(role="user", content="No system prompt here, so the template adds its own. " * 3)],
    [
        ChatMessage(role="system", content="S"),
        ChatMessage(role="user", content="héllo wörld ✓ 日本語"),
        ChatMessage(role="assistant", content="Fine, thanks."),
        ChatMessage(role="user", content="ok"),
    ],
    [
        ChatMessage(role="system", content="S"),
        ChatMessage(role="user", content="look it up"),
        ChatMessage(role="assistant", tool_calls=(ToolCall(id="1", name="lookup", arguments={}),)),
        ChatMessage(role="tool", content='{"found": true}', tool_call_id="1", name="lookup"),
        ChatMessage(role="user", content="and?"),
    ],
]


@pytest.fixture(scope="module")
def llama():
    from llama_cpp import Llama

    model = Llama(model_path=str(bundled_model_path()), n_ctx=2048, n_threads=2, verbose=False)
    yield model
    model.close()


@pytest.mark.parametrize("messages", CHATS, ids=["system", "no-system", "unicode", "tools"])
def test_the_prompt_count_is_what_llama_cpp_evaluates(llama, messages: list[ChatMessage]) -> None:
    counter = LocalProvider().token_counter(model="m", options=GenerationOptions())
    # The provider's own request, through llama-cpp-python's chat completion, which reports the
    # prompt tokens it evaluated.
    answer = llama.create_chat_completion(messages=to_llama_messages(messages), max_tokens=1, temperature=0)
    assert counter.prompt_tokens(messages) == answer["usage"]["prompt_tokens"]


def test_the_window_is_the_loaded_context_or_the_agents_smaller_one() -> None:
    local = LocalProvider(n_ctx=2048)
    options = GenerationOptions()
    assert local.token_counter(model="m", options=options).window == 2048
    assert local.token_counter(model="m", options=options, window=512).window == 512
    assert local.token_counter(model="m", options=options, window=100_000).window == 2048


def test_a_message_is_counted_with_the_models_tokenizer() -> None:
    counter = LocalProvider().token_counter(model="m", options=GenerationOptions())
    short = counter.message_tokens(ChatMessage(role="user", content="hi"))
    long = counter.message_tokens(ChatMessage(role="user", content="hello world " * 500))
    # "hello world " is 2 tokens in SmolLM2's vocabulary: far from the 4-characters estimate (1,500).
    assert long - short == pytest.approx(1000, abs=5)
