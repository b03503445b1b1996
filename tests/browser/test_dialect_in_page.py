"""A conversation driven from a seed dialect is an ordinary conversation: the web page shows it,
and shows a reply sent through that dialect live (issue 16)."""

from __future__ import annotations

import json

import pytest

from tests.browser.conftest import reply_locator, sign_in
from tests.fakes.script import Reply

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _seed002_run(nexus, body: dict) -> list[dict]:
    """``POST /api/agent/run`` as seed 002's client sends it; the stream's messages."""
    with nexus.api() as client:
        response = client.post("agent/run", json={"history": [], "minio_files": [], **body}, timeout=30)
    assert response.status_code == 200, response.text
    return [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]


def test_the_page_shows_a_conversation_driven_from_seed_002_and_follows_it_live(nexus, page):
    agent = nexus.create_agent("Nexent helper")
    nexus.fake.script(Reply(text="Hello from the other door."))
    first = _seed002_run(nexus, {"query": "Hi through seed 002.", "agent_id": agent["id"]})
    conversation_id = first[0]["content"]["conversation_id"]
    assert first[-1]["type"] == "done"

    sign_in(page)
    page.goto(f"/#c={conversation_id}")
    page.wait_for_selector('#conn-state[data-state="connected"]')
    page.locator("#messages .msg-user", has_text="Hi through seed 002.").wait_for()
    reply_locator(page).locator(".msg-text", has_text="Hello from the other door.").wait_for()

    # A second message through the dialect while the page watches: it arrives live, no reload.
    nexus.fake.script(Reply(text="And again, live.", tokens_per_s=20))
    second = _seed002_run(
        nexus, {"query": "Once more.", "agent_id": agent["id"], "conversation_id": conversation_id}
    )
    assert second[-1]["type"] == "done"
    page.locator("#messages .msg-user", has_text="Once more.").wait_for()
    reply_locator(page).locator(".msg-text", has_text="And again, live.").wait_for()
    assert page.locator("#messages .msg-user").count() == 2
