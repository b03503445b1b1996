"""The agent's context window, applied: every request fitted to it, a message too long refused.

- :func:`fit_request`: just before a provider is asked (each tool round too), the history fitted
  to the window (``runs.history.fit_history``) and the reply's ``max_tokens`` set to what is left.
- :func:`message_admit`: when a person sends, a message that cannot fit even alone (with the
  agent's instructions and the minimum reply) is refused with ``validation_error``; nothing is
  stored or sent.

The rule is in docs/providers.md ("Context windows").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

from agents.models import Agent
from agents.provider_config import configure_providers
from conversations.models import Conversation, Message, MessageRole, MessageType
from core.errors import ValidationFailed
from providers.base import ChatMessage, GenerationOptions, ProviderError
from providers.registry import get_provider
from providers.tokens import TokenCounter, token_counter_for
from runs.history import MIN_REPLY_TOKENS, _as_chat, _system_prompt, fit_history

logger = logging.getLogger(__name__)

# A prompt's tokens never exceed its UTF-8 bytes with our counters (a llama.cpp token covers at
# least one byte; the estimate is a quarter of the characters), and a chat template adds fewer
# than this many bytes: a message this short fits without counting (no tokenizer to load).
TEMPLATE_BYTES = 512


def token_counter_of(agent: Agent, options: GenerationOptions | None = None) -> TokenCounter | None:
    """``agent``'s provider's counter with the agent's window (``Agent.context_window``); None
    when the provider is unknown (the run reports that) or knows no window."""
    if options is None:  # the run's options configured the registry already
        configure_providers()
        options = GenerationOptions(max_tokens=agent.max_tokens, extra=dict(agent.config or {}))
    try:
        provider = get_provider(agent.provider)
    except ProviderError:
        return None
    return token_counter_for(provider, model=agent.model, options=options, window=agent.context_window)


def _fit(
    agent: Agent, messages: Sequence[ChatMessage], options: GenerationOptions
) -> tuple[list[ChatMessage], GenerationOptions]:
    counter = token_counter_of(agent, options)
    if counter is None:
        return list(messages), options
    fitted = fit_history(messages, counter=counter, max_tokens=options.max_tokens)
    if fitted.dropped:
        logger.info(
            "agent %s: %d oldest messages left out to fit the %d-token window (prompt %d tokens)",
            agent.pk,
            fitted.dropped,
            counter.window,
            fitted.prompt_tokens,
        )
    if fitted.reply_tokens != options.max_tokens:
        options = replace(options, max_tokens=fitted.reply_tokens)
    return fitted.messages, options


async def fit_request(
    agent: Agent, messages: Sequence[ChatMessage], options: GenerationOptions
) -> tuple[list[ChatMessage], GenerationOptions]:
    """The messages and options of one provider request, fitted to ``agent``'s window. Raises
    ``runs.history.ContextOverflow`` (a ``ProviderError``) when the newest turn cannot fit.

    Counting with llama.cpp's tokenizer is C code that may load the vocabulary: in a thread.
    The estimate is a few additions: inline (time to first token)."""
    if agent.provider == "local":
        return await asyncio.to_thread(_fit, agent, messages, options)
    return _fit(agent, messages, options)


def message_admit(
    *, agent: Agent, conversation: Conversation, speakers: Sequence[Agent], content: str
) -> None:
    """Refuse (``ValidationFailed``) a person's message to ``agent`` that cannot fit its context
    window even alone: with the system prompt, and ``MIN_REPLY_TOKENS`` left for the reply.
    Sync (the send's transaction, in the database thread)."""
    counter = token_counter_of(agent)  # nothing loaded yet: a tokenizer loads on its first count
    if counter is None:
        return
    system = _system_prompt(agent, conversation, speakers)
    size = len(content.encode("utf-8")) + len(system.encode("utf-8")) + TEMPLATE_BYTES
    if size + MIN_REPLY_TOKENS <= counter.window:
        return  # fits, counted or not
    multi_agent = conversation.session_type == "agent_agent"
    message = Message(
        conversation=conversation, role=MessageRole.USER, type=MessageType.MESSAGE, content=content
    )
    prompt = [ChatMessage(role="system", content=system)] if system else []
    prompt += _as_chat(message, agent=agent, multi_agent=multi_agent, names={})
    tokens = counter.prompt_tokens(prompt)
    if tokens + MIN_REPLY_TOKENS <= counter.window:
        return
    raise ValidationFailed(
        f"This message is too long for {agent.name}: about {tokens} tokens with the agent's "
        f"instructions, and its model reads at most {counter.window} at once ({MIN_REPLY_TOKENS} of "
        "them kept for the reply). Shorten it or split it into parts.",
        details={"content": [f"Too long for a context window of {counter.window} tokens."]},
    )
