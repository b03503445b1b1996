"""Who answers, and in what order: the "Answered by" picker of an open chat really switches the agent
(the history stays), and two tabs sending at once show one order, the server's."""

from __future__ import annotations

import pytest

from tests.browser.conftest import (
    current_conversation_id,
    reply_locator,
    screenshot,
    send,
    sign_in,
    start_chat,
)
from tests.fakes.script import Reply

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_picking_another_agent_in_an_open_chat_makes_it_answer_with_the_history(nexus, context, page):
    ada = nexus.create_agent("Ada", system_prompt="You are Ada.")
    bo = nexus.create_agent("Bo", emoji="🐻", system_prompt="You are Bo.")
    sign_in(page)
    start_chat(page, ada)  # a new chat is stored by its first message
    nexus.fake.script(Reply(text="Ada here."))
    send(page, "Who are you?")
    conversation_id = current_conversation_id(page)
    reply_locator(page).locator(".msg-text").filter(has_text="Ada here.").wait_for()
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]')
    picker = page.locator("#agent-picker-select")
    assert picker.is_visible()
    assert picker.input_value() == ada["id"]
    assert "You are Ada." in str(nexus.fake.requests[-1].json["messages"][0])

    other = context.new_page()  # a second tab on the same chat
    other.goto(f"/#c={conversation_id}")
    other.wait_for_selector('#conn-state[data-state="connected"]')
    assert other.locator("#agent-picker-select").input_value() == ada["id"]

    picker.select_option(bo["id"])
    page.locator('#messages .msg-note[data-code="agent_changed"]').filter(has_text="Bo answers").wait_for()
    assert [a["agent_id"] for a in nexus.conversation(conversation_id)["agents"]] == [bo["id"]]
    # The other tab hears it too, without a reload.
    other.locator('#messages .msg-note[data-code="agent_changed"]').filter(has_text="Bo answers").wait_for()
    other.wait_for_function("id => document.getElementById('agent-picker-select').value === id", arg=bo["id"])
    other.close()
    assert page.locator('#messages .msg-note[data-code="agent_changed"]').count() == 1

    nexus.fake.script(Reply(text="Bo speaking."))
    send(page, "And now?")
    reply_locator(page).locator(".msg-text").filter(has_text="Bo speaking.").wait_for()
    page.wait_for_selector('#messages .msg-agent[data-status="complete"] >> nth=1')
    # The reply is Bo's, on the page and in the store, and Bo was given the whole history.
    last = reply_locator(page)
    assert last.get_attribute("data-agent-id") == bo["id"]
    assert last.locator(".msg-author").text_content() == "Bo"
    assert reply_locator(page, 0).locator(".msg-author").text_content() == "Ada"
    screenshot(page, "30-agent-picker")
    replies = nexus.agent_messages(conversation_id)
    assert [(m["agent_id"], m["content"]) for m in replies] == [
        (ada["id"], "Ada here."),
        (bo["id"], "Bo speaking."),
    ]
    sent = nexus.fake.requests[-1].json["messages"]
    assert "You are Bo." in sent[0]["content"]
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "Who are you?"),
        ("assistant", "Ada here."),
        ("user", "And now?"),
    ]

    # After a reload the picker still names Bo.
    page.reload()
    page.wait_for_selector('#conn-state[data-state="connected"]')
    assert page.locator("#agent-picker-select").input_value() == bo["id"]


SEND_AT = """
([text, at]) => {
  // Type, then press Send at a moment shared with the other tab (the same clock: one browser).
  const input = document.getElementById("composer-input");
  input.value = text;
  setTimeout(() => document.getElementById("composer").requestSubmit(), Math.max(0, at - Date.now()));
}
"""

DOM_ORDER = """
() => [...document.querySelectorAll("#messages > li.msg-user, #messages > li.msg-agent")].map(
  (el) => el.dataset.messageId || "unsent"
)
"""


def test_two_tabs_sending_at_once_show_the_servers_order(nexus, context, page):
    agent = nexus.create_agent("Orderly")
    sign_in(page)
    start_chat(page, agent)  # a new chat is stored by its first message
    nexus.fake.script(Reply(text="Ready."))
    send(page, "Start.")
    conversation_id = current_conversation_id(page)
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]')
    other = context.new_page()
    other.set_default_timeout(15_000)
    other.goto(f"/#c={conversation_id}")
    other.wait_for_selector('#conn-state[data-state="connected"]')
    trials = 4
    nexus.fake.script(*[Reply(text="Noted.", tokens_per_s=200)] * (2 * trials))

    for trial in range(trials):
        at = page.evaluate("Date.now()") + 400
        page.evaluate(SEND_AT, [f"first tab, trial {trial}", at])
        other.evaluate(SEND_AT, [f"second tab, trial {trial}", at])
        done = 1 + 2 * (trial + 1)  # the first exchange, then two per trial
        for tab in (page, other):
            tab.wait_for_function(
                "n => document.querySelectorAll('#messages .msg-agent[data-status=complete]').length >= n"
                " && document.querySelectorAll('#messages .msg-user[data-status=sending]').length === 0",
                arg=done,
            )
        stored = [
            m["id"]
            for m in nexus.conversation(conversation_id)["messages"]
            if m["type"] == "message" and m["role"] in ("user", "agent")
        ]
        assert len(stored) == 2 * done
        # Both tabs show every message once, in the server's order, without a reload.
        assert page.evaluate(DOM_ORDER) == stored, trial
        assert other.evaluate(DOM_ORDER) == stored, trial
    other.close()
