"""A paste far past what a message may hold, in the real Chromium: refused with a clear message,
and the chat goes on (issue 15)."""

from __future__ import annotations

import pytest

from tests.browser.conftest import current_conversation_id, reply_locator, send, sign_in, start_chat
from tests.fakes.script import Reply

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_200000_character_paste_is_refused_clearly_and_the_chat_goes_on(nexus, page):
    agent = nexus.create_agent("Patient")
    nexus.fake.script(Reply(text="Hello there."), Reply(text="Still here."))
    sign_in(page)
    start_chat(page, agent)
    send(page, "Hello.")
    conversation_id = current_conversation_id(page)
    reply_locator(page).locator(".msg-text", has_text="Hello there.").wait_for()
    requests_before = len(nexus.fake.requests)

    paste = ("All work and no play. " * 9100)[:200_000]
    assert len(paste) == 200_000
    send(page, paste)
    refusal = page.locator(".toast-error, #messages .msg-note.error, #messages .note-error").filter(
        has_text="longer than"
    )
    refusal.first.wait_for()
    assert "100000 characters" in refusal.first.inner_text()
    assert len(nexus.fake.requests) == requests_before  # never sent to the provider
    # the refused message leaves the list and its text goes back to the composer: nothing is lost
    page.wait_for_function("document.querySelectorAll('#messages .msg-user').length === 1")
    assert page.input_value("#composer-input") == paste

    send(page, "Are you still there?")
    reply_locator(page).locator(".msg-text", has_text="Still here.").wait_for()
    stored = [m["content"] for m in nexus.conversation(conversation_id)["messages"] if m["role"] == "user"]
    assert stored == ["Hello.", "Are you still there?"]  # the paste was not stored
    assert page.locator("#conn-state").get_attribute("data-state") == "connected"
    shown = page.locator("#messages .msg-user")
    assert [shown.nth(i).get_attribute("data-status") for i in range(shown.count())] == ["complete"] * 2
