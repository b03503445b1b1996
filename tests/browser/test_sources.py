"""A reply's sources under it in the chat page: a "Sources" disclosure whose entries open to show
the passage, as text (a passage holding markup never becomes HTML), live and after a reload."""

from __future__ import annotations

import pytest

from tests.browser.conftest import (
    current_conversation_id,
    no_dialogs,
    reply_locator,
    screenshot,
    send,
    sign_in,
    start_chat,
)
from tests.fakes.script import FakeToolCall, Reply
from tests.procs import manage

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCUMENT = (
    "# Zebulon\\n\\nThe launch code of Project Zebulon is 4417. "
    "Markup stays text: <img src=x onerror=alert(1)> <b>bold?</b>\\n"
)
MAKE_BASE = """
import sys
from django.contrib.auth import get_user_model
from knowledge import services
alice = get_user_model().objects.get(username="alice")
base = services.base_create(owner=alice, name="browser-projects")
document, _ = services.document_add_text(base=base, text="{text}", title="Project Zebulon", source="zebulon.md")
services.document_ingest(document)
sys.stdout.write("BASE=" + str(base.pk))
"""


def test_a_replys_sources_open_to_show_their_passages(nexus, page):
    result = manage("shell", "-c", MAKE_BASE.format(text=DOCUMENT), env=nexus.env)
    assert result.returncode == 0, result.stdout + result.stderr
    base_id = result.stdout.rsplit("BASE=", 1)[1].strip()
    agent = nexus.create_agent("Librarian", knowledge_bases=[base_id], knowledge_mode="tool")
    nexus.fake.reset()
    nexus.fake.script(
        Reply(
            text="",
            tool_calls=(
                FakeToolCall(name="knowledge_search", arguments={"query": "Zebulon launch code"}, id="k1"),
            ),
        ),
        Reply(text="The launch code is 4417 [1]."),
    )
    with no_dialogs(page) as dialogs:
        sign_in(page)
        start_chat(page, agent)
        send(page, "What is the launch code of Project Zebulon?")
        conversation_id = current_conversation_id(page)
        page.wait_for_selector('#messages .msg-agent[data-status="complete"] .msg-sources:not([hidden])')

        def check_sources() -> None:
            sources = reply_locator(page).locator(".msg-sources")
            summary = sources.locator(".msg-sources-box > summary")
            assert summary.text_content() == "Sources (1)"
            entry = sources.locator(".source").first
            assert not entry.locator(".source-text").is_visible()  # closed until asked
            summary.click()
            assert "Project Zebulon" in entry.locator(".source-title").text_content()
            assert "score" in entry.locator(".source-score").text_content()
            entry.locator("summary").click()
            passage = entry.locator(".source-text")
            assert passage.is_visible() and "4417" in passage.text_content()
            assert "<img src=x onerror=alert(1)>" in passage.text_content()  # as text
            assert page.locator("#messages img, #messages b").count() == 0

        check_sources()
        screenshot(page, "30-reply-sources")
        page.reload()  # the stored reply shows the same sources
        page.wait_for_selector('#messages .msg-agent[data-status="complete"] .msg-sources:not([hidden])')
        check_sources()
        page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert dialogs == []
    [reply] = nexus.agent_messages(conversation_id)
    assert reply["metadata"]["sources"][0]["title"] == "Project Zebulon"
