"""Reloads and network loss in the middle of a reply: the page ends with the stored reply, once."""

from __future__ import annotations

import re
import time

import pytest

from tests.browser.conftest import (
    COUNT_TEXT_UPDATES,
    current_conversation_id,
    reply_locator,
    screenshot,
    send,
    sign_in,
    start_chat,
)
from tests.fakes.script import Reply

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.mark.xfail(
    strict=False,
    reason="FLAKY, a real gap to find: in 1 of 5 full runs on 2026-12-05 the page, reloaded mid-reply, "
    "showed 'part0 ... part9 part19' (the stored text, then a live chunk, with the events between "
    "missing) before the text completed; whether the socket skipped the replay or the page dropped "
    "it is not known yet (issue 12 stays open for it)",
)
def test_reloading_mid_reply_shows_the_complete_reply_exactly_once(nexus, page):
    agent = nexus.create_agent("Reloader")
    text = " ".join(f"part{i}" for i in range(40))
    nexus.fake.script(Reply(text=text, tokens_per_s=10))
    sign_in(page)
    start_chat(page, agent)

    send(page, "Tell me something long.")
    conversation_id = current_conversation_id(page)
    reply_locator(page).locator(".msg-text").filter(has_text="part12").wait_for()
    page.reload()
    page.wait_for_selector('#conn-state[data-state="connected"]')
    # The reply is still streaming after the reload, and keeps growing on this new page.
    page.evaluate(COUNT_TEXT_UPDATES)
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]', timeout=20_000)
    updates = page.evaluate("window.__updates")
    assert len(updates) >= 3
    # Every intermediate text was a prefix of the reply: no chunk lost or shown twice on the way.
    assert all(text.startswith(update) for update in updates), updates

    replies = page.locator("#messages .msg-agent")
    assert replies.count() == 1
    shown = replies.first.locator(".msg-text").text_content()
    assert shown == text  # every part, none twice
    assert page.locator("#messages .msg-user").count() == 1
    [stored] = nexus.agent_messages(conversation_id)
    assert stored["content"] == shown and stored["status"] == "complete"


def test_five_seconds_offline_mid_reply_loses_nothing_and_doubles_nothing(nexus, context, page):
    agent = nexus.create_agent("Offline")
    text = " ".join(f"tok{i}" for i in range(90))
    nexus.fake.script(Reply(text=text, tokens_per_s=10))
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    sign_in(page)
    start_chat(page, agent)

    send(page, "Keep talking while my train goes through a tunnel.")
    conversation_id = current_conversation_id(page)
    reply = reply_locator(page)
    reply.locator(".msg-text").filter(has_text="tok8").wait_for()
    page.evaluate(COUNT_TEXT_UPDATES)
    context.set_offline(True)
    page.wait_for_selector('#conn-state[data-state="offline"]')
    seen_offline = reply.locator(".msg-text").text_content()
    screenshot(page, "07-offline")
    time.sleep(5)
    # Nothing arrives while offline (the reply keeps going on the server).
    assert reply.locator(".msg-text").text_content() == seen_offline
    before = len(page.evaluate("window.__updates"))
    context.set_offline(False)
    page.wait_for_selector('#conn-state[data-state="connected"]')
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]', timeout=20_000)

    updates = page.evaluate("window.__updates")
    assert len(updates) > before + 2, "the reply did not keep streaming after the reconnection"
    assert all(text.startswith(update) for update in updates), updates

    shown = reply.locator(".msg-text").text_content()
    [stored] = nexus.agent_messages(conversation_id)
    assert stored["status"] == "complete"
    assert shown == stored["content"] == text
    assert page.locator("#messages .msg-agent").count() == 1
    # One socket before the tunnel, one after that resumed from the last seq the page had seen.
    assert len(sockets) == 2, sockets
    assert "last_seq=" not in sockets[0]
    assert re.search(rf"/ws/conversations/{conversation_id}/\?last_seq=\d+$", sockets[1]), sockets


def test_reconnect_delays_grow_exponentially_with_jitter(page):
    sign_in(page)
    delays = page.evaluate(
        """async () => {
          const { backoffDelay } = await import("/static/nexus/js/socket.js");
          return [0, 1, 2, 3, 4, 5, 10].map((n) => Array.from({ length: 50 }, () => backoffDelay(n)));
        }"""
    )
    for attempt, samples in zip([0, 1, 2, 3, 4, 5, 10], delays, strict=True):
        ceiling = min(15_000, 500 * 2**attempt)
        assert all(ceiling / 2 <= d <= ceiling for d in samples), (attempt, samples)
        assert len(set(samples)) > 40  # jittered: clients that dropped together do not return together
