"""How many tokens a prompt takes, and how many a model's context window holds.

Every provider can answer through ``token_counter(model=..., options=..., window=...)``: the local
provider counts with llama.cpp's own tokenizer and chat template (exact); the HTTP providers have
no tokenizer here and use :class:`EstimatedTokens` (documented in docs/providers.md). ``window`` is
the agent's own setting when it has one; each provider otherwise knows its default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from providers.base import ChatMessage, GenerationOptions

CHARS_PER_TOKEN = 4  # the estimate: a token is about four characters of English text
MESSAGE_OVERHEAD = 4  # the estimate's per-message framing (role markers, separators)
PROMPT_OVERHEAD = 3  # the estimate's framing outside any message (the reply's opening)


class TokenCounter(Protocol):
    """A model's window and a way to count what a prompt takes of it."""

    @property
    def window(self) -> int:
        """Tokens the model sees at once: the prompt and the reply together."""
        ...

    def message_tokens(self, message: ChatMessage) -> int:
        """About what one message adds to a prompt (its content and its framing)."""
        ...

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """What the whole prompt made of ``messages`` takes, the reply's opening included."""
        ...


def estimate_text_tokens(text: str) -> int:
    """Characters divided by four, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class EstimatedTokens:
    """The estimate for providers without a tokenizer here: per message, its characters (content,
    and a tool call's name and JSON arguments) divided by four, rounded up, plus 4; per prompt, 3
    more. English prose runs about 4 characters a token in the common BPE vocabularies, code and
    other languages fewer, so a window set a little below the model's real one leaves room."""

    window: int

    def message_tokens(self, message: ChatMessage) -> int:
        text = message.content
        for call in message.tool_calls:
            text += call.name + json.dumps(call.arguments, ensure_ascii=False)
        return estimate_text_tokens(text) + MESSAGE_OVERHEAD

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(self.message_tokens(m) for m in messages) + PROMPT_OVERHEAD


class CountsTokens(Protocol):
    def token_counter(
        self, *, model: str, options: GenerationOptions, window: int | None = None
    ) -> TokenCounter: ...


def token_counter_for(
    provider: Any, *, model: str, options: GenerationOptions, window: int | None = None
) -> TokenCounter | None:
    """The provider's counter; for a provider that has none (e.g. a scripted fake), the estimate
    when ``window`` is given, else None: a window nobody knows is not fitted to."""
    make = getattr(provider, "token_counter", None)
    if callable(make):
        return make(model=model, options=options, window=window)
    return EstimatedTokens(window=window) if window else None
