"""Model output shown as text, a client tool answered by the page, an agent-to-agent session live."""

from __future__ import annotations

import json

import pytest

from tests.browser.conftest import (
    COUNT_TEXT_UPDATES,
    current_conversation_id,
    no_dialogs,
    reply_locator,
    screenshot,
    send,
    sign_in,
    start_chat,
)
from tests.fakes.script import FakeToolCall, Reply

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOSTILE = 'Look: <img src=x onerror=alert(1)> and <script>alert("two")</script> <b>bold?</b>'


def test_markup_in_a_reply_is_shown_literally_and_never_runs(nexus, page):
    agent = nexus.create_agent("Mischief")
    nexus.fake.script(Reply(text=HOSTILE, tokens_per_s=20))
    with no_dialogs(page) as dialogs:
        sign_in(page)
        start_chat(page, agent)
        send(page, "Say something dangerous.")
        conversation_id = current_conversation_id(page)
        page.wait_for_selector('#messages .msg-agent[data-status="complete"]')
        reply = reply_locator(page)
        assert reply.locator(".msg-text").text_content() == HOSTILE
        assert page.locator("#messages img, #messages script, #messages b").count() == 0
        screenshot(page, "08-markup-as-text")

        # The stored history (session_state after a reload) is rendered as text too.
        page.reload()
        page.wait_for_selector('#messages .msg-agent[data-status="complete"]')
        assert reply_locator(page).locator(".msg-text").text_content() == HOSTILE
        assert page.locator("#messages img, #messages script, #messages b").count() == 0
        page.wait_for_timeout(500)  # give an onerror handler every chance to fire
    assert dialogs == []
    assert nexus.agent_messages(conversation_id)[0]["content"] == HOSTILE


def test_the_page_answers_the_browser_timezone_client_tool(nexus, page):
    agent = nexus.create_agent(
        "Clock",
        tools=[
            {
                "name": "browser_timezone",
                "description": "The time zone of the person's browser.",
                "parameters": {"type": "object", "properties": {}},
                "execution": "client",
            }
        ],
    )
    nexus.fake.reset()
    nexus.fake.script(
        Reply(text="", tool_calls=(FakeToolCall(name="browser_timezone", arguments={}, id="call_tz"),)),
        Reply(text="You are in Paris time."),
    )
    sign_in(page)  # the browser context runs in Europe/Paris
    start_chat(page, agent)
    send(page, "What is my time zone?")
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]')

    tool = page.locator('#messages .tool[data-tool-call-id="call_tz"]')
    assert "browser_timezone" in tool.locator(".tool-name").text_content()
    assert "Europe/Paris" in tool.locator(".tool-result").text_content()
    assert reply_locator(page).locator(".msg-text").text_content() == "You are in Paris time."
    screenshot(page, "09-client-tool")

    # The model's second call carried the page's answer as the tool result.
    second = nexus.fake.requests[-1].json
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert tool_messages and tool_messages[0]["tool_call_id"] == "call_tz"
    assert json.loads(tool_messages[0]["content"])["result"] == {"timezone": "Europe/Paris"}


def test_a_tool_call_waits_for_the_approve_button_even_across_a_reload(nexus, page):
    agent = nexus.create_agent(
        "Careful clock",
        tools=[
            {
                "name": "current_time",
                "description": "The current time in a time zone.",
                "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}},
                "execution": "server",
                "approval": "always",
            }
        ],
    )
    assert agent["tools"][0]["approval"] == "always"
    nexus.fake.reset()
    nexus.fake.script(
        Reply(
            text="",
            tool_calls=(
                FakeToolCall(name="current_time", arguments={"timezone": "Asia/Tokyo"}, id="call_ok"),
            ),
        ),
        Reply(text="It is morning in Tokyo."),
    )
    sign_in(page)
    start_chat(page, agent)
    send(page, "What time is it in Tokyo?")
    tool = page.locator('#messages .tool[data-tool-call-id="call_ok"]')
    tool.locator(".tool-approve").wait_for()
    assert "waiting for your approval" in tool.locator(".tool-result").text_content()
    screenshot(page, "10-tool-approval")

    # The run is paused on the server: a reload shows the buttons again, from session_state.
    page.reload()
    tool = page.locator('#messages .tool[data-tool-call-id="call_ok"]')
    tool.locator(".tool-approve").click()
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]')
    assert tool.locator(".tool-approve").count() == 0
    assert "Asia/Tokyo" in tool.locator(".tool-result").text_content()
    assert reply_locator(page).locator(".msg-text").text_content() == "It is morning in Tokyo."
    second = nexus.fake.requests[-1].json
    [tool_message] = [m for m in second["messages"] if m["role"] == "tool"]
    assert json.loads(tool_message["content"])["result"]["timezone"] == "Asia/Tokyo"


def test_an_agent_to_agent_session_is_watched_live(nexus, page):
    optimist = nexus.create_agent("Optimist", emoji="🌞")
    skeptic = nexus.create_agent("Skeptic", emoji="🤨")
    turns = [
        "I think we should call the shop Morning Orbit.",
        "Orbit sounds cold; what about Steam and Story?",
        "Steam and Story works for me.",
    ]
    nexus.fake.script(*(Reply(text=turn, tokens_per_s=12) for turn in turns))
    sign_in(page)

    page.click("#new-session-toggle")
    form = page.locator("#session-form")
    form.locator("select[name=agent_a]").select_option(optimist["id"])
    form.locator("select[name=agent_b]").select_option(skeptic["id"])
    form.locator("textarea[name=goal]").fill("Agree on a name for a coffee shop.")
    form.locator("input[name=opening]").fill("Please find a name together.")
    form.locator("input[name=max_turns]").fill("3")
    screenshot(page, "10-new-session-form")
    form.locator("button[type=submit]").click()
    page.wait_for_selector('#conn-state[data-state="connected"]')
    page.evaluate(COUNT_TEXT_UPDATES)

    # Each turn streams in as it is written, by the two agents in turn.
    page.locator("#messages .msg-agent").nth(1).locator(".msg-text").filter(has_text="Orbit").wait_for()
    assert page.locator("#stop-btn").text_content() == "Stop session"
    screenshot(page, "11-agent-session-live")
    page.wait_for_selector('#messages .msg-note[data-code="turn_limit_reached"]', timeout=30_000)

    replies = page.locator("#messages .msg-agent")
    assert replies.count() == 3
    assert [replies.nth(i).locator(".msg-text").text_content() for i in range(3)] == turns
    assert [replies.nth(i).get_attribute("data-agent-id") for i in range(3)] == [
        optimist["id"],
        skeptic["id"],
        optimist["id"],
    ]
    assert len(page.evaluate("window.__updates")) >= 6  # streamed, not dropped in whole
    page.wait_for_selector('#chat-status[data-status="completed"]')
    assert page.locator("#stop-btn").is_hidden()
    assert page.locator("#chat-goal").text_content() == "Goal: Agree on a name for a coffee shop."
    assert page.locator("#messages .msg-user .msg-text").text_content() == "Please find a name together."
    screenshot(page, "12-agent-session-done")
