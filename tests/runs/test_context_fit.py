"""The fitting rule (runs.history.fit_history) with a counter whose arithmetic is plain: a message
costs the number of words of its content (a tool call: 1 per call), a prompt the sum plus 2."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from providers.base import ChatMessage, ToolCall
from providers.tokens import EstimatedTokens
from runs.history import MIN_REPLY_TOKENS, ContextOverflow, fit_history, reply_reserve


@dataclass
class WordCounter:
    window: int
    overhead: int = 2
    exact_extra: int = 0  # per message, what the whole-prompt count adds beyond the per-message sums

    def message_tokens(self, message: ChatMessage) -> int:
        return len(message.content.split()) + len(message.tool_calls)

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        extra = self.exact_extra * len(messages)
        return sum(self.message_tokens(m) for m in messages) + self.overhead + extra


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def system(n: int = 10) -> ChatMessage:
    return ChatMessage(role="system", content=words(n, "s"))


def user(n: int, tag: str = "u") -> ChatMessage:
    return ChatMessage(role="user", content=words(n, tag))


def assistant(n: int, tag: str = "a") -> ChatMessage:
    return ChatMessage(role="assistant", content=words(n, tag))


def test_everything_is_kept_when_it_fits_and_the_reply_gets_max_tokens():
    messages = [system(), user(20), assistant(20), user(20)]
    fitted = fit_history(messages, counter=WordCounter(window=1000), max_tokens=100)
    assert fitted.messages == messages
    assert fitted.dropped == 0
    assert fitted.prompt_tokens == 10 + 60 + 2
    assert fitted.reply_tokens == 100


def test_the_oldest_turns_go_first_and_the_system_prompt_stays():
    old = [user(100, "old"), assistant(100, "oldr")]
    mid = [user(100, "mid"), assistant(100, "midr")]
    new = [user(50, "new")]
    messages = [system(), *old, *mid, *new]
    # window 400, max_tokens 64: reserve 64, so the prompt may take 336: system 12 + new 50 + mid 200
    fitted = fit_history(messages, counter=WordCounter(window=400), max_tokens=64)
    assert fitted.messages == [messages[0], *mid, *new]
    assert fitted.dropped == 2
    assert fitted.prompt_tokens == 262
    assert fitted.reply_tokens == 64


def test_a_turn_that_does_not_fit_ends_the_history_even_if_an_older_one_would():
    oldest = [user(5, "tiny")]
    big = [user(320, "big"), assistant(10)]
    new = [user(10, "new")]
    messages = [system(), *oldest, *big, *new]
    fitted = fit_history(messages, counter=WordCounter(window=400), max_tokens=64)
    assert fitted.messages == [messages[0], *new]  # no gap: "tiny" would fit, but not without "big"


def test_a_tool_call_and_its_result_are_kept_or_dropped_together():
    call = ChatMessage(role="assistant", tool_calls=(ToolCall(id="c1", name="lookup", arguments={}),))
    result = ChatMessage(role="tool", content=words(150, "r"), tool_call_id="c1", name="lookup")
    turn_with_tools = [user(10, "q"), call, result, assistant(20, "answer")]
    new = [user(10, "new")]
    messages = [system(), *turn_with_tools, *new]
    # The tool turn costs 10 + 1 + 150 + 20 = 181: with window 250 and reserve 64 it cannot stay.
    fitted = fit_history(messages, counter=WordCounter(window=250), max_tokens=64)
    assert fitted.messages == [messages[0], *new]
    assert not any(m.role == "tool" or m.tool_calls for m in fitted.messages)
    # With room for it, the whole turn stays, in order.
    fitted = fit_history(messages, counter=WordCounter(window=400), max_tokens=64)
    assert fitted.messages == messages


def test_the_newest_turn_keeps_its_tool_rounds():
    call = ChatMessage(role="assistant", tool_calls=(ToolCall(id="c1", name="lookup", arguments={}),))
    result = ChatMessage(role="tool", content=words(5, "r"), tool_call_id="c1", name="lookup")
    messages = [system(), user(100, "old"), assistant(100), user(10, "q"), call, result]
    fitted = fit_history(messages, counter=WordCounter(window=200), max_tokens=64)
    assert fitted.messages == [messages[0], messages[3], call, result]


def test_the_reply_budget_is_what_the_window_leaves_capped_by_max_tokens():
    messages = [system(), user(300)]
    fitted = fit_history(messages, counter=WordCounter(window=400), max_tokens=200)
    assert fitted.prompt_tokens == 312
    assert fitted.reply_tokens == 400 - 312  # less than max_tokens, at least the minimum
    fitted = fit_history(messages, counter=WordCounter(window=4000), max_tokens=200)
    assert fitted.reply_tokens == 200  # the cap


def test_without_max_tokens_the_provider_default_stands_unless_the_window_is_tighter():
    fitted = fit_history([system(), user(10)], counter=WordCounter(window=4000), max_tokens=None)
    assert fitted.reply_tokens is None
    fitted = fit_history([system(), user(300)], counter=WordCounter(window=400), max_tokens=None)
    assert fitted.reply_tokens == 88  # 400 - 312: under the reserve (100), so it is set


def test_older_turns_go_before_the_reply_falls_under_its_reserve():
    # max_tokens 150: the history leaves 150 for the reply, not just the minimum.
    messages = [system(), user(100, "old"), assistant(100), user(100, "new")]
    fitted = fit_history(messages, counter=WordCounter(window=400), max_tokens=150)
    assert fitted.messages == [messages[0], messages[3]]
    assert fitted.reply_tokens == 150
    assert reply_reserve(window=400, max_tokens=150) == 150
    assert reply_reserve(window=400, max_tokens=8) == MIN_REPLY_TOKENS
    assert reply_reserve(window=400, max_tokens=10_000) == 200  # at most half the window
    assert reply_reserve(window=4000, max_tokens=None) == 1000  # a quarter when unset


def test_the_whole_prompt_count_has_the_last_word():
    # The per-message counts say both turns fit (282 of 336); the whole prompt counts 20 more per
    # message (342): the older turn goes.
    messages = [system(), user(100, "old"), assistant(100), user(50, "new")]
    counter = WordCounter(window=400, exact_extra=20)
    fitted = fit_history(messages, counter=counter, max_tokens=64)
    assert fitted.messages == [messages[0], messages[3]]
    assert fitted.prompt_tokens == 10 + 50 + 2 + 40


def test_a_newest_turn_that_leaves_less_than_the_minimum_reply_is_refused():
    messages = [system(), user(100, "old"), user(400 - 12 - MIN_REPLY_TOKENS + 1, "huge")]
    with pytest.raises(ContextOverflow) as caught:
        fit_history(messages, counter=WordCounter(window=400), max_tokens=64)
    assert caught.value.kind == "bad_request"
    assert caught.value.window == 400 and caught.value.prompt_tokens == 400 - MIN_REPLY_TOKENS + 1
    assert "too long" in caught.value.message
    # One token less and it is sent alone, with exactly the minimum for the reply.
    messages[-1] = user(400 - 12 - MIN_REPLY_TOKENS, "huge")
    fitted = fit_history(messages, counter=WordCounter(window=400), max_tokens=64)
    assert fitted.messages == [messages[0], messages[-1]] and fitted.reply_tokens == MIN_REPLY_TOKENS


def test_a_history_without_a_system_prompt():
    messages = [user(100, "old"), assistant(100), user(10, "new")]
    fitted = fit_history(messages, counter=WordCounter(window=200), max_tokens=64)
    assert fitted.messages == [messages[-1]]


def test_the_estimate_is_characters_over_four_plus_framing():
    counter = EstimatedTokens(window=1000)
    assert counter.message_tokens(ChatMessage(role="user", content="x" * 9)) == 3 + 4
    assert counter.message_tokens(ChatMessage(role="user", content="")) == 4
    call = ToolCall(id="1", name="abcd", arguments={"q": 1})  # 4 + len('{"q": 1}') = 12 chars
    assert counter.message_tokens(ChatMessage(role="assistant", tool_calls=(call,))) == 3 + 4
    two = [ChatMessage(role="user", content="x" * 8), ChatMessage(role="assistant", content="y" * 4)]
    assert counter.prompt_tokens(two) == (2 + 4) + (1 + 4) + 3
