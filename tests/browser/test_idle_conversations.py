"""Old conversations stay conversations: one that expired after inactivity opens with its history,
and a new message revives it, with no reconnection loop and no stacked toasts.

This module runs its own daphne with ``NEXUS_CONVERSATION_IDLE_SECONDS=3``, so conversations
really expire (the sweeper marks them every few seconds), as they do after an hour in use.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import (
    PASSWORDS,
    Nexus,
    current_conversation_id,
    reply_locator,
    screenshot,
    send,
    serve_nexus,
    start_chat,
)
from tests.fakes.script import Reply

pytestmark = [pytest.mark.browser, pytest.mark.slow]

IDLE_SECONDS = 3

# Every text the connection indicator shows, and every toast, from the page's first script on.
RECORD_STATUS = """
window.__connTexts = [];
window.__toastTexts = [];
new MutationObserver(() => {
  const conn = document.getElementById("conn-state");
  if (conn && window.__connTexts[window.__connTexts.length - 1] !== conn.textContent) {
    window.__connTexts.push(conn.textContent);
  }
  for (const el of document.querySelectorAll("#toasts .toast")) {
    if (!el.__seen) { el.__seen = true; window.__toastTexts.push(el.textContent); }
  }
}).observe(document, { childList: true, subtree: true, characterData: true });
"""


@pytest.fixture(scope="module")
def idle_nexus(tmp_path_factory: pytest.TempPathFactory, nexus: Nexus) -> Iterator[Nexus]:
    # ``nexus`` first: the package's browser fixture starts Playwright once for every module.
    with serve_nexus(
        tmp_path_factory.mktemp("nexus-idle"), NEXUS_CONVERSATION_IDLE_SECONDS=str(IDLE_SECONDS)
    ) as server:
        yield server


@pytest.fixture
def idle_context(browser: Any, idle_nexus: Nexus) -> Iterator[Any]:
    ctx = browser.new_context(base_url=idle_nexus.url, viewport={"width": 1280, "height": 820})
    ctx.add_init_script(RECORD_STATUS)
    try:
        yield ctx
    finally:
        ctx.close()


def _page(context: Any, problems: Any) -> Any:
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems.watch(page)
    return page


def _sign_in(page: Any) -> None:
    page.goto("/")
    page.wait_for_url(re.compile(r"/login/"))
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORDS["alice"])
    page.click("button[type=submit]")
    page.wait_for_selector("body[data-ready=true]")


def _wait_for_status(server: Nexus, conversation_id: str, status: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.conversation(conversation_id)["status"] == status:
            return
        time.sleep(0.3)
    raise AssertionError(f"the conversation never became {status}")


def _dom_messages(page: Any) -> list[str]:
    return page.locator("#messages .msg-user .msg-text, #messages .msg-agent .msg-text").all_text_contents()


def test_an_expired_conversation_reopens_with_its_history_and_a_message_revives_it(
    idle_nexus, idle_context, problems
):
    agent = idle_nexus.create_agent("Sleeper")
    page = _page(idle_context, problems)
    _sign_in(page)
    start_chat(page, agent)  # a new chat is stored by its first message
    idle_nexus.fake.script(Reply(text="Before the break."))
    send(page, "Hello before lunch.")
    conversation_id = current_conversation_id(page)
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]')
    page.close()

    _wait_for_status(idle_nexus, conversation_id, "expired")

    page = _page(idle_context, problems)
    page.goto(f"/#c={conversation_id}")
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector('#conn-state[data-state="connected"]')
    # The history is there, the page says the chat is idle, and nothing is refused.
    assert _dom_messages(page) == ["Hello before lunch.", "Before the break."]
    assert page.locator("#chat-status").text_content() == "idle"
    assert "send a message to continue" in page.locator("#composer-input").get_attribute("placeholder")

    idle_nexus.fake.script(Reply(text="Welcome back."))
    send(page, "I am back.")
    reply_locator(page).locator(".msg-text").filter(has_text="Welcome back.").wait_for()
    page.wait_for_selector('#messages .msg-agent[data-status="complete"] >> nth=1')
    stored = [m["content"] for m in idle_nexus.conversation(conversation_id)["messages"]]
    assert stored == ["Hello before lunch.", "Before the break.", "I am back.", "Welcome back."]
    assert _dom_messages(page) == stored

    # Left open, it expires again: the page says so once, in words, and stays connected.
    _wait_for_status(idle_nexus, conversation_id, "expired")
    page.locator('#messages .msg-note[data-code="session_expired"]').wait_for()
    page.wait_for_selector('#conn-state[data-state="connected"]')
    screenshot(page, "31-idle-conversation")
    time.sleep(2)
    idle_nexus.fake.script(Reply(text="Still here."))
    send(page, "And again.")
    reply_locator(page).locator(".msg-text").filter(has_text="Still here.").wait_for()

    conn_texts = page.evaluate("window.__connTexts")
    assert not [text for text in conn_texts if "Reconnecting" in text], conn_texts
    assert page.evaluate("window.__toastTexts") == []
    assert page.locator("#messages .msg-note").count() >= 1
    page.close()


def test_a_conversation_refused_for_good_is_not_retried(idle_nexus, idle_context, problems):
    page = _page(idle_context, problems)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    _sign_in(page)
    page.goto(f"/#c={uuid.uuid4()}")
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector('#conn-state[data-state="closed"]')
    time.sleep(3)
    # 4001 is permanent: no second attempt (the Knowledge panel's own /ws/knowledge/ aside)
    conversation_sockets = [url for url in sockets if "/ws/conversations/" in url]
    assert len(conversation_sockets) == 1, sockets
    assert page.locator("#conn-state").text_content() == "Conversation unavailable"
    toasts = page.evaluate("window.__toastTexts")
    assert len(toasts) == len(set(toasts)) <= 1, toasts
    page.close()
