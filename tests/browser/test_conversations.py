"""The conversation list in Chromium: New chat stores nothing until the first message, the title
that follows the first exchange, search, pin, archive, export, and limits that fit a person."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import (
    CREATE_USERS,
    Nexus,
    current_conversation_id,
    screenshot,
    send,
    sign_in,
    start_chat,
)
from tests.fakes.script import Reply
from tests.procs import base_env, free_port, manage, start_daphne

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def conversation_count(nexus: Nexus, username: str = "alice") -> int:
    with nexus.api(username) as client:
        active = client.get("conversations/").json()["count"]
        archived = client.get("conversations/", params={"archived": "1"}).json()["count"]
    return active + archived


def invoke(nexus: Nexus, agent: dict[str, Any], message: str, conversation_id: str | None = None) -> str:
    body = {"agent_id": agent["id"], "message": message}
    if conversation_id:
        body["conversation_id"] = conversation_id
    with nexus.api() as client:
        response = client.post("invoke/", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["conversation_id"]


def sidebar_item(page: Any, conversation_id: str) -> Any:
    return page.locator(f'#conversation-list [data-conversation-id="{conversation_id}"]')


def listed_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "#conversation-list [data-conversation-id]", "els => els.map(el => el.dataset.conversationId)"
    )


def test_new_chat_stores_nothing_until_the_first_message_which_titles_it(nexus, page):
    agent = nexus.create_agent("Drafter")
    nexus.fake.script(Reply(text="TCP keeps **order**; UDP does not.", tokens_per_s=40))
    sign_in(page)
    before = conversation_count(nexus)
    start_chat(page, agent)
    for _ in range(9):
        page.click("#new-chat")
    assert page.locator("#chat-head[data-draft=true] #chat-title").text_content() == "New chat"
    assert page.get_attribute("#composer-input", "placeholder") == "Message Drafter…"
    assert "#c=" not in page.url
    assert page.locator("#chat-head .chat-actions").is_hidden()  # nothing to rename or delete yet
    assert conversation_count(nexus) == before  # ten clicks, nothing stored

    send(page, "Can you explain the difference between TCP and UDP? I mix them up.")
    conversation_id = current_conversation_id(page)
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]')
    assert conversation_count(nexus) == before + 1
    assert page.locator("#messages .msg-user").count() == 1

    # The title follows the first exchange, in the list and the header, without a reload.
    title = "Can you explain the difference between TCP and UDP?"
    item = sidebar_item(page, conversation_id)
    item.locator(".conv-title", has_text=title).wait_for()
    assert page.text_content("#chat-title") == title
    assert nexus.conversation(conversation_id)["title"] == title
    item.locator(".conv-preview", has_text="TCP keeps order; UDP does not.").wait_for()
    assert item.locator(".conv-when").text_content()  # today: a time
    assert listed_ids(page)[0] == conversation_id

    # After a reload the list says the same (the server's preview is plain text too).
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    item = sidebar_item(page, conversation_id)
    assert item.locator(".conv-title").text_content() == title
    assert item.locator(".conv-preview").text_content() == "TCP keeps order; UDP does not."


def test_a_title_of_ones_own_stays_after_the_first_reply(nexus, page):
    agent = nexus.create_agent("Keeper")
    nexus.fake.script(Reply(text="Sure, " + "let me think. " * 20, tokens_per_s=30))
    sign_in(page)
    start_chat(page, agent)
    send(page, "Plan a week in Lisbon for me.")
    conversation_id = current_conversation_id(page)
    page.locator("#messages .msg-agent .msg-text", has_text="Sure").wait_for()
    with nexus.api() as client:  # renamed (another tab, say) while the reply is still streaming
        assert (
            client.patch(f"conversations/{conversation_id}/", json={"title": "Holidays"}).status_code == 200
        )
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]')
    page.wait_for_timeout(500)  # the automatic title's request has come back
    assert nexus.conversation(conversation_id)["title"] == "Holidays"


def test_search_pin_archive_and_export(nexus, page):
    agent = nexus.create_agent("Librarian")
    word = f"zebra{uuid.uuid4().hex[:6]}"
    nexus.fake.script(Reply(text="Where to?"), Reply(text="Good choice."), Reply(text="Leek soup."))
    trip = invoke(nexus, agent, "Plan a trip for me")
    invoke(nexus, agent, f"Maybe Lisbon, to see a {word}", trip)  # the third message
    soup = invoke(nexus, agent, "A soup recipe, please")
    sign_in(page)
    assert listed_ids(page)[:2] == [soup, trip]
    assert sidebar_item(page, soup).locator(".conv-preview").text_content() == "Leek soup."

    # search: a word of the third message finds its conversation, and only it
    page.fill("#conversation-search", word.upper())
    page.wait_for_function(
        "id => [...document.querySelectorAll('#conversation-list [data-conversation-id]')]"
        ".map(el => el.dataset.conversationId).join() === id",
        arg=trip,
    )
    page.fill("#conversation-search", "no-such-words-anywhere")
    page.locator("#conversation-list .muted", has_text="No conversation matches.").wait_for()
    page.fill("#conversation-search", "")
    sidebar_item(page, soup).wait_for()

    # pin: the older conversation goes first
    sidebar_item(page, trip).click()
    page.wait_for_selector('#conn-state[data-state="connected"]')
    page.click("#pin-btn")
    sidebar_item(page, trip).locator(".conv-pin").wait_for()
    assert listed_ids(page)[:2] == [trip, soup]
    assert page.get_attribute("#pin-btn", "aria-pressed") == "true"
    assert page.locator("#chat-head .chat-actions").is_visible()
    screenshot(page, "18-conversation-list")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert listed_ids(page)[:2] == [trip, soup]

    # export: a Markdown transcript and JSON, as downloads
    with page.expect_download() as download:
        page.click("#export-md")
    markdown = Path(download.value.path()).read_text(encoding="utf-8")
    assert download.value.suggested_filename.endswith(".md")
    assert "**alice** · " in markdown and "**Librarian** · " in markdown
    assert markdown.index("Plan a trip for me") < markdown.index("Where to?") < markdown.index(word)
    with page.expect_download() as download:
        page.click("#export-json")
    exported = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert exported["conversation"]["id"] == trip and exported["conversation"]["pinned"] is True
    assert [m["content"] for m in exported["messages"]][:3] == [
        "Plan a trip for me",
        "Where to?",
        f"Maybe Lisbon, to see a {word}",
    ]

    # archive: it leaves the list; the Archived toggle shows it; unarchive brings it back
    page.click("#archive-btn")
    sidebar_item(page, trip).wait_for(state="detached")
    assert page.get_attribute("#archive-btn", "aria-pressed") == "true"
    page.click("#archived-toggle")
    sidebar_item(page, trip).wait_for()
    assert sidebar_item(page, soup).count() == 0
    page.click("#archive-btn")
    sidebar_item(page, trip).wait_for(state="detached")
    page.click("#archived-toggle")
    sidebar_item(page, trip).wait_for()
    sidebar_item(page, soup).wait_for()


# --- limits that fit a person: a server with the default throttles -------------------------------


@pytest.fixture(scope="module")
def person_limits(nexus: Nexus, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nexus]:
    """A second daphne with every default limit (the package's server raises them for speed),
    answering through the same fake OpenAI server."""
    var_dir = tmp_path_factory.mktemp("nexus-limits")
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    env = base_env(
        NEXUS_VAR_DIR=str(var_dir),
        DJANGO_SECRET_KEY="browser-limits-secret-key-" + uuid.uuid4().hex,
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        NEXUS_WS_ALLOWED_ORIGINS=origin,
        OPENAI_API_KEY="test",
        OPENAI_BASE_URL=nexus.fake.base_url,
        NEXUS_EGRESS_ALLOW="127.0.0.1,::1",
        GEMINI_BASE_URL=f"http://127.0.0.1:{free_port()}",
        OLLAMA_BASE_URL=f"http://127.0.0.1:{free_port()}",
        NEXUS_PROVIDER_STATUS_TIMEOUT="1",
    )
    for name in list(env):
        if name.startswith("NEXUS_THROTTLE_") or name in {
            "NEXUS_RUNS_PER_MINUTE_PER_USER",
            "NEXUS_WS_MAX_SOCKETS_PER_USER",
        }:
            del env[name]
    for args in (("migrate", "--noinput"), ("shell", "-c", CREATE_USERS)):
        result = manage(*args, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    daphne, _ = start_daphne(env=env, log_dir=var_dir, port=port)
    try:
        yield Nexus(url=origin, fake=nexus.fake, daphne=daphne)
    finally:
        daphne.stop()


@pytest.fixture
def person_page(browser: Any, person_limits: Nexus, problems: Any) -> Iterator[Any]:
    context = browser.new_context(base_url=person_limits.url, viewport={"width": 1280, "height": 820})
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems.watch(page)
    try:
        yield page
    finally:
        context.close()
    assert not problems.errors, problems.errors


def test_twenty_page_loads_and_ten_new_chats_in_a_minute_are_not_throttled(person_limits, person_page):
    page = person_page
    agent = person_limits.create_agent("Everyday")
    person_limits.fake.script(default=Reply(text="Noted.", tokens_per_s=200))
    refused: list[str] = []
    page.on("response", lambda r: refused.append(f"{r.request.method} {r.url}") if r.status == 429 else None)
    started = time.monotonic()
    sign_in(page)
    for _ in range(19):
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
    for index in range(10):
        start_chat(page, agent)
        send(page, f"Note number {index} for today.")
        page.wait_for_selector('#messages .msg-agent[data-status="complete"]')
        sidebar_item(page, current_conversation_id(page)).locator(
            ".conv-title", has_text=f"Note number {index} for today"
        ).wait_for()
    elapsed = time.monotonic() - started
    assert elapsed < 60, f"{elapsed:.0f} s: not within a minute, so the test proves nothing"
    assert refused == []
    assert page.locator(".toast-error").count() == 0
    assert page.locator("#conversation-list [data-conversation-id]").count() == 10
    person_limits.fake.script(default=Reply())


def test_a_throttled_new_chat_says_so_once_with_the_wait_and_keeps_the_text(person_limits, person_page):
    page = person_page
    agent = person_limits.create_agent("Busy", username="operator")
    with person_limits.api("operator") as client:  # the operator's 30 creations this minute, spent
        statuses = {
            client.post("conversations/", json={"agents": [agent["id"]]}).status_code for _ in range(40)
        }
    assert statuses == {201, 429}
    sign_in(page, "operator")
    start_chat(page, agent)
    send(page, "Hello there")
    toast = page.locator(".toast-error")
    toast.wait_for()
    text = toast.text_content()
    assert re.fullmatch(r"Too many requests\. Try again in \d+ s\.", text), text
    send(page, "Hello there")  # again: still one notice, not a stack
    page.wait_for_timeout(300)
    assert page.locator(".toast-error").count() == 1
    assert page.input_value("#composer-input") == "Hello there"  # nothing lost
    assert page.locator("#chat-head[data-draft=true]").count() == 1
