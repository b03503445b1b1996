"""Signing in, chatting, streaming, stopping, feedback, rename and delete: in the real Chromium."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.browser.conftest import (
    COUNT_TEXT_UPDATES,
    MODEL,
    current_conversation_id,
    reply_locator,
    screenshot,
    send,
    sign_in,
    start_chat,
)
from tests.fakes.script import Reply

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_anonymous_visitors_sign_in_first_and_every_page_has_a_strict_csp(nexus, page):
    response = httpx.get(f"{nexus.url}/", follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"].startswith("/login/")
    login = httpx.get(f"{nexus.url}/login/")
    csp = login.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "connect-src 'self' ws://127.0.0.1" in csp

    page.goto("/")
    page.wait_for_url(re.compile(r"/login/"))
    page.fill("#id_username", "alice")
    page.fill("#id_password", "not-the-password")
    page.click("button[type=submit]")
    page.wait_for_selector(".form-error")
    screenshot(page, "01-sign-in")

    sign_in(page)
    assert page.text_content("#current-user") == "alice"
    assert page.locator("#empty-state").is_visible()
    screenshot(page, "02-empty-chat")


def test_a_reply_streams_in_token_by_token_and_shows_who_answered(nexus, page):
    agent = nexus.create_agent("Streamer")
    words = [f"word{i}" for i in range(30)]
    nexus.fake.script(Reply(text=" ".join(words), tokens_per_s=15))
    sign_in(page)
    start_chat(page, agent)
    page.evaluate(COUNT_TEXT_UPDATES)

    send(page, "Count to thirty, please.")
    conversation_id = current_conversation_id(page)
    reply = reply_locator(page)
    reply.locator(".msg-text").filter(has_text="word3").wait_for()
    screenshot(page, "03-streaming")
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]')

    updates = page.evaluate("window.__updates")
    assert len(updates) >= 5, updates  # several DOM updates before the end
    assert all(" ".join(words).startswith(update) for update in updates), updates
    assert reply.locator(".msg-text").text_content() == " ".join(words)
    meta = reply.locator(".msg-meta").text_content()
    assert "openai" in meta and MODEL in meta
    assert page.locator("#messages .msg-user .msg-text").text_content() == "Count to thirty, please."
    assert page.locator("#stop-btn").is_hidden()

    stored = nexus.agent_messages(conversation_id)
    assert [m["content"] for m in stored] == [" ".join(words)]
    assert stored[0]["metadata"]["provider"] == "openai"
    screenshot(page, "04-reply-complete")


def test_stop_ends_the_reply_mid_stream_and_keeps_the_partial_text(nexus, page):
    agent = nexus.create_agent("Long talker")
    nexus.fake.script(Reply.words(200, tokens_per_s=10))
    sign_in(page)
    start_chat(page, agent)

    send(page, "Talk for a long time.")
    conversation_id = current_conversation_id(page)
    reply = reply_locator(page)
    reply.locator(".msg-text").filter(has_text="w5").wait_for()
    page.click("#stop-btn")
    page.wait_for_selector('#messages .msg-agent[data-status="stopped"]')
    assert page.locator("#stop-btn").is_hidden()
    assert reply.locator(".msg-status").text_content() == "stopped"

    shown = reply.locator(".msg-text").text_content()
    assert shown.startswith("w0 w1 w2 w3 w4 w5")
    assert "w199" not in shown
    [stored] = nexus.agent_messages(conversation_id)
    assert stored["status"] == "stopped"
    assert stored["content"] == shown
    screenshot(page, "05-stopped")


def test_feedback_rename_and_delete(nexus, page):
    agent = nexus.create_agent("Helpful")
    nexus.fake.script(Reply(text="Glad to help."))
    sign_in(page)
    start_chat(page, agent)
    send(page, "Help me.")
    conversation_id = current_conversation_id(page)
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]')

    reply = reply_locator(page)
    reply.locator(".fb-down").click()
    page.wait_for_selector('#messages .msg-agent[data-opinion="negative"]')
    assert nexus.agent_messages(conversation_id)[0]["opinion"] == "negative"
    reply.locator(".fb-down").click()  # pressing it again clears the rating
    page.wait_for_selector('#messages .msg-agent[data-opinion=""]')
    assert nexus.agent_messages(conversation_id)[0]["opinion"] is None
    reply.locator(".fb-up").click()
    page.wait_for_selector('#messages .msg-agent[data-opinion="positive"]')
    assert reply.locator(".fb-up").get_attribute("aria-pressed") == "true"
    assert nexus.agent_messages(conversation_id)[0]["opinion"] == "positive"

    page.click("#rename-btn")
    page.fill("#rename-form input[name=title]", "Help desk")
    page.click("#rename-form button[type=submit]")
    page.wait_for_selector("#chat-title:has-text('Help desk')")
    link = page.locator(f'#conversation-list [data-conversation-id="{conversation_id}"]')
    assert link.locator(".conv-title").text_content() == "Help desk"
    assert nexus.conversation(conversation_id)["title"] == "Help desk"
    screenshot(page, "06-feedback-and-rename")

    page.click("#delete-btn")
    assert page.text_content("#delete-btn") == "Confirm delete"
    page.click("#delete-btn")
    link.wait_for(state="detached")
    assert page.locator("#empty-state").is_visible()
    with nexus.api() as client:
        assert client.get(f"conversations/{conversation_id}/").status_code == 404


def test_an_ordinary_user_is_not_offered_an_endpoint_or_a_key_variable(nexus, page):
    sign_in(page)
    page.click("#new-agent-toggle")
    form = page.locator("#agent-form")
    assert form.locator("input[name=model]").is_visible()
    assert form.locator("input[name=base_url]").count() == 0
    assert form.locator("input[name=api_key_env]").count() == 0


def test_an_agent_created_on_the_page_can_be_chatted_with(nexus, page):
    nexus.fake.script(Reply(text="Hello, I was made a moment ago."))
    sign_in(page, "operator")  # staff: the only ones who set an agent's base URL and key variable
    page.click("#new-agent-toggle")
    form = page.locator("#agent-form")
    form.locator("input[name=name]").fill("Fresh")
    form.locator("select[name=provider]").select_option("openai")
    form.locator("input[name=model]").fill(MODEL)
    form.locator("input[name=base_url]").fill(nexus.fake.base_url)
    form.locator("input[name=api_key_env]").fill("MY_SECRET")
    form.locator("button[type=submit]").click()
    errors = form.locator("[data-role=errors]")
    errors.wait_for()
    assert "api_key_env" in errors.text_content()  # the server's validation message, shown in place
    screenshot(page, "00-new-agent-form")

    form.locator("input[name=api_key_env]").fill("OPENAI_API_KEY")
    form.locator("button[type=submit]").click()
    form.wait_for(state="hidden")
    page.locator("#agent-list .pick.is-selected .pick-name", has_text="Fresh").wait_for()
    page.click("#new-chat")
    page.wait_for_selector('#chat-head[data-draft="true"]')
    send(page, "Who are you?")
    page.wait_for_selector('#conn-state[data-state="connected"]')
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]')
    assert reply_locator(page).locator(".msg-text").text_content() == "Hello, I was made a moment ago."
